"""Rich renderings shared by the CLI commands (job state, dead letters)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from rich.table import Table

from ingest.models import JobState

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
    for col in ("id", "reason", "deliveries", "entry"):
        table.add_column(col, overflow="fold")
    for dead_id, fields in entries:
        original = {
            k: v for k, v in fields.items() if k not in ("reason", "deliveries", "stream_id")
        }
        text = json.dumps(original)
        table.add_row(
            dead_id,
            fields.get("reason", ""),
            fields.get("deliveries", ""),
            text if len(text) < 200 else text[:200] + "…",
        )
    return table
