"""A Launcher without Ray: every step is an asyncio sleep, every analyser a plain object.

It implements ``raybridge.protocols.Launcher``, so the bridge's parts (admission, fleet, the
job coroutine, the loop) run against the real test Redis in milliseconds. Failures are asked
for per job: a retryable ``brief`` for its first N attempts, or a lost node on the first one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ingest.errors import StepError
from pipeline.chain import chain_through
from pipeline.context import JobContext
from raybridge.outcome import Failure, FailureKind
from raybridge.placement import NodeView
from raybridge.window import Window

STEP_S = 0.02
NODE = "node-a"


class NodeGone(Exception):
    """What the fake raises for a step on a lost node (Ray raises NodeDiedError & co)."""


class FakeLauncher:
    """Nodes as given (default: one with one GPU and one download slot); steps sleep.

    Records the most jobs one node held at once, and every launch as (job, node, steps run).
    """

    def __init__(
        self,
        window: Callable[[], Window] | None = None,
        *,
        nodes: list[NodeView] | None = None,
        fail: Mapping[str, int] | None = None,
        lose_node_once: Iterable[str] = (),
        step_s: float = STEP_S,
        durations: Mapping[str, float] | None = None,
    ) -> None:
        self.window = window
        self.node_views = nodes or [NodeView(NODE, gpus=1, download_slots=1)]
        self.fail = dict(fail or {})  # job id -> attempts that fail (retryable) in "brief"
        self.lose_node_once = set(lose_node_once)
        self.step_s = step_s
        self.durations = dict(durations or {})  # job id -> what the probe reports
        self.most_on_node = 0
        self.launches: list[tuple[str, str, list[str]]] = []
        self._download_only: dict[tuple[str, int], int] = {}  # (job, attempt) -> its record
        self.started: list[str] = []
        self.stopped: list[Any] = []
        self.aborted: list[str] = []
        self.node_calls: list[tuple[str, str, tuple[Any, ...]]] = []

    def nodes(self) -> list[NodeView]:
        return list(self.node_views)

    def start_analyser(
        self, node_id: str, *, on_gpu: bool, index: int = 0
    ) -> tuple[object, asyncio.Future[str]]:
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        ready.set_result(node_id)
        self.started.append(node_id)
        return object(), ready

    def stop_analyser(self, handle: object) -> None:
        self.stopped.append(handle)

    def launch(
        self,
        ctx: JobContext,
        node_id: str,
        analyser: object,
        done: Mapping[str, Any],
        through: str | None = None,
    ) -> dict[str, Any]:
        if self.window is not None:
            held = max(self.window().assigned_per_node().values(), default=0)
            self.most_on_node = max(self.most_on_node, held)
        steps = chain_through(through)
        refs, previous, run = dict(done), None, []
        for spec in steps:
            if spec.name not in refs:
                refs[spec.name] = asyncio.ensure_future(self._step(ctx, spec.name, previous))
                run.append(spec.name)
            previous = refs[spec.name]
        self._record_launch(ctx, node_id, run)
        return {s.name: refs[s.name] for s in steps}

    def _record_launch(self, ctx: JobContext, node_id: str, run: list[str]) -> None:
        """One record per attempt: the bridge submits an attempt's chain in two parts (the
        download, then the rest once an analyser is free), recorded here as one."""
        key = (ctx.job_id, ctx.attempt)
        index = self._download_only.pop(key, None)
        if index is None:
            index = len(self.launches)
            self.launches.append((ctx.job_id, node_id, []))
        self.launches[index][2].extend(run)
        if run == ["download"]:
            self._download_only[key] = index

    async def _step(self, ctx: JobContext, step: str, previous: Any) -> dict[str, str]:
        if previous is not None:
            await previous
        await asyncio.sleep(self.step_s)
        if step == "download" and ctx.job_id in self.lose_node_once:
            self.lose_node_once.discard(ctx.job_id)
            raise NodeGone(f"the node of {ctx.job_id} died")
        if step == "brief" and ctx.attempt <= self.fail.get(ctx.job_id, 0):
            raise StepError(f"flaky brief, attempt {ctx.attempt}", step=step, retryable=True)
        return {"step": step, "job_id": ctx.job_id}

    async def probe(self, ctx: JobContext) -> float | None:
        return self.durations.get(ctx.job_id)

    @staticmethod
    def put(value: Any) -> asyncio.Future[Any]:
        ref: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        ref.set_result(value)
        return ref

    def on_node(self, node_id: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Every fake node shares this machine's disk: run ``fn`` here, in a thread."""
        self.node_calls.append((node_id, fn.__name__, args))
        return asyncio.ensure_future(asyncio.to_thread(fn, *args))

    @staticmethod
    def cancel(refs: Iterable[Any]) -> None:
        for ref in refs:
            ref.cancel()

    def abort(self, step: str, ref: Any, analyser: object) -> None:
        self.aborted.append(step)
        ref.cancel()

    @staticmethod
    def classify(error: BaseException, step: str) -> Failure:
        if isinstance(error, NodeGone):
            return Failure(FailureKind.NODE_LOST, step, type(error).__name__, str(error))
        retryable = isinstance(error, StepError) and error.retryable
        kind = FailureKind.RETRYABLE if retryable else FailureKind.PERMANENT
        return Failure(kind, step, type(error).__name__, str(error))
