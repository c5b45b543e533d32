"""Step ``report``: the PDF report and ``result.json`` of one job.

Jinja2 (autoescape on: LLM output is text, never markup) → WeasyPrint, tagged PDF/UA-1 when it
renders (else a plain PDF that says so). WeasyPrint reads resources only through
:class:`JobFileFetcher`: ``file:`` URLs inside the job's own folder and ``data:`` URLs, nothing
else — no http (no requests to anything the brief names), no other files (no ``/etc/passwd``
as an attachment). Both files go to ``<reports_url>/<job_id>/`` through :func:`_write_output`
(a path or an fsspec URL, see :mod:`pipeline.storage`), each written so that no reader sees half
of it, the keyframes beside them (:mod:`pipeline.keyframes`), ``result.json`` last (it marks
completion). What the report shows is built in :mod:`pipeline.report_view`.

A report longer than ``VIDBRIEF_MAX_REPORT_PAGES`` is refused (a permanent error): estimated
from the transcript's length before the layout (the costly part), and counted after it.
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
from urllib.parse import urlsplit
from urllib.request import url2pathname

from ingest.errors import ConfigError, PermanentStepError
from ingest.names import REPORT_STEP
from pipeline import storage
from pipeline.context import JobContext
from pipeline.keyframes import copy_keyframes
from pipeline.models import Analysis, Brief, Media, ReportFiles, Shot
from pipeline.report_view import (
    build_view,
    chapter_keyframes,
    estimated_pages,
    link_at,
    result_warnings,
)
from pipeline.timing import video_duration

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

__all__ = ["build_result", "link_at", "render_pdf", "run"]


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
    copied = _copy_keyframes(reports_url, ctx, analysis.shots)
    report_info = {
        "url": report_url,
        "pages": pages,
        "tagged": tagged,
        "render_seconds": round(render_s, 3),
    }
    timings = dict((timings if timings is not None else ctx.step_seconds) or {})
    # This step's own time, up to result.json (which cannot time its own writing).
    timings[STEP] = round(time.perf_counter() - started, 3)
    result = build_result(ctx, media, analysis, brief, created, report_info, timings, copied)
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


def _copy_keyframes(reports_url: str, ctx: JobContext, shots: list[Shot]) -> dict[int, str]:
    try:
        return copy_keyframes(reports_url, ctx.job_id, shots, ctx.workdir)
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
    limit = ctx.settings.max_report_pages
    _check_pages(estimated_pages(view), limit, "would have about", len(analysis.transcript))
    fetcher = job_file_fetcher([ctx.workdir])
    try:
        return (
            *_weasyprint(render_html(view), ctx.workdir, fetcher, tagged=True, limit=limit),
            True,
        )
    except PermanentStepError:
        raise
    except Exception as e:  # WeasyPrint raises many kinds; the plain PDF is still worth having
        log.warning(
            "job %s: tagged PDF failed (%s: %s); writing an untagged PDF",
            ctx.job_id,
            type(e).__name__,
            e,
        )
    view["notes"] = [*view["notes"], "This PDF is untagged: the tagged (PDF/UA) rendering failed."]
    try:
        return (
            *_weasyprint(render_html(view), ctx.workdir, fetcher, tagged=False, limit=limit),
            False,
        )
    except PermanentStepError:
        raise
    except Exception as e:
        raise PermanentStepError(
            f"job {ctx.job_id}: the PDF could not be rendered: {type(e).__name__}: {e}", step=STEP
        ) from e


def _check_pages(pages: int, limit: int, verb: str, segments: int) -> None:
    if pages > limit:
        raise PermanentStepError(
            f"the report {verb} {pages} pages ({segments:,} transcript segments), more than "
            f"VIDBRIEF_MAX_REPORT_PAGES={limit}; raise it to render this report",
            step=STEP,
        )


def _weasyprint(
    html: str, workdir: Path, fetcher: URLFetcher, *, tagged: bool, limit: int | None = None
) -> tuple[bytes, int]:
    from weasyprint import CSS, HTML

    css = CSS(string=(TEMPLATES_DIR / STYLESHEET).read_text(), url_fetcher=fetcher)
    # base_url is the job folder, so even a relative reference resolves inside it.
    document = HTML(string=html, base_url=f"{workdir.as_uri()}/", url_fetcher=fetcher)
    # pdf_tags must be given: the variant's default does not override its False default in v70.
    options: dict[str, Any] = {"pdf_variant": PDF_VARIANT, "pdf_tags": True} if tagged else {}
    rendered = document.render(stylesheets=[css], **options)
    if limit is not None:
        _check_pages(len(rendered.pages), limit, "has", 0)
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
    keyframes: dict[int, str] | None = None,
) -> dict[str, Any]:
    """The machine-readable result: result.json beside the PDF (README: Reading results);
    keyframe paths relative to it."""
    url, content = media.source_url, brief.content
    keyframes = keyframes or {}
    pictures = chapter_keyframes(content.chapters, analysis.shots, keyframes)
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
            {**ch.model_dump(), "keyframe": picture}
            for ch, picture in zip(content.chapters, pictures, strict=True)
        ],
        "warnings": [w.model_dump() for w in result_warnings(analysis, brief)],
        "grounding": brief.grounding.model_dump(),
        "reused_steps": list(ctx.reused_steps),
        "transcript": {
            "source": analysis.transcript_source,
            "language": analysis.language,
            "language_probability": analysis.language_probability,
            "model": analysis.asr_model,
            "segments": [s.model_dump(exclude_none=True) for s in analysis.transcript],
        },
        "shots": [
            {**s.model_dump(), "keyframe_path": keyframes.get(s.index)} for s in analysis.shots
        ],
        "token_usage": brief.usage.model_dump(),
        "timings": dict(timings or {}),
        "analysis_timings": dict(analysis.timings),
        "report": report,
    }
