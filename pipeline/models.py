"""Typed outputs of the steps: small, picklable, JSON-serialisable. Paths, never blobs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Notice(BaseModel):
    """Something the reader must know about a result (``result.json`` ``warnings``).

    ``code`` is stable and machine-readable (``truncated``, ``language_unsupported``,
    ``low_confidence``, ``ungrounded_quotes`` …); ``message`` is one sentence for people.
    """

    code: str
    message: str


class Word(BaseModel):
    """One recognised word with its times (speech to text that gives word timestamps)."""

    start: float
    end: float
    text: str


class Segment(BaseModel):
    """A stretch of speech (or a subtitle cue) with times in seconds from the start."""

    start: float
    end: float
    text: str
    #: Decoder confidence (speech to text only): mean token log-probability, and the
    #: probability that the window held no speech. None for subtitles.
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    words: list[Word] | None = None
    #: Whisper's decoding temperature: 0 for its beam search; above 0 where that failed its
    #: own checks and the text is a sampled fallback (a guess). None for subtitles.
    temperature: float | None = None
    #: Set where a passage was transcribed in another language than the transcript's
    #: (pipeline/language_switch.py); None: the transcript's language.
    language: str | None = None


class Media(BaseModel):
    """Output of ``download``: the video on the local disk of the node that fetched it."""

    source_url: str
    path: str
    size_bytes: int
    title: str | None = None
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    extractor: str | None = None
    #: Platform subtitles that passed the quality gate; used instead of speech to text.
    subtitles: list[Segment] | None = None
    subtitles_language: str | None = None
    #: The file's sha256: part of the key under which its analysis is kept (pipeline.keys).
    sha256: str | None = None


class Shot(BaseModel):
    """One shot between two hard cuts, with its keyframe image."""

    index: int
    start: float
    end: float
    keyframe_path: str
    keyframe_time: float


class Analysis(BaseModel):
    """Output of ``analyse``."""

    duration_s: float
    frames_sampled: int
    sample_fps: float
    shots: list[Shot]
    transcript: list[Segment]
    transcript_source: Literal["subtitles", "faster-whisper", "transformers", "none"]
    language: str | None = None
    #: How sure language detection was (None when the language was given or not detected).
    language_probability: float | None = None
    asr_model: str | None = None
    device: str = "cpu"
    #: Where speech to text ran (may differ from ``device``: CTranslate2 without CUDA 12).
    asr_device: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    #: What the reader must know about this analysis (truncated file, unsupported language …).
    warnings: list[Notice] = Field(default_factory=list)
    #: The duration the container declares (``duration_s`` is what was decoded).
    declared_duration_s: float | None = None
    #: Packets that could not be decoded and were skipped (a corrupt or cut file).
    decode_errors: int = 0
    #: The audio stream transcribed (its index in the container) and why it was chosen:
    #: ``only``, ``default``, ``speech`` (most speech in a probe), ``loudest``, ``first``.
    audio_stream: int | None = None
    audio_stream_reason: str | None = None
    #: The subtitle stream inside the container used as the transcript, when one was.
    subtitle_stream: int | None = None
    #: Seconds of speech that voice activity detection found (speech to text only).
    speech_s: float | None = None


class KeyPoint(BaseModel):
    """A key point, anchored at a time in the video and backed by a quote."""

    text: str = Field(..., min_length=1, max_length=1000)
    start: float = Field(..., ge=0)
    quote: str = Field(..., max_length=1000)


class Chapter(BaseModel):
    title: str = Field(..., min_length=1, max_length=300)
    start: float = Field(..., ge=0)
    end: float = Field(..., ge=0)
    summary: str = Field("", max_length=2000)


class BriefContent(BaseModel):
    """What the LLM must return (validated; one repair attempt when it does not)."""

    title: str = Field(..., min_length=1, max_length=300)
    summary: str = Field(..., min_length=1, max_length=6000)
    key_points: list[KeyPoint] = Field(default_factory=list, max_length=30)
    chapters: list[Chapter] = Field(default_factory=list, max_length=60)


class TokenUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    calls: int = 0


class Grounding(BaseModel):
    """How the key points' quotes were checked against the transcript."""

    checked: int = 0
    matched: int = 0
    repaired: int = 0
    dropped: int = 0


class Brief(BaseModel):
    """Output of ``brief``: the content plus who wrote it."""

    content: BriefContent
    language: str | None = None
    provider: str  # "openai", "deepseek", …, or "offline" for the extractive brief
    model: str | None = None
    offline: bool = False
    usage: TokenUsage = Field(default_factory=TokenUsage)
    grounding: Grounding = Field(default_factory=Grounding)
    warnings: list[Notice] = Field(default_factory=list)


class ReportFiles(BaseModel):
    """Output of ``report``: where the report and the machine-readable result are."""

    report_url: str
    result_url: str
    pages: int
