"""Code shipped to the cluster: a bridge connected to an address sends our packages with
``runtime_env={"py_modules": [...]}``, so a worker node needs only Ray and the heavy libraries.

The head is a separate ``ray start --head --block`` process in its own session, started from a
temporary folder with an environment that does not point at the repo. The venv still holds
vidbrief as an editable install, whose import hook could hand workers the repo's files: the
proof is therefore where the worker's modules come from (``__file__`` under Ray's
``runtime_resources`` in the head's temp dir), not whether the import works. The head is
stopped by killing its process group, never with ``ray stop`` (which stops every Ray here).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import ray
from helpers import alive, all_finished, family, states, video, wait_until, xadd_raw

from ingest.models import JobStatus
from ingest.settings import Settings
from pipeline.chain import DOWNLOAD_SLOT, REPORT_NODE
from raybridge.run import SHIPPED_PACKAGES, connect_ray, start_bridge

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.integration]

# The shipping test runs in a fresh pytest process (a fresh Ray driver), as `vidbrief bridge`
# does in production, with RAY_AUTH_MODE=disabled like its loopback head. Ray reads that mode
# once per process, and an earlier in-process `ray.init` (tests/test_raybridge_bridge.py) sets
# RAY_AUTH_MODE=token in os.environ: a driver with token auth against this head without it
# gets its first actor cancelled before it starts.
FRESH_DRIVER_ENV = "VIDBRIEF_TEST_FRESH_DRIVER"
IN_FRESH_DRIVER = os.environ.get(FRESH_DRIVER_ENV) == "1"
FRESH_DRIVER_TIMEOUT_S = 300


@pytest.mark.skipif(IN_FRESH_DRIVER, reason="this is the fresh driver")
def test_code_shipping_in_a_fresh_driver() -> None:
    """Runs the shipping test below in its own pytest process and requires it to pass."""
    env = {**os.environ, FRESH_DRIVER_ENV: "1", "RAY_AUTH_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         "-k", "ships_the_code"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=FRESH_DRIVER_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout


ROOT = Path(__file__).resolve().parents[1]
STEPS_S = {"download": 0.05, "analyse": 0.1, "brief": 0.02, "report": 0.01}
#: `ray start --block`, gcs_server and raylet outlive SIGTERM for 30 s and more (measured):
#: a short grace, then SIGKILL.
TERM_GRACE_S = 5.0
KILL_WAIT_S = 10.0
#: Environment variables that would let the head's workers find the repo without shipping.
LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def head_env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in LEAKY_ENV and not k.startswith("VIDBRIEF_")
    }
    env.update(
        {
            "PYTHONNOUSERSITE": "1",
            # With a token in ~/.ray a head enables token auth by itself, and a driver given an
            # address only sends it under RAY_AUTH_MODE=token, which Ray reads once per
            # process: this loopback-only head goes without, whatever the driver's mode.
            "RAY_AUTH_MODE": "disabled",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    return env


def session_pids(proc: subprocess.Popen[bytes], temp: Path) -> set[int]:
    """The head's processes: its descendants, and any process naming its temp dir (a worker
    Ray might have re-parented)."""
    import psutil

    pids = family(proc)
    for p in psutil.process_iter(["pid", "cmdline"]):
        with suppress(psutil.Error, TypeError):
            if any(str(temp) in arg for arg in p.info["cmdline"] or ()):
                pids.add(p.info["pid"])
    return pids


def stop_head(proc: subprocess.Popen[bytes], temp: Path) -> set[int]:
    """SIGTERM the head's process group, SIGKILL what is left; return the pids still alive."""
    pids = session_pids(proc, temp)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + TERM_GRACE_S
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in alive(pids | session_pids(proc, temp)):  # a process that left the group
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(KILL_WAIT_S)
    deadline = time.monotonic() + KILL_WAIT_S
    while alive(pids) and time.monotonic() < deadline:  # SIGKILL is not instant
        time.sleep(0.2)
    return alive(pids | session_pids(proc, temp))


@pytest.fixture
def ray_head() -> Iterator[tuple[str, Path]]:
    """A Ray head of our own on a free port, from a folder and environment without the repo."""
    if ray.is_initialized():
        ray.shutdown()  # this test's driver connects to its own head
    # Short path: Ray's unix sockets live under the temp dir (108-byte limit).
    temp = Path(tempfile.mkdtemp(prefix="vbray-", dir="/tmp"))
    port = free_port()
    ray_cli = Path(sys.executable).parent / "ray"
    resources = f'{{"{DOWNLOAD_SLOT}": 1, "{REPORT_NODE}": 1}}'
    with (temp / "head.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(ray_cli), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
             "--num-cpus=2", f"--resources={resources}", "--include-dashboard=false",
             "--disable-usage-stats", f"--temp-dir={temp}", "--block"],
            cwd=temp, env=head_env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_until("the head's GCS port", lambda: port_open(port) or proc.poll() is not None)
        assert proc.poll() is None, (temp / "head.log").read_text()[-3000:]
        yield f"127.0.0.1:{port}", temp
    finally:
        if ray.is_initialized():
            ray.shutdown()
        left = stop_head(proc, temp)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"processes of the test's Ray head still running: {sorted(left)}"


@pytest.mark.skipif(not IN_FRESH_DRIVER, reason="run by test_code_shipping_in_a_fresh_driver")
@pytest.mark.timeout(240)
def test_bridge_ships_the_code_to_a_head_without_it(
    ray_head: tuple[str, Path],
    make_settings: Callable[..., Settings],
    redis_server: Any,
    redis_client: Any,
    names: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    address, temp = ray_head
    # Ray adds the driver's cwd to every worker's sys.path (harmless on a real worker node,
    # where that folder does not exist): here it would be the repo, so leave it first.
    monkeypatch.chdir(temp)
    settings = make_settings(
        ray_address=address, step_mode="synthetic", synthetic_seconds=STEPS_S, window=4
    )
    assert connect_ray(settings)

    def probe() -> dict[str, str]:
        # Nested, so cloudpickle sends it by value: workers cannot import this test module.
        import importlib
        import os as os_

        out = {n: importlib.import_module(n).__file__ or "" for n in SHIPPED_PACKAGES}
        return {**out, "cwd": os_.getcwd()}

    seen = ray.get(ray.remote(probe).options(num_cpus=0).remote(), timeout=120)
    runtime_resources = (temp / "session_latest" / "runtime_resources").resolve()
    for name in SHIPPED_PACKAGES:
        path = Path(seen[name]).resolve()
        assert path.is_relative_to(runtime_resources), (name, path)
        assert not path.is_relative_to(ROOT), (name, path)
    assert not Path(seen["cwd"]).resolve().is_relative_to(ROOT)

    handle = start_bridge(settings, redis_server.url)
    try:
        job_ids = [f"shipped-{n}" for n in range(4)]
        for job_id in job_ids:
            xadd_raw(redis_client, names, video(job_id))
        wait_until("4 jobs finished", lambda: all_finished(redis_client, names, job_ids), 120)
        assert {s.status for s in states(redis_client, names, job_ids).values()} == {
            JobStatus.COMPLETED
        }
    finally:
        with suppress(Exception):
            handle.stop(grace_s=0)


def test_ship_code_only_with_an_address(make_settings: Callable[..., Settings]) -> None:
    from raybridge.run import shipped_code

    env = shipped_code(make_settings(ray_address="127.0.0.1:1"))
    assert env is not None
    assert [m.__name__ for m in env["py_modules"]] == list(SHIPPED_PACKAGES)
    assert "__pycache__" in env["excludes"]
    assert shipped_code(make_settings(ray_address="127.0.0.1:1", ship_code=False)) is None
