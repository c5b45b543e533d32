"""CloudEvents 1.0 for job progress, built and parsed with the official ``cloudevents`` SDK.

``id`` is stable for the same fact (``<job_id>/<fact>``), so a consumer can dedupe an event
that was published again after a bridge restart. :class:`EventFilter` says which events a
reader wants (``vidbrief events --job … --type …``).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

_FORMAT = JSONFormat()


class EventType(StrEnum):
    ACCEPTED = "vidbrief.job.accepted"
    REJECTED = "vidbrief.job.rejected"
    STEP_STARTED = "vidbrief.step.started"
    STEP_COMPLETED = "vidbrief.step.completed"
    COMPLETED = "vidbrief.job.completed"
    FAILED = "vidbrief.job.failed"
    CANCELLED = "vidbrief.job.cancelled"
    #: A job's completion webhook could not be delivered (refused URL, 4xx, retries spent).
    WEBHOOK_FAILED = "vidbrief.webhook.failed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_EVENTS


TERMINAL_EVENTS = frozenset(
    {EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED, EventType.REJECTED}
)


@dataclass(frozen=True)
class Event:
    """A parsed event: the CloudEvent attributes that matter here, and its data."""

    id: str
    type: str
    source: str
    subject: str
    time: str
    data: dict[str, Any]
    stream_id: str = ""

    @property
    def job_id(self) -> str:
        return self.subject

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


def build_event(
    type_: EventType, job_id: str, source: str, fact: str, data: dict[str, Any] | None = None
) -> bytes:
    """A CloudEvent JSON document. ``fact`` makes the id: the same fact gives the same id."""
    attributes = {
        "type": str(type_),
        "source": source,
        "id": f"{job_id}/{fact}",
        "subject": job_id,
        "time": datetime.now(UTC),
        "datacontenttype": "application/json",
    }
    return _FORMAT.write(CloudEvent(attributes, data or {}))


def parse_event(raw: bytes | str, stream_id: str = "") -> Event:
    """Parse a CloudEvent JSON document (as found in the ``event`` field)."""
    if isinstance(raw, str):
        raw = raw.encode()
    ce = _FORMAT.read(CloudEvent, raw)
    data = ce.get_data()
    if isinstance(data, bytes | str):
        data = json.loads(data) if data else {}
    time = ce.get_time()
    return Event(
        id=ce.get_id(),
        type=ce.get_type(),
        source=ce.get_source(),
        subject=ce.get_subject() or "",
        time=time.isoformat() if isinstance(time, datetime) else str(time or ""),
        data=data or {},
        stream_id=stream_id,
    )


@dataclass(frozen=True)
class EventFilter:
    """The events about one job (if given) and of some types (if any): each type pattern is
    exact (``vidbrief.job.failed``), a prefix (``vidbrief.step``) or a glob (``vidbrief.step.*``).
    """

    job_id: str | None = None
    types: tuple[str, ...] = ()

    def __call__(self, event: Event) -> bool:
        if self.job_id is not None and event.job_id != self.job_id:
            return False
        return not self.types or any(_type_matches(event.type, p) for p in self.types)


def _type_matches(type_: str, pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(type_, pattern)
    return type_ == pattern or type_.startswith(pattern.rstrip(".") + ".")


def bridge_source(bridge_name: str) -> str:
    """The CloudEvents ``source`` of a bridge (contract: ``vidbrief/<bridge-name>``)."""
    return f"vidbrief/{bridge_name}"
