"""Inside a long step: progress in media seconds (decoded, transcribed) reaches the caller, with
an ETA in ``run-local``'s bar; a cancel stops the decoding pass and speech to text (the real
analysis on a generated talk; no Ray)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rich.console import Console

from ingest.settings import Settings
from pipeline.analyse import analyse_media
from pipeline.hooks import StepCancelled, StepHooks
from pipeline.local import StepEvent, rich_progress
from pipeline.models import Media
from vidbrief.samples import make_sample_video

pytestmark = pytest.mark.integration

SECONDS = 40.0
TEXT = "The budget for next year grows by ten percent, and the new office opens in March. " * 6


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Media:
    path = tmp_path_factory.mktemp("talk") / "talk.mp4"
    make_sample_video(path, seconds=SECONDS, cuts=[10.0], text=TEXT, size=(160, 90), fps=10)
    return Media(source_url="https://example.com/talk.mp4", path=str(path), size_bytes=1)


def settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, work_dir=tmp_path, device="cpu", threads=2)


def test_the_analysis_reports_media_seconds_decoded_then_transcribed(
    talk: Media, tmp_path: Path
) -> None:
    seen: list[tuple[str, float, float | None]] = []
    hooks = StepHooks(on_progress=lambda stage, done, of: seen.append((stage, done, of)))
    analyse_media(talk, tmp_path / "analyse", settings(tmp_path), hooks=hooks)
    stages = [stage for stage, _, _ in seen]
    assert stages and stages[0] == "decoding" and stages[-1] == "transcribing"
    assert stages.index("transcribing") > max(i for i, s in enumerate(stages) if s == "decoding")
    decoding = [(done, of) for stage, done, of in seen if stage == "decoding"]
    assert all(of == pytest.approx(SECONDS, abs=0.5) for _, of in decoding)
    transcribing = [done for stage, done, _ in seen if stage == "transcribing"]
    assert transcribing == sorted(transcribing) and transcribing[-1] == pytest.approx(SECONDS, 0.1)


@pytest.mark.parametrize("stage", ["decoding", "transcribing"])
def test_a_cancel_stops_the_analysis_in_each_stage(talk: Media, tmp_path: Path, stage: str) -> None:
    reached: list[float] = []

    def progress(now: str, done: float, of: float | None) -> None:
        if now == stage and not reached:
            reached.append(time.monotonic())

    hooks = StepHooks(on_progress=progress, cancelled=lambda: bool(reached))
    with pytest.raises(StepCancelled):
        analyse_media(talk, tmp_path / "analyse", settings(tmp_path), hooks=hooks)
    assert reached and time.monotonic() - reached[0] < 2.0
    assert not (tmp_path / "analyse" / "analysis.json").exists()  # nothing half-done is kept


def test_run_local_draws_the_progress_inside_a_step_with_an_eta() -> None:
    console = Console(record=True, width=120, force_terminal=False)
    with rich_progress(console) as show:
        show(StepEvent("download", 1, 4, "started"))
        show(StepEvent("download", 1, 4, "completed", 1.0))
        show(StepEvent("analyse", 2, 4, "started"))
        for done in (10.0, 20.0, 30.0):
            show(StepEvent("analyse", 2, 4, "progress", stage="transcribing", done=done, of=300.0))
            time.sleep(0.2)
    text = console.export_text()
    assert "transcribing" in text and "30 of 300 s of media" in text
    assert "ETA" in text and "1/4 steps" in text
