"""Chapter titles of the offline brief: each chapter's most salient phrases, whole words only.

A phrase is a run of up to :data:`MAX_PHRASE_WORDS` content words (stop words, punctuation and
numbers end it), shown as written. A word's salience is its TF-IDF weight with the chapters as
the documents, so a word said in every chapter names none of them; a phrase scores the sum of
its words' salience, doubled when it holds a name (a capital inside the sentence). A title is
the best phrase and the next one with other words, at most :data:`CHAPTER_TITLE_CHARS`
characters, different from every earlier chapter's title. RAKE-like; a keyword library (YAKE,
rake-nltk) would score within one text, not one chapter against the others.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from pipeline.text import STOPWORDS, normalise

CHAPTER_TITLE_CHARS = 70
MAX_PHRASE_WORDS = 3
NAME_BONUS = 1.0  # a phrase with a name counts double for a title
MAX_TITLE_TRIES = 20  # phrases considered for one chapter title
_QUOTES_AND_PUNCTUATION = "\"'“”‘’()[]{}.,;:!?…"
_NAME = re.compile(r"^[A-ZÀ-ÖØ-Þ][\w'’-]+")


def chapter_titles(
    chapter_texts: Sequence[Sequence[str]],
    candidate_texts: Sequence[Sequence[str]] | None = None,
    lang: str = "en",
) -> list[str]:
    """A title per chapter: the most salient phrases (runs of content words) of its best
    sentences (``candidate_texts``, default all), whole words, no numbers.

    A word's salience is its TF-IDF weight with chapters as the documents, so a word said in
    every chapter does not name any of them; a phrase scores the sum of its words' salience.
    """
    docs = [[w for p in _phrases(texts, lang) for w in p[1]] for texts in chapter_texts]
    vectors, vocabulary = _salience(docs)
    candidates = chapter_texts if candidate_texts is None else candidate_texts
    titles: list[str] = []
    for k, chapter in enumerate(_phrases(texts, lang) for texts in candidates):
        weight = {w: float(vectors[k, i]) for i, w in enumerate(vocabulary)}
        ranked = sorted(chapter, key=lambda p: (-_phrase_score(p, weight), p[0]))
        titles.append(_title(ranked, titles) or f"Part {k + 1}")
    return titles


def _salience(docs: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
    vocabulary = sorted({w for d in docs for w in d})
    column = {w: i for i, w in enumerate(vocabulary)}
    counts = np.zeros((len(docs), len(vocabulary)), dtype=np.float32)
    for row, doc in enumerate(docs):
        for w in doc:
            counts[row, column[w]] += 1
    df = (counts > 0).sum(axis=0)
    idf = np.log((1 + len(docs)) / (1 + df)) + 1
    return np.where(counts > 0, 1 + np.log(np.maximum(counts, 1)), 0) * idf, vocabulary


def _phrase_score(phrase: tuple[str, tuple[str, ...]], weight: dict[str, float]) -> float:
    """Its words' salience; a phrase that names something (a capital inside the sentence) is
    what a chapter is about more often than a common phrase."""
    shown, words = phrase
    named = any(_NAME.match(w) for w in shown.split())
    return sum(weight.get(w, 0.0) for w in set(words)) * (1 + NAME_BONUS * named)


def _phrases(texts: Sequence[str], lang: str) -> list[tuple[str, tuple[str, ...]]]:
    """(shown text, content words) of each run of content words, at most MAX_PHRASE_WORDS;
    stop words and punctuation end a run."""
    out: list[tuple[str, tuple[str, ...]]] = []
    for text in texts:
        run: list[tuple[str, list[str]]] = []
        for position, written in enumerate(text.split()):
            shown = written.strip(_QUOTES_AND_PUNCTUATION)
            if position == 0:  # a capital that starts the sentence names nothing
                shown = shown[:1].lower() + shown[1:] if shown[1:2].islower() else shown
            words = [t for t in normalise(shown, lang) if t not in STOPWORDS and len(t) >= 3]
            if any(c.isdigit() for c in shown):  # "120 people" names no chapter
                words = []
            if run and (not words or len(run) == MAX_PHRASE_WORDS):
                out.append(_phrase(run))
                run = []
            if words:
                run.append((shown, words))
            if run and written.rstrip("\"'”’)]}")[-1:] in ",.;:!?…":
                out.append(_phrase(run))
                run = []
        if run:
            out.append(_phrase(run))
    return out


def _phrase(run: list[tuple[str, list[str]]]) -> tuple[str, tuple[str, ...]]:
    return " ".join(s for s, _ in run), tuple(w for _, ws in run for w in ws)


def _title(ranked: Sequence[tuple[str, tuple[str, ...]]], taken: Sequence[str]) -> str:
    """The best phrases that make a title no earlier chapter has."""
    seen = {t.casefold() for t in taken}
    for first in range(min(len(ranked), MAX_TITLE_TRIES)):
        title = _combine(ranked[first:])
        if title and title.casefold() not in seen:
            return title
    return ""


def _combine(ranked: Sequence[tuple[str, tuple[str, ...]]]) -> str:
    """The first phrase, and the next one with other words while the title stays short."""
    parts: list[str] = []
    used: set[str] = set()
    for shown, words in ranked[:MAX_TITLE_TRIES]:
        if not shown or used & set(words):
            continue
        if len(", ".join([*parts, shown])) > CHAPTER_TITLE_CHARS:
            continue
        parts.append(shown)
        used.update(words)
        if len(parts) == 2 or len(used) >= MAX_PHRASE_WORDS:
            break
    title = ", ".join(parts)
    return title[:1].upper() + title[1:]
