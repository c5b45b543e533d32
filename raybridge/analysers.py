"""Which analysis actor a downloaded video goes to: the first of its node's to be free.

    vidbrief-analyser:<node>:0   ◀── job 7 (running)
    vidbrief-analyser:<node>:1   ◀── job 9 (running)
    queue of <node>              job 11, job 12   (downloaded, waiting here, in download order)

A job's analysis is bound to an actor only once its video is on the node's disk and one of the
node's actors has no analysis of this bridge: bound when its download began (the old rule: the
actor with the fewest of the window's jobs), a video waited behind one GPU's long analysis
while the node's other GPU idled — 1.7 s of GPU idle on the three-node mix of `bench schedule`,
0.19 s now. It costs one hand-over through the bridge per job (a few milliseconds).

The actors are shared by every bridge of a cluster (launcher.py); a bridge sees only its own
analyses, so another bridge's call may be running on an actor it takes for free: its call then
queues on that actor, as every call did under the old rule. So of the actors free in its view,
a bridge takes first the one its own analysis left last: that one it *knows* is idle; one it
has not used for a while may be running another bridge's job.

Pure bookkeeping over asyncio futures: ``fleet.py`` owns the actors (``analysers``, the same
dict) and calls :meth:`dispatch` whenever one may have come free or gone.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from raybridge.window import Slot


class AnalyserQueues:
    """Per node, the downloaded jobs waiting for a free analyser, and this bridge's analyses."""

    def __init__(self, analysers: dict[str, list[Any]]) -> None:
        self.analysers = analysers  # node id -> warm actors (the fleet's own dict)
        self._waiting: dict[str, deque[tuple[Slot, asyncio.Future[Any]]]] = {}
        #: This bridge's analyses under way: actor id -> (job id, node id).
        self._busy: dict[int, tuple[str, str]] = {}
        #: When this bridge's last analysis on each actor ended (monotonic): actor id -> time.
        self._left_at: dict[int, float] = {}

    async def acquire(self, slot: Slot, while_waiting: Callable[[], None]) -> Any | None:
        """The first free analyser of the job's node, now the job's (``slot.analyser``). None:
        the node has no analyser any more, or the job was taken out of the queue (:meth:`take`).
        ``while_waiting`` runs once if the job has to wait."""
        node = slot.node_id or ""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(node, deque()).append((slot, future))
        self.dispatch(node)
        if not future.done():
            while_waiting()
        return await future

    def dispatch(self, node_id: str) -> None:
        """Hand the node's free analysers to its waiting jobs, first downloaded first."""
        queue = self._waiting.get(node_id)
        if not queue:
            return
        handles = self.analysers.get(node_id, [])
        free = sorted(
            (h for h in handles if id(h) not in self._busy),
            key=lambda h: -self._left_at.get(id(h), float("-inf")),  # the one left last first
        )
        while queue and (free or not handles):
            slot, future = queue.popleft()
            if future.done():  # cancelled, or taken out
                continue
            if not handles:
                future.set_result(None)
                continue
            handle = free.pop(0)
            self._busy[id(handle)] = (slot.job_id, node_id)
            slot.analyser, slot.analysis_started_at = handle, time.monotonic()
            future.set_result(handle)

    def ended(self, slot: Slot) -> None:
        """The job's analysis ended (done, failed or abandoned): its analyser is free."""
        handle = slot.analyser
        busy = self._busy.get(id(handle)) if handle is not None else None
        if busy is None or busy[0] != slot.job_id:
            return
        del self._busy[id(handle)]
        self._left_at[id(handle)] = time.monotonic()
        slot.analysis_started_at = None
        self.dispatch(busy[1])

    def forget(self, handle: Any, node_id: str) -> None:
        """An actor gone for good: nothing runs on it any more."""
        self._busy.pop(id(handle), None)
        self._left_at.pop(id(handle), None)
        self.dispatch(node_id)

    def running_on(self, node_id: str) -> int:
        """This bridge's analyses under way on the node."""
        return sum(1 for _, node in self._busy.values() if node == node_id)

    def waiting_on(self, node_id: str) -> int:
        """This bridge's downloaded jobs waiting for one of the node's analysers."""
        return sum(1 for _, future in self._waiting.get(node_id, ()) if not future.done())

    def take(self, slot: Slot) -> bool:
        """Take a waiting job out of its node's queue (its ``acquire`` returns None)."""
        for queued, future in self._waiting.get(slot.node_id or "", ()):
            if queued is slot and not future.done():
                future.set_result(None)
                return True
        return False
