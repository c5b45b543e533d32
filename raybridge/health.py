"""Node health: no new downloads on a node short of disk or memory, measured on that node.

A download needs room on the node's disk (the filesystem of ``settings.work_dir`` there) and
the analysis that follows needs memory. So the bridge measures every node on its node refresh
with a tiny probe task pinned there (NodeAffinity, ``num_cpus=0``, so it never waits behind the
node's work) and judges it:

    disk free  < max(2 × max_download_mb, min_free_disk_mb)   unhealthy (next download may not fit)
    memory     < min_free_memory_mb                            unhealthy

An unhealthy node keeps its analysers and its jobs (they finish); placement just gives it no
new download until it recovers.

A node must also keep answering. Probes go out every half ``health_probe_seconds``; a node whose
last answer is older than ``health_probe_seconds`` is *stale* ("not answering": a killed raylet,
a lost network) and gets no new download either, keeping its last figures for display. Ray
itself declares such a node dead only after about 15 s (5 missed checks of 3 s); until then it
would take new work that can never run. A node never measured yet counts as healthy, so a slow
first probe (a fresh node starts a worker) does not stop the cluster, unless that first answer
takes longer than ``FIRST_ANSWER_S``.

Per-node thresholds: a node started with the custom resource ``vidbrief_min_free_disk_mb`` (or
``vidbrief_min_free_memory_mb``) uses that amount, in MiB, instead of the setting, e.g. a node
with a small scratch disk::

    ray start --address=HEAD:6379
        --resources='{"vidbrief_download": 1, "vidbrief_min_free_disk_mb": 500}'

No task asks for these resources: they only carry the number (Ray shows them in ``ray status``).

Nothing here imports Ray: the probe task and the node resources come from the launcher
(launcher.py), and ``vidbrief status --cluster`` shows what the heartbeat carries
(``NodeHealth.as_dict``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ingest.settings import Settings
from pipeline.workdirs import jobs_bytes

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: Node resources whose amount (MiB) replaces the setting on that node.
DISK_OVERRIDE_RESOURCE = "vidbrief_min_free_disk_mb"
MEMORY_OVERRIDE_RESOURCE = "vidbrief_min_free_memory_mb"
#: Free disk wanted per the largest download: the video plus what its steps write next to it.
DOWNLOADS_OF_ROOM = 2
#: How long the first round waits for the probes (a fresh node starts a worker first), and
#: how long a node's first answer may take before it counts as stale.
FIRST_ANSWER_S = PROBE_TIMEOUT_S = 10.0
#: CPU sampling window of the probe (psutil's first non-blocking sample is meaningless).
CPU_SAMPLE_S = 0.1
#: Probes go out this many times per ``health_probe_seconds``, so that a node answering at
#: once is never older than the interval.
ROUNDS_PER_INTERVAL = 2
#: A later round waits for its own probes this share of the interval (not for ones already in
#: flight: a dead node must not slow the rounds, and so the others' answers).
ROUND_WAIT_SHARE = 0.25

Probe = Callable[[str], Awaitable[Mapping[str, Any]]]
NodeResources = Callable[[], Mapping[str, Mapping[str, float]]]


@dataclass(frozen=True)
class Thresholds:
    min_free_disk_bytes: int
    min_free_memory_bytes: int


@dataclass(frozen=True)
class Figures:
    """What the probe measured on a node."""

    disk_free_bytes: int
    memory_available_bytes: int
    cpu_percent: float
    measured_at: float
    #: Bytes the work folder holds on the node (videos and keyframes of jobs not yet cleaned).
    work_bytes: int | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Figures:
        work = raw.get("work_bytes")
        return cls(
            disk_free_bytes=int(raw["disk_free_bytes"]),
            memory_available_bytes=int(raw["memory_available_bytes"]),
            cpu_percent=float(raw.get("cpu_percent", 0.0)),
            measured_at=float(raw.get("measured_at", time.time())),
            work_bytes=None if work is None else int(work),
        )


@dataclass(frozen=True)
class NodeHealth:
    """One node's last figures, the thresholds that apply there, and the verdict."""

    node_id: str
    thresholds: Thresholds
    figures: Figures | None = None
    #: Not answering its probes (see the module docstring): no new download.
    stale: bool = False
    #: Seconds since its last answer (None: never answered).
    answer_age_s: float | None = None

    @property
    def verdict(self) -> tuple[bool, str]:
        return judge(self.figures, self.thresholds)

    @property
    def healthy(self) -> bool:
        return self.verdict[0]

    @property
    def reason(self) -> str:
        return self.verdict[1]

    def as_dict(self) -> dict[str, Any]:
        """For the heartbeat JSON (``vidbrief status --cluster`` reads it)."""
        figures = asdict(self.figures) if self.figures else {}
        return {
            **figures,
            **asdict(self.thresholds),
            "healthy": self.healthy,
            "reason": self.reason,
            "stale": self.stale,
            "answer_age_s": None if self.answer_age_s is None else round(self.answer_age_s, 1),
        }

    @property
    def takes_work(self) -> tuple[bool, str]:
        """Whether placement may give it a download, and why not: answering, and healthy."""
        if self.stale:
            age = "never" if self.answer_age_s is None else f"for {self.answer_age_s:.1f} s"
            return False, f"no answer to the health probes ({age})"
        return self.verdict


# -- the pure part -------------------------------------------------------------------------


def default_thresholds(settings: Settings) -> Thresholds:
    disk_mb = max(DOWNLOADS_OF_ROOM * settings.max_download_mb, settings.min_free_disk_mb)
    return Thresholds(int(disk_mb * MIB), int(settings.min_free_memory_mb * MIB))


def node_thresholds(settings: Settings, resources: Mapping[str, float]) -> Thresholds:
    """The settings' thresholds, replaced by the node's override resources where it has them."""
    base = default_thresholds(settings)
    disk_mb = resources.get(DISK_OVERRIDE_RESOURCE)
    memory_mb = resources.get(MEMORY_OVERRIDE_RESOURCE)
    return Thresholds(
        base.min_free_disk_bytes if disk_mb is None else int(disk_mb * MIB),
        base.min_free_memory_bytes if memory_mb is None else int(memory_mb * MIB),
    )


def judge(figures: Figures | None, thresholds: Thresholds) -> tuple[bool, str]:
    """Healthy, and why not. Unmeasured counts as healthy: no figures is not bad figures."""
    if figures is None:
        return True, "not measured yet"
    if figures.disk_free_bytes < thresholds.min_free_disk_bytes:
        return False, (
            f"disk free {_mib(figures.disk_free_bytes)} < {_mib(thresholds.min_free_disk_bytes)}"
        )
    if figures.memory_available_bytes < thresholds.min_free_memory_bytes:
        return False, (
            f"memory available {_mib(figures.memory_available_bytes)} "
            f"< {_mib(thresholds.min_free_memory_bytes)}"
        )
    return True, ""


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB"


# -- the probe (runs on the node) -----------------------------------------------------------


def measure(work_dir: str) -> dict[str, Any]:
    """The node's figures: free disk under ``work_dir``, the bytes the work folder holds,
    available memory, CPU use."""
    import psutil

    return {
        "disk_free_bytes": shutil.disk_usage(_existing(Path(work_dir))).free,
        "work_bytes": jobs_bytes(work_dir),
        "memory_available_bytes": psutil.virtual_memory().available,
        "cpu_percent": psutil.cpu_percent(interval=CPU_SAMPLE_S),
        "measured_at": time.time(),
    }


def _existing(path: Path) -> Path:
    """The nearest existing folder: work_dir may not exist yet on a fresh node, its disk does."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# -- the monitor (in the bridge) ------------------------------------------------------------


class HealthMonitor:
    """Probes the nodes each round and keeps every node's last figures and answer time."""

    def __init__(
        self,
        settings: Settings,
        probe: Probe,
        resources: NodeResources | None = None,
        timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.probe = probe
        self.resources = resources
        self.interval_s = settings.health_probe_seconds
        #: How long a round waits for the probes it sent (the first: FIRST_ANSWER_S).
        self.wait_s = self.interval_s * ROUND_WAIT_SHARE if timeout_s is None else timeout_s
        self.clock = clock
        self._figures: dict[str, Figures] = {}
        self._thresholds: dict[str, Thresholds] = {}
        self._answered_at: dict[str, float] = {}
        self._pending: dict[str, tuple[float, asyncio.Future[Any]]] = {}
        self._rounds = 0

    @property
    def round_s(self) -> float:
        """How often rounds should run (``Fleet``'s loop): twice per interval."""
        return self.interval_s / ROUNDS_PER_INTERVAL

    def get(self, node_id: str) -> NodeHealth | None:
        thresholds = self._thresholds.get(node_id)
        if thresholds is None:
            return None
        return NodeHealth(
            node_id, thresholds, self._figures.get(node_id), self.stale(node_id), self.age(node_id)
        )

    def all(self) -> dict[str, NodeHealth]:
        return {n: h for n in self._thresholds if (h := self.get(n)) is not None}

    def age(self, node_id: str) -> float | None:
        """Seconds since the node last answered (None: never)."""
        answered = self._answered_at.get(node_id)
        return None if answered is None else max(0.0, self.clock() - answered)

    def stale(self, node_id: str) -> bool:
        """Not answering: no answer for an interval, or a first answer overdue."""
        age = self.age(node_id)
        if age is not None:
            return age > self.interval_s
        pending = self._pending.get(node_id)
        return pending is not None and self.clock() - pending[0] > FIRST_ANSWER_S

    async def refresh(self, node_ids: Iterable[str]) -> dict[str, NodeHealth]:
        """One round: probe every node that has no probe in flight, wait a little for these
        answers (the first round: up to FIRST_ANSWER_S), note the thresholds. Never raises:
        answers are recorded whenever they come, a failed probe is simply no answer."""
        ids = set(node_ids)
        resources = await self._resources()
        self._forget_except(ids)
        sent = [self._send(node_id) for node_id in ids - self._pending.keys()]
        wait_s = FIRST_ANSWER_S if self._rounds == 0 else self.wait_s
        self._rounds += 1
        if sent:
            await asyncio.wait(sent, timeout=wait_s)
        for node_id in ids:
            self._thresholds[node_id] = node_thresholds(self.settings, resources.get(node_id, {}))
        return self.all()

    async def _resources(self) -> Mapping[str, Mapping[str, float]]:
        if self.resources is None:
            return {}
        try:
            return await asyncio.to_thread(self.resources)
        except Exception as e:  # the GCS busy or gone: thresholds from the settings
            log.warning("reading node resources for health thresholds failed: %s", e)
            return {}

    def _send(self, node_id: str) -> asyncio.Future[Any]:
        async def call() -> Any:
            return await self.probe(node_id)

        future = asyncio.ensure_future(call())
        self._pending[node_id] = (self.clock(), future)
        future.add_done_callback(lambda done: self._answer(node_id, done))
        return future

    def _answer(self, node_id: str, future: asyncio.Future[Any]) -> None:
        """A probe ended: its figures are the node's now (a failure is no answer)."""
        if self._pending.get(node_id, (0, None))[1] is future:
            del self._pending[node_id]
        if future.cancelled():
            return
        try:
            self._figures[node_id] = Figures.parse(future.result())
        except Exception as e:  # the probe failed (node gone, worker died): keep the last
            log.warning("health probe of node %s failed: %s", node_id[:12], e)
            return
        self._answered_at[node_id] = self.clock()

    def _forget_except(self, ids: set[str]) -> None:
        """Drop nodes that are gone, and cancel their probes."""
        for node_id in list(self._pending):
            if node_id not in ids:
                _, future = self._pending.pop(node_id)
                future.cancel()
                with contextlib.suppress(BaseException):
                    future.exception()  # silence "exception never retrieved"
        for table in (self._figures, self._thresholds, self._answered_at):
            for node_id in [n for n in table if n not in ids]:
                del table[node_id]

    def close(self) -> None:
        self._forget_except(set())
