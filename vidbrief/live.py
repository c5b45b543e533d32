"""The live event view behind ``vidbrief events [--follow]``.

Recent events print as one table; ``follow`` then streams one aligned line per new event
(a growing Live table would redraw the whole screen and cannot be piped). Which events is
``ingest.events.EventFilter``'s business (one job id, event types); this module only shows them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ingest.client import Client
from ingest.events import Event, EventFilter

RECENT_EVENTS = 50  # what the non-follow view (and the start of follow) shows at most
SUMMARY_CHARS = 80
# (name, width of the follow view's column; 0: the rest of the line)
COLUMNS = (("time", 12), ("type", 15), ("job", 20), ("step", 8), ("node", 12), ("summary", 0))
_SHOWN_ELSEWHERE = frozenset({"step", "node"})

TYPE_STYLE = {
    "vidbrief.job.completed": "bold green",
    "vidbrief.job.failed": "bold red",
    "vidbrief.job.rejected": "red",
    "vidbrief.job.cancelled": "yellow",
    "vidbrief.webhook.failed": "magenta",
    "vidbrief.job.accepted": "cyan",
    "vidbrief.step.started": "dim",
    "vidbrief.step.completed": "white",
}

__all__ = ["event_line", "events_table", "show_events"]


def show_events(
    client: Client,
    follow: bool,
    job_id: str | None = None,
    types: Sequence[str] | None = None,
    console: Console | None = None,
    max_events: int | None = None,
) -> int:
    """Show recent events, then (``follow``) new ones as they come; return how many were shown.

    Stops after ``max_events`` shown, at the end of the stream without ``follow``, or on Ctrl-C.
    """
    console = console or Console()
    wanted = EventFilter(job_id, tuple(types or ()))
    keep = RECENT_EVENTS if max_events is None else min(RECENT_EVENTS, max_events)
    recent, last_seen = client.recent_events(wanted, keep)
    if recent or not follow:
        console.print(events_table(recent))
    shown = len(recent)
    if not follow or (max_events is not None and shown >= max_events):
        return shown
    return shown + _stream(client, last_seen, wanted, console, _remaining(max_events, shown))


def _remaining(max_events: int | None, shown: int) -> int | None:
    return None if max_events is None else max_events - shown


def _stream(
    client: Client, since: str, wanted: EventFilter, console: Console, limit: int | None
) -> int:
    console.print(_header_line(), highlight=False)
    shown = 0
    try:
        for event in _matching(client.events(since, follow=True), wanted):
            console.print(event_line(event), highlight=False, soft_wrap=True)
            shown += 1
            if limit is not None and shown >= limit:
                break
    except KeyboardInterrupt:
        pass  # Ctrl-C ends a follow: not an error
    return shown


def _matching(events: Iterator[Event], wanted: EventFilter) -> Iterator[Event]:
    return (e for e in events if wanted(e))


# ----------------------------------------------------------------------------- rendering
def events_table(events: Sequence[Event]) -> Table:
    """The events as one table, oldest first."""
    table = Table(title=f"{len(events)} event(s)", title_justify="left")
    for name, _ in COLUMNS:
        wrap = name in ("summary", "job")
        table.add_column(name, overflow="fold" if wrap else "ellipsis", no_wrap=not wrap)
    for event in events:
        table.add_row(*_cells(event))
    return table


def event_line(event: Event) -> Text:
    """One event as an aligned line (the follow view)."""
    line = Text()
    for (_, width), cell in zip(COLUMNS, _cells(event), strict=True):
        line.append_text(cell if not width else _fit(cell, width))
        line.append(" ")
    return line


def _header_line() -> Text:
    header = Text(style="bold")
    for name, width in COLUMNS:
        header.append(name.ljust(width) + " " if width else name)
    return header


def _fit(cell: Text, width: int) -> Text:
    cell = cell.copy()
    cell.truncate(width, overflow="ellipsis", pad=True)
    return cell


def _cells(event: Event) -> list[Text]:
    data = event.data if isinstance(event.data, dict) else {}
    return [
        Text(_clock(event.time), style="dim"),
        Text(event.type.removeprefix("vidbrief."), style=TYPE_STYLE.get(event.type, "")),
        Text(event.job_id),
        Text(str(data.get("step") or "")),
        Text(str(data.get("node") or "")[:12]),
        Text(_summary(data)),
    ]


def _clock(iso_time: str) -> str:
    """HH:MM:SS.mmm of an ISO timestamp (the event's own zone)."""
    try:
        return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).strftime("%H:%M:%S.%f")[:-3]
    except ValueError:
        return iso_time[:12]


def _summary(data: dict[str, object]) -> str:
    """The event's data (step and node have columns), as short ``key=value`` pairs."""
    parts = []
    for key, value in data.items():
        if key in _SHOWN_ELSEWHERE or value in (None, "", {}, []):
            continue
        if isinstance(value, dict):
            value = value.get("message") or ",".join(f"{k}={v}" for k, v in value.items())
        parts.append(f"{key}={value}")
    text = " ".join(parts)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"
