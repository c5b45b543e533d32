"""Grounding: every quote found in the transcript, every chapter fitted to the video.

Quotes. A key point's quote is located in the transcript after normalisation (case,
punctuation, numbers, whitespace: :mod:`pipeline.text`), across segment boundaries. The match
is fuzzy with a stated threshold: the normalised quote and a window of transcript words must
reach :data:`MATCH_THRESHOLD` in rapidfuzz's normalised Indel similarity (``fuzz.ratio``, 0–100:
100 minus the share of characters that must be inserted or deleted); quotes of fewer than
:data:`MIN_FUZZY_TOKENS` words must match exactly, since short strings resemble too much. When
the same words are spoken more than once, the occurrence nearest the model's time wins. A
matched quote is *replaced by the transcript's own words* and its time by the time those words
start (word times where the ASR gave them, else interpolated inside the segment): what is
printed as a quotation is always what was said, where it was said.

rapidfuzz (C++, MIT, already in the tree through jiwer) does the similarity; its
``process.extract`` scores every window of the transcript in one native call, so a four-hour
transcript is searched in tens of milliseconds per quote.

Chapters. Clipped to the video, ordered, made non-overlapping, boundaries snapped to the nearest
shot or transcript boundary within :data:`SNAP_S`; a chapter whose summary shares no content
word with what is said inside it is reported (it is not what was said there).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.models import Chapter, KeyPoint, Segment, Shot
from pipeline.text import (
    STOPWORDS,
    TimedWord,
    content_words,
    join_words,
    normalise,
    timed_words,
)

MATCH_THRESHOLD = 85.0  # rapidfuzz fuzz.ratio on normalised text, 0-100
MIN_FUZZY_TOKENS = 4  # shorter quotes must match word for word
CANDIDATES = 12  # best windows refined per quote
REFINE_TOKENS = 3  # a window's ends move by up to this many words while refining
TIE_SCORE = 1.0  # scores this close count as equal: then the nearest time wins
SNAP_S = 3.0  # chapter boundaries move to a shot or transcript boundary this close
MIN_CHAPTER_S = 1.0  # a chapter shorter than this after fitting is merged away


@dataclass(frozen=True)
class Match:
    """Where a quote was found: transcript words [first, last), their text, when they start."""

    first: int
    last: int
    text: str
    start: float
    score: float


@dataclass
class TranscriptIndex:
    """The transcript as normalised tokens, each pointing back at its written word."""

    words: list[TimedWord]
    tokens: list[str]
    owner: list[int]  # token → index of its written word
    lang: str = "en"
    _windows: dict[int, list[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, segments: Sequence[Segment], lang: str = "en") -> TranscriptIndex:
        words = timed_words(segments)
        tokens, owner = [], []
        for i, word in enumerate(words):
            for token in normalise(word.text, lang):
                tokens.append(token)
                owner.append(i)
        return cls(words, tokens, owner, lang)

    def window_texts(self, size: int) -> list[str]:
        """Every run of ``size`` consecutive tokens, joined (cached per size)."""
        if size not in self._windows:
            t = self.tokens
            self._windows[size] = [" ".join(t[i : i + size]) for i in range(len(t) - size + 1)]
        return self._windows[size]

    def locate(self, quote: str, near: float | None = None) -> Match | None:
        """The quote's place in the transcript, or None when nothing reaches the threshold."""
        wanted = normalise(quote, self.lang)
        if not wanted or len(wanted) > len(self.tokens):
            return None
        exact = len(wanted) < MIN_FUZZY_TOKENS
        threshold = 100.0 if exact else MATCH_THRESHOLD
        found = [m for m in self._candidates(wanted, threshold) if m[2] >= threshold]
        if not found:
            return None
        best = max(score for _, _, score in found)
        tied = [m for m in found if m[2] >= best - TIE_SCORE]
        first, last, score = min(tied, key=lambda m: self._distance(m[0], near))
        return self._match(first, last, score)

    def _candidates(self, wanted: list[str], threshold: float) -> list[tuple[int, int, float]]:
        from rapidfuzz import fuzz, process

        query, size = " ".join(wanted), len(wanted)
        windows = self.window_texts(size)
        rough = process.extract(
            query, windows, scorer=fuzz.ratio, limit=CANDIDATES,
            score_cutoff=max(0.0, threshold - 15),
        )  # fmt: skip
        return list(dict.fromkeys(self._refine(query, start, size) for _, _, start in rough))

    def _refine(self, query: str, start: int, size: int) -> tuple[int, int, float]:
        """The best window near ``start``: both ends moved by up to REFINE_TOKENS words."""
        from rapidfuzz import fuzz

        n = len(self.tokens)
        windows = [
            (first, last)
            for first in range(max(0, start - REFINE_TOKENS), min(n, start + REFINE_TOKENS + 1))
            for last in range(
                first + max(1, size - REFINE_TOKENS), min(n, first + size + REFINE_TOKENS) + 1
            )
        ]
        scored = [(fuzz.ratio(query, " ".join(self.tokens[a:b])), a, b) for a, b in windows]
        # Best score; on a tie the window that moved least (a repeat nearby is another place).
        score, first, last = max(scored, key=lambda w: (w[0], -abs(w[1] - start), w[1] - w[2]))
        return first, last, score

    def _distance(self, first_token: int, near: float | None) -> float:
        return 0.0 if near is None else abs(self.words[self.owner[first_token]].start - near)

    def _match(self, first: int, last: int, score: float) -> Match:
        a, b = self.owner[first], self.owner[last - 1]
        text = join_words(w.text for w in self.words[a : b + 1])
        return Match(first, last, text, self.words[a].start, round(score, 1))

    def span_words(self, start: float, end: float) -> set[str]:
        """Content words spoken in [start, end)."""
        said = [w.text for w in self.words if start <= w.start < end]
        return set(content_words(" ".join(said), self.lang))


# --- key points -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Grounded:
    """Key points whose quotes were found (rewritten to the transcript) and those that were not."""

    kept: list[KeyPoint]
    spans: list[tuple[int, int]]
    failed: list[tuple[int, KeyPoint]]


def ground_key_points(points: Sequence[KeyPoint], index: TranscriptIndex) -> Grounded:
    """Locate every quote; keep found ones with the transcript's words and time, in time order."""
    kept: list[tuple[KeyPoint, tuple[int, int]]] = []
    failed: list[tuple[int, KeyPoint]] = []
    for i, point in enumerate(points):
        match = index.locate(point.quote, near=point.start)
        if match is None:
            failed.append((i, point))
        elif (match.first, match.last) not in {span for _, span in kept}:  # the same evidence
            quote = match.text[:1000]
            kept.append(
                (
                    point.model_copy(update={"quote": quote, "start": match.start}),
                    (match.first, match.last),
                )
            )
    kept.sort(key=lambda pair: pair[0].start)
    return Grounded([p for p, _ in kept], [s for _, s in kept], failed)


def failure_lines(failed: Sequence[tuple[int, KeyPoint]]) -> list[str]:
    """The repair prompt's list of quotes that are not in the transcript."""
    return [
        f'key_points.{i}.quote: "{kp.quote[:300]}" is not in the transcript; copy the words '
        "exactly as they are spoken there, or leave this key point out"
        for i, kp in failed
    ]


# --- chapters -------------------------------------------------------------------------------


def boundaries(
    shots: Sequence[Shot], segments: Sequence[Segment], duration_s: float
) -> list[float]:
    """Times where a chapter may begin or end: shot cuts, segment starts and ends, 0, the end."""
    times = {0.0, duration_s}
    times.update(s.start for s in shots)
    times.update(t for s in segments for t in (s.start, s.end))
    return sorted(t for t in times if 0.0 <= t <= duration_s)


def snap(t: float, marks: Sequence[float]) -> float:
    """The nearest mark within SNAP_S of ``t``, else ``t``."""
    nearest = min(marks, key=lambda m: abs(m - t), default=t)
    return nearest if abs(nearest - t) <= SNAP_S else t


def fit_chapters(
    chapters: Sequence[Chapter], duration_s: float, marks: Sequence[float]
) -> list[Chapter]:
    """Chapters inside [0, duration], in order, not overlapping, boundaries snapped to marks."""
    inside = []
    for ch in chapters:
        start, end = max(0.0, min(ch.start, ch.end)), min(duration_s, max(ch.start, ch.end))
        if end - start >= MIN_CHAPTER_S:
            inside.append(
                ch.model_copy(update={"start": snap(start, marks), "end": snap(end, marks)})
            )
    inside.sort(key=lambda c: (c.start, c.end))
    out: list[Chapter] = []
    for ch in inside:
        if out and ch.start < out[-1].end:  # overlap: the later chapter starts where it ends
            ch = ch.model_copy(update={"start": out[-1].end})
        if ch.end - ch.start >= MIN_CHAPTER_S:
            out.append(ch)
    return _close_small_gaps(out)


def _close_small_gaps(chapters: list[Chapter]) -> list[Chapter]:
    # Rounding and snapping leave slivers between chapters the model meant to be adjacent.
    out = list(chapters)
    for i in range(len(out) - 1):
        if 0 < out[i + 1].start - out[i].end <= SNAP_S:
            out[i] = out[i].model_copy(update={"end": out[i + 1].start})
    return out


def unsupported_chapters(chapters: Sequence[Chapter], index: TranscriptIndex) -> list[Chapter]:
    """Chapters whose summary shares no content word with what is said inside them."""
    flagged = []
    for ch in chapters:
        said = index.span_words(ch.start, ch.end)
        summary = set(content_words(ch.summary, index.lang))
        if said and summary and not summary & said and not _stems(summary) & _stems(said):
            flagged.append(ch)
    return flagged


def unsupported_title(title: str, index: TranscriptIndex, source_title: str | None) -> bool:
    """Whether the title shares no content word with what is said in the video, nor with the
    title the video came with (the model is given it).

    A title may be abstractive ("Quarterly review" of a talk about revenue), but one with no word
    of the talk at all ("Breath of Life" for a safety briefing) was invented. Titles are checked
    by words, not names: Title Case capitalises every word.
    """
    said = index.span_words(0.0, math.inf) | set(content_words(source_title or "", index.lang))
    words = set(content_words(title, index.lang))
    return bool(said and words) and not words & said and not _stems(words) & _stems(said)


#: Languages whose writing capitalises names only (and sentence starts): a capital mid-sentence
#: marks a name there. German capitalises every noun, so only its numbers are checked.
NAME_CASE_LANGUAGES = frozenset({"en", "fr", "es", "it", "pt", "nl", "sv", "da", "no", "pl"})
MAX_UNSUPPORTED_SHOWN = 6
_WRITTEN_NUMBER = re.compile(r"(?<!\w)\d[\d.,]*%?")
_NAME_WORD = re.compile(r"[A-ZÀ-ÖØ-Þ][\w'’-]+")
_PUNCTUATION = "\"'“”‘’()[]{}.,;:!?…"


def unsupported_specifics(texts: Sequence[str], index: TranscriptIndex) -> list[str]:
    """Names and numbers the brief's prose states that the transcript never says.

    A summary can paraphrase, but a person, a place or a figure it gives must have been said:
    "Tracy" or "40 %" absent from the transcript is an invention (a small model's summary of a
    talk about Lisbon spoke of "Tracy and the Lions"). Numbers compare spelled out, as quotes do.
    """
    said = set(index.tokens)
    missing: dict[str, None] = {}
    for term in (t for text in texts for t in _specifics(text, index.lang)):
        tokens = normalise(term, index.lang)
        if tokens and not all(t in said for t in tokens):
            missing[term] = None
    return list(missing)[:MAX_UNSUPPORTED_SHOWN]


def _specifics(text: str, lang: str) -> list[str]:
    """The figures of ``text``, and its names where capitals mark names only."""
    found = [m.group(0).rstrip(".,") for m in _WRITTEN_NUMBER.finditer(text)]
    if lang in NAME_CASE_LANGUAGES:
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            bare = [w.strip(_PUNCTUATION) for w in sentence.split()[1:]]  # not the first word
            found += [w for w in bare if _NAME_WORD.fullmatch(w) and w.lower() not in STOPWORDS]
    return found


def _stems(words: set[str]) -> set[str]:
    # A crude stem (five letters) so that "grows" and "growth" count as shared.
    return {w[:5] for w in words if len(w) >= 5}


def chapter_shots(chapters: Sequence[Chapter], shots: Sequence[Shot]) -> list[Shot | None]:
    """A shot for each chapter's picture: its keyframe inside the chapter, distinct if possible.

    Preference: an unused shot whose keyframe lies in the chapter, then an unused shot that
    overlaps it, then a used one of either kind; None when no shot touches the chapter.
    """
    used: set[int] = set()
    out: list[Shot | None] = []
    for ch in chapters:
        inside = [s for s in shots if ch.start <= s.keyframe_time < ch.end]
        overlapping = [s for s in shots if s.start < ch.end and s.end > ch.start]
        choice = next(
            (s for group in (inside, overlapping) for s in group if s.index not in used),
            (inside or overlapping or [None])[0],
        )
        if choice is not None:
            used.add(choice.index)
        out.append(choice)
    return out
