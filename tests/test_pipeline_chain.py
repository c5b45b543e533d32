"""pipeline.chain kept outputs: whole or absent, not fsynced, a torn one computed again."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.models import JobRequest
from ingest.settings import Settings
from pipeline import chain, storage
from pipeline.context import JobContext


@pytest.fixture
def ctx(tmp_path: Path) -> JobContext:
    settings = Settings(work_dir=tmp_path / "work", step_mode="synthetic", _env_file=None)  # type: ignore[call-arg]
    return JobContext("job-1", JobRequest(url="https://example.org/v.mp4"), settings)


def test_kept_output_written_without_fsync(
    ctx: JobContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs: list[int] = []
    monkeypatch.setattr(storage.os, "fsync", fsyncs.append)
    output = chain.run_step("download", ctx)
    assert fsyncs == []
    folder = ctx.workdir / "download"
    assert [p.name for p in folder.iterdir()] == [chain.OUTPUT_FILE]  # no temporary left
    assert chain.load_output("download", ctx) == output


@pytest.mark.parametrize("content", [b"", b"\x28\xb5\x2f\xfd\x00torn"])
def test_torn_kept_output_runs_the_step_again(ctx: JobContext, content: bytes) -> None:
    # What a power cut may leave of a file renamed into place before its data reached disk.
    chain.save_output("brief", ctx, {"stale": True})
    (ctx.workdir / "brief" / chain.OUTPUT_FILE).write_bytes(content)
    assert chain.load_output("brief", ctx) is None
    assert chain.run_step("brief", ctx) == chain.synthetic_output("brief", ctx)
    assert chain.load_output("brief", ctx) == chain.synthetic_output("brief", ctx)
