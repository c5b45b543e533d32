"""The producer side against a real redis-server."""

from __future__ import annotations

import json
import threading

import pytest
from helpers import wait_until

from ingest.client import Client
from ingest.errors import InvalidRequest
from ingest.events import EventType, build_event
from ingest.names import EVENT_FIELD, JOB_FIELD

pytestmark = pytest.mark.integration


def test_submit_writes_exactly_one_entry_that_parses_back(client: Client, names):
    sent = client.submit(
        {"url": "https://example.com/v.mp4", "job_id": "job-1", "instructions": "the budget"}
    )
    entries = client.redis.xrange(names.jobs)
    assert sent.created and sent.job_id == "job-1"
    assert len(entries) == 1 and entries[0][0] == sent.stream_id
    assert json.loads(entries[0][1][JOB_FIELD]) == {
        "schema_version": 1,
        "url": "https://example.com/v.mp4",
        "job_id": "job-1",
        "instructions": "the budget",
    }
    assert client.status("job-1").status == "queued"


def test_the_same_job_id_twice_is_one_job(client: Client, names):
    first = client.submit({"url": "https://example.com/a", "job_id": "dup"})
    second = client.submit({"url": "https://example.com/b", "job_id": "dup"})
    assert first.created and not second.created and second.status == "queued"
    assert client.redis.xlen(names.jobs) == 1


def test_racing_producers_enqueue_a_job_id_once(client: Client, names):
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                client.submit({"url": "https://example.com/a", "job_id": "race"}).created
            )
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert client.redis.xlen(names.jobs) == 1


def test_an_invalid_request_is_refused_before_redis(client: Client, names):
    with pytest.raises(InvalidRequest, match="url: scheme"):
        client.submit({"url": "ftp://x"})
    assert client.redis.exists(names.jobs) == 0


def test_cancel_marks_the_job_and_tells_the_bridges(client: Client, names):
    client.submit({"url": "https://example.com/a", "job_id": "c1"})
    state = client.cancel("c1")
    assert state.cancel_requested
    control = client.redis.xrange(names.control)
    assert [fields["cancel"] for _, fields in control] == ["c1"]
    assert client.cancel("unknown") is None


def _blocked_in_xread(client: Client) -> bool:
    return any("b" in c["flags"] and c["cmd"] == "xread" for c in client.redis.client_list())


def _publish(client: Client, names, type_: EventType, job_id: str, fact: str) -> None:
    client.redis.xadd(names.events, {EVENT_FIELD: build_event(type_, job_id, "vidbrief/t", fact)})


def test_wait_returns_the_terminal_event_published_later(client: Client, names):
    client.submit({"url": "https://example.com/a", "job_id": "w1"})
    since = client.last_event_id()

    def publish_once_blocked() -> None:
        wait_until("wait() blocked in XREAD", lambda: _blocked_in_xread(client), 10)
        _publish(client, names, EventType.STEP_STARTED, "w1", "1/download/started")
        _publish(client, names, EventType.COMPLETED, "other", "completed")
        _publish(client, names, EventType.COMPLETED, "w1", "completed")

    publisher = threading.Thread(target=publish_once_blocked, daemon=True)
    publisher.start()
    event = client.wait("w1", timeout_s=10, since=since)
    publisher.join(10)  # its last XADD's reply may still be on the way
    assert event.type == EventType.COMPLETED and event.job_id == "w1"


def test_wait_times_out_with_a_clear_error(client: Client):
    client.submit({"url": "https://example.com/a", "job_id": "slow"})
    with pytest.raises(TimeoutError, match="slow did not finish"):
        client.wait("slow", timeout_s=0.3)


def test_events_lists_in_order_and_replay_puts_a_dead_letter_back(client: Client, names):
    for i in range(3):
        _publish(client, names, EventType.ACCEPTED, f"j{i}", "accepted")
    assert [e.job_id for e in client.events()] == ["j0", "j1", "j2"]
    dead_id = client.redis.xadd(
        names.dead,
        {JOB_FIELD: '{"url": "http://e/v", "job_id": "d"}', "reason": "x", "deliveries": "6"},
    )
    new_id = client.replay_dead(dead_id)
    assert client.redis.xrange(names.jobs)[-1][0] == new_id
    assert client.redis.xlen(names.dead) == 0
    with pytest.raises(KeyError):
        client.replay_dead(dead_id)
