"""Telling a chain's failures apart: a step's own error or one of Ray's (see outcome.py).

A step raises a StepError that says whether a retry may help; Ray wraps it in a RayTaskError.
Ray's own errors say that a node, a worker, an actor or an object is gone (the job is
downloaded again elsewhere) or that a task was cancelled. Anything else fails the job. Every
message leaves through ``ingest.redact``.
"""

from __future__ import annotations

import ray.exceptions as rex

from ingest.errors import StepError
from ingest.redact import redact
from raybridge.outcome import Failure, FailureKind

#: Ray failures that mean "the node, its worker, actor or objects are gone": place again.
NODE_LOST_ERRORS: tuple[type[BaseException], ...] = (
    rex.RayActorError,
    rex.ActorUnschedulableError,
    rex.NodeDiedError,
    rex.TaskUnschedulableError,
    rex.WorkerCrashedError,
    rex.ObjectLostError,
    rex.LocalRayletDiedError,
    rex.OutOfMemoryError,
    rex.RaySystemError,
)
#: The error message kept in the job hash is cut to this many characters.
MESSAGE_CHARS = 2000


def classify(error: BaseException, step: str) -> Failure:
    """What a step's failure means for the job."""
    if isinstance(error, rex.RayTaskError):
        cause = error.cause if error.cause is not None else error
        if cause is not error:
            return classify(cause, step)
    if isinstance(error, StepError):
        kind = FailureKind.RETRYABLE if error.retryable else FailureKind.PERMANENT
        return failure(kind, error.step or step, error)
    if isinstance(error, rex.TaskCancelledError):
        return failure(FailureKind.CANCELLED, step, error)
    if isinstance(error, NODE_LOST_ERRORS):
        return failure(FailureKind.NODE_LOST, step, error)
    return failure(FailureKind.PERMANENT, step, error)


def failure(kind: FailureKind, step: str, error: BaseException) -> Failure:
    """A Failure of ``kind`` whose message is the error's first line, redacted: it goes to the
    job hash, the terminal event and the webhook (a library's text may quote a secret)."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    return Failure(kind, step, type(error).__name__, redact(message, max_chars=MESSAGE_CHARS))
