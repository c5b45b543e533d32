"""Plain helpers shared by the tests (no fixtures: those are in conftest.py): raw producers,
waiting on a condition, reading job states and events back, bridge and worker processes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

import redis

from ingest.events import Event, EventType, parse_event
from ingest.models import JobState
from ingest.names import BRIDGE_GROUP, EVENT_FIELD, JOB_FIELD, RedisNames

#: Step durations for bridge tests: short, but long enough that jobs overlap.
FAST_STEPS_S = {"download": 0.05, "analyse": 0.1, "brief": 0.02, "report": 0.01}
POLL_S = 0.05


def xadd_raw(client: redis.Redis, names: RedisNames, job: dict[str, Any] | str) -> str:
    """XADD a job the way a foreign producer does: no hash, no checks."""
    raw = job if isinstance(job, str) else json.dumps(job)
    return client.xadd(names.jobs, {JOB_FIELD: raw})


def xadd_many(client: redis.Redis, names: RedisNames, jobs: list[dict[str, Any]]) -> None:
    """XADD several jobs at once (MULTI): a bridge reading meanwhile sees all or none."""
    with client.pipeline(transaction=True) as pipe:
        for job in jobs:
            pipe.xadd(names.jobs, {JOB_FIELD: json.dumps(job)})
        pipe.execute()


def cli_runner(
    redis_url: str, cwd: Path, *, strip: tuple[str, ...] = (), timeout_s: float = 60
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run(*args, **env)``: the ``vidbrief`` command in a child process on this Redis, with a
    state folder under ``cwd``; environment variables starting with ``strip`` left out."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(strip)}
    base.update(VIDBRIEF_REDIS_URL=redis_url, VIDBRIEF_STATE_DIR=str(cwd / "state"))

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vidbrief", *args],
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=cwd,
        )

    return run


async def run_all(bridge: Any) -> None:
    """Admit a Bridge's new entries, run every admitted job to its stored outcome, and wait
    for the clean-up of their folders (a ``raybridge.actor.Bridge`` driven without its loop)."""
    await bridge.fleet.refresh_nodes()
    await bridge.fleet.wait_warm()
    entries = await bridge.stream.read_new(100, block_ms=10)
    admitted = [a for a in [await bridge.admission.admit(e) for e in entries] if a]
    await asyncio.gather(*(bridge.runner.run(a.slot, a.request, a.prefer) for a in admitted))
    await bridge.cleaner.idle()


def video(job_id: str, marker: str = "") -> dict[str, str]:
    url = f"https://videos.example.com/{job_id}.mp4" + (f"#{marker}" if marker else "")
    return {"url": url, "job_id": job_id}


def wait_until(what: str, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def unchanged(read: Callable[[], Any]) -> Callable[[], bool]:
    """A condition for wait_until: ``read()`` gave the same value on two polls in a row."""
    last: list[Any] = []

    def check() -> bool:
        value = read()
        same = bool(last) and last[-1] == value
        last[:] = [value]
        return same

    return check


def started_on(evs: list[Event], node_id: str, step: str | None = None) -> set[str]:
    """The jobs with a step (``step``: that one) started on ``node_id``."""
    return {
        e.job_id
        for e in evs
        if e.type == EventType.STEP_STARTED
        and e.data.get("node") == node_id
        and (step is None or e.data.get("step") == step)
    }


def lose_node_mid_analysis(
    cluster: Any,
    node: dict[str, Any],
    bridge: Callable[..., Any],
    steps_s: dict[str, float],
    client: redis.Redis,
    names: RedisNames,
    jobs: list[str],
) -> tuple[str, float]:
    """Add ``node`` to the cluster and start a bridge with long analyses (so the node is removed
    while its work is still running, however loaded the machine is); send ``jobs`` once the
    bridge has an analysis actor there, and remove the node (not gracefully) while an analysis
    runs on it. Returns the node's id and when it was removed (monotonic)."""
    doomed = cluster.add_node(**node)
    cluster.wait_for_nodes()
    slow = {**steps_s, "analyse": 3.0}
    handle = bridge(window=len(jobs), node_refresh_seconds=0.5, synthetic_seconds=slow)
    wait_until(
        "an analysis actor on the node", lambda: doomed.node_id in handle.stats()["analysers"], 60
    )
    for job_id in jobs:
        xadd_raw(client, names, video(job_id))
    wait_until(
        "an analysis under way on the node",
        lambda: started_on(events(client, names), doomed.node_id, "analyse"),
        60,
    )
    cluster.remove_node(doomed, allow_graceful=False)
    return doomed.node_id, time.monotonic()


def assert_pinned(found: dict[str, JobState], lost_node: str) -> None:
    """Every analysis ran where its download did — except that simulated nodes share one disk:
    an output finished on the lost node (even by a worker that outlived its raylet a moment)
    may be reused."""
    for job_id, state in found.items():
        download, analysis = state.steps["download"].node, state.steps["analyse"].node
        assert analysis == download or lost_node in (analysis, download), job_id


def states(client: redis.Redis, names: RedisNames, job_ids: Iterable[str]) -> dict[str, JobState]:
    out = {}
    for job_id in job_ids:
        fields = client.hgetall(names.job(job_id))
        if fields:
            out[job_id] = JobState.from_hash(job_id, fields)
    return out


def all_finished(client: redis.Redis, names: RedisNames, job_ids: list[str]) -> bool:
    found = states(client, names, job_ids)
    return len(found) == len(job_ids) and all(s.status.finished for s in found.values())


def events(client: redis.Redis, names: RedisNames) -> list[Event]:
    return [parse_event(f[EVENT_FIELD], sid) for sid, f in client.xrange(names.events)]


def count_events(evs: list[Event], type_: EventType) -> Counter[str]:
    return Counter(e.job_id for e in evs if e.type == type_)


def group_idle(client: redis.Redis, names: RedisNames) -> bool:
    """Every entry delivered to the group and acknowledged."""
    group = next(g for g in client.xinfo_groups(names.jobs) if g["name"] == BRIDGE_GROUP)
    newest = client.xrevrange(names.jobs, count=1)
    delivered_all = not newest or group["last-delivered-id"] == newest[0][0]
    return delivered_all and group["pending"] == 0


def pending(client: redis.Redis, names: RedisNames) -> int:
    """Entries delivered and not yet acknowledged (0 before the group exists)."""
    try:
        return int(client.xpending(names.jobs, BRIDGE_GROUP)["pending"])
    except redis.ResponseError:  # NOGROUP: no bridge has started yet
        return 0


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """Most intervals open at one moment (one ending as another starts: not both open)."""
    spans = list(intervals)
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    most = open_now = 0
    for _, delta in edges:
        open_now += delta
        most = max(most, open_now)
    return most


def _psutil() -> Any:
    import psutil
    import ray  # noqa: F401  (ray puts its bundled psutil, in ray/thirdparty_files, on sys.path)

    return psutil


def family(proc: subprocess.Popen[bytes]) -> set[int]:
    """A process and its descendants, as they are now."""
    psutil = _psutil()
    with suppress(psutil.NoSuchProcess):
        return {proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))}
    return {proc.pid}


def alive(pids: set[int]) -> set[int]:
    """The processes among ``pids`` still running (zombies do not count)."""
    psutil = _psutil()
    running = set()
    for pid in pids:
        with suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.add(pid)
    return running


# -- bridge processes ----------------------------------------------------------------------


def bridge_env(
    tmp_path: Path, redis_url: str, ray_address: str, steps_s: dict[str, float]
) -> dict[str, str]:
    """The environment of a ``vidbrief bridge`` process for the tests: synthetic steps, private
    folders, a quick heartbeat, nothing from the caller's VIDBRIEF_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDBRIEF_")}
    env.update(
        {
            "VIDBRIEF_REDIS_URL": redis_url,
            "VIDBRIEF_RAY_ADDRESS": ray_address,
            "VIDBRIEF_BRIDGE_NAME": "bridge-proc",
            "VIDBRIEF_WINDOW": "20",
            "VIDBRIEF_STEP_MODE": "synthetic",
            "VIDBRIEF_SYNTHETIC_SECONDS": ",".join(f"{k}={v}" for k, v in steps_s.items()),
            "VIDBRIEF_WORK_DIR": str(tmp_path / "work"),
            "VIDBRIEF_STATE_DIR": str(tmp_path / "state"),
            "VIDBRIEF_REPORTS_URL": str(tmp_path / "reports"),
            "VIDBRIEF_HEARTBEAT_SECONDS": "0.2",
            "VIDBRIEF_DRAIN_GRACE_SECONDS": "10",
            # The tests' Ray is private and on 127.0.0.1 (conftest.py): a bridge process joins
            # it as such, or Ray would rewrite the loopback address to the host's own.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        }
    )
    return env


def spawn_bridge_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m raybridge.run`` in a new session (its own process group)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "raybridge.run"],
            env=env,
            cwd=log.parent,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal a process started in a new session, and its whole group."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # start_new_session: its pgid is its pid


# -- webhook workers -----------------------------------------------------------------------

#: The signing secret of the test webhooks (32 bytes, base64, Standard Webhooks' prefix).
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"vidbrief test secret, 32 bytes!!").decode()
WEBHOOK_BACKOFF_S = (0.2, 0.2, 0.2)
WEBHOOK_TIMEOUT_S = 5
WORKER_STOP_GRACE_S = 5.0


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the worker (rq's warm shutdown), then SIGKILL whatever is left of it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(WORKER_STOP_GRACE_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    kill_session(proc)


def kill_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL every process of the worker's session, by PID: the worker, its scheduler, and its
    work horse, which rq puts in a process group of its own (so killpg on the worker misses it).
    """
    for pid in _session_pids(proc.pid):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(ProcessLookupError, PermissionError):
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
    return pids
