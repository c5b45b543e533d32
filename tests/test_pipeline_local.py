"""``run-local`` with real parts (yt-dlp from a loopback server, PyAV, faster-whisper,
WeasyPrint): each step within its time limit, as in the bridge; and kept outputs — a job_id used
again gets nothing of the earlier request, a refused URL is refused whatever is kept, a re-brief
reuses the analysis, another speech model does not, and the work folder is gone at the end."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from media import serve_directory

from ingest.errors import PermanentStepError, StepError
from ingest.settings import Settings
from pipeline.local import StepEvent, run_local
from vidbrief.samples import ensure_demo_videos, serve_files

pytestmark = pytest.mark.integration

METADATA_URL = "http://169.254.169.254/latest/meta-data/"


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two sample talks (a quarterly review, a garden robot) on a loopback server."""
    folder = tmp_path_factory.mktemp("media")
    paths = ensure_demo_videos(folder, count=2)
    with serve_files(folder) as base:
        yield [f"{base}/{p.name}" for p in paths]


def result_of(settings: Settings, url: str, job_id: str, **request: Any) -> dict[str, Any]:
    files = run_local(url, None, settings, lambda _event: None, job_id=job_id, **request)
    return json.loads(Path(files.result_url).read_text())


def spoken(result: dict[str, Any]) -> str:
    return " ".join(s["text"] for s in result["transcript"]["segments"]).lower()


def test_a_job_id_used_again_gets_nothing_of_the_earlier_request(
    videos: list[str], make_settings: Callable[..., Settings]
) -> None:
    # The earlier job's work folder stays (a retention), as it did before folders were deleted.
    settings = make_settings(asr_model="tiny.en", work_retention_seconds=3600)
    first = result_of(settings, videos[0], "same")
    assert first["metadata"]["url"] == videos[0] and "revenue" in spoken(first)

    second = result_of(settings, videos[1], "same")
    assert second["metadata"]["url"] == videos[1]
    assert "robot" in spoken(second) and "revenue" not in spoken(second)
    assert second["reused_steps"] == []

    with pytest.raises(PermanentStepError, match=r"refused URL.*cloud metadata address"):
        result_of(settings, METADATA_URL, "same")
    result = Path(settings.reports_url) / "same" / "result.json"
    assert json.loads(result.read_text())["metadata"]["url"] == videos[1]  # nothing written


def test_a_rebrief_reuses_the_analysis_and_another_speech_model_does_not(
    videos: list[str], make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(asr_model="tiny.en")
    work, reports = Path(settings.work_dir), Path(settings.reports_url)
    first = result_of(settings, videos[0], "first", instructions="Focus on the numbers.")
    assert first["reused_steps"] == []
    assert not (work / "first").exists()  # deleted at the end (retention 0)

    again = result_of(settings, videos[0], "again", instructions="Focus on the people.")
    assert again["reused_steps"] == ["download", "analyse"]
    assert again["transcript"] == first["transcript"]
    assert again["metadata"]["request"]["instructions"] == "Focus on the people."
    # Its keyframes came from the artefact store (this job's folder never had them).
    frames = [s["keyframe_path"] for s in again["shots"]]
    assert frames and all((reports / "again" / f).is_file() for f in frames)
    assert not (work / "again").exists()

    same = result_of(settings, videos[0], "same-ask", instructions="Focus on the people.")
    assert same["reused_steps"] == ["download", "analyse", "brief"]
    assert same["summary"] == again["summary"]

    other_model = settings.model_copy(update={"asr_model": "base"})
    redone = result_of(other_model, videos[0], "base-model", instructions="Focus on the people.")
    assert redone["reused_steps"] == []
    assert redone["transcript"]["model"] != first["transcript"]["model"]
    assert "revenue" in spoken(redone)

    # A brief in German of this English talk. espeak's English is detected as English only
    # with p ≈ 0.64, under the 0.75 that would overrule a hint: the job's "de" could change
    # the transcript, so the video is analysed again — and the report says the speech sounds
    # English.
    german = result_of(other_model, videos[0], "base-de", language="de")
    assert german["reused_steps"] == []
    assert "language_uncertain" in [w["code"] for w in german["warnings"]]


LIMIT_S = 2.0
SLACK_S = 2.0


def test_a_download_past_the_step_limit_ends_the_run_at_the_limit(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    # The page trickles a byte every half second: the download's own 30 s deadline is far off.
    settings = make_settings(
        download_timeout_seconds=30, step_timeout_seconds={"download": LIMIT_S}
    )
    seen: list[StepEvent] = []
    with serve_directory(tmp_path) as base:
        started = time.monotonic()
        with pytest.raises(StepError) as err:
            run_local(f"{base}/trickle?every=0.5", tmp_path / "out", settings, seen.append)
        elapsed = time.monotonic() - started
    assert elapsed < LIMIT_S + SLACK_S, f"{elapsed:.1f} s for a {LIMIT_S} s limit"
    assert type(err.value).__name__ == "StepTimeout"
    assert 'VIDBRIEF_STEP_TIMEOUT_SECONDS="download=' in str(err.value)
    assert err.value.step == "download" and err.value.retryable is False
    assert [(e.step, e.status) for e in seen] == [("download", "started"), ("download", "failed")]


def test_call_within_returns_the_value_or_raises_the_error_of_a_quick_call() -> None:
    from pipeline.local import call_within

    assert call_within(5, "brief", lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        call_within(5, "brief", lambda: 1 / 0)
