"""The duration probe before placement: the real one against a loopback server (the download's
guard and child process), and the synthetic one's stated error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.errors import PermanentStepError
from ingest.models import JobRequest
from ingest.settings import Settings
from pipeline.chain import synthetic_duration
from pipeline.context import JobContext
from pipeline.probe import SYNTHETIC_PACE, probe_duration, synthetic_duration_s

try:
    from tests.media import RequestLog, make_sample_video, serve_directory
except ImportError:  # tests/ is not a package: pytest put the folder itself on sys.path
    from media import RequestLog, make_sample_video, serve_directory

SAMPLE_SECONDS = 6.0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RequestLog]]:
    root = tmp_path_factory.mktemp("site")
    make_sample_video(root / "sample.mp4", seconds=SAMPLE_SECONDS, cuts=[3.0], text="")
    log = RequestLog()
    with serve_directory(root, log=log) as url:
        yield url, log


def context(url: str, tmp_path: Path, **settings: object) -> JobContext:
    base: dict[str, object] = {"work_dir": tmp_path, "allow_private_urls": True}
    return JobContext("probe-1", JobRequest(url=url), Settings(_env_file=None, **base | settings))


@pytest.mark.integration
def test_the_probe_reads_the_duration_and_keeps_nothing(
    site: tuple[str, RequestLog], tmp_path: Path
) -> None:
    url, log = site
    duration = probe_duration(context(f"{url}/sample.mp4", tmp_path))
    assert duration is not None and abs(duration - SAMPLE_SECONDS) < 0.5
    # yt-dlp's generic extractor opens the URL once to see what it is (the download does the
    # same), then the duration comes from ranged reads of the first and last bytes.
    assert any(r for m, p, r in log.requests if p == "/sample.mp4" and r)
    assert not list(tmp_path.iterdir())  # nothing kept: the download has not begun


@pytest.mark.integration
def test_a_video_over_the_size_cap_is_refused_by_the_probe(
    site: tuple[str, RequestLog], tmp_path: Path
) -> None:
    url, _ = site
    with pytest.raises(PermanentStepError, match=r"too large.*VIDBRIEF_MAX_DOWNLOAD_MB"):
        probe_duration(context(f"{url}/sample.mp4", tmp_path, max_download_mb=0.01))


@pytest.mark.integration
def test_a_video_over_the_duration_cap_is_refused_by_the_probe(
    site: tuple[str, RequestLog], tmp_path: Path
) -> None:
    url, _ = site
    with pytest.raises(PermanentStepError, match=r"too long.*VIDBRIEF_MAX_DURATION_SECONDS"):
        probe_duration(context(f"{url}/sample.mp4", tmp_path, max_duration_seconds=2))


@pytest.mark.integration
def test_a_private_address_is_refused_by_the_probe_as_by_the_download(
    site: tuple[str, RequestLog], tmp_path: Path
) -> None:
    url, log = site
    before = len(log.paths())
    with pytest.raises(PermanentStepError, match="refused"):
        probe_duration(context(f"{url}/sample.mp4", tmp_path, allow_private_urls=False))
    assert len(log.paths()) == before  # nothing was asked of the server


def test_an_unreachable_host_gives_no_duration_instead_of_failing(tmp_path: Path) -> None:
    ctx = context("http://127.0.0.1:9/none.mp4", tmp_path)
    assert probe_duration(ctx) is None  # placement then goes by job counts


def test_the_synthetic_probe_is_the_drawn_length_within_its_stated_error() -> None:
    settings = Settings(
        _env_file=None,
        step_mode="synthetic",
        synthetic_seconds={"analyse": 3.0},
        synthetic_jitter=0.5,
        synthetic_probe_error=0.2,
    )
    errors = []
    for n in range(50):
        true_s = synthetic_duration(settings, f"job-{n}", "analyse") / SYNTHETIC_PACE
        errors.append(synthetic_duration_s(settings, f"job-{n}") / true_s - 1)
    assert max(abs(e) for e in errors) <= 0.2
    assert max(errors) > 0.1 and min(errors) < -0.1  # it does err, both ways
