"""The download step's child process: memory limit, hard deadline, no programs — measured.

Peak memory is the child's own resident high-water mark (``VmHWM``), so these bounds are
about the download alone. Figures go to the log (``-o log_cli=true`` shows them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ingest.errors import PermanentStepError, RetryableStepError
from ingest.models import JobRequest
from ingest.settings import Settings
from pipeline.context import JobContext
from pipeline.download import DownloadLimits, run
from pipeline.download_process import DEADLINE_GRACE_S, ChildRun, download_isolated, spawn

try:
    from tests.media import make_sample_video, serve_directory, write_fake_programs
except ImportError:  # tests/ is not a package: pytest put the folder itself on sys.path
    from media import make_sample_video, serve_directory, write_fake_programs

log = logging.getLogger(__name__)

MB = 1024**2
SAMPLE_SECONDS = 6.0
DEADLINE_S = 3.0
DEADLINE_SLACK_S = 2.0  # the guarantee: a download ends within its deadline plus this
PAGE_CAP = 16 * MB  # VIDBRIEF_MAX_PAGE_MB's default
#: Memory a download may grow by beyond a capped read: yt-dlp and PyAV's own working memory
#: (a normal download of the sample grows the child by about 20 MB).
MEMORY_MARGIN = 64 * MB
MEMORY_LIMIT = 1024 * MB  # VIDBRIEF_DOWNLOAD_MEMORY_MB's default
LIMITS = DownloadLimits(max_bytes=50 * MB, max_duration_s=600, timeout_s=60)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("site")
    make_sample_video(root / "sample.mp4", seconds=SAMPLE_SECONDS, cuts=[3.0], text="")
    (root / "rtmp-sub.html").write_text(
        '<html><body><video controls><source src="sample.mp4" type="video/mp4"><track '
        'src="rtmp://169.254.169.254/live/captions.vtt" srclang="en"></video></body></html>'
    )
    with serve_directory(root) as url:
        yield url


def child(url: str, workdir: Path, memory: int = MEMORY_LIMIT, **limits: float) -> ChildRun:
    run_ = spawn(
        url,
        workdir,
        dataclasses.replace(LIMITS, **limits),
        allow_private=True,
        language="en",
        memory_bytes=memory,
    )
    log.info(
        "%s: %.2f s, peak RSS %.0f MB (%.0f MB at start), outcome %s",
        url.rsplit("/", 1)[1],
        run_.wall_s,
        (run_.peak_rss_bytes or 0) / MB,
        (run_.start_rss_bytes or 0) / MB,
        run_.outcome,
    )
    return run_


def growth(run_: ChildRun) -> int:
    assert run_.peak_rss_bytes and run_.start_rss_bytes, "the child reports its memory"
    return run_.peak_rss_bytes - run_.start_rss_bytes


@pytest.mark.integration
def test_the_step_downloads_in_a_child_process(base_url: str, tmp_path: Path):
    settings = Settings(_env_file=None, work_dir=tmp_path, allow_private_urls=True)
    ctx = JobContext("job-1", JobRequest(url=f"{base_url}/sample.mp4"), settings)
    media = run(ctx)
    assert media.duration_s == pytest.approx(SAMPLE_SECONDS, abs=0.1)
    # The same download, seen from the parent: a separate process that exited cleanly.
    again = child(f"{base_url}/sample.mp4", tmp_path / "again")
    assert again.outcome and again.outcome.get("ok") is True
    assert again.exit_code == 0 and not again.killed
    assert growth(again) < MEMORY_MARGIN


@pytest.mark.integration
@pytest.mark.chaos
@pytest.mark.parametrize("path", ["/endless", "/endless?gzip=1"], ids=["plain", "gzip"])
def test_an_endless_page_costs_at_most_its_cap_in_memory(base_url: str, tmp_path: Path, path: str):
    ran = child(base_url + path, tmp_path)
    assert ran.outcome and "VIDBRIEF_MAX_PAGE_MB" in ran.outcome["error"]["message"]
    assert growth(ran) < PAGE_CAP + MEMORY_MARGIN
    assert not ran.killed


@pytest.mark.integration
@pytest.mark.chaos
@pytest.mark.parametrize(
    "path",
    ["/trickle?every=2", "/trickle.mp4?type=video/mp4&length=1000000&every=1"],
    ids=["page", "media-body"],
)
def test_a_trickling_server_is_bounded_by_the_deadline(base_url: str, tmp_path: Path, path: str):
    ran = child(base_url + path, tmp_path, timeout_s=DEADLINE_S)
    assert ran.outcome and "VIDBRIEF_DOWNLOAD_TIMEOUT_SECONDS" in ran.outcome["error"]["message"]
    assert ran.wall_s < DEADLINE_S + DEADLINE_SLACK_S
    assert growth(ran) < MEMORY_MARGIN


def stop_child_when_it_starts(stopped: list[int]) -> None:
    """SIGSTOP the download's child process as soon as it exists: it can do nothing more."""
    me = psutil.Process()
    until = time.monotonic() + DEADLINE_S
    while time.monotonic() < until:
        for proc in me.children():
            with contextlib.suppress(psutil.Error):  # a child that came and went
                if "pipeline.download_process" in " ".join(proc.cmdline()):
                    proc.send_signal(signal.SIGSTOP)
                    stopped.append(proc.pid)
                    return
        time.sleep(0.01)


@pytest.mark.integration
@pytest.mark.chaos
def test_a_frozen_download_is_killed_at_the_hard_deadline(base_url: str, tmp_path: Path):
    # A stopped process honours no deadline of its own: only the parent's kill ends it.
    stopped: list[int] = []
    watcher = threading.Thread(target=stop_child_when_it_starts, args=(stopped,))
    watcher.start()
    started = time.monotonic()
    with pytest.raises(RetryableStepError, match="VIDBRIEF_DOWNLOAD_TIMEOUT_SECONDS"):
        download_isolated(
            f"{base_url}/trickle?every=1",
            tmp_path,
            DownloadLimits(50 * MB, 600, DEADLINE_S),
            allow_private=True,
            language="en",
            memory_bytes=MEMORY_LIMIT,
        )
    elapsed = time.monotonic() - started
    watcher.join()
    assert stopped, "the child was found and stopped"
    assert DEADLINE_S + DEADLINE_GRACE_S <= elapsed < DEADLINE_S + DEADLINE_SLACK_S
    assert not psutil.pid_exists(stopped[0]) or psutil.Process(stopped[0]).status() == "zombie"
    assert list(tmp_path.iterdir()) == [], "what the killed child left is removed"


@pytest.mark.integration
@pytest.mark.chaos
def test_a_child_whose_worker_dies_ends_too(base_url: str, tmp_path: Path):
    code = (
        "import sys\n"
        "from pipeline.download import DownloadLimits\n"
        "from pipeline.download_process import spawn\n"
        "spawn(sys.argv[1], sys.argv[2], DownloadLimits(2**26, 600, 60), allow_private=True,\n"
        "      language='en', memory_bytes=2**30)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", code, f"{base_url}/trickle?every=1", str(tmp_path)]
    )
    try:
        children = wait_for_children(psutil.Process(worker.pid))
        worker.kill()  # as Ray kills a worker: no chance to clean up
        worker.wait()
        _, alive = psutil.wait_procs(children, timeout=10)
    finally:
        worker.kill()
    assert children and not alive, "the download process outlived its worker"


def wait_for_children(proc: psutil.Process) -> list[psutil.Process]:
    until = time.monotonic() + 30
    while time.monotonic() < until:
        if children := proc.children():
            return children
        time.sleep(0.05)
    return []


@pytest.mark.integration
@pytest.mark.chaos
def test_memory_past_the_limit_ends_the_download_as_refused(base_url: str, tmp_path: Path):
    # A page cap far above the memory limit: the address-space limit is what stops it.
    with pytest.raises(PermanentStepError, match="VIDBRIEF_DOWNLOAD_MEMORY_MB"):
        download_isolated(
            f"{base_url}/endless",
            tmp_path,
            DownloadLimits(50 * MB, 600, 60, max_page_bytes=1024 * MB),
            allow_private=True,
            language="en",
            memory_bytes=64 * MB,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
@pytest.mark.chaos
def test_the_step_runs_no_program(base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = write_fake_programs(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '')}")
    settings = Settings(_env_file=None, work_dir=tmp_path / "work", allow_private_urls=True)
    ctx = JobContext("job-1", JobRequest(url=f"{base_url}/rtmp-sub.html"), settings)
    with pytest.raises(PermanentStepError, match="unsupported protocol 'rtmp'"):
        run(ctx)
    assert not calls.exists(), calls.read_text()


def test_the_child_gets_no_credentials(monkeypatch: pytest.MonkeyPatch):
    from pipeline.download_process import _child_env

    for name in ("VIDBRIEF_LLM_API_KEY", "VIDBRIEF_REDIS_URL", "AWS_SECRET_ACCESS_KEY", "GH_TOKEN"):
        monkeypatch.setenv(name, "sk-marker-123456")
    env = _child_env()
    assert "sk-marker-123456" not in env.values()
    assert env["PATH"] == os.environ["PATH"] and env["PYTHONPATH"]


def test_the_child_starts_no_programs():
    code = (
        "import os, subprocess\n"
        "from pipeline.download_process import forbid_programs\n"
        "forbid_programs()\n"
        "for start in (lambda: subprocess.run(['true']), lambda: os.system('true'),\n"
        "              lambda: os.execv('/bin/true', ['true'])):\n"
        "    try:\n"
        "        start()\n"
        "    except PermissionError as e:\n"
        "        print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.count("the download process starts no programs") == 3, out
