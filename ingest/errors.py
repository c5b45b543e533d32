"""The error tree of vidbrief. Every error the project raises on purpose derives from one root.

VidbriefError
├── InvalidRequest        a job request failed validation (field + reason in the message)
├── ConfigError           a setting is missing or wrong (the message names the variable)
├── EmbeddedRedisError    the embedded redis-server could not be started or found
├── UnsafeURL             a URL points at a refused address or scheme
└── StepError             a pipeline step failed; ``retryable`` says if trying again may help
    ├── RetryableStepError    network trouble, 5xx, 429, timeouts
    └── PermanentStepError    404, refused, too large, invalid content
"""

from __future__ import annotations


class VidbriefError(Exception):
    """Root of all vidbrief errors."""


class InvalidRequest(VidbriefError):
    """A job request did not validate; ``str()`` says which field and why."""


class ConfigError(VidbriefError):
    """A setting is missing or inconsistent."""


class EmbeddedRedisError(VidbriefError):
    """The embedded redis-server could not be started, found or stopped."""


class UnsafeURL(VidbriefError):
    """A URL was refused by the address policy (scheme, private or loopback host, …)."""


class StepError(VidbriefError):
    """A pipeline step failed. Carries the step name and whether a retry may help."""

    retryable: bool = False

    def __init__(self, message: str, *, step: str = "", retryable: bool | None = None) -> None:
        super().__init__(message)
        self.step = step
        if retryable is not None:
            self.retryable = retryable

    def to_dict(self) -> dict[str, object]:
        """The ``error`` JSON stored in the job hash."""
        return {
            "class": type(self).__name__,
            "message": str(self),
            "step": self.step,
            "retryable": self.retryable,
        }


class RetryableStepError(StepError):
    """A transient failure: the same step may succeed later."""

    retryable = True


class PermanentStepError(StepError):
    """A failure that will repeat: do not retry."""

    retryable = False
