"""Speech in a second language: a doubtful passage in another language is transcribed again
in that language.

Whisper transcribes a block in one language. A passage in another one (an interview's second
speaker, a quoted clip) comes out forced into the first: Whisper base turned espeak German
("Die Kosten sind gestiegen, aber das Team ist gewachsen") into English it made up ("The costs
are fixed, but the steam is done") — a wrong fact in fluent words, recognisable only by its low
average log-probability. So each run of consecutive low-confidence segments of at least
:data:`MIN_RUN_S` is checked: its language is detected on its own audio (and, where the run as
a whole sounds like the transcript's language, its longer segments one by one); a passage that
sounds more like another language than like all others together is transcribed again in it,
and the new text is kept only where it reads clearly better. Its segments then say so
(``language``) and the report says where (``language_switch``). Noise or an accent in the
transcript's own language stays as it was: ``low_confidence`` already speaks for it.

The functions take the detection and the transcription as callables, so that this module
knows no model (speech.py passes the loaded Whisper's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.languages import LANGUAGE_OVERRIDE_PROBABILITY
from pipeline.models import Notice, Segment
from pipeline.timing import fmt_time

#: Shortest doubtful run worth a detection (Whisper's language detection needs a few seconds).
MIN_RUN_S = 3.0
#: Most passages named in the notice (the segments carry every one).
NOTICE_PASSAGES = 5
#: Inside a run that sounds like the transcript's language as a whole: the shortest segment
#: asked on its own, and how many are asked at most, last first (a switch inside a window
#: leaves the window's end in the other language; a later window is detected as a whole).
MIN_SPLIT_S = 1.0
MAX_SPLIT_CHECKS = 2
#: A passage is tried in another language that detection finds more likely than all others
#: together; the try is kept only if it reads clearly better (mean token log-probability up
#: by this much), which is what keeps noise in the transcript's own language as it was.
OTHER_LANGUAGE_PROBABILITY = 0.5
BETTER_BY = 0.1

Detect = Callable[[float, float], tuple[str, float]]
Transcribe = Callable[[float, float, str], list[Segment]]


@dataclass(frozen=True)
class Switch:
    """A passage transcribed again in another language."""

    start: float
    end: float
    language: str
    probability: float


def doubtful_runs(
    segments: Sequence[Segment], doubtful: Callable[[Segment], bool], min_s: float = MIN_RUN_S
) -> list[tuple[int, int]]:
    """Index ranges ``[i, j)`` of consecutive doubtful segments lasting at least ``min_s``."""
    runs, start = [], None
    for i, segment in enumerate([*segments, None]):
        if segment is not None and doubtful(segment):
            start = i if start is None else start
            continue
        if start is not None and segments[i - 1].end - segments[start].start >= min_s:
            runs.append((start, i))
        start = None
    return runs


def transcribe_switches(
    segments: list[Segment],
    language: str,
    doubtful: Callable[[Segment], bool],
    detect: Detect,
    transcribe: Transcribe,
) -> tuple[list[Segment], list[Switch]]:
    """``segments`` with each doubtful passage that sounds like another language transcribed
    again in it, where that reads better (:func:`detect` and :func:`transcribe` take a start
    and an end in seconds)."""
    out: list[Segment] = []
    switches: list[Switch] = []
    done = 0
    for i, j, detected in _passages(segments, language, doubtful, detect):
        start, end = segments[i].start, segments[j - 1].end
        other, probability = detected or detect(start, end)
        if not _sounds_other((other, probability), language):
            continue
        again = transcribe(start, end, other)
        if _score(again) < _score(segments[i:j]) + BETTER_BY:
            continue  # not clearly better read: the guess was wrong, or both are noise
        out += segments[done:i] + [s.model_copy(update={"language": other}) for s in again]
        switches.append(Switch(start, end, other, round(probability, 3)))
        done = j
    return out + segments[done:], switches


def _score(segments: Sequence[Segment]) -> float:
    """Mean token log-probability, weighted by time (-inf for nothing read)."""
    timed = [(s.end - s.start, s.avg_logprob) for s in segments if s.avg_logprob is not None]
    total = sum(t for t, _ in timed)
    return sum(t * p for t, p in timed) / total if total > 0 else -math.inf


def _sounds_other(detected: tuple[str, float], language: str) -> bool:
    other, probability = detected
    return other != language and probability >= OTHER_LANGUAGE_PROBABILITY


def _passages(
    segments: Sequence[Segment], language: str, doubtful: Callable[[Segment], bool], detect: Detect
) -> list[tuple[int, int, tuple[str, float] | None]]:
    """The doubtful runs to try, as index ranges, with the whole run's detection where that
    found the other language (None: detect the passage). A run that sounds like ``language``
    as a whole may still end in another one: Whisper decodes 30 s at a time, and a switch
    inside one window can give all its segments the window's low score, so the run is the
    whole window and the first language dominates its detection. Then its last segments of at
    least :data:`MIN_SPLIT_S` are asked one by one (at most :data:`MAX_SPLIT_CHECKS`: each is
    one encoder pass); one in another language is the passage, with the segments around it
    that do not surely sound like ``language`` (the other language may come first or last)."""
    out: list[tuple[int, int, tuple[str, float] | None]] = []
    for i, j in doubtful_runs(segments, doubtful):
        whole = detect(segments[i].start, segments[j - 1].end)
        if _sounds_other(whole, language):
            out.append((i, j, whole))
            continue
        longer = [k for k in range(i, j) if segments[k].end - segments[k].start >= MIN_SPLIT_S]
        for k in reversed(longer[-MAX_SPLIT_CHECKS:]) if j - i > 1 else []:
            if _sounds_other(detect(segments[k].start, segments[k].end), language):
                first = _edge(segments, k, i - 1, language, detect)
                out.append((first, _edge(segments, k, j, language, detect) + 1, None))
                break
    return out


def _edge(segments: Sequence[Segment], found: int, stop: int, language: str, detect: Detect) -> int:
    """The passage found at ``found`` grows toward ``stop`` (exclusive; before or after it)
    over the segments that do not surely sound like ``language`` (a short one cannot be told:
    it goes with it); at most :data:`MAX_SPLIT_CHECKS` are asked. Its last index that way."""
    step = 1 if stop > found else -1
    edge = found
    for k in range(found + step, stop, step)[:MAX_SPLIT_CHECKS]:
        other, probability = detect(segments[k].start, segments[k].end)
        if other == language and probability >= LANGUAGE_OVERRIDE_PROBABILITY:
            break
        edge = k
    return edge


def switch_notice(switches: Sequence[Switch], language: str | None) -> Notice | None:
    """The report's line for the passages transcribed in another language."""
    if not switches:
        return None
    shown = ", ".join(
        f"{fmt_time(s.start)}–{fmt_time(s.end)} in {s.language!r} ({s.probability:.2f})"
        for s in switches[:NOTICE_PASSAGES]
    )
    more = f" and {len(switches) - NOTICE_PASSAGES} more" if len(switches) > NOTICE_PASSAGES else ""
    return Notice(
        code="language_switch",
        message=f"Part of the speech is not in {language!r}: {shown}{more}. Those passages "
        "were transcribed in their own language.",
    )
