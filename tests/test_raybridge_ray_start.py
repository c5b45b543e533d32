"""The cluster section of docs/operations.md, as an operator runs it on one host: a real
``ray start --head`` and two ``ray start --address`` GPU workers (their own ports and temp
dirs), and ``vidbrief bridge`` given Ray's own ``RAY_ADDRESS`` only.

Twenty synthetic jobs complete, each analysed on the node that downloaded it; then one worker's
raylet is killed by PID and, one health-probe interval later, no new download is placed on it
(Ray itself calls the node dead only after about 15 s). Every process is stopped by its session
(each node and the bridge run in a session of their own), never by name: other programs on this
machine run Ray too.

On one host a worker's ``--address 127.0.0.1:P`` is rewritten to the host's own address, so the
head listens there: it is started, like the workers, without Ray's Windows/OSX switch (under it
``ray start --address`` aborts), and the test's own environment does not carry it either
(tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from helpers import alive, all_finished, states, video, wait_until, xadd_raw

from ingest.names import RedisNames
from ingest.redis_server import RedisServer
from raybridge.metrics import NODE_LABEL_CHARS

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))
STEPS_S = {"download": 0.3, "analyse": 0.6, "brief": 0.05, "report": 0.05}
PROBE_INTERVAL_S = 1.0
#: Scraping the bridge's metrics takes a moment: a placement counted by then happened before.
SCRAPE_SLACK_S = 0.3
#: Ports each node gets for itself (GCS or node manager, object manager, agents, workers).
PORTS_PER_NODE = 40
TERM_GRACE_S = 5.0
NODE_START_TRIES, NODE_START_S = 2, 150
FIRST_JOBS, LATER_JOBS = 20, 12


def host_address() -> str:
    """The address Ray picks for this host (a UDP "connect" sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))
        return str(s.getsockname()[0])


def free_block(size: int = PORTS_PER_NODE) -> int:
    """The first of ``size`` consecutive ports that are all free now."""
    for _ in range(200):
        base = secrets.randbelow(20_000) + 30_000
        if all(_free(port) for port in range(base, base + size)):
            return base
    raise RuntimeError("no block of free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def node_ports(base: int, head: bool) -> list[str]:
    """A node's ports, all from its own block (two nodes on one host must not share any)."""
    names = [
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
    ]
    args = [f"{name}={base + 1 + i}" for i, name in enumerate(names)]
    if head:
        args += [f"--port={base}", f"--ray-client-server-port={base + 8}"]
    last = base + PORTS_PER_NODE - 1
    return [*args, f"--min-worker-port={base + 10}", f"--max-worker-port={last}"]


@dataclass
class Node:
    """One ``ray start --block`` in a session of its own."""

    name: str
    proc: subprocess.Popen[bytes]
    temp: Path
    log: Path
    pids_seen: set[int] = field(default_factory=set)

    def pids(self) -> set[int]:
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with suppress(OSError):
                    if os.getsid(int(entry.name)) == self.proc.pid:
                        found.add(int(entry.name))
        self.pids_seen |= found
        return found

    def raylet_pid(self) -> int:
        for pid in self.pids():
            with suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                    return pid
        raise LookupError(f"no raylet in {self.name}'s session")

    def stop(self) -> None:
        """SIGTERM the `ray start` (it stops its node), then SIGKILL its session, by PID."""
        with suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.pids() | self.pids_seen:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()


def ray_env(tmp: Path) -> dict[str, str]:
    """Ray's variables for every process of this cluster: its own token (not ~/.ray's, which
    other programs on this machine share), and no Windows/OSX switch."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDBRIEF_", "RAY_"))}
    token = tmp / "ray_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_DEDUP_LOGS="0",
    )
    return env


def start_node(name: str, args: list[str], tmp: Path, env: dict[str, str], head: bool) -> Node:
    """``ray start --block`` for one node; returns once it runs (one more try if its start
    timed out: Ray gives a raylet 30 s to register, which a loaded machine can miss)."""
    for attempt in range(NODE_START_TRIES):
        node = _spawn_node(f"{name}-{attempt}" if attempt else name, args, tmp, env, head)
        if wait_until(f"{name} started", lambda n=node: _started(n), NODE_START_S) == "up":
            return node
        node.stop()
    raise AssertionError(f"ray start of {name} failed {NODE_START_TRIES} times: see {tmp}")


def _spawn_node(name: str, args: list[str], tmp: Path, env: dict[str, str], head: bool) -> Node:
    temp = tmp / name  # short: Ray's socket paths must stay under 107 characters
    log = tmp / f"{name}.log"
    command = [RAY, "start", "--block", "--disable-usage-stats", f"--temp-dir={temp}", *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, *node_ports(free_block(), head)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=tmp,
        )
    return Node(name, proc, temp, log)


def _started(node: Node) -> str | None:
    """ "up" once ``ray start`` says its node runs, "failed" if it exited."""
    if node.proc.poll() is not None:
        return "failed"
    text = node.log.read_text(errors="replace")
    return "up" if "This command will now block" in text else None


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    nodes: dict[str, Node]
    tmp: Path


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    tmp = Path(f"/tmp/vb-rs-{secrets.token_hex(3)}")  # Ray's socket paths must stay short
    tmp.mkdir()
    env = ray_env(tmp)
    nodes: dict[str, Node] = {}
    try:
        head = start_node(
            "head",
            [
                "--head",
                "--num-cpus=2",
                '--resources={"vidbrief_report": 2}',
                "--include-dashboard=false",
            ],
            tmp,
            env,
            head=True,
        )
        nodes["head"] = head
        port = gcs_port(head)
        address = f"{host_address()}:{port}"
        for name in ("gpu1", "gpu2"):
            nodes[name] = start_node(
                name,
                [
                    f"--address={address}",
                    "--num-cpus=2",  # the analysis actor takes 1, each download 0.25,
                    "--num-gpus=1",
                    '--resources={"vidbrief_download": 2}',
                ],
                tmp,
                env,
                head=False,
            )
        yield Cluster(address, env, nodes, tmp)
    finally:
        for node in reversed(list(nodes.values())):
            node.stop()
        leftover = alive(set().union(set(), *(n.pids_seen for n in nodes.values())))
        shutil.rmtree(tmp, ignore_errors=True)
        assert not leftover, f"processes of the test cluster still running: {leftover}"


def gcs_port(head: Node) -> int:
    """The head's --port (its GCS)."""
    args = Path(f"/proc/{head.proc.pid}/cmdline").read_bytes().split(b"\0")
    return int(next(a for a in args if a.startswith(b"--port=")).split(b"=")[1])


@dataclass
class BridgeProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    def placed_on(self, node_id: str) -> float:
        """The bridge's count of downloads placed on ``node_id`` (its Prometheus metrics)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        label = node_id[:NODE_LABEL_CHARS]  # the metrics' node label
        pattern = rf'^vidbrief_bridge_downloads_placed_total{{node="{label}"}} (\S+)$'
        found = re.search(pattern, text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def rs_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on the test Redis, flushed once before the module's bridge starts (the
    per-test ``redis_client`` fixture would flush the bridge's consumer group away)."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="module")
def bridge_process(
    cluster: Cluster, redis_server: RedisServer, rs_redis: redis.Redis
) -> Iterator[BridgeProcess]:
    tmp = cluster.tmp
    metrics_port = free_block(1)
    env = {
        **cluster.env,
        "RAY_ADDRESS": cluster.address,  # Ray's own variable, and no VIDBRIEF_RAY_ADDRESS
        "VIDBRIEF_REDIS_URL": redis_server.url,
        "VIDBRIEF_BRIDGE_NAME": "bridge-rs",
        "VIDBRIEF_WINDOW": "8",
        "VIDBRIEF_STEP_MODE": "synthetic",
        "VIDBRIEF_SYNTHETIC_SECONDS": ",".join(f"{k}={v}" for k, v in STEPS_S.items()),
        "VIDBRIEF_WORK_DIR": str(tmp / "work"),
        "VIDBRIEF_STATE_DIR": str(tmp / "state"),
        "VIDBRIEF_REPORTS_URL": str(tmp / "reports"),
        "VIDBRIEF_HEARTBEAT_SECONDS": "0.5",
        "VIDBRIEF_HEALTH_PROBE_SECONDS": str(PROBE_INTERVAL_S),
        "VIDBRIEF_METRICS_PORT": str(metrics_port),
        "VIDBRIEF_MIN_FREE_DISK_MB": "64",
        "VIDBRIEF_MAX_DOWNLOAD_MB": "16",
        "VIDBRIEF_MIN_FREE_MEMORY_MB": "64",
        "VIDBRIEF_DRAIN_GRACE_SECONDS": "2",
    }
    log = tmp / "bridge.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidbrief", "bridge"],
            env=env,
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    bridge = BridgeProcess(proc, log, metrics_port)
    try:
        yield bridge
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # a drain, then exit
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def heartbeat(client: redis.Redis, names: RedisNames) -> dict[str, object] | None:
    raw = client.hget(names.bridges, "bridge-rs")
    return json.loads(raw) if raw else None


def analysing_nodes(client: redis.Redis, names: RedisNames) -> dict[str, dict[str, object]]:
    """The nodes with a warm analysis actor, by id, from the bridge's heartbeat."""
    beat = heartbeat(client, names) or {}
    return {str(r["node_id"]): r for r in beat.get("cluster", []) if r.get("analysers")}


@pytest.mark.timeout(420)
def test_twenty_jobs_on_a_ray_start_cluster_found_through_RAY_ADDRESS(
    cluster: Cluster, bridge_process: BridgeProcess, rs_redis: redis.Redis, names: RedisNames
) -> None:
    workers = wait_until(
        "both GPU workers analysing",
        lambda: len(nodes := analysing_nodes(rs_redis, names)) == 2 and nodes,
        240,
    )
    said = bridge_process.log.read_text(errors="replace")
    assert f"joining the Ray cluster at {cluster.address} (RAY_ADDRESS)" in said

    job_ids = [f"rs-{n:02d}" for n in range(FIRST_JOBS)]
    for job_id in job_ids:
        xadd_raw(rs_redis, names, video(job_id))
    wait_until("20 jobs finished", lambda: all_finished(rs_redis, names, job_ids), 240)
    found = states(rs_redis, names, job_ids)
    assert {s.status for s in found.values()} == {"completed"}
    for state in found.values():
        assert state.steps["analyse"].node == state.steps["download"].node  # where the video is
    assert {s.steps["download"].node for s in found.values()} == set(workers)


@pytest.mark.timeout(420)
def test_no_download_goes_to_a_node_whose_raylet_was_killed_after_one_probe_interval(
    cluster: Cluster, bridge_process: BridgeProcess, rs_redis: redis.Redis, names: RedisNames
) -> None:
    workers = wait_until(
        "both GPU workers analysing",
        lambda: len(nodes := analysing_nodes(rs_redis, names)) == 2 and nodes,
        240,
    )
    victim = cluster.nodes["gpu2"]
    gpu2_pids = victim.pids()
    victim_id = next(n for n in workers if _node_of(n, gpu2_pids))
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with suppress(OSError):
                samples.append((time.monotonic(), bridge_process.placed_on(victim_id)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    os.kill(victim.raylet_pid(), signal.SIGKILL)
    killed_at = time.monotonic()
    job_ids = [f"rs-late-{n:02d}" for n in range(LATER_JOBS)]
    for job_id in job_ids:
        xadd_raw(rs_redis, names, video(job_id))
    try:
        wait_until("the later jobs finished", lambda: all_finished(rs_redis, names, job_ids), 240)
    finally:
        stop.set()
        sampler.join(10)
    settled = killed_at + PROBE_INTERVAL_S + SCRAPE_SLACK_S
    after = [count for t, count in samples if t >= settled]
    at_kill = next((c for t, c in samples if t >= killed_at), None)
    rises = [t for (t, c), (_, p) in zip(samples[1:], samples[:-1], strict=True) if c > p]
    last = f"{rises[-1] - killed_at:+.2f} s from the kill" if rises else "before the samples"
    end = after[-1] if after else "?"
    print(
        f"downloads placed on the killed node: {at_kill} at the kill, {end} at the end; last {last}"
    )
    assert at_kill, "the victim had no download before the kill: the check below would be empty"
    assert after, "no sample of the bridge's metrics after the probe interval"
    assert max(after) == after[0], "a download was placed on the dead node after the interval"
    found = states(rs_redis, names, job_ids)
    assert {s.status for s in found.values()} == {"completed"}
    for state in found.values():
        assert state.steps["download"].node != victim_id
        assert state.steps["analyse"].node == state.steps["download"].node


def _node_of(node_id: str, pids: set[int]) -> bool:
    """Whether a Ray node id belongs to the processes ``pids`` (its raylet's command line)."""
    for pid in pids:
        with suppress(OSError):
            if node_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
    return False
