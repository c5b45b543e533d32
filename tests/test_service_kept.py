"""Kept outputs through the whole service with real parts (a bridge on a local Ray, yt-dlp from
a loopback server, PyAV, faster-whisper, WeasyPrint): a job_id used again after its hash expired
never gets the earlier request's results, nor does a refused URL; a re-brief of an analysed
video runs only brief and report, on no download slot; work folders are deleted."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import redis
from helpers import wait_until

from ingest.client import Client
from ingest.events import Event, EventType
from ingest.names import RedisNames
from ingest.rebrief import rebrief_request
from pipeline.chain import DOWNLOAD_SLOT, REPORT_NODE
from raybridge import BridgeHandle
from vidbrief.samples import ensure_demo_videos, serve_files

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.slow]

JOB_TIMEOUT_S = 240.0
METADATA_URL = "http://169.254.169.254/latest/meta-data/"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        resources={DOWNLOAD_SLOT: 1, REPORT_NODE: 1},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    folder = tmp_path_factory.mktemp("media")
    paths = ensure_demo_videos(folder, count=2)
    with serve_files(folder) as base:
        yield [f"{base}/{p.name}" for p in paths]


def real_bridge(bridge: Callable[..., BridgeHandle], **overrides: Any) -> BridgeHandle:
    return bridge(step_mode="real", asr_model="tiny.en", window=2, **overrides)


def run(client: Client, request: dict[str, Any]) -> Event:
    since = client.last_event_id()
    client.submit(request)
    return client.wait(request["job_id"], timeout_s=JOB_TIMEOUT_S, since=since)


def result(event: Event) -> dict[str, Any]:
    return json.loads(Path(event.data["result_url"]).read_text())


def spoken(doc: dict[str, Any]) -> str:
    return " ".join(s["text"] for s in doc["transcript"]["segments"]).lower()


def test_a_job_id_used_again_never_gets_the_earlier_requests_results(
    local_ray: None,
    bridge: Callable[..., BridgeHandle],
    videos: list[str],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    real_bridge(bridge, work_retention_seconds=3600)  # the earlier job's folder stays
    client = Client(redis_client, names)
    first = run(client, {"url": videos[0], "job_id": "X"})
    assert first.type == EventType.COMPLETED, first.data
    assert "revenue" in spoken(result(first))

    redis_client.delete(names.job("X"))  # its hash expired (VIDBRIEF_JOB_TTL_SECONDS)
    second = run(client, {"url": videos[1], "job_id": "X"})
    assert second.type == EventType.COMPLETED, second.data
    doc = result(second)
    assert doc["metadata"]["url"] == videos[1] and doc["reused_steps"] == []
    assert "robot" in spoken(doc) and "revenue" not in spoken(doc)

    redis_client.delete(names.job("X"))
    refused = run(client, {"url": METADATA_URL, "job_id": "X"})
    assert refused.type == EventType.FAILED
    error = client.status("X").error
    assert error["step"] == "download" and "cloud metadata address" in error["message"]


def test_a_rebrief_runs_only_brief_and_report_and_folders_are_deleted(
    local_ray: None,
    bridge: Callable[..., BridgeHandle],
    videos: list[str],
    redis_client: redis.Redis,
    names: RedisNames,
    make_settings: Callable[..., Any],
) -> None:
    real_bridge(bridge, work_retention_seconds=0)
    client = Client(redis_client, names)
    first = run(client, {"url": videos[0], "job_id": "talk", "instructions": "Numbers."})
    assert first.type == EventType.COMPLETED, first.data
    assert first.data["reused_steps"] == []

    request = rebrief_request(client.status("talk"), instructions="People.", job_id="talk-2")
    again = run(client, request.model_dump(exclude_none=True))
    assert again.type == EventType.COMPLETED, again.data
    assert again.data["reused_steps"] == ["download", "analyse"]
    doc = result(again)
    assert doc["reused_steps"] == ["download", "analyse"]
    assert doc["transcript"] == result(first)["transcript"]
    beside = Path(again.data["result_url"]).parent
    assert doc["shots"] and all((beside / s["keyframe_path"]).is_file() for s in doc["shots"])
    started = {
        e.data["step"]
        for e in client.events()
        if e.job_id == "talk-2" and e.type == EventType.STEP_STARTED
    }
    assert started == {"brief", "report"}  # no download slot, no analysis actor

    work = Path(make_settings().work_dir)
    wait_until("the work folders deleted", lambda: not work.exists() or not any(work.iterdir()), 30)
