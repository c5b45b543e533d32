"""What every step receives: the job, the settings, and where its files live."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from ingest.models import JobRequest
from ingest.settings import Settings
from pipeline.hooks import StepHooks


@dataclass(frozen=True)
class JobContext:
    """One job as the steps see it. Small and picklable: Ray ships it to every task."""

    job_id: str
    request: JobRequest
    settings: Settings
    attempt: int = 1
    #: Seconds each earlier step took (filled in for the report step, which records them).
    step_seconds: dict[str, float] | None = None
    #: The earlier steps whose outputs were reused from kept ones (for the report step too).
    reused_steps: tuple[str, ...] = ()
    #: Progress and cancel callbacks of the process running the step (pipeline/hooks.py); set
    #: there, never pickled: a context that travels arrives without them.
    hooks: StepHooks = field(default_factory=StepHooks, compare=False, repr=False)
    #: Steps that run again even where a kept output exists (a job moved to another node).
    fresh: frozenset[str] = frozenset()

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray pickles the context into each of a job's tasks, and the settings are most of its
        # bytes and time. They travel as a blob pickled once per Settings object by the sender
        # and unpickled once per distinct blob by each worker process.
        blob = _settings_blob(self.settings)
        return _rebuild, (
            self.job_id,
            self.request,
            blob,
            self.attempt,
            self.step_seconds,
            self.reused_steps,
            self.fresh,
        )

    @cached_property  # asked by every step twice or more; not pickled, so found again on arrival
    def workdir(self) -> Path:
        """This job's private folder on the node running the step."""
        return Path(self.settings.work_dir).expanduser().absolute() / self.job_id

    def step_dir(self, step: str) -> Path:
        """A step's artefact folder (created on demand)."""
        path = self.workdir / step
        path.mkdir(parents=True, exist_ok=True)
        return path


def _rebuild(
    job_id: str,
    request: JobRequest,
    settings_blob: bytes,
    attempt: int,
    step_seconds: dict[str, float] | None,
    reused_steps: tuple[str, ...] = (),
    fresh: frozenset[str] = frozenset(),
) -> JobContext:
    settings = settings_from_blob(settings_blob)
    return JobContext(job_id, request, settings, attempt, step_seconds, reused_steps, fresh=fresh)


#: The Settings object pickled last and its bytes. A process (the bridge) holds one Settings
#: for its life, and nothing assigns to a Settings once made, so the bytes stay right.
_last_sent: tuple[Settings, bytes] | None = None


def _settings_blob(settings: Settings) -> bytes:
    global _last_sent
    last = _last_sent
    if last is None or last[0] is not settings:
        # Plain pickle: Settings is importable, and cloudpickle's pure-Python pickler is
        # several times slower on it.
        last = _last_sent = (settings, pickle.dumps(settings, pickle.HIGHEST_PROTOCOL))
    return last[1]


@lru_cache(maxsize=8)
def settings_from_blob(blob: bytes) -> Settings:
    """The Settings in ``blob``, one shared object per distinct blob in this process."""
    return pickle.loads(blob)
