"""Times of a video: its duration as best known, and how a time is written (``0:05``)."""

from __future__ import annotations

from pipeline.models import Analysis, Media


def video_duration(media: Media, analysis: Analysis) -> float:
    """Best known duration in seconds: analysis, media, else the last transcript or shot end."""
    ends = [s.end for s in analysis.transcript] + [s.end for s in analysis.shots]
    return float(analysis.duration_s or media.duration_s or max(ends, default=0.0))


def fmt_time(seconds: float) -> str:
    """``0:05``, ``12:34``, ``1:02:03``."""
    total = int(max(0.0, seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
