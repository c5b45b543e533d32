"""The download step in a child process: bounds on the process, for what no read check sees.

:mod:`pipeline.fetch` bounds every byte and second it reads. What it cannot bound from the
inside — a parser busy on a hostile page, a name lookup that hangs, a library stuck in C, an
allocation nobody counted — is bounded here, on the process that runs it:

- **memory**: the child sets ``RLIMIT_AS`` to its size after start-up plus
  ``VIDBRIEF_DOWNLOAD_MEMORY_MB``; an allocation past it fails (``MemoryError``, a permanent
  error naming the setting) instead of taking the node's memory;
- **time**: the parent kills the child (SIGKILL) ``DEADLINE_GRACE_S`` after the download's own
  deadline (``VIDBRIEF_DOWNLOAD_TIMEOUT_SECONDS``) and removes what it left behind;
- **programs**: an audit hook in the child refuses every process start (subprocess, exec,
  spawn, fork). download.py already keeps yt-dlp to its in-process downloaders; this is the
  net under that;
- **orphans**: a child whose parent died (a worker killed by Ray) exits within
  ``PARENT_CHECK_S``; the next attempt removes what it left.

The request goes to the child as JSON on stdin; the child answers one JSON object on stdout
(whatever else it prints goes to stderr: the worker's log) and, on success, leaves
``media.json`` in the work folder as :func:`pipeline.fetch.download` always does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.errors import PermanentStepError, RetryableStepError, StepError
from pipeline.fetch import (
    STEP,
    DownloadLimits,
    _finished,
    _remove_stale_partials,
    download,
)
from pipeline.models import Media

__all__ = ["DEADLINE_GRACE_S", "ChildRun", "download_isolated", "forbid_programs", "spawn"]

log = logging.getLogger(__name__)

DEADLINE_GRACE_S = 1.5  # after its own deadline the child has this long to report, then dies
POLL_S = 0.02  # how often the parent looks whether the child has ended
PARENT_CHECK_S = 0.5  # how often the child looks whether its parent is still there
KIB = 1024
_CREDENTIAL_NAME = re.compile(
    r"(?i)^(VIDBRIEF_|AWS_|OPENAI_|AZURE_|GOOGLE_)|KEY|SECRET|TOKEN|PASSW|CREDENTIAL"
)
_REFUSED_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork"}
    | {"os.forkpty", "os.startfile", "pty.spawn"}
)


@dataclass(frozen=True)
class ChildRun:
    """How one child download ended, and what it cost."""

    outcome: dict[str, Any] | None  # what the child reported; None when it never did
    exit_code: int
    killed: bool  # by us, at the hard deadline
    wall_s: float
    peak_rss_bytes: int | None  # the child's resident high-water mark (VmHWM), if known
    start_rss_bytes: int | None  # the same after its start-up, before the download


def download_isolated(
    url: str,
    workdir: Path,
    limits: DownloadLimits,
    *,
    allow_private: bool,
    language: str,
    memory_bytes: int,
) -> Media:
    """:func:`pipeline.fetch.download` in a child process (same errors, same result)."""
    workdir = Path(workdir)
    done = _finished(workdir)
    if done is not None:
        return done
    request = {"allow_private": allow_private, "language": language}
    child = spawn(url, workdir, limits, memory_bytes=memory_bytes, **request)
    log.info(
        "download process: %.2f s, peak memory %s%s",
        child.wall_s,
        _mb(child.peak_rss_bytes),
        " (killed at the deadline)" if child.killed else "",
    )
    return _result(child, workdir, limits, memory_bytes)


def spawn(
    url: str,
    workdir: Path,
    limits: DownloadLimits,
    *,
    allow_private: bool,
    language: str,
    memory_bytes: int,
) -> ChildRun:
    """Run one download in a child process; kill it if it outlives its deadline."""
    started = time.monotonic()
    kill_at = started + limits.timeout_s + DEADLINE_GRACE_S
    request = {
        "url": url,
        "workdir": str(workdir),
        "limits": dataclasses.asdict(limits),
        # CLOCK_MONOTONIC is one clock for the whole machine (Linux): the child's start-up
        # counts against the download's time.
        "deadline": started + limits.timeout_s,
        "allow_private": allow_private,
        "language": language,
        "memory_bytes": memory_bytes,
        "parent_pid": os.getpid(),  # a parent dead before the child looks is seen too
    }
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout:
        stdin.write(json.dumps(request).encode())
        stdin.seek(0)
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=stdin, stdout=stdout, env=_child_env()
        )
        status, killed, seen_rss = _wait(proc, kill_at)
        stdout.seek(0)
        outcome = _parse_outcome(stdout.read())
    if killed or outcome is None:
        _remove_stale_partials(workdir)  # it could not clean up after itself
    reported = (outcome or {}).get("peak_rss_bytes")
    return ChildRun(
        outcome=outcome,
        exit_code=os.waitstatus_to_exitcode(status),
        killed=killed,
        wall_s=time.monotonic() - started,
        peak_rss_bytes=max(filter(None, (seen_rss, reported)), default=None),
        start_rss_bytes=(outcome or {}).get("start_rss_bytes"),
    )


def _child_env() -> dict[str, str]:
    """The parent's environment without credentials; our packages first on the path.

    The child parses hostile input and needs no secret: its request carries all it uses.
    """
    env = {k: v for k, v in os.environ.items() if not _CREDENTIAL_NAME.search(k)}
    root = str(Path(__file__).resolve().parents[1])  # wherever Ray shipped the packages
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["MALLOC_ARENA_MAX"] = "2"  # each malloc arena reserves address space: keep them few
    return env


def _wait(proc: subprocess.Popen, kill_at: float) -> tuple[int, bool, int | None]:
    """(wait status, killed, last peak RSS seen): wait; SIGKILL the child at ``kill_at``."""
    killed, seen = False, None
    while True:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            break
        seen = _rss_high_water(proc.pid) or seen
        if time.monotonic() >= kill_at:
            # Not yet reaped, so the PID is still this child's: the kill cannot go astray.
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            _, status = os.waitpid(proc.pid, 0)
            break
        time.sleep(POLL_S)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return status, killed, seen


def _proc_status_kib(field: str, pid: int | str = "self") -> int | None:
    """A kB field of ``/proc/<pid>/status`` (Linux), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rss_high_water(pid: int | str = "self") -> int | None:
    """Peak resident memory of a process in bytes: ``VmHWM``, which counts its own program
    since exec (``ru_maxrss`` would include the parent it was forked from)."""
    kib = _proc_status_kib("VmHWM", pid)
    return kib * KIB if kib is not None else None


def _mb(n_bytes: int | None) -> str:
    return "unknown" if n_bytes is None else f"{n_bytes / KIB**2:.0f} MB"


def _parse_outcome(raw: bytes) -> dict[str, Any] | None:
    try:
        outcome = json.loads(raw)
    except ValueError:
        return None
    return outcome if isinstance(outcome, dict) else None


def _result(child: ChildRun, workdir: Path, limits: DownloadLimits, memory_bytes: int) -> Media:
    """The Media the child left, or its error as ours."""
    error = (child.outcome or {}).get("error")
    if error:
        cls = RetryableStepError if error.get("retryable") else PermanentStepError
        raise cls(str(error.get("message")), step=STEP)
    media = _finished(workdir) if child.outcome is not None else None
    if media is not None:
        return media
    if child.killed:
        raise RetryableStepError(
            f"download timed out: stopped {limits.timeout_s + DEADLINE_GRACE_S:.0f} s after it "
            "began (VIDBRIEF_DOWNLOAD_TIMEOUT_SECONDS)",
            step=STEP,
        )
    raise RetryableStepError(
        f"the download process ended without a result (exit {child.exit_code}, peak memory "
        f"{_mb(child.peak_rss_bytes)}; the limit is {_mb(memory_bytes)} over its start-up, "
        "VIDBRIEF_DOWNLOAD_MEMORY_MB)",
        step=STEP,
    )


# --------------------------------------------------------------------------- the child


def forbid_programs() -> None:
    """From now on, this process starts no other program (an audit hook; it cannot be undone)."""

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in _REFUSED_EVENTS:
            what = args[0] if args else ""
            raise PermissionError(f"the download process starts no programs (refused {what!r})")

    sys.addaudithook(hook)


def _limit_memory(extra_bytes: int) -> None:
    """Cap the address space at its present size plus ``extra_bytes`` (Linux; else a log)."""
    size_kib = _proc_status_kib("VmSize")
    if size_kib is None:
        log.warning("no /proc/self/status: the download process runs without a memory limit")
        return
    limit = size_kib * KIB + extra_bytes
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _exit_with_parent(parent: int) -> None:
    """End this process soon after ``parent`` ends (it is then adopted: the PID changes)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _child_download(request: dict[str, Any]) -> dict[str, Any]:
    from ingest.urlsafety import AddressPolicy

    left = float(request["deadline"]) - time.monotonic()
    limits = dataclasses.replace(DownloadLimits(**request["limits"]), timeout_s=left)
    try:
        download(
            request["url"],
            Path(request["workdir"]),
            limits,
            policy=AddressPolicy.create(allow_private=request["allow_private"]),
            language=request["language"],
        )
    except StepError as e:
        return {"error": e.to_dict()}
    return {"ok": True}


def main() -> int:
    """The child: read the request, bound this process, download, answer."""
    import av  # noqa: F401 (loaded before the memory limit is measured: part of the start-up)

    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not spoil the answer
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    request = json.load(sys.stdin)
    _exit_with_parent(int(request["parent_pid"]))
    start_rss = _rss_high_water()
    _limit_memory(int(request["memory_bytes"]))
    forbid_programs()
    outcome = _child_download(request)
    outcome |= {"start_rss_bytes": start_rss, "peak_rss_bytes": _rss_high_water()}
    answer.write(json.dumps(outcome))
    answer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
