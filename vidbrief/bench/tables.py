"""Rich tables of the benchmark documents (the JSON that ``--json`` prints)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console
from rich.table import Table


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


#: Columns of the schedule table: header and how to show a row's value.
SCHEDULE_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("topology", lambda r: r["name"]),
    ("workload", lambda r: r["workload"]),
    ("jobs", lambda r: str(r["jobs"])),
    ("bound s", lambda r: _f(r["bound_s"], 2)),
    ("ref s", lambda r: _f(r.get("list_schedule_s"), 2)),
    ("ours s", lambda r: _f(r["makespan_s"], 2)),
    ("ours eff", lambda r: _f(r["efficiency"])),
    ("ours/ref", lambda r: _f(r.get("list_efficiency"))),
    ("seed s", lambda r: _f(r["seed_makespan_s"], 2)),
    ("seed eff", lambda r: _f(r["seed_efficiency"])),
    ("celery eff", lambda r: _f(r.get("celery_efficiency"))),
    ("threads eff", lambda r: _f(r.get("threadpool_efficiency"))),
    ("asyncio eff", lambda r: _f(r.get("asyncio_efficiency"))),
    ("GPU duty", lambda r: _f(r["gpu_duty"])),
    ("seed duty", lambda r: _f(r["seed_gpu_duty"])),
    ("pinned", lambda r: "yes" if r["pinned"] else "NO"),
)
LEFT = ("topology", "workload", "measure", "target", "case", "model", "warnings", "role")


def schedule_table(doc: dict[str, Any]) -> Table:
    table = Table(
        title=f"bench schedule (window {doc['window']}, scale {doc['scale']:g}, "
        f"median of {doc['repeat']})"
    )
    for header, _ in SCHEDULE_COLUMNS:
        left = header in LEFT
        table.add_column(header, justify="left" if left else "right", no_wrap=left)
    for row in doc["topologies"]:
        table.add_row(*(show(row) for _, show in SCHEDULE_COLUMNS))
    return table


def bridge_table(doc: dict[str, Any]) -> Table:
    table = Table(
        title=f"bench bridge ({doc['jobs']} no-op jobs, window {doc['window']}, "
        f"median of {doc['repeat']})"
    )
    table.add_column("measure")  # left: in LEFT
    table.add_column("value", justify="right")
    rows = [
        ("bridge, XADD → XACK", f"{doc['bridge_jobs_per_s']:.1f} jobs/s"),
        ("raw Ray, same chain and window", f"{doc['raw_ray_jobs_per_s']:.1f} jobs/s"),
        ("rq, one Worker (fork per job)", f"{doc['rq_jobs_per_s']:.1f} jobs/s"),
        ("rq, one SimpleWorker", f"{doc['rq_simple_jobs_per_s']:.1f} jobs/s"),
        ("Celery, a worker per class", f"{doc.get('celery_jobs_per_s', float('nan')):.1f} jobs/s"),
        ("bridge / raw Ray", f"{doc['bridge_vs_raw_ray']:.2f}"),
        ("bridge / rq Worker", f"{doc['bridge_vs_rq']:.2f}"),
        ("bridge / rq SimpleWorker", f"{doc['bridge_vs_rq_simple']:.2f}"),
        ("XADD → step.started p50 (idle)", f"{doc['latency_ms_p50']:.1f} ms"),
        ("XADD → step.started p99 (idle)", f"{doc['latency_ms_p99']:.1f} ms"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def targets_table(targets: Iterable[dict[str, Any]]) -> Table:
    table = Table(title="targets")
    for column in ("target", "value", "goal", "met", "missed by"):
        table.add_column(column, justify="left" if column in LEFT else "right")
    for t in targets:
        sign = (
            ("<" if t.get("strict") else "≤") if t["at_most"] else (">" if t.get("strict") else "≥")
        )
        table.add_row(
            t["name"],
            _f(t["value"]),
            f"{sign} {_f(t['goal'])}",
            "[green]met[/]" if t["met"] else "[red]missed[/]",
            "" if t["met"] else _f(t["miss_by"]),
        )
    return table


def markdown(table: Table) -> str:
    """The same table as GitHub markdown (for BENCHMARKS.md), rich markup removed."""
    from rich.text import Text

    headers = [str(c.header) for c in table.columns]
    cells = [[Text.from_markup(str(v)).plain for v in c.cells] for c in table.columns]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(":--" if h in LEFT else "--:" for h in headers) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in zip(*cells, strict=True)]
    return "\n".join(lines)


def bridges_table(doc: dict[str, Any]) -> Table:
    table = Table(
        title=f"bench bridges ({doc['jobs']} mix jobs, scale {doc['scale']:g}, three nodes, "
        f"window {doc['window']} each, bound {doc['bound_s']:.2f} s)"
    )
    for column in (
        "bridges",
        "makespan s",
        "efficiency",
        "exactly once",
        "over GPUs/slots",
        "most analyses at once",
        "most downloads at once",
    ):
        table.add_column(column, justify="right")
    names = doc.get("node_names", {})

    def per_node(counts: dict[str, int]) -> str:
        return ", ".join(f"{names.get(n, n)} {c}" for n, c in sorted(counts.items()))

    for row in doc["rows"]:
        table.add_row(
            str(row["bridges"]),
            _f(row["makespan_s"], 2),
            _f(row["efficiency"]),
            "yes" if row["exactly_once"] else "NO",
            "; ".join(row["oversubscribed"]) or "never",
            per_node(row["most_analyses"]),
            per_node(row["most_downloads"]),
        )
    kill = doc["kill"]
    table.caption = (
        f"one of three bridges SIGKILLed holding {kill['killed_jobs']} jobs: completed exactly "
        f"once {'yes' if kill['completed_once'] else 'NO'}, first of its jobs' steps again "
        f"{kill['first_resumed_step_s']:.2f} s after the kill"
    )
    fair = kill.get("fairness")
    if fair:
        table.caption += (
            f"; fairness: A's jobs completed before B's 10th: {fair['a_completed_before_bs_last']}"
            f" of {fair['a_total']}; a high-priority job behind 200 started after "
            f"{fair['urgent_started_after']} others (window {fair['window']})"
        )
    return table


def cpu_table(doc: dict[str, Any]) -> Table:
    """CPU milliseconds per job by process role, for each peer (the last repeat)."""
    cpu = doc["cpu_ms_per_job"]
    roles = [*sorted({r for by_role in cpu.values() for r in by_role} - {"total"}), "total"]
    table = Table(title="CPU ms per job, by process (last repeat)")
    table.add_column("role")
    for peer in cpu:
        table.add_column(peer.replace("_", " "), justify="right")
    for role in roles:
        table.add_row(role, *(_f(cpu[p].get(role), 2) for p in cpu))
    return table


def tables(doc: dict[str, Any]) -> list[Table]:
    if doc["bench"] == "steps":
        return steps_tables(doc)
    if doc["bench"] == "media":
        return media_tables(doc)
    if doc["bench"] == "rebrief":
        return rebrief_tables(doc)
    main = {"schedule": schedule_table, "bridges": bridges_table}.get(doc["bench"], bridge_table)
    found = [main(doc), targets_table(doc["targets"])]
    if doc["bench"] == "bridge" and "cpu_ms_per_job" in doc:
        found.insert(1, cpu_table(doc))
    if "provenance" in doc:
        found.append(provenance_table(doc["provenance"]))
    return found


def provenance_table(found: dict[str, Any]) -> Table:
    table = Table(title="measured on")
    table.add_column("measure")  # left: in LEFT
    table.add_column("value", justify="right")
    for key, value in found.items():
        table.add_row(key.replace("_", " "), str(value))
    return table


def show(console: Console, doc: dict[str, Any], *, as_markdown: bool = False) -> None:
    for table in tables(doc):
        if as_markdown:
            console.print(markdown(table), markup=False, highlight=False, soft_wrap=True)
            console.print()
        else:
            console.print(table)


def steps_tables(doc: dict[str, Any]) -> list[Table]:
    """``bench steps``: seconds per step in each way of running it, then the figures."""
    from vidbrief.bench.steps import STEP_COLUMNS, steps_rows

    seconds = Table(title=f"steps on a {doc['video']['seconds']:.0f} s talk — seconds")
    seconds.add_column("step")
    for column in STEP_COLUMNS:
        seconds.add_column(column.replace("_", " "), justify="right")
    for row in steps_rows(doc):
        seconds.add_row(*row)
    figures = Table(title="figures (standalone, warm)")
    figures.add_column("measure")
    figures.add_column("value", justify="right")
    for key, value in doc["figures"].items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        figures.add_row(key.replace("_", " "), shown)
    return [seconds, figures]


def media_tables(doc: dict[str, Any]) -> list[Table]:
    """``bench media``: speech per case, then run-local peak RSS against length."""
    from vidbrief.bench.media import length_rows, media_rows

    cases = Table(title="speech to text per case (analyse step, warm model)")
    for header in ("case", "model", "s", "WER", "target", "language (p)", "CPU s/min", "RSS MiB"):
        cases.add_column(header, justify="left" if header in ("case", "model") else "right")
    cases.add_column("warnings")
    for row in media_rows(doc):
        cases.add_row(*row)
    ratio, alone = doc.get("rss_ratio"), doc.get("analyse_rss_ratio")
    title = "run-local against length" + (
        f" — peak RSS last/first: run-local {ratio:.3f}, analyse {alone:.3f}"
        if ratio and alone
        else ""
    )
    lengths = Table(title=title)
    headers = (
        "minutes",
        "run-local RSS MiB",
        "CPU s/min",
        "analyse RSS MiB",
        "CPU s/min",
        "wall s",
        "exit",
    )
    for header in headers:
        lengths.add_column(header, justify="right")
    for row in length_rows(doc):
        lengths.add_row(*row)
    return [cases, lengths]


def rebrief_tables(doc: dict[str, Any]) -> list[Table]:
    """``bench rebrief``: each job's seconds and steps, then job 2 ÷ job 1 against the target."""
    from ingest.names import STEP_NAMES
    from vidbrief.bench.rebrief import rebrief_rows

    jobs = Table(title=f"a {doc['minutes']:g} min talk briefed twice through the bridge — seconds")
    jobs.add_column("job")
    for header in ("total", *STEP_NAMES):
        jobs.add_column(header, justify="right")
    jobs.add_column("reused")
    for row in rebrief_rows(doc):
        jobs.add_row(*row)
    figure = Table(title="re-brief")
    figure.add_column("measure")
    figure.add_column("value", justify="right")
    figure.add_row("job 2 ÷ job 1", f"{doc['ratio']:.3f} (target ≤ {doc['target_ratio']:.2f})")
    figure.add_row("met", "yes" if doc["met"] else "NO")
    found = [jobs, figure]
    if "provenance" in doc:
        found.append(provenance_table(doc["provenance"]))
    return found
