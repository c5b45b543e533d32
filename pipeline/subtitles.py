"""Subtitles as a transcript: fetched WebVTT files and text streams inside the container.

Both go through one quality gate (:func:`passes_gate`: the cues must cover at least
:data:`SUBTITLE_MIN_COVERAGE` of the video) before they replace speech to text.

Streams inside the file (mov_text in MP4, WebVTT, SubRip and ASS in Matroska) are decoded with
PyAV's own subtitle decoders during the analysis pass (:class:`EmbeddedSubtitles`); FFmpeg turns
each into ASS dialogue, whose override tags are stripped here. Bitmap subtitles (DVD, PGS)
carry no text and are ignored. The stream is chosen by language: the job's language, else the
language tag of the audio stream being transcribed (no other language is used then); with
neither, the only text stream, or the one marked default — several streams and no default
are not guessed between (speech to text instead).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.languages import primary, same_language
from pipeline.models import Segment

__all__ = [
    "SUBTITLE_MIN_COVERAGE",
    "TEXT_SUBTITLE_CODECS",
    "ChosenSubtitles",
    "EmbeddedSubtitles",
    "coverage",
    "parse_vtt",
    "passes_gate",
]

log = logging.getLogger(__name__)

SUBTITLE_MIN_COVERAGE = 0.5  # share of the duration the cues must cover to replace ASR
TEXT_SUBTITLE_CODECS = frozenset({"mov_text", "webvtt", "subrip", "srt", "ass", "ssa", "text"})
DEFAULT_CUE_SECONDS = 4.0  # a cue stored without a duration lasts this long (or to the next)


def coverage(cues: list[Segment], duration: float) -> float:
    """Share of ``duration`` covered by the union of the cues."""
    covered, reach = 0.0, 0.0
    for cue in sorted(cues, key=lambda c: c.start):
        start, end = max(cue.start, reach), min(cue.end, duration)
        covered += max(0.0, end - start)
        reach = max(reach, end)
    return covered / duration


def passes_gate(cues: list[Segment], duration: float | None) -> bool:
    """Whether subtitles are complete enough to stand in for speech to text."""
    return bool(cues and duration and coverage(cues, duration) >= SUBTITLE_MIN_COVERAGE)


# --------------------------------------------------------------------------- WebVTT files

_VTT_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{3})")
_VTT_CUE = re.compile(rf"^\s*({_VTT_TIME.pattern})\s+-->\s+({_VTT_TIME.pattern})")
_VTT_TAG = re.compile(r"<[^>]*>")


def _vtt_seconds(stamp: str) -> float:
    h, m, s, ms = _VTT_TIME.match(stamp).groups()  # type: ignore[union-attr]
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _vtt_blocks(text: str) -> Iterator[tuple[float, float, str]]:
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = block.strip("\n").split("\n")
        for i, line in enumerate(lines):
            m = _VTT_CUE.match(line)
            if m:
                body = " ".join(_VTT_TAG.sub("", t).strip() for t in lines[i + 1 :])
                yield _vtt_seconds(m.group(1)), _vtt_seconds(m.group(6)), body.strip()
                break


def parse_vtt(text: str) -> list[Segment]:
    """WebVTT cues as segments: tags stripped, empty cues and rolling repeats dropped."""
    out: list[Segment] = []
    for start, end, body in _vtt_blocks(text):
        if not body or (out and body == out[-1].text):  # auto-captions repeat the last line
            continue
        out.append(Segment(start=start, end=end, text=body))
    return out


# --------------------------------------------------------------------------- container streams

_ASS_OVERRIDE = re.compile(r"\{[^}]*\}")
_SPACES = re.compile(r"\s+")
_WORD_JOINER = "\u2060"  # FFmpeg puts one after an escaped brace


def ass_text(dialogue: str) -> str:
    """Plain text of an ASS dialogue line: override blocks, markup, line breaks removed;
    escaped braces (literal text) kept.
    """
    text = _ASS_OVERRIDE.sub("", dialogue.replace("\\{", "\x00").replace("\\}", "\x01"))
    text = text.replace("\x00", "{").replace("\x01", "}").replace(_WORD_JOINER, "")
    text = text.replace("\\N", " ").replace("\\n", " ").replace("\\h", " ")
    return _SPACES.sub(" ", _VTT_TAG.sub("", text)).strip()


@dataclass(frozen=True)
class ChosenSubtitles:
    cues: list[Segment]
    language: str | None
    stream: int  # index in the container


@dataclass
class _Track:
    stream: Any  # only while the container is open
    language: str | None
    default: bool
    forced: bool
    cues: list[Segment] = field(default_factory=list)
    index: int = -1  # the stream's index in the container, kept past its closing

    def __post_init__(self) -> None:
        if self.index < 0:
            self.index = int(self.stream.index)


@dataclass
class EmbeddedSubtitles:
    """Cues of every text subtitle stream of a container, gathered packet by packet."""

    origin_s: float = 0.0  # the container's start time: cue times are made relative to it
    tracks: dict[int, _Track] = field(default_factory=dict)

    @classmethod
    def of(cls, container: Any, origin_s: float) -> EmbeddedSubtitles:
        import av

        found = cls(origin_s)
        for stream in container.streams.subtitles:
            if stream.codec_context.name not in TEXT_SUBTITLE_CODECS:
                continue
            found.tracks[stream.index] = _Track(
                stream,
                primary(stream.metadata.get("language")),
                bool(stream.disposition & av.stream.Disposition.default),
                bool(stream.disposition & av.stream.Disposition.forced),
            )
        return found

    @property
    def streams(self) -> list[Any]:
        return [t.stream for t in self.tracks.values()]

    def detach(self) -> EmbeddedSubtitles:
        """Drop the stream objects: they are invalid once their container is closed."""
        for track in self.tracks.values():
            track.stream = None
        return self

    def add(self, packet: Any) -> int:
        """Decode one subtitle packet into cues; the number of packets that failed (0 or 1)."""
        import av

        track = self.tracks.get(packet.stream.index)
        if track is None or packet.pts is None or not packet.size:
            return 0
        try:
            subtitles = packet.decode()
        except av.FFmpegError as e:
            log.debug("skipping a corrupt subtitle packet: %s", e)
            return 1
        start = float(packet.pts * packet.time_base) - self.origin_s
        length = float(packet.duration * packet.time_base) if packet.duration else 0.0
        for subtitle in subtitles:
            text = ass_text(_dialogue(subtitle))
            if text:
                track.cues.append(Segment(start=max(0.0, start), end=start + length, text=text))
        return 0

    def choose(self, language: str | None, duration: float | None) -> ChosenSubtitles | None:
        """The best stream that passes the gate (see the module docstring), or None."""
        for track in self._candidates(language):
            cues = _close_open_cues(track.cues)
            if passes_gate(cues, duration):
                return ChosenSubtitles(cues, track.language, track.index)
            log.info("embedded subtitles (stream %d) cover too little", track.index)
        return None

    def _candidates(self, language: str | None) -> list[_Track]:
        tracks = [t for t in self.tracks.values() if t.cues and not t.forced]
        if language is not None:
            tracks = [t for t in tracks if same_language(t.language, language)]
        elif len(tracks) > 1:
            # Several languages and nothing to choose by: a translation is not a transcript.
            tracks = [t for t in tracks if t.default]
        return sorted(tracks, key=lambda t: not t.default)  # stable: file order otherwise


def _dialogue(subtitle: Any) -> str:
    raw = getattr(subtitle, "dialogue", None)
    if raw is None:
        raw = getattr(subtitle, "text", b"")
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _close_open_cues(cues: list[Segment]) -> list[Segment]:
    """Cues in time order; one without a duration ends at the next or after a default time."""
    ordered = sorted(cues, key=lambda c: c.start)
    out = []
    for i, cue in enumerate(ordered):
        if cue.end <= cue.start:
            following = ordered[i + 1].start if i + 1 < len(ordered) else None
            end = cue.start + DEFAULT_CUE_SECONDS
            cue = cue.model_copy(update={"end": min(end, following) if following else end})
        out.append(cue)
    return out
