"""The bridge: one long-running async actor between the jobs stream and the Ray chains.

    vidbrief:jobs ──XREADGROUP (COUNT = free slots)──▶ window ──▶ placement ──▶ launcher ──▶ Ray
         ▲                                                                                  │
         └── XACK + job hash + terminal event, one script ◀──── await the chain's refs ◀────┘

The loop reads only while the window has room (backpressure: the backlog stays in the stream),
admits each entry (dead letter, duplicate, finished, cancelled, or a job), and gives every job
a coroutine that places it, launches its chain, follows its refs, retries what may succeed
later, and stores the outcome. Nothing here blocks the event loop: Redis through
``redis.asyncio``, Ray refs awaited, ``ray.nodes()`` in a thread.

Around the loop: recovery at start (own pending entries, then XAUTOCLAIM of idle ones), a
control reader (cancel requests), a node watcher (new nodes get analysis actors, dead ones are
dropped), keep-alive claims of the entries in flight, a heartbeat in ``vidbrief:bridges``, and
Prometheus metrics.

``Bridge`` is a plain class (Ray's ``util/queue.py`` habit): ``launcher.spawn_bridge`` makes it
remote; tests may drive it directly with an injected launcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import RedisError

from ingest.errors import InvalidRequest
from ingest.events import EventType, bridge_source, build_event
from ingest.models import (
    JOB_ID_PATTERN,
    JobRequest,
    JobState,
    JobStatus,
    hash_fields,
    now,
    parse_request,
)
from ingest.names import ANALYSE_STEP, CANCEL_FIELD, DOWNLOAD_STEP, JOB_FIELD
from ingest.settings import Settings
from pipeline.chain import CHAIN
from pipeline.context import JobContext
from raybridge.announce import Announcer
from raybridge.health import HealthMonitor, ray_node_resources, ray_probe
from raybridge.metrics import BridgeMetrics
from raybridge.outcome import Failure, FailureKind, Outcome
from raybridge.pace import Pace
from raybridge.placement import ClusterSnapshot, NodeView, analysers_wanted, choose_node
from raybridge.steps import Progress
from raybridge.stream import READ_BLOCK_MS, Entry, JobStream
from raybridge.window import BackpressurePolicy, Phase, Slot, Window, WindowRoom

log = logging.getLogger(__name__)

#: How long start-up waits for the analysis actors to be warm before reading anyway.
ANALYSER_WARM_TIMEOUT_S = 120.0
#: Pause after a Redis error in a loop before trying again.
ERROR_PAUSE_S = 1.0
#: Longest wait between retries of a step, whatever the backoff doubling says.
MAX_BACKOFF_S = 60.0
#: XAUTOCLAIM sweeps at most this often (and at least every claim_idle_ms / 2).
RECLAIM_MIN_S, RECLAIM_MAX_S = 1.0, 30.0
#: Keep-alive claims of the entries in flight go out at most this often.
KEEP_ALIVE_MIN_S = 0.1
#: Failures after which an analysis actor is gone for good (a fresh one replaces it).
ANALYSER_GONE = frozenset({"ActorDiedError", "ActorUnschedulableError"})
#: How long a failed attempt waits for its later steps to report the same failure.
SETTLE_S = 10.0


class Bridge:
    """Consumes ``vidbrief:jobs`` with a bounded window and runs each job's chain on Ray."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        *,
        launcher: Any = None,
        redis: aioredis.Redis | None = None,
        policy: BackpressurePolicy | None = None,
    ) -> None:
        self.settings = settings
        self.names = settings.names
        self.source = bridge_source(settings.bridge_name)
        self.redis_url = redis_url
        # surrogateescape: a producer's non-UTF-8 bytes must not crash the read loop; they
        # come back as lone surrogates (rejected in _parse) and go to the dead letter unchanged.
        self.redis = redis or aioredis.from_url(
            redis_url,
            decode_responses=True,
            health_check_interval=30,
            encoding_errors="surrogateescape",
        )
        self.stream = JobStream(
            self.redis,
            self.names,
            settings.bridge_name,
            claim_idle_ms=settings.claim_idle_ms,
            events_maxlen=settings.events_maxlen,
            job_ttl_seconds=settings.job_ttl_seconds,
        )
        self.window = Window(settings.window)
        self.pace = Pace()
        self.policy = policy or WindowRoom()
        self.metrics = BridgeMetrics()
        self.announcer = Announcer(settings, redis_url)
        self.launcher = launcher
        self._nodes: list[NodeView] = []
        self.health: HealthMonitor | None = None  # set in _start (None: every node healthy)
        self._on_gpus: bool | None = None
        self._analysers: dict[str, list[Any]] = {}
        self._warming: dict[str, set[asyncio.Task[None]]] = {}
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._waiting: deque[tuple[Slot, str | None, asyncio.Future[str]]] = deque()
        self._background: list[asyncio.Task[None]] = []
        self._room = asyncio.Event()
        self._ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._reading_done = asyncio.Event()
        self._draining = self._stopping = False
        self._own_cursor: str | None = "0"  # recovery: own pending entries first
        self._next_reclaim = 0.0
        self._control_after = "$"
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
        if self.launcher is None:
            from raybridge.launcher import Launcher

            progress = Progress(
                self.redis_url, self.names.prefix, self.source, self.settings.events_maxlen
            )
            self.launcher = Launcher(self.settings, progress)
            self.health = HealthMonitor(self.settings, ray_probe(self.settings), ray_node_resources)
        elif getattr(self.launcher, "probe_health", None) is not None:  # tests' fake launchers
            self.health = HealthMonitor(self.settings, self.launcher.probe_health)
        await self.stream.ensure_group()
        if self.settings.metrics_port is not None:
            self.metrics.serve(self.settings.metrics_port, self.settings.metrics_host)
        self._control_after = await self.stream.control_tail()
        await self._refresh_nodes()
        # The first health round before the first read: no download to a full disk at start.
        await asyncio.gather(self._wait_warm(), self._refresh_health())
        self._background = [
            asyncio.create_task(c)
            for c in (
                self._control_loop(),
                self._every(self.settings.node_refresh_seconds, self._refresh_nodes),
                self._every(self.settings.node_refresh_seconds, self._refresh_health),
                self._every(self.settings.heartbeat_seconds, self._heartbeat),
                self._every(self._keep_alive_s(), self._keep_alive),
            )
        ]
        await self._heartbeat()
        self._ready.set()

    async def _wait_warm(self) -> None:
        warming = [t for tasks in self._warming.values() for t in tasks]
        if warming:
            await asyncio.wait(warming, timeout=ANALYSER_WARM_TIMEOUT_S)
        if not any(self._analysers.values()):
            log.warning(
                "no node can analyse: give nodes download slots and GPUs, e.g. "
                "`ray start --num-gpus=1 --resources='{\"vidbrief_download\": 2}'` "
                "(or set VIDBRIEF_ANALYSIS_ON=cpu); jobs wait in the window until one can"
            )

    async def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        for slot in self.window:
            self.launcher.cancel(slot.refs.values())  # left pending: the next bridge runs it
        tasks = [
            *self._jobs.values(),
            *self._background,
            *(t for ts in self._warming.values() for t in ts),
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):  # let a blocked XREADGROUP return first
            await asyncio.wait_for(self._reading_done.wait(), 2 * READ_BLOCK_MS / 1000)
        with contextlib.suppress(RedisError):
            await self.stream.forget_bridge(self.settings.bridge_name)
        self.metrics.close()
        if self.health is not None:
            self.health.close()
        await self.redis.aclose()
        self._stopped.set()

    # -- reading ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while not self._draining:
            if not self.policy.can_add_input(self.window):
                await self._wait_room()
                continue
            try:
                entries = await self._next_entries(self.window.free)
            except RedisError as e:
                log.warning("reading %s failed: %s", self.names.jobs, e)
                await asyncio.sleep(ERROR_PAUSE_S)
                continue
            for entry in entries:
                if self._draining:
                    break  # delivered but not admitted: stays pending for the next bridge
                await self._admit_safely(entry)

    async def _wait_room(self) -> None:
        self._room.clear()
        if not self.policy.can_add_input(self.window) and not self._draining:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), READ_BLOCK_MS / 1000)

    async def _next_entries(self, count: int) -> list[Entry]:
        """Own pending entries first (recovery), then idle ones of others, then new ones."""
        self._last_read_at = now()
        if self._own_cursor is not None:
            entries = await self.stream.read_own_pending(self._own_cursor, count)
            if entries:
                self._own_cursor = entries[-1].stream_id
                return entries
            self._own_cursor = None
        if time.monotonic() >= self._next_reclaim:
            entries = await self.stream.reclaim(count)
            pause = self._reclaim_every_s() if self.stream.sweep_done else 0.0
            self._next_reclaim = time.monotonic() + pause
            if entries:
                return entries
        return await self.stream.read_new(count)

    def _reclaim_every_s(self) -> float:
        return min(max(self.settings.claim_idle_ms / 2000, RECLAIM_MIN_S), RECLAIM_MAX_S)

    def _keep_alive_s(self) -> float:
        # Well within claim_idle_ms, or our own XAUTOCLAIM would take (and count) them again.
        return min(max(self.settings.claim_idle_ms / 3000, KEEP_ALIVE_MIN_S), RECLAIM_MAX_S)

    # -- admitting an entry -----------------------------------------------------------------

    async def _admit_safely(self, entry: Entry) -> None:
        try:
            await self._admit(entry)
        except RedisError as e:
            log.warning("entry %s left pending after a Redis error: %s", entry.stream_id, e)

    async def _admit(self, entry: Entry) -> None:
        if self.window.by_stream_id(entry.stream_id):
            return  # our own running entry, reclaimed because it looked idle
        if not entry.fields:
            await self.stream.ack([entry.stream_id])  # deleted from the stream meanwhile
            return
        try:
            request = self._parse(entry)
        except InvalidRequest as e:
            await self._reject(entry, str(e))
            return
        job_id = request.job_id or _default_job_id(entry.stream_id)
        request = request.model_copy(update={"job_id": job_id})
        if job_id not in self.window and await self._accept_new(entry, request):
            return
        state = await self._state(job_id)
        if not await self._skip(entry, job_id, state):
            await self._accept(entry, request, state)

    def _parse(self, entry: Entry) -> JobRequest:
        if entry.deliveries > self.settings.max_deliveries:
            raise InvalidRequest(
                f"delivered {entry.deliveries} times, more than max_deliveries="
                f"{self.settings.max_deliveries} (set VIDBRIEF_MAX_DELIVERIES to allow more)"
            )
        if JOB_FIELD not in entry.fields:
            shown = ", ".join(sorted(entry.fields)) or "none"
            raise InvalidRequest(f"entry has no '{JOB_FIELD}' field (fields: {shown!a})")
        raw = entry.fields[JOB_FIELD]
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError as e:  # undecodable bytes (see surrogateescape above)
            raise InvalidRequest(f"request: not UTF-8 (byte at position {e.start})") from e
        return parse_request(raw)

    async def _reject(self, entry: Entry, reason: str) -> None:
        subject = _guess_job_id(entry) or entry.stream_id
        event = build_event(
            EventType.REJECTED,
            subject,
            self.source,
            f"rejected/{entry.stream_id}",
            {"reason": reason, "stream_id": entry.stream_id, "deliveries": entry.deliveries},
        )
        await self.stream.dead_letter(entry, reason, event)
        self.metrics.dead_letters.inc()
        log.info("entry %s dead-lettered: %s", entry.stream_id, reason)

    async def _state(self, job_id: str) -> JobState | None:
        fields = await self.redis.hgetall(self.names.job(job_id))
        if not fields:
            return None
        try:
            return JobState.from_hash(job_id, fields)
        except ValueError as e:
            log.warning("job %s: unreadable hash, treated as new: %s", job_id, e)
            return None

    async def _skip(self, entry: Entry, job_id: str, state: JobState | None) -> bool:
        """Acknowledge entries whose job must not run (again). True when skipped."""
        if job_id in self.window:
            await self.stream.ack([entry.stream_id])  # a duplicate entry of a job we run
            return True
        if state is None:
            return False
        if state.status.finished:
            await self.stream.ack([entry.stream_id])  # finished: no second run, no event
            return True
        if state.cancel_requested:
            await self._store(job_id, entry.stream_id, Outcome.cancelled(), state)
            return True
        if await self._running_elsewhere(entry, state):
            await self.stream.ack([entry.stream_id])
            return True
        return False

    async def _running_elsewhere(self, entry: Entry, state: JobState) -> bool:
        """The job's own entry is another one that is still pending (in some bridge)."""
        other = state.stream_id
        return bool(other and other != entry.stream_id and await self.stream.is_pending(other))

    async def _accept_new(self, entry: Entry, request: JobRequest) -> bool:
        """The common case in one round trip: a job never run (no hash, or queued by a
        producer for this very entry) is accepted by one script. False: it needs a look at
        its state (finished, cancelled, running elsewhere, resumed) — the slow path."""
        job_id, t = request.job_id or "", now()
        slot = self.window.add(Slot(job_id, entry.stream_id, entry.deliveries))
        try:
            accepted = await self.stream.accept_new(
                job_id,
                entry.stream_id,
                self._accepted_fields(entry, request, t),
                hash_fields(status=JobStatus.QUEUED, created_at=t, attempts=0),
                self._accepted_event(entry, request),
            )
        except BaseException:
            self.window.remove(job_id)
            raise
        if not accepted:
            self.window.remove(job_id)
            return False
        self._start_job(slot, request, None)
        return True

    async def _accept(self, entry: Entry, request: JobRequest, state: JobState | None) -> None:
        job_id = request.job_id or ""
        slot = self.window.add(Slot(job_id, entry.stream_id, entry.deliveries))
        try:
            await self._record_accepted(entry, request, state)
        except BaseException:
            self.window.remove(job_id)
            raise
        self._start_job(slot, request, _download_node(state))

    def _start_job(self, slot: Slot, request: JobRequest, prefer: str | None) -> None:
        self.metrics.observe_window(self.window)
        self._jobs[slot.job_id] = asyncio.create_task(self._job_main(slot, request, prefer))

    def _accepted_fields(self, entry: Entry, request: JobRequest, t: float) -> dict[str, str]:
        fields = hash_fields(
            url=request.url,
            stream_id=entry.stream_id,
            updated_at=t,
            bridge=self.settings.bridge_name,
        )
        fields["request"] = request.to_json()
        return fields

    def _accepted_event(self, entry: Entry, request: JobRequest) -> bytes:
        data = {"stream_id": entry.stream_id, "url": request.url}
        return build_event(EventType.ACCEPTED, request.job_id or "", self.source, "accepted", data)

    async def _record_accepted(
        self, entry: Entry, request: JobRequest, state: JobState | None
    ) -> None:
        job_id, t = request.job_id or "", now()
        fields = self._accepted_fields(entry, request, t)
        if state is None:
            fields.update(hash_fields(status=JobStatus.QUEUED, created_at=t, attempts=0))
        async with self.stream.transaction() as pipe:
            await self.stream.update_job(job_id, fields, pipe)
            if state is None or state.status is JobStatus.QUEUED:
                await self.stream.publish(self._accepted_event(entry, request), pipe)

    # -- one job ----------------------------------------------------------------------------

    async def _job_main(self, slot: Slot, request: JobRequest, prefer: str | None) -> None:
        try:
            outcome = await self._outcome(slot, request, prefer)
            slot.finishing = True  # from here on a cancel comes too late
            await self._store(slot.job_id, slot.stream_id, outcome, None)
        except (RedisError, OSError) as e:
            log.warning("job %s: outcome not stored, entry stays pending: %s", slot.job_id, e)
        except Exception:
            log.exception("job %s: bridge error; entry stays pending", slot.job_id)
        finally:
            self._forget(slot)

    async def _outcome(self, slot: Slot, request: JobRequest, prefer: str | None) -> Outcome:
        try:
            return await self._execute(slot, request, prefer)
        except asyncio.CancelledError:
            if not slot.cancelled:
                raise  # the bridge is stopping: the entry stays pending
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return Outcome.cancelled()
        finally:
            self._leave_node(slot, Phase.FINISHING)

    async def _execute(self, slot: Slot, request: JobRequest, prefer: str | None) -> Outcome:
        """Attempts until the chain completes, fails for good, or runs out of retries."""
        done: dict[str, Any] = {}
        retries = moves = 0
        while not slot.cancelled:
            outputs, failure = await self._attempt(slot, request, done, prefer)
            if failure is None:
                return Outcome.completed(_as_json(outputs[CHAIN[-1].name]))
            if failure.kind is FailureKind.RETRYABLE and retries < self.settings.step_retries:
                retries += 1
                done = self._kept_before(slot, failure.step)
                await asyncio.sleep(self._backoff_s(retries))
            elif _relocatable(failure) and moves < self.settings.placement_retries:
                moves, done, prefer = moves + 1, {}, None
                self._drop_analyser(slot, failure)
                log.warning("job %s: %s; downloading again elsewhere", slot.job_id, failure.message)
                await self._refresh_nodes()
            else:
                return Outcome.failed(failure)
        return Outcome.cancelled()

    async def _attempt(
        self, slot: Slot, request: JobRequest, done: dict[str, Any], prefer: str | None
    ) -> tuple[dict[str, Any], Failure | None]:
        if DOWNLOAD_STEP not in done:
            self._leave_node(slot, Phase.WAITING)
            await self._acquire_node(slot, prefer)
        if ANALYSE_STEP not in done:
            slot.analyser = self._pick_analyser(slot.node_id)
            if slot.analyser is None:
                return {}, Failure(
                    FailureKind.NODE_LOST,
                    ANALYSE_STEP,
                    "NoAnalyser",
                    f"node {slot.node_id} has no analysis actor any more",
                )
        slot.attempt = await self._begin_attempt(slot.job_id)
        ctx = JobContext(slot.job_id, request, self.settings, slot.attempt)
        slot.launched_at = time.monotonic() if DOWNLOAD_STEP not in done else None
        slot.refs = self.launcher.launch(ctx, slot.node_id or "", slot.analyser, done)
        return await self._follow(slot)

    async def _follow(self, slot: Slot) -> tuple[dict[str, Any], Failure | None]:
        """Await each step's ref in chain order; the first error names the failed step."""
        outputs: dict[str, Any] = {}
        for step, ref in slot.refs.items():
            try:
                outputs[step] = await ref
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the step's error or Ray's, wrapped by Ray
                await _settle(list(slot.refs.values())[len(outputs) + 1 :])
                return outputs, self.launcher.classify(e, step)
            self._step_done(slot, step)
        return outputs, None

    def _step_done(self, slot: Slot, step: str) -> None:
        t = time.monotonic()
        if step == DOWNLOAD_STEP and slot.phase is Phase.DOWNLOADING:
            if slot.node_id and slot.launched_at is not None:
                self.pace.downloaded(slot.node_id, slot.launched_at, t)
            slot.downloaded_at = t
            self.window.advance(slot.job_id, Phase.ANALYSING)
            self._dispatch()  # a download slot is free: the next waiting job may take it
        elif step == ANALYSE_STEP:
            if slot.node_id and slot.downloaded_at is not None:
                self.pace.analysed(slot.node_id, slot.analyser, slot.downloaded_at, t)
            self._leave_node(slot, Phase.FINISHING)

    def _kept_before(self, slot: Slot, step: str) -> dict[str, Any]:
        """Refs of the steps before ``step``: a retry runs only ``step`` and what follows."""
        names = [s.name for s in CHAIN]
        cut = names.index(step) if step in names else 0
        return {name: slot.refs[name] for name in names[:cut]}

    def _backoff_s(self, retry: int) -> float:
        return min(self.settings.retry_backoff_seconds * 2 ** (retry - 1), MAX_BACKOFF_S)

    async def _begin_attempt(self, job_id: str) -> int:
        key, t = self.names.job(job_id), now()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=hash_fields(status=JobStatus.RUNNING, updated_at=t))
        pipe.hsetnx(key, "started_at", str(t))
        pipe.hincrby(key, "attempts", 1)
        *_, attempt = await pipe.execute()
        return int(attempt)

    # -- finishing --------------------------------------------------------------------------

    async def _store(
        self, job_id: str, stream_id: str, outcome: Outcome, state: JobState | None
    ) -> None:
        """Job hash + terminal event + XACK in one atomic script (see JobStream.finish)."""
        state = state or await self._state(job_id)
        seconds = _step_seconds(state)
        t = now()
        fields = hash_fields(
            status=outcome.status,
            finished_at=t,
            updated_at=t,
            result=outcome.result,
            error=outcome.error,
        )
        data: dict[str, Any] = {
            "status": str(outcome.status),
            "step_seconds": seconds,
            "attempts": state.attempts if state else 0,
        }
        data.update(outcome.result or {})
        if outcome.error:
            data["error"] = outcome.error
        event = build_event(outcome.event_type, job_id, self.source, str(outcome.status), data)
        if await self.stream.finish(job_id, stream_id, fields, event):
            self.metrics.finished.labels(outcome=str(outcome.status)).inc()
            self.metrics.observe_steps(seconds)
            if state is not None:
                stored = state.model_copy(update={"finished_at": t, "updated_at": t})
                await self.announcer.finished(stored, outcome, event)

    def _forget(self, slot: Slot) -> None:
        self.window.remove(slot.job_id)
        self._jobs.pop(slot.job_id, None)
        self.metrics.observe_window(self.window)
        self._room.set()
        self._dispatch()

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

    async def _control_loop(self) -> None:
        after = self._control_after
        while not self._stopping:
            try:
                entries = await self.stream.read_control(after)
            except RedisError as e:
                log.warning("reading %s failed: %s", self.names.control, e)
                await asyncio.sleep(ERROR_PAUSE_S)
                continue
            for entry in entries:
                after = entry.stream_id
                if entry.fields.get(CANCEL_FIELD):
                    self._cancel(entry.fields[CANCEL_FIELD])

    # -- placement --------------------------------------------------------------------------

    async def _acquire_node(self, slot: Slot, prefer: str | None) -> str:
        """Wait (in read order) until placement gives this job a node; assign it there."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append((slot, prefer, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        """Give waiting jobs nodes, first come first served, while nodes have room."""
        while self._waiting:
            slot, prefer, future = self._waiting[0]
            if future.done():
                self._waiting.popleft()
                continue
            node = choose_node(
                self._snapshot(), lookahead=self.settings.download_lookahead, prefer=prefer
            )
            if node is None:
                return
            self._waiting.popleft()
            self.window.assign(slot.job_id, node)
            self.metrics.placed_on(node)
            future.set_result(node)

    def _leave_node(self, slot: Slot, phase: Phase) -> None:
        if slot.job_id in self.window and slot.node_id is not None:
            self.window.advance(slot.job_id, phase)
            self._dispatch()

    def _snapshot(self) -> ClusterSnapshot:
        nodes = tuple(
            replace(
                n,
                analysers=(analysers := len(self._analysers.get(n.node_id, ()))),
                lookahead=self.pace.lookahead(n.node_id, analysers),
                **self._verdict(n.node_id),
            )
            for n in self._nodes
        )
        return ClusterSnapshot(nodes).with_assigned(
            self.window.assigned_per_node(), self.window.downloading_per_node()
        )

    def _verdict(self, node_id: str) -> dict[str, Any]:
        health = self.health.get(node_id) if self.health is not None else None
        healthy, reason = health.verdict if health is not None else (True, "")
        return {"healthy": healthy, "health_reason": reason}

    def _drop_analyser(self, slot: Slot, failure: Failure) -> None:
        """Forget an analysis actor that died for good; the next refresh starts a new one."""
        if failure.step != ANALYSE_STEP or failure.error_class not in ANALYSER_GONE:
            return
        for handles in self._analysers.values():
            if slot.analyser in handles:
                handles.remove(slot.analyser)
                self.launcher.stop_analyser(slot.analyser)

    def _pick_analyser(self, node_id: str | None) -> Any:
        handles = self._analysers.get(node_id or "", [])
        return min(handles, key=self.window.queued_on, default=None)

    # -- nodes and analysis actors ----------------------------------------------------------

    async def _refresh_nodes(self) -> None:
        self._nodes = await asyncio.to_thread(self.launcher.nodes)
        snapshot = ClusterSnapshot(tuple(self._nodes))
        if self._on_gpus is None and snapshot.alive_ids:
            mode = self.settings.analysis_on
            self._on_gpus = mode == "gpu" or (mode == "auto" and snapshot.has_gpus)
        for node in self._nodes:
            self._fit_analysers(node)
        self._dispatch()

    def _fit_analysers(self, node: NodeView) -> None:
        if not node.alive:
            self._analysers.pop(node.node_id, None)  # its actors died with it
            self.pace.forget(node.node_id)
            return
        wanted = analysers_wanted(
            node, on_gpus=bool(self._on_gpus), cpu_per_node=self.settings.cpu_analysers_per_node
        )
        warming = self._warming.setdefault(node.node_id, set())
        have = len(self._analysers.get(node.node_id, ())) + len(warming)
        for _ in range(wanted - have):
            handle, ready = self.launcher.start_analyser(node.node_id, on_gpu=bool(self._on_gpus))
            task = asyncio.create_task(self._warm(node.node_id, handle, ready))
            warming.add(task)
            task.add_done_callback(warming.discard)

    async def _refresh_health(self) -> None:
        """Measure every alive node (health.py); a node that recovered may take waiting jobs."""
        if self.health is None:
            return
        await self.health.refresh(n.node_id for n in self._nodes if n.alive)
        self.metrics.observe_health(self.health.all().values())
        self._dispatch()

    def _cluster_rows(self) -> list[dict[str, Any]]:
        """Per alive node, for the heartbeat: placement's view and the node's health."""
        rows = []
        for node in self._snapshot().nodes:
            if not node.alive:
                continue
            health = self.health.get(node.node_id) if self.health is not None else None
            row: dict[str, Any] = {
                "node_id": node.node_id,
                "gpus": node.gpus,
                "download_slots": node.download_slots,
                "analysers": node.analysers,
                "assigned": node.assigned,
                "capacity": node.capacity(self.settings.download_lookahead),
                **self.pace.as_dict(node.node_id),
            }
            row.update(health.as_dict() if health is not None else {"healthy": True})
            rows.append(row)
        return rows

    async def _warm(self, node_id: str, handle: Any, ready: Awaitable[Any]) -> None:
        try:
            await ready
        except Exception as e:  # unschedulable, crashed in warm-up: the next refresh retries
            log.warning("analysis actor on node %s did not start: %s", node_id, e)
            return
        self._analysers.setdefault(node_id, []).append(handle)
        self._dispatch()

    # -- background -------------------------------------------------------------------------

    async def _every(self, seconds: float, action: Callable[[], Awaitable[None]]) -> None:
        while not self._stopping:
            await asyncio.sleep(seconds)
            try:
                await action()
            except Exception as e:  # a background chore must not stop the bridge
                log.warning("%s failed: %s", getattr(action, "__name__", action), e)

    async def _keep_alive(self) -> None:
        await self.stream.keep_alive(self.window.stream_ids())

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
            "draining": self._draining,
            "nodes": len([n for n in self._nodes if n.alive]),
            "analysers": {node: len(h) for node, h in self._analysers.items() if h},
            "cluster": self._cluster_rows(),
        }


# -- helpers ---------------------------------------------------------------------------------


def _default_job_id(stream_id: str) -> str:
    """A job id for a request without one: its entry id, the same on every redelivery."""
    return stream_id


def _guess_job_id(entry: Entry) -> str | None:
    """The job id of a rejected request, when it has a usable one (the event's subject)."""
    try:
        doc = json.loads(entry.fields.get(JOB_FIELD, ""))
    except (ValueError, RecursionError):
        return None
    job_id = doc.get("job_id") if isinstance(doc, dict) else None
    return job_id if isinstance(job_id, str) and re.fullmatch(JOB_ID_PATTERN, job_id) else None


def _download_node(state: JobState | None) -> str | None:
    """The node that holds this job's finished download (a resumed job goes back there)."""
    timing = state.steps.get(DOWNLOAD_STEP) if state else None
    return timing.node if timing and timing.ended is not None and timing.node else None


def _step_seconds(state: JobState | None) -> dict[str, float]:
    if state is None:
        return {}
    return {step: round(t.seconds, 6) for step, t in state.steps.items() if t.seconds is not None}


async def _settle(refs: list[Any]) -> None:
    """Collect the errors of the steps after a failed one (they fail at once, with the same
    error), so that Ray does not log each of them as an unhandled error."""
    if refs:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*refs, return_exceptions=True), SETTLE_S)


def _relocatable(failure: Failure) -> bool:
    return failure.kind in (FailureKind.NODE_LOST, FailureKind.CANCELLED)


def _as_json(output: Any) -> dict[str, Any]:
    if isinstance(output, BaseModel):
        return output.model_dump(mode="json")
    return dict(output) if isinstance(output, dict) else {"value": output}
