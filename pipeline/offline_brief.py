"""The offline extractive brief: whole sentences of the transcript, chosen and arranged; no LLM.

Sentences: the transcript's words joined across segments and cut where a sentence ends
(``.!?。！？``), so no sentence is a piece of a segment glued to the next; a transcript without
punctuation (some subtitles) uses its segments; a run-on past :data:`MAX_SENTENCE_WORDS` words
is cut at a segment end.

Vectors: TF-IDF over content words (:func:`pipeline.text.content_words`; sublinear term
frequency, smoothed inverse document frequency, L2-normalised rows) with numpy — scikit-learn
would bring scipy (about 100 MB) for these few lines.

Relevance: the information a sentence carries — the mean inverse document frequency of its
content words (words said in many sentences carry little, words said in few carry the facts) —
divided by one plus the number of sentences it nearly repeats (a talk's refrain is not its
news), raised by up to :data:`SPECIFICS_BONUS` for numbers and names (facts are what a brief is
for), lowered for short fragments and run-ons. (Similarity to the centroid, as in MEAD, was
tried first: on a meeting with recurring phrasing it picks the refrain.)

Selection: maximal marginal relevance (Carbonell and Goldstein, 1998) with λ = :data:`MMR_LAMBDA`
over those vectors, and near-duplicates never chosen at all: a sentence whose content words
overlap a chosen one's by Jaccard ≥ :data:`NEAR_DUPLICATE_JACCARD` (the same template with other
numbers). The summary is the first picks, in time order; the key points are one pick per equal
slice of the video (spread over it), then the next best, in time order, none repeating the
summary.

Chapters: about one per :data:`CHAPTER_TARGET_S` (at most :data:`MAX_CHAPTERS`), cut at a shot
cut near each equal time mark, else at the nearest sentence start; a chapter in which nothing is
said is merged into its neighbour. A chapter's title is its most salient phrase (a run of
content words scored by TF-IDF against the other chapters), whole words only; its summary is
its own best sentences. Deterministic: the same transcript gives the same brief.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.chapter_titles import chapter_titles
from pipeline.grounding import TranscriptIndex, ground_key_points
from pipeline.models import (
    Analysis,
    Brief,
    BriefContent,
    Chapter,
    Grounding,
    KeyPoint,
    Media,
    Segment,
    Shot,
)
from pipeline.text import (
    TimedWord,
    clip,
    content_words,
    ends_sentence,
    join_words,
    language_of,
    timed_words,
)
from pipeline.timing import fmt_time, video_duration

SUMMARY_SENTENCES = 5
KEY_POINTS = 8
MAX_CHAPTERS = 8
CHAPTER_TARGET_S = 60.0  # about one chapter a minute, up to MAX_CHAPTERS
SHOT_SNAP_SHARE = 0.2  # a shot cut within this share of a chapter's length from its mark wins
CHAPTER_SUMMARY_SENTENCES = 2
CHAPTER_SUMMARY_CHARS = 600
TITLE_CHARS = 80
TITLE_SENTENCES = 3  # a chapter's title comes from its best sentences
MAX_SENTENCE_WORDS = 60  # a run-on past this is cut at a segment end
MIN_PUNCTUATED_SHARE = 1 / 40  # fewer sentence ends per word: the transcript is unpunctuated
SHORT_SENTENCE_WORDS = 6  # fewer content words than this scores down proportionally
LONG_SENTENCE_WORDS = 35  # more words than this scores down proportionally
SPECIFICS_BONUS = 0.5  # relevance × (1 + bonus × share of specifics, up to three)
MMR_LAMBDA = 0.7
NEAR_DUPLICATE_JACCARD = 0.5
MAX_VOCABULARY = 2_000  # most frequent content words kept as vector dimensions
REFRAIN_WORDS = 1_000  # most frequent repeated words compared for refrains
REFRAIN_SAMPLE = 3_000  # sentences each sentence is compared with for refrains
REFRAIN_BLOCK = 512  # rows compared at once (memory: block × sample floats)
_NAME = re.compile(r"^[A-ZÀ-ÖØ-Þ][\w'’-]+")


@dataclass(frozen=True)
class Sentence:
    """A whole transcript sentence and when it is spoken."""

    start: float
    end: float
    text: str


# --- sentences --------------------------------------------------------------------------------


def split_sentences(segments: Sequence[Segment]) -> list[Sentence]:
    """The transcript as whole sentences, across segment boundaries (see the module doc)."""
    words = timed_words(segments)
    if not words:
        return []
    ends = sum(ends_sentence(w.text) for w in words)
    punctuated = ends >= max(1, len(words) * MIN_PUNCTUATED_SHARE)
    groups: list[list[TimedWord]] = [[]]
    for i, word in enumerate(words):
        groups[-1].append(word)
        following = words[i + 1] if i + 1 < len(words) else None
        if following is not None and _ends_here(groups[-1], word, following, punctuated):
            groups.append([])
    return [_sentence(g, segments) for g in groups if g]


def _ends_here(
    current: list[TimedWord], word: TimedWord, following: TimedWord, punctuated: bool
) -> bool:
    segment_end = following.segment != word.segment
    if not punctuated:
        return segment_end
    return ends_sentence(word.text) or (segment_end and len(current) >= MAX_SENTENCE_WORDS)


def _sentence(words: list[TimedWord], segments: Sequence[Segment]) -> Sentence:
    end = segments[words[-1].segment].end
    return Sentence(round(words[0].start, 2), end, join_words(w.text for w in words))


# --- vectors and relevance --------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """Sentences as TF-IDF vectors, their content-word sets and their relevance."""

    sentences: list[Sentence]
    vectors: np.ndarray  # (n, vocabulary), rows L2-normalised
    words: list[frozenset[str]]
    relevance: np.ndarray  # (n,)

    @classmethod
    def of(cls, sentences: list[Sentence], lang: str) -> Space:
        tokens = [content_words(s.text, lang) for s in sentences]
        vectors = tfidf(tokens)
        factors = np.array(
            [_shape_factor(s.text, t) for s, t in zip(sentences, tokens, strict=True)]
        )
        relevance = _information(tokens) * factors / (1 + _refrains(tokens))
        return cls(sentences, vectors, [frozenset(t) for t in tokens], relevance)

    def similarity(self, i: int, chosen: Sequence[int]) -> float:
        if not chosen:
            return 0.0
        return float(np.max(self.vectors[list(chosen)] @ self.vectors[i]))

    def near_duplicate(self, i: int, chosen: Sequence[int]) -> bool:
        a = self.words[i]
        for j in chosen:
            b = self.words[j]
            if a and b and len(a & b) / len(a | b) >= NEAR_DUPLICATE_JACCARD:
                return True
        return False


def tfidf(documents: Sequence[Sequence[str]]) -> np.ndarray:
    """Sublinear TF × smoothed IDF, rows L2-normalised (zero rows stay zero)."""
    df: dict[str, int] = {}
    for doc in documents:
        for word in set(doc):
            df[word] = df.get(word, 0) + 1
    vocabulary = sorted(df, key=lambda w: (-df[w], w))[:MAX_VOCABULARY]
    column = {w: i for i, w in enumerate(vocabulary)}
    n = len(documents)
    idf = np.array([math.log((1 + n) / (1 + df[w])) + 1 for w in vocabulary], dtype=np.float32)
    matrix = np.zeros((n, len(vocabulary)), dtype=np.float32)
    for row, doc in enumerate(documents):
        for word in doc:
            if word in column:
                matrix[row, column[word]] += 1
    matrix = np.where(matrix > 0, 1 + np.log(np.maximum(matrix, 1)), 0) * idf
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


def _information(documents: Sequence[Sequence[str]]) -> np.ndarray:
    """Mean inverse document frequency of each sentence's distinct content words, scaled to 1.

    Words said in many sentences (a recurring phrase, the talk's filler) carry little; words
    said in few carry the facts.
    """
    df: dict[str, int] = {}
    for doc in documents:
        for word in set(doc):
            df[word] = df.get(word, 0) + 1
    n = len(documents)
    idf = {w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}
    top = max(idf.values(), default=1.0)
    return np.array(
        [sum(idf[w] for w in set(d)) / len(set(d)) / top if d else 0.0 for d in documents]
    )


def _refrains(documents: Sequence[Sequence[str]]) -> np.ndarray:
    """How many other sentences each one nearly repeats (content-word Jaccard at or above
    NEAR_DUPLICATE_JACCARD): a sentence said many times in nearly the same words is the talk's
    refrain, not its news.

    Counted against at most REFRAIN_SAMPLE sentences (evenly spaced, the count scaled up) and
    over the REFRAIN_WORDS most frequent words said in two sentences or more (a word said once
    is in no pair), in blocks of rows: time and memory stay bounded on any transcript.
    """
    sets = [set(d) for d in documents]
    n = len(sets)
    sizes = np.array([len(s) for s in sets], dtype=np.float32)
    df: dict[str, int] = {}
    for words in sets:
        for w in words:
            df[w] = df.get(w, 0) + 1
    shared_words = sorted((w for w, c in df.items() if c >= 2), key=lambda w: (-df[w], w))
    column = {w: i for i, w in enumerate(shared_words[:REFRAIN_WORDS])}
    incidence = np.zeros((n, len(column)), dtype=np.float32)
    for row, words in enumerate(sets):
        incidence[row, [column[w] for w in words if w in column]] = 1
    sample = np.unique(np.linspace(0, n - 1, min(n, REFRAIN_SAMPLE)).astype(int)) if n else []
    counts = np.zeros(n, dtype=np.float32)
    for lo in range(0, n, REFRAIN_BLOCK):
        rows = slice(lo, min(n, lo + REFRAIN_BLOCK))
        shared = incidence[rows] @ incidence[sample].T
        union = sizes[rows, None] + sizes[None, sample] - shared
        near = shared >= NEAR_DUPLICATE_JACCARD * np.maximum(union, 1)
        near &= shared > 0
        near[np.arange(rows.stop - lo)[:, None] + lo == sample[None, :]] = False  # itself
        counts[rows] = near.sum(axis=1)
    return counts * (n / max(1, len(sample)))


def _shape_factor(text: str, content: Sequence[str]) -> float:
    """Short fragments and run-ons down; numbers and names (specifics) up."""
    written = text.split()
    factor = min(1.0, len(content) / SHORT_SENTENCE_WORDS)
    factor *= min(1.0, LONG_SENTENCE_WORDS / max(1, len(written)))
    numbers = sum(any(c.isdigit() for c in w) for w in written)
    names = sum(bool(_NAME.match(w)) for w in written[1:])
    return factor * (1 + SPECIFICS_BONUS * min(3, numbers + names) / 3)


def mmr(space: Space, k: int, chosen: Sequence[int], allowed: Sequence[int]) -> list[int]:
    """Up to ``k`` more picks from ``allowed`` by maximal marginal relevance, no near-duplicate."""
    picks = list(chosen)
    added: list[int] = []
    for _ in range(k):
        best, best_score = None, -math.inf
        for i in allowed:
            if i in picks or space.relevance[i] <= 0 or space.near_duplicate(i, picks):
                continue
            score = MMR_LAMBDA * space.relevance[i] - (1 - MMR_LAMBDA) * space.similarity(i, picks)
            if score > best_score:
                best, best_score = i, score
        if best is None:
            break
        picks.append(best)
        added.append(best)
    return added


# --- the brief --------------------------------------------------------------------------------


def offline_brief(media: Media, analysis: Analysis) -> Brief:
    """The extractive brief of the transcript and the shots (see the module docstring)."""
    lang = language_of(analysis.language)
    sentences = split_sentences(analysis.transcript)
    duration = video_duration(media, analysis)
    space = Space.of(sentences, lang)
    everything = range(len(sentences))
    summary = mmr(space, SUMMARY_SENTENCES, [], everything)
    points = key_point_picks(space, summary, duration)
    index = TranscriptIndex.of(analysis.transcript, lang)
    # Checked like a model's quotes: each is found, with the time of its first word.
    grounded = ground_key_points([_key_point(sentences[i]) for i in points], index)
    content = BriefContent(
        title=offline_title(media, sentences),
        summary=_summary_text([sentences[i] for i in summary]),
        key_points=grounded.kept,
        chapters=offline_chapters(analysis.shots, space, duration, lang),
    )
    checked = len(points)
    found = checked - len(grounded.failed)
    return Brief(
        content=content,
        language=analysis.language,
        provider="offline",
        model=None,
        offline=True,
        grounding=Grounding(checked=checked, matched=found, dropped=checked - found),
    )


def _key_point(sentence: Sentence) -> KeyPoint:
    text = clip(sentence.text, 1000)
    return KeyPoint(text=text, start=sentence.start, quote=text)


def _summary_text(chosen: Sequence[Sentence]) -> str:
    text = " ".join(s.text for s in sorted(chosen, key=lambda s: s.start))
    return clip(text, 6000) or "No speech was found in this video; this brief lists its shots only."


def key_point_picks(space: Space, summary: Sequence[int], duration_s: float) -> list[int]:
    """Key points that do not repeat the summary — unless the talk is too short to have
    others: a short talk's few sentences are its key points too, never none."""
    points = spread_picks(space, KEY_POINTS, summary, duration_s)
    if len(points) < KEY_POINTS:
        points += mmr(space, KEY_POINTS - len(points), points, summary)
    return sorted(points, key=lambda i: space.sentences[i].start)


def spread_picks(space: Space, k: int, taken: Sequence[int], duration_s: float) -> list[int]:
    """``k`` picks spread over the video: the best of each equal time slice, then the best left."""
    picks: list[int] = []
    width = (duration_s or 1.0) / max(1, k)
    for slice_index in range(k):
        lo, hi = slice_index * width, (slice_index + 1) * width
        inside = [i for i, s in enumerate(space.sentences) if lo <= s.start < hi]
        picks += mmr(space, 1, [*taken, *picks], inside)
    picks += mmr(space, k - len(picks), [*taken, *picks], range(len(space.sentences)))
    return sorted(picks, key=lambda i: space.sentences[i].start)


def offline_title(media: Media, sentences: Sequence[Sentence]) -> str:
    if media.title and media.title.strip():
        return media.title.strip()[:300]
    if sentences:
        return clip(sentences[0].text, TITLE_CHARS)
    return "Untitled video"


# --- chapters ---------------------------------------------------------------------------------


def offline_chapters(
    shots: Sequence[Shot], space: Space, duration_s: float, lang: str = "en"
) -> list[Chapter]:
    """Chapters of about a minute, cut at shots or sentences, titled by their salient phrase."""
    if not space.sentences:
        return _silent_chapters(shots, duration_s)
    cuts = chapter_cuts(shots, space.sentences, duration_s)
    members = _members(space.sentences, cuts)
    spans = _merge_silent(cuts, members, duration_s)
    texts = [[space.sentences[i].text for i in m] for _, _, m in spans]
    best = [
        [space.sentences[i].text for i in _best(space, m, TITLE_SENTENCES)] for _, _, m in spans
    ]
    titles = chapter_titles(texts, best, lang)
    return [
        Chapter(title=title, start=start, end=end, summary=_chapter_summary(space, m))
        for (start, end, m), title in zip(spans, titles, strict=True)
    ]


def chapter_cuts(
    shots: Sequence[Shot], sentences: Sequence[Sentence], duration_s: float
) -> list[float]:
    """Chapter starts: 0, then near each equal time mark a shot cut, else a sentence start."""
    count = max(1, min(MAX_CHAPTERS, round(duration_s / CHAPTER_TARGET_S)))
    length = duration_s / count
    shot_starts = sorted({s.start for s in shots if 0 < s.start < duration_s})
    sentence_starts = sorted({s.start for s in sentences if 0 < s.start < duration_s})
    cuts = [0.0]
    for k in range(1, count):
        mark = k * length
        near = [t for t in shot_starts if abs(t - mark) <= SHOT_SNAP_SHARE * length]
        pool = near or sentence_starts
        if pool:
            cut = min(pool, key=lambda t: abs(t - mark))
            if cut > cuts[-1]:
                cuts.append(cut)
    return cuts


def _members(sentences: Sequence[Sentence], cuts: Sequence[float]) -> list[list[int]]:
    """Sentence indices of each chapter (a sentence belongs where it starts)."""
    members: list[list[int]] = [[] for _ in cuts]
    for i, s in enumerate(sentences):
        chapter = max(k for k, cut in enumerate(cuts) if s.start >= cut or k == 0)
        members[chapter].append(i)
    return members


def _merge_silent(
    cuts: list[float], members: list[list[int]], duration_s: float
) -> list[tuple[float, float, list[int]]]:
    """(start, end, sentences) of each chapter, a chapter with no speech merged into the last."""
    spans: list[tuple[float, float, list[int]]] = []
    for k, cut in enumerate(cuts):
        end = cuts[k + 1] if k + 1 < len(cuts) else duration_s
        if members[k] or not spans:
            spans.append((cut, end, list(members[k])))
        else:  # silence: the chapter before goes on through it
            start, _, m = spans[-1]
            spans[-1] = (start, end, m)
    if spans and not spans[0][2] and len(spans) > 1:  # a silent opening joins the next chapter
        _, end, m = spans[1]
        spans[1:2] = []
        spans[0] = (spans[0][0], end, m)
    return spans


def _chapter_summary(space: Space, members: Sequence[int]) -> str:
    best = mmr(space, CHAPTER_SUMMARY_SENTENCES, [], members) or list(members[:1])
    texts = [space.sentences[i].text for i in sorted(best)]
    while len(texts) > 1 and len(" ".join(texts)) > CHAPTER_SUMMARY_CHARS:
        texts.pop()
    return clip(" ".join(texts), 2000)


def _best(space: Space, members: Sequence[int], k: int) -> list[int]:
    """The ``k`` most relevant of ``members``."""
    return sorted(members, key=lambda i: -space.relevance[i])[:k]


def _silent_chapters(shots: Sequence[Shot], duration_s: float) -> list[Chapter]:
    """Without speech, the pictures are the content: chapters follow the shots."""
    ordered = sorted(shots, key=lambda s: s.start)
    if not ordered:
        return []
    count = min(MAX_CHAPTERS, len(ordered))
    groups = [
        ordered[len(ordered) * k // count : len(ordered) * (k + 1) // count] for k in range(count)
    ]
    out = []
    for group in groups:
        start, end = group[0].start, min(group[-1].end, duration_s or group[-1].end)
        title = f"Pictures from {fmt_time(start)} to {fmt_time(end)}"
        out.append(
            Chapter(
                title=title, start=start, end=max(start, end), summary="No speech in this part."
            )
        )
    return out
