"""The four steps in-process on one URL: no Redis, no Ray (``vidbrief run-local``).

The same steps the bridge's tasks run (:func:`pipeline.chain.execute`), in order, in this
process, reusing kept outputs the same way: a video already analysed with these settings is
only briefed and reported (:func:`pipeline.reuse.find_analysed`, the URL checked first), and
``result.json`` says which steps were reused. The job's work folder is deleted at the end
(``VIDBRIEF_WORK_RETENTION_SECONDS=0``; with more, it stays), and the artefact store evicted.
Progress goes to a callback; without one, a rich progress bar on stderr shows it.

Each step runs within its time limit (``VIDBRIEF_STEP_TIMEOUT_SECONDS``, as in the bridge): in a
thread of its own, and a step past its limit raises StepTimeout at once. A thread cannot be
stopped from outside, so the step's thread is left behind, a daemon: ``vidbrief run-local``
exits with the error, which ends it (a download's child process follows its parent out).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ingest.errors import StepTimeout
from ingest.models import parse_request
from ingest.names import REPORT_STEP, STEP_NAMES
from ingest.settings import Settings
from pipeline.chain import execute
from pipeline.context import JobContext
from pipeline.hooks import StepHooks
from pipeline.kept import KeptStore
from pipeline.models import ReportFiles
from pipeline.reuse import Found, find_analysed
from pipeline.workdirs import remove_job_folders

log = logging.getLogger(__name__)


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
    try:
        if on_progress is not None:
            return _run_steps(ctx, on_progress)
        with rich_progress() as show:
            return _run_steps(ctx, show)
    finally:
        _tidy(ctx)


def _run_steps(ctx: JobContext, on_progress: ProgressCallback) -> ReportFiles:
    outputs: list[Any] = []
    timings: dict[str, float] = {}
    reused: list[str] = []
    kept = find_analysed(ctx) or {}
    total = len(STEP_NAMES)
    for index, step in enumerate(STEP_NAMES, start=1):
        on_progress(StepEvent(step, index, total, "started"))
        started = time.perf_counter()
        try:
            limit_s = ctx.settings.step_timeout(step)
            stop = threading.Event()
            step_ctx = _reporting(ctx, step, index, total, on_progress, stop)
            try:
                found = call_within(
                    limit_s, step, _step, step, step_ctx, kept, outputs, timings, reused
                )
            except StepTimeout:
                stop.set()  # the step's loops see it and end its thread (pipeline/hooks.py)
                raise
        except Exception as e:
            seconds = time.perf_counter() - started
            on_progress(StepEvent(step, index, total, "failed", seconds, f"{e}"))
            raise
        reused += [step] if found.reused else []
        timings[step] = round(time.perf_counter() - started, 3)
        on_progress(StepEvent(step, index, total, "completed", timings[step]))
        outputs.append(found.output)
    return outputs[-1]


def call_within(limit_s: float, step: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a daemon thread; StepTimeout if it has not returned after ``limit_s``."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as e:  # handed to the caller's thread
            outcome["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name=f"vidbrief-{step}", daemon=True).start()
    if not done.wait(limit_s):
        raise StepTimeout(step, limit_s)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _step(
    step: str,
    ctx: JobContext,
    kept: dict[str, Any],
    outputs: list[Any],
    timings: dict[str, float],
    reused: list[str],
) -> Found:
    if step in kept:
        return Found(kept[step], reused=True)
    if step != REPORT_STEP:
        return execute(step, ctx, *outputs)
    # The report also takes the timings so far and the steps reused (result.json records them).
    return execute(step, replace(ctx, reused_steps=tuple(reused)), *outputs, timings)


def _tidy(ctx: JobContext) -> None:
    """Delete the job's work folder (unless kept for debugging) and evict the store."""
    settings = ctx.settings
    if settings.work_retention_seconds == 0:
        remove_job_folders(str(settings.work_dir), [ctx.job_id])
    try:
        KeptStore.of(settings).evict_as_configured(settings)
    except Exception as e:  # a cache: never fail a finished run over it
        log.warning("artefact store not evicted: %s", e)


def _reporting(
    ctx: JobContext,
    step: str,
    index: int,
    total: int,
    on_progress: ProgressCallback,
    stop: threading.Event,
) -> JobContext:
    """The context for ``step``: its progress inside the step sent to ``on_progress``, and
    ``stop`` as its cancel (set when the step passes its time limit)."""

    def report(stage: str, done: float, of: float | None) -> None:
        on_progress(StepEvent(step, index, total, "progress", stage=stage, done=done, of=of))

    return replace(ctx, hooks=StepHooks(on_progress=report, cancelled=stop.is_set))


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
