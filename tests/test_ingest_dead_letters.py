"""Dead letters made by the bridge's admission on the real test Redis: replay touches only the
job of its own entry; an oversized entry is kept in part, once."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from helpers import video, xadd_raw

from ingest.client import Client
from ingest.errors import NotReplayable
from ingest.models import JobStatus, hash_fields
from ingest.names import JOB_FIELD, STREAM_ID_FIELD, RedisNames
from raybridge.actor import Bridge

pytestmark = pytest.mark.integration

FIELD_BYTES = 4096


async def read_and_admit(bridge: Bridge) -> None:
    """What the loop does with new entries, minus running the jobs."""
    for entry in await bridge.stream.read_new(100, block_ms=10):
        await bridge.admission.admit(entry)


def finished_victim(client: Client) -> dict[str, str]:
    """A job the producer submitted and the bridge completed: its hash."""
    submitted = client.submit(video("victim-42"))
    fields = hash_fields(status=JobStatus.COMPLETED, result={"report_url": "/r/victim-42.pdf"})
    client.redis.hset(client.names.job("victim-42"), mapping=fields)
    client.redis.xack(client.names.jobs, "bridge", submitted.stream_id or "")
    return client.redis.hgetall(client.names.job("victim-42"))


def dead_letter_ids(r: redis.Redis, names: RedisNames) -> list[str]:
    return [sid for sid, _ in r.xrange(names.dead)]


@pytest.mark.chaos
def test_a_hostile_dead_letter_naming_another_job_is_not_replayed(
    on_bridge: Callable[..., Any], client: Client, names: RedisNames
) -> None:
    victim = finished_victim(client)
    # A raw entry naming the victim, made invalid so that the bridge dead-letters it.
    xadd_raw(client.redis, names, {**video("victim-42"), "exploit": True})
    on_bridge(read_and_admit)
    (dead_id,) = dead_letter_ids(client.redis, names)
    jobs_before = client.redis.xlen(names.jobs)

    with pytest.raises(NotReplayable, match="belongs to another entry"):
        client.replay_dead(dead_id)

    assert client.redis.hgetall(names.job("victim-42")) == victim  # untouched
    assert dead_letter_ids(client.redis, names) == [dead_id]  # kept, for a look
    assert client.redis.xlen(names.jobs) == jobs_before  # nothing put back


def test_replay_clears_the_hash_of_its_own_entry_and_the_job_runs_again(
    on_bridge: Callable[..., Any], client: Client, names: RedisNames
) -> None:
    submitted = client.submit(video("flaky"))

    async def deliver_too_often(bridge: Bridge) -> None:
        (entry,) = await bridge.stream.read_new(1, block_ms=10)
        entry = type(entry)(entry.stream_id, entry.fields, deliveries=99)
        await bridge.admission.admit(entry)  # more than max_deliveries: dead-lettered

    on_bridge(deliver_too_often)
    (dead_id,) = dead_letter_ids(client.redis, names)
    letter = client.redis.xrange(names.dead)[0][1]
    assert letter[STREAM_ID_FIELD] == submitted.stream_id

    new_id = client.replay_dead(dead_id)

    assert client.redis.xrange(names.jobs)[-1] == (new_id, {JOB_FIELD: letter[JOB_FIELD]})
    assert client.redis.xlen(names.dead) == 0
    on_bridge(read_and_admit)  # the replayed entry is a new job again
    assert client.redis.hget(names.job("flaky"), "stream_id") == new_id


@pytest.mark.parametrize("job_id", ["../victim-42", "victim-42\x1b[2J", 42, "x" * 65])
def test_a_letter_whose_job_id_is_not_valid_touches_no_job(
    client: Client, names: RedisNames, job_id: object
) -> None:
    request = json.dumps({"url": "https://example.com/v.mp4", "job_id": job_id})
    dead_id = client.redis.xadd(names.dead, {JOB_FIELD: request, STREAM_ID_FIELD: "1-1"})
    with pytest.raises(NotReplayable, match="is not valid"):
        client.replay_dead(dead_id)
    assert client.redis.xlen(names.jobs) == 0


@pytest.mark.chaos
def test_an_oversized_entry_is_kept_in_part_once_and_trimmed_from_the_jobs_stream(
    on_bridge: Callable[..., Any], client: Client, names: RedisNames
) -> None:
    from ingest.dead_letters import MARKER_NAME_BYTES
    from ingest.names import TRUNCATED_FIELD

    r = client.redis
    r.xadd(names.jobs, {JOB_FIELD: "x" * 10 * 2**20, "y" * 2**20: "z"})

    async def admit_then_trim(bridge: Bridge) -> int:
        await read_and_admit(bridge)
        return await bridge.trimmer.trim()

    trimmed = on_bridge(admit_then_trim, dead_letter_field_bytes=FIELD_BYTES)

    (dead_id, letter), *_ = r.xrange(names.dead)
    assert all(len(k.encode()) <= FIELD_BYTES and len(v) <= FIELD_BYTES for k, v in letter.items())
    assert "larger than" in letter["reason"]
    assert json.loads(letter[TRUNCATED_FIELD]) == [JOB_FIELD, "y" * MARKER_NAME_BYTES]
    assert trimmed == 1 and r.xlen(names.jobs) == 0  # acknowledged: not kept a second time
    stored = r.memory_usage(names.dead) + (r.memory_usage(names.jobs) or 0)
    assert stored < 64 * 1024, stored
    with pytest.raises(NotReplayable, match="only part"):
        client.replay_dead(dead_id)
