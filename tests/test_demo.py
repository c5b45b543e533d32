"""``vidbrief demo`` from the outside, as a newcomer runs it: PDFs with the spoken words,
and nothing left running afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from vidbrief.samples import DEMO_TALKS

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.slow]

DEMO_TIMEOUT_S = 600


def _pdf_text(path: Path) -> str:
    return subprocess.run(
        ["pdftotext", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout


def _run_demo(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDBRIEF_")}
    env.update(
        {
            "VIDBRIEF_STATE_DIR": str(tmp_path / "state"),
            "VIDBRIEF_WORK_DIR": str(tmp_path / "work"),
            "VIDBRIEF_REPORTS_URL": str(tmp_path / "reports"),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidbrief", "demo"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=DEMO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, ""), proc.pid


def _left_running(session_id: int, state_dir: Path) -> list[str]:
    """Processes of the demo's session, and the embedded redis-server it started."""
    left = [
        f"{p.pid} {p.name()}"
        for p in psutil.process_iter(["pid", "name"])
        if _sid(p.pid) == session_id
    ]
    info = state_dir / "redis" / "server.json"
    if info.exists() and psutil.pid_exists(json.loads(info.read_text())["pid"]):
        left.append("embedded redis-server")
    return left


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def test_demo_writes_three_pdfs_with_spoken_words_and_leaves_nothing(tmp_path):
    result, session_id = _run_demo(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    pdfs = sorted((tmp_path / "reports").glob("*/report.pdf"))
    assert len(pdfs) == 3
    texts = [_pdf_text(p).lower() for p in pdfs]
    for talk_words in (("revenue", "lisbon"), ("garden", "robot"), ("train", "berlin")):
        assert any(all(w in t for w in talk_words) for t in texts), talk_words
    assert all((p.parent / "result.json").exists() for p in pdfs)
    assert _left_running(session_id, tmp_path / "state") == []

    # Page 1 of a report, as a picture: not blank.
    png = tmp_path / "page"
    subprocess.run(
        ["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", str(pdfs[0]), str(png)], check=True
    )
    from PIL import Image

    image = Image.open(next(tmp_path.glob("page*.png"))).convert("L")
    low, high = image.getextrema()
    assert high - low > 100  # text and a keyframe, not a white page
    assert sum(1 for v in image.getdata() if v < 200) > 0.02 * image.width * image.height

    # A second run reuses nothing it should not: old jobs present, new PDFs written.
    again, second_session = _run_demo(tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    assert len(list((tmp_path / "reports").glob("*/report.pdf"))) == 6
    assert _left_running(second_session, tmp_path / "state") == []
    assert DEMO_TALKS[0].title  # the talks the words above come from
