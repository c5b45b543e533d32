"""``vidbrief bench``: the scheduling and overhead benchmarks (BENCHMARKS.md shows the results).

    vidbrief bench schedule [--quick] [--json]   flow-shop efficiency: ours vs the seed design
    vidbrief bench bridge   [--quick] [--json]   jobs/s vs raw Ray and rq; XADD → start latency
    vidbrief bench bridges  [--quick] [--json]   1, 2, 3 bridges on one cluster; one killed
    vidbrief bench media    [--quick] [--json]   speech WER, language, CPU/min, RSS vs length
    vidbrief bench rebrief  [--minutes M] [--json] a video briefed again: job 2 ÷ job 1, reused
    vidbrief bench show FILE [--markdown]       a saved --json document as tables again

Importing this module loads only typer (no Ray, no matplotlib): the commands import their
parts when they run. Progress goes to stderr; stdout carries the table, or with ``--json``
exactly one JSON object.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

__all__ = ["bench_app"]

bench_app = typer.Typer(
    help="Benchmarks: scheduling efficiency and bridge overhead (BENCHMARKS.md).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: Quick runs: few jobs (the seed design pays about a second of process start per job here).
QUICK_JOBS = 6
#: Where the Gantt charts of a full run go (BENCHMARKS.md links them).
DOCS_DIR = Path("docs")
QUICK_HELP = "Small and fast (about a minute here): a smoke run, not the reported figures."
#: Width the tables are laid out for (the schedule table has 15 columns).
TABLE_WIDTH = 160
JSON_HELP = "Print one JSON object instead of tables."
MARKDOWN_HELP = "Print the tables as GitHub markdown (for BENCHMARKS.md)."


#: The real standard output while a benchmark runs (``_logging``): meanwhile ``sys.stdout``
#: is stderr, so what a library prints there cannot break ``--json``'s one JSON object — Ray's
#: driver prints its raylets' error messages (a killed worker, in ``bench bridges``) on stdout.
_document_out: TextIO | None = None


def _emit(doc: dict[str, Any], as_json: bool, as_markdown: bool) -> None:
    global _document_out
    out = _document_out or sys.stdout
    sys.stdout, _document_out = out, None
    if as_json:
        out.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    from rich.console import Console

    from vidbrief.bench.tables import show

    # At least TABLE_WIDTH columns: a narrower terminal wraps lines, but no cell is cut short.
    show(Console(file=out, width=max(Console().width, TABLE_WIDTH)), doc, as_markdown=as_markdown)


def _logging() -> None:
    """Progress to stderr, and anything printed on stdout meanwhile too (``_emit``)."""
    global _document_out
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
    )
    if _document_out is None:
        _document_out, sys.stdout = sys.stdout, sys.stderr


@bench_app.command()
def schedule(
    quick: Annotated[bool, typer.Option(help=QUICK_HELP)] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    as_markdown: Annotated[bool, typer.Option("--markdown", help=MARKDOWN_HELP)] = False,
    jobs: Annotated[
        int | None, typer.Option(min=1, help="Jobs per workload (24; quick 6).")
    ] = None,
    scale: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="Multiply the durations (1.0 = download 1 s, analyse 3 s; quick 0.1)."
        ),
    ] = None,
    window: Annotated[int, typer.Option(min=1, help="The bridge's window.")] = 8,
    repeat: Annotated[int, typer.Option(min=1, help="Runs of each; medians reported.")] = 1,
    topology: Annotated[
        list[str] | None, typer.Option(help="one-node, three-nodes (repeatable; default both).")
    ] = None,
    workload: Annotated[
        list[str] | None,
        typer.Option(help="seed-example, mix (repeatable; default both; quick seed-example)."),
    ] = None,
    gantt_dir: Annotated[
        Path | None, typer.Option(help="Where Gantt PNGs go (default docs/; none with --quick).")
    ] = None,
    local: Annotated[bool, typer.Option(help="Also the thread pool and asyncio runs.")] = True,
    celery: Annotated[bool, typer.Option(help="Also Celery (a queue per resource class).")] = True,
) -> None:
    """Ours vs the seed design (and a thread pool, asyncio) against the lower bound."""
    _logging()
    from vidbrief.bench.provenance import provenance, snapshot
    from vidbrief.bench.schedule import ScheduleOptions, run_schedule
    from vidbrief.bench.workloads import TOPOLOGIES

    unknown = set(topology or ()) - set(TOPOLOGIES)
    if unknown:
        raise typer.BadParameter(f"unknown topology {sorted(unknown)}; use {sorted(TOPOLOGIES)}")
    options = ScheduleOptions(
        jobs=jobs or (QUICK_JOBS if quick else 24),
        scale=scale or (0.1 if quick else 1.0),
        window=window,
        repeat=repeat,
        topologies=tuple(topology or TOPOLOGIES),
        workloads=tuple(workload or (("seed-example",) if quick else ("seed-example", "mix"))),
        gantt_dir=gantt_dir if gantt_dir or quick else DOCS_DIR,
        local=local,
        celery=celery,
        warm_per_node=1 if quick else None,  # a smoke run need not warm every worker
    )
    before = snapshot()
    doc = run_schedule(options)
    _emit({**doc, "quick": quick, "provenance": provenance(before)}, as_json, as_markdown)


@bench_app.command()
def bridge(
    quick: Annotated[bool, typer.Option(help=QUICK_HELP)] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    as_markdown: Annotated[bool, typer.Option("--markdown", help=MARKDOWN_HELP)] = False,
    jobs: Annotated[
        int | None, typer.Option(min=1, help="No-op jobs per throughput run (500; quick 150).")
    ] = None,
    window: Annotated[int, typer.Option(min=1, help="Window of the bridge and raw Ray.")] = 8,
    samples: Annotated[
        int | None,
        typer.Option(min=1, help="Jobs, one at a time, for the latency (200; quick 30)."),
    ] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Runs of each; medians reported.")] = 1,
) -> None:
    """Overhead: bridge jobs/s vs raw Ray and rq; XADD → step.started latency at idle."""
    _logging()
    from vidbrief.bench.overhead import OverheadOptions, run_overhead
    from vidbrief.bench.provenance import provenance, snapshot

    options = OverheadOptions(
        jobs=jobs or (150 if quick else 500),
        window=window,
        samples=samples or (30 if quick else 200),
        repeat=repeat,
    )
    before = snapshot()
    doc = run_overhead(options)
    _emit({**doc, "quick": quick, "provenance": provenance(before)}, as_json, as_markdown)


@bench_app.command()
def bridges(
    quick: Annotated[bool, typer.Option(help=QUICK_HELP)] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    as_markdown: Annotated[bool, typer.Option("--markdown", help=MARKDOWN_HELP)] = False,
    jobs: Annotated[int | None, typer.Option(min=1, help="Mix jobs (48; quick 12).")] = None,
    scale: Annotated[
        float | None, typer.Option(min=0.001, help="Multiply the durations (1.0; quick 0.2).")
    ] = None,
    window: Annotated[int, typer.Option(min=1, help="Each bridge's window.")] = 8,
    repeat: Annotated[int, typer.Option(min=1, help="Runs of each; medians reported.")] = 1,
) -> None:
    """Several bridges on one simulated cluster: exactly once, never oversubscribed, a kill."""
    _logging()
    from vidbrief.bench.bridges import run_bridges_bench
    from vidbrief.bench.provenance import provenance, snapshot

    before = snapshot()
    doc = run_bridges_bench(
        jobs or (12 if quick else 48), scale or (0.2 if quick else 1.0), window, repeat
    )
    _emit({**doc, "quick": quick, "provenance": provenance(before)}, as_json, as_markdown)


@bench_app.command()
def show(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A --json output.")],
    as_markdown: Annotated[bool, typer.Option("--markdown", help=MARKDOWN_HELP)] = False,
) -> None:
    """Render a saved ``--json`` document again as tables (or markdown), without re-running."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise typer.BadParameter(f"{path} is not a saved --json document: {e}") from None
    if not isinstance(doc, dict) or "bench" not in doc:
        raise typer.BadParameter(f"{path} is not a saved --json document (no 'bench' key)")
    _emit(doc, False, as_markdown)


@bench_app.command()
def steps(
    quick: Annotated[bool, typer.Option(help=QUICK_HELP)] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    as_markdown: Annotated[bool, typer.Option("--markdown", help=MARKDOWN_HELP)] = False,
    seconds: Annotated[
        float | None, typer.Option(min=5, help="Length of the sample talk (60; quick 20).")
    ] = None,
) -> None:
    """Each real step on a sample talk: standalone (cold, warm), run-local, through the bridge."""
    _logging()
    from vidbrief.bench.steps import StepsOptions, run_steps

    size = (320, 180) if quick else (640, 360)
    doc = run_steps(StepsOptions(seconds=seconds or (20.0 if quick else 60.0), size=size))
    _emit({**doc, "quick": quick}, as_json, as_markdown)


@bench_app.command()
def media(
    quick: Annotated[
        bool, typer.Option(help="Two cases, 1 and 2 minute run-local lengths.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    as_markdown: Annotated[bool, typer.Option("--markdown", help=MARKDOWN_HELP)] = False,
    case: Annotated[
        list[str] | None, typer.Option(help="Only these cases (repeatable; see BENCHMARKS.md).")
    ] = None,
    minutes: Annotated[
        list[float] | None,
        typer.Option(help="run-local lengths in minutes (repeatable; default 5, 20, 60)."),
    ] = None,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads (0: all cores).")] = 0,
) -> None:
    """Speech to text per case (WER, language, CPU s/min, peak RSS); run-local RSS vs length."""
    _logging()
    from vidbrief.bench.media import MediaOptions, run_media

    lengths = tuple(minutes) if minutes else ((1.0, 2.0) if quick else (5.0, 20.0, 60.0))
    options = MediaOptions(
        quick=quick, cases=tuple(case or ()), lengths_min=lengths, threads=threads
    )
    _emit({**run_media(options), "quick": quick}, as_json, as_markdown)


@bench_app.command()
def rebrief(
    minutes: Annotated[
        float, typer.Option(min=0.1, help="Length of the generated talk (10; quick 1).")
    ] = 10.0,
    quick: Annotated[bool, typer.Option(help="A 1 minute talk.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    as_markdown: Annotated[bool, typer.Option("--markdown", help=MARKDOWN_HELP)] = False,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads (0: all cores).")] = 0,
) -> None:
    """A talk briefed twice through the bridge, the second time with other instructions."""
    _logging()
    from vidbrief.bench.provenance import provenance, snapshot
    from vidbrief.bench.rebrief import RebriefOptions, run_rebrief

    before = snapshot()
    doc = run_rebrief(RebriefOptions(minutes=1.0 if quick else minutes, threads=threads))
    _emit({**doc, "quick": quick, "provenance": provenance(before)}, as_json, as_markdown)


@bench_app.command()
def gpu(
    minutes: Annotated[float, typer.Option(help="Length of the generated 720p video.")] = 10.0,
    device: Annotated[str, typer.Option(help="both, cuda or cpu.")] = "both",
    quick: Annotated[bool, typer.Option(help="0.2 minutes.")] = False,
) -> None:
    """Analysis on CUDA vs CPU: frames/s, shots, speech real-time factor (one JSON object).

    Runs ``scripts/gpu_analysis.py`` from the repository (it needs the test media helpers).
    """
    import subprocess

    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_analysis.py"
    if not script.exists():
        raise typer.BadParameter(f"{script} not found: run bench gpu from a repository checkout")
    args = ["--minutes", str(0.2 if quick else minutes), "--device", device]
    raise typer.Exit(subprocess.call([sys.executable, str(script), *args]))
