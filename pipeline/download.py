"""Step 1, download: the request's video onto this node's disk, bounded in bytes, seconds and
memory.

The fetching itself (yt-dlp behind the address policy, every read counted against its cap) is
:mod:`pipeline.fetch`; this step runs it in a child process with a memory limit that is killed
at the deadline (:mod:`pipeline.download_process`), so no page, manifest or trickling server
can take the node's memory or hold a download slot past its time.
"""

from __future__ import annotations

from ingest.names import DOWNLOAD_STEP
from pipeline.context import JobContext
from pipeline.download_process import download_isolated
from pipeline.fetch import (
    BYTES_PER_MB,
    DEFAULT_LANGUAGE,
    MEDIA_JSON,
    DownloadLimits,
    download,
    parse_vtt,
)
from pipeline.keys import file_sha256
from pipeline.models import Media

__all__ = ["MEDIA_JSON", "STEP", "DownloadLimits", "download", "parse_vtt", "run"]

STEP = DOWNLOAD_STEP


def run(ctx: JobContext) -> Media:
    """The download step: the request's video into ``<workdir>/download``."""
    settings = ctx.settings
    media = download_isolated(
        ctx.request.url,
        ctx.step_dir(STEP),
        DownloadLimits.from_settings(settings),
        allow_private=settings.allow_private_urls,
        language=ctx.request.language or DEFAULT_LANGUAGE,
        memory_bytes=int(settings.download_memory_mb * BYTES_PER_MB),
    )
    # The digest names the analysis of these bytes (pipeline.keys): about 1 s per GB read.
    return media.model_copy(update={"sha256": file_sha256(media.path)})
