"""A doubtful passage that is surely another language is transcribed again in it
(pipeline/language_switch.py); the model is replaced by callables here, the real one runs in
tests/test_pipeline_media_matrix.py."""

from __future__ import annotations

from pipeline.language_switch import doubtful_runs, switch_notice, transcribe_switches
from pipeline.models import Segment


def seg(start: float, end: float, text: str, logprob: float = -0.3) -> Segment:
    return Segment(start=start, end=end, text=text, avg_logprob=logprob, no_speech_prob=0.0)


def doubtful(segment: Segment) -> bool:
    return (segment.avg_logprob or 0.0) < -0.55


def test_only_runs_of_doubtful_speech_long_enough_to_tell_are_checked() -> None:
    segments = [
        seg(0, 5, "sure"),
        seg(5, 7, "?", -0.9),  # alone 2 s: too short to detect a language on
        seg(7, 12, "sure"),
        seg(12, 14, "?", -0.9),
        seg(14, 17, "?", -1.2),  # with the one before: 5 s
    ]
    assert doubtful_runs(segments, doubtful) == [(3, 5)]


def test_a_passage_surely_in_another_language_is_transcribed_in_it() -> None:
    segments = [
        seg(0, 6, "Welcome."),
        seg(15, 21, "The costs are fixed.", -0.92),
        seg(22, 30, "Bye."),
    ]
    asked = []

    def detect(start: float, end: float) -> tuple[str, float]:
        asked.append((start, end))
        return "de", 0.98

    def transcribe(start: float, end: float, language: str) -> list[Segment]:
        return [seg(start, end, "Die Kosten sind gestiegen.")]

    out, switches = transcribe_switches(segments, "en", doubtful, detect, transcribe)
    assert asked == [(15, 21)]  # the sure segments are never checked
    assert [(s.text, s.language) for s in out] == [
        ("Welcome.", None),
        ("Die Kosten sind gestiegen.", "de"),
        ("Bye.", None),
    ]
    notice = switch_notice(switches, "en")
    assert notice is not None and notice.code == "language_switch"
    assert "0:15–0:21 in 'de' (0.98)" in notice.message


def test_noise_in_the_same_language_or_a_guess_that_reads_no_better_changes_nothing() -> None:
    segments = [seg(0, 10, "muffled words", -0.8)]
    tried = []

    def transcribe(start: float, end: float, language: str) -> list[Segment]:
        tried.append(language)
        return [seg(start, end, "bruit", -0.85)]  # no better read: the guess was wrong

    for detected in [("en", 0.99), ("fr", 0.6), ("de", 0.3)]:
        out, switches = transcribe_switches(
            segments, "en", doubtful, lambda s, e, d=detected: d, transcribe
        )
        assert out == segments and switches == []
    assert tried == ["fr"]  # English is not tried again, nor an unlikely guess
    assert switch_notice([], "en") is None


def test_a_switch_inside_one_whisper_window_is_found_segment_by_segment() -> None:
    """Whisper gave every segment of a 30 s window the window's score: the run is the whole
    window, and as a whole it sounds like English."""
    segments = [
        seg(0.1, 2.7, "Welcome to the update!", -0.68),
        seg(3.0, 5.6, "Our team finished!", -0.68),
        seg(8.3, 9.1, "Guten Morgen!", -0.68),
        seg(9.4, 10.5, "Herzlich willkommen!", -0.68),
        seg(11.0, 13.5, "Herzog Herz und Hamburg!", -0.68),
    ]
    spoken = {  # measured on espeak German with Whisper base, passage by passage
        (0.1, 13.5): ("en", 0.71),
        (0.1, 2.7): ("en", 0.95),
        (3.0, 5.6): ("en", 0.9),
        (8.3, 9.1): ("de", 0.4),
        (9.4, 10.5): ("de", 0.97),
        (11.0, 13.5): ("de", 0.26),
        (8.3, 13.5): ("de", 0.69),
    }

    def transcribe(start: float, end: float, language: str) -> list[Segment]:
        return [seg(start, end, "Guten Morgen und herzlich willkommen, der Zug …", -0.56)]

    out, switches = transcribe_switches(
        segments, "en", doubtful, lambda s, e: spoken[(s, e)], transcribe
    )
    assert [s.text for s in out[:2]] == ["Welcome to the update!", "Our team finished!"]
    assert [(s.start, s.language) for s in out[2:]] == [(8.3, "de")]
    assert [(w.start, w.end, w.language) for w in switches] == [(8.3, 13.5, "de")]


def test_the_other_language_may_come_first_in_the_window() -> None:
    """Spanish, then English, in one window scored as one (a WebM tried as a user would): only
    the Spanish is transcribed again; the English after it stays as it was."""
    segments = [
        seg(0.1, 7.5, "When Osliya Simeon Benivos, El-Fen-Salea", -0.75),
        seg(14.4, 19.1, "Thank you. Now our colleague from London", -0.75),
    ]
    spoken = {(0.1, 19.1): ("en", 0.6), (14.4, 19.1): ("en", 0.95), (0.1, 7.5): ("es", 0.9)}

    def transcribe(start: float, end: float, language: str) -> list[Segment]:
        assert (start, end, language) == (0.1, 7.5, "es")
        return [seg(start, end, "Buenos días y bienvenidos.", -0.35)]

    out, switches = transcribe_switches(
        segments, "en", doubtful, lambda s, e: spoken[(s, e)], transcribe
    )
    assert [(s.text, s.language) for s in out] == [
        ("Buenos días y bienvenidos.", "es"),
        ("Thank you. Now our colleague from London", None),
    ]
    assert [(w.start, w.end) for w in switches] == [(0.1, 7.5)]
