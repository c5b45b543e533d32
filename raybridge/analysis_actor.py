"""One long-lived analysis actor per GPU (or per node's CPU share when the cluster has none).

Why an actor and not a GPU task: Ray gives a GPU task a fresh worker process each time
(``max_calls=1``), so every job would pay process start-up and load the speech and vision models
again. The actor keeps its process, and so whatever the analysis step caches at module level.
Its queue is also exactly the node's GPU backlog, which placement counts.

The launcher places it with a hard NodeAffinity on its node, holding one GPU, with
``max_restarts=-1`` (a crashed process comes back on the same node, models reloaded) and task
retries; if the node is gone, it cannot restart and its calls fail with ``ActorDiedError`` /
``ActorUnschedulableError``, which the bridge answers by downloading the job elsewhere.

This is a plain class, made remote in ``launcher.py``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import replace
from typing import Any

from ingest.names import ANALYSE_STEP
from ingest.settings import Settings
from pipeline.chain import STEPS
from pipeline.context import JobContext
from pipeline.hooks import StepHooks
from raybridge.steps import Progress, current_node_id, run_recorded

log = logging.getLogger(__name__)

#: Optional hook a real analysis module may define to load its models before work arrives.
WARM_HOOK = "warm"


class Analyser:
    """Runs the analysis step for jobs whose video this node downloaded."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jobs_done = 0

    def ready(self) -> str:
        """Warm up (load models in real mode); return this actor's node id."""
        if self.settings.step_mode == "real":
            self._warm()
        return current_node_id()

    def _warm(self) -> None:
        module_name = STEPS[ANALYSE_STEP].target.partition(":")[0]
        try:
            hook = getattr(importlib.import_module(module_name), WARM_HOOK, None)
        except ImportError as e:
            log.warning("analysis module %s not importable yet: %s", module_name, e)
            return
        if hook is not None:
            hook(self.settings)

    def analyse(self, progress: Progress, ctx: JobContext, *earlier: Any) -> Any:
        """The analysis step of one job (its download's output is in ``earlier``).

        A cancel (``ray.cancel`` of this call: the job was cancelled, or its bridge is stopping)
        cannot interrupt a running actor call; it sets a flag that the decoding and speech loops
        read through the context's hooks, so the call ends within moments and the GPU is free
        for the next job — in this same process, with the models still loaded.
        """
        ctx = replace(ctx, hooks=StepHooks(cancelled=_ray_cancelled))
        output = run_recorded(progress, ANALYSE_STEP, ctx, *earlier)
        self.jobs_done += 1
        return output


def _ray_cancelled() -> bool:
    """Whether Ray was asked to cancel the actor call running in this thread."""
    import ray

    try:
        return bool(ray.get_runtime_context().is_canceled())
    except RuntimeError:  # not inside a Ray worker (a test calling the class directly)
        return False
