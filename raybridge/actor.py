"""The bridge: one long-running async actor between the jobs stream and the Ray chains.

    vidbrief:jobs ──XREADGROUP (COUNT = free slots)──▶ admission ──▶ job (fleet: placement,
         ▲                                                              launcher: the chain)
         └── XACK + job hash + terminal event, one script (finish) ◀── await the chain's refs

The loop reads only while the window has room (backpressure: the backlog stays in the stream),
hands each entry to admission.py, and runs every admitted job as its own coroutine (job.py).
Nothing here blocks the event loop: Redis through ``redis.asyncio``, Ray refs awaited, the
launcher's node listing in a thread.

Which entry comes next (fairness.py): new entries are routed into per-priority, per-producer
lanes of ids and taken high priority first, producers in turn. Around the loop: a lease in
Redis renewed three times a period (leases.py), recovery (own pending entries at start; then,
every third of a lease, the entries of bridges whose lease lapsed), a control reader (cancel
requests), the node and health refreshes (fleet.py), a heartbeat in ``vidbrief:bridges``,
trimming the jobs stream of acknowledged entries (stream_trim.py), the watchdog of step time
limits (step_limits.py), Prometheus metrics, and the clean-up of work folders and the artefact
store (cleanup.py).

``Bridge`` is a plain class (Ray's ``util/queue.py`` habit) with its launcher and health
monitor passed in: ``run.py`` makes it remote with the Ray ones; tests drive it directly with a
fake launcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.exceptions import RedisError

from ingest.connect import as_secret
from ingest.events import bridge_source
from ingest.models import now
from ingest.names import CANCEL_FIELD
from ingest.redact import error_summary
from ingest.settings import Settings
from raybridge.admission import Admission, Admitted
from raybridge.announce import Announcer
from raybridge.cleanup import Cleaner
from raybridge.fairness import FairQueue
from raybridge.finish import Finisher
from raybridge.fleet import Fleet
from raybridge.health import HealthMonitor
from raybridge.holds import Holds
from raybridge.job import JobRunner
from raybridge.leases import Leases
from raybridge.metrics import BridgeMetrics
from raybridge.protocols import Launcher
from raybridge.reuse import Reuse
from raybridge.step_limits import CHECK_EVERY_S
from raybridge.stream import READ_BLOCK_MS, Entry, JobStream
from raybridge.stream_trim import JobsTrimmer
from raybridge.window import BackpressurePolicy, Slot, Window, WindowRoom

log = logging.getLogger(__name__)

#: Pause after a Redis error in a loop before trying again.
ERROR_PAUSE_S = 1.0
#: While jobs wait for a node, the other bridges' holds are read this often: room they give
#: back is seen within this long.
HOLDS_REFRESH_S = 0.1


class Bridge:
    """Consumes ``vidbrief:jobs`` with a bounded window and runs each job's chain."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str | SecretStr,
        *,
        launcher: Launcher,
        health: HealthMonitor | None = None,
        redis: aioredis.Redis | None = None,
        policy: BackpressurePolicy | None = None,
    ) -> None:
        self.settings = settings
        self.names = settings.names
        self.source = bridge_source(settings.bridge_name)
        # surrogateescape: a producer's non-UTF-8 bytes must not crash the read loop; they
        # come back as lone surrogates (refused by admission) and go to the dead letter as sent.
        redis_url = as_secret(redis_url)
        self.redis = redis or aioredis.from_url(
            redis_url.get_secret_value(),
            decode_responses=True,
            health_check_interval=30,
            encoding_errors="surrogateescape",
        )
        self.stream = JobStream(
            self.redis,
            self.names,
            settings.bridge_name,
            events_maxlen=settings.events_maxlen,
            job_ttl_seconds=settings.job_ttl_seconds,
            dead_letter_field_bytes=settings.dead_letter_field_bytes,
        )
        self.trimmer = JobsTrimmer(self.redis, self.names)
        self.queue = FairQueue(self.redis, self.names, settings.bridge_name)
        self.leases = Leases(self.redis, self.names, settings.bridge_name, settings.lease_seconds)
        self.window = Window(settings.window)
        self.policy = policy or WindowRoom()
        self.metrics = BridgeMetrics()
        self.launcher = launcher
        self.holds = Holds(self.redis, self.names, settings.bridge_name)
        self.fleet = Fleet(settings, launcher, self.window, self.metrics, health, self.holds)
        finisher = Finisher(self.stream, self.metrics, Announcer(settings, redis_url), self.source)
        self.admission = Admission(
            settings, self.stream, self.window, finisher, self.metrics, self.source
        )
        self.cleaner = Cleaner(settings, self.stream, self.window, launcher)
        reuse = Reuse(settings, self.stream, launcher, self.source)
        self.runner = JobRunner(
            settings, self.stream, self.fleet, launcher, finisher, reuse, self.cleaner
        )
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._room = asyncio.Event()
        self._ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._reading_done = asyncio.Event()
        self._draining = self._stopping = False
        self._own_cursor: str | None = "0"  # recovery: own pending entries first
        self._next_orphan_sweep = 0.0
        self._started_at = now()
        self._last_read_at: float | None = None

    # -- the actor's methods ----------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Start, then read and run jobs until drained. Returns the final stats."""
        await self._start()
        try:
            await self._read_loop()
        finally:
            self._reading_done.set()
        await self._stopped.wait()
        return self._stats()

    async def ready(self) -> dict[str, Any]:
        """Returns once start-up is done (analysis actors warm, recovery begun)."""
        await self._ready.wait()
        return self._stats()

    async def drain(self, grace_s: float | None = None) -> dict[str, Any]:
        """Read nothing new; wait up to the grace for the jobs in flight; leave the rest pending."""
        grace = self.settings.drain_grace_seconds if grace_s is None else grace_s
        self._draining = True
        self._room.set()
        if self._jobs:
            await asyncio.wait(list(self._jobs.values()), timeout=grace)
        left = len(self.window)
        await self._stop()
        log.info("bridge %s drained; %d jobs left pending", self.settings.bridge_name, left)
        return {**self._stats(), "left_pending": left}

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job this bridge holds; False when it holds none by that id."""
        return self._cancel(job_id)

    async def stats(self) -> dict[str, Any]:
        return self._stats()

    # -- start and stop ---------------------------------------------------------------------

    async def _start(self) -> None:
        await self.leases.renew()  # before any read: a bridge without a lease is taken over
        await self.stream.ensure_group()
        if self.settings.metrics_port is not None:
            self.metrics.serve(self.settings.metrics_port, self.settings.metrics_host)
        control_after = await self.stream.control_tail()
        await self._check_peers()
        await self.fleet.refresh_nodes()
        # The first health round before the first read: no download to a full disk at start.
        await asyncio.gather(self.fleet.wait_warm(), self.fleet.refresh_health())
        every = self.settings.node_refresh_seconds
        self._background = [
            asyncio.create_task(c)
            for c in (
                self._control_loop(control_after),
                self._every(every, self._check_peers),
                self._every(every, self.fleet.refresh_nodes),
                self._every(self.fleet.health_round_s, self.fleet.refresh_health),
                self._every(self.settings.heartbeat_seconds, self._heartbeat),
                self._every(self.settings.heartbeat_seconds, self._trim_jobs),
                self._every(CHECK_EVERY_S, self.runner.clock.check),
                self.cleaner.run(self.fleet.alive_nodes),
                self._every(self.leases.renew_every_s, self.leases.renew),
                self._every(HOLDS_REFRESH_S, self._refresh_holds),
            )
        ]
        await self._heartbeat()
        self._ready.set()

    async def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        for slot in self.window:
            self.launcher.cancel(slot.refs.values())  # left pending: the next bridge runs it
        tasks = [
            *self._jobs.values(),
            *self._background,
            *self.fleet.warming_tasks(),
            *self.cleaner.close(),
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not await self._others_alive():
            self.fleet.stop_analysers()  # shared by the bridges: the last one stops them
        with contextlib.suppress(TimeoutError):  # let a blocked XREADGROUP return first
            await asyncio.wait_for(self._reading_done.wait(), 2 * READ_BLOCK_MS / 1000)
        with contextlib.suppress(RedisError):
            await self.stream.forget_bridge(self.settings.bridge_name)
        await self.leases.forget()  # what is left pending is claimed by the others at once
        self.metrics.close()
        self.fleet.close()
        await self.holds.close()
        await self.redis.aclose()
        self._stopped.set()

    async def _others_alive(self, *, unsure: bool = True) -> bool:
        """Whether another bridge holds a lease (``unsure``: the answer after a Redis error)."""
        try:
            names = await self.redis.hkeys(self.names.bridges)
            others = [n for n in names if n != self.settings.bridge_name]
            return bool(await self.leases.alive(others))
        except RedisError:
            return unsure

    # -- reading ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while not self._draining:
            if not self.policy.can_add_input(self.window):
                await self._wait_room()
                continue
            try:
                entries = await self._next_entries(self.window.free)
            except RedisError as e:
                log.warning("reading %s failed: %s", self.names.jobs, error_summary(e))
                await asyncio.sleep(ERROR_PAUSE_S)
                continue
            for entry in entries:
                if self._draining:
                    break  # delivered but not admitted: stays pending for the next bridge
                await self._admit(entry)

    async def _wait_room(self) -> None:
        self._room.clear()
        if not self.policy.can_add_input(self.window) and not self._draining:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), READ_BLOCK_MS / 1000)

    async def _next_entries(self, count: int) -> list[Entry]:
        """Own pending entries first (recovery), then those of bridges without a lease, then
        the fair-share lanes (fairness.py); when nothing waits, block until something new."""
        self._last_read_at = now()
        if self._own_cursor is not None:
            entries = await self.stream.read_own_pending(self._own_cursor, count)
            if entries:
                self._own_cursor = entries[-1].stream_id
                return entries
            self._own_cursor = None
        if time.monotonic() >= self._next_orphan_sweep:
            self._next_orphan_sweep = time.monotonic() + self.leases.renew_every_s
            entries = await self.leases.claim_orphans(count)
            entries += await self.leases.claim_own_stale(
                count - len(entries), self.settings.claim_idle_ms, set(self.window.stream_ids())
            )
            if entries:
                return entries
        taken = await self.queue.take(count)
        if not taken.entries and not taken.more:
            await self.queue.wait_new(min(READ_BLOCK_MS, self.leases.lease_ms // 3))
        return taken.entries

    async def _admit(self, entry: Entry) -> None:
        try:
            admitted = await self.admission.admit(entry)
        except RedisError as e:
            why = error_summary(e)
            log.warning("entry %s left pending after a Redis error: %s", entry.stream_id, why)
            return
        if admitted is None or self._draining:
            return  # accepted while a drain began: it stays pending, like what was not read
        self.metrics.observe_window(self.window)
        self._jobs[admitted.slot.job_id] = asyncio.create_task(self._job(admitted))

    async def _job(self, admitted: Admitted) -> None:
        try:
            await self.runner.run(admitted.slot, admitted.request, admitted.prefer)
        finally:
            self._forget(admitted.slot)

    def _forget(self, slot: Slot) -> None:
        self.window.remove(slot.job_id)
        self._jobs.pop(slot.job_id, None)
        self.metrics.observe_window(self.window)
        self._room.set()
        self.fleet.dispatch()

    # -- cancel -----------------------------------------------------------------------------

    def _cancel(self, job_id: str) -> bool:
        slot = self.window.get(job_id)
        if slot is None or slot.finishing:
            return False
        slot.cancelled = True
        self.launcher.cancel(slot.refs.values())
        task = self._jobs.get(job_id)
        if task is not None:
            task.cancel()
        log.info("job %s: cancelled", job_id)
        return True

    async def _control_loop(self, after: str) -> None:
        while not self._stopping:
            try:
                entries = await self.stream.read_control(after)
            except RedisError as e:
                log.warning("reading %s failed: %s", self.names.control, error_summary(e))
                await asyncio.sleep(ERROR_PAUSE_S)
                continue
            for entry in entries:
                after = entry.stream_id
                if entry.fields.get(CANCEL_FIELD):
                    self._cancel(entry.fields[CANCEL_FIELD])

    # -- background -------------------------------------------------------------------------

    async def _every(self, seconds: float, action: Callable[[], Awaitable[None]]) -> None:
        while not self._stopping:
            await asyncio.sleep(seconds)
            try:
                await action()
            except Exception as e:  # a background chore must not stop the bridge
                name = getattr(action, "__name__", action)
                log.warning("%s failed: %s", name, error_summary(e))

    async def _check_peers(self) -> None:
        """Holds are kept only while another bridge shares the cluster (holds.py)."""
        shared = await self._others_alive(unsure=False)
        if shared and not self.holds.active:
            nodes = [n.node_id for n in self.fleet.nodes]
            await self.holds.activate(nodes, self.fleet.bound_holds())
        elif not shared:
            self.holds.active = False
            self.holds.others = {}

    async def _refresh_holds(self) -> None:
        if self.fleet.waiting and self.holds.others:
            await self.holds.refresh(n.node_id for n in self.fleet.nodes if n.alive)
            self.fleet.dispatch()

    async def _trim_jobs(self) -> None:
        """Drop the jobs stream's entries every group acknowledged (stream_trim.py)."""
        await self.trimmer.trim()

    async def _heartbeat(self) -> None:
        self.metrics.observe_window(self.window)
        await self.stream.heartbeat(self.settings.bridge_name, self._stats())

    def _stats(self) -> dict[str, Any]:
        return {
            "name": self.settings.bridge_name,
            "window": self.window.capacity,
            "in_flight": len(self.window),
            "high_water": self.window.high_water,
            "phases": dict(self.window.phases()),
            "last_read_at": self._last_read_at,
            "started_at": self._started_at,
            "updated_at": now(),
            "heartbeat_seconds": self.settings.heartbeat_seconds,  # its age is judged by it
            "draining": self._draining,
            "pid": os.getpid(),
            "jobs": [
                {
                    "job_id": s.job_id,
                    "node": s.node_id,
                    "phase": str(s.phase),
                    "downloaded": s.downloaded_at is not None,
                }
                for s in self.window
            ],
            **self.fleet.stats(),
        }
