"""The live event view (``vidbrief events``): filters, the table, following new events."""

from __future__ import annotations

import io
import threading

import pytest
import redis
from helpers import wait_until
from rich.console import Console

from ingest.events import EventType, build_event
from ingest.names import EVENT_FIELD, RedisNames
from vidbrief.live import show_events

pytestmark = pytest.mark.integration


def _publish(r: redis.Redis, names: RedisNames, type_: EventType, job: str, fact: str, **data):
    event = build_event(type_, job, "vidbrief/bridge-1", fact, data)
    r.xadd(names.events, {EVENT_FIELD: event})


def _render(buffer: io.StringIO | None = None, **kwargs) -> tuple[int, str]:
    buffer = buffer or io.StringIO()
    shown = show_events(console=Console(file=buffer, width=200, color_system=None), **kwargs)
    return shown, buffer.getvalue()


def test_show_events_filters_by_job_and_type(redis_client, names, client):
    _publish(redis_client, names, EventType.ACCEPTED, "job-a", "accepted")
    _publish(
        redis_client,
        names,
        EventType.STEP_STARTED,
        "job-a",
        "download/started",
        step="download",
        node="node-7f3a",
    )
    _publish(
        redis_client,
        names,
        EventType.STEP_COMPLETED,
        "job-a",
        "download/completed",
        step="download",
        node="node-7f3a",
        seconds=0.21,
    )
    _publish(
        redis_client,
        names,
        EventType.STEP_STARTED,
        "job-b",
        "download/started",
        step="download",
        node="node-0001",
    )
    _publish(redis_client, names, EventType.COMPLETED, "job-a", "completed", pages=3)

    shown, text = _render(client=client, follow=False, job_id="job-a", types=["vidbrief.step.*"])
    assert shown == 2
    assert "download started" in text and "download completed" in text and "on node-7f3" in text
    assert "job-b" not in text and "job.accepted" not in text and "seconds=0.21" in text

    shown, text = _render(client=client, follow=False, types=["vidbrief.job"])
    assert shown == 2 and "job.accepted" in text and "job.completed" in text
    assert "step." not in text

    shown, _ = _render(client=client, follow=False)
    assert shown == 5
    shown, text = _render(client=client, follow=False, max_events=2)  # the newest two
    assert shown == 2 and "job-b" in text and "job.completed" in text


def test_show_events_follow_streams_new_matching_events(redis_client, names, client):
    _publish(redis_client, names, EventType.ACCEPTED, "job-a", "accepted")

    def later() -> None:
        # the table of recent events, then the follow view's header: both have a details column
        wait_until("the follow view", lambda: buffer.getvalue().count("details") >= 2, 10)
        _publish(redis_client, names, EventType.STEP_STARTED, "job-b", "x", step="download")
        _publish(
            redis_client,
            names,
            EventType.FAILED,
            "job-a",
            "failed",
            error={"message": "no such video"},
        )

    buffer = io.StringIO()
    publisher = threading.Thread(target=later, daemon=True)
    publisher.start()
    shown, text = _render(buffer, client=client, follow=True, job_id="job-a", max_events=2)
    publisher.join(10)  # its last XADD's reply may still be on the way

    assert shown == 2
    assert "job.accepted" in text and "job.failed" in text and "no such video" in text
    assert "job-b" not in text
