"""How long a video is, before choosing where it goes: a metadata probe, no byte of media.

The bridge places a job by its expected GPU seconds (the video's duration × the node's measured
analysis seconds per media second), so it asks this module for the duration first:

- **real**: yt-dlp's ``extract_info`` (no download) through the download step's own guard —
  :class:`pipeline.fetch._GuardedYoutubeDL`: every address checked, every response counted
  against its cap, one deadline — and its checks of what is known before the body
  (``_check_info``, ``_check_size_and_duration``: a direct media URL is probed from a few ranged
  reads of its first and last bytes, as the download does). A video over
  ``VIDBRIEF_MAX_DURATION_SECONDS`` or ``VIDBRIEF_MAX_DOWNLOAD_MB`` is refused here, before any
  download: :class:`~ingest.errors.PermanentStepError`, the job fails. Like the download, it
  runs in a child process with the memory limit, no programs, killed at its deadline
  (:mod:`pipeline.download_process`'s machinery). Its deadline is ``PROBE_TIMEOUT_S``.
- **synthetic**: the duration the job's synthetic analysis stands for (analyse seconds ÷
  ``SYNTHETIC_PACE``), off by a deterministic error of up to ``VIDBRIEF_SYNTHETIC_PROBE_ERROR``
  (±20 % by default), so that benchmarks measure the real decision with an imperfect estimate.

Anything else that goes wrong gives ``None``: the job is placed as without a probe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from ingest.errors import PermanentStepError, RetryableStepError, StepError
from ingest.names import ANALYSE_STEP
from ingest.settings import Settings
from pipeline.context import JobContext

__all__ = ["PROBE_TIMEOUT_S", "SYNTHETIC_PACE", "probe", "probe_duration", "synthetic_duration_s"]

log = logging.getLogger(__name__)

#: Longest a probe may take (the page, the metadata, a few ranged reads), child start included.
PROBE_TIMEOUT_S = 30.0
#: A synthetic video is this many analysis seconds per media second long.
SYNTHETIC_PACE = 0.1
_ERROR_BITS = 64


def probe_duration(ctx: JobContext) -> float | None:
    """The video's duration in seconds, or None when the probe cannot tell.

    Raises PermanentStepError for a video the download would refuse (too long, too large,
    refused address, a playlist or a live stream).
    """
    if ctx.settings.step_mode == "synthetic":
        return synthetic_duration_s(ctx.settings, ctx.job_id)
    try:
        return probe_isolated(ctx.request.url, ctx.settings)
    except PermanentStepError:
        raise
    except Exception as e:  # the download will tell; placement goes on without a length
        log.info("job %s: probe gave no duration (%s)", ctx.job_id, e)
        return None


def synthetic_duration_s(settings: Settings, job_id: str) -> float:
    """The synthetic video's length as a probe would report it: true length ± the error."""
    from pipeline.chain import synthetic_duration

    true_s = synthetic_duration(settings, job_id, ANALYSE_STEP) / SYNTHETIC_PACE
    digest = hashlib.blake2b(f"{job_id}\x00probe".encode(), digest_size=_ERROR_BITS // 8)
    u = 2 * int.from_bytes(digest.digest(), "big") / (2**_ERROR_BITS - 1) - 1
    return max(0.0, true_s * (1 + settings.synthetic_probe_error * u))


# --------------------------------------------------------------------------- in the child


def probe(url: str, limits: Any, policy: Any) -> float | None:
    """The duration from the guarded yt-dlp's metadata (no media fetched); the download's
    checks refuse what it would refuse."""
    from pipeline import fetch as dl

    deadline = time.monotonic() + limits.timeout_s
    bounds = limits.read_bounds(deadline)
    with tempfile.TemporaryDirectory(prefix="vidbrief-probe-") as staging:
        params = dl._ydl_params(dl.Path(staging), limits, dl.DEFAULT_LANGUAGE, deadline)
        params |= {"writesubtitles": False, "writeautomaticsub": False}
        with dl._GuardedYoutubeDL(params, policy, bounds) as ydl:
            try:
                info = ydl.extract_info(url, download=False)
                dl._check_info(info)
                with bounds.reading(dl.MEDIA):
                    dl._check_size_and_duration(ydl, info, limits)
            except StepError:
                raise
            except Exception as e:
                raise dl._classify(e, url) from e
    duration = info.get("duration")
    return float(duration) if duration else None


def probe_isolated(url: str, settings: Settings) -> float | None:
    """:func:`probe` in a child process bounded like the download's."""
    from pipeline.download_process import DEADLINE_GRACE_S, _child_env, _parse_outcome, _wait
    from pipeline.fetch import BYTES_PER_MB, DownloadLimits

    limits = dataclasses.replace(
        DownloadLimits.from_settings(settings),
        timeout_s=min(PROBE_TIMEOUT_S, settings.download_timeout_seconds),
    )
    request = {
        "url": url,
        "limits": dataclasses.asdict(limits),
        "allow_private": settings.allow_private_urls,
        "memory_bytes": int(settings.download_memory_mb * BYTES_PER_MB),
        "parent_pid": os.getpid(),
    }
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout:
        stdin.write(json.dumps(request).encode())
        stdin.seek(0)
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=stdin, stdout=stdout, env=_child_env()
        )
        _, killed, _ = _wait(proc, time.monotonic() + limits.timeout_s + DEADLINE_GRACE_S)
        stdout.seek(0)
        outcome = _parse_outcome(stdout.read()) or {}
    error = outcome.get("error")
    if error:
        cls = RetryableStepError if error.get("retryable") else PermanentStepError
        raise cls(str(error.get("message")), step=str(error.get("step") or ""))
    if killed or "duration" not in outcome:
        raise RetryableStepError("the probe process ended without a result")
    return outcome["duration"]


def _child(request: dict[str, Any]) -> dict[str, Any]:
    from ingest.urlsafety import AddressPolicy
    from pipeline.fetch import DownloadLimits

    try:
        duration = probe(
            request["url"],
            DownloadLimits(**request["limits"]),
            AddressPolicy.create(allow_private=request["allow_private"]),
        )
    except StepError as e:
        return {"error": e.to_dict()}
    return {"duration": duration}


def main() -> int:
    """The child: bound this process as the download's child is bound, probe, answer."""
    from pipeline.download_process import _exit_with_parent, _limit_memory, forbid_programs

    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    request = json.load(sys.stdin)
    _exit_with_parent(int(request["parent_pid"]))
    import av  # noqa: F401 (part of the start-up, before the memory limit is measured)

    _limit_memory(int(request["memory_bytes"]))
    forbid_programs()
    answer.write(json.dumps(_child(request)))
    answer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
