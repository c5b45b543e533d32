"""The live event view behind ``vidbrief events [--follow]``.

Recent events print as one table; ``follow`` then streams one aligned line per new event
(a growing Live table would redraw the whole screen and cannot be piped). Filters: one job id,
and event types — exact (``vidbrief.job.failed``), a prefix (``vidbrief.step``) or a glob
(``vidbrief.step.*``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ingest.client import Client
from ingest.events import Event, parse_event
from ingest.names import EVENT_FIELD

RECENT_EVENTS = 50  # what the non-follow view (and the start of follow) shows at most
RECENT_SCAN_EVENTS = 2_000  # ...found among this many newest events (filters apply to these)
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

__all__ = ["event_matches", "show_events"]


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
    wanted = _Filter(job_id, tuple(types or ()))
    keep = RECENT_EVENTS if max_events is None else min(RECENT_EVENTS, max_events)
    recent, last_seen = _recent(client, wanted, keep)
    if recent or not follow:
        console.print(events_table(recent))
    shown = len(recent)
    if not follow or (max_events is not None and shown >= max_events):
        return shown
    return shown + _stream(client, last_seen, wanted, console, _remaining(max_events, shown))


def event_matches(event: Event, job_id: str | None, types: Iterable[str]) -> bool:
    """True when ``event`` is about ``job_id`` (if given) and of one of ``types`` (if any)."""
    return _Filter(job_id, tuple(types))(event)


class _Filter:
    def __init__(self, job_id: str | None, patterns: tuple[str, ...]) -> None:
        self.job_id = job_id
        self.patterns = patterns

    def __call__(self, event: Event) -> bool:
        if self.job_id is not None and event.job_id != self.job_id:
            return False
        return not self.patterns or any(_type_matches(event.type, p) for p in self.patterns)


def _type_matches(type_: str, pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(type_, pattern)
    return type_ == pattern or type_.startswith(pattern.rstrip(".") + ".")


def _recent(client: Client, wanted: _Filter, keep: int) -> tuple[list[Event], str]:
    """The ``keep`` newest matching events among the RECENT_SCAN_EVENTS newest, oldest first,
    and the id of the newest event scanned (where following starts)."""
    newest = client.redis.xrevrange(client.names.events, count=RECENT_SCAN_EVENTS)
    events = (parse_event(fields[EVENT_FIELD], sid) for sid, fields in reversed(newest))
    matching = [e for e in events if wanted(e)]
    last_seen = newest[0][0] if newest else "0-0"
    return (matching[-keep:] if keep else []), last_seen


def _remaining(max_events: int | None, shown: int) -> int | None:
    return None if max_events is None else max_events - shown


def _stream(
    client: Client, since: str, wanted: _Filter, console: Console, limit: int | None
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


def _matching(events: Iterator[Event], wanted: _Filter) -> Iterator[Event]:
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
