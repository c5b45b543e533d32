"""pipeline.reuse: a kept analysis serves a job in another language only when that language
could not have changed the transcript."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ingest.models import JobRequest
from ingest.names import ANALYSE_STEP
from ingest.settings import Settings
from pipeline.context import JobContext
from pipeline.models import Analysis, Media, Segment
from pipeline.reuse import find_analysed, keep, serves_language

URL = "http://127.0.0.1:9/talk.mp4"  # never fetched: only the address policy sees it


def analysis(language: str | None, probability: float | None, source: str = "faster-whisper"):
    return Analysis(
        duration_s=20.0,
        frames_sampled=40,
        sample_fps=2.0,
        shots=[],
        transcript=[Segment(start=0.0, end=5.0, text="Revenue grew by twelve percent.")],
        transcript_source=source,
        language=language,
        language_probability=probability,
    )


def ctx(settings: Settings, job_id: str, language: str | None) -> JobContext:
    return JobContext(job_id, JobRequest(url=URL, language=language), settings)


@pytest.mark.parametrize(
    ("kept", "asked", "serves"),
    [
        (analysis("en", 0.95), "de", True),  # any hint would have been overruled
        (analysis("en", 0.95), None, True),
        (analysis("en", 0.64), "de", False),  # "de" could have stood: analyse again
        (analysis("en", 0.64), "en-GB", True),  # the same language
        (analysis("de", None), "de-AT", True),
        (analysis("en", 0.99, source="subtitles"), "de", False),  # chosen by language
        (
            Analysis(
                duration_s=5,
                frames_sampled=10,
                sample_fps=2,
                shots=[],
                transcript=[],
                transcript_source="none",
            ),
            "fr",
            True,
        ),  # no audio
    ],
)
def test_serves_language(kept: Analysis, asked: str | None, serves: bool) -> None:
    assert serves_language(kept, asked) is serves


def test_a_job_in_another_language_finds_the_analysis_by_its_source(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    media = Media(source_url=URL, path="/nowhere/media.mp4", size_bytes=10, sha256="ab" * 32)
    keep(ANALYSE_STEP, ctx(settings, "first", None), analysis("en", 0.95), media)

    found = find_analysed(ctx(settings, "german", "de"))
    assert found is not None and found[ANALYSE_STEP].language == "en"
    assert found["download"].sha256 == media.sha256

    keep(ANALYSE_STEP, ctx(settings, "unsure", None), analysis("en", 0.6), media)
    assert find_analysed(ctx(settings, "german-2", "de")) is None  # the latest is unsure
    other_model = settings.model_copy(update={"asr_model": "tiny.en"})
    assert find_analysed(ctx(other_model, "german-3", None)) is None
