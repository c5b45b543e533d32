"""The bridge's decision at launch, on the real test Redis with a fake launcher: a job whose
video is analysed already runs only brief and report; a URL refused now reuses nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from fake_launcher import FakeLauncher
from helpers import events, run_all, states, xadd_raw

from ingest.events import EventType
from ingest.models import JobRequest, JobStatus
from ingest.names import RedisNames
from ingest.settings import Settings
from pipeline import chain
from pipeline.context import JobContext

pytestmark = pytest.mark.integration

URL = "http://127.0.0.1:9/talk.mp4"  # loopback: allowed with allow_private_urls (the tests')


def analysed(settings: Settings, url: str, **request: str) -> None:
    """What an earlier job of ``url`` leaves in the artefact store (synthetic steps)."""
    synthetic = settings.model_copy(update={"step_mode": "synthetic"})
    ctx = JobContext("earlier", JobRequest(url=url, **request), synthetic)  # type: ignore[arg-type]
    chain.run_step("analyse", ctx, chain.run_step("download", ctx))


def test_a_job_of_an_analysed_video_runs_only_brief_and_report(
    on_bridge: Callable[..., Any],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    analysed(make_settings(), URL)
    xadd_raw(redis_client, names, {"url": URL, "job_id": "again", "instructions": "costs only"})
    xadd_raw(redis_client, names, {"url": URL, "job_id": "german", "language": "de"})
    launcher = FakeLauncher()
    on_bridge(run_all, launcher, step_mode="synthetic")

    runs = {job: (node, steps) for job, node, steps in launcher.launches}
    assert runs["again"] == ("", ["brief", "report"])  # no node, no download slot, no GPU
    assert runs["german"][1] == ["download", "analyse", "brief", "report"]  # another hint
    found = states(redis_client, names, ["again", "german"])
    assert found["again"].status is JobStatus.COMPLETED
    assert {s for s, t in found["again"].steps.items() if t.reused} == {"download", "analyse"}
    completed = {e.job_id: e for e in events(redis_client, names) if e.type == EventType.COMPLETED}
    assert completed["again"].data["reused_steps"] == ["download", "analyse"]
    assert completed["german"].data["reused_steps"] == []
    reused = [
        e.data["step"]
        for e in events(redis_client, names)
        if e.type == EventType.STEP_COMPLETED and e.job_id == "again" and e.data.get("reused")
    ]
    assert reused == ["download", "analyse"]


@pytest.mark.parametrize(
    ("url", "allow_private", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", True, "cloud metadata address"),
        ("http://localhost:9/talk.mp4", False, "loopback address"),  # the policy changed
    ],
    ids=["metadata", "policy-now-refuses"],
)
def test_a_url_refused_now_reuses_nothing_and_fails(
    on_bridge: Callable[..., Any],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    names: RedisNames,
    url: str,
    allow_private: bool,
    reason: str,
) -> None:
    analysed(make_settings(), url)  # kept under this very URL (a store written before)
    xadd_raw(redis_client, names, {"url": url, "job_id": "refused"})
    launcher = FakeLauncher()
    on_bridge(run_all, launcher, step_mode="synthetic", allow_private_urls=allow_private)

    state = states(redis_client, names, ["refused"])["refused"]
    assert state.status is JobStatus.FAILED
    assert state.error["step"] == "download" and not state.error["retryable"]
    assert "refused URL" in state.error["message"] and reason in state.error["message"]
    assert launcher.launches == []  # nothing ran, nothing was handed over
    assert not any(t.reused for t in state.steps.values())
