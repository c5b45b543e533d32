"""The chain launcher: the only module that calls ``.remote()``.

For one job it submits the whole chain at once, each step taking the earlier steps' ObjectRefs,
so Ray (and its dashboard) sees the chain and nothing waits in the driver:

    download   task, pinned to the chosen node  NodeAffinitySchedulingStrategy(node, soft=False)
    analyse    call on that node's analysis actor (its video is on that disk)
    brief      task, anywhere with a little CPU
    report     task, on a node holding ``vidbrief_report``

Task names are the step's name, never per job: the submitting worker (the bridge) keeps Ray's
per-name task counters and metric series for as long as it lives, so ``<job_id>:<step>`` names
grew its memory by tens of KiB a job (job ids are in the job hash and the step events). A
retry passes the refs of the steps that succeeded, so only the failed step and the ones after
it run again. It also starts the analysis actors and
the bridge actor itself, and tells Ray's failures apart (``classify``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import ray
import ray.exceptions as rex
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ingest.errors import StepError
from ingest.names import ANALYSE_STEP
from ingest.settings import Settings
from pipeline.chain import CHAIN, DOWNLOAD_SLOT, STEPS, StepSpec
from pipeline.context import JobContext
from raybridge.analysis_actor import Analyser
from raybridge.outcome import Failure, FailureKind
from raybridge.placement import NodeView
from raybridge.steps import Progress, run_recorded

log = logging.getLogger(__name__)

#: Retries of an analysis call when its actor's process died and came back.
ANALYSER_TASK_RETRIES = 1
#: Concurrent calls the async bridge actor serves (the loop, drain, stats, ...).
BRIDGE_MAX_CONCURRENCY = 100
#: Ray's own retries of a step task whose worker died (our retries handle step errors).
TASK_SYSTEM_RETRIES = 3
#: Ray failures that mean "the node, its worker, actor or objects are gone": place again.
NODE_LOST_ERRORS: tuple[type[BaseException], ...] = (
    rex.RayActorError,
    rex.ActorUnschedulableError,
    rex.NodeDiedError,
    rex.TaskUnschedulableError,
    rex.WorkerCrashedError,
    rex.ObjectLostError,
    rex.LocalRayletDiedError,
    rex.OutOfMemoryError,
    rex.RaySystemError,
)
MESSAGE_CHARS = 2000
#: Ray's built-in resource of the head node, and the sliver of it the bridge asks for.
HEAD_NODE_RESOURCE, HEAD_NODE_SHARE = "node:__internal_head__", 0.001


class Launcher:
    """Submits chains and analysis actors to Ray for one bridge."""

    def __init__(self, settings: Settings, progress: Progress) -> None:
        self.settings = settings
        self.progress = progress
        self._task = ray.remote(run_recorded)
        self._analyser_cls = ray.remote(Analyser)
        self._remotes: dict[tuple[str, str | None], Any] = {}

    # -- the cluster ------------------------------------------------------------------------

    @staticmethod
    def nodes() -> list[NodeView]:
        """Every node Ray knows, alive or not (sync: call it in a thread)."""
        return [
            NodeView(
                node_id=n["NodeID"],
                alive=bool(n["Alive"]),
                gpus=float(n["Resources"].get("GPU", 0)),
                download_slots=float(n["Resources"].get(DOWNLOAD_SLOT, 0)),
            )
            for n in ray.nodes()
        ]

    def start_analyser(self, node_id: str, *, on_gpu: bool) -> tuple[Any, ray.ObjectRef]:
        """A new analysis actor pinned to ``node_id``, and the ref of its warm-up call."""
        spec = STEPS[ANALYSE_STEP]
        handle = self._analyser_cls.options(
            num_cpus=spec.num_cpus,
            num_gpus=1 if on_gpu else 0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            max_restarts=-1,
            max_task_retries=ANALYSER_TASK_RETRIES,
        ).remote(self.settings)
        return handle, handle.ready.remote()

    @staticmethod
    def stop_analyser(handle: Any) -> None:
        with contextlib.suppress(ValueError, rex.RayError):  # gone already
            ray.kill(handle, no_restart=True)

    # -- chains -----------------------------------------------------------------------------

    def launch(
        self, ctx: JobContext, node_id: str, analyser: Any, done: Mapping[str, ray.ObjectRef]
    ) -> dict[str, ray.ObjectRef]:
        """Submit the steps not in ``done``; return the refs of every step, in chain order."""
        refs = dict(done)
        for index, spec in enumerate(CHAIN):
            if spec.name not in refs:
                earlier = [refs[s.name] for s in CHAIN[:index]]
                refs[spec.name] = self._submit(spec, ctx, node_id, analyser, earlier)
        return {s.name: refs[s.name] for s in CHAIN}

    def _submit(
        self, spec: StepSpec, ctx: JobContext, node_id: str, analyser: Any, earlier: list[Any]
    ) -> ray.ObjectRef:
        if spec.name == ANALYSE_STEP:
            return analyser.analyse.options(name=spec.name).remote(self.progress, ctx, *earlier)
        pinned = spec is CHAIN[0] or spec.pinned_to_download
        return self._remote(spec, node_id if pinned else None).remote(
            self.progress, spec.name, ctx, *earlier
        )

    def _remote(self, spec: StepSpec, node_id: str | None) -> Any:
        """The step's task with its options, built once per (step, node): ``.options()`` costs
        the bridge's loop more than the submission it prepares."""
        key = (spec.name, node_id)
        remote = self._remotes.get(key)
        if remote is None:
            options: dict[str, Any] = {
                "name": spec.name,  # bounded: a per-job name leaks in Ray's per-name state
                "num_cpus": spec.num_cpus,
                "num_gpus": spec.num_gpus,
                "resources": dict(spec.resources),
                "max_retries": TASK_SYSTEM_RETRIES,
                "retry_exceptions": False,
            }
            if node_id is not None:
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
            remote = self._remotes[key] = self._task.options(**options)
        return remote

    @staticmethod
    def cancel(refs: Iterable[ray.ObjectRef]) -> None:
        """Cancel the chain's tasks (force=False; queued actor calls are dropped)."""
        for ref in refs:
            try:
                ray.cancel(ref, force=False)
            except (ValueError, TypeError, rex.RayError) as e:  # finished or not cancellable
                log.debug("cancel %s: %s", ref, e)

    # -- failures ---------------------------------------------------------------------------

    @staticmethod
    def classify(error: BaseException, step: str) -> Failure:
        """What a step's failure means for the job (see outcome.py)."""
        if isinstance(error, rex.RayTaskError):
            cause = error.cause if error.cause is not None else error
            if cause is not error:
                return Launcher.classify(cause, step)
        if isinstance(error, StepError):
            kind = FailureKind.RETRYABLE if error.retryable else FailureKind.PERMANENT
            return _failure(kind, error.step or step, error)
        if isinstance(error, rex.TaskCancelledError):
            return _failure(FailureKind.CANCELLED, step, error)
        if isinstance(error, NODE_LOST_ERRORS):
            return _failure(FailureKind.NODE_LOST, step, error)
        return _failure(FailureKind.PERMANENT, step, error)


def _failure(kind: FailureKind, step: str, error: BaseException) -> Failure:
    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    return Failure(kind, step, type(error).__name__, message[:MESSAGE_CHARS])


# -- the bridge actor itself ----------------------------------------------------------------


def spawn_bridge(settings: Settings, redis_url: str) -> Any:
    """Start the bridge actor on the head node: the node a cluster keeps longest, and a
    predictable place for the metrics port."""
    from raybridge.actor import Bridge

    return (
        ray.remote(Bridge)
        .options(
            num_cpus=0,
            resources={HEAD_NODE_RESOURCE: HEAD_NODE_SHARE},
            max_concurrency=BRIDGE_MAX_CONCURRENCY,
            max_restarts=0,  # a lost bridge ends run_bridge; its supervisor starts a new one
        )
        .remote(settings, redis_url)
    )


def call(method: Any, *args: Any) -> ray.ObjectRef:
    """Call an actor method (the bridge's run, drain, stats)."""
    return method.remote(*args)
