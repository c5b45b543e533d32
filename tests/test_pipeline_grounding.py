"""pipeline.grounding: quotes found in the transcript, chapters fitted to the video.

The end-to-end cases run the real ``openai`` client against tests/llm_server.py answering as an
adversarial model (:func:`llm_server.adversarial_brief`), then the real report step.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import pytest
from llm_server import INVENTED_QUOTE, OFF_TOPIC_SUMMARY, LLMServer, adversarial_brief
from pydantic import SecretStr

from ingest.errors import PermanentStepError
from ingest.models import JobRequest
from ingest.settings import Settings
from pipeline import brief as brief_step
from pipeline import report
from pipeline.context import JobContext
from pipeline.grounding import (
    MATCH_THRESHOLD,
    TranscriptIndex,
    boundaries,
    chapter_shots,
    fit_chapters,
    unsupported_specifics,
)
from pipeline.models import Analysis, Chapter, Media, Segment, Shot, Word
from pipeline.text import normalise

SPOKEN = (
    "Welcome to the quarterly review of the northern region.",
    "The budget for marketing grows by 12% next year.",
    "Our new factory in Lisbon opens in March with two hundred staff.",
    "Customer support answered every ticket within one day.",
    "The warehouse in Rotterdam is now fully automated.",
    "Delivery times in Belgium dropped from five days to two.",
    "We will hire thirty new drivers before the summer.",
    "The contract with Nordic Freight ends in October.",
    "Fuel costs fell by 8% after the new routing software arrived.",
    "Thank you all for listening and see you next quarter.",
)
SECONDS_PER_WORD = 0.35
SEGMENT_WORDS = (7, 9, 6, 10, 8)  # segments cut across sentence ends, as ASR does


def spoken_words() -> list[tuple[float, str]]:
    """(time, written word) of the talk: the ground truth of when each word is said."""
    out, t = [], 0.5
    for sentence in SPOKEN:
        for word in sentence.split():
            out.append((round(t, 2), word))
            t += SECONDS_PER_WORD
        t += 0.6  # a breath between sentences
    return out


def make_transcript(word_times: bool) -> list[Segment]:
    words, segments, i, k = spoken_words(), [], 0, 0
    while i < len(words):
        chunk = words[i : i + SEGMENT_WORDS[k % len(SEGMENT_WORDS)]]
        end = chunk[-1][0] + SECONDS_PER_WORD
        timed = [Word(start=t, end=t + SECONDS_PER_WORD, text=w) for t, w in chunk]
        segments.append(
            Segment(start=chunk[0][0], end=round(end, 2), text=" ".join(w for _, w in chunk),
                    words=timed if word_times else None)
        )  # fmt: skip
        i, k = i + len(chunk), k + 1
    return segments


def make_analysis(word_times: bool, tmp: Path) -> Analysis:
    segments = make_transcript(word_times)
    duration = round(segments[-1].end + 1.0, 2)
    # Two long shots and a short one: the first shot covers two chapters.
    cuts = [0.0, 0.62 * duration, 0.8 * duration, duration]
    shots = []
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        path = tmp / "work" / "job-g" / "analyse" / f"shot_{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        _jpeg(path, i)
        shots.append(Shot(index=i, start=round(a, 2), end=round(b, 2), keyframe_path=str(path),
                          keyframe_time=round(a + 0.5, 2)))  # fmt: skip
    return Analysis(
        duration_s=duration, frames_sampled=10, sample_fps=2.0, shots=shots,
        transcript=segments, transcript_source="faster-whisper", language="en",
    )  # fmt: skip


def _jpeg(path: Path, hue: int) -> None:
    from PIL import Image

    Image.new("RGB", (64, 36), (40 * hue % 256, 120, 200)).save(path, "JPEG")


def make_ctx(tmp: Path, server: LLMServer | None = None, **overrides: object) -> JobContext:
    llm: dict[str, object] = {}
    if server is not None:
        llm = {"llm_provider": "custom", "llm_base_url": server.base_url, "llm_model": "adv",
               "llm_api_key": SecretStr("sk-test")}  # fmt: skip
    settings = Settings(
        work_dir=tmp / "work", reports_url=str(tmp / "reports"), _env_file=None,
        llm_max_retries=0, **(llm | overrides),
    )  # type: ignore[arg-type]  # fmt: skip
    request = JobRequest(url="https://example.org/review.mp4", job_id="job-g")
    return JobContext(job_id="job-g", request=request, settings=settings)


def media(analysis: Analysis) -> Media:
    return Media(source_url="https://example.org/review.mp4", path="/tmp/v.mp4", size_bytes=1,
                 title="Quarterly review", duration_s=analysis.duration_s)  # fmt: skip


def where_said(quote: str) -> float | None:
    """When the normalised quote starts in the ground truth, if it is a run of spoken words."""
    truth = [(t, token) for t, w in spoken_words() for token in normalise(w)]
    tokens, wanted = [token for _, token in truth], normalise(quote)
    for i in range(len(tokens) - len(wanted) + 1):
        if tokens[i : i + len(wanted)] == wanted:
            return truth[i][0]
    return None


# --- the matcher ------------------------------------------------------------------------------


def test_numbers_case_punctuation_and_segments_do_not_matter() -> None:
    index = TranscriptIndex.of(make_transcript(word_times=False))
    match = index.locate("the budget for marketing grows by twelve percent next year")
    assert match is not None and match.score == 100.0
    assert match.text == "The budget for marketing grows by 12% next year."
    across = index.locate("with two hundred staff. Customer support answered")
    assert across is not None and across.text == "with two hundred staff. Customer support answered"
    assert index.locate("grows by 12 percent") is not None  # "12 percent" = "12%"


def test_threshold_separates_slips_from_paraphrase() -> None:
    index = TranscriptIndex.of(make_transcript(word_times=False))
    slip = index.locate("The budget for marketing grew by 12% next year.")  # tense slip
    assert slip is not None and MATCH_THRESHOLD <= slip.score < 100
    assert slip.text == "The budget for marketing grows by 12% next year."  # what was said
    assert index.locate("Marketing will get twelve percent more money") is None
    assert index.locate(INVENTED_QUOTE) is None
    assert index.locate("in October") is not None  # short quotes: exact only
    assert index.locate("in Octobers") is None


def test_repeated_words_take_the_occurrence_nearest_the_model_time() -> None:
    segments = [
        Segment(start=0.0, end=3.0, text="Sales grew again."),
        Segment(start=50.0, end=53.0, text="Sales grew again."),
    ]
    index = TranscriptIndex.of(segments)
    assert index.locate("sales grew again", near=48.0).start == 50.0
    assert index.locate("sales grew again", near=1.0).start == 0.0


# --- chapters ---------------------------------------------------------------------------------


def test_chapters_are_fitted_to_the_video() -> None:
    shots = [Shot(index=i, start=t, end=t + 10, keyframe_path="x.jpg", keyframe_time=t + 1)
             for i, t in enumerate((0.0, 10.0, 20.0, 30.0))]  # fmt: skip
    segments = [Segment(start=float(t), end=float(t + 4), text="x") for t in range(0, 40, 4)]
    marks = boundaries(shots, segments, 40.0)
    chapters = [
        Chapter(title="late", start=29.0, end=80.0),  # past the end, out of order
        Chapter(title="first", start=1.2, end=21.0),
        Chapter(title="overlap", start=15.0, end=29.0),
        Chapter(title="outside", start=50.0, end=60.0),
    ]
    fitted = fit_chapters(chapters, 40.0, marks)
    assert [c.title for c in fitted] == ["first", "overlap", "late"]
    assert [(c.start, c.end) for c in fitted] == [(0.0, 20.0), (20.0, 28.0), (28.0, 40.0)]


def test_chapter_pictures_are_inside_and_distinct() -> None:
    shots = [
        Shot(index=0, start=0.0, end=10.0, keyframe_path="a.jpg", keyframe_time=5.0),
        Shot(index=1, start=10.0, end=20.0, keyframe_path="b.jpg", keyframe_time=15.0),
        Shot(index=2, start=20.0, end=40.0, keyframe_path="c.jpg", keyframe_time=30.0),
    ]
    chapter = lambda a, b: Chapter(title=f"{a}-{b}", start=a, end=b)  # noqa: E731
    # Nearest keyframe to the start would give shot 1 twice (9 and 16 are both nearest 15).
    pictures = chapter_shots([chapter(0, 9), chapter(9, 16), chapter(16, 40)], shots)
    assert [s.index for s in pictures] == [0, 1, 2]
    # Only shot 0 is on screen during the first two chapters: reused rather than wrong.
    pictures = chapter_shots([chapter(0, 4), chapter(4, 8), chapter(8, 40)], shots)
    assert [s.index for s in pictures] == [0, 0, 1]


# --- an adversarial model, end to end ----------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("word_times", [True, False], ids=["word-times", "segment-times"])
def test_adversarial_model_prints_only_what_was_said(tmp_path: Path, word_times: bool) -> None:
    analysis = make_analysis(word_times, tmp_path)
    with LLMServer(responder=adversarial_brief) as server:
        ctx = make_ctx(tmp_path, server)
        brief = brief_step.run(ctx, media(analysis), analysis)
        files = report.run(ctx, media(analysis), analysis, brief)

    # One repair call, listing the two quotes that were not found.
    _, repair = server.chat_requests
    problems = repair.json["messages"][-1]["content"]
    assert INVENTED_QUOTE in problems and "key_points.3.quote" in problems
    assert "key_points.0.quote" not in problems  # the slip was found, not sent back

    g = brief.grounding
    assert (g.checked, g.matched, g.repaired, g.dropped) == (5, 3, 1, 1)
    assert [w.code for w in brief.warnings] == [
        "ungrounded_quotes",
        "unsupported_title",  # "Adversarial brief": no word of the talk
        "unsupported_chapter_summaries",
    ]

    result = json.loads(Path(files.result_url).read_text())
    assert result["grounding"] == g.model_dump()
    pdf = " ".join(
        subprocess.run(["pdftotext", files.report_url, "-"], capture_output=True, text=True,
                       check=True).stdout.split()
    )  # fmt: skip
    for kp in result["key_points"]:
        said_at = where_said(kp["quote"])
        assert said_at is not None, f"not verbatim in the transcript: {kp['quote']!r}"
        assert abs(kp["start"] - said_at) <= 1.0, (kp["quote"], kp["start"], said_at)
        assert kp["quote"] in pdf  # printed as evidence, as said
    assert len(result["key_points"]) == 4 and INVENTED_QUOTE not in pdf

    duration = analysis.duration_s
    chapters = result["chapters"]
    assert [c["title"] for c in chapters] == ["Opening", "Middle", "Ending"]
    spans = [(c["start"], c["end"]) for c in chapters]
    assert all(0 <= a < b <= duration for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(spans))
    marks = set(boundaries(analysis.shots, analysis.transcript, duration))
    assert all(a in marks and b in marks for a, b in spans)  # snapped
    assert OFF_TOPIC_SUMMARY in chapters[1]["summary"]  # kept, but flagged on the title page
    assert "Middle" in brief.warnings[2].message and "read them with care" in pdf
    pictures = [c["keyframe"] for c in chapters]
    assert len(set(pictures)) == len(pictures)  # distinct where the shots allow
    for c, picture in zip(chapters, pictures, strict=True):
        shot = next(s for s in result["shots"] if s["keyframe_path"] == picture)
        assert shot["start"] < c["end"] and shot["end"] > c["start"]  # a shot inside it
        assert (Path(files.result_url).parent / picture).is_file()


# --- bounds -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_llm_calls_are_bounded(tmp_path: Path) -> None:
    sentences = [
        f"Line {i}: batch {i * 7} passes station {i % 13} of the line." for i in range(240)
    ]
    segments = [Segment(start=3.0 * i, end=3.0 * i + 3, text=s) for i, s in enumerate(sentences)]
    analysis = Analysis(duration_s=720.0, frames_sampled=1, sample_fps=1.0, shots=[],
                        transcript=segments, transcript_source="subtitles")  # fmt: skip
    with LLMServer() as server:
        ctx = make_ctx(tmp_path, server, llm_context_tokens=2000, llm_max_calls=3)
        with pytest.raises(PermanentStepError, match="VIDBRIEF_LLM_MAX_CALLS=3") as err:
            brief_step.run(ctx, media(analysis), analysis)
    assert server.chat_requests == []  # refused before the first call
    assert not err.value.retryable


def test_transcript_size_and_report_pages_are_bounded(tmp_path: Path) -> None:
    """The hardening review's case: 8,000 subtitle cues on a 4 s video."""
    cue = "An endless subtitle cue that repeats itself. " * 2
    segments = [Segment(start=i * 0.0005, end=i * 0.0005, text=cue) for i in range(8000)]
    analysis = Analysis(duration_s=4.0, frames_sampled=1, sample_fps=1.0, shots=[],
                        transcript=segments, transcript_source="subtitles")  # fmt: skip
    with pytest.raises(PermanentStepError, match="VIDBRIEF_MAX_TRANSCRIPT_CHARS=400,000"):
        brief_step.run(make_ctx(tmp_path), media(analysis), analysis)
    ctx = make_ctx(tmp_path, max_transcript_chars=1_000_000, max_report_pages=100)
    brief = brief_step.run(ctx, media(analysis), analysis)  # offline, under a raised bound
    with pytest.raises(PermanentStepError, match="VIDBRIEF_MAX_REPORT_PAGES=100") as err:
        report.run(ctx, media(analysis), analysis, brief)
    assert "about" in str(err.value)  # refused on the estimate, before the layout
    assert not (tmp_path / "reports" / "job-g" / "report.pdf").exists()


def test_names_and_figures_the_transcript_never_says_are_flagged() -> None:
    said = (
        "Welcome to the quarterly review. Revenue grew by 12% this quarter, and the new "
        "factory in Lisbon opens in March."
    )
    index = TranscriptIndex.of([Segment(start=0.0, end=9.0, text=said)], "en")
    faithful = "Revenue grew by twelve percent. The factory in Lisbon opens in March."
    invented = "Tracy and the Lions expect 40% growth in Porto, says Anna."
    assert unsupported_specifics([faithful], index) == []
    assert unsupported_specifics([invented], index) == ["40%", "Lions", "Porto", "Anna"]


def test_german_nouns_are_not_taken_for_names() -> None:
    said = "Der Umsatz ist um zwölf Prozent gestiegen."
    index = TranscriptIndex.of([Segment(start=0.0, end=4.0, text=said)], "de")
    assert unsupported_specifics(["Das Wachstum betrug 12 Prozent."], index) == []
    assert unsupported_specifics(["Das Wachstum betrug 40 Prozent."], index) == ["40"]
