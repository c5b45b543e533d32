"""What the bridge needs from the outside world, as Protocols (httpx's ``Client(transport=...)``).

The bridge is built with a :class:`Launcher` (and a health monitor) passed in: ``run.py``
builds the Ray ones at the edge, the tests pass fakes whose steps are asyncio sleeps. Nothing in
the bridge's loop imports Ray.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from pipeline.context import JobContext
from raybridge.outcome import Failure
from raybridge.placement import NodeView


class Launcher(Protocol):
    """Runs chains and analysis actors somewhere; the bridge only holds the handles it returns.

    A *ref* is anything awaitable that yields a step's output or raises its error (a Ray
    ObjectRef); an *analyser* is an opaque handle on one analysis actor.
    """

    def nodes(self) -> list[NodeView]:
        """Every node known, alive or not (blocking: the bridge calls it in a thread)."""
        ...

    def start_analyser(
        self, node_id: str, *, on_gpu: bool, index: int = 0
    ) -> tuple[Any, Awaitable[Any]]:
        """Analysis actor number ``index`` of ``node_id`` (shared by every bridge: the one
        that exists, else a new one), and what to await until it is warm."""
        ...

    def stop_analyser(self, handle: Any) -> None: ...

    def launch(
        self,
        ctx: JobContext,
        node_id: str,
        analyser: Any,
        done: Mapping[str, Any],
        through: str | None = None,
    ) -> dict[str, Any]:
        """Submit the steps not in ``done`` (up to and including ``through``, if given);
        return the refs of every step up to there, in chain order."""
        ...

    def put(self, value: Any) -> Any:
        """A ref whose value is ``value`` (a kept output handed to a chain as done)."""
        ...

    def on_node(self, node_id: str, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        """``fn(*args)`` on ``node_id`` if it is alive, else anywhere (clean-ups of its disk)."""
        ...

    def probe(self, ctx: JobContext) -> Awaitable[float | None]:
        """The video's duration (pipeline/probe.py) before placement; None when unknown."""
        ...

    def cancel(self, refs: Iterable[Any]) -> None:
        """Stop the chain's steps that have not finished (finished ones are left alone)."""
        ...

    def abort(self, step: str, ref: Any, analyser: Any) -> None:
        """Stop a running step past its time limit (``analyser``: the actor an analysis runs
        on); its ref then fails. Other jobs' steps carry on."""
        ...

    def classify(self, error: BaseException, step: str) -> Failure:
        """What a step's error means for the job (retry, fail, place elsewhere, cancelled)."""
        ...
