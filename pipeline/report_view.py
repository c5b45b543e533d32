"""What the report shows, as plain values: the template does no logic.

Each key point is printed with its *evidence*: the quote as found in the transcript now
(:class:`pipeline.grounding.TranscriptIndex`, the same check the brief step made) and the time
it is spoken. A quote that cannot be found is never printed as a quotation (a brief kept from
before grounding, say): the point is shown with "no evidence found in the transcript".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pipeline.context import JobContext
from pipeline.grounding import TranscriptIndex, chapter_shots
from pipeline.keyframes import keyframe_file
from pipeline.models import Analysis, Brief, Chapter, KeyPoint, Media, Notice, Shot
from pipeline.text import clip, language_of, normalise
from pipeline.timing import fmt_time, video_duration

YOUTUBE_HOSTS = frozenset(
    {"youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com", "youtu.be"}
)
OFFLINE_LABEL = "offline extractive brief"
FOOTER_TITLE_CHARS = 70  # one line of the footer at 8 pt
PROVIDER_NAMES = {
    "openai": "OpenAI",
    "deepseek": "DeepSeek",
    "qwen": "Qwen (DashScope)",
    "gemini": "Google Gemini",
    "custom": "a custom endpoint",
}


def _is_http(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https")


def link_at(url: str, seconds: float) -> str | None:
    """The source URL at a time: ``t=`` query for YouTube, a ``#t=`` media fragment else."""
    if not _is_http(url):
        return None
    parts = urlsplit(url)
    t = int(max(0.0, seconds))
    if (parts.hostname or "").lower() in YOUTUBE_HOSTS:
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "t"]
        return urlunsplit(parts._replace(query=urlencode([*query, ("t", f"{t}s")]), fragment=""))
    return urlunsplit(parts._replace(fragment=f"t={t}"))


def written_by(brief: Brief) -> str:
    if brief.offline:
        return f"{OFFLINE_LABEL} (no language model configured)"
    provider = PROVIDER_NAMES.get(brief.provider, brief.provider)
    return f"{brief.model or 'unknown model'} via {provider}"


def result_warnings(analysis: Analysis, brief: Brief) -> list[Notice]:
    """Every warning of the job, analysis first, each code once."""
    seen: set[str] = set()
    out = []
    for notice in [*analysis.warnings, *brief.warnings]:
        if notice.code not in seen:
            seen.add(notice.code)
            out.append(notice)
    return out


def _picture(shot: Shot | None, workdir: Path) -> tuple[str | None, str]:
    path = keyframe_file(shot, workdir) if shot else None
    return (path.as_uri() if path else None), (fmt_time(shot.keyframe_time) if shot else "")


def _chapter(ch: Chapter, shot: Shot | None, url: str, workdir: Path) -> dict[str, Any]:
    thumb, thumb_time = _picture(shot, workdir)
    return {
        "title": ch.title,
        "summary": ch.summary,
        "thumb": thumb,
        "thumb_time": thumb_time,
        "time": f"{fmt_time(ch.start)}–{fmt_time(ch.end)}",
        "link": link_at(url, ch.start),
    }


def _key_point(kp: KeyPoint, index: TranscriptIndex, url: str) -> dict[str, Any]:
    match = index.locate(kp.quote, near=kp.start) if kp.quote.strip() else None
    start = match.start if match else kp.start
    same = match is not None and normalise(match.text) == normalise(kp.text)
    return {
        "time": fmt_time(start),
        "link": link_at(url, start),
        "text": kp.text,
        "evidence": match.text if match else None,
        "evidence_is_text": same,
    }


def build_view(
    ctx: JobContext, media: Media, analysis: Analysis, brief: Brief, created: datetime
) -> dict[str, Any]:
    """Everything the template shows, as plain values."""
    content, url, workdir = brief.content, media.source_url, ctx.workdir
    pictures = chapter_shots(content.chapters, analysis.shots)
    chapters = [
        _chapter(ch, s, url, workdir) for ch, s in zip(content.chapters, pictures, strict=True)
    ]
    index = TranscriptIndex.of(analysis.transcript, language_of(analysis.language))
    first_shot = min(analysis.shots, key=lambda s: s.start, default=None)
    return {
        "lang": brief.language or analysis.language or "en",
        "title": content.title,
        "short_title": clip(content.title, FOOTER_TITLE_CHARS),
        "job_id": ctx.job_id,
        "source_url": url,
        "source_link": url if _is_http(url) else None,
        "duration": fmt_time(video_duration(media, analysis)),
        "created": created.strftime("%d %B %Y, %H:%M UTC"),
        "written_by": written_by(brief),
        "transcript_note": transcript_note(analysis),
        "instructions": ctx.request.instructions,
        "hero": _picture(pictures[0] if pictures else first_shot, workdir)[0],
        "notes": _notes(brief),
        "warnings": [w.message for w in result_warnings(analysis, brief)],
        "summary": [p.strip() for p in content.summary.split("\n\n") if p.strip()],
        "key_points": [_key_point(kp, index, url) for kp in content.key_points],
        "chapters": chapters,
        "transcript": [
            {"time": fmt_time(s.start), "link": link_at(url, s.start), "text": s.text.strip()}
            for s in analysis.transcript
        ],
    }


def transcript_note(analysis: Analysis) -> str:
    """Where the transcript came from, its language (and how sure detection was), its size."""
    if not analysis.transcript:
        return "no speech found"
    source = {"subtitles": "platform subtitles"}.get(
        analysis.transcript_source, f"speech to text ({analysis.transcript_source})"
    )
    language = ""
    if analysis.language:
        language = f", language {analysis.language}"
        if analysis.language_probability is not None:
            language += f" (detected, {analysis.language_probability:.0%} probability)"
    return f"{source}{language}, {len(analysis.transcript)} segments, {len(analysis.shots)} shots"


def _notes(brief: Brief) -> list[str]:
    if not brief.offline:
        return []
    return [
        "This is an offline extractive brief: no language model was configured, so the "
        "summary, key points and chapter summaries are sentences picked from the transcript "
        "and the chapter titles are its most distinctive words."
    ]


def estimated_pages(view: dict[str, Any]) -> int:
    """Pages the report will have, estimated from its parts (before the costly layout)."""
    lines = sum(1 + len(line["text"]) // TRANSCRIPT_CHARS_PER_LINE for line in view["transcript"])
    body = len(view["key_points"]) / KEY_POINTS_PER_PAGE + len(view["chapters"]) / CHAPTERS_PER_PAGE
    return 2 + round(body) + -(-lines // TRANSCRIPT_LINES_PER_PAGE)


# Measured on A4 with the stylesheet (9 pt transcript rows): a safe underestimate per page.
TRANSCRIPT_CHARS_PER_LINE = 95
TRANSCRIPT_LINES_PER_PAGE = 40
KEY_POINTS_PER_PAGE = 8
CHAPTERS_PER_PAGE = 6


def chapter_keyframes(
    chapters: Sequence[Chapter], shots: Sequence[Shot], copied: dict[int, str]
) -> list[str | None]:
    """Each chapter's keyframe as ``result.json`` names it (the same shot the PDF shows)."""
    return [copied.get(s.index) if s else None for s in chapter_shots(chapters, shots)]
