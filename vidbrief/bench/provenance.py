"""What a benchmark ran on: the code measured and how busy the machine was.

Ray workers import the bridge's code from disk when they start, so an edit made during a run
changes what the rest of the run measures; the digest is taken at both ends to catch that.
The load average says how much the neighbours took (this machine is shared, 2 cores).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: The code whose speed the benchmarks measure.
MEASURED = ("raybridge", "pipeline/chain.py", "pipeline/context.py", "ingest/settings.py")


def code_digest() -> str:
    """sha256 (12 hex digits) over the measured source files, in path order."""
    digest = hashlib.sha256()
    for name in MEASURED:
        path = ROOT / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def git_head() -> str | None:
    """The commit checked out (read-only ``git rev-parse``), None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def snapshot() -> dict[str, Any]:
    return {"code_digest": code_digest(), "load_avg_1m": round(os.getloadavg()[0], 2)}


def provenance(before: dict[str, Any]) -> dict[str, Any]:
    """Start and end snapshots, the commit, and whether the measured code changed meanwhile."""
    after = snapshot()
    return {
        "git_head": git_head(),
        "code_digest": before["code_digest"],
        "code_changed_during_run": after["code_digest"] != before["code_digest"],
        "load_avg_1m_start": before["load_avg_1m"],
        "load_avg_1m_end": after["load_avg_1m"],
        "cpus": os.cpu_count(),
    }
