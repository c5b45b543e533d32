"""bench rebrief, small: a 15 s talk briefed twice through a real bridge — the second job reused
download and analysis and ran only brief and report; the tables render. (The time ratio is the
benchmark's figure, BENCHMARKS.md, never asserted here.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from vidbrief.bench.tables import tables

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_a_small_bench_rebrief_run_reuses_the_analysis() -> None:
    args = [sys.executable, "-m", "vidbrief.bench", "rebrief", "--json", "--minutes", "0.25"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDBRIEF_")}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    first, second = doc["jobs"].values()
    assert first["reused_steps"] == [] and first["step_seconds"]["analyse"] > 0
    assert second["reused_steps"] == ["download", "analyse"]
    assert set(second["step_seconds"]) == {"download", "analyse", "brief", "report"}
    assert doc["ratio"] == pytest.approx(second["seconds"] / first["seconds"], rel=0.01)
    console = Console(record=True, width=160)
    for table in tables(doc):
        console.print(table)
    assert "download, analyse" in console.export_text()
