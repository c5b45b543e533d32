"""Subtitles as a transcript: ASS dialogue text, the gate, the choice of stream."""

from __future__ import annotations

from types import SimpleNamespace

from pipeline.models import Segment
from pipeline.subtitles import EmbeddedSubtitles, _Track, ass_text, coverage, passes_gate


def test_ass_dialogue_becomes_plain_text():
    assert ass_text("{\\an8}Hallo {\\b1}Welt{\\b0}\\Nzweite Zeile") == "Hallo Welt zweite Zeile"
    assert ass_text("Preis \\{\u2060netto\\}") == "Preis {netto}"
    assert ass_text("<i>kursiv</i>  und\\hmehr") == "kursiv und mehr"


def test_the_gate_wants_half_the_video_covered():
    cues = [Segment(start=0, end=4, text="a"), Segment(start=3, end=6, text="b")]
    assert coverage(cues, 10.0) == 0.6
    assert passes_gate(cues, 10.0) and not passes_gate(cues, 20.0)
    assert not passes_gate([], 10.0) and not passes_gate(cues, None)


def _track(index: int, language: str | None, *, default=False, forced=False, end=9.0) -> _Track:
    cues = [Segment(start=0.5, end=end, text=f"stream {index}")]
    return _Track(SimpleNamespace(index=index), language, default, forced, cues)


def test_the_stream_is_chosen_by_language_then_default_then_order():
    found = EmbeddedSubtitles(
        tracks={
            2: _track(2, "en"),
            3: _track(3, "de", forced=True),
            4: _track(4, "de"),
            5: _track(5, "fr", default=True),
            6: _track(6, "de", end=1.0),  # covers too little
        }
    )
    assert found.choose("de-CH", 10.0).stream == 4
    assert found.choose(None, 10.0).stream == 5  # no language asked: the default stream
    assert found.choose("it", 10.0) is None
    undecided = EmbeddedSubtitles(tracks={2: _track(2, "en"), 3: _track(3, "fr")})
    assert undecided.choose(None, 10.0) is None, "no guessing between languages"
    assert EmbeddedSubtitles(tracks={2: _track(2, None)}).choose(None, 10.0).stream == 2


def test_a_cue_without_duration_ends_at_the_next_or_after_four_seconds():
    track = _Track(SimpleNamespace(index=2), "en", False, False)
    track.cues = [Segment(start=0, end=0, text="a"), Segment(start=2, end=2, text="b")]
    chosen = EmbeddedSubtitles(tracks={2: track}).choose(None, 6.0)
    assert [(c.start, c.end) for c in chosen.cues] == [(0, 2), (2, 6)]
