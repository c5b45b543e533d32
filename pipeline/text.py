"""Words and sentences of a transcript, normalised so that written and spoken forms compare equal.

Normalisation (for matching quotes and comparing sentences, never for display): Unicode NFKC,
case folded, apostrophes dropped (``don't`` → ``dont``), numbers spelled out with num2words in
the transcript's language (``12%`` → ``twelve percent``, ``1,000`` → ``one thousand``, ``3rd``
→ ``third``), every other non-word character a separator, CJK ideographs and kana one token
each (those scripts do not put spaces between words).

Times: a word carries the time it is spoken: the speech-to-text word time when the segment has
``words``, else interpolated from its character offset inside its segment (speech runs at a
roughly even rate inside one segment).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pipeline.models import Segment

#: "12%" is read "twelve percent"; the word for "percent" in the languages num2words speaks
#: that we are likely to meet (others fall back to English, as do their numbers).
PERCENT_WORDS = {"en": "percent", "de": "prozent", "fr": "pour cent", "es": "por ciento",
                 "it": "per cento", "pt": "por cento", "nl": "procent"}  # fmt: skip
DEFAULT_LANGUAGE = "en"
MAX_SPELLED_NUMBER = 10**15  # larger numbers stay digits (num2words gives up around there)
_APOSTROPHES = re.compile(r"['’ʼ`]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th)?")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")
_TOKEN = re.compile(r"[^\W_]+")
# Han, kana, Hangul syllables: written without spaces, so one token per character.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_CJK_BREAK = re.compile(r"(?<=[。！？])")
SENTENCE_END = frozenset(".!?。！？…")
_CLOSERS = "\"'”’»)]}"
#: English function and filler words: not content (for salience and "shares nothing" checks).
_STOPWORDS_TEXT = """
    a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me more
    most my no nor not now of off on once only or other our ours out over own same she should so
    some such than that the their theirs them then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you
    your yours okay yeah um uh like really going get got gonna thing things know think right well
    let lets us dont thats its im youre were theyre ive weve one"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def language_of(tag: str | None) -> str:
    """The primary subtag of a BCP 47 tag, lower case (``de-CH`` → ``de``); English when none."""
    return (tag or DEFAULT_LANGUAGE).split("-")[0].split("_")[0].lower() or DEFAULT_LANGUAGE


@lru_cache(maxsize=4096)
def _spell_number(number: str, lang: str) -> str:
    """Digits as words: ``12`` → twelve, ``1,000`` → one thousand, ``3.5``, ``3rd``; any other
    run of digits and separators (``127.0.0.1``, ``12.03.2024``) digit group by digit group."""
    ordinal = number[-2:].isalpha()
    digits = number[:-2] if ordinal else number
    if _THOUSANDS.fullmatch(digits) or digits.isdigit():
        return _words(int(digits.replace(",", "")), lang, ordinal) or number
    if re.fullmatch(r"\d+[.,]\d+", digits):
        return _words(float(digits.replace(",", ".")), lang, False) or number
    return " ".join(_spell_number(part, lang) for part in re.findall(r"\d+", digits))


def _words(value: int | float, lang: str, ordinal: bool) -> str | None:
    from num2words import num2words

    if value >= MAX_SPELLED_NUMBER:
        return None
    for language in dict.fromkeys((lang, DEFAULT_LANGUAGE)):
        try:
            return num2words(value, lang=language, to="ordinal" if ordinal else "cardinal")
        except Exception:  # num2words raises many kinds per language: try the next one
            continue
    return None


def normalise(text: str, lang: str = DEFAULT_LANGUAGE) -> list[str]:
    """The comparable tokens of ``text`` (see the module docstring)."""
    text = _APOSTROPHES.sub("", unicodedata.normalize("NFKC", text).casefold())
    text = text.replace("%", f" {PERCENT_WORDS.get(lang, PERCENT_WORDS['en'])} ")
    text = _NUMBER.sub(lambda m: f" {_spell_number(m.group(0), lang)} ", text)
    tokens: list[str] = []
    for token in _TOKEN.findall(text):
        tokens.extend(_CJK.findall(token) if _CJK.search(token) else (token,))
    return tokens


def content_words(text: str, lang: str = DEFAULT_LANGUAGE) -> list[str]:
    """Normalised tokens that carry content: not stop words, three letters or more (any CJK)."""
    return [
        t for t in normalise(text, lang) if t not in STOPWORDS and (len(t) >= 3 or _CJK.match(t))
    ]


@dataclass(frozen=True)
class TimedWord:
    """One written word of the transcript (as shown), when it is spoken, and its segment."""

    text: str
    start: float
    segment: int


def timed_words(segments: Sequence[Segment]) -> list[TimedWord]:
    """Every word of the transcript in order, timed (word times where the ASR gave them)."""
    out: list[TimedWord] = []
    for index, segment in enumerate(segments):
        if segment.words:
            out += [
                TimedWord(w.text.strip(), w.start, index) for w in segment.words if w.text.strip()
            ]
        else:
            out += _interpolated(segment, index)
    return out


def _interpolated(segment: Segment, index: int) -> list[TimedWord]:
    text = _CJK_BREAK.sub(" ", segment.text)
    length = max(1, len(text))
    span = max(0.0, segment.end - segment.start)
    return [
        TimedWord(m.group(0), segment.start + span * m.start() / length, index)
        for m in re.finditer(r"\S+", text)
    ]


def ends_sentence(word: str) -> bool:
    """Whether a written word closes a sentence (``done.``, ``"Really?"``, ``好。``)."""
    stripped = word.rstrip(_CLOSERS)
    return bool(stripped) and stripped[-1] in SENTENCE_END and not _abbreviation(stripped)


def _abbreviation(word: str) -> bool:
    # "e.g." "Mr." "U.S.": a dot inside the word or a single capital is not a sentence end.
    core = word.rstrip(".")
    return word.endswith(".") and ("." in core or (len(core) <= 2 and core[:1].isupper()))


def join_words(words: Iterable[str]) -> str:
    """Written words back into text (no space between CJK words, which never had one)."""
    out = ""
    for word in words:
        glue = "" if not out or (_CJK.search(out[-1]) and _CJK.match(word)) else " "
        out += glue + word
    return out


def clip(text: str, chars: int) -> str:
    """``text`` cut to at most ``chars`` characters at a word boundary, with an ellipsis."""
    if len(text) <= chars:
        return text
    cut = text[: chars - 1]
    space = cut.rfind(" ")
    cut = cut[:space] if space > chars // 2 else cut  # one very long word: cut inside it
    return cut.rstrip(" ,;:-–—") + "…"
