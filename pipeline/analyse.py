"""Step 2, analyse: shots, keyframes and a timestamped transcript of the downloaded video.

One streaming pass (:mod:`pipeline.decode`) samples and downscales video frames into shots and
keyframes, writes the chosen audio stream (:mod:`pipeline.tracks`) to a 16 kHz file on disk and
collects text subtitle streams. The transcript then comes from the first that exists:
subtitles fetched with the download, subtitles inside the container (both through the same
quality gate, :mod:`pipeline.subtitles`), speech to text over the audio file in bounded blocks
(:mod:`pipeline.speech`). What the reader must know — a truncated file, skipped packets, a
language the model cannot transcribe, unreliable speech — becomes a Notice in ``warnings``.

Results go to ``<workdir>/analyse``: ``shot_NNNN.jpg`` keyframes and ``analysis.json``
(written last: a resumed job finds it and does not analyse again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from ingest.names import ANALYSE_STEP
from ingest.settings import Settings
from pipeline.context import JobContext
from pipeline.decode import (
    AUDIO_FILE,
    AV_CONTAINER_OPTIONS,
    Decoded,
    DecodeLimits,
    clamp_segments,
    decode,
    integrity_notices,
)
from pipeline.hooks import NO_HOOKS, StepHooks
from pipeline.languages import primary
from pipeline.models import Analysis, Media
from pipeline.speech import transcribe

__all__ = [
    "ANALYSIS_JSON",
    "AUDIO_FILE",
    "AV_CONTAINER_OPTIONS",
    "analyse_media",
    "resolve_device",
    "resolve_threads",
    "run",
]

log = logging.getLogger(__name__)

STEP = ANALYSE_STEP
ANALYSIS_JSON = "analysis.json"


def run(ctx: JobContext, media: Media) -> Analysis:
    """The analyse step: shots, keyframes and transcript into ``<workdir>/analyse``."""
    return analyse_media(
        media, ctx.step_dir(STEP), ctx.settings, language=ctx.request.language, hooks=ctx.hooks
    )


def resolve_threads(threads: int) -> int:
    """Thread count for torch and CTranslate2 (0: every core)."""
    return threads or os.cpu_count() or 1


def resolve_device(requested: str) -> str:
    """``cuda`` when asked for (or auto) and torch sees a GPU; else ``cpu``."""
    import torch

    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        log.warning("VIDBRIEF_DEVICE=cuda but torch sees no GPU here; analysing on the CPU")
    return "cpu"


def analyse_media(
    media: Media,
    out_dir: Path,
    settings: Settings,
    *,
    language: str | None = None,
    hooks: StepHooks = NO_HOOKS,
) -> Analysis:
    """Analyse ``media`` into ``out_dir`` (or return the finished analysis already there).

    ``language`` (BCP 47, the job's) is the spoken language and the subtitle language wanted;
    None: detected. ``hooks``: progress (seconds decoded, transcribed) and cancel.
    """
    import torch

    out_dir = Path(out_dir)
    done = _finished(out_dir)
    if done is not None:
        return done
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = resolve_threads(settings.threads)
    torch.set_num_threads(threads)  # a reused Ray worker may have been left at 1
    device = resolve_device(settings.device)
    limits = DecodeLimits(
        settings.frame_sample_fps, settings.max_duration_seconds, settings.max_frame_pixels
    )
    decoded = decode(Path(media.path), out_dir, limits, device, threads, hooks)
    try:
        notices = integrity_notices(decoded)
        analysis = _with_transcript(media, decoded, settings, device, threads, language, hooks)
    finally:
        if decoded.audio_path is not None:
            decoded.audio_path.unlink(missing_ok=True)
    analysis.warnings = notices + analysis.warnings
    (out_dir / ANALYSIS_JSON).write_text(analysis.model_dump_json(indent=2), encoding="utf-8")
    return analysis


def _finished(out_dir: Path) -> Analysis | None:
    with contextlib.suppress(OSError, ValueError):
        analysis = Analysis.model_validate_json((out_dir / ANALYSIS_JSON).read_text())
        if all(Path(s.keyframe_path).is_file() for s in analysis.shots):
            return analysis
    return None


# --------------------------------------------------------------------------- transcript


def _with_transcript(
    media: Media,
    decoded: Decoded,
    settings: Settings,
    device: str,
    threads: int,
    language: str | None,
    hooks: StepHooks = NO_HOOKS,
) -> Analysis:
    began = time.perf_counter()
    fields = _transcript_fields(media, decoded, settings, device, threads, language, hooks)
    fields["transcript"] = clamp_segments(fields["transcript"], decoded.duration_s)
    timings = {**decoded.timings, "asr_s": round(time.perf_counter() - began, 3)}
    return Analysis(
        duration_s=decoded.duration_s,
        declared_duration_s=decoded.declared_duration_s,
        frames_sampled=decoded.frames_sampled,
        sample_fps=settings.frame_sample_fps,
        shots=decoded.shots,
        device=device,
        timings=timings,
        decode_errors=decoded.decode_errors,
        audio_stream=decoded.audio.index,
        audio_stream_reason=decoded.audio.reason,
        **fields,
    )


def _transcript_fields(
    media: Media,
    decoded: Decoded,
    settings: Settings,
    device: str,
    threads: int,
    language: str | None,
    hooks: StepHooks = NO_HOOKS,
) -> dict[str, Any]:
    """Fetched subtitles, else embedded subtitles, else speech to text, else nothing."""
    if media.subtitles:
        return {
            "transcript": media.subtitles,
            "transcript_source": "subtitles",
            "language": media.subtitles_language,
        }
    spoken = language or (decoded.audio_language if primary(decoded.audio_language) else None)
    embedded = decoded.subtitles.choose(spoken, decoded.duration_s)
    if embedded is not None:
        return {
            "transcript": embedded.cues,
            "transcript_source": "subtitles",
            "language": embedded.language,
            "subtitle_stream": embedded.stream,
        }
    if decoded.audio_path is None:
        return {"transcript": [], "transcript_source": "none"}
    return _speech(decoded, settings, device, threads, language, hooks)


def _speech(
    decoded: Decoded,
    settings: Settings,
    device: str,
    threads: int,
    language: str | None,
    hooks: StepHooks = NO_HOOKS,
) -> dict[str, Any]:
    """Speech to text over the audio file; the track's own language tag is a hint too."""
    hint = language or (decoded.audio_language if primary(decoded.audio_language) else None)
    assert decoded.audio_path is not None
    result = transcribe(decoded.audio_path, settings, device, threads, language=hint, hooks=hooks)
    return {
        "transcript": result.segments,
        "transcript_source": result.backend,
        "language": result.language,
        "language_probability": result.language_probability,
        "asr_model": result.model,
        "asr_device": result.device,
        "speech_s": result.speech_s,
        "warnings": list(result.notices),
    }
