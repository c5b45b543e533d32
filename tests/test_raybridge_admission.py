"""Admission on the real test Redis, with no loop running: each kind of entry becomes a job, a
dead letter, an acknowledgement, or a stored cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from helpers import count_events, events, pending, video, xadd_raw

from ingest.events import EventType
from ingest.names import BRIDGE_GROUP, JOB_FIELD, RedisNames
from raybridge.actor import Bridge
from raybridge.admission import Admitted
from raybridge.stream import Entry

pytestmark = pytest.mark.integration


async def read_and_admit(bridge: Bridge) -> list[Admitted | None]:
    """What the loop does with new entries, minus running the jobs."""
    entries = await bridge.stream.read_new(100, block_ms=10)
    return [await bridge.admission.admit(e) for e in entries]


def admit_entries_but(skipped: str) -> Callable[[Bridge], Any]:
    """Admit every entry of the stream but one, as delivered (whoever holds them)."""

    async def action(bridge: Bridge) -> list[Admitted | None]:
        rows = await bridge.redis.xrange(bridge.names.jobs)
        return [await bridge.admission.admit(Entry(s, f)) for s, f in rows if s != skipped]

    return action


def test_a_new_entry_becomes_a_queued_job_in_the_window(
    on_bridge: Callable[..., Any], redis_client: redis.Redis, names: RedisNames
) -> None:
    stream_id = xadd_raw(redis_client, names, video("fresh"))

    async def action(bridge: Bridge) -> tuple[list[Admitted | None], bool]:
        admitted = await read_and_admit(bridge)
        return admitted, "fresh" in bridge.window

    [admitted], in_window = on_bridge(action)
    assert admitted.slot.job_id == "fresh" and admitted.slot.stream_id == stream_id
    assert admitted.request.url.endswith("/fresh.mp4") and admitted.prefer is None
    assert in_window
    job = redis_client.hgetall(names.job("fresh"))
    assert job["status"] == "queued" and job["bridge"] == "b1" and job["stream_id"] == stream_id
    assert count_events(events(redis_client, names), EventType.ACCEPTED) == {"fresh": 1}
    assert pending(redis_client, names) == 1  # acknowledged only with its outcome


def test_a_request_without_job_id_gets_its_entry_id(
    on_bridge: Callable[..., Any], redis_client: redis.Redis, names: RedisNames
) -> None:
    stream_id = xadd_raw(redis_client, names, {"url": "https://example.com/v.mp4"})
    [admitted] = on_bridge(read_and_admit)
    assert admitted.slot.job_id == stream_id == admitted.request.job_id


def test_invalid_entries_are_dead_lettered_with_the_reason(
    on_bridge: Callable[..., Any], redis_client: redis.Redis, names: RedisNames
) -> None:
    bad_json = redis_client.xadd(names.jobs, {JOB_FIELD: '{"url": "https://e.com/v", "job_id"'})
    no_field = redis_client.xadd(names.jobs, {"video": "https://e.com/v"})
    named = xadd_raw(redis_client, names, {"url": "ftp://e.com/v", "job_id": "named"})
    assert on_bridge(read_and_admit) == [None, None, None]
    dead = {f["stream_id"]: f for _, f in redis_client.xrange(names.dead)}
    assert "not valid JSON" in dead[bad_json]["reason"]
    assert "no 'job' field" in dead[no_field]["reason"] and dead[no_field]["video"]
    assert "scheme 'ftp' is not allowed" in dead[named]["reason"]
    rejected = count_events(events(redis_client, names), EventType.REJECTED)
    assert rejected == {bad_json: 1, no_field: 1, "named": 1}  # a usable job id is the subject
    assert pending(redis_client, names) == 0


def test_an_entry_delivered_too_often_is_dead_lettered(
    on_bridge: Callable[..., Any], redis_client: redis.Redis, names: RedisNames
) -> None:
    redis_client.xgroup_create(names.jobs, BRIDGE_GROUP, id="0", mkstream=True)
    stream_id = xadd_raw(redis_client, names, video("too-often"))
    redis_client.xreadgroup(BRIDGE_GROUP, "b1", {names.jobs: ">"})
    redis_client.xclaim(names.jobs, BRIDGE_GROUP, "b1", 0, [stream_id], retrycount=3)

    async def action(bridge: Bridge) -> Admitted | None:
        [entry] = await bridge.stream.read_own_pending("0", 10)
        return await bridge.admission.admit(entry)

    assert on_bridge(action, max_deliveries=3) is None
    [(_, letter)] = redis_client.xrange(names.dead)
    assert "more than max_deliveries=3" in letter["reason"] and letter["deliveries"] == "4"


def test_finished_duplicate_and_elsewhere_entries_are_acknowledged_without_running(
    on_bridge: Callable[..., Any], redis_client: redis.Redis, names: RedisNames
) -> None:
    redis_client.hset(names.job("done"), mapping={"status": "completed", "attempts": "1"})
    xadd_raw(redis_client, names, video("done"))
    xadd_raw(redis_client, names, video("twice"))
    xadd_raw(redis_client, names, video("twice"))  # a second entry of a job in the window
    redis_client.xgroup_create(names.jobs, BRIDGE_GROUP, id="0", mkstream=True)
    own = xadd_raw(redis_client, names, video("elsewhere"))
    redis_client.xreadgroup(BRIDGE_GROUP, "other-bridge", {names.jobs: ">"})  # holds them all
    redis_client.hset(
        names.job("elsewhere"), mapping={"status": "running", "attempts": "1", "stream_id": own}
    )
    xadd_raw(redis_client, names, video("elsewhere"))  # re-sent while its own entry runs

    admitted = on_bridge(admit_entries_but(own))  # its own entry stays with the other bridge
    assert [a.slot.job_id if a else None for a in admitted] == [None, "twice", None, None]
    assert redis_client.hget(names.job("done"), "attempts") == "1"
    assert redis_client.hget(names.job("elsewhere"), "bridge") is None
    assert count_events(events(redis_client, names), EventType.ACCEPTED) == {"twice": 1}


def test_a_cancel_asked_before_the_job_ran_is_stored_as_cancelled(
    on_bridge: Callable[..., Any], redis_client: redis.Redis, names: RedisNames
) -> None:
    stream_id = xadd_raw(redis_client, names, video("early"))
    redis_client.hset(
        names.job("early"),
        mapping={"status": "queued", "stream_id": stream_id, "cancel_requested": "1"},
    )
    assert on_bridge(read_and_admit) == [None]
    assert redis_client.hget(names.job("early"), "status") == "cancelled"
    assert count_events(events(redis_client, names), EventType.CANCELLED) == {"early": 1}
    assert pending(redis_client, names) == 0


def test_a_resumed_job_goes_back_to_the_node_holding_its_download(
    on_bridge: Callable[..., Any], redis_client: redis.Redis, names: RedisNames
) -> None:
    stream_id = xadd_raw(redis_client, names, video("half"))
    redis_client.hset(
        names.job("half"),
        mapping={
            "status": "running",
            "attempts": "1",
            "stream_id": stream_id,
            "step:download:started": "1.0",
            "step:download:ended": "2.0",
            "step:download:node": "node-b",
        },
    )
    [admitted] = on_bridge(read_and_admit)
    assert admitted.prefer == "node-b"
    assert redis_client.hget(names.job("half"), "attempts") == "1"  # counted when it runs
    assert count_events(events(redis_client, names), EventType.ACCEPTED) == {}  # not new
