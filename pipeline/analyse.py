"""Step 2, analyse: shots, keyframes and a timestamped transcript of the downloaded video.

One streaming pass with PyAV decodes video and audio together: video frames are sampled at
``frame_sample_fps`` and downscaled at once (64×36 for cuts, ≤480 px for keyframes, see
:mod:`pipeline.shots`), audio is resampled to 16 kHz mono float32 and appended to a file on
disk. Nothing holds the whole video; the audio is read back through a memory map for speech
to text (:mod:`pipeline.speech`), skipped when the download brought usable subtitles.

Results go to ``<workdir>/analyse``: ``shot_NNNN.jpg`` keyframes and ``analysis.json``
(written last: a resumed job finds it and does not analyse again).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ingest.errors import PermanentStepError
from ingest.names import ANALYSE_STEP
from ingest.settings import Settings
from pipeline.context import JobContext
from pipeline.models import Analysis, Media, Segment, Shot
from pipeline.shots import HIST_SIZE_PX, ShotTracker, keyframe_size
from pipeline.speech import SAMPLE_RATE_HZ, transcribe

__all__ = ["AV_CONTAINER_OPTIONS", "analyse_media", "resolve_device", "resolve_threads", "run"]

log = logging.getLogger(__name__)

STEP = ANALYSE_STEP
ANALYSIS_JSON = "analysis.json"
AUDIO_FILE = "audio-16k-mono.f32"
#: Options for every av.open of downloaded media: only plain container demuxers, and no
#: protocol but local files — playlist demuxers (hls, concat, dash) would open the URLs or
#: paths listed inside an untrusted file.
AV_CONTAINER_OPTIONS = {
    "format_whitelist": "mov,matroska,mpegts,flv,avi,ogg,mpeg,asf,wav,mp3,aac,flac,h264,hevc",
    "protocol_whitelist": "file",
}


def run(ctx: JobContext, media: Media) -> Analysis:
    """The analyse step: shots, keyframes and transcript into ``<workdir>/analyse``."""
    return analyse_media(media, ctx.step_dir(STEP), ctx.settings)


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


def analyse_media(media: Media, out_dir: Path, settings: Settings) -> Analysis:
    """Analyse ``media`` into ``out_dir`` (or return the finished analysis already there)."""
    import torch

    out_dir = Path(out_dir)
    done = _finished(out_dir)
    if done is not None:
        return done
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = resolve_threads(settings.threads)
    torch.set_num_threads(threads)  # a reused Ray worker may have been left at 1
    device = resolve_device(settings.device)
    decoded = decode(Path(media.path), out_dir, settings.frame_sample_fps, device, threads)
    analysis = _with_transcript(media, decoded, settings, device, threads)
    (out_dir / ANALYSIS_JSON).write_text(analysis.model_dump_json(indent=2), encoding="utf-8")
    return analysis


def _finished(out_dir: Path) -> Analysis | None:
    with contextlib.suppress(OSError, ValueError):
        analysis = Analysis.model_validate_json((out_dir / ANALYSIS_JSON).read_text())
        if all(Path(s.keyframe_path).is_file() for s in analysis.shots):
            return analysis
    return None


# --------------------------------------------------------------------------- decoding


@dataclass
class Decoded:
    """What one decoding pass found."""

    shots: list[Shot]
    frames_sampled: int
    duration_s: float
    audio_path: Path | None
    timings: dict[str, float] = field(default_factory=dict)


class _AudioSink:
    """16 kHz mono float32 audio appended to a file: bounded memory for any length."""

    def __init__(self, path: Path) -> None:
        import av

        self.path, self.samples = path, 0
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)

    def add(self, frame: Any) -> None:
        for out in self._resampler.resample(frame):
            self._write(out)

    def _write(self, frame: Any) -> None:
        data = frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        self._file.write(data.tobytes())
        self.samples += data.size

    def close(self) -> Path | None:
        for out in self._resampler.resample(None):  # flush what the resampler holds
            self._write(out)
        self._file.close()
        return self.path if self.samples else None


class _FrameSampler:
    """Takes the first frame at or after each tick of a ``fps`` grid; downscales it."""

    def __init__(self, fps: float, tracker: ShotTracker, key_size: tuple[int, int]) -> None:
        self.interval, self.next_t, self.count = 1.0 / fps, 0.0, 0
        self.tracker, self.key_size, self.last_t = tracker, key_size, 0.0

    def add(self, frame: Any) -> None:
        if frame.time is None:
            return
        t = float(frame.time)
        self.last_t = max(self.last_t, t)
        if t + 1e-6 < self.next_t:
            return
        while self.next_t <= t + 1e-6:
            self.next_t += self.interval
        small = frame.reformat(*HIST_SIZE_PX, format="rgb24").to_ndarray()
        key = frame.reformat(*self.key_size, format="rgb24").to_ndarray()
        self.tracker.add(t, small, key)
        self.count += 1


def _open_streams(container: Any, threads: int) -> tuple[Any, Any]:
    video = next(iter(container.streams.video), None)
    audio = next(iter(container.streams.audio), None)
    if video is not None:
        video.thread_type = "AUTO"  # frame and slice threads: decoding is the hot loop
        video.codec_context.thread_count = threads
    return video, audio


def decode(path: Path, out_dir: Path, sample_fps: float, device: str, threads: int) -> Decoded:
    """One streaming pass: sampled frames into shots and keyframes, audio into a file."""
    import av

    began = time.perf_counter()
    try:
        with av.open(str(path), container_options=AV_CONTAINER_OPTIONS) as container:
            decoded = _decode_streams(container, out_dir, sample_fps, device, threads)
    except av.FFmpegError as e:
        raise PermanentStepError(f"cannot decode {path.name}: {e}", step=STEP) from e
    shots_s = decoded.timings["shots_s"]
    decoded.timings["decode_s"] = round(time.perf_counter() - began - shots_s, 3)
    return decoded


def _decode_streams(
    container: Any, out_dir: Path, sample_fps: float, device: str, threads: int
) -> Decoded:
    import av

    video, audio = _open_streams(container, threads)
    tracker = ShotTracker(out_dir, device)
    sampler = _FrameSampler(sample_fps, tracker, _key_size(video))
    sink = _AudioSink(out_dir / AUDIO_FILE) if audio is not None else None
    try:
        for packet in container.demux(*[s for s in (video, audio) if s is not None]):
            for frame in _frames(packet):
                if isinstance(frame, av.VideoFrame):
                    sampler.add(frame)
                elif sink is not None:
                    sink.add(frame)
    finally:
        audio_path = sink.close() if sink is not None else None
    duration = _duration(container, sampler, sink)
    shots = tracker.finish(duration) if video is not None else []
    return Decoded(
        shots, sampler.count, duration, audio_path, {"shots_s": round(tracker.seconds_in_shots, 3)}
    )


def _frames(packet: Any) -> list[Any]:
    """A packet's frames; a corrupt packet is skipped, as players do."""
    import av

    try:
        return packet.decode()
    except av.InvalidDataError as e:
        log.debug("skipping a corrupt packet: %s", e)
        return []


def _key_size(video: Any) -> tuple[int, int]:
    if video is None:
        return 2, 2
    return keyframe_size(video.codec_context.width, video.codec_context.height)


def _duration(container: Any, sampler: _FrameSampler, sink: _AudioSink | None) -> float:
    audio_s = sink.samples / SAMPLE_RATE_HZ if sink is not None else 0.0
    measured = max(sampler.last_t + sampler.interval / 2 if sampler.count else 0.0, audio_s)
    declared = container.duration / 1_000_000 if container.duration else 0.0
    return round(declared or measured, 3)


# --------------------------------------------------------------------------- transcript


def _with_transcript(
    media: Media, decoded: Decoded, settings: Settings, device: str, threads: int
) -> Analysis:
    began = time.perf_counter()
    fields: dict[str, Any]
    if media.subtitles:
        fields = {
            "transcript": media.subtitles,
            "transcript_source": "subtitles",
            "language": media.subtitles_language,
        }
    elif decoded.audio_path is None:
        fields = {"transcript": [], "transcript_source": "none"}
    else:
        fields = _speech(decoded.audio_path, settings, device, threads)
    timings = {**decoded.timings, "asr_s": round(time.perf_counter() - began, 3)}
    return Analysis(
        duration_s=media.duration_s or decoded.duration_s,
        frames_sampled=decoded.frames_sampled,
        sample_fps=settings.frame_sample_fps,
        shots=decoded.shots,
        device=device,
        timings=timings,
        **fields,
    )


def _speech(audio_path: Path, settings: Settings, device: str, threads: int) -> dict[str, Any]:
    """Speech to text over the memory-mapped audio file, which is removed afterwards."""
    try:
        audio = np.memmap(audio_path, dtype=np.float32, mode="r")
        result = transcribe(audio, settings, device, threads)
    finally:
        audio_path.unlink(missing_ok=True)
    segments: list[Segment] = result.segments
    return {
        "transcript": segments,
        "transcript_source": result.backend,
        "language": result.language,
        "asr_model": result.model,
        "asr_device": result.device,
    }
