"""What produced each kept step output, as a digest: the key it is kept and found under.

    download  ← the normalised URL, the subtitle language asked for, the subtitle caps
    analyse   ← the download's key, the media's sha256, the speech model and backend, word
                times, the frame sample rate, the spoken-language hint (the job's language)
    brief     ← the analysis's key, the instructions, the brief's language, the LLM (provider,
                model, endpoint, context budget)
    report    never kept: it is cheap, and it is the job's own

Every key also holds its step's version (:data:`STEP_VERSIONS`) and the step mode (a synthetic
output never stands in for a real one). A key is a BLAKE2b digest of its fields as canonical
JSON; the fields are stored beside the output, so a kept output says what produced it, and a
load compares them (a digest collision, or a hand-edited store, is a miss, not a wrong result).

A request under a reused job_id with another URL has another download key, so nothing of the
earlier request is reused. The job's ``language`` is both the brief's language and the hint
for the spoken language (and the platform subtitles), so it is part of the analysis's key; an
analysis is also kept under its *source* key (the URL and the models, no language), which a job
in another language may reuse when the language could not have changed the transcript (see
:func:`pipeline.reuse.serves_language`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ingest.models import JobRequest
from ingest.names import ANALYSE_STEP, BRIEF_STEP, DOWNLOAD_STEP, REPORT_STEP
from ingest.redact import strip_userinfo
from ingest.settings import Settings
from pipeline.asr_models import BASE_NAMES, DEFAULT_NAME, TINY_EN_NAMES
from pipeline.llm import resolve_config

#: Part of every key of the step's outputs: bump it when the step's output changes meaning
#: (download 2: the media's sha256; analyse 2: keyframes kept in the artefact store, 3: keyframes
#: of a video with a display rotation turned upright and "12,000" one word, not "12" ",000";
#: brief 2: grounded quotes and chapters; report 2: keyframes beside the report).
STEP_VERSIONS: dict[str, int] = {DOWNLOAD_STEP: 2, ANALYSE_STEP: 3, BRIEF_STEP: 2, REPORT_STEP: 2}
DIGEST_BYTES = 16  # 128 bits: no collision among any number of jobs a store will ever hold
DEFAULT_PORTS = {"http": 80, "https": 443}
HASH_BLOCK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StepKey:
    """What produced one step's output: its fields, and their digest (the name it is kept as)."""

    step: str
    fields: Mapping[str, Any]

    @property
    def digest(self) -> str:
        text = json.dumps(self.fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.blake2b(text.encode(), digest_size=DIGEST_BYTES).hexdigest()


def normalise_url(url: str) -> str:
    """The URL as the server sees it: scheme and host in lower case, no default port, no
    credentials. Path, query and fragment are kept as written (they may name another video)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # not a port: keep the authority as written (the fetch refuses it)
        return urlunsplit((scheme, parts.netloc.lower(), parts.path, parts.query, parts.fragment))
    netloc = host if port in (None, DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, parts.fragment))


def _base(step: str, settings: Settings) -> dict[str, Any]:
    return {"step": step, "version": STEP_VERSIONS[step], "mode": settings.step_mode}


def _language(request: JobRequest) -> str | None:
    return request.language.lower() if request.language else None


def download_key(request: JobRequest, settings: Settings) -> StepKey:
    """The download: which video, and which platform subtitles were asked for."""
    fields = {
        **_base(DOWNLOAD_STEP, settings),
        "url": normalise_url(request.url),
        "language": _language(request),
        "max_subtitle_mb": settings.max_subtitle_mb,
        "max_subtitle_cues_per_minute": settings.max_subtitle_cues_per_minute,
    }
    return StepKey(DOWNLOAD_STEP, fields)


def asr_model_id(settings: Settings) -> str:
    """The speech model setting under one spelling per bundled model (a path stays a path)."""
    name = (settings.asr_model or DEFAULT_NAME).strip()
    if name in BASE_NAMES:
        return DEFAULT_NAME
    return "tiny.en" if name in TINY_EN_NAMES else name


def media_sha256(media: Any) -> str | None:
    """The downloaded file's digest (a synthetic download has none)."""
    value = media.get("sha256") if isinstance(media, dict) else getattr(media, "sha256", None)
    return value if isinstance(value, str) else None


def _analysis_settings(settings: Settings) -> dict[str, Any]:
    """The settings that change what an analysis holds (keys are JSON-sorted: order is free)."""
    return {
        "asr_model": asr_model_id(settings),
        "asr_backend": settings.asr_backend,
        "asr_word_timestamps": settings.asr_word_timestamps,
        "frame_sample_fps": settings.frame_sample_fps,
    }


def analysis_key(request: JobRequest, settings: Settings, media: Any) -> StepKey:
    """The analysis: which media (by its download and its bytes), with which models."""
    fields = {
        **_base(ANALYSE_STEP, settings),
        "download": download_key(request, settings).digest,
        "media_sha256": media_sha256(media),
        **_analysis_settings(settings),
        "language": _language(request),
    }
    return StepKey(ANALYSE_STEP, fields)


def analysis_source_key(request: JobRequest, settings: Settings) -> StepKey:
    """The latest analysis of this URL with these models, whatever the job's language."""
    fields = {
        **_base(ANALYSE_STEP, settings),
        "source": normalise_url(request.url),
        **_analysis_settings(settings),
    }
    return StepKey(ANALYSE_STEP, fields)


def brief_key(request: JobRequest, settings: Settings, analysis: StepKey) -> StepKey:
    """The brief: of which analysis, asked how, written by which model."""
    fields = {
        **_base(BRIEF_STEP, settings),
        "analysis": analysis.digest,
        "instructions": request.instructions,
        "language": _language(request),
        "llm": _llm(settings),
    }
    return StepKey(BRIEF_STEP, fields)


def _llm(settings: Settings) -> dict[str, Any] | None:
    """Who writes the brief (None: the offline extractive brief; synthetic: nobody)."""
    if settings.step_mode == "synthetic":
        return None
    config = resolve_config(settings)
    if config is None:
        return None
    return {
        "provider": config.provider,
        "model": config.model,
        "base_url": strip_userinfo(config.base_url)[0],
        "context_tokens": config.context_tokens,
    }


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in blocks (a video may be gigabytes)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()
