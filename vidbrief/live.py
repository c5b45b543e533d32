"""The live event view behind ``vidbrief events [--follow]``.

Recent events print as one table; ``follow`` then streams one aligned line per new event
(a growing Live table would redraw the whole screen and cannot be piped). Which events is
``ingest.events.EventFilter``'s business (one job id, event types); this module only shows them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ingest.client import Client
from ingest.events import Event, EventFilter
from vidbrief.terminal import clean

RECENT_EVENTS = 50  # what the non-follow view (and the start of follow) shows at most
SUMMARY_CHARS = 120
# (name, width of the follow view's column; 0: the rest of the line). 12 + 16 + 18 + 4 spaces
# leave 30 characters of details on an 80-column terminal.
COLUMNS = (("time", 12), ("job", 16), ("event", 18), ("details", 0))
#: Characters of a node id shown when its host is not known.
NODE_ID_CHARS = 8
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
    *,
    as_json: bool = False,
    hosts: Mapping[str, str] | None = None,
) -> int:
    """Show recent events, then (``follow``) new ones as they come; return how many were shown.

    Stops after ``max_events`` shown, at the end of the stream without ``follow``, or on Ctrl-C.
    ``as_json``: one CloudEvent JSON document per line instead (JSON Lines, for ``jq``).
    ``hosts``: node id → host name, to name nodes.
    """
    console = console or Console()
    view = _View(console, as_json, hosts or {})
    wanted = EventFilter(job_id, tuple(types or ()))
    keep = RECENT_EVENTS if max_events is None else min(RECENT_EVENTS, max_events)
    recent, last_seen = client.recent_events(wanted, keep)
    view.recent(recent, show_empty=not follow)
    shown = len(recent)
    if not follow or (max_events is not None and shown >= max_events):
        return shown
    return shown + _stream(client, last_seen, wanted, view, _remaining(max_events, shown))


@dataclasses.dataclass
class _View:
    """How events are printed: an aligned table and lines, or JSON Lines."""

    console: Console
    as_json: bool
    hosts: Mapping[str, str]

    def recent(self, events: Sequence[Event], *, show_empty: bool) -> None:
        if self.as_json:
            for event in events:
                self.line(event)
        elif events or show_empty:
            self.console.print(events_table(events, self.hosts))

    def header(self) -> None:
        if not self.as_json:
            self.console.print(_header_line(), highlight=False)

    def line(self, event: Event) -> None:
        if self.as_json:
            document = json.dumps(dataclasses.asdict(event), ensure_ascii=True)
            self.console.out(document, highlight=False)
        else:
            self.console.print(event_line(event, self.hosts), highlight=False, soft_wrap=True)


def _remaining(max_events: int | None, shown: int) -> int | None:
    return None if max_events is None else max_events - shown


def _stream(client: Client, since: str, wanted: EventFilter, view: _View, limit: int | None) -> int:
    view.header()
    shown = 0
    try:
        for event in _matching(client.events(since, follow=True), wanted):
            view.line(event)
            shown += 1
            if limit is not None and shown >= limit:
                break
    except KeyboardInterrupt:
        pass  # Ctrl-C ends a follow: not an error
    return shown


def _matching(events: Iterator[Event], wanted: EventFilter) -> Iterator[Event]:
    return (e for e in events if wanted(e))


# ----------------------------------------------------------------------------- rendering
def events_table(events: Sequence[Event], hosts: Mapping[str, str] | None = None) -> Table:
    """The events as one table, oldest first."""
    table = Table(
        title=f"{len(events)} event(s)", title_justify="left", box=box.SIMPLE_HEAD, expand=True
    )
    for name, width in COLUMNS:
        fixed = name in ("time", "event")
        table.add_column(
            name,
            overflow="fold",
            no_wrap=fixed,
            max_width=width or None,
            ratio=None if width else 1,
        )
    for event in events:
        table.add_row(*_cells(event, hosts or {}))
    return table


def event_line(event: Event, hosts: Mapping[str, str] | None = None) -> Text:
    """One event as an aligned line (the follow view)."""
    line = Text()
    for (_, width), cell in zip(COLUMNS, _cells(event, hosts or {}), strict=True):
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


def _cells(event: Event, hosts: Mapping[str, str]) -> list[Text]:
    data = event.data if isinstance(event.data, dict) else {}
    return [
        Text(_clock(event.time), style="dim"),
        Text(clean(event.job_id)),
        Text(_what(event, data), style=TYPE_STYLE.get(event.type, "")),
        Text(_details(data, hosts)),
    ]


def _what(event: Event, data: dict[str, object]) -> str:
    """``download started`` for a step event, ``job.completed`` for the others."""
    kind = event.type.removeprefix("vidbrief.")
    step = data.get("step")
    if kind.startswith("step.") and step:
        return f"{clean(step)} {kind.removeprefix('step.')}"
    return kind


def _clock(iso_time: str) -> str:
    """HH:MM:SS.mmm of an ISO timestamp (the event's own zone)."""
    try:
        return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).strftime("%H:%M:%S.%f")[:-3]
    except ValueError:
        return clean(iso_time[:12])


def _details(data: dict[str, object], hosts: Mapping[str, str]) -> str:
    """Where it ran, then the event's data as short ``key=value`` pairs."""
    node = str(data.get("node") or "")
    where = f"on {hosts.get(node) or node[:NODE_ID_CHARS]} " if node else ""
    return clean(where + _summary(data))


def _summary(data: dict[str, object]) -> str:
    """The event's data (step and node are shown apart), as short ``key=value`` pairs."""
    parts = []
    for key, value in data.items():
        if key in _SHOWN_ELSEWHERE or value in (None, "", {}, []):
            continue
        if isinstance(value, dict):
            value = value.get("message") or ",".join(f"{k}={v}" for k, v in value.items())
        parts.append(f"{key}={value}")
    text = " ".join(parts)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"
