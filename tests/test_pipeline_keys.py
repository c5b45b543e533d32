"""pipeline.keys: each kept output's key changes with exactly what changes the output."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.models import JobRequest
from ingest.settings import Settings
from pipeline import keys
from pipeline.models import Media

URL = "https://Videos.Example.com:443/talks/one.mp4?lang=en#t=3"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(work_dir=tmp_path / "work", _env_file=None)  # type: ignore[call-arg]


def media(sha: str = "a" * 64) -> Media:
    return Media(source_url=URL, path="/work/j/download/media.mp4", size_bytes=10, sha256=sha)


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("https://videos.example.com/talks/one.mp4?lang=en#t=3", True),  # case, default port
        ("HTTPS://videos.example.com./talks/one.mp4?lang=en#t=3", True),  # trailing dot
        ("https://videos.example.com/talks/One.mp4?lang=en#t=3", False),  # paths are case-sensitive
        ("https://videos.example.com/talks/one.mp4?lang=de#t=3", False),  # another query
        ("https://videos.example.com:8443/talks/one.mp4?lang=en#t=3", False),  # another port
        ("http://videos.example.com/talks/one.mp4?lang=en#t=3", False),  # another scheme
    ],
)
def test_urls_that_name_the_same_video_share_the_download_key(
    settings: Settings, url: str, same: bool
) -> None:
    one = keys.download_key(JobRequest(url=URL), settings)
    other = keys.download_key(JobRequest(url=url), settings)
    assert (one.digest == other.digest) is same


def test_what_changes_each_output_changes_its_key(settings: Settings) -> None:
    request = JobRequest(url=URL, instructions="costs", language="en")
    analysis = keys.analysis_key(request, settings, media())
    brief = keys.brief_key(request, settings, analysis)

    def digests(r: JobRequest, s: Settings, m: Media) -> tuple[str, str, str]:
        a = keys.analysis_key(r, s, m)
        return keys.download_key(r, s).digest, a.digest, keys.brief_key(r, s, a).digest

    def asking(**update: object) -> tuple[str, str, str]:
        return digests(request.model_copy(update=update), settings, media())

    def configured(**update: object) -> tuple[str, str, str]:
        return digests(request, settings.model_copy(update=update), media())

    base = asking()
    assert base[1:] == (analysis.digest, brief.digest)
    llm = {"llm_provider": "custom", "llm_base_url": "http://h/v1", "llm_model": "m"}
    changed = {
        "instructions": asking(instructions="people"),
        "language": asking(language="de"),
        "asr model": configured(asr_model="tiny.en"),
        "sample rate": configured(frame_sample_fps=4.0),
        "media bytes": digests(request, settings, media("b" * 64)),
        "llm": configured(**llm),
        "job id": asking(job_id="other"),
        "webhook": asking(webhook_url="https://hooks.example.com/x"),
    }
    same, differs = "=", "≠"
    pattern = {
        name: "".join(same if a == b else differs for a, b in zip(base, d, strict=True))
        for name, d in changed.items()
    }
    assert pattern == {
        "instructions": "==≠",  # only the brief
        "language": "≠≠≠",  # the subtitles asked for, the spoken-language hint, the brief
        "asr model": "=≠≠",
        "sample rate": "=≠≠",
        "media bytes": "=≠≠",  # the same URL serving other bytes
        "llm": "==≠",
        "job id": "===",  # a job id names the job, not what it produces
        "webhook": "===",
    }


def test_the_bundled_models_have_one_spelling_each(settings: Settings) -> None:
    def model(name: str | None) -> str:
        return keys.asr_model_id(settings.model_copy(update={"asr_model": name}))

    assert model(None) == model("base") == model("whisper-base") == "base"
    assert model("tiny.en") == model("whisper-tiny.en") == "tiny.en"
    assert model("/models/my-whisper") == "/models/my-whisper"


def test_a_version_bump_changes_the_key(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = JobRequest(url=URL)
    before = keys.analysis_key(request, settings, media()).digest
    monkeypatch.setitem(keys.STEP_VERSIONS, "analyse", keys.STEP_VERSIONS["analyse"] + 1)
    assert keys.analysis_key(request, settings, media()).digest != before


def test_an_llm_endpoints_credentials_are_not_part_of_the_stored_key(settings: Settings) -> None:
    s = settings.model_copy(
        update={"llm_provider": "custom", "llm_base_url": "http://u:sk-hide@h/v1", "llm_model": "m"}
    )
    key = keys.brief_key(JobRequest(url=URL), s, keys.analysis_key(JobRequest(url=URL), s, media()))
    assert (
        "sk-hide" not in repr(dict(key.fields)) and key.fields["llm"]["base_url"] == "http://h/v1"
    )


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1_000_000)
    import hashlib

    assert keys.file_sha256(path) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()
