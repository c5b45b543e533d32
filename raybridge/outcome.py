"""How a chain attempt failed, and how a job ended: plain data shared by the launcher and the loop.

Failure.kind
├── retryable   a step raised a retryable StepError: run again from that step, with backoff
├── permanent   a step raised anything else: the job fails, the entry is acknowledged
├── node_lost   Ray lost the node, the worker, the actor or an object: download elsewhere
└── cancelled   Ray cancelled the task (a cancel request, or the bridge's own clean-up)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ingest.events import EventType
from ingest.models import JobStatus


class FailureKind(StrEnum):
    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    NODE_LOST = "node_lost"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Failure:
    """One failed chain attempt."""

    kind: FailureKind
    step: str
    error_class: str
    message: str

    def to_dict(self) -> dict[str, object]:
        """The ``error`` JSON of the job hash (CONTRACT: class, message, step, retryable)."""
        return {
            "class": self.error_class,
            "message": self.message,
            "step": self.step,
            "retryable": self.kind is FailureKind.RETRYABLE,
        }


@dataclass(frozen=True)
class Outcome:
    """How a job ended: its status, and the result or the error."""

    status: JobStatus
    result: dict[str, Any] | None = None
    error: dict[str, object] | None = None

    @property
    def event_type(self) -> EventType:
        return {
            JobStatus.COMPLETED: EventType.COMPLETED,
            JobStatus.FAILED: EventType.FAILED,
            JobStatus.CANCELLED: EventType.CANCELLED,
        }[self.status]

    @classmethod
    def completed(cls, result: dict[str, Any]) -> Outcome:
        return cls(JobStatus.COMPLETED, result=result)

    @classmethod
    def failed(cls, failure: Failure) -> Outcome:
        return cls(JobStatus.FAILED, error=failure.to_dict())

    @classmethod
    def cancelled(cls) -> Outcome:
        return cls(JobStatus.CANCELLED)
