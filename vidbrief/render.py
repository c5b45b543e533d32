"""Rich renderings shared by the CLI commands: a job's state, dead letters, the cluster.

``ingest`` and ``raybridge`` return data (models, stream entries, heartbeat JSON); everything
a person reads in a terminal is drawn here (and in live.py, the event view).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from ingest.models import JobState
from ingest.names import DELIVERIES_FIELD, REASON_FIELD, STREAM_ID_FIELD

GIB = 1024**3
NODE_ID_CHARS = 12
#: Longest original entry shown in a dead-letter row.
ENTRY_CHARS = 200

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


def job_table(state: JobState) -> Table:
    """One job: status, timestamps, steps with duration and node, result or error."""
    style = STATUS_STYLE.get(state.status, "white")
    table = Table(title=f"job {state.job_id} — [{style}]{state.status}[/]", show_lines=False)
    table.add_column("step")
    table.add_column("started")
    table.add_column("seconds", justify="right")
    table.add_column("node")
    for name, timing in state.steps.items():
        seconds = f"{timing.seconds:.2f}" if timing.seconds is not None else "…"
        node = (timing.node or "")[:12]
        table.add_row(name, clock(timing.started), seconds, node)
    caption = [
        f"url {state.url}",
        f"attempts {state.attempts}",
        f"created {clock(state.created_at)}",
        f"finished {clock(state.finished_at)}",
    ]
    if state.webhook_status:
        caption.append(
            f"webhook {state.webhook_status} after {state.webhook_attempts} attempt(s)"
            + (f" — {state.webhook_last}" if state.webhook_last else "")
        )
    if state.error:
        caption.append(f"error {json.dumps(state.error)}")
    if state.result:
        caption.append(f"result {json.dumps(state.result)}")
    table.caption = "\n".join(caption)
    return table


def dead_table(entries: list[tuple[str, dict[str, str]]]) -> Table:
    """Dead letters, newest first: id, reason, deliveries, original entry (shortened)."""
    table = Table(title=f"{len(entries)} dead letter(s)")
    for col in ("id", REASON_FIELD, DELIVERIES_FIELD, "entry"):
        table.add_column(col, overflow="fold")
    added = (REASON_FIELD, DELIVERIES_FIELD, STREAM_ID_FIELD)
    for dead_id, fields in entries:
        text = json.dumps({k: v for k, v in fields.items() if k not in added})
        table.add_row(
            dead_id,
            fields.get(REASON_FIELD, ""),
            fields.get(DELIVERIES_FIELD, ""),
            text if len(text) < ENTRY_CHARS else text[:ENTRY_CHARS] + "…",
        )
    return table


def cluster_table(beats: Mapping[str, Mapping[str, Any]]) -> Table:
    """Every bridge's nodes, from the heartbeats in ``names.bridges`` (``status --cluster``)."""
    table = Table(title="cluster (from the bridge heartbeats)")
    columns = ("bridge", "node", "GPUs", "analysers", "jobs", "held by it", "pace", "disk free")
    for column in (*columns, "memory"):
        table.add_column(column, justify="right" if column not in ("bridge", "node") else "left")
    table.add_column("healthy")
    table.add_column("stale")
    for name, beat in sorted(beats.items()):
        for row in beat.get("cluster", []):
            table.add_row(name, *_node_cells(row))
    return table


def _node_cells(row: Mapping[str, Any]) -> list[str]:
    healthy = row.get("healthy", True)
    verdict = "[green]yes[/]" if healthy else f"[red]no[/] {row.get('reason', '')}"
    return [
        str(row.get("node_id", ""))[:NODE_ID_CHARS],
        f"{row.get('gpus', 0):g}",
        str(row.get("analysers", 0)),
        _jobs(row),
        str(row.get("held_here", "—")),
        _pace(row),
        _size(row.get("disk_free_bytes")),
        _size(row.get("memory_available_bytes")),
        verdict,
        "[yellow]stale[/]" if row.get("stale") else "",
    ]


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
    return f"download {download:.1f} s · analysis {analysis:.1f} s"


def _size(n: Any) -> str:
    return "—" if n is None else f"{n / GIB:,.1f} GiB"
