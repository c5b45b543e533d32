"""``vidbrief health …``: the probes compose.yaml and deploy/kubernetes run, against the real thing.

A real bridge (local Ray, synthetic steps) and a real rq webhook worker write their heartbeats
to the session's redis-server; a real Ray node answers on its agent port. Each probe runs as
the container runtime runs it: a ``vidbrief`` process whose exit status and one line are read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import ray
import redis
from helpers import FAST_STEPS_S, wait_until

from ingest.redis_server import RedisServer, free_port, start_redis_server
from ingest.settings import Settings
from pipeline.chain import DOWNLOAD_SLOT, REPORT_NODE
from raybridge import BridgeHandle, start_bridge
from vidbrief.health_check import EXIT_CONFIG, EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_UNREACHABLE

REPO = Path(__file__).resolve().parents[1]
SECRET = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
PROBE_TIMEOUT_S = 60
STOP_GRACE_S = 10


def probe(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``vidbrief health ARGS`` as a container runtime runs it: own process, own env."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIDBRIEF_")}
    clean.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-m", "vidbrief", "health", *args],
        cwd=cwd,  # no stray .env from the repository
        env=clean,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_S,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The probe's output, asserted to be a single line."""
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# ----------------------------------------------------------------------------- the bridge
@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(
        address="local",
        num_cpus=4,
        resources={DOWNLOAD_SLOT: 2, REPORT_NODE: 1},
        include_dashboard=False,
    )
    yield
    ray.shutdown()


@pytest.fixture
def bridge(
    local_ray: None, make_settings: Callable[..., Settings], redis_server: RedisServer
) -> Iterator[Callable[..., BridgeHandle]]:
    started: list[BridgeHandle] = []

    def start(**overrides: object) -> BridgeHandle:
        settings = make_settings(
            step_mode="synthetic",
            synthetic_seconds=FAST_STEPS_S,
            heartbeat_seconds=0.5,
            **overrides,
        )
        handle = start_bridge(settings, redis_server.url)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        with suppress(Exception):
            handle.stop(grace_s=0)


@pytest.mark.ray
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_the_bridge_probe_passes_while_it_beats_and_fails_once_it_stops(
    bridge: Callable[..., BridgeHandle], redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {"VIDBRIEF_REDIS_URL": redis_server.url, "VIDBRIEF_BRIDGE_NAME": "probe-me"}
    handle = bridge(bridge_name="probe-me")

    alive = probe("bridge", cwd=tmp_path, **env)
    assert alive.returncode == EXIT_HEALTHY, alive.stderr
    assert "bridge probe-me: running" in one_line(alive)

    ray.kill(handle.actor, no_restart=True)  # a crash: no clean-up, the heartbeat just stops
    stale = wait_until(
        "the probe to call the dead bridge stale",
        lambda: (r := probe("bridge", "--max-age", "1", cwd=tmp_path, **env)).returncode and r,
    )
    assert stale.returncode == EXIT_UNHEALTHY
    assert "bridge probe-me: last heartbeat" in one_line(stale)


@pytest.mark.ray
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_drained_bridge_leaves_no_heartbeat_and_fails_the_probe(
    bridge: Callable[..., BridgeHandle], redis_server: RedisServer, tmp_path: Path
) -> None:
    handle = bridge(bridge_name="drained")
    env = {"VIDBRIEF_REDIS_URL": redis_server.url}
    assert probe("bridge", "--name", "drained", cwd=tmp_path, **env).returncode == EXIT_HEALTHY

    handle.stop(grace_s=0)
    gone = probe("bridge", "--name", "drained", cwd=tmp_path, **env)
    assert gone.returncode == EXIT_UNHEALTHY
    assert "no heartbeat" in one_line(gone)
    other = probe("bridge", "--name", "never-started", cwd=tmp_path, **env)
    assert other.returncode == EXIT_UNHEALTHY


def test_an_unreachable_redis_and_a_bad_configuration_have_their_own_codes(
    tmp_path: Path,
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    for component in ("bridge", "webhook-worker"):
        down = probe(component, cwd=tmp_path, VIDBRIEF_REDIS_URL=nobody)
        assert down.returncode == EXIT_UNREACHABLE, down.stderr
        assert "cannot reach Redis" in one_line(down)
        bad = probe(component, cwd=tmp_path, VIDBRIEF_REDIS_URL=nobody, VIDBRIEF_WINDOW="0")
        assert bad.returncode == EXIT_CONFIG
        assert one_line(bad).startswith("error: bad configuration: window")


def test_a_probe_never_starts_the_embedded_redis(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = probe("bridge", cwd=tmp_path, VIDBRIEF_STATE_DIR=str(state))
    assert result.returncode == EXIT_UNREACHABLE
    assert "embedded Redis is not running" in one_line(result)
    assert not list(state.glob("**/*.pid")) and not list(state.glob("**/redis*.conf"))


def test_a_wrong_redis_password_is_reported_without_the_password(tmp_path: Path) -> None:
    server = start_redis_server(tmp_path / "redis", password="right", daemonize=False)
    try:
        wrong = f"redis://default:not-the-password@127.0.0.1:{server.port}/0"
        result = probe("bridge", cwd=tmp_path, VIDBRIEF_REDIS_URL=wrong)
    finally:
        server.stop()
    assert result.returncode == EXIT_UNREACHABLE
    assert "not-the-password" not in one_line(result)


# ----------------------------------------------------------------------------- the webhook worker
@pytest.fixture
def webhook_worker(
    redis_client: redis.Redis, redis_server: RedisServer, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m webhooks`` on a flushed Redis, in its own session; killed by PID."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDBRIEF_")}
    env.update(
        PYTHONPATH=str(REPO),
        VIDBRIEF_REDIS_URL=redis_server.url,
        VIDBRIEF_WEBHOOK_SECRET=SECRET,
        VIDBRIEF_STATE_DIR=str(tmp_path / "state"),
    )
    with (tmp_path / "worker.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "webhooks"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    yield proc
    for pid in session_pids(proc.pid):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(STOP_GRACE_S)


def session_pids(sid: int) -> list[int]:
    """The worker, its scheduler and its work horse (rq gives the horse its own group)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(ProcessLookupError, PermissionError):
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
    return pids


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_the_webhook_worker_probe_follows_the_worker_s_heartbeat(
    webhook_worker: subprocess.Popen[bytes], redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {"VIDBRIEF_REDIS_URL": redis_server.url}
    alive = wait_until(
        "the worker to register",
        lambda: (r := probe("webhook-worker", cwd=tmp_path, **env)).returncode == 0 and r,
    )
    assert "webhook worker on " in one_line(alive)

    # Hung, not dead: rq's registration stays in Redis, only the heartbeat stops.
    for pid in session_pids(webhook_worker.pid):
        os.kill(pid, signal.SIGSTOP)
    hung = wait_until(
        "the probe to call the hung worker stale",
        lambda: (
            (r := probe("webhook-worker", "--max-age", "7", cwd=tmp_path, **env)).returncode and r
        ),
        timeout_s=60,
    )
    assert hung.returncode == EXIT_UNHEALTHY
    assert "last heartbeat" in one_line(hung)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_webhook_worker_that_stopped_cleanly_is_not_found(
    webhook_worker: subprocess.Popen[bytes], redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {"VIDBRIEF_REDIS_URL": redis_server.url}
    wait_until(
        "the worker to register",
        lambda: probe("webhook-worker", cwd=tmp_path, **env).returncode == 0,
    )
    os.killpg(webhook_worker.pid, signal.SIGTERM)  # rq's warm shutdown deregisters it
    webhook_worker.wait(STOP_GRACE_S * 3)
    gone = probe("webhook-worker", cwd=tmp_path, **env)
    assert gone.returncode == EXIT_UNHEALTHY
    assert "no webhook worker on " in one_line(gone)


# ----------------------------------------------------------------------------- a Ray node
@pytest.mark.ray
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_the_ray_node_probe_asks_the_node_s_own_agent(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    port = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "dashboard_agent_listen_port": port},
    )
    try:
        alive = wait_until(
            "the node's agent to answer",
            lambda: (
                (r := probe("ray-node", "--port", str(port), cwd=tmp_path)).returncode == 0 and r
            ),
        )
        assert one_line(alive) == "ray node: raylet: success; gcs: success"
    finally:
        cluster.shutdown()
    down = probe("ray-node", "--port", str(port), cwd=tmp_path)
    assert down.returncode == EXIT_UNREACHABLE
    assert one_line(down).startswith("error: ray node: no answer")
