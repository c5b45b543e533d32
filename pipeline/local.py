"""The four steps in-process on one URL: no Redis, no Ray (``vidbrief run-local``).

The same :func:`pipeline.chain.run_step` the bridge's tasks call, in order, in this process.
Progress goes to a callback; without one, a rich progress bar on stderr shows it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ingest.models import parse_request
from ingest.names import REPORT_STEP, STEP_NAMES
from ingest.settings import Settings
from pipeline.chain import run_step
from pipeline.context import JobContext
from pipeline.hooks import StepHooks
from pipeline.models import ReportFiles


@dataclass(frozen=True)
class StepEvent:
    """One step of a local run started, progressed, completed or failed."""

    step: str
    index: int  # 1-based position in the chain
    total: int
    status: Literal["started", "progress", "completed", "failed"]
    seconds: float | None = None
    error: str | None = None
    #: With "progress": what the step is doing, and how far ("decoding", 42.0 of 300.0 media
    #: seconds; ``of`` None when the length is unknown).
    stage: str | None = None
    done: float | None = None
    of: float | None = None


ProgressCallback = Callable[[StepEvent], None]


def run_local(
    url: str,
    out_dir: str | Path | None,
    settings: Settings,
    on_progress: ProgressCallback | None = None,
    *,
    job_id: str | None = None,
    instructions: str | None = None,
    language: str | None = None,
) -> ReportFiles:
    """Download, analyse, brief and report one URL here; files go to ``out_dir/<job_id>/``.

    Always the real steps (``VIDBRIEF_STEP_MODE=synthetic`` is for the bridge's benchmarks).
    ``out_dir`` None keeps ``settings.reports_url``. Raises InvalidRequest for a bad URL or
    option, and the failing step's StepError.
    """
    fields = {"url": url, "job_id": job_id, "instructions": instructions, "language": language}
    request = parse_request({k: v for k, v in fields.items() if v is not None}).with_job_id()
    update: dict[str, Any] = {"step_mode": "real"}
    if out_dir is not None:
        update["reports_url"] = str(Path(out_dir).expanduser().resolve())
    ctx = JobContext(
        job_id=str(request.job_id), request=request, settings=settings.model_copy(update=update)
    )
    if on_progress is not None:
        return _run_steps(ctx, on_progress)
    with rich_progress() as show:
        return _run_steps(ctx, show)


def _run_steps(ctx: JobContext, on_progress: ProgressCallback) -> ReportFiles:
    outputs: list[Any] = []
    timings: dict[str, float] = {}
    total = len(STEP_NAMES)
    for index, step in enumerate(STEP_NAMES, start=1):
        on_progress(StepEvent(step, index, total, "started"))
        started = time.perf_counter()
        # The report step also takes the timings so far (result.json records them).
        extra = (timings,) if step == REPORT_STEP else ()
        try:
            output = run_step(
                step, _reporting(ctx, step, index, total, on_progress), *outputs, *extra
            )
        except Exception as e:
            seconds = time.perf_counter() - started
            on_progress(StepEvent(step, index, total, "failed", seconds, f"{e}"))
            raise
        timings[step] = round(time.perf_counter() - started, 3)
        on_progress(StepEvent(step, index, total, "completed", timings[step]))
        outputs.append(output)
    return outputs[-1]


def _reporting(
    ctx: JobContext, step: str, index: int, total: int, on_progress: ProgressCallback
) -> JobContext:
    """The context for ``step``, its progress inside the step sent to ``on_progress``."""

    def report(stage: str, done: float, of: float | None) -> None:
        on_progress(StepEvent(step, index, total, "progress", stage=stage, done=done, of=of))

    return replace(ctx, hooks=StepHooks(on_progress=report))


@contextlib.contextmanager
def rich_progress(console: Any = None) -> Iterator[ProgressCallback]:
    """A rich progress bar over the four steps and, inside a step, over its media seconds with
    an ETA (on stderr, or ``console``); and the callback that drives them."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.fields[amount]}"),
        _eta_column(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console or Console(stderr=True)) as progress:
        steps = progress.add_task("starting", total=len(STEP_NAMES), amount="", eta=False)
        inside = progress.add_task("", total=None, amount="", eta=True, visible=False)

        def on_progress(event: StepEvent) -> None:
            amount = f"{event.index - 1}/{event.total} steps"
            if event.status == "started":
                progress.update(steps, description=f"{event.step}…", amount=amount)
                progress.reset(inside, total=None, visible=False)
            elif event.status == "progress":
                _show_inside(progress, inside, event)
            elif event.status == "completed":
                done = f"{event.step} done ({event.seconds:.1f} s)"
                amount = f"{event.index}/{event.total} steps"
                progress.update(steps, advance=1, description=done, amount=amount)
                progress.update(inside, visible=False)
            else:
                progress.update(steps, description=f"[red]{event.step} failed")
                progress.update(inside, visible=False)

        yield on_progress


def _show_inside(progress: Any, task: Any, event: StepEvent) -> None:
    """The bar inside a step: media seconds done of the whole, with its ETA."""
    of = f" of {event.of:.0f}" if event.of else ""
    progress.update(
        task,
        description=f"  {event.stage}",
        completed=event.done,
        total=event.of,
        amount=f"{event.done or 0:.0f}{of} s of media",
        visible=True,
    )


def _eta_column() -> Any:
    """Rich's time-remaining column, shown only for the bar inside a step (a count of steps
    has no meaningful rate)."""
    from rich.progress import TimeRemainingColumn
    from rich.text import Text

    class Eta(TimeRemainingColumn):
        def render(self, task: Any) -> Text:
            if not task.fields.get("eta") or not task.total:
                return Text("")
            return Text.assemble("ETA ", super().render(task))

    return Eta()
