"""pipeline.context: JobContext pickles its settings once per Settings object, loads them once."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
import ray.cloudpickle

from ingest.models import JobRequest
from ingest.settings import Settings
from pipeline.context import JobContext, settings_from_blob

PICKLERS = [pytest.param(pickle, id="pickle"), pytest.param(ray.cloudpickle, id="cloudpickle")]


def settings(tmp_path: Path, **overrides: object) -> Settings:
    values = {"work_dir": tmp_path / "work", "_env_file": None} | overrides
    return Settings(**values)  # type: ignore[arg-type]


def context(job_id: str, s: Settings, **fields: object) -> JobContext:
    request = JobRequest(url=f"https://example.org/{job_id}.mp4", job_id=job_id)
    return JobContext(job_id, request, s, **fields)  # type: ignore[arg-type]


def fields(ctx: JobContext) -> dict[str, object]:
    return {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx)}


@pytest.mark.parametrize("pickler", PICKLERS)
def test_round_trip_keeps_every_field(pickler, tmp_path: Path) -> None:
    ctx = context("job-1", settings(tmp_path, window=3), attempt=2, step_seconds={"brief": 1.5})
    loaded = pickler.loads(pickler.dumps(ctx))
    assert type(loaded) is JobContext
    assert loaded == ctx
    assert fields(loaded) == fields(ctx)
    assert loaded.settings.window == 3
    assert loaded.workdir == ctx.workdir
    again = dataclasses.replace(loaded, step_seconds={"report": 0.1})
    assert again.step_seconds == {"report": 0.1} and again.settings is loaded.settings


@pytest.mark.parametrize("pickler", PICKLERS)
def test_settings_loaded_once_per_blob(pickler, tmp_path: Path) -> None:
    s = settings(tmp_path)
    first, second = (pickler.dumps(context(j, s)) for j in ("job-1", "job-2"))
    settings_from_blob.cache_clear()
    a, b = pickler.loads(first), pickler.loads(second)
    info = settings_from_blob.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert a.settings is b.settings  # one object shared by the contexts of this process
    assert a.settings == s and (a.job_id, b.job_id) == ("job-1", "job-2")


def test_each_settings_object_travels_as_itself(tmp_path: Path) -> None:
    # The sender keeps the bytes of the last Settings it pickled: another one is pickled anew.
    one, two = settings(tmp_path, window=1), settings(tmp_path, window=2)
    blobs = [pickle.dumps(context("job-1", s)) for s in (one, two, one)]
    assert [pickle.loads(b).settings.window for b in blobs] == [1, 2, 1]
