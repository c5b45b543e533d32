"""The Ray side of the bridge: chains, analysis actors and health probes (``.remote()`` calls).

For one job it submits the chain in two parts, each step taking the earlier steps' ObjectRefs:
the download first, then, once the download is on disk and one of the node's analysis actors
is free (job.py, fleet.py: binding the analysis to an actor only then keeps a video from
waiting behind one actor's long job while the node's other GPU idles), the rest at once:

    download   task, pinned to the chosen node  NodeAffinitySchedulingStrategy(node, soft=False)
    analyse    call on that node's analysis actor (its video is on that disk)
    brief      task, anywhere with a little CPU
    report     task, on a node holding ``vidbrief_report``

Task names are the step's name, never per job: the submitting worker (the bridge) keeps Ray's
per-name task counters and metric series for as long as it lives, so a per-job name would grow
its memory with every job (job ids are in the job hash and the step events). A retry passes
the refs of the steps that succeeded, so only the failed step and the ones after it run again.

:class:`RayLauncher` is the bridge's :class:`~raybridge.protocols.Launcher`; ``run.py`` builds
it inside the bridge actor, with the health probe below, and starts the actor itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ray
import ray.exceptions as rex
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ingest.names import ANALYSE_STEP
from ingest.settings import Settings
from pipeline.chain import CHAIN, DOWNLOAD_SLOT, STEPS, StepSpec, chain_through
from pipeline.context import JobContext
from pipeline.probe import probe_duration
from raybridge.analysis_actor import Analyser
from raybridge.failures import classify
from raybridge.health import Probe, measure
from raybridge.placement import NodeView
from raybridge.steps import Progress, run_recorded

log = logging.getLogger(__name__)

#: Analysis actors are named ``<ANALYSER_NAME>:<prefix>:<node>:<index>`` in this namespace.
ANALYSER_NAME, ANALYSER_NAMESPACE = "vidbrief-analyser", "vidbrief"
#: Retries of an analysis call when its actor's process died and came back.
ANALYSER_TASK_RETRIES = 1
#: Ray's own retries of a step task whose worker died (our retries handle step errors).
TASK_SYSTEM_RETRIES = 3
#: Task name of the health probe (one name for all: see the module docstring).
PROBE_TASK_NAME = "vidbrief:health"
#: Task name of the small tasks on one node (work folder clean-ups).
NODE_TASK_NAME = "vidbrief:node"
#: Task name and CPU share of the duration probe (mostly waiting on the network).
DURATION_TASK_NAME, DURATION_TASK_CPUS = "vidbrief:probe", 0.1


class RayLauncher:
    """Submits chains and analysis actors to Ray for one bridge (a ``Launcher``)."""

    def __init__(self, settings: Settings, progress: Progress) -> None:
        self.settings = settings
        self.progress = progress
        self._task = ray.remote(run_recorded)
        self._on_node = ray.remote(_call)
        self._node_tasks: dict[str, Any] = {}
        self._analyser_cls = ray.remote(Analyser)
        self._remotes: dict[tuple[str, str | None], Any] = {}
        self._probe = ray.remote(probe_duration).options(
            name=DURATION_TASK_NAME, num_cpus=DURATION_TASK_CPUS, max_retries=1
        )

    def probe(self, ctx: JobContext) -> Any:
        """The duration probe as a Ray task; in synthetic mode computed here (no task)."""
        if ctx.settings.step_mode == "synthetic":
            return _done(probe_duration(ctx))
        return self._probe.remote(ctx)

    # -- the cluster ------------------------------------------------------------------------

    @staticmethod
    def nodes() -> list[NodeView]:
        """Every node Ray knows, alive or not (sync: call it in a thread)."""
        return [
            NodeView(
                node_id=n["NodeID"],
                alive=bool(n["Alive"]),
                host=str(n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or ""),
                gpus=float(n["Resources"].get("GPU", 0)),
                download_slots=float(n["Resources"].get(DOWNLOAD_SLOT, 0)),
            )
            for n in ray.nodes()
        ]

    def start_analyser(
        self, node_id: str, *, on_gpu: bool, index: int = 0
    ) -> tuple[Any, ray.ObjectRef]:
        """Analysis actor ``index`` pinned to ``node_id``, and the ref of its warm-up call.

        Named and detached: every bridge of the cluster (each its own Ray job) gets the same
        actor for the same GPU, so several bridges never start more actors than GPUs, and a
        dead bridge's analyses do not take the others' actors with them. The last bridge to
        stop stops them (``Bridge._stop``).
        """
        spec = STEPS[ANALYSE_STEP]
        handle = self._analyser_cls.options(
            name=f"{ANALYSER_NAME}:{self.settings.redis_prefix}:{node_id}:{index}",
            namespace=ANALYSER_NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
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
        self,
        ctx: JobContext,
        node_id: str,
        analyser: Any,
        done: Mapping[str, ray.ObjectRef],
        through: str | None = None,
    ) -> dict[str, ray.ObjectRef]:
        """Submit the steps not in ``done``, up to and including ``through`` (None: all);
        return the refs of every step up to there, in chain order."""
        steps = chain_through(through)
        refs = dict(done)
        for index, spec in enumerate(steps):
            if spec.name not in refs:
                earlier = [refs[s.name] for s in CHAIN[:index]]
                refs[spec.name] = self._submit(spec, ctx, node_id, analyser, earlier)
        return {s.name: refs[s.name] for s in steps}

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
    def put(value: Any) -> ray.ObjectRef:
        return ray.put(value)

    def on_node(self, node_id: str, fn: Callable[..., Any], *args: Any) -> ray.ObjectRef:
        """``fn(*args)`` on the node, soft: a node that is gone has no disk left to clean."""
        remote = self._node_tasks.get(node_id)
        if remote is None:
            remote = self._node_tasks[node_id] = self._on_node.options(
                name=NODE_TASK_NAME,
                num_cpus=0,  # never queued behind the node's downloads or analyses
                max_retries=0,  # the next sweep tries again
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=True),
            )
        return remote.remote(fn, *args)

    @staticmethod
    def cancel(refs: Iterable[ray.ObjectRef]) -> None:
        """Cancel the chain's tasks (force=False; queued actor calls are dropped)."""
        for ref in refs:
            try:
                ray.cancel(ref, force=False)
            except (ValueError, TypeError, rex.RayError) as e:  # finished or not cancellable
                log.debug("cancel %s: %s", ref, e)

    @staticmethod
    def abort(step: str, ref: ray.ObjectRef, analyser: Any) -> None:
        """Stop a step past its time limit. A task: force-cancelled (Ray kills its worker, and
        does not retry it). An analysis call cannot be interrupted: the call is cancelled (so
        it is not retried), then its actor killed and restarted on its node; the calls of
        other jobs queued on it run on the new process (``max_task_retries``)."""
        if step != ANALYSE_STEP:
            _quietly(ray.cancel, ref, force=True)
            return
        _quietly(ray.cancel, ref, force=False)
        _quietly(ray.kill, analyser, no_restart=False)

    classify = staticmethod(classify)


def _quietly(action: Any, *args: Any, **kwargs: Any) -> None:
    try:
        action(*args, **kwargs)
    except (ValueError, TypeError, rex.RayError) as e:  # finished meanwhile, or gone
        log.debug("%s: %s", getattr(action, "__name__", action), e)


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def _done(value: Any) -> Any:
    return value


def ray_probe(settings: Settings) -> Probe:
    """The health monitor's probe: ``health.measure`` pinned to a node; returns its ObjectRef."""
    task = ray.remote(measure)
    work_dir = str(settings.work_dir)

    def probe(node_id: str) -> Any:
        return task.options(
            name=PROBE_TASK_NAME,
            num_cpus=0,  # never queued behind the node's downloads or analyses
            max_retries=0,  # the next round asks again
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(work_dir)

    return probe


def ray_node_resources() -> dict[str, dict[str, float]]:
    """Every alive node's total resources (blocking: call it in a thread)."""
    return {n["NodeID"]: dict(n["Resources"]) for n in ray.nodes() if n["Alive"]}
