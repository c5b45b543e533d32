"""Finished jobs as a Parquet dataset, one row per job, partitioned by day (hive style).

Layout under ``VIDBRIEF_DATASET_URL`` (a path or an fsspec URL, see :mod:`pipeline.storage`)::

    day=2026-11-23/part-20261123T114501123456Z-3f9a….parquet   one file per append_rows call
    day=2026-11-23/part-20261124T020000000000Z-77c1….parquet   … or one per day after compact()

The day is the UTC date the job finished. Every file has the explicit schema of
:func:`file_schema` (the ``day`` column lives in the folder name), zstd-compressed; any Parquet
reader that knows hive partitioning (pyarrow, DuckDB, Spark, Polars) reads the folder as one
table. Appends never touch existing files, so writers need no lock; a file appears whole or not
at all (storage writes are atomic). :func:`compact` writes the merged file first and deletes the
small ones after: a crash in between leaves rows twice, never none, and the next compaction
drops the copies. Run compaction from one place (``vidbrief export --compact``, a cron job).
"""

from __future__ import annotations

import csv
import json
import posixpath
import re
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TextIO

from ingest.errors import ConfigError
from ingest.models import JobState
from ingest.settings import STEP_NAMES
from pipeline import storage

if TYPE_CHECKING:
    import pyarrow as pa
    from fsspec import AbstractFileSystem

    from ingest.settings import Settings

DAY_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PART_GLOB = "part-*.parquet"
PARQUET_COMPRESSION = "zstd"
EXPORT_FORMATS = ("table", "json", "csv")
TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens", "total_tokens")
# What the caller may add to a row that the job hash does not hold.
EXTRA_KEYS = frozenset({*TOKEN_COLUMNS, "token_usage", "duration_s", "report_url", "result_url"})
TABLE_COLUMNS = ("day", "job_id", "status", "error_class", "attempts", "duration_s")


# --- schema ---------------------------------------------------------------------------------


def file_schema() -> pa.Schema:
    """The columns stored in every file (all but ``day``)."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    steps = [
        pa.field(f"{step}_{what}", ts if what != "node" else pa.string())
        for step in STEP_NAMES
        for what in ("started", "ended", "node")
    ]
    return pa.schema(
        [
            pa.field("job_id", pa.string(), nullable=False),
            pa.field("url", pa.string()),
            pa.field("status", pa.string(), nullable=False),
            pa.field("error_class", pa.string()),
            pa.field("error_step", pa.string()),
            pa.field("attempts", pa.int32()),
            pa.field("created_at", ts),
            pa.field("finished_at", ts),
            *steps,
            *(pa.field(name, pa.int64()) for name in TOKEN_COLUMNS),
            pa.field("duration_s", pa.float64()),
            pa.field("report_url", pa.string()),
            pa.field("result_url", pa.string()),
        ]
    )


def dataset_schema() -> pa.Schema:
    """The table a reader sees: the file columns plus the partition column ``day``."""
    import pyarrow as pa

    return file_schema().append(pa.field("day", pa.string()))


# --- rows -----------------------------------------------------------------------------------


def row_from_state(state: JobState, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One dataset row for a finished job; ``extra`` adds what the job hash does not hold.

    ``extra`` keys: ``token_usage`` (a TokenUsage dict) or ``prompt_tokens``,
    ``completion_tokens``, ``total_tokens``; ``duration_s`` (the video); ``report_url`` and
    ``result_url`` (default: from the job's result).
    """
    if not state.status.finished:
        raise ValueError(f"dataset: job {state.job_id} is {state.status}, not finished")
    extra = _checked_extra(extra or {})
    error, result = state.error or {}, state.result or {}
    finished = _timestamp(state.finished_at or state.updated_at)
    return {
        "job_id": state.job_id,
        "url": state.url,
        "status": str(state.status),
        "error_class": error.get("class"),
        "error_step": error.get("step") or None,
        "attempts": state.attempts,
        "created_at": _timestamp(state.created_at),
        "finished_at": finished,
        **_step_columns(state),
        **_token_columns(extra),
        "duration_s": extra.get("duration_s"),
        "report_url": extra.get("report_url", result.get("report_url")),
        "result_url": extra.get("result_url", result.get("result_url")),
        "day": (finished or datetime.now(UTC)).date().isoformat(),
    }


def _checked_extra(extra: Mapping[str, Any]) -> Mapping[str, Any]:
    unknown = set(extra) - EXTRA_KEYS
    if unknown:
        raise ValueError(f"dataset: unknown extra {sorted(unknown)}; known: {sorted(EXTRA_KEYS)}")
    return extra


def _timestamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _step_columns(state: JobState) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for step in STEP_NAMES:
        timing = state.steps.get(step)
        columns[f"{step}_started"] = _timestamp(timing.started) if timing else None
        columns[f"{step}_ended"] = _timestamp(timing.ended) if timing else None
        columns[f"{step}_node"] = timing.node if timing else None
    return columns


def _token_columns(extra: Mapping[str, Any]) -> dict[str, int | None]:
    usage = {**(extra.get("token_usage") or {}), **extra}
    return {name: usage.get(name) for name in TOKEN_COLUMNS}


# --- writing --------------------------------------------------------------------------------


def append_rows(
    dataset_url: str,
    rows: Iterable[Mapping[str, Any]],
    storage_options: storage.StorageOptions | None = None,
) -> list[str]:
    """Write ``rows`` as one new file per day they fall on; return the files' URLs."""
    by_day: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_day[_checked_day(row["day"])].append(row)
    return [
        _write_part(dataset_url, day, _table(day_rows), storage_options)
        for day, day_rows in sorted(by_day.items())
    ]


def _table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    import pyarrow as pa

    schema = file_schema()
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema)


def _write_part(
    dataset_url: str, day: str, table: pa.Table, options: storage.StorageOptions | None
) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")  # names sort by time of writing
    relpath = f"day={day}/part-{stamp}-{uuid.uuid4().hex}.parquet"
    return storage.write_bytes(dataset_url, relpath, _parquet_bytes(table), options)


def _parquet_bytes(table: pa.Table) -> bytes:
    # In memory, then one atomic write: files are small (a row or a day of rows).
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION)
    return sink.getvalue().to_pybytes()


def _checked_day(day: str | date) -> str:
    text = day.isoformat() if isinstance(day, date) else str(day)
    if not DAY_PATTERN.match(text):
        raise ValueError(f"dataset: day {day!r} is not YYYY-MM-DD")
    return text


# --- reading --------------------------------------------------------------------------------


def read_dataset(
    dataset_url: str,
    storage_options: storage.StorageOptions | None = None,
    day: str | date | None = None,
) -> pa.Table:
    """Every row (or one day's), oldest finished first; an empty table where nothing is yet."""
    import pyarrow.dataset as ds

    fs, root = storage.filesystem(dataset_url, storage_options)
    if not fs.exists(root):
        return dataset_schema().empty_table()
    dataset = ds.dataset(
        root, filesystem=fs, format="parquet", schema=dataset_schema(), partitioning=_hive()
    )
    where = None if day is None else ds.field("day") == _checked_day(day)
    return dataset.to_table(filter=where).sort_by(
        [("finished_at", "ascending"), ("job_id", "ascending")]
    )


def _hive() -> Any:
    import pyarrow as pa
    import pyarrow.dataset as ds

    # Explicit: "2026-11-23" stays a string, whatever a reader would infer from it.
    return ds.partitioning(pa.schema([pa.field("day", pa.string())]), flavor="hive")


# --- compaction -----------------------------------------------------------------------------


def compact(
    dataset_url: str,
    day: str | date | None = None,
    storage_options: storage.StorageOptions | None = None,
) -> dict[str, int]:
    """Merge each day's files (or one day's) into one; return {day: files merged}."""
    return _compact(dataset_url, day, storage_options)


def _compact(
    dataset_url: str, day: str | date | None, options: storage.StorageOptions | None
) -> dict[str, int]:
    fs, root = storage.filesystem(dataset_url, options)
    days = [_checked_day(day)] if day is not None else _days(fs, root)
    merged = {d: _compact_day(dataset_url, fs, root, d, options) for d in days}
    return {d: n for d, n in merged.items() if n}


def _days(fs: AbstractFileSystem, root: str) -> list[str]:
    names = (posixpath.basename(p.rstrip("/")) for p in fs.glob(f"{root}/day=*"))
    return sorted(n.removeprefix("day=") for n in names if DAY_PATTERN.match(n[4:]))


def _compact_day(
    dataset_url: str,
    fs: AbstractFileSystem,
    root: str,
    day: str,
    options: storage.StorageOptions | None,
) -> int:
    files = sorted(fs.glob(f"{root}/day={day}/{PART_GLOB}"))
    if len(files) < 2:
        return 0
    table = _unique(_read_files(fs, files))
    _write_part(dataset_url, day, table, options)
    fs.rm(files)  # only after the merged file is whole: a crash here duplicates, never loses
    return len(files)


def _read_files(fs: AbstractFileSystem, files: list[str]) -> pa.Table:
    import pyarrow.dataset as ds

    # The explicit schema also reads older files that lack a newer column (as nulls).
    return ds.dataset(files, filesystem=fs, format="parquet", schema=file_schema()).to_table()


def _unique(table: pa.Table) -> pa.Table:
    """Without exact copies of a job's row (left by a compaction that crashed), in order."""
    import pyarrow as pa

    indexed = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    keys = ["job_id", "finished_at"]
    first = indexed.group_by(keys, use_threads=False).aggregate([("_row", "min")])
    keep = first["_row_min"].to_pylist()
    return table.take(sorted(keep)).sort_by([("finished_at", "ascending"), ("job_id", "ascending")])


# --- export (``vidbrief export``) -------------------------------------------------------------


def export(
    settings: Settings,
    compact: bool = False,
    day: str | date | None = None,
    fmt: str = "table",
    out: TextIO | None = None,
) -> int:
    """Print the dataset (or one day) as a table, JSON or CSV, compacting first if asked.

    Returns the number of rows printed. ConfigError when ``VIDBRIEF_DATASET_URL`` is unset.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export: format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    rows = export_rows(settings, compact=compact, day=day)
    print_rows(rows, fmt, out or sys.stdout)
    return len(rows)


def export_rows(
    settings: Settings, compact: bool = False, day: str | date | None = None
) -> list[dict[str, Any]]:
    """The dataset's rows (or one day's), compacting first if asked. ConfigError when
    ``VIDBRIEF_DATASET_URL`` is unset."""
    url = settings.dataset_url
    if not url:
        raise ConfigError(
            "no dataset configured: set VIDBRIEF_DATASET_URL to a path or an fsspec URL "
            "(e.g. s3://bucket/vidbrief/jobs)"
        )
    options = storage.settings_options(settings, url)
    if compact:
        _compact(url, day, options)
    return read_dataset(url, options, day).to_pylist()


def print_rows(rows: list[dict[str, Any]], fmt: str, out: TextIO) -> None:
    """Rows as a table, JSON or CSV."""
    {"table": _print_table, "json": _print_json, "csv": _print_csv}[fmt](rows, out)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _print_json(rows: list[dict[str, Any]], out: TextIO) -> None:
    json.dump([{k: _plain(v) for k, v in r.items()} for r in rows], out, ensure_ascii=False)
    out.write("\n")


def _print_csv(rows: list[dict[str, Any]], out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=dataset_schema().names, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _plain(v) for k, v in r.items()} for r in rows)


def _print_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(*TABLE_COLUMNS, "tokens", "report", title=f"{len(rows)} finished jobs")
    for r in rows:
        cells = [_cell(r[c]) for c in TABLE_COLUMNS]
        # Text, not str: a value is never read as Rich markup.
        table.add_row(*map(Text, [*cells, _cell(r["total_tokens"]), _cell(r["report_url"])]))
    Console(file=out, width=200 if not out.isatty() else None).print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if isinstance(value, float) else str(value)
