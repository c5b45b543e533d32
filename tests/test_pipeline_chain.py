"""pipeline.chain kept outputs: bound to the request that produced them, whole or absent, not
fsynced, a torn one computed again; analyses and briefs shared through the artefact store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ingest.models import JobRequest
from ingest.settings import Settings
from pipeline import chain, storage
from pipeline.context import JobContext
from pipeline.kept import KeptStore
from pipeline.keys import analysis_key, brief_key, download_key


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(work_dir=tmp_path / "work", step_mode="synthetic", _env_file=None)  # type: ignore[call-arg]


def job(settings: Settings, job_id: str = "job-1", **request: str) -> JobContext:
    fields = {"url": "https://example.org/v.mp4", **request}
    return JobContext(job_id, JobRequest(**fields), settings)  # type: ignore[arg-type]


@pytest.fixture
def ctx(settings: Settings) -> JobContext:
    return job(settings)


def test_kept_output_written_without_fsync(
    ctx: JobContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs: list[int] = []
    monkeypatch.setattr(storage.os, "fsync", fsyncs.append)
    output = chain.run_step("download", ctx)
    assert fsyncs == []
    folder = ctx.workdir / "download"
    # no temporary left; the placeholder stands in for the video
    assert sorted(p.name for p in folder.iterdir()) == [chain.SYNTHETIC_MEDIA, chain.OUTPUT_FILE]
    assert chain.load_output("download", ctx) == output


@pytest.mark.parametrize("content", [b"", b"\x28\xb5\x2f\xfd\x00torn"])
def test_torn_kept_output_runs_the_step_again(ctx: JobContext, content: bytes) -> None:
    # What a power cut may leave of a file renamed into place before its data reached disk.
    chain.save_output("download", ctx, {"stale": True})
    (ctx.workdir / "download" / chain.OUTPUT_FILE).write_bytes(content)
    assert chain.load_output("download", ctx) is None
    assert chain.run_step("download", ctx) == chain.synthetic_output("download", ctx)
    assert chain.load_output("download", ctx) == chain.synthetic_output("download", ctx)


def test_torn_stored_brief_is_written_again(ctx: JobContext) -> None:
    media = chain.run_step("download", ctx)
    analysis = chain.run_step("analyse", ctx, media)
    chain.save_output("brief", ctx, {"stale": True}, media, analysis)
    key = brief_key(ctx.request, ctx.settings, analysis_key(ctx.request, ctx.settings, media))
    entry = Path(ctx.settings.artefacts_location) / "brief" / key.digest
    (entry / "output.json.zst").write_bytes(b"\x28\xb5\x2f\xfd\x00torn")
    assert chain.execute("brief", ctx, media, analysis).reused is False
    assert chain.load_output("brief", ctx, media, analysis) == chain.synthetic_output("brief", ctx)


def test_a_job_id_used_again_with_another_url_gets_nothing_of_the_first(
    settings: Settings,
) -> None:
    first = job(settings, "again", url="https://example.org/a.mp4")
    media = chain.run_step("download", first)
    (first.workdir / "download" / "left-behind.bin").write_bytes(b"a's video")
    second = job(settings, "again", url="https://example.org/b.mp4")
    assert chain.load_output("download", second) is None
    assert chain.execute("download", second).reused is False
    # The folder was emptied before the step ran: no file of the first request is left there.
    assert not (second.workdir / "download" / "left-behind.bin").exists()
    assert chain.load_output("download", first) is None  # and the first's output is gone
    assert media == chain.synthetic_output("download", first)


def test_another_job_of_the_same_video_reuses_analysis_and_brief_from_the_store(
    settings: Settings,
) -> None:
    one = job(settings, "one", instructions="focus on costs")
    media = chain.run_step("download", one)
    analysis = chain.run_step("analyse", one, media)
    chain.run_step("brief", one, media, analysis)

    two = job(settings, "two", instructions="focus on costs")  # the same request, another job
    assert chain.execute("analyse", two, media).reused is True
    assert chain.execute("brief", two, media, analysis).reused is True
    other = job(settings, "three", instructions="focus on people")
    assert chain.execute("analyse", other, media).reused is True
    assert chain.execute("brief", other, media, analysis).reused is False  # other instructions
    german = job(settings, "four", language="de")
    assert chain.execute("analyse", german, media).reused is False  # the spoken-language hint
    assert chain.execute("report", two, media, analysis, {}).reused is False  # never kept


def test_a_kept_download_is_never_read_from_the_store(settings: Settings) -> None:
    # The video stays on the node that fetched it: the store keeps only its record.
    one = job(settings, "one")
    media = chain.run_step("download", one)
    store = KeptStore.of(settings)
    assert store.load(download_key(one.request, settings)) == media
    assert chain.execute("download", job(settings, "two")).reused is False


def test_synthetic_outputs_never_serve_real_steps(settings: Settings) -> None:
    one = job(settings, "one")
    media = chain.run_step("download", one)
    chain.run_step("analyse", one, media)
    real = replace(one, settings=settings.model_copy(update={"step_mode": "real"}))
    assert chain.load_output("analyse", real, media) is None
