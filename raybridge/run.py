"""Running the bridge: ``run_bridge`` for ``vidbrief bridge``, ``start_bridge`` in-process.

This is the edge where the Ray parts are built: ``RayBridge`` is the Bridge with the Ray
launcher and health probe (launcher.py), made remote by ``spawn_bridge``.

``run_bridge`` connects Ray (``VIDBRIEF_RAY_ADDRESS``, else Ray's own ``RAY_ADDRESS``, else a
private local Ray with download and report resources; connecting to an address, it ships the
vidbrief packages to the workers unless ``VIDBRIEF_SHIP_CODE=false``), resolves Redis
(``ingest.connect.redis_url``), starts the bridge actor, and waits.
SIGTERM or SIGINT drains it (read nothing new, wait up to ``drain_grace_seconds`` for the jobs
in flight, leave the rest pending for the next bridge) and returns 0.

    python -m raybridge.run        # the same, settings from VIDBRIEF_* variables

Tests and benchmarks start the bridge in their own driver with ``start_bridge`` and stop it
with ``BridgeHandle.stop`` (a drain).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import psutil
from pydantic import SecretStr

from ingest.connect import as_secret
from ingest.errors import BridgeStartTimeout
from ingest.events import bridge_source
from ingest.redact import error_summary
from ingest.settings import Settings, get_settings
from raybridge import logs
from raybridge.actor import Bridge
from raybridge.health import HealthMonitor
from raybridge.steps import Progress

log = logging.getLogger(__name__)

#: How long start-up may take (Ray workers, analysis actors warm) before giving up.
START_TIMEOUT_S = 180.0
#: Concurrent calls the async bridge actor serves (the loop, drain, stats, ...).
BRIDGE_MAX_CONCURRENCY = 100
#: Ray's built-in resource of the head node, and the sliver of it the bridge asks for.
HEAD_NODE_RESOURCE, HEAD_NODE_SHARE = "node:__internal_head__", 0.001
#: How often the waiting driver looks at signals and the actor.
POLL_S = 0.2
#: Time for the drain's own clean-up beyond the grace period.
DRAIN_EXTRA_S = 30.0
#: How long a local Ray's processes get to exit after ``ray.shutdown()`` before a SIGKILL.
RAY_EXIT_TIMEOUT_S = 15.0
EXIT_OK, EXIT_FAILED = 0, 1
#: What an operator needs to hear when a bridge ends without a drain.
JOBS_ARE_SAFE = "Its jobs stay pending in Redis; the next bridge claims them."
#: Ray's own variable naming the cluster to join (``VIDBRIEF_RAY_ADDRESS`` wins over it).
RAY_ADDRESS_VARIABLE = "RAY_ADDRESS"
#: Ray's switch that keeps a Ray single-node on 127.0.0.1 (see ``private_ray_switch``).
RAY_SWITCH_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: The packages a worker imports for the chain: shipped so a worker node needs only Ray and the
#: heavy libraries (torch, PyAV, ...), and always runs the driver's version of our code.
SHIPPED_PACKAGES = ("ingest", "pipeline", "raybridge", "vidbrief", "webhooks")
#: Never shipped: bytecode of the driver's Python, and local clutter.
SHIP_EXCLUDES = ["__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache"]


@dataclass
class BridgeHandle:
    """A running bridge actor, as seen from the driver that started it."""

    actor: Any
    run_ref: Any
    settings: Settings

    def finished(self) -> bool:
        """Whether the actor's main loop has ended (drained, or failed)."""
        import ray

        ready, _ = ray.wait([self.run_ref], timeout=0)
        return bool(ready)

    def stats(self) -> dict[str, Any]:
        import ray

        return ray.get(self.actor.stats.remote())

    def cancel(self, job_id: str) -> bool:
        import ray

        return ray.get(self.actor.cancel.remote(job_id))

    def stop(self, grace_s: float | None = None) -> dict[str, Any]:
        """Drain (see ``Bridge.drain``), then end the actor. Returns the final stats."""
        import ray

        grace = self.settings.drain_grace_seconds if grace_s is None else grace_s
        try:
            stats = ray.get(self.actor.drain.remote(grace), timeout=grace + DRAIN_EXTRA_S)
            ray.get(self.run_ref, timeout=DRAIN_EXTRA_S)
        finally:
            ray.kill(self.actor, no_restart=True)
        return stats


def ray_address(settings: Settings) -> tuple[str | None, str]:
    """The Ray cluster to join and which setting named it: ``VIDBRIEF_RAY_ADDRESS``, else Ray's
    own ``RAY_ADDRESS``; (None, …) for a private local Ray."""
    if settings.ray_address:
        return settings.ray_address, "VIDBRIEF_RAY_ADDRESS"
    return os.environ.get(RAY_ADDRESS_VARIABLE) or None, RAY_ADDRESS_VARIABLE


def connect_ray(settings: Settings) -> bool:
    """Connect to the configured Ray cluster or start a local Ray. True when this call did it."""
    import ray

    from pipeline.chain import DOWNLOAD_SLOT, REPORT_NODE

    if ray.is_initialized():
        return False
    address, named_by = ray_address(settings)
    logging_config = logs.ray_logging(settings)
    if address:
        log.info("joining the Ray cluster at %s (%s)", address, named_by)
        ray.init(address=address, runtime_env=shipped_code(settings), logging_config=logging_config)
        if logging_config is not None:
            logs.hand_over_to_ray()
        return True
    log.info("no VIDBRIEF_RAY_ADDRESS or RAY_ADDRESS: starting a private Ray on 127.0.0.1")
    # address="local": always a new Ray of our own, never another program's cluster that
    # happens to run on this machine.
    before = {p.pid for p in _children()}
    with private_ray_switch(), ray_in_its_own_process_group():
        ray.init(
            address="local",
            num_cpus=settings.ray_num_cpus,
            include_dashboard=False,
            resources={DOWNLOAD_SLOT: settings.ray_download_slots, REPORT_NODE: 1},
            logging_config=logging_config,
        )
    if logging_config is not None:
        logs.hand_over_to_ray()
    _local_ray[:] = [p for p in _children() if p.pid not in before]
    log.info("private Ray started at %s", ray.get_runtime_context().gcs_address)
    return True


@contextlib.contextmanager
def private_ray_switch() -> Iterator[None]:
    """Ray's Windows/OSX switch turned on (multi-node off) while a private local Ray starts.

    With ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` Ray binds 127.0.0.1 and takes no other node:
    right for a Ray of our own, wrong anywhere else — exported, it makes ``ray start --address``
    on a Linux worker abort. So it is set only around the start of the private Ray, never
    around a cluster connect, and not left in the environment for whatever runs later. Ray
    reads it once, on import, so its parsed copy is switched too.
    """
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(RAY_SWITCH_VARIABLE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[RAY_SWITCH_VARIABLE] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(RAY_SWITCH_VARIABLE, None)
        else:
            os.environ[RAY_SWITCH_VARIABLE] = saved_env


@contextlib.contextmanager
def ray_in_its_own_process_group() -> Iterator[None]:
    """The private Ray's processes (GCS, raylet, and through the raylet its workers) started
    in process groups of their own, not in the bridge's.

    A signal to the bridge's process group (``kill -- -PGID``, a supervisor or test that signals
    the group) would otherwise reach the raylet and the bridge actor's worker too: they exit at
    once, and the driver's drain finds the actor gone. Apart, only the driver hears it; it
    drains, then shuts its Ray down. They cannot outlive the driver: Ray's kernel fate-sharing
    (``PR_SET_PDEATHSIG`` on Linux) ends them when it exits; where there is none, nothing
    changes. Ray does the same on Windows (``CREATE_NEW_PROCESS_GROUP``), where the console
    signals a whole group. Ray starts every node process through ``services.ConsolePopen``,
    looked up at each call.
    """
    from ray._private import services, utils

    original = getattr(services, "ConsolePopen", None)
    # Without kernel fate-sharing (macOS) Ray's reaper ends its processes by killing its own
    # process group when the driver dies: they must stay in it. Another Ray layout: as before.
    if original is None or not utils.detect_fate_sharing_support():
        yield
        return

    class OwnGroupPopen(original):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("process_group", 0)
            super().__init__(*args, **kwargs)

    services.ConsolePopen = OwnGroupPopen
    try:
        yield
    finally:
        services.ConsolePopen = original


def disconnect_ray(started: bool) -> None:
    """Undo ``connect_ray`` (given what it returned): shut down the Ray it started and wait for
    the processes of a local one to exit.

    ``ray.shutdown()`` stops the raylet and GCS and returns while workers and actors are still
    exiting (reparented by then, so no longer our children): without the wait a command could
    return with a ``ray::Bridge`` still alive. The processes are listed before the shutdown —
    the local Ray's own and their descendants, nothing else this process started — and
    stragglers are killed by PID.
    """
    if not started:
        return
    import ray

    processes = [q for p in _local_ray for q in _with_descendants(p)]
    _local_ray.clear()
    ray.shutdown()
    _, alive = psutil.wait_procs(processes, timeout=RAY_EXIT_TIMEOUT_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=RAY_EXIT_TIMEOUT_S)


#: The processes of the local Ray that ``connect_ray`` started in this process.
_local_ray: list[psutil.Process] = []


def _children() -> list[psutil.Process]:
    return psutil.Process().children(recursive=False)


def _with_descendants(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:  # exited already
        return []


def shipped_code(settings: Settings) -> dict[str, Any] | None:
    """The job's runtime_env: our packages as ``py_modules`` (Ray zips each package folder,
    uploads it to the GCS once per content hash, and puts it first on every worker's path)."""
    if not settings.ship_code:
        return None
    import importlib

    modules = [importlib.import_module(name) for name in SHIPPED_PACKAGES]
    return {"py_modules": modules, "excludes": list(SHIP_EXCLUDES)}


class RayBridge(Bridge):
    """The bridge actor: a Bridge with the Ray launcher and health probe, built in its process."""

    def __init__(self, settings: Settings, redis_url: SecretStr) -> None:
        from raybridge.launcher import RayLauncher, ray_node_resources, ray_probe

        source = bridge_source(settings.bridge_name)
        progress = Progress(redis_url, settings.names.prefix, source, settings.events_maxlen)
        super().__init__(
            settings,
            redis_url,
            launcher=RayLauncher(settings, progress),
            health=HealthMonitor(settings, ray_probe(settings), ray_node_resources),
        )


def spawn_bridge(settings: Settings, redis_url: str | SecretStr) -> Any:
    """Start the bridge actor on the head node: the node a cluster keeps longest, and a
    predictable place for the metrics port. The Redis URL goes to it as a secret."""
    import ray

    return (
        ray.remote(RayBridge)
        .options(
            num_cpus=0,
            resources={HEAD_NODE_RESOURCE: HEAD_NODE_SHARE},
            max_concurrency=BRIDGE_MAX_CONCURRENCY,
            max_restarts=0,  # a lost bridge ends run_bridge; its supervisor starts a new one
        )
        .remote(settings, as_secret(redis_url))
    )


def start_bridge(settings: Settings, redis_url: str | SecretStr) -> BridgeHandle:
    """Start the bridge actor in the connected Ray; return once it is reading."""
    import ray

    actor = spawn_bridge(settings, redis_url)
    run_ref = actor.run.remote()
    done, _ = ray.wait([actor.ready.remote(), run_ref], num_returns=1, timeout=START_TIMEOUT_S)
    if done and run_ref not in done:
        return BridgeHandle(actor, run_ref, settings)
    try:
        if done:
            ray.get(run_ref)  # raises the start-up error
    finally:
        ray.kill(actor, no_restart=True)
    raise BridgeStartTimeout(
        f"the bridge did not start within {START_TIMEOUT_S:.0f} s: are the analysis actors "
        "pending for GPUs or CPUs the cluster does not have? (see `ray status`)"
    )


def run_bridge(settings: Settings) -> int:
    """Run a bridge until SIGTERM or SIGINT, then drain. The exit status: 0 after a drain."""
    logs.configure(settings)
    from ingest.connect import redis_url

    url = redis_url(settings)
    started_ray = connect_ray(settings)
    stop = threading.Event()
    previous = _on_signals(stop)  # after ray.init, which may install handlers of its own
    try:
        return _serve(start_bridge(settings, url), stop)
    finally:
        _restore_signals(previous)
        disconnect_ray(started_ray)


def _serve(handle: BridgeHandle, stop: threading.Event) -> int:
    from ray.exceptions import GetTimeoutError, RayActorError

    log.info(
        "bridge %s running (window %d); SIGTERM drains it",
        handle.settings.bridge_name,
        handle.settings.window,
    )
    while not stop.wait(POLL_S):
        if handle.finished():
            return _ended_by_itself(handle)
    log.info("signal received: draining (grace %.0f s)", handle.settings.drain_grace_seconds)
    try:
        stats = handle.stop()
    except GetTimeoutError:  # the actor is killed by stop() on the way out
        log.error("the drain did not end within its grace period. %s", JOBS_ARE_SAFE)
        return EXIT_FAILED
    except RayActorError as e:  # Ray was stopped with it, or its node was lost meanwhile
        log.error(
            "no drain: the bridge actor is gone (%s). %s A supervisor that stops every process "
            "at once (systemd's default KillMode=control-group) stops Ray too: signal the "
            "bridge process alone (KillMode=mixed).",
            error_summary(e),
            JOBS_ARE_SAFE,
        )
        return EXIT_FAILED
    log.info("drained: %s jobs left pending for the next bridge", stats.get("left_pending"))
    return EXIT_OK


def _ended_by_itself(handle: BridgeHandle) -> int:
    import ray

    try:
        ray.get(handle.run_ref)
    except Exception as e:  # the actor died or its loop raised: report it, fail the process
        log.error("the bridge stopped unexpectedly: %s. %s", error_summary(e), JOBS_ARE_SAFE)
        return EXIT_FAILED
    return EXIT_OK


_Handler = Any


def _on_signals(stop: threading.Event) -> dict[int, _Handler]:
    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    return {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore_signals(previous: dict[int, _Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def main() -> None:
    sys.exit(run_bridge(get_settings()))


if __name__ == "__main__":
    main()
