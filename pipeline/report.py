"""Step ``report``: the PDF report and ``result.json`` of one job.

Jinja2 (autoescape on: LLM output is text, never markup) → WeasyPrint, tagged PDF/UA-1 when it
renders (else a plain PDF that says so). WeasyPrint reads resources only through
:class:`JobFileFetcher`: ``file:`` URLs inside the job's own folder and ``data:`` URLs, nothing
else — no http (no requests to anything the brief names), no other files (no ``/etc/passwd``
as an attachment). Both files go to ``<reports_url>/<job_id>/`` through :func:`_write_output`
(a path or an fsspec URL, see :mod:`pipeline.storage`), each written so that no reader sees half
of it, ``result.json`` last (it marks completion).
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from urllib.request import url2pathname

from ingest.errors import ConfigError, PermanentStepError
from ingest.names import REPORT_STEP
from pipeline import storage
from pipeline.brief import clip, fmt_time, video_duration
from pipeline.context import JobContext
from pipeline.models import Analysis, Brief, Media, Notice, ReportFiles, Shot

if TYPE_CHECKING:
    from weasyprint.urls import URLFetcher

log = logging.getLogger(__name__)

STEP = REPORT_STEP
TEMPLATES_DIR = Path(__file__).parent / "templates"
TEMPLATE = "report.html.j2"
STYLESHEET = "report.css"
REPORT_NAME = "report.pdf"
RESULT_NAME = "result.json"
RESULT_SCHEMA_VERSION = 1
PDF_VARIANT = "pdf/ua-1"
MAX_RESOURCE_BYTES = 50 * 1024 * 1024  # a keyframe larger than this is not embedded
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


def run(
    ctx: JobContext,
    media: Media,
    analysis: Analysis,
    brief: Brief,
    timings: dict[str, float] | None = None,
) -> ReportFiles:
    """Render ``report.pdf`` and write it with ``result.json`` under the reports location."""
    created = datetime.now(UTC)
    started = time.perf_counter()
    pdf, pages, tagged = render_pdf(ctx, media, analysis, brief, created)
    render_s = time.perf_counter() - started
    reports_url = ctx.settings.reports_url
    report_url = _write_output(reports_url, ctx.job_id, REPORT_NAME, pdf)
    report_info = {
        "url": report_url,
        "pages": pages,
        "tagged": tagged,
        "render_seconds": round(render_s, 3),
    }
    timings = timings if timings is not None else ctx.step_seconds
    result = build_result(ctx, media, analysis, brief, created, report_info, timings)
    data = json.dumps(result, ensure_ascii=False, indent=2).encode()
    result_url = _write_output(reports_url, ctx.job_id, RESULT_NAME, data)
    log.info("job %s: report of %d pages in %.2f s at %s", ctx.job_id, pages, render_s, report_url)
    return ReportFiles(report_url=report_url, result_url=result_url, pages=pages)


# --- output ---------------------------------------------------------------------------------


def _write_output(reports_url: str, job_id: str, name: str, data: bytes) -> str:
    """Write ``<reports_url>/<job_id>/<name>`` atomically (a path or fsspec URL); return where."""
    try:
        return storage.write_bytes(reports_url, f"{job_id}/{name}", data)
    except ConfigError as e:
        raise ConfigError(f"VIDBRIEF_REPORTS_URL: {e}") from e


# --- the URL fetcher ------------------------------------------------------------------------


def job_file_fetcher(roots: Iterable[Path]) -> URLFetcher:
    """A WeasyPrint fetcher that reads only files under ``roots`` (and ``data:`` URLs)."""
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class JobFileFetcher(URLFetcher):
        """``file:`` inside the roots, ``data:``; everything else raises (so is not embedded)."""

        def __init__(self, allowed: Iterable[Path]) -> None:
            super().__init__(allowed_protocols={"file", "data"}, allow_redirects=False)
            self.roots = tuple(Path(os.path.realpath(r)) for r in allowed)

        def fetch(self, url: str, headers: dict[str, str] | None = None) -> URLFetcherResponse:
            scheme = urlsplit(url).scheme.lower()
            if scheme == "data":
                return super().fetch(url, headers)
            if scheme != "file":
                raise PermissionError(f"report: refused {scheme or 'relative'} URL {url[:200]!r}")
            path = allowed_file(url, self.roots)
            return URLFetcherResponse(
                url=path.as_uri(),
                body=path.read_bytes(),
                headers={
                    "Content-Type": mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                },
            )

    return JobFileFetcher(roots)


def allowed_file(url: str, roots: Sequence[Path]) -> Path:
    """The real path of a ``file:`` URL if it is a small regular file under one of ``roots``."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise PermissionError(f"report: refused file URL on host {parts.netloc!r}")
    # realpath resolves symlinks and "..", so a link inside the job folder cannot point out.
    path = Path(os.path.realpath(url2pathname(parts.path)))
    if not any(path.is_relative_to(root) for root in roots):
        raise PermissionError(f"report: refused {path}: outside the job's folder")
    if not path.is_file() or path.stat().st_size > MAX_RESOURCE_BYTES:
        raise PermissionError(f"report: refused {path}: not a regular file under the size cap")
    return path


# --- the view -------------------------------------------------------------------------------


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


def keyframe_file(shot: Shot, workdir: Path) -> Path | None:
    """The shot's keyframe if it exists inside the job's folder (the only place we read)."""
    path = Path(shot.keyframe_path)
    path = Path(os.path.realpath(path if path.is_absolute() else workdir / path))
    inside = path.is_relative_to(Path(os.path.realpath(workdir)))
    return path if inside and path.is_file() else None


def nearest_shot(shots: Sequence[Shot], seconds: float) -> Shot | None:
    """The shot whose keyframe is nearest ``seconds`` (earlier wins a tie)."""
    return min(shots, key=lambda s: (abs(s.keyframe_time - seconds), s.start), default=None)


def _thumb(shots: Sequence[Shot], seconds: float, workdir: Path) -> tuple[str | None, str]:
    shot = nearest_shot(shots, seconds)
    path = keyframe_file(shot, workdir) if shot else None
    return (path.as_uri() if path else None), (fmt_time(shot.keyframe_time) if shot else "")


def written_by(brief: Brief) -> str:
    if brief.offline:
        return f"{OFFLINE_LABEL} (no language model configured)"
    provider = PROVIDER_NAMES.get(brief.provider, brief.provider)
    return f"{brief.model or 'unknown model'} via {provider}"


def build_view(
    ctx: JobContext, media: Media, analysis: Analysis, brief: Brief, created: datetime
) -> dict[str, Any]:
    """Everything the template shows, as plain values (the template does no logic)."""
    content, url, workdir = brief.content, media.source_url, ctx.workdir
    chapters = []
    for ch in content.chapters:
        thumb, thumb_time = _thumb(analysis.shots, ch.start, workdir)
        chapters.append(
            {
                "title": ch.title,
                "summary": ch.summary,
                "thumb": thumb,
                "thumb_time": thumb_time,
                "time": f"{fmt_time(ch.start)}–{fmt_time(ch.end)}",
                "link": link_at(url, ch.start),
            }
        )
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
        "transcript_note": _transcript_note(analysis),
        "instructions": ctx.request.instructions,
        "hero": chapters[0]["thumb"] if chapters else _thumb(analysis.shots, 0, workdir)[0],
        "notes": _notes(brief),
        "warnings": [w.message for w in result_warnings(analysis, brief)],
        "summary": [p.strip() for p in content.summary.split("\n\n") if p.strip()],
        "key_points": [
            {
                "time": fmt_time(kp.start),
                "link": link_at(url, kp.start),
                "text": kp.text,
                "quote": kp.quote.strip(),
            }
            for kp in content.key_points
        ],
        "chapters": chapters,
        "transcript": [
            {"time": fmt_time(s.start), "link": link_at(url, s.start), "text": s.text.strip()}
            for s in analysis.transcript
        ],
    }


def _transcript_note(analysis: Analysis) -> str:
    if not analysis.transcript:
        return "no speech found"
    source = {"subtitles": "platform subtitles"}.get(
        analysis.transcript_source, f"speech to text ({analysis.transcript_source})"
    )
    language = f", language {analysis.language}" if analysis.language else ""
    return f"{source}{language}, {len(analysis.transcript)} segments, {len(analysis.shots)} shots"


def _notes(brief: Brief) -> list[str]:
    if not brief.offline:
        return []
    return [
        "This is an offline extractive brief: no language model was configured, so the "
        "summary and key points are sentences picked from the transcript by word frequency "
        "and the chapters follow the detected shots."
    ]


# --- rendering ------------------------------------------------------------------------------


def render_html(view: dict[str, Any]) -> str:
    """The report's HTML. Autoescape is forced on (the ``.j2`` name would turn it off)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(TEMPLATE).render(**view)


def render_pdf(
    ctx: JobContext, media: Media, analysis: Analysis, brief: Brief, created: datetime
) -> tuple[bytes, int, bool]:
    """(PDF bytes, pages, tagged): PDF/UA-1 if WeasyPrint manages, else plain with a note."""
    view = build_view(ctx, media, analysis, brief, created)
    fetcher = job_file_fetcher([ctx.workdir])
    try:
        return (*_weasyprint(render_html(view), ctx.workdir, fetcher, tagged=True), True)
    except Exception as e:  # WeasyPrint raises many kinds; the plain PDF is still worth having
        log.warning(
            "job %s: tagged PDF failed (%s: %s); writing an untagged PDF",
            ctx.job_id,
            type(e).__name__,
            e,
        )
    view["notes"] = [*view["notes"], "This PDF is untagged: the tagged (PDF/UA) rendering failed."]
    try:
        return (*_weasyprint(render_html(view), ctx.workdir, fetcher, tagged=False), False)
    except Exception as e:
        raise PermanentStepError(
            f"job {ctx.job_id}: the PDF could not be rendered: {type(e).__name__}: {e}", step=STEP
        ) from e


def _weasyprint(
    html: str, workdir: Path, fetcher: URLFetcher, *, tagged: bool
) -> tuple[bytes, int]:
    from weasyprint import CSS, HTML

    css = CSS(string=(TEMPLATES_DIR / STYLESHEET).read_text(), url_fetcher=fetcher)
    # base_url is the job folder, so even a relative reference resolves inside it.
    document = HTML(string=html, base_url=f"{workdir.as_uri()}/", url_fetcher=fetcher)
    # pdf_tags must be given: the variant's default does not override its False default in v70.
    options: dict[str, Any] = {"pdf_variant": PDF_VARIANT, "pdf_tags": True} if tagged else {}
    rendered = document.render(stylesheets=[css], **options)
    return rendered.write_pdf(**options), len(rendered.pages)


# --- result.json ----------------------------------------------------------------------------


def build_result(
    ctx: JobContext,
    media: Media,
    analysis: Analysis,
    brief: Brief,
    created: datetime,
    report: dict[str, Any],
    timings: dict[str, float] | None,
) -> dict[str, Any]:
    """The machine-readable result: result.json beside the PDF (README: Reading results)."""
    url, content = media.source_url, brief.content
    return {
        "schema_version": RESULT_SCHEMA_VERSION,
        "metadata": {
            "job_id": ctx.job_id,
            "url": ctx.request.url,
            "source_url": url,
            "title": content.title,
            "media_title": media.title,
            "duration_s": video_duration(media, analysis),
            "width": media.width,
            "height": media.height,
            "created_at": created.isoformat(),
            "request": {
                "instructions": ctx.request.instructions,
                "language": ctx.request.language,
            },
        },
        "brief": {
            "provider": brief.provider,
            "model": brief.model,
            "offline": brief.offline,
            "language": brief.language,
        },
        "summary": content.summary,
        "key_points": [
            {**kp.model_dump(), "link": link_at(url, kp.start)} for kp in content.key_points
        ],
        "chapters": [
            _chapter_json(ch.model_dump(), analysis, ctx.workdir) for ch in content.chapters
        ],
        "warnings": [w.model_dump() for w in result_warnings(analysis, brief)],
        "grounding": brief.grounding.model_dump(),
        "reused_steps": [],
        "transcript": {
            "source": analysis.transcript_source,
            "language": analysis.language,
            "language_probability": analysis.language_probability,
            "model": analysis.asr_model,
            "segments": [s.model_dump(exclude_none=True) for s in analysis.transcript],
        },
        "shots": [_shot_json(s, ctx.workdir) for s in analysis.shots],
        "token_usage": brief.usage.model_dump(),
        "timings": dict(timings or {}),
        "analysis_timings": dict(analysis.timings),
        "report": report,
    }


def result_warnings(analysis: Analysis, brief: Brief) -> list[Notice]:
    """Every warning of the job, analysis first, each code once."""
    seen: set[str] = set()
    out = []
    for notice in [*analysis.warnings, *brief.warnings]:
        if notice.code not in seen:
            seen.add(notice.code)
            out.append(notice)
    return out


def _relative(path: str, workdir: Path) -> str:
    """A keyframe path relative to the job folder (other nodes' absolute paths mean nothing)."""
    p = Path(path)
    return str(p.relative_to(workdir)) if p.is_absolute() and p.is_relative_to(workdir) else path


def _shot_json(shot: Shot, workdir: Path) -> dict[str, Any]:
    return {**shot.model_dump(), "keyframe_path": _relative(shot.keyframe_path, workdir)}


def _chapter_json(chapter: dict[str, Any], analysis: Analysis, workdir: Path) -> dict[str, Any]:
    shot = nearest_shot(analysis.shots, chapter["start"])
    return {**chapter, "keyframe": _relative(shot.keyframe_path, workdir) if shot else None}
