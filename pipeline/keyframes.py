"""Keyframes beside the report: ``<reports_url>/<job_id>/keyframes/shot_0000.jpg``.

The analysis writes keyframes into the job's work folder on the node that analysed it; readers
of ``result.json`` need them where the report is. They are copied through
:mod:`pipeline.storage` (a path or any fsspec URL) and named in ``result.json`` relative to it.
Only files inside the job's own folder are read (a keyframe path pointing elsewhere is skipped).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pipeline import storage
from pipeline.models import Shot

FOLDER = "keyframes"


def keyframe_file(shot: Shot, workdir: Path) -> Path | None:
    """The shot's keyframe if it exists inside the job's folder (the only place we read)."""
    path = Path(shot.keyframe_path)
    path = Path(os.path.realpath(path if path.is_absolute() else workdir / path))
    inside = path.is_relative_to(Path(os.path.realpath(workdir)))
    return path if inside and path.is_file() else None


def relative_name(shot: Shot, source: Path) -> str:
    """Where a shot's keyframe goes, relative to ``result.json``."""
    return f"{FOLDER}/shot_{shot.index:04d}{source.suffix.lower() or '.jpg'}"


def copy_keyframes(
    reports_url: str, job_id: str, shots: Sequence[Shot], workdir: Path
) -> dict[int, str]:
    """Copy every shot's keyframe beside the report; shot index → path relative to result.json."""
    copied: dict[int, str] = {}
    for shot in shots:
        source = keyframe_file(shot, workdir)
        if source is None:
            continue
        name = relative_name(shot, source)
        storage.write_bytes(reports_url, f"{job_id}/{name}", source.read_bytes())
        copied[shot.index] = name
    return copied
