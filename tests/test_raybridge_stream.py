"""JobStream against the real test Redis: reading (new, own pending, reclaimed), keep-alive,
acknowledging, dead letters, job hashes, the two Lua writes (accepting a new job, storing an
outcome: everything or nothing), the control stream and the heartbeat."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from ingest.client import Client
from ingest.names import BRIDGE_GROUP, CANCEL_FIELD, EVENT_FIELD, JOB_FIELD, RedisNames
from ingest.redis_server import RedisServer
from raybridge.stream import JobStream

pytestmark = pytest.mark.integration

ACCEPTED = {"bridge": "b1", "url": "https://example.com/v.mp4", "request": "{}"}
NEW = {"status": "queued", "attempts": "0"}
READ_BLOCK_MS = 50


def run(
    redis_server: RedisServer,
    names: RedisNames,
    action: Callable[[JobStream], Awaitable[Any]],
    consumer: str = "b1",
) -> Any:
    """``action(stream)`` on a JobStream of its own, consumer ``consumer``, group created."""

    async def main() -> Any:
        client = aioredis.from_url(redis_server.url, decode_responses=True)
        stream = JobStream(
            client,
            names,
            consumer,
            events_maxlen=1000,
            job_ttl_seconds=600,
        )
        await stream.ensure_group()
        try:
            return await action(stream)
        finally:
            await client.aclose()

    return asyncio.run(main())


def event_types(redis_client: redis.Redis, names: RedisNames) -> list[str]:
    return [json.loads(f[EVENT_FIELD])["type"] for _, f in redis_client.xrange(names.events)]


def xadd_jobs(redis_client: redis.Redis, names: RedisNames, n: int) -> list[str]:
    return [redis_client.xadd(names.jobs, {JOB_FIELD: f'{{"n": {i}}}'}) for i in range(n)]


def pending_ids(redis_client: redis.Redis, names: RedisNames) -> list[str]:
    rows = redis_client.xpending_range(names.jobs, BRIDGE_GROUP, "-", "+", 100)
    return [r["message_id"] for r in rows]


# -- reading ---------------------------------------------------------------------------------


def test_the_group_is_created_once_from_the_start_of_the_stream(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    early = xadd_jobs(redis_client, names, 2)  # written before any bridge existed
    run(redis_server, names, lambda s: s.ensure_group())  # a second time: no error
    read = run(redis_server, names, lambda s: s.read_new(10, READ_BLOCK_MS))
    assert [e.stream_id for e in read] == early
    assert all(e.deliveries == 1 and JOB_FIELD in e.fields for e in read)


def test_read_new_takes_at_most_count_and_returns_empty_after_blocking(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    ids = xadd_jobs(redis_client, names, 5)
    first = run(redis_server, names, lambda s: s.read_new(3, READ_BLOCK_MS))
    rest = run(redis_server, names, lambda s: s.read_new(10, READ_BLOCK_MS))
    started = time.monotonic()
    none = run(redis_server, names, lambda s: s.read_new(10, READ_BLOCK_MS))
    assert [e.stream_id for e in first + rest] == ids and len(first) == 3
    assert none == [] and time.monotonic() - started >= READ_BLOCK_MS / 1000
    assert pending_ids(redis_client, names) == ids  # read, not acknowledged


def test_a_restarted_bridge_reads_its_own_pending_entries_with_their_delivery_counts(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    ids = xadd_jobs(redis_client, names, 3)
    run(redis_server, names, lambda s: s.read_new(3, READ_BLOCK_MS))
    again = run(redis_server, names, lambda s: s.read_own_pending("0", 2))
    after = run(redis_server, names, lambda s: s.read_own_pending(again[-1].stream_id, 10))
    others = run(redis_server, names, lambda s: s.read_own_pending("0", 10), consumer="b2")
    assert [e.stream_id for e in again + after] == ids
    assert [e.deliveries for e in again + after] == [2, 2, 2]
    assert others == []  # another consumer name has none of them


def test_an_entry_deleted_after_delivery_comes_back_without_fields(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    [entry_id] = xadd_jobs(redis_client, names, 1)
    run(redis_server, names, lambda s: s.read_new(1, READ_BLOCK_MS))
    redis_client.xdel(names.jobs, entry_id)
    [entry] = run(redis_server, names, lambda s: s.read_own_pending("0", 10))
    assert entry.stream_id == entry_id and entry.fields == {}
    assert run(redis_server, names, lambda s: s.is_pending(entry_id)) is True
    run(redis_server, names, lambda s: s.ack([entry_id]))
    assert run(redis_server, names, lambda s: s.is_pending(entry_id)) is False


# -- writing ---------------------------------------------------------------------------------


def test_a_dead_letter_keeps_the_fields_adds_why_publishes_and_acks_together(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    [entry_id] = xadd_jobs(redis_client, names, 1)
    [entry] = run(redis_server, names, lambda s: s.read_new(1, READ_BLOCK_MS))
    run(redis_server, names, lambda s: s.dead_letter(entry, "not valid", b'{"type":"rejected"}'))
    [(_, letter)] = redis_client.xrange(names.dead)
    assert letter == {
        JOB_FIELD: entry.fields[JOB_FIELD],
        "reason": "not valid",
        "deliveries": "1",
        "stream_id": entry_id,
    }
    assert event_types(redis_client, names) == ["rejected"]
    assert pending_ids(redis_client, names) == []


def test_publish_trims_the_events_stream_to_about_its_maximum(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    async def flood(stream: JobStream) -> None:
        for _ in range(3000):
            await stream.publish(b'{"type":"x"}')

    run(redis_server, names, flood)
    node = int(redis_client.config_get("stream-node-max-entries")["stream-node-max-entries"])
    assert 1000 <= redis_client.xlen(names.events) <= 1000 + node


def test_job_state_and_begin_attempt(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    assert run(redis_server, names, lambda s: s.job_state("none")) is None
    redis_client.hset(names.job("bad"), mapping={"status": "no such status"})
    assert run(redis_server, names, lambda s: s.job_state("bad")) is None  # treated as new
    redis_client.hset(names.job("j"), mapping={"status": "queued", "attempts": "0"})
    assert run(redis_server, names, lambda s: s.begin_attempt("j")) == 1
    first = redis_client.hget(names.job("j"), "started_at")
    assert run(redis_server, names, lambda s: s.begin_attempt("j")) == 2
    state = run(redis_server, names, lambda s: s.job_state("j"))
    assert state.status == "running" and state.attempts == 2
    assert redis_client.hget(names.job("j"), "started_at") == first  # the first attempt's


def test_writes_share_a_transaction_when_given_one(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    async def together(stream: JobStream) -> None:
        async with stream.transaction() as pipe:
            await stream.update_job("t", {"status": "queued"}, pipe)
            await stream.publish(b'{"type":"accepted"}', pipe)
            assert redis_client.exists(names.job("t")) == 0  # nothing before the block ends

    run(redis_server, names, together)
    assert redis_client.hget(names.job("t"), "status") == "queued"
    assert event_types(redis_client, names) == ["accepted"]


def test_accept_new_takes_a_fresh_or_queued_job_once_and_refuses_the_rest(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    def accept(job_id: str, stream_id: str) -> bool:
        return run(
            redis_server,
            names,
            lambda s: s.accept_new(job_id, stream_id, ACCEPTED, NEW, b'{"type":"accepted"}'),
        )

    # no hash (a raw XADD): accepted, with the fields of a new job
    assert accept("fresh", "1-0") is True
    fresh = redis_client.hgetall(names.job("fresh"))
    assert fresh["status"] == "queued" and fresh["bridge"] == "b1" and fresh["attempts"] == "0"

    # queued by a producer for this very entry: accepted, its created_at kept
    submitted = Client(redis_client, names).submit({"url": "https://example.com/a.mp4"})
    created = redis_client.hget(names.job(submitted.job_id), "created_at")
    assert accept(submitted.job_id, submitted.stream_id) is True
    assert redis_client.hget(names.job(submitted.job_id), "created_at") == created

    # anything else is the slow path's: nothing written, no event
    redis_client.hset(names.job("other-entry"), mapping={"status": "queued", "stream_id": "9-0"})
    redis_client.hset(names.job("running"), mapping={"status": "running", "stream_id": "2-0"})
    redis_client.hset(
        names.job("cancel"), mapping={"status": "queued", "stream_id": "3-0", "cancel_requested": 1}
    )
    assert accept("other-entry", "1-1") is False
    assert accept("running", "2-0") is False
    assert accept("cancel", "3-0") is False
    assert redis_client.hget(names.job("running"), "bridge") is None
    assert event_types(redis_client, names) == ["accepted", "accepted"]


def test_finish_stores_once_and_always_acks(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    redis_client.xgroup_create(names.jobs, BRIDGE_GROUP, id="0", mkstream=True)
    first, second = xadd_jobs(redis_client, names, 2)
    redis_client.xreadgroup(BRIDGE_GROUP, "b1", {names.jobs: ">"})
    redis_client.hset(names.job("j"), mapping={"status": "running"})

    def finish(stream_id: str, status: str) -> bool:
        fields = {"status": status, "result": status}
        return run(
            redis_server,
            names,
            lambda s: s.finish("j", stream_id, fields, b'{"type":"' + status.encode() + b'"}'),
        )

    assert finish(first, "completed") is True
    # a second outcome (another bridge after a restart) only acknowledges its entry
    assert finish(second, "failed") is False
    job = redis_client.hgetall(names.job("j"))
    assert job["status"] == job["result"] == "completed"
    assert 0 < redis_client.ttl(names.job("j")) <= 600
    assert pending_ids(redis_client, names) == []
    assert event_types(redis_client, names) == ["completed"]


# -- control and heartbeat -------------------------------------------------------------------


def test_control_reading_starts_after_the_newest_message(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    assert run(redis_server, names, lambda s: s.control_tail()) == "0-0"
    old = redis_client.xadd(names.control, {CANCEL_FIELD: "before-start"})
    tail = run(redis_server, names, lambda s: s.control_tail())
    new = redis_client.xadd(names.control, {CANCEL_FIELD: "after-start"})
    read = run(redis_server, names, lambda s: s.read_control(tail, READ_BLOCK_MS))
    assert tail == old
    assert [(e.stream_id, e.fields[CANCEL_FIELD]) for e in read] == [(new, "after-start")]


def test_heartbeat_is_written_and_forgotten(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    run(redis_server, names, lambda s: s.heartbeat("b1", {"window": 8, "in_flight": 3}))
    assert json.loads(redis_client.hget(names.bridges, "b1")) == {"window": 8, "in_flight": 3}
    run(redis_server, names, lambda s: s.forget_bridge("b1"))
    assert not redis_client.hexists(names.bridges, "b1")
