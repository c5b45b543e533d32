"""The bridge's two Lua writes against the real test Redis: accepting a new job, storing an
outcome. Each must write everything or nothing, and refuse the states that are not theirs."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
import redis.asyncio as aioredis

from ingest.client import Client
from ingest.names import BRIDGE_GROUP, EVENT_FIELD, RedisNames
from ingest.redis_server import RedisServer
from raybridge.stream import JobStream

pytestmark = pytest.mark.integration

ACCEPTED = {"bridge": "b1", "url": "https://example.com/v.mp4", "request": "{}"}
NEW = {"status": "queued", "attempts": "0"}


def _run(redis_server: RedisServer, names: RedisNames, action):
    async def main():
        client = aioredis.from_url(redis_server.url, decode_responses=True)
        stream = JobStream(
            client, names, "b1", claim_idle_ms=60_000, events_maxlen=1000, job_ttl_seconds=600
        )
        await stream.ensure_group()
        try:
            return await action(stream)
        finally:
            await client.aclose()

    return asyncio.run(main())


def _events(redis_client: redis.Redis, names: RedisNames) -> list[str]:
    return [json.loads(f[EVENT_FIELD])["type"] for _, f in redis_client.xrange(names.events)]


def test_accept_new_takes_a_fresh_or_queued_job_once_and_refuses_the_rest(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    def accept(job_id: str, stream_id: str) -> bool:
        return _run(
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
    assert _events(redis_client, names) == ["accepted", "accepted"]


def test_finish_stores_once_and_always_acks(
    redis_client: redis.Redis, redis_server: RedisServer, names: RedisNames
) -> None:
    redis_client.xgroup_create(names.jobs, BRIDGE_GROUP, id="0", mkstream=True)
    first = redis_client.xadd(names.jobs, {"job": "{}"})
    second = redis_client.xadd(names.jobs, {"job": "{}"})
    redis_client.xreadgroup(BRIDGE_GROUP, "b1", {names.jobs: ">"})
    redis_client.hset(names.job("j"), mapping={"status": "running"})

    def finish(stream_id: str, status: str) -> bool:
        fields = {"status": status, "result": status}
        return _run(
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
    assert redis_client.xpending(names.jobs, BRIDGE_GROUP)["pending"] == 0
    assert _events(redis_client, names) == ["completed"]
