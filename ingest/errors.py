"""The error tree of vidbrief. Every error the project raises on purpose derives from one root.

VidbriefError
├── InvalidRequest              a job request failed validation (field + reason in the message)
├── ConfigError                 a setting is missing or wrong (the message names the variable)
├── EmbeddedRedisError          the embedded redis-server could not be started or found
├── UnsafeURL                   a URL points at a refused address or scheme
│   └── UnresolvableHost        its host does not resolve (``temporary``: worth a retry)
├── StepError                   a pipeline step failed; ``retryable`` says if trying again may help
│   ├── RetryableStepError      network trouble, 5xx, 429, timeouts
│   └── PermanentStepError      404, refused, too large, invalid content
│       └── StepTimeout         the step ran past its time limit and was stopped
├── ClientError                 the producer client (``ingest.client``) could not do what was asked
│   ├── JobTimeout              (also a TimeoutError) the job did not finish within the wait
│   ├── UnknownDeadLetter       (also a KeyError) no dead letter has that id
│   └── NotReplayable           (also a ValueError) the dead letter has no job request to replay
├── BridgeError                 the bridge (``raybridge``) itself, not a job
│   ├── BridgeStartTimeout      (also a TimeoutError) the bridge actor did not become ready
│   └── WindowFull              (also a RuntimeError) a job added past the window: a caller's bug
└── WebhookError                completion webhooks (``webhooks``)
    ├── WebhookAttemptFailed    one delivery attempt failed: rq schedules the next one
    └── WebhookRejected         a received delivery did not verify (forged, altered, stale)

Inside the steps, a few signals stay next to the code that raises and catches them; none
leaves its step (the step turns it into a StepError or a notice):

    pipeline/brief.py     InvalidOutput        VidbriefError, ValueError: a model reply to repair
    pipeline/speech.py    BackendUnavailable   VidbriefError, RuntimeError: try the next backend
    pipeline/fetch.py     RefusedRequest,      yt-dlp's RequestError only, so that yt-dlp's
                          DeadlineExceeded,    networking passes them through unchanged
                          OverLimitRequest
    pipeline/fetchlimits.py  OverLimit          PermanentStepError: a response over its cap
                          DeadlinePassed       VidbriefError, TimeoutError: a read past the deadline

Where callers may already catch a builtin (``except TimeoutError``), the class subclasses it
too, so both spellings work.
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


class UnresolvableHost(UnsafeURL):
    """The host name did not resolve. ``temporary`` is True for a DNS failure worth a retry."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


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


class StepTimeout(PermanentStepError):
    """A step ran past its time limit (``VIDBRIEF_STEP_TIMEOUT_SECONDS``) and was stopped.

    Permanent: every outside wait inside a step has a shorter limit of its own (the download's
    deadline, each LLM call's), so a step this slow is slow because of its input; running it
    again would hold the same GPU or download slot for the same time again.
    """

    def __init__(self, step: str, limit_s: float) -> None:
        super().__init__(
            f"{step} ran past its time limit of {limit_s:g} s and was stopped; set "
            f'VIDBRIEF_STEP_TIMEOUT_SECONDS="{step}=<seconds>" to allow it longer',
            step=step,
        )
        self.limit_s = limit_s

    def __reduce__(self) -> tuple[object, ...]:  # pickled by Ray: rebuild from the arguments
        return type(self), (self.step, self.limit_s)


class ClientError(VidbriefError):
    """The producer client could not do what was asked."""


class JobTimeout(ClientError, TimeoutError):
    """``Client.wait`` gave up before the job's terminal event."""


class UnknownDeadLetter(ClientError, KeyError):
    """No dead letter has the given id."""

    def __str__(self) -> str:  # KeyError's own str() quotes the message
        return str(self.args[0]) if self.args else ""


class NotReplayable(ClientError, ValueError):
    """The dead letter carries no job request, so there is nothing to put back."""


class BridgeError(VidbriefError):
    """The bridge itself failed (not one of its jobs)."""


class BridgeStartTimeout(BridgeError, TimeoutError):
    """The bridge actor did not become ready in time (its analysis actors never started)."""


class WindowFull(BridgeError, RuntimeError):
    """A job was added to a window with no free slot (a bug in the caller's backpressure)."""


class WebhookError(VidbriefError):
    """Completion webhooks: delivering or verifying one."""


class WebhookAttemptFailed(WebhookError):
    """Raised inside the rq job so that rq schedules the next attempt."""


class WebhookRejected(WebhookError):
    """A received delivery did not verify (forged or altered body, wrong secret, stale)."""
