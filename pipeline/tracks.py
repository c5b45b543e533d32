"""Which audio stream of a container is transcribed.

One audio stream: that one. Several: the one marked default, when exactly one is. Otherwise
(none or several marked) a quick probe decodes the first :data:`PROBE_SECONDS` of each
candidate and takes the one with the most speech by Silero VAD (the model faster-whisper ships);
when no candidate holds speech, the loudest; the first when all are silent. The choice and its
reason are recorded on the analysis (``audio_stream``, ``audio_stream_reason``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PROBE_SECONDS", "AudioChoice", "choose_audio", "probe_speech"]

log = logging.getLogger(__name__)

PROBE_SECONDS = 60.0
PROBE_RATE_HZ = 16_000
SILENT_RMS = 1e-4  # quieter than this is digital silence, not a quiet recording


@dataclass(frozen=True)
class AudioChoice:
    """The chosen stream's index in the container (None: no audio) and why it was chosen."""

    index: int | None
    reason: str  # none, only, default, speech, loudest, first
    candidates: int = 0


def choose_audio(path: Path, container_options: dict[str, str]) -> AudioChoice:
    """The audio stream to transcribe (see the module docstring)."""
    import av

    with av.open(str(path), container_options=container_options) as container:
        streams = list(container.streams.audio)
        if not streams:
            return AudioChoice(None, "none")
        if len(streams) == 1:
            return AudioChoice(streams[0].index, "only", 1)
        default = [s for s in streams if s.disposition & av.stream.Disposition.default]
        if len(default) == 1:
            return AudioChoice(default[0].index, "default", len(streams))
        candidates = default or streams
        return _by_probe(container, candidates, len(streams))


def _by_probe(container: Any, candidates: list[Any], total: int) -> AudioChoice:
    heard = _first_seconds(container, candidates)
    probes = {s.index: probe_speech(heard[s.index]) for s in candidates}
    log.info("audio streams probed (index: speech s, rms): %s", probes)
    best = max(candidates, key=lambda s: probes[s.index])  # first wins ties
    speech_s, rms = probes[best.index]
    if speech_s > 0:
        return AudioChoice(best.index, "speech", total)
    if rms > SILENT_RMS:
        return AudioChoice(best.index, "loudest", total)
    return AudioChoice(candidates[0].index, "first", total)


def _first_seconds(container: Any, streams: list[Any]) -> dict[int, np.ndarray]:
    """The first PROBE_SECONDS of each stream as 16 kHz mono float32, in one demux pass."""
    import av

    wanted = int(PROBE_SECONDS * PROBE_RATE_HZ)
    resamplers = {
        s.index: av.AudioResampler(format="flt", layout="mono", rate=PROBE_RATE_HZ) for s in streams
    }
    parts: dict[int, list[np.ndarray]] = {s.index: [] for s in streams}
    got = dict.fromkeys(parts, 0)
    try:
        for packet in container.demux(*streams):
            index = packet.stream.index
            if got[index] < wanted:
                for frame in packet.decode():
                    for out in resamplers[index].resample(frame):
                        parts[index].append(out.to_ndarray().reshape(-1))
                        got[index] += parts[index][-1].size
            if min(got.values()) >= wanted:
                break
    except av.FFmpegError as e:  # a damaged stream: judge what was read
        log.debug("audio probe stopped: %s", e)
    return {i: _joined(p)[:wanted] for i, p in parts.items()}


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return (
        np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
    )


def probe_speech(samples: np.ndarray) -> tuple[float, float]:
    """(seconds of speech by VAD, RMS level) of 16 kHz mono samples."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if samples.size == 0:
        return 0.0, 0.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms <= SILENT_RMS:
        return 0.0, rms
    chunks = get_speech_timestamps(samples, VadOptions())
    return round(sum(c["end"] - c["start"] for c in chunks) / PROBE_RATE_HZ, 2), rms
