"""Rich renderings shared by the CLI commands: a job's state, dead letters, the cluster, the
dataset. Each fits an 80-column terminal (the width of a pipe), and every value that came from
outside is shown literally (terminal.py): never read as markup, control characters escaped.

``ingest`` and ``raybridge`` return data (models, stream entries, heartbeat JSON); everything
a person reads in a terminal is drawn here (and in live.py, the event view). ``--json`` prints
the same data unrendered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ingest.models import JobState
from ingest.names import DELIVERIES_FIELD, REASON_FIELD, STEP_NAMES, STREAM_ID_FIELD
from vidbrief.terminal import clean, safe

GIB = 1024**3
#: Characters of a Ray node id shown (its first 8 hex digits tell nodes apart in practice).
NODE_ID_CHARS = 8
#: Longest original entry shown in a dead-letter row.
ENTRY_CHARS = 200
#: A bridge whose heartbeat is older than this many of its intervals is shown as stale
#: (the rule of ``vidbrief health bridge``).
STALE_BEATS = 3

STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "rejected": "red",
    "running": "cyan",
    "queued": "white",
}


def clock(ts: float | None) -> str:
    """A wall-clock time for humans (UTC)."""
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]


def node_name(node_id: str | None, hosts: Mapping[str, str]) -> str:
    """A node as people know it: its host name and the start of its Ray id."""
    if not node_id:
        return ""
    short = node_id[:NODE_ID_CHARS]
    host = hosts.get(node_id)
    return f"{host} {short}" if host else short


def hosts_from(beats: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Node id → host name, from the bridges' heartbeats (the nodes alive now)."""
    return {
        str(row["node_id"]): str(row["host"])
        for beat in beats.values()
        for row in beat.get("cluster", [])
        if row.get("node_id") and row.get("host")
    }


# ---------------------------------------------------------------- one job
def job_view(state: JobState, hosts: Mapping[str, str] | None = None) -> RenderableType:
    """One job: a title, its facts, its steps in chain order, then its error or result."""
    style = STATUS_STYLE.get(state.status, "white")
    title = Text.assemble("job ", safe(state.job_id, "bold"), " — ", (str(state.status), style))
    parts: list[RenderableType] = [title, _facts(state), _steps(state, hosts or {})]
    if state.error:
        parts.append(_labelled("error", _error_line(state.error), "red"))
    if state.result:
        parts.append(_labelled("result", json.dumps(state.result, indent=2)))
    return Group(*parts)


def _facts(state: JobState) -> Table:
    facts = _key_value_table()
    facts.add_row("url", safe(state.url or "—"))
    times = f"created {clock(state.created_at)} · finished {clock(state.finished_at)}"
    facts.add_row("attempts", Text(f"{state.attempts} · {times}"))
    if state.webhook_status:
        last = f" — {clean(state.webhook_last)}" if state.webhook_last else ""
        facts.add_row(
            "webhook",
            Text(f"{clean(state.webhook_status)} after {state.webhook_attempts} attempt(s){last}"),
        )
    return facts


def _key_value_table() -> Table:
    table = Table(box=None, show_header=False, padding=(0, 1, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    return table


def _steps(state: JobState, hosts: Mapping[str, str]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    table.add_column("step", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("seconds", justify="right", no_wrap=True)
    table.add_column("node", overflow="fold")
    for name in _chain_order(state.steps):
        timing = state.steps[name]
        table.add_row(
            safe(name),
            clock(timing.started),
            _step_seconds(timing.seconds, state),
            safe(node_name(timing.node, hosts)),
        )
    return table


def _chain_order(steps: Mapping[str, Any]) -> list[str]:
    """The chain's steps in order, then any other names the hash holds."""
    return [n for n in STEP_NAMES if n in steps] + sorted(n for n in steps if n not in STEP_NAMES)


def _step_seconds(seconds: float | None, state: JobState) -> Text:
    """The step's duration; an unfinished step is running only while the job is."""
    if seconds is not None:
        return Text(f"{seconds:.2f}")
    if not state.status.finished:
        return Text("…", style="cyan")
    return Text(str(state.status), style=STATUS_STYLE.get(state.status, ""))


def _error_line(error: Mapping[str, Any]) -> str:
    kind = error.get("class") or error.get("error_class") or "error"
    retry = " (retryable)" if error.get("retryable") else ""
    step = f" in {error['step']}" if error.get("step") else ""
    return f"{kind}{step}: {error.get('message', '')}{retry}"


def _labelled(label: str, text: str, style: str = "") -> Table:
    table = _key_value_table()
    lines = [clean(line) for line in text.splitlines()] or [""]
    table.add_row(Text(label, style=style), Text("\n".join(lines)))
    return table


# ---------------------------------------------------------------- dead letters
def dead_table(entries: list[tuple[str, dict[str, str]]]) -> Table:
    """Dead letters, newest first: id, reason, deliveries, original entry (shortened)."""
    table = Table(title=f"{len(entries)} dead letter(s)", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("reason", overflow="fold", ratio=2)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("entry", overflow="fold", ratio=3)
    for dead_id, fields in entries:
        text = json.dumps(_original(fields))
        table.add_row(
            safe(dead_id),
            safe(fields.get(REASON_FIELD, "")),
            safe(fields.get(DELIVERIES_FIELD, "")),
            safe(text if len(text) < ENTRY_CHARS else text[:ENTRY_CHARS] + "…"),
        )
    return table


def _original(fields: Mapping[str, str]) -> dict[str, str]:
    added = (REASON_FIELD, DELIVERIES_FIELD, STREAM_ID_FIELD)
    return {k: v for k, v in fields.items() if k not in added}


def dead_json(entries: list[tuple[str, dict[str, str]]]) -> list[dict[str, Any]]:
    """Dead letters for ``--json``: id, reason, deliveries, original stream id, the entry."""
    return [
        {
            "id": dead_id,
            "reason": fields.get(REASON_FIELD),
            "deliveries": fields.get(DELIVERIES_FIELD),
            "stream_id": fields.get(STREAM_ID_FIELD),
            "entry": _original(fields),
        }
        for dead_id, fields in entries
    ]


# ---------------------------------------------------------------- the cluster
def with_ages(
    raw: Mapping[str, str], interval_s: float, now: float | None = None
) -> dict[str, dict[str, Any]]:
    """The heartbeats, parsed, each with ``age_s`` and ``stale`` (older than three of its
    intervals: that bridge is gone or stuck, and what it says about its nodes is old)."""
    now = time.time() if now is None else now
    beats = {}
    for name, text in raw.items():
        try:
            beat = dict(json.loads(text))
        except (ValueError, TypeError):
            beat = {"unreadable": True}
        every = float(beat.get("heartbeat_seconds") or interval_s)
        updated = beat.get("updated_at")
        age = None if updated is None else round(max(0.0, now - float(updated)), 1)
        beat["age_s"] = age
        beat["stale"] = age is None or age > STALE_BEATS * every
        beats[name] = beat
    return beats


def cluster_view(beats: Mapping[str, Mapping[str, Any]]) -> RenderableType:
    """Every bridge (its heartbeat's age, stale or not) and the nodes it sees."""
    parts: list[RenderableType] = []
    for name, beat in sorted(beats.items()):
        parts += [_bridge_line(name, beat), _nodes_table(beat.get("cluster", []))]
    parts.append(Text(NODE_LEGEND, style="dim"))
    return Group(*parts)


def _bridge_line(name: str, beat: Mapping[str, Any]) -> Text:
    line = Text.assemble("bridge ", safe(name, "bold"), " · ")
    age = beat.get("age_s")
    heard = "no heartbeat time" if age is None else f"heartbeat {age:.1f} s ago"
    if beat.get("stale"):
        line.append(f"STALE: {heard}", style="bold red")
        line.append(" (gone or stuck; its nodes below are as it last saw them)")
        return line
    line.append(heard, style="green")
    state = "draining" if beat.get("draining") else "running"
    line.append(f" · {state} · {beat.get('in_flight', '?')}/{beat.get('window', '?')} in flight")
    holds = _holds(beat.get("cluster", []))
    if holds:
        line.append(f" · holds {holds}")
    return line


def _holds(rows: list[Mapping[str, Any]]) -> str:
    """The jobs this bridge holds on each node ("gpu-1 2, gpu-2 1"): which bridge holds what."""
    held = [
        f"{clean(row.get('host') or '') or str(row.get('node_id', ''))[:NODE_ID_CHARS]} "
        f"{row['held_here']}"
        for row in rows
        if row.get("held_here")
    ]
    return ", ".join(held)


#: (header, justify) of the node table; every header fits its column at 80 characters.
NODE_COLUMNS = (
    ("node", "left"),
    ("GPU", "right"),
    ("an", "right"),
    ("jobs", "right"),
    ("dl/an", "right"),
    ("disk", "right"),
    ("mem", "right"),
    ("probe", "right"),
    ("health", "left"),
)
#: The columns that take what is left of the width (and fold their text).
FLEXIBLE = {"node": 5, "health": 4}
NODE_LEGEND = (
    "an: this bridge's analyses running / analysis actors (+ its downloaded jobs waiting for "
    "one) · jobs: held (by every bridge) / look-ahead allows · dl/an: measured "
    "download and "
    "analysis seconds · disk: free under the work folder (work: used by job folders) · "
    "probe: age of the last health answer"
)


def _nodes_table(rows: list[Mapping[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False, expand=True)
    for header, justify in NODE_COLUMNS:
        ratio = FLEXIBLE.get(header)
        table.add_column(
            header,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=ratio is None,
            overflow="fold",
            ratio=ratio,
            min_width=len(header),
        )
    for row in rows:
        table.add_row(*_node_cells(row))
    return table


def _node_cells(row: Mapping[str, Any]) -> list[Text]:
    host = clean(row.get("host") or "")
    node = str(row.get("node_id", ""))[:NODE_ID_CHARS]
    return [
        Text(f"{host}\n{node}" if host else node),
        Text(f"{row.get('gpus', 0):g}"),
        Text(_analysers(row)),
        Text(_jobs(row)),
        Text(_pace(row)),
        Text(_disk(row)),
        Text(_size(row.get("memory_available_bytes"))),
        Text(_probe_age(row)),
        _health(row),
    ]


def _health(row: Mapping[str, Any]) -> Text:
    """ok; no: why (short of disk or memory); no answer (to the last probes: gets no work)."""
    reason = "" if row.get("healthy", True) else clean(row.get("reason", ""))
    if row.get("stale"):
        return Text.assemble(("no answer", "bold red"), f"; last: {reason}" if reason else "")
    if not reason:
        return Text("ok", style="green")
    return Text.assemble(("no", "red"), f": {reason}")


def _probe_age(row: Mapping[str, Any]) -> str:
    measured = row.get("measured_at")
    if measured is None:
        return "—"
    return f"{max(0.0, time.time() - float(measured)):.0f} s"


def _analysers(row: Mapping[str, Any]) -> str:
    """The bridge's analyses running out of the node's actors ("1/2"), and its downloaded
    jobs waiting for one ("+3"); a heartbeat without them (an older bridge): the actors."""
    actors = row.get("analysers", 0)
    if "analysing" not in row:
        return str(actors)
    cell = f"{row['analysing']}/{actors}"
    waiting = row.get("waiting_for_analyser") or 0
    return f"{cell}\n+{waiting}" if waiting else cell


def _jobs(row: Mapping[str, Any]) -> str:
    """Jobs the node holds (every bridge's), out of what its look-ahead allows ("3/4")."""
    capacity = row.get("capacity")
    held = row.get("assigned", 0)
    return f"{held}/{capacity}" if capacity is not None else str(held)


def _pace(row: Mapping[str, Any]) -> str:
    """The measured download and analysis times that set the node's look-ahead."""
    download, analysis = row.get("download_s"), row.get("analysis_s")
    if download is None or analysis is None:
        return "—"
    return f"{download:.1f}/{analysis:.1f}"


def _disk(row: Mapping[str, Any]) -> str:
    free = _size(row.get("disk_free_bytes"))
    work = row.get("work_bytes")
    return free if work is None else f"{free}\nwork {_size(work)}"


def _size(n: Any) -> str:
    """GiB, short: 0.5G, 96.0G, 1234G."""
    if n is None:
        return "—"
    gib = n / GIB
    return f"{gib:.1f}G" if gib < 100 else f"{gib:.0f}G"


# ---------------------------------------------------------------- the dataset
#: (column, header) of ``vidbrief export``'s table.
DATASET_COLUMNS = (
    ("day", "day"),
    ("job_id", "job"),
    ("status", "status"),
    ("attempts", "tries"),
    ("duration_s", "seconds"),
    ("total_tokens", "tokens"),
    ("error_class", "error"),
)


def dataset_table(rows: list[Mapping[str, Any]]) -> Table:
    """Finished jobs, one row each (``vidbrief export``; ``--json`` has every field)."""
    table = Table(title=f"{len(rows)} finished jobs", box=box.SIMPLE_HEAD, show_edge=False)
    for _, header in DATASET_COLUMNS:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(safe(_cell(row.get(key))) for key, _ in DATASET_COLUMNS))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if isinstance(value, float) else str(value)
