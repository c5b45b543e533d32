"""pipeline.dataset: rows of finished jobs, hive-partitioned Parquet locally and on real S3."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from s3_server import S3Server

from ingest.errors import ConfigError
from ingest.models import JobState, JobStatus, StepTiming
from ingest.settings import STEP_NAMES, Settings
from pipeline import dataset

DAY1, DAY2 = "2026-03-01", "2026-03-02"
USAGE = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500, "calls": 2}


def at(day: str, hour: int, minute: int = 0) -> float:
    return datetime.fromisoformat(f"{day}T{hour:02d}:{minute:02d}:00+00:00").timestamp()


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.fixture
def make_state() -> Callable[..., JobState]:
    """Factory: a finished job's state, steps one minute each on node-a (report on node-b)."""

    def make(job_id: str, day: str = DAY1, hour: int = 10, **fields: Any) -> JobState:
        start = at(day, hour)
        steps = {
            name: StepTiming(started=start + 60 * i, ended=start + 60 * (i + 1), node="node-a")
            for i, name in enumerate(STEP_NAMES)
        }
        steps["report"].node = "node-b"
        base: dict[str, Any] = {
            "job_id": job_id,
            "status": JobStatus.COMPLETED,
            "url": f"https://videos.example/{job_id}.mp4",
            "created_at": start - 5,
            "finished_at": start + 60 * len(STEP_NAMES) + 1,
            "attempts": 1,
            "steps": steps,
            "result": {
                "report_url": f"s3://r/{job_id}/report.pdf",
                "result_url": f"s3://r/{job_id}/result.json",
                "pages": 4,
            },
        }
        return JobState(**{**base, **fields})

    return make


@pytest.fixture
def failed_state(make_state: Callable[..., JobState]) -> JobState:
    """Failed in analyse on its second attempt: no report, no brief, no report step."""
    state = make_state("job-failed", hour=11, attempts=2, result=None)
    state.steps = {k: v for k, v in state.steps.items() if k in ("download", "analyse")}
    state.error = {"class": "PermanentStepError", "message": "no audio", "step": "analyse"}
    state.status = JobStatus.FAILED
    return state


def rows_of(states: list[JobState]) -> list[dict[str, Any]]:
    return [dataset.row_from_state(s, {"token_usage": USAGE, "duration_s": 93.5}) for s in states]


def hive_table(root: str, filesystem: Any = None) -> pa.Table:
    """Read with pyarrow alone (not our reader): what any hive-aware consumer sees."""
    found = ds.dataset(root, filesystem=filesystem, format="parquet", partitioning="hive")
    return found.to_table().sort_by("job_id")


# --- rows -----------------------------------------------------------------------------------


def test_row_of_a_completed_job(make_state: Callable[..., JobState]) -> None:
    state = make_state("job-1")
    row = dataset.row_from_state(state, {"token_usage": USAGE, "duration_s": 93.5})
    assert set(row) == set(dataset.dataset_schema().names)
    assert row["status"] == "completed" and row["day"] == DAY1 and row["attempts"] == 1
    assert row["download_started"] == utc(at(DAY1, 10))
    assert row["report_ended"] == utc(at(DAY1, 10, 4)) and row["report_node"] == "node-b"
    assert row["finished_at"] == utc(state.finished_at or 0)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
        1200,
        300,
        1500,
    )
    assert row["duration_s"] == 93.5 and row["error_class"] is None
    assert row["report_url"] == "s3://r/job-1/report.pdf"


def test_row_of_a_failed_job(failed_state: JobState) -> None:
    row = dataset.row_from_state(failed_state, {})
    assert (row["status"], row["error_class"], row["error_step"]) == (
        "failed",
        "PermanentStepError",
        "analyse",
    )
    assert row["analyse_node"] == "node-a" and row["brief_started"] is None
    assert row["report_url"] is None and row["total_tokens"] is None and row["attempts"] == 2


def test_flat_extra_and_refusals(make_state: Callable[..., JobState]) -> None:
    extra = {"total_tokens": 7, "report_url": "/elsewhere/report.pdf"}
    row = dataset.row_from_state(make_state("job-1"), extra)
    assert row["total_tokens"] == 7 and row["report_url"] == "/elsewhere/report.pdf"
    with pytest.raises(ValueError, match="unknown extra"):
        dataset.row_from_state(make_state("job-1"), {"tokens": 7})
    with pytest.raises(ValueError, match="not finished"):
        dataset.row_from_state(make_state("job-1", status=JobStatus.RUNNING), {})


# --- a local dataset ------------------------------------------------------------------------


def test_append_partitions_by_day(
    tmp_path: Path, make_state: Callable[..., JobState], failed_state: JobState
) -> None:
    root = str(tmp_path / "jobs")
    states = [make_state("job-1"), failed_state, make_state("job-3", day=DAY2)]
    written = dataset.append_rows(root, rows_of(states))
    assert [Path(p).parent.name for p in written] == [f"day={DAY1}", f"day={DAY2}"]
    assert all(Path(p).name.startswith("part-") for p in written)

    table = hive_table(root)
    assert table.column("job_id").to_pylist() == ["job-1", "job-3", "job-failed"]
    assert [str(d) for d in table.column("day").to_pylist()] == [DAY1, DAY2, DAY1]
    assert table.column("status").to_pylist() == ["completed", "completed", "failed"]
    assert table.column("error_class").to_pylist() == [None, None, "PermanentStepError"]
    assert table.schema.field("download_started").type == pa.timestamp("us", tz="UTC")
    stored = pq.read_schema(written[0])
    assert stored.remove_metadata() == dataset.file_schema()


def test_read_dataset_explicit_schema_and_day(
    tmp_path: Path, make_state: Callable[..., JobState], failed_state: JobState
) -> None:
    root = str(tmp_path / "jobs")
    assert dataset.read_dataset(root).num_rows == 0  # nothing yet: empty, not an error
    dataset.append_rows(root, rows_of([make_state("job-1"), failed_state]))
    dataset.append_rows(root, rows_of([make_state("job-3", day=DAY2)]))
    table = dataset.read_dataset(root)
    assert table.schema == dataset.dataset_schema()
    assert table.column("job_id").to_pylist() == ["job-1", "job-failed", "job-3"]  # by finish
    assert dataset.read_dataset(root, day=DAY2).column("job_id").to_pylist() == ["job-3"]


def test_compaction_merges_a_day_and_keeps_every_row(
    tmp_path: Path, make_state: Callable[..., JobState]
) -> None:
    root = tmp_path / "jobs"
    for i in range(6):
        dataset.append_rows(str(root), rows_of([make_state(f"job-{i}", hour=i)]))
    dataset.append_rows(str(root), rows_of([make_state("job-x", day=DAY2)]))
    before = dataset.read_dataset(str(root))
    assert len(list((root / f"day={DAY1}").glob("*.parquet"))) == 6

    assert dataset.compact(str(root), day=DAY1) == {DAY1: 6}
    assert len(list((root / f"day={DAY1}").glob("*.parquet"))) == 1
    assert dataset.read_dataset(str(root)).equals(before)
    assert dataset.compact(str(root)) == {}  # one file a day already: nothing to do


def test_compaction_drops_copies_a_crash_left(
    tmp_path: Path, make_state: Callable[..., JobState]
) -> None:
    root = str(tmp_path / "jobs")
    rows = rows_of([make_state("job-1"), make_state("job-2", hour=12)])
    dataset.append_rows(root, rows)
    dataset.append_rows(root, rows)  # as if a merged file was written and the old ones stayed
    assert dataset.compact(root) == {DAY1: 2}
    assert dataset.read_dataset(root).column("job_id").to_pylist() == ["job-1", "job-2"]


def test_files_without_a_newer_column_still_read(tmp_path: Path) -> None:
    old = pa.table({"job_id": ["old-1"], "status": ["completed"]})  # an older, narrower file
    (tmp_path / f"day={DAY1}").mkdir()
    pq.write_table(old, tmp_path / f"day={DAY1}" / "part-0-old.parquet")
    table = dataset.read_dataset(str(tmp_path))
    assert (
        table.column("job_id").to_pylist() == ["old-1"] and table["duration_s"][0].as_py() is None
    )


# --- export ---------------------------------------------------------------------------------


def test_export_formats(
    tmp_path: Path, make_state: Callable[..., JobState], failed_state: JobState
) -> None:
    settings = Settings(dataset_url=str(tmp_path / "jobs"), _env_file=None)
    dataset.append_rows(str(tmp_path / "jobs"), rows_of([make_state("job-1")]))
    dataset.append_rows(str(tmp_path / "jobs"), rows_of([failed_state]))

    out = io.StringIO()
    assert dataset.export(settings, compact=True, day=DAY1, fmt="json", out=out) == 2
    records = json.loads(out.getvalue())
    assert [r["job_id"] for r in records] == ["job-1", "job-failed"]
    assert records[0]["finished_at"].startswith(f"{DAY1}T10:04:01")
    assert len(list((tmp_path / "jobs" / f"day={DAY1}").iterdir())) == 1  # compacted

    out = io.StringIO()
    dataset.export(settings, fmt="csv", out=out)
    assert [r["error_class"] for r in csv.DictReader(io.StringIO(out.getvalue()))] == [
        "",
        "PermanentStepError",
    ]

    out = io.StringIO()
    dataset.export(settings, fmt="table", out=out)
    assert "job-failed" in out.getvalue() and "2 finished jobs" in out.getvalue()


def test_export_needs_a_dataset() -> None:
    with pytest.raises(ConfigError, match="VIDBRIEF_DATASET_URL"):
        dataset.export(Settings(_env_file=None), out=io.StringIO())
    with pytest.raises(ValueError, match="format"):
        dataset.export(Settings(_env_file=None), fmt="xml")


# --- on S3 (a real S3-compatible server on loopback) ----------------------------------------


@pytest.mark.integration
def test_dataset_on_s3(
    s3: S3Server, bucket: str, make_state: Callable[..., JobState], failed_state: JobState
) -> None:
    import s3fs

    url = f"s3://{bucket}/vidbrief/jobs"
    dataset.append_rows(url, rows_of([make_state("job-1"), failed_state]))
    dataset.append_rows(url, rows_of([make_state("job-3", day=DAY2)]))
    dataset.append_rows(url, rows_of([make_state("job-4", hour=15)]))

    # A separate s3fs client, no instance cache: what another consumer of the bucket sees.
    fs = s3fs.S3FileSystem(endpoint_url=s3.endpoint_url, skip_instance_cache=True)
    keys = sorted(fs.find(f"{bucket}/vidbrief/jobs"))
    assert [k.split("/")[3] for k in keys] == [f"day={DAY1}"] * 2 + [f"day={DAY2}"]
    table = hive_table(f"{bucket}/vidbrief/jobs", fs)
    assert table.column("job_id").to_pylist() == ["job-1", "job-3", "job-4", "job-failed"]
    assert table.column("error_step").to_pylist() == [None, None, None, "analyse"]

    assert dataset.compact(url) == {DAY1: 2}
    fs.invalidate_cache()
    assert len(fs.find(f"{bucket}/vidbrief/jobs/day={DAY1}")) == 1
    merged = dataset.read_dataset(url)
    assert sorted(merged.column("job_id").to_pylist()) == ["job-1", "job-3", "job-4", "job-failed"]
    assert merged.column("total_tokens").to_pylist() == [1500] * 4
