"""Speech to text with timestamps, in bounded memory: faster-whisper, or transformers' Whisper.

The model is ``VIDBRIEF_ASR_MODEL`` (see :mod:`pipeline.asr_models`; default: multilingual
Whisper base, offline). faster-whisper (CTranslate2) is the default engine: int8 on the CPU,
float16 on CUDA. Where CTranslate2 cannot use the GPU (it needs CUDA 12's libcublas; a CUDA 13
machine has none), ``auto`` moves to transformers' Whisper on torch (fp16, 30 s
windows decoded in batches), and to faster-whisper on the CPU if that fails too.

**Bounded memory.** The audio is never held whole: it is read in blocks of at most
:data:`BLOCK_SECONDS`, each cut at the quietest 50 ms of its last :data:`CUT_SEARCH_SECONDS`
(between words, not through one), transcribed on its own (VAD inside the block) and its
segments shifted by the block's start. faster-whisper would otherwise build the spectrogram
of the whole recording at once (+900 MiB at 20 minutes).

**Language.** The job's ``language`` is the spoken language, unless the model's own detection
contradicts it with probability ≥ :data:`LANGUAGE_OVERRIDE_PROBABILITY` (0.75; the request's
``language`` is also the brief's language: a German talk briefed in English must still be
transcribed as German) — then a ``language_mismatch`` Notice says so. Without a ``language``,
detection on the first block with speech decides. A language the model cannot transcribe gives
a ``language_unsupported`` Notice, never an empty "no speech" transcript.

**Confidence.** Each segment keeps the decoder's average log-probability and no-speech
probability; when most of the transcribed speech is low-confidence a ``low_confidence`` Notice
goes on the report.

Loaded models stay in :data:`_MODELS`, keyed by (backend, model, device): a long-lived
analysis actor loads each once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ingest.errors import PermanentStepError, VidbriefError
from ingest.names import ANALYSE_STEP
from ingest.settings import Settings
from pipeline import asr_models
from pipeline.hooks import NO_HOOKS, StepHooks
from pipeline.language_switch import Switch, switch_notice, transcribe_switches
from pipeline.languages import (
    LANGUAGE_DOUBT_PROBABILITY,
    LANGUAGE_OVERRIDE_PROBABILITY,
    whisper_code,
)
from pipeline.models import Notice, Segment, Word

__all__ = [
    "SAMPLE_RATE_HZ",
    "AudioReader",
    "SpeechOptions",
    "SpeechResult",
    "blocks",
    "clear_model_cache",
    "confidence_notices",
    "plan",
    "transcribe",
]

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16_000
BYTES_PER_SAMPLE = 4  # float32
BLOCK_SECONDS = 120.0  # longest stretch of audio held and transcribed at once
CUT_SEARCH_SECONDS = 5.0  # a block ends at the quietest point of its last seconds
QUIET_FRAME_SECONDS = 0.05
WINDOW_SECONDS = 30  # Whisper's input length (transformers windows)
WINDOW_CUT_SEARCH_SECONDS = 3.0
SILENT_WINDOW_PEAK = 1e-3  # a window whose loudest sample is below this holds no speech
MAX_NEW_TOKENS = 224  # Whisper's own sample length for a 30 s window
TRANSFORMERS_BATCH_WINDOWS = {"cuda": 16, "cpu": 4}
BEAM_SIZE = 5
#: Seed of the fallback's sampling, set before each call (see ``_reseed``).
SAMPLING_SEED = 0
#: A segment is doubtful under this average token log-probability or over this no-speech
#: probability. Whisper's own fallback threshold (-1.0) is far too lax to warn a reader:
#: measured with Whisper base on espeak-ng speech (``bench media``), clean English averages
#: -0.36 (WER 7 %), pink noise at 10 dB -0.37 (WER 15 %), white noise at 10 dB -0.58
#: (WER 34 %), at 0 dB -0.70 (WER 50 %).
LOW_AVG_LOGPROB = -0.55
HIGH_NO_SPEECH_PROB = 0.6
#: An English-only model whose segments mostly fall under Whisper's own fallback threshold
#: is reading another language (tiny.en on German speech: -1.4 to -2.1).
UNREADABLE_AVG_LOGPROB = -1.0
#: A transcript whose low-confidence segments hold at least this share of its time is flagged.
LOW_CONFIDENCE_SHARE = 0.5
#: Less speech than this (seconds, by VAD) is too little to call a transcript unreliable.
MIN_SPEECH_FOR_NOTICE_S = 3.0

#: (backend, model, device) -> a loaded model; lives as long as the process.
_MODELS: dict[tuple[str, str, str], Any] = {}
#: (backend, model, device) combinations that failed to load here; not tried again.
_UNAVAILABLE: set[tuple[str, str, str]] = set()


class BackendUnavailable(VidbriefError, RuntimeError):
    """A backend cannot run here (library or model missing, GPU unusable): try the next."""


@dataclass(frozen=True)
class SpeechOptions:
    """What to transcribe with: the model setting, the spoken language (hint), word times."""

    model: str | None = None
    cache_dir: Path = Path(".")
    language: str | None = None  # BCP 47, from the job request
    word_timestamps: bool = True
    beam_size: int = BEAM_SIZE

    @classmethod
    def from_settings(cls, settings: Settings, language: str | None = None) -> SpeechOptions:
        return cls(
            model=settings.asr_model,
            cache_dir=settings.model_cache_dir,
            language=language,
            word_timestamps=settings.asr_word_timestamps,
        )


@dataclass(frozen=True)
class SpeechResult:
    segments: list[Segment]
    backend: str
    model: str
    device: str
    language: str | None
    language_probability: float | None = None
    speech_s: float | None = None  # seconds of speech found by VAD (faster-whisper)
    notices: list[Notice] = field(default_factory=list)


class AudioReader:
    """16 kHz mono float32 audio, from an array or a raw file, read a block at a time.

    A file is read with plain reads, not a memory map: mapped pages that were touched count in
    the process's resident memory until unmapped, which would grow with the recording.
    """

    def __init__(self, audio: np.ndarray | Path) -> None:
        self._array = audio if isinstance(audio, np.ndarray) else None
        self._path = None if isinstance(audio, np.ndarray) else Path(audio)
        self.samples = (
            len(audio)
            if isinstance(audio, np.ndarray)
            else self._path.stat().st_size // BYTES_PER_SAMPLE  # type: ignore[union-attr]
        )

    def read(self, start: int, end: int) -> np.ndarray:
        if self._array is not None:
            return np.asarray(self._array[start:end], dtype=np.float32)
        count = max(0, min(end, self.samples) - start)
        return np.fromfile(
            self._path, dtype=np.float32, count=count, offset=start * BYTES_PER_SAMPLE
        )


def blocks(
    audio: AudioReader, block_s: float = BLOCK_SECONDS, search_s: float = CUT_SEARCH_SECONDS
) -> Iterator[tuple[float, np.ndarray]]:
    """(start seconds, samples) of consecutive blocks, each cut at a quiet point."""
    size, search = int(block_s * SAMPLE_RATE_HZ), int(search_s * SAMPLE_RATE_HZ)
    start = 0
    while start < audio.samples:
        samples = audio.read(start, start + size)
        if start + len(samples) < audio.samples:
            samples = samples[: quiet_point(samples, search)]
        yield start / SAMPLE_RATE_HZ, samples
        start += len(samples)


def quiet_point(samples: np.ndarray, search: int) -> int:
    """Index in ``samples`` of the middle of the quietest frame in its last ``search`` ones."""
    frame = int(QUIET_FRAME_SECONDS * SAMPLE_RATE_HZ)
    tail_start = max(frame, len(samples) - search)
    count = (len(samples) - tail_start) // frame
    if count < 1:
        return len(samples)
    tail = samples[tail_start : tail_start + count * frame].reshape(count, frame)
    quietest = int(np.argmin(np.square(tail).mean(axis=1)))
    return tail_start + quietest * frame + frame // 2


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


def transcribe(
    audio: np.ndarray | Path,
    settings: Settings,
    device: str,
    threads: int,
    *,
    language: str | None = None,
    hooks: StepHooks = NO_HOOKS,
) -> SpeechResult:
    """Timestamped segments of 16 kHz mono float32 ``audio`` (an array, or a raw file).
    ``hooks``: media seconds transcribed as progress; a cancel stops it (StepCancelled)."""
    options = SpeechOptions.from_settings(settings, language)
    reader = AudioReader(audio)
    errors = []
    for backend, dev in plan(settings.asr_backend, device):
        try:
            return _BACKENDS[backend](reader, options, dev, threads, hooks)
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


# --------------------------------------------------------------------------- language


@dataclass
class LanguageChoice:
    """The spoken language as decided so far (``fixed`` once decided for the whole file)."""

    code: str | None
    probability: float | None = None
    fixed: bool = False
    notices: list[Notice] = field(default_factory=list)


def start_language(tag: str | None, supported: list[str], multilingual: bool) -> LanguageChoice:
    """The choice before any audio is heard: the job's language, or to be detected."""
    if tag is None:
        return LanguageChoice(None if multilingual else "en", fixed=not multilingual)
    return LanguageChoice(whisper_code(tag, supported), fixed=not multilingual)


def unsupported_notice(tag: str, model: str) -> Notice:
    return Notice(
        code="language_unsupported",
        message=f"The speech is in {tag!r}, which the speech model {model!r} cannot "
        "transcribe: there is no transcript. Set VIDBRIEF_ASR_MODEL to a multilingual model "
        "(unset: the bundled Whisper base).",
    )


def decide_language(
    choice: LanguageChoice, hint: str | None, detected: str, probability: float
) -> LanguageChoice:
    """Combine the job's language (``choice.code`` from ``hint``) with a detection."""
    if choice.code is None or (
        detected != choice.code and probability >= LANGUAGE_OVERRIDE_PROBABILITY
    ):
        notices = list(choice.notices)
        if hint is not None:
            notices.append(
                Notice(
                    code="language_mismatch",
                    message=f"The job gives the language as {hint!r}, but the speech is "
                    f"{detected!r} (detected with probability {probability:.2f}): it was "
                    f"transcribed as {detected!r}.",
                )
            )
        elif probability < LANGUAGE_DOUBT_PROBABILITY:  # a guess: other languages together won
            notices.append(
                Notice(
                    code="language_uncertain",
                    message=f"The spoken language was detected as {detected!r} with probability "
                    f"{probability:.2f} only, and transcribed as such. If the transcript reads "
                    "wrong, submit the video again with its language.",
                )
            )
        return LanguageChoice(detected, round(float(probability), 3), True, notices)
    # The job's language stands. Detection agreeing with it is kept as its probability (the
    # report shows it, and a re-brief in another language may reuse this analysis).
    if detected == choice.code:
        return LanguageChoice(choice.code, round(float(probability), 3), True, choice.notices)
    notices = list(choice.notices)
    if probability >= LANGUAGE_DOUBT_PROBABILITY:  # more likely than every other together
        notices.append(
            Notice(
                code="language_uncertain",
                message=f"The speech sounds like {detected!r} (probability {probability:.2f}), "
                f"but the job gives the language as {hint!r}: it was transcribed as "
                f"{choice.code!r}. If the transcript reads wrong, submit the video again "
                "without a language (it is then detected).",
            )
        )
    return LanguageChoice(choice.code, None, True, notices)


# --------------------------------------------------------------------------- confidence


def is_low_confidence(segment: Segment, logprob: float = LOW_AVG_LOGPROB) -> bool:
    """Whether this segment's recognition is doubtful (see LOW_AVG_LOGPROB)."""
    return (segment.avg_logprob is not None and segment.avg_logprob < logprob) or (
        segment.no_speech_prob is not None and segment.no_speech_prob > HIGH_NO_SPEECH_PROB
    )


def low_confidence_share(segments: list[Segment], logprob: float = LOW_AVG_LOGPROB) -> float | None:
    """Share of the transcribed time in low-confidence segments (None: no confidences)."""
    return _share(segments, lambda s: is_low_confidence(s, logprob))


def _share(segments: list[Segment], counted: Callable[[Segment], bool]) -> float | None:
    """Share of the scored time in segments ``counted`` picks (None: nothing scored)."""
    scored = [s for s in segments if s.avg_logprob is not None]
    total = sum(max(0.0, s.end - s.start) for s in scored)
    if total <= 0:
        return None
    return sum(max(0.0, s.end - s.start) for s in scored if counted(s)) / total


def confidence_notices(segments: list[Segment], speech_s: float | None) -> list[Notice]:
    """A ``low_confidence`` Notice when most of the speech is unreliable or untranscribed."""
    share = low_confidence_share(segments)
    if share is not None and share >= LOW_CONFIDENCE_SHARE:
        return [
            Notice(
                code="low_confidence",
                message=f"{share:.0%} of the transcribed speech has low recognition "
                "confidence (noise, music, or an accent the model handles badly): the "
                "transcript, and the brief built from it, may be wrong in places.",
            )
        ]
    if not segments and (speech_s or 0.0) >= MIN_SPEECH_FOR_NOTICE_S:
        return [
            Notice(
                code="low_confidence",
                message=f"Voice activity was found ({speech_s:.0f} s) but the speech model "
                "recognised no words in it.",
            )
        ]
    return []


# --------------------------------------------------------------------------- faster-whisper


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
    loaded.model = CancelPoints(loaded.model)
    return loaded


#: The CTranslate2 calls faster-whisper makes; each is seconds of CPU on a 30 s window.
CT2_CALLS = frozenset({"encode", "generate", "align", "detect_language"})


class CancelPoints:
    """A faster-whisper model's CTranslate2 model, asking the running step's hooks before each
    of its calls. A cancel then takes effect between two calls (encode, generate — again for
    each temperature fallback —, align), not only between 30 s windows: a window on a CPU is
    several of them and seconds of work. CTranslate2 itself cannot be interrupted."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.hooks: StepHooks = NO_HOOKS

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._model, name)
        if name not in CT2_CALLS:
            return attr

        def checked(*args: Any, **kwargs: Any) -> Any:
            self.hooks.check(ANALYSE_STEP, now=True)
            return attr(*args, **kwargs)

        return checked


@contextlib.contextmanager
def _cancel_points(loaded: Any, hooks: StepHooks) -> Iterator[None]:
    """The step's hooks on the model's cancel points while it transcribes (one step at a time
    uses a process's models: the analysis actor runs one call at a time)."""
    points = loaded.model if isinstance(loaded.model, CancelPoints) else None
    if points is not None:
        points.hooks = hooks
    try:
        yield
    finally:
        if points is not None:
            points.hooks = NO_HOOKS


def _faster_whisper(
    audio: AudioReader, options: SpeechOptions, device: str, threads: int, hooks: StepHooks
) -> SpeechResult:
    choice = asr_models.resolve(options.model, options.cache_dir)
    loaded = _cached(
        ("faster-whisper", choice.source, device),
        lambda: _load_faster_whisper(choice.source, device, threads),
    )
    multilingual = bool(loaded.model.is_multilingual)
    language = start_language(options.language, loaded.supported_languages, multilingual)
    result = SpeechResult([], "faster-whisper", choice.name, device, language.code)
    if options.language is not None and language.code is None:
        return _replace(result, notices=[unsupported_notice(options.language, choice.name)])
    segments, speech_s, switches = [], 0.0, []
    total_s = audio.samples / SAMPLE_RATE_HZ
    with _cancel_points(loaded, hooks):
        for offset, block in blocks(audio, BLOCK_SECONDS, CUT_SEARCH_SECONDS):
            hooks.check(ANALYSE_STEP)
            speech = _speech_in(block)
            if speech is None:
                continue
            speech_s += len(speech) / SAMPLE_RATE_HZ
            if not language.fixed:
                language = decide_language(language, options.language, *_detect(loaded, speech))
            found = _transcribe_block(loaded, block, offset, language.code, options, hooks, total_s)
            if multilingual and language.code is not None:
                found, more = _other_languages(loaded, block, offset, found, language.code, options)
                switches += more
            segments += found
    hooks.progress("transcribing", total_s, total_s, final=True)
    if notice := switch_notice(switches, language.code):
        language = dataclasses.replace(language, notices=[*language.notices, notice])
    return _finish_faster_whisper(result, segments, speech_s, language, multilingual, options)


def _other_languages(
    loaded: Any,
    block: np.ndarray,
    offset: float,
    segments: list[Segment],
    language: str,
    options: SpeechOptions,
) -> tuple[list[Segment], list[Switch]]:
    """The block's doubtful passages that are surely in another language, transcribed in it
    (language_switch.py)."""

    def audio(start: float, end: float) -> np.ndarray:
        first = max(0, int((start - offset) * SAMPLE_RATE_HZ))
        return block[first : max(first, int((end - offset) * SAMPLE_RATE_HZ))]

    return transcribe_switches(
        segments,
        language,
        is_low_confidence,
        detect=lambda start, end: _detect(loaded, audio(start, end)),
        transcribe=lambda start, end, other: _transcribe_block(
            loaded, audio(start, end), start, other, options
        ),
    )


def _finish_faster_whisper(
    result: SpeechResult,
    segments: list[Segment],
    speech_s: float,
    language: LanguageChoice,
    multilingual: bool,
    options: SpeechOptions,
) -> SpeechResult:
    notices = list(language.notices) + confidence_notices(segments, speech_s)
    if not multilingual and options.language is None and _unreadable(segments, speech_s):
        # An English-only model on speech it cannot read: likely another language. Its
        # guesses are not a transcript (tiny.en turns German into English nonsense).
        notices = [_english_only_notice(result.model, speech_s)]
        segments = []
    return _replace(
        result,
        segments=segments,
        language=language.code if segments or multilingual else result.language,
        language_probability=language.probability,
        speech_s=round(speech_s, 3),
        notices=notices,
    )


def _unreadable(segments: list[Segment], speech_s: float) -> bool:
    """Speech an English-only model could not read at all: under Whisper's own -1.0 threshold,
    or read only by its sampled fallback. The fallback samples again until a guess clears that
    same threshold, so a guess may: tiny.en on German was "Good morning, everyone! Thank you
    for watching!" at -0.97 in 5 of 40 random seeds."""
    if speech_s < MIN_SPEECH_FOR_NOTICE_S:
        return False
    share = _share(segments, lambda s: is_low_confidence(s, UNREADABLE_AVG_LOGPROB) or _sampled(s))
    return share is None or share >= LOW_CONFIDENCE_SHARE


def _sampled(segment: Segment) -> bool:
    return (segment.temperature or 0.0) > 0.0


def _english_only_notice(model: str, speech_s: float) -> Notice:
    return Notice(
        code="language_unsupported",
        message=f"{speech_s:.0f} s of speech were found, but the English-only speech model "
        f"{model!r} could not recognise it: it is probably in another language. No transcript "
        "was made; unset VIDBRIEF_ASR_MODEL (multilingual Whisper base) or give the job's "
        "language.",
    )


def _replace(result: SpeechResult, **changes: Any) -> SpeechResult:
    return dataclasses.replace(result, **changes)


def _speech_in(block: np.ndarray) -> np.ndarray | None:
    """The block's speech (VAD chunks joined), or None when it holds none."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    chunks = get_speech_timestamps(block, VadOptions())
    if not chunks:
        return None
    return np.concatenate([block[c["start"] : c["end"]] for c in chunks])


def _detect(loaded: Any, speech: np.ndarray) -> tuple[str, float]:
    """The language of the first 30 s of ``speech``, and how sure the model is."""
    language, probability, _ = loaded.detect_language(
        audio=speech[: WINDOW_SECONDS * SAMPLE_RATE_HZ]
    )
    return language, float(probability)


def _transcribe_block(
    loaded: Any,
    block: np.ndarray,
    offset: float,
    language: str | None,
    options: SpeechOptions,
    hooks: StepHooks = NO_HOOKS,
    total_s: float | None = None,
) -> list[Segment]:
    _reseed()
    pieces, _ = loaded.transcribe(
        block,
        language=language,
        vad_filter=True,
        beam_size=options.beam_size,
        word_timestamps=options.word_timestamps,
    )
    out = []
    for piece in pieces:  # a generator: each 30 s window is decoded when asked for
        hooks.check(ANALYSE_STEP)
        hooks.progress("transcribing", offset + piece.end, total_s)
        if piece.text.strip():
            out.append(_segment(piece, offset))
    return out


def _reseed() -> None:
    """The same audio gives the same transcript. Whisper's fallback samples (temperatures
    above 0) from CTranslate2's process-wide generator, whose state earlier calls advance: a
    video would otherwise be transcribed differently depending on what the process did
    before."""
    import ctranslate2

    ctranslate2.set_random_seed(SAMPLING_SEED)


def _segment(piece: Any, offset: float) -> Segment:
    words = _words(piece.words, offset) if piece.words else None
    return Segment(
        start=round(offset + piece.start, 3),
        end=round(offset + piece.end, 3),
        text=piece.text.strip(),
        avg_logprob=round(float(piece.avg_logprob), 4),
        no_speech_prob=round(float(piece.no_speech_prob), 4),
        words=words,
        temperature=_temperature(piece),
    )


def _temperature(piece: Any) -> float | None:
    value = getattr(piece, "temperature", None)
    return None if value is None else round(float(value), 2)


#: Scripts written without spaces between words (Whisper splits them without any): Thai, Lao,
#: Myanmar, Khmer, CJK punctuation, kana, Han, full-width forms.
_UNSPACED = re.compile(
    r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    r"\uf900-\ufaff\uff00-\uffef]"
)


def _words(raw: Sequence[Any], offset: float) -> list[Word]:
    """Whisper's timed words as written words.

    Whisper starts a new "word" at punctuation, so "12,000" comes as " 12" and ",000", "3.5"
    as " 3" and ".5": joined with a space they would read "12 ,000" — in a quotation. In a
    script written with spaces every word starts with one, so a piece without it belongs to
    the word before; in one written without (Chinese, Japanese, Thai) pieces stay apart.
    """
    words: list[Word] = []
    for w in raw:
        text = w.word.strip()
        if not text:
            continue
        if words and _continues(words[-1].text, w.word):
            last = words[-1]
            words[-1] = Word(start=last.start, end=offset + w.end, text=last.text + text)
        else:
            words.append(Word(start=offset + w.start, end=offset + w.end, text=text))
    return words


def _continues(before: str, piece: str) -> bool:
    """Whether Whisper's ``piece`` is the rest of the word ``before`` (no space between)."""
    return not (piece[:1].isspace() or _UNSPACED.match(piece[:1]) or _UNSPACED.match(before[-1:]))


# --------------------------------------------------------------------------- transformers


def _load_transformers(name: str, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    dtype = torch.float16 if device == "cuda" else torch.float32
    model = WhisperForConditionalGeneration.from_pretrained(name, dtype=dtype)
    return model.to(device).eval(), WhisperProcessor.from_pretrained(name)


def _windows(audio: AudioReader) -> Iterator[tuple[float, np.ndarray]]:
    """(start seconds, samples) of each window of at most 30 s that is not silent."""
    for start, window in blocks(audio, WINDOW_SECONDS, WINDOW_CUT_SEARCH_SECONDS):
        if window.size and float(np.abs(window).max()) >= SILENT_WINDOW_PEAK:
            yield start, window


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


def _transformers(
    audio: AudioReader, options: SpeechOptions, device: str, threads: int, hooks: StepHooks
) -> SpeechResult:
    import torch

    name = _transformers_name(options)
    loaded, processor = _cached(
        ("transformers", name, device), lambda: _load_transformers(name, device)
    )
    multilingual = bool(getattr(loaded.generation_config, "is_multilingual", False))
    known = list(getattr(loaded.generation_config, "lang_to_id", None) or {})
    supported = [t.strip("<|>") for t in known] if multilingual else ["en"]
    language = start_language(options.language, supported, multilingual)
    result = SpeechResult([], "transformers", name, device, language.code)
    if options.language is not None and language.code is None:
        return _replace(result, notices=[unsupported_notice(options.language, name)])
    segments: list[Segment] = []
    total_s = audio.samples / SAMPLE_RATE_HZ
    with torch.inference_mode():
        for batch in _batches(_windows(audio), TRANSFORMERS_BATCH_WINDOWS[device]):
            hooks.check(ANALYSE_STEP)
            windows = [w for _, w in batch]
            if not language.fixed:
                detected = _detect_transformers(loaded, processor, windows[0], device)
                language = decide_language(language, options.language, *detected)
            sequences = _generate(loaded, processor, windows, device, language.code, hooks)
            hooks.check(ANALYSE_STEP, now=True)  # a cancel stops generate early: cut tokens
            for (offset, window), seq in zip(batch, sequences, strict=True):
                segments += _window_segments(processor, seq, offset, len(window))
            hooks.progress(
                "transcribing", batch[-1][0] + len(batch[-1][1]) / SAMPLE_RATE_HZ, total_s
            )
    return _replace(
        result,
        segments=segments,
        language=language.code,
        language_probability=language.probability,
        notices=list(language.notices),
    )


def _transformers_name(options: SpeechOptions) -> str:
    """The transformers model folder or hub id; BackendUnavailable if it cannot be made."""
    try:
        return asr_models.transformers_model(options.model, options.cache_dir)
    except (ImportError, OSError, ValueError, KeyError) as e:
        raise BackendUnavailable(f"no transformers model for {options.model!r}: {e}") from e


def _detect_transformers(
    model: Any, processor: Any, window: np.ndarray, device: str
) -> tuple[str, float]:
    """The most likely language of one window, and its probability (first decoder step)."""
    import torch

    features = processor.feature_extractor(
        [window], sampling_rate=SAMPLE_RATE_HZ, return_tensors="pt"
    ).input_features.to(device, dtype=model.dtype)
    start = torch.tensor([[model.generation_config.decoder_start_token_id]], device=device)
    logits = model(input_features=features, decoder_input_ids=start).logits[0, -1].float()
    names, ids = zip(*model.generation_config.lang_to_id.items(), strict=True)
    probs = logits[list(ids)].softmax(-1)
    best = int(probs.argmax())
    return names[best].strip("<|>"), float(probs[best])


def _generate(
    model: Any,
    processor: Any,
    windows: list[np.ndarray],
    device: str,
    language: str | None,
    hooks: StepHooks = NO_HOOKS,
) -> Any:
    features = processor.feature_extractor(
        windows, sampling_rate=SAMPLE_RATE_HZ, return_tensors="pt"
    ).input_features
    features = features.to(device, dtype=model.dtype)
    kwargs: dict[str, Any] = {"return_timestamps": True, "max_new_tokens": MAX_NEW_TOKENS}
    if hooks.cancelled is not None:  # a cancel ends a batch at its next token, not its last
        kwargs["stopping_criteria"] = _cancel_criteria(hooks)
    if getattr(model.generation_config, "is_multilingual", False):
        # transformers strips the prompt from what it returns: the language is decided here.
        kwargs.update(language=language, task="transcribe")
    out = model.generate(features, **kwargs)
    return out if not hasattr(out, "sequences") else out.sequences


def _cancel_criteria(hooks: StepHooks) -> Any:
    """A transformers stopping criterion that ends generation once the step is cancelled."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            stop = bool(hooks.cancelled and hooks.cancelled())
            return torch.full((input_ids.shape[0],), stop, device=input_ids.device)

    return StoppingCriteriaList([Cancelled()])


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


_BACKENDS: dict[str, Callable[[AudioReader, SpeechOptions, str, int], SpeechResult]] = {
    "faster-whisper": _faster_whisper,
    "transformers": _transformers,
}
