"""Disks that never fill: work folders deleted once their job is done, the artefact store evicted.

    outcome stored ─▶ finished(job): wait for the job's tasks to stop (bounded), then
                      VIDBRIEF_WORK_RETENTION_SECONDS, then on every node the job downloaded
                      on (only there does a job leave files: the report removes the keyframes
                      it fetched): delete <work_dir>/<job> (the jobs due on a node within
                      BATCH_S go in one task)
    bridge start,  ─▶ sweep(): on every alive node, the folders of jobs that are finished, or
    then every        unknown and idle ORPHAN_GRACE_S, older than the retention, deleted
    SWEEP_EVERY_S     (a bridge that died, a folder a late task wrote again); then the
                      artefact store evicted (pipeline.kept)

A folder is removed by a small task on its node (``launcher.on_node``, a soft node affinity:
a node that is gone has nothing left to clean, and the task then runs anywhere, harmlessly).
Nothing here blocks a job: clean-ups run in the background, and a failure is logged and left
to the next sweep. The bytes each node's work folder holds come with the health figures
(raybridge/health.py), shown by ``vidbrief status --cluster``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ingest.models import JobStatus
from ingest.settings import Settings
from pipeline.kept import KeptStore
from pipeline.storage import is_local
from pipeline.workdirs import job_folders, remove_job_folders, store_inside
from raybridge.protocols import Launcher
from raybridge.stream import JobStream
from raybridge.window import Window

log = logging.getLogger(__name__)

#: How long a finished job's clean-up waits for its cancelled or abandoned tasks to stop.
SETTLE_S = 60.0
#: Folders due on one node within this long are deleted by one task (a task per job would
#: cost the bridge more than the job's own steps at high rates).
BATCH_S = 0.5
#: Sweeps of orphaned folders and evictions of the artefact store, after the one at start.
SWEEP_EVERY_S = 600.0
#: A folder no job in Redis owns is left this long after its last change: a ``run-local`` on
#: the same host, or a job accepted a moment ago by another bridge, may be writing it.
ORPHAN_GRACE_S = 3600.0


class Cleaner:
    """Deletes finished jobs' work folders on their nodes and sweeps orphaned ones."""

    def __init__(
        self, settings: Settings, stream: JobStream, window: Window, launcher: Launcher
    ) -> None:
        self.settings = settings
        self.stream = stream
        self.window = window
        self.launcher = launcher
        self.work_dir = str(settings.work_dir)
        # Never swept: an artefact store that was put inside the work folder.
        location = settings.artefacts_location
        self.not_jobs = store_inside(self.work_dir, location) if is_local(location) else []
        self._touched: dict[str, set[str]] = defaultdict(set)
        self._tasks: set[asyncio.Task[None]] = set()
        self._due: dict[str, set[str]] = defaultdict(set)  # node → job ids to delete there
        self._flushing: asyncio.Task[None] | None = None
        self._closed = False

    # -- one job ----------------------------------------------------------------------------

    def touched(self, job_id: str, node_id: str | None) -> None:
        """The job's download (and so its work folder) went to ``node_id``."""
        if node_id:
            self._touched[job_id].add(node_id)

    def finished(self, job_id: str, refs: Iterable[Any]) -> None:
        """The job's outcome is stored: delete its folders once its tasks have stopped."""
        nodes = self._touched.pop(job_id, set())
        self._spawn(self._clean(job_id, nodes, list(refs)))

    def forget(self, job_id: str) -> None:
        """The job left the window without an outcome (the bridge stops): the next bridge
        resumes it from its folder."""
        self._touched.pop(job_id, None)

    async def _clean(self, job_id: str, nodes: set[str], refs: list[Any]) -> None:
        await settle(refs, SETTLE_S)
        if self.settings.work_retention_seconds:
            await asyncio.sleep(self.settings.work_retention_seconds)
            state = await self.stream.job_state(job_id)
            if state is not None and not state.status.finished:
                return  # submitted again meanwhile (a replay): its folder is in use
        for node in nodes:
            self._due[node].add(job_id)
        if self._flushing is None:
            self._flushing = self._spawn(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(BATCH_S)
        # From here on, jobs that become due go to the next flush.
        due, self._due, self._flushing = self._due, defaultdict(set), None
        await asyncio.gather(*(self._remove([n], sorted(ids)) for n, ids in due.items()))

    async def _remove(self, nodes: Iterable[str], job_ids: list[str]) -> None:
        nodes, work = list(nodes), self.work_dir
        calls = [self.launcher.on_node(n, remove_job_folders, work, job_ids) for n in nodes]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for node, result in zip(nodes, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("work folders %s on node %s not removed: %s", job_ids, node, result)

    # -- sweeps -----------------------------------------------------------------------------

    async def run(self, nodes: Any) -> None:
        """Sweep and evict now, then every SWEEP_EVERY_S; ``nodes()`` gives the alive nodes."""
        while True:
            for chore in (lambda: self.sweep(nodes()), self.evict):
                try:
                    await chore()
                except Exception as e:  # a chore must not stop the bridge
                    log.warning("clean-up: %s", e)
            await asyncio.sleep(SWEEP_EVERY_S)

    async def sweep(self, nodes: list[str]) -> list[str]:
        """Delete the folders no running job needs on every node; return their job ids."""
        calls = [self.launcher.on_node(n, job_folders, self.work_dir, self.not_jobs) for n in nodes]
        listings = await asyncio.gather(*calls, return_exceptions=True)
        found = {
            node: dict(got)
            for node, got in zip(nodes, listings, strict=True)
            if not isinstance(got, BaseException)
        }
        statuses = await self._statuses({name for got in found.values() for name in got})
        removed: set[str] = set()
        for node, folders in found.items():
            gone = [j for j, idle in folders.items() if self._orphan(j, idle, statuses.get(j))]
            if gone:
                await self._remove([node], gone)
                removed.update(gone)
        if removed:
            log.info("swept %d work folders of finished or unknown jobs", len(removed))
        return sorted(removed)

    def _orphan(self, job_id: str, idle_s: float, status: str | None) -> bool:
        if job_id in self.window:
            return False
        retention = self.settings.work_retention_seconds
        if status is None:
            return idle_s >= max(retention, ORPHAN_GRACE_S)
        return _finished(status) and idle_s >= retention

    async def _statuses(self, job_ids: set[str]) -> dict[str, str]:
        ids = sorted(job_ids)
        if not ids:
            return {}
        pipe = self.stream.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.stream.names.job(job_id), "status")
        return {j: s for j, s in zip(ids, await pipe.execute(), strict=True) if s is not None}

    async def evict(self) -> None:
        """The artefact store's eviction policy, in a thread (it lists the store)."""
        store = KeptStore.of(self.settings)
        await asyncio.to_thread(store.evict_as_configured, self.settings)

    # -- the tasks --------------------------------------------------------------------------

    def close(self) -> list[asyncio.Task[None]]:
        """Start nothing more (the bridge stops; the next one sweeps what is left) and return
        the tasks still running, for the bridge to cancel."""
        self._closed = True
        return self.tasks()

    def _spawn(self, coroutine: Any) -> asyncio.Task[None] | None:
        if self._closed:
            # A clean-up that outlived its cancel (3.11's wait_for can swallow one when the
            # awaited refs finish at that moment) must not start a flush after the drain.
            coroutine.close()
            return None
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks)

    async def idle(self) -> None:
        """Wait until every clean-up under way is done (tests, a drain)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _finished(status: str) -> bool:
    try:
        return JobStatus(status).finished
    except ValueError:
        return False


async def settle(refs: list[Any], timeout_s: float) -> None:
    """Wait (at most ``timeout_s``) until every ref is done, collecting their errors, so that
    Ray logs none as unhandled.

    A wait cancelled meanwhile (the bridge stops) leaves Python 3.11's gathering future holding
    a CancelledError nobody retrieves, which asyncio then prints as "_GatheringFuture exception
    was never retrieved" with a traceback at every drain: it is retrieved here.
    """
    if not refs:
        return
    gathered = asyncio.gather(*refs, return_exceptions=True)
    try:
        await asyncio.wait_for(gathered, timeout_s)
    except TimeoutError:
        pass
    finally:
        if gathered.done() and not gathered.cancelled():
            gathered.exception()
