"""What every step receives: the job, the settings, and where its files live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ingest.models import JobRequest
from ingest.settings import Settings


@dataclass(frozen=True)
class JobContext:
    """One job as the steps see it. Small and picklable: Ray ships it to every task."""

    job_id: str
    request: JobRequest
    settings: Settings
    attempt: int = 1
    #: Seconds each earlier step took (filled in for the report step, which records them).
    step_seconds: dict[str, float] | None = None

    @property
    def workdir(self) -> Path:
        """This job's private folder on the node running the step."""
        return Path(self.settings.work_dir).expanduser().absolute() / self.job_id

    def step_dir(self, step: str) -> Path:
        """A step's artefact folder (created on demand)."""
        path = self.workdir / step
        path.mkdir(parents=True, exist_ok=True)
        return path
