"""The in-flight window: which jobs this bridge holds, where each one is, and the high-water mark.

Pure bookkeeping (no Ray, no Redis), split out of the actor so it can be tested on its own, as
Ray's streaming executor does with its operator state. A job enters the window when its stream
entry is read and leaves it when its outcome is stored and the entry acknowledged; the bridge
reads from Redis only while :class:`BackpressurePolicy` says there is room, so a full window
leaves new entries in the stream, where producers and other bridges can see the backlog.

A job's phase says what it holds: ``downloading`` and ``analysing`` jobs count against their
node's look-ahead (placement.py); ``waiting`` jobs wait for a node; ``finishing`` jobs (brief,
report) run anywhere.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from ingest.errors import WindowFull

__all__ = ["BackpressurePolicy", "Phase", "Slot", "Window", "WindowFull", "WindowRoom"]


class Phase(StrEnum):
    WAITING = "waiting"  # read, waiting for a node with look-ahead room
    DOWNLOADING = "downloading"  # download task pinned to its node
    ANALYSING = "analysing"  # downloaded: waiting for, or running on, one of its node's analysers
    FINISHING = "finishing"  # brief and report, on any node


#: Phases in which a job occupies its node (its video is, or is being put, on that disk).
NODE_BOUND = frozenset({Phase.DOWNLOADING, Phase.ANALYSING})


@dataclass
class Slot:
    """One job in flight."""

    job_id: str
    stream_id: str
    deliveries: int = 1
    phase: Phase = Phase.WAITING
    node_id: str | None = None
    attempt: int = 0
    #: A cancel was asked for: whatever the chain returns is ignored.
    cancelled: bool = False
    #: The outcome is being stored: a cancel arriving now comes too late.
    finishing: bool = False
    #: The chain's refs by step name (opaque here: Ray ObjectRefs in the bridge).
    refs: dict[str, Any] = field(default_factory=dict)
    #: The analysis actor this job's analysis was sent to (opaque here), and when: a job is
    #: sent to an analyser only once its video is on disk and that analyser is free.
    analyser: Any = None
    analysis_started_at: float | None = None
    read_at: float = field(default_factory=time.monotonic)
    #: When its download was launched and when it ended (monotonic; pace.py times nodes).
    launched_at: float | None = None
    downloaded_at: float | None = None
    #: The video's duration from the probe (None: unknown), and the analysis seconds expected
    #: on the node it is bound to (placement by expected work).
    media_s: float | None = None
    expected_s: float | None = None
    #: An idle node took this job over before its analysis began (tail work stealing).
    steal_to: str | None = None
    #: Its next attempt downloads again even where a kept download exists (a stolen job: on
    #: a real cluster the kept one is on the other node's disk).
    fresh: bool = False


class Window:
    """At most ``capacity`` jobs; remembers the most it ever held (the high-water mark)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"window capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.high_water = 0
        self._slots: dict[str, Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._slots

    def __iter__(self) -> Iterator[Slot]:
        return iter(list(self._slots.values()))

    @property
    def free(self) -> int:
        return self.capacity - len(self._slots)

    @property
    def occupancy(self) -> float:
        """Fraction of the window in use, 0..1."""
        return len(self._slots) / self.capacity

    def get(self, job_id: str) -> Slot | None:
        return self._slots.get(job_id)

    def by_stream_id(self, stream_id: str) -> Slot | None:
        return next((s for s in self._slots.values() if s.stream_id == stream_id), None)

    def stream_ids(self) -> list[str]:
        return [s.stream_id for s in self._slots.values()]

    def add(self, slot: Slot) -> Slot:
        if slot.job_id in self._slots:
            raise ValueError(f"job {slot.job_id} is already in the window")
        if self.free <= 0:
            raise WindowFull(f"window of {self.capacity} is full; job {slot.job_id} must wait")
        self._slots[slot.job_id] = slot
        self.high_water = max(self.high_water, len(self._slots))
        return slot

    def remove(self, job_id: str) -> Slot | None:
        return self._slots.pop(job_id, None)

    def assign(self, job_id: str, node_id: str) -> None:
        """The job's download goes to ``node_id``."""
        slot = self._slots[job_id]
        slot.node_id, slot.phase = node_id, Phase.DOWNLOADING

    def advance(self, job_id: str, phase: Phase) -> None:
        """Move a job to a later phase; leaving the node-bound phases frees its node."""
        slot = self._slots.get(job_id)
        if slot is None:
            return
        slot.phase = phase
        if phase not in NODE_BOUND:
            slot.node_id = None

    def assigned_per_node(self) -> Counter[str]:
        """Jobs occupying each node: downloading, downloaded and waiting, or analysing."""
        return Counter(
            s.node_id for s in self._slots.values() if s.phase in NODE_BOUND and s.node_id
        )

    def downloading_per_node(self) -> Counter[str]:
        """Jobs whose download is running (or queued in Ray) on each node."""
        return Counter(
            s.node_id for s in self._slots.values() if s.phase is Phase.DOWNLOADING and s.node_id
        )

    def bound_to(self, node_id: str) -> list[Slot]:
        """The jobs occupying ``node_id``, in the order they were read."""
        return [s for s in self._slots.values() if s.node_id == node_id and s.phase in NODE_BOUND]

    def waiting(self) -> int:
        """Jobs read and waiting for a node."""
        return sum(1 for s in self._slots.values() if s.phase is Phase.WAITING)

    def phases(self) -> Counter[str]:
        return Counter(str(s.phase) for s in self._slots.values())


class BackpressurePolicy(Protocol):
    """Decides whether the bridge may read more entries (Ray Data's one-method interface)."""

    def can_add_input(self, window: Window) -> bool: ...


class WindowRoom:
    """The default policy: read while the window has a free slot."""

    def can_add_input(self, window: Window) -> bool:
        return window.free > 0
