"""pipeline.offline_brief on a 20-minute meeting with planted facts (tests/talk_corpus.py)."""

from __future__ import annotations

import itertools
import re

import pytest
from rapidfuzz import fuzz
from talk_corpus import FACTS, meeting_talk

from pipeline.models import Analysis, Media, Segment
from pipeline.offline_brief import chapter_titles, offline_brief, split_sentences
from pipeline.text import normalise

#: Two key points whose words, sorted, are this alike are the same point said twice (the
#: recurring template with other numbers scores 80–90; different points under 60).
NEAR_DUPLICATE_RATIO = 75
MIN_FACT_COVERAGE = 0.8


@pytest.fixture(scope="module")
def talk():
    return meeting_talk()


@pytest.fixture(scope="module")
def brief(talk):
    media = Media(source_url="https://example.org/meeting.mp4", path="/tmp/m.mp4", size_bytes=1)
    return offline_brief(media, talk.analysis)


def coverage(brief, facts) -> float:
    said = brief.content.summary + " " + " ".join(kp.text for kp in brief.content.key_points)
    return sum(key in said for _, key in facts) / len(facts)


def near_duplicates(texts: list[str]) -> int:
    """Key points that nearly repeat an earlier one."""
    return sum(
        any(fuzz.token_sort_ratio(texts[i], texts[j]) >= NEAR_DUPLICATE_RATIO for j in range(i))
        for i in range(len(texts))
    )


def test_planted_facts_are_covered_without_repeats(talk, brief) -> None:
    assert coverage(brief, talk.facts) >= MIN_FACT_COVERAGE
    points = [kp.text for kp in brief.content.key_points]
    assert len(points) == 8 and near_duplicates(points) <= 1
    # The measure itself tells the template apart from different points.
    template = [s for s in talk.sentences if s.startswith("Sales in")][:3]
    assert near_duplicates(template) == 2


def test_only_whole_sentences(talk, brief) -> None:
    spoken = set(talk.sentences)
    summary_sentences = re.split(r"(?<=[.!?])\s+", brief.content.summary)
    assert summary_sentences and all(s in spoken for s in summary_sentences)
    for kp in brief.content.key_points:
        assert kp.text in spoken and kp.quote == kp.text
    for chapter in brief.content.chapters:
        assert all(s in spoken for s in re.split(r"(?<=[.!?])\s+", chapter.summary))


def test_key_points_are_spread_and_timed(talk, brief) -> None:
    duration = talk.analysis.duration_s
    eighths = {int(kp.start // (duration / 8)) for kp in brief.content.key_points}
    assert len(eighths) >= 6
    words = [(s.start, s.text) for s in talk.analysis.transcript]
    for kp in brief.content.key_points:  # the time its first word is said (±1 s)
        first = normalise(kp.text)[:3]
        starts = [t for t, text in words if normalise(text)[:3] == first]
        assert not starts or min(abs(t - kp.start) for t in starts) <= 1.0
    assert brief.grounding.checked == brief.grounding.matched == 8


def test_chapters_have_speech_titles_and_summaries_from_inside(talk, brief) -> None:
    chapters = brief.content.chapters
    sentences = split_sentences(talk.analysis.transcript)
    assert 4 <= len(chapters) <= 8
    assert chapters[0].start == 0.0 and chapters[-1].end == talk.analysis.duration_s
    for before, after in itertools.pairwise(chapters):
        assert before.end == after.start  # contiguous: silences belong to a chapter
    for chapter in chapters:
        inside = [s.text for s in sentences if chapter.start <= s.start < chapter.end]
        assert inside, f"empty chapter {chapter.title}"
        assert chapter.summary and all(
            s in inside for s in re.split(r"(?<=[.!?])\s+", chapter.summary)
        )
        said = " ".join(inside)
        for word in chapter.title.replace(",", "").split():  # whole words said in the chapter
            assert re.search(rf"\b{re.escape(word)}\b", said, flags=re.IGNORECASE), word
        assert not chapter.title.endswith("…") and not chapter.title.startswith("Part ")
    assert len({c.title for c in chapters}) == len(chapters)
    assert any("Rotterdam" in c.title for c in chapters)


def test_silence_never_makes_a_chapter() -> None:
    speech = [
        Segment(start=0.0, end=20.0, text="The first topic is the harbour crane."),
        Segment(start=200.0, end=220.0, text="The second topic is the railway bridge."),
    ]
    talk = meeting_talk().analysis.model_copy(
        update={"transcript": speech, "duration_s": 240.0, "shots": []}
    )
    brief = offline_brief(Media(source_url="x", path="x", size_bytes=1), talk)
    assert [c.summary for c in brief.content.chapters] == [s.text for s in speech]
    assert brief.content.chapters[0].end == brief.content.chapters[1].start


def test_titles_are_whole_words() -> None:
    texts = [["The Rotterdam warehouse will be built next year."],
             ["Starting in September, the Antwerp depot hires drivers."]]  # fmt: skip
    titles = chapter_titles(texts)
    assert titles[0].startswith("Rotterdam warehouse") and "Antwerp depot" in titles[1]
    for title, chapter in zip(titles, texts, strict=True):
        for word in title.replace(",", "").split():  # each a whole word of the chapter
            assert re.search(rf"\b{re.escape(word)}\b", chapter[0], flags=re.IGNORECASE), word


def test_facts_constant_is_the_corpus() -> None:
    assert len(FACTS) == 10 and len({key for _, key in FACTS}) == 10


def test_a_short_talk_still_has_key_points() -> None:
    """Two sentences fill the summary; they are the key points too, never none."""
    media = Media(source_url="https://example.org/short.mp4", path="/tmp/s.mp4", size_bytes=1)
    said = (
        "Welcome to the quarterly review, revenue grew by 12% this quarter and the new "
        "factory in Lisbon opens in March. Thank you for watching."
    )
    analysis = Analysis(
        duration_s=20.0,
        frames_sampled=40,
        sample_fps=2.0,
        shots=[],
        transcript=[Segment(start=0.5, end=14.0, text=said)],
        transcript_source="faster-whisper",
        language="en",
    )
    brief = offline_brief(media, analysis)
    points = [kp.quote for kp in brief.content.key_points]
    assert points and any("Lisbon" in q for q in points)
    assert brief.grounding.checked == len(points) == brief.grounding.matched
