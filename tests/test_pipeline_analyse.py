"""The analyse step on a real video: planted cuts, espeak-ng speech of a known text.

The sample is generated once, served on loopback and downloaded with yt-dlp, then analysed
for real (PyAV, torch, faster-whisper with the default multilingual Whisper base). Accuracy is
measured: cut times against the planted ones, word error rate against the spoken text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jiwer
import numpy as np
import pytest
from PIL import Image

from ingest.models import JobRequest
from ingest.settings import Settings
from pipeline import speech
from pipeline.analyse import ANALYSIS_JSON, analyse_media, run
from pipeline.context import JobContext
from pipeline.download import run as download_run
from pipeline.models import Analysis, Media, Segment

try:
    from tests.media import make_random_whisper, make_sample_video, serve_directory
except ImportError:  # tests/ is not a package: pytest put the folder itself on sys.path
    from media import make_random_whisper, make_sample_video, serve_directory

SECONDS = 20.0
CUTS_S = [4.3, 9.7, 14.2]
SAMPLE_FPS = 2.0
TEXT = (
    "Welcome to the weekly project update. Our team finished the new search feature and "
    "fixed twelve bugs in the billing system. Next week we will test the mobile app with "
    "real customers. Please send your questions before Friday. Thank you for watching."
)
MAX_WER = 0.25  # measured 0.024 (Whisper base int8), 0.05 (tiny.en) with espeak-ng 1.51
_NORMALISE = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


def settings_for(work_dir: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "_env_file": None,
        "work_dir": work_dir,
        "device": "cpu",
        "allow_private_urls": True,
        "frame_sample_fps": SAMPLE_FPS,
    }
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]


def wer(reference: str, segments: list[Segment]) -> float:
    hypothesis = " ".join(s.text for s in segments)
    return jiwer.wer(
        reference, hypothesis, reference_transform=_NORMALISE, hypothesis_transform=_NORMALISE
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, work: Path) -> Iterator[Media]:
    """The sample video, served on loopback and downloaded by the download step."""
    site = tmp_path_factory.mktemp("site")
    make_sample_video(site / "talk.mp4", seconds=SECONDS, cuts=CUTS_S, text=TEXT)
    with serve_directory(site) as url:
        ctx = JobContext("job-a", JobRequest(url=f"{url}/talk.mp4"), settings_for(work))
        yield download_run(ctx)


@pytest.fixture(scope="module")
def analysis(media: Media, work: Path) -> Analysis:
    ctx = JobContext("job-a", JobRequest(url=media.source_url), settings_for(work))
    return run(ctx, media)


@pytest.mark.integration
@pytest.mark.slow
def test_cuts_are_found_within_one_sampling_interval(analysis: Analysis):
    found = [shot.start for shot in analysis.shots[1:]]
    errors = [f - c for f, c in zip(found, CUTS_S, strict=True)]
    print(f"cut errors (s): {[round(e, 3) for e in errors]}")
    assert len(analysis.shots) == len(CUTS_S) + 1
    assert all(0 <= e < 1 / SAMPLE_FPS for e in errors)
    assert analysis.shots[0].start == 0.0
    assert analysis.shots[-1].end == pytest.approx(SECONDS, abs=0.1)


@pytest.mark.integration
@pytest.mark.slow
def test_each_shot_has_a_middle_keyframe(analysis: Analysis, work: Path):
    for shot in analysis.shots:
        path = Path(shot.keyframe_path)
        assert path.parent == work / "job-a" / "analyse"
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.size == (320, 180)
        assert abs(shot.keyframe_time - (shot.start + shot.end) / 2) <= 1 / SAMPLE_FPS


@pytest.mark.integration
@pytest.mark.slow
def test_transcript_matches_the_spoken_text(analysis: Analysis):
    error = wer(TEXT, analysis.transcript)
    print(f"WER {error:.3f} (faster-whisper {analysis.asr_model}, espeak-ng speech)")
    assert error < MAX_WER
    assert analysis.transcript_source == "faster-whisper" and analysis.language == "en"
    assert analysis.language_probability > 0.5 and analysis.warnings == []
    starts = [s.start for s in analysis.transcript]
    assert starts == sorted(starts)
    assert all(0 <= s.start <= s.end <= SECONDS + 0.5 for s in analysis.transcript)


@pytest.mark.integration
@pytest.mark.slow
def test_timings_and_sampling_are_recorded(analysis: Analysis):
    assert set(analysis.timings) >= {"decode_s", "shots_s", "asr_s"}
    assert analysis.frames_sampled == pytest.approx(SECONDS * SAMPLE_FPS, abs=1)
    assert analysis.duration_s == pytest.approx(SECONDS, abs=0.1)
    assert (analysis.device, analysis.asr_device) == ("cpu", "cpu")
    rtf = analysis.timings["asr_s"] / analysis.duration_s
    print(f"timings {analysis.timings}; speech real-time factor {rtf:.3f}")


@pytest.mark.integration
@pytest.mark.slow
def test_a_finished_analysis_is_not_redone(analysis: Analysis, media: Media, work: Path):
    out = work / "job-a" / "analyse"
    stamp = (out / ANALYSIS_JSON).stat().st_mtime_ns
    assert analyse_media(media, out, settings_for(work)) == analysis
    assert (out / ANALYSIS_JSON).stat().st_mtime_ns == stamp
    assert not list(out.glob("*.f32")), "the temporary audio file is removed"


@pytest.mark.integration
@pytest.mark.slow
def test_subtitles_replace_speech_to_text(media: Media, tmp_path: Path):
    cues = [Segment(start=0.5, end=10.0, text="From the platform.")]
    with_subs = media.model_copy(update={"subtitles": cues, "subtitles_language": "en"})
    result = analyse_media(
        with_subs,
        tmp_path,
        settings_for(tmp_path, asr_backend="transformers", asr_model=str(tmp_path / "none")),
    )
    assert result.transcript == cues and result.transcript_source == "subtitles"
    assert len(result.shots) == len(CUTS_S) + 1


def test_a_video_without_audio_has_no_transcript(tmp_path: Path):
    path = make_sample_video(tmp_path / "silent.mp4", seconds=3, cuts=[1.5], text="", audio=False)
    media = Media(
        source_url="http://example.com/silent.mp4", path=str(path), size_bytes=path.stat().st_size
    )
    result = analyse_media(media, tmp_path / "out", settings_for(tmp_path))
    assert result.transcript == [] and result.transcript_source == "none"
    assert [round(s.start, 1) for s in result.shots] == [0.0, 1.5]


def test_backend_plans_fall_back_where_ctranslate2_cannot_use_the_gpu():
    assert speech.plan("auto", "cpu") == [("faster-whisper", "cpu")]
    assert speech.plan("auto", "cuda") == [
        ("faster-whisper", "cuda"),
        ("transformers", "cuda"),
        ("faster-whisper", "cpu"),
    ]
    assert speech.plan("faster-whisper", "cuda")[-1] == ("faster-whisper", "cpu")
    assert speech.plan("transformers", "cpu") == [("transformers", "cpu")]


@pytest.mark.slow
def test_faster_whisper_falls_back_to_cpu_and_caches_the_model(tmp_path: Path):
    # No CUDA device here: CTranslate2 on CUDA is unavailable, the CPU model runs instead.
    settings = settings_for(tmp_path, asr_backend="faster-whisper")
    silence = np.zeros(speech.SAMPLE_RATE_HZ, np.float32)
    result = speech.transcribe(silence, settings, "cuda", threads=1)
    assert (result.backend, result.device, result.segments) == ("faster-whisper", "cpu", [])
    cached = {k: v for k, v in speech._MODELS.items() if k[0] == "faster-whisper"}
    speech.transcribe(silence, settings, "cpu", threads=1)
    assert {k: v for k, v in speech._MODELS.items() if k[0] == "faster-whisper"} == cached


@pytest.mark.slow
def test_transformers_backend_runs_a_random_whisper_on_cpu(tmp_path: Path, media: Media):
    model_dir = make_random_whisper(tmp_path / "whisper-random")
    settings = settings_for(tmp_path, asr_backend="transformers", asr_model=str(model_dir))
    result = analyse_media(media, tmp_path / "out", settings)
    # Random weights: the words are nonsense; the plumbing and the timestamps are checked.
    assert (result.transcript_source, result.asr_device) == ("transformers", "cpu")
    assert result.asr_model == str(model_dir)
    assert result.transcript, "a random model still emits tokens"
    assert all(0 <= s.start <= s.end <= SECONDS + 0.5 for s in result.transcript)
    assert all(s.text.strip() for s in result.transcript)
    assert ("transformers", str(model_dir), "cpu") in speech._MODELS
