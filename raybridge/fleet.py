"""The nodes as one bridge sees them: their analysis actors, their health, and which job
downloads where.

    refresh_nodes()    every node_refresh_seconds: new nodes get analysis actors (warmed before
                       they count), dead nodes lose theirs and their pace
    refresh_health()   every half health_probe_seconds: health.py's probes; a node that is short
                       of disk or memory, or has stopped answering, takes no download
    acquire_node()     a job waits here, in read order, until placement (placement.py, over
                       snapshot()) gives it a node; dispatch() runs whenever room may have
                       appeared: a download ended, a job left its node, a node or actor came
    acquire_analyser() a downloaded job waits here for the first of its node's analysers to
                       be free (this bridge's analyses), in download order
    downloaded(),      the job's phase moves on and pace.py times the node, which sets how far
    analysed()         ahead of its GPUs the node downloads; an analyser left idle while
                       nothing waits may take over a job waiting on another node (expected.py)

Nothing here talks to Redis; Ray only through the injected launcher and health monitor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

from ingest.names import ANALYSE_STEP
from ingest.settings import Settings
from raybridge.analysers import AnalyserQueues
from raybridge.expected import backlog_s, choose_steal, slot_wait_s, update_expected
from raybridge.health import HealthMonitor
from raybridge.holds import Holds, holds_of, with_others_backlog
from raybridge.metrics import BridgeMetrics
from raybridge.outcome import Failure
from raybridge.pace import Pace
from raybridge.placement import ClusterSnapshot, NodeView, analysers_wanted, choose_node
from raybridge.protocols import Launcher
from raybridge.window import Phase, Slot, Window

log = logging.getLogger(__name__)

#: How long start-up waits for the analysis actors to be warm before reading anyway.
ANALYSER_WARM_TIMEOUT_S = 120.0
#: After another bridge took the room a job was placed into, it waits this long to try again.
HOLD_RETRY_S = 0.05
#: Failures after which an analysis actor is gone for good (a fresh one replaces it).
ANALYSER_GONE = frozenset({"ActorDiedError", "ActorUnschedulableError"})
NO_ANALYSER_HINT = (
    "no node can analyse: give nodes download slots and GPUs, e.g. "
    "`ray start --num-gpus=1 --resources='{\"vidbrief_download\": 2}'` "
    "(or set VIDBRIEF_ANALYSIS_ON=cpu); jobs wait in the window until one can"
)


class Fleet:
    """Nodes, analysis actors, node health and the queue of jobs waiting for a node."""

    def __init__(
        self,
        settings: Settings,
        launcher: Launcher,
        window: Window,
        metrics: BridgeMetrics,
        health: HealthMonitor | None = None,
        holds: Holds | None = None,
    ) -> None:
        self.settings = settings
        self.holds = holds  # None: this bridge alone decides (tests of one bridge)
        self.launcher = launcher
        self.window = window
        self.metrics = metrics
        self.health = health  # None: every node counts as healthy
        self.pace = Pace()
        self.nodes: list[NodeView] = []
        #: Warm analysis actors per node id.
        self.analysers: dict[str, list[Any]] = {}
        self._warming: dict[str, set[asyncio.Task[None]]] = {}
        #: Per node, the index (the actor's name, shared by every bridge) of each handle.
        self._indices: dict[str, dict[int, int]] = {}
        self._on_gpus: bool | None = None
        self._waiting: deque[tuple[Slot, str | None, asyncio.Future[str]]] = deque()
        self.queues = AnalyserQueues(self.analysers)

    # -- nodes and analysis actors ----------------------------------------------------------

    async def refresh_nodes(self) -> None:
        """Read the nodes; start analysis actors where they are missing, forget dead nodes."""
        self.nodes = await asyncio.to_thread(self.launcher.nodes)
        if self.holds is not None and self.holds.active:
            await self.holds.refresh(n.node_id for n in self.nodes if n.alive)
        snapshot = ClusterSnapshot(tuple(self.nodes))
        if self._on_gpus is None and snapshot.alive_ids:
            mode = self.settings.analysis_on
            self._on_gpus = mode == "gpu" or (mode == "auto" and snapshot.has_gpus)
        for node in self.nodes:
            self._fit_analysers(node)
        self.dispatch()

    def _fit_analysers(self, node: NodeView) -> None:
        if not node.alive:
            self.analysers.pop(node.node_id, None)  # its actors died with it
            self._indices.pop(node.node_id, None)
            self.pace.forget(node.node_id)
            self.queues.dispatch(node.node_id)  # its waiting jobs: no analyser any more
            return
        wanted = analysers_wanted(
            node, on_gpus=bool(self._on_gpus), cpu_per_node=self.settings.cpu_analysers_per_node
        )
        warming = self._warming.setdefault(node.node_id, set())
        used = self._indices.setdefault(node.node_id, {})
        for index in sorted(set(range(wanted)) - set(used.values())):
            handle, ready = self.launcher.start_analyser(
                node.node_id, on_gpu=bool(self._on_gpus), index=index
            )
            used[id(handle)] = index
            task = asyncio.create_task(self._warm(node.node_id, handle, ready))
            warming.add(task)
            task.add_done_callback(warming.discard)

    async def _warm(self, node_id: str, handle: Any, ready: Awaitable[Any]) -> None:
        try:
            await ready
        except Exception as e:  # unschedulable, crashed in warm-up: the next refresh retries
            log.warning("analysis actor on node %s did not start: %s", node_id, e)
            self._indices.get(node_id, {}).pop(id(handle), None)
            return
        self.analysers.setdefault(node_id, []).append(handle)
        self.dispatch()
        self.queues.dispatch(node_id)

    async def wait_warm(self) -> None:
        """Wait (bounded) for the analysis actors being started; warn if none can analyse."""
        warming = self.warming_tasks()
        if warming:
            await asyncio.wait(warming, timeout=ANALYSER_WARM_TIMEOUT_S)
        if not any(self.analysers.values()):
            log.warning(NO_ANALYSER_HINT)

    def alive_nodes(self) -> list[str]:
        return [n.node_id for n in self.nodes if n.alive]

    def warming_tasks(self) -> list[asyncio.Task[None]]:
        return [t for tasks in self._warming.values() for t in tasks]

    async def acquire_analyser(self, slot: Slot) -> Any | None:
        """The first of the job's node's analysers to be free (analysers.py); None: the node
        has none any more, or an idle node took the job over (``slot.steal_to``)."""
        node = slot.node_id or ""
        return await self.queues.acquire(slot, lambda: self._offer_to_idle_nodes(node))

    def analysis_ended(self, slot: Slot) -> None:
        self.queues.ended(slot)

    def drop_analyser(self, analyser: Any, failure: Failure) -> None:
        """Forget an analysis actor that died for good; the next refresh starts a new one."""
        if failure.step != ANALYSE_STEP or failure.error_class not in ANALYSER_GONE:
            return
        for node_id, handles in self.analysers.items():
            if analyser in handles:
                handles.remove(analyser)
                self._indices.get(node_id, {}).pop(id(analyser), None)
                self.launcher.stop_analyser(analyser)
                self.queues.forget(analyser, node_id)

    def stop_analysers(self) -> None:
        """Stop every analysis actor (the last bridge of a cluster, when it stops)."""
        for handles in self.analysers.values():
            for handle in handles:
                self.launcher.stop_analyser(handle)

    # -- health -----------------------------------------------------------------------------

    async def refresh_health(self) -> None:
        """Measure every alive node (health.py); a node that recovered may take waiting jobs."""
        if self.health is None:
            return
        await self.health.refresh(n.node_id for n in self.nodes if n.alive)
        self.metrics.observe_health(self.health.all().values())
        self.dispatch()

    @property
    def health_round_s(self) -> float:
        """How often to run ``refresh_health`` (the monitor's half interval)."""
        return (
            self.health.round_s if self.health is not None else self.settings.node_refresh_seconds
        )

    def close(self) -> None:
        if self.health is not None:
            self.health.close()

    # -- placement --------------------------------------------------------------------------

    async def acquire_node(self, slot: Slot, prefer: str | None) -> str:
        """Wait (in read order) until placement gives this job a node and, with several
        bridges, the node's shared capacity a hold for it (holds.py); assign it there."""
        while True:
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            if slot.deliveries > 1:  # taken over from a dead bridge: it has waited already
                self._waiting.appendleft((slot, prefer, future))
            else:
                self._waiting.append((slot, prefer, future))
            self.dispatch()
            node = await future
            if await self._hold(slot, node, forced=node == prefer):
                return node
            self.window.advance(slot.job_id, Phase.WAITING)  # another bridge took the room
            await asyncio.sleep(HOLD_RETRY_S)

    async def _hold(self, slot: Slot, node: str, *, forced: bool) -> bool:
        if self.holds is None or not self.holds.active:
            return True
        view = self.snapshot().node(node)
        if view is None:
            return True
        capacity = view.capacity(self.settings.download_lookahead)
        return await self.holds.acquire(
            node, slot.job_id, capacity, view.download_slots, slot.media_s or 0.0, forced
        )

    @property
    def waiting(self) -> bool:
        """Some job waits for a node."""
        return any(not f.done() for _, _, f in self._waiting)

    def dispatch(self) -> None:
        """Give waiting jobs nodes, first come first served, while nodes have room."""
        while self._waiting:
            slot, prefer, future = self._waiting[0]
            if future.done():
                self._waiting.popleft()
                continue
            snapshot = self.snapshot()
            node = choose_node(
                snapshot,
                lookahead=self.settings.download_lookahead,
                prefer=prefer,
                media_s=slot.media_s,
            )
            if node is None:
                return
            self._waiting.popleft()
            self.window.assign(slot.job_id, node)
            slot.expected_s = self._expected_s(snapshot, node, slot.media_s)
            self.metrics.placed_on(node)
            future.set_result(node)

    def leave_node(self, slot: Slot, phase: Phase) -> None:
        """The job no longer holds its node (its analysis ended, or it stopped)."""
        self.analysis_ended(slot)
        if slot.job_id in self.window and slot.node_id is not None:
            if self.holds is not None and self.holds.active:
                self.holds.release(slot.node_id, slot.job_id)
            self.window.advance(slot.job_id, phase)
            self.dispatch()

    def downloaded(self, slot: Slot, t: float) -> None:
        """The job's download ended at ``t``: a download slot is free for the next job."""
        if slot.node_id and slot.launched_at is not None:
            self.pace.downloaded(slot.node_id, slot.launched_at, t)
        slot.downloaded_at = t
        if self.holds is not None and self.holds.active and slot.node_id:
            self.holds.downloaded(slot.node_id, slot.job_id, slot.media_s or 0.0)
        self.window.advance(slot.job_id, Phase.ANALYSING)
        self.dispatch()

    def analysed(self, slot: Slot, t: float) -> None:
        """The job's analysis ended at ``t``: it leaves its node for the last steps."""
        node = slot.node_id
        if node and slot.analysis_started_at is not None:
            self.pace.analysed(node, slot.analysis_started_at, t, slot.media_s)
        self.leave_node(slot, Phase.FINISHING)
        if node:
            self.steal_for(node)

    def _offer_to_idle_nodes(self, busy_node: str) -> None:
        """A job waits for an analyser on ``busy_node``: a node left idle may take it over."""
        for node in self.nodes:
            if node.alive and node.node_id != busy_node:
                self.steal_for(node.node_id)

    def steal_for(self, node_id: str) -> None:
        """Tail work stealing (expected.py): an idle analyser here, nothing waiting for a node,
        a job waiting for an analyser elsewhere that would finish sooner here."""
        # The cheap checks first: this runs for every other node whenever a job has to wait.
        if self._waiting or len(self.window.bound_to(node_id)) >= self._analysers_on(node_id):
            return
        snapshot = self.snapshot()
        view = snapshot.node(node_id)
        if view is None or not view.can_analyse or view.download_s is None:
            return
        pace = view.pace if view.pace is not None else snapshot.mean_pace

        def here_s(slot: Slot) -> float:
            return (view.download_s or 0.0) + (slot.media_s or 0.0) * pace

        candidates = [
            s for s in self.window if s.node_id not in (None, node_id) and s.steal_to is None
        ]
        steal = choose_steal(
            candidates, self.window.bound_to, self._analysers_on, here_s, time.monotonic()
        )
        if steal is None or not self.queues.take(steal.slot):
            return
        steal.slot.steal_to = node_id
        log.info(
            "job %s: taken over by idle node %s (expected %.2f s sooner)",
            steal.slot.job_id,
            node_id,
            steal.gain_s,
        )

    def _slot_wait_s(self, node: NodeView, now: float) -> float:
        downloads = self.pace.download_s(node.node_id) or 0.0
        return slot_wait_s(self.window.bound_to(node.node_id), node.download_slots, downloads, now)

    def _update_expected(self) -> None:
        """Bound jobs' expected seconds at the paces measured now (expected.py)."""
        update_expected(self.window, {n.node_id: self.pace.pace(n.node_id) for n in self.nodes})

    def _analysers_on(self, node_id: str) -> int:
        return len(self.analysers.get(node_id, ()))

    def _expected_s(self, snapshot: ClusterSnapshot, node: str, media_s: float | None) -> float:
        if media_s is None:
            return 0.0
        view = snapshot.node(node)
        pace = view.pace if view is not None and view.pace is not None else snapshot.mean_pace
        return media_s * pace

    def bound_holds(self) -> dict[str, list[tuple[str, str, float]]]:
        """The jobs on nodes now, as holds (holds.py): node → (job, kind, media s)."""
        return holds_of(self.window)

    def snapshot(self) -> ClusterSnapshot:
        """The nodes now, with this window's jobs on them, their look-ahead and health."""
        now = time.monotonic()
        self._update_expected()
        nodes = tuple(
            replace(
                n,
                analysers=(analysers := self._analysers_on(n.node_id)),
                lookahead=self.pace.lookahead(n.node_id, analysers),
                backlog_s=backlog_s(self.window.bound_to(n.node_id), now),
                pace=self.pace.pace(n.node_id),
                download_s=self.pace.download_s(n.node_id),
                slot_wait_s=self._slot_wait_s(n, now),
                **self._verdict(n.node_id),
            )
            for n in self.nodes
        )
        assigned, downloading = self.window.assigned_per_node(), self.window.downloading_per_node()
        for node, other in (self.holds.others if self.holds is not None else {}).items():
            assigned[node] += other.jobs
            downloading[node] += other.downloading
        snapshot = ClusterSnapshot(nodes).with_assigned(assigned, downloading)
        return with_others_backlog(snapshot, self.holds.others if self.holds is not None else {})

    def _verdict(self, node_id: str) -> dict[str, Any]:
        health = self.health.get(node_id) if self.health is not None else None
        healthy, reason = health.takes_work if health is not None else (True, "")
        return {"healthy": healthy, "health_reason": reason}

    # -- for the heartbeat ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Alive nodes, analysers per node, and a row per alive node (``status --cluster``)."""
        return {
            "nodes": len([n for n in self.nodes if n.alive]),
            "analysers": {node: len(h) for node, h in self.analysers.items() if h},
            "cluster": self._rows(),
        }

    def _rows(self) -> list[dict[str, Any]]:
        rows = []
        for node in self.snapshot().nodes:
            if not node.alive:
                continue
            health = self.health.get(node.node_id) if self.health is not None else None
            row: dict[str, Any] = {
                "node_id": node.node_id,
                "host": node.host,
                "gpus": node.gpus,
                "download_slots": node.download_slots,
                "analysers": node.analysers,
                "analysing": self.queues.running_on(node.node_id),
                "waiting_for_analyser": self.queues.waiting_on(node.node_id),
                "assigned": node.assigned,
                "held_here": len(self.window.bound_to(node.node_id)),
                "capacity": node.capacity(self.settings.download_lookahead),
                **self.pace.as_dict(node.node_id),
            }
            row.update(health.as_dict() if health is not None else {"healthy": True})
            rows.append(row)
        return rows
