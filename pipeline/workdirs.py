"""The work folder on one node: ``<work_dir>/<job_id>/`` per job, scratch that is deleted.

A job's folder holds its video, the audio extracted from it and its keyframes: up to
``VIDBRIEF_MAX_DOWNLOAD_MB`` and more. What later jobs reuse is kept elsewhere (the artefact
store, :mod:`pipeline.kept`), so a folder is needed only while its job runs. The bridge runs
these functions on each node a job touched once the job's outcome is stored, and at start on
every node for folders no running job owns (:mod:`raybridge.cleanup`); ``run-local`` deletes its
own. Plain functions of paths: no Ray, no Redis.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from ingest.models import JOB_ID_PATTERN

_JOB_ID = re.compile(JOB_ID_PATTERN)


def job_folders(work_dir: str, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
    """Each job folder's name and the seconds since anything in it last changed; names in
    ``exclude`` are not jobs (an artefact store configured inside the work folder)."""
    now = time.time()
    return [(p.name, max(0.0, now - _newest_mtime(p))) for p in _job_paths(work_dir, exclude)]


def jobs_bytes(work_dir: str, exclude: Iterable[str] = ()) -> int:
    """Bytes the job folders hold (what the work folder's life cycle bounds)."""
    return sum(folder_bytes(p) for p in _job_paths(work_dir, exclude))


def _job_paths(work_dir: str, exclude: Iterable[str]) -> list[Path]:
    skip = set(exclude)
    try:
        children = list(os.scandir(Path(work_dir).expanduser()))
    except FileNotFoundError:
        return []
    return [
        Path(c.path)
        for c in children
        if c.is_dir(follow_symlinks=False) and _JOB_ID.fullmatch(c.name) and c.name not in skip
    ]


def store_inside(work_dir: str, artefacts: str) -> list[str]:
    """The name of the artefact store's folder when it lies directly in the work folder."""
    store = Path(artefacts).expanduser().absolute()
    inside = store.parent == Path(work_dir).expanduser().absolute()
    return [store.name] if inside else []


def remove_job_folders(work_dir: str, job_ids: list[str]) -> int:
    """Delete these jobs' folders; return the bytes they held. Ids that are not job ids (and
    could name something else) are ignored."""
    root, freed = Path(work_dir).expanduser(), 0
    for job_id in job_ids:
        if not _JOB_ID.fullmatch(job_id):
            continue
        folder = root / job_id
        if folder.is_dir() and not folder.is_symlink():
            freed += folder_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
    return freed


def folder_bytes(path: str | Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it does not exist)."""
    total = 0
    for folder, _dirs, files in os.walk(Path(path).expanduser()):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:  # removed while we walked
                continue
    return total


def _newest_mtime(path: Path) -> float:
    newest = _mtime(path)
    for folder, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            newest = max(newest, _mtime(Path(folder) / name))
    return newest


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0
