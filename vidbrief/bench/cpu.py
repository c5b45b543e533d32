"""CPU seconds spent by this benchmark's own processes, by role: a machine-independent cost.

Throughput on a shared 2-core machine says as much about the neighbours as about the code;
CPU time per job does not. Every process this driver started is a descendant of it (the
simulated Ray nodes: GCS, raylets, workers, actors; the redis-server; an rq worker), so the
meter sums ``user + system`` over the descendants alive at both ends, grouped by role, plus
what finished children left in ``RUSAGE_CHILDREN`` (an rq burst worker and its forks).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import resource
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: Substrings of a process's command line (or title) → its role; first match wins.
ROLES = (
    ("Bridge", "bridge actor"),
    ("Analyser", "analysis actor"),
    ("raylet", "raylet"),
    ("gcs_server", "gcs"),
    ("redis-server", "redis-server"),
    ("vidbrief.bench.rqjobs", "rq worker"),
    ("celery", "celery workers"),
    ("ray::", "ray workers"),
)


def _role(cmdline: str) -> str:
    return next((role for key, role in ROLES if key in cmdline), "other")


def _psutil() -> Any:
    """psutil as Ray bundles it (ray/thirdparty_files joins sys.path when Ray is imported)."""
    import ray  # noqa: F401

    return importlib.import_module("psutil")


def _snapshot() -> dict[int, tuple[str, float]]:
    psutil = _psutil()

    out: dict[int, tuple[str, float]] = {}
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            out[proc.pid] = (_role(" ".join(proc.cmdline())), times.user + times.system)
    return out


def _reaped() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _driver() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class CpuMeter:
    """Seconds of CPU by role between ``start`` and ``stop``."""

    by_role: Counter[str] = field(default_factory=Counter)

    @property
    def total_s(self) -> float:
        return sum(self.by_role.values())

    def per_job_ms(self, jobs: int) -> dict[str, float]:
        shares = {role: 1000 * s / jobs for role, s in sorted(self.by_role.items())}
        return {**shares, "total": 1000 * self.total_s / jobs}


@contextlib.contextmanager
def cpu_meter(*, include_driver: bool) -> Iterator[CpuMeter]:
    """Measure the block. ``include_driver``: count this process too (it submits raw Ray)."""
    meter = CpuMeter()
    before, reaped, driver = _snapshot(), _reaped(), _driver()
    yield meter
    after = _snapshot()
    for pid, (role, seconds) in after.items():
        meter.by_role[role] += seconds - before.get(pid, (role, 0.0))[1]
    if _reaped() - reaped > 0:
        meter.by_role["exited children"] += _reaped() - reaped
    if include_driver:
        meter.by_role["driver"] += _driver() - driver
