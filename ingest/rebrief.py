"""``vidbrief rebrief``: a new job for the video of an earlier one, with other instructions or
another language.

The new request is the earlier job's URL with the new instructions and language (each kept
from the earlier job when not given) under a new job id; nothing else of it is copied (its
webhook is the earlier producer's). The bridge then finds the kept analysis of that video and
runs only brief and report (raybridge/reuse.py). Another ``language`` is also another hint for
the spoken language: the analysis is reused when the speech was detected surely in a language
(any hint would have been overruled), else analysed again.
"""

from __future__ import annotations

from ingest.errors import InvalidRequest
from ingest.models import JobRequest, JobState, parse_request

__all__ = ["reanalysed_because", "rebrief_request"]


def rebrief_request(
    earlier: JobState,
    *,
    instructions: str | None = None,
    language: str | None = None,
    job_id: str | None = None,
    producer: str | None = None,
) -> JobRequest:
    """The request of a re-brief of ``earlier`` (a new job id when none is given)."""
    before = earlier.request or {}
    url = before.get("url") or earlier.url
    if not url:
        raise InvalidRequest(f"job {earlier.job_id} has no URL to brief again")
    if job_id == earlier.job_id:
        raise InvalidRequest(f"--job-id must name a new job, not {earlier.job_id} itself")
    fields = {
        "url": url,
        "job_id": job_id,
        "instructions": instructions if instructions is not None else before.get("instructions"),
        "language": language if language is not None else before.get("language"),
        "producer": producer,
    }
    return parse_request({k: v for k, v in fields.items() if v is not None}).with_job_id()


def reanalysed_because(earlier: JobState, request: JobRequest) -> str | None:
    """Why the re-brief may not reuse the earlier analysis, when that is already known."""
    if not earlier.status.finished:
        return f"job {earlier.job_id} is {earlier.status}: its analysis may not be kept yet"
    return None
