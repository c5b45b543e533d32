"""Webhook delivery end to end: a real redis-server, real rq worker processes
(``python -m webhooks``), a real HTTP receiver on loopback (tests/receiver.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from helpers import (
    WEBHOOK_BACKOFF_S,
    WEBHOOK_SECRET,
    WEBHOOK_TIMEOUT_S,
    kill_session,
    wait_until,
)
from receiver import Reply
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry
from standardwebhooks import Webhook

from ingest.client import Client
from ingest.events import EventType, build_event
from ingest.names import RedisNames
from ingest.settings import Settings
from webhooks.enqueue import enqueue_webhook, rq_connection, webhook_id_for
from webhooks.verify import verify_webhook

pytestmark = pytest.mark.integration

WAIT_S = 20.0  # upper bound for a delivery that needs no crash recovery
RECOVERY_WAIT_S = 45.0  # upper bound for the crash case (expected 15–25 s, see WebhookWorker)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        webhook_secret=WEBHOOK_SECRET,
        webhook_backoff_seconds=WEBHOOK_BACKOFF_S,
        webhook_timeout_seconds=WEBHOOK_TIMEOUT_S,
    )


def terminal_event(job_id: str) -> bytes:
    return build_event(EventType.COMPLETED, job_id, "vidbrief/test", "completed", {"pages": 3})


def finished_job(r: redis.Redis, names: RedisNames, job_id: str) -> None:
    """The job hash the bridge leaves behind (the webhook summary goes there)."""
    r.hset(names.job(job_id), mapping={"status": "completed", "attempts": "1"})


def attempts(r: redis.Redis, names: RedisNames, job_id: str) -> list[dict]:
    return [json.loads(x) for x in r.lrange(names.webhook_log(job_id), 0, -1)]


def webhook_status(r: redis.Redis, names: RedisNames, job_id: str) -> str | None:
    return r.hget(names.job(job_id), "webhook_status")


def rq_settled(r: redis.Redis, names: RedisNames, rq_id: str) -> bool:
    """rq is done with the webhook: its job ended and nothing of it is queued or scheduled,
    so no further attempt can come."""
    conn = rq_connection(r)
    status = Job.fetch(rq_id, connection=conn).get_status()
    queue = Queue(names.webhook_queue, connection=conn)
    return (
        status in (JobStatus.FINISHED, JobStatus.FAILED)
        and queue.count == 0
        and ScheduledJobRegistry(queue=queue).count == 0
    )


def test_retries_until_delivered_with_one_webhook_id(
    redis_client, names, settings, receiver, start_worker
):
    url = receiver.script("/hook", 500, 500, 500, 200)
    finished_job(redis_client, names, "job-1")
    event = terminal_event("job-1")
    start_worker()

    rq_id = enqueue_webhook(redis_client, settings, "job-1", url, event)
    assert rq_id == webhook_id_for("job-1/completed")
    requests = receiver.wait_for("/hook", 4, WAIT_S)
    wait_until(
        "delivered", lambda: webhook_status(redis_client, names, "job-1") == "delivered", WAIT_S
    )

    assert {r.headers["webhook-id"] for r in requests} == {rq_id}
    for request in requests:
        assert request.body == event
        assert request.headers["content-type"] == "application/json"
        # the official library, then ours
        assert (
            Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)["id"] == "job-1/completed"
        )
        assert verify_webhook(request.body, request.headers, WEBHOOK_SECRET)["subject"] == "job-1"
    log = attempts(redis_client, names, "job-1")
    assert [(e["attempt"], e["status"], e["outcome"]) for e in log] == [
        (1, 500, "retry"),
        (2, 500, "retry"),
        (3, 500, "retry"),
        (4, 200, "delivered"),
    ]
    assert all(e["duration_ms"] >= 0 and e["time"].endswith("+00:00") for e in log)
    assert redis_client.hget(names.job("job-1"), "webhook_attempts") == "4"
    assert redis_client.xlen(names.dead) == 0
    # rq kept the intervals jittered at enqueue time
    intervals = Job.fetch(rq_id, connection=rq_connection(redis_client)).retry_intervals
    assert len(intervals) == 3 and all(0.16 <= i <= 0.24 for i in intervals)
    # a re-published terminal event is not delivered again (claim; and rq's unique job id)
    assert enqueue_webhook(redis_client, settings, "job-1", url, event) is None
    redis_client.delete(names.webhook_claim(rq_id))
    assert enqueue_webhook(redis_client, settings, "job-1", url, event) is None
    wait_until("rq done with it", lambda: rq_settled(redis_client, names, rq_id), WAIT_S)
    assert len(receiver.on("/hook")) == 4


def test_gone_disables_the_url(redis_client, names, settings, receiver, start_worker):
    url = receiver.script("/gone", 410)
    finished_job(redis_client, names, "job-1")
    start_worker()

    enqueue_webhook(redis_client, settings, "job-1", url, terminal_event("job-1"))
    wait_until(
        "disabled", lambda: webhook_status(redis_client, names, "job-1") == "disabled", WAIT_S
    )
    rq_id = webhook_id_for("job-1/completed")
    wait_until("rq done with it", lambda: rq_settled(redis_client, names, rq_id), WAIT_S)

    assert len(receiver.on("/gone")) == 1
    assert redis_client.sismember(names.webhook_disabled(), url)
    log = attempts(redis_client, names, "job-1")
    assert [(e["attempt"], e["status"], e["outcome"]) for e in log] == [(1, 410, "disabled")]
    # a later job's webhook to that URL is not even queued
    assert enqueue_webhook(redis_client, settings, "job-2", url, terminal_event("job-2")) is None
    assert [e["outcome"] for e in attempts(redis_client, names, "job-2")] == ["skipped"]
    assert redis_client.xlen(names.dead) == 0


def test_retry_after_postpones_4xx_is_permanent_and_retries_run_out(
    redis_client, names, settings, receiver, start_worker
):
    slow = receiver.script("/slow", Reply(429, {"Retry-After": "2"}), 200)
    bad = receiver.script("/bad", 400)
    down = receiver.script("/down", 500, 503, 502, 500)
    start_worker()

    rq_id = enqueue_webhook(redis_client, settings, "job-1", slow, terminal_event("job-1"))
    enqueue_webhook(redis_client, settings, "job-2", bad, terminal_event("job-2"))
    enqueue_webhook(redis_client, settings, "job-3", down, terminal_event("job-3"))
    first, second = receiver.wait_for("/slow", 2, WAIT_S)
    wait_until("2 attempts", lambda: len(attempts(redis_client, names, "job-1")) == 2, WAIT_S)

    assert second.at - first.at >= 2.0  # the receiver's Retry-After, not our 0.2 s
    log = attempts(redis_client, names, "job-1")
    assert [(e["status"], e["outcome"]) for e in log] == [(429, "postponed"), (200, "delivered")]
    assert log[0]["retry_after_s"] == 2.0
    # the postponement used up one of the three retries
    assert Job.fetch(rq_id, connection=rq_connection(redis_client)).retries_left == 2

    wait_until("2 dead letters", lambda: redis_client.xlen(names.dead) == 2, WAIT_S)
    dead = {fields["job_id"]: fields for _, fields in redis_client.xrange(names.dead)}
    assert len(receiver.on("/bad")) == 1
    assert dead["job-2"]["reason"] == "HTTP 400" and dead["job-2"]["deliveries"] == "1"
    assert dead["job-2"]["webhook_url"] == bad
    assert [e["outcome"] for e in attempts(redis_client, names, "job-2")] == ["failed"]

    assert len(receiver.on("/down")) == 4  # the first attempt and three retries
    assert dead["job-3"]["reason"] == "HTTP 500" and dead["job-3"]["deliveries"] == "4"
    log = attempts(redis_client, names, "job-3")
    assert [(e["status"], e["outcome"]) for e in log] == [
        (500, "retry"),
        (503, "retry"),
        (502, "retry"),
        (500, "failed"),
    ]
    failed = [
        e for e in Client(redis_client, names).events() if e.type == "vidbrief.webhook.failed"
    ]
    assert {e.job_id: e.data["deliveries"] for e in failed} == {"job-2": 1, "job-3": 4}
    assert {e.id for e in failed} == {
        f"job-{n}/webhook-failed/{webhook_id_for(f'job-{n}/completed')}" for n in (2, 3)
    }


def test_worker_killed_during_delivery_delivers_after_restart(
    redis_client, names, settings, receiver, start_worker
):
    url = receiver.script("/hold", Reply(200, hold=True), 200)
    finished_job(redis_client, names, "job-1")
    worker = start_worker()
    rq_id = enqueue_webhook(redis_client, settings, "job-1", url, terminal_event("job-1"))
    receiver.wait_for("/hold", 1, WAIT_S)

    kill_session(worker)  # a crash of the whole worker: main process, work horse, scheduler
    killed_at = time.monotonic()
    start_worker()
    first, second = receiver.wait_for("/hold", 2, RECOVERY_WAIT_S)
    recovery_s = second.at - killed_at
    wait_until(
        "delivered", lambda: webhook_status(redis_client, names, "job-1") == "delivered", WAIT_S
    )

    print(f"delivery resumed {recovery_s:.1f} s after the worker was killed")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == rq_id
    log = attempts(redis_client, names, "job-1")
    assert [(e["attempt"], e.get("status"), e["outcome"]) for e in log] == [
        (1, None, "lost"),
        (2, 200, "delivered"),
    ]
    assert "worker died" in log[0]["error"], log


def test_work_horse_killed_is_retried(redis_client, names, settings, receiver, start_worker):
    url = receiver.script("/hold", Reply(200, hold=True), 200)
    worker = start_worker()
    enqueue_webhook(redis_client, settings, "job-1", url, terminal_event("job-1"))
    receiver.wait_for("/hold", 1, WAIT_S)

    os.kill(work_horse(worker), signal.SIGKILL)  # the worker itself lives on and notices
    receiver.wait_for("/hold", 2, WAIT_S)
    wait_until("2 attempts", lambda: len(attempts(redis_client, names, "job-1")) == 2, WAIT_S)

    log = attempts(redis_client, names, "job-1")
    assert [(e.get("status"), e["outcome"]) for e in log] == [(None, "lost"), (200, "delivered")]
    assert "work horse died" in log[0]["error"]


def work_horse(proc: subprocess.Popen[bytes]) -> int:
    """The worker's child in a process group of its own (rq's horse; the scheduler is not)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    [horse] = [int(pid) for pid in children if os.getpgid(int(pid)) == int(pid)]
    return horse


def test_private_webhook_url_refused_at_enqueue(redis_client, names, make_settings, receiver):
    settings = make_settings(webhook_secret=WEBHOOK_SECRET, allow_private_urls=False)
    url = receiver.script("/private/token-abc", 200)
    finished_job(redis_client, names, "job-1")

    assert enqueue_webhook(redis_client, settings, "job-1", url, terminal_event("job-1")) is None

    [entry] = attempts(redis_client, names, "job-1")
    assert entry["outcome"] == "refused" and "loopback" in entry["error"]
    assert webhook_status(redis_client, names, "job-1") == "failed"
    [(_, dead)] = redis_client.xrange(names.dead)
    assert dead["webhook_url"] == url and dead["deliveries"] == "0"
    assert "loopback" in dead["reason"]
    [event] = Client(redis_client, names).events()
    assert event.type == EventType.WEBHOOK_FAILED and event.job_id == "job-1"
    assert "token-abc" not in json.dumps(event.data)  # the path may be a secret
    assert Queue(names.webhook_queue, connection=rq_connection(redis_client)).count == 0
    assert receiver.requests == []


def test_private_webhook_url_refused_again_before_the_post(
    redis_client, names, settings, receiver, start_worker
):
    url = receiver.script("/hook", 200)
    start_worker(VIDBRIEF_ALLOW_PRIVATE_URLS="false")  # the worker's policy is the one that counts

    enqueue_webhook(redis_client, settings, "job-1", url, terminal_event("job-1"))
    wait_until("a dead letter", lambda: redis_client.xlen(names.dead) == 1, WAIT_S)

    assert receiver.requests == []
    [entry] = attempts(redis_client, names, "job-1")
    assert entry["outcome"] == "failed" and "loopback" in entry["error"]


def test_a_receiver_echoing_secrets_in_its_error_leaves_only_the_status(
    redis_client, names, settings, receiver, start_worker
):
    marker = "echo-marker-5e1f http://admin:echo-pw@internal.example/ sk-echo0123456789"
    denied = receiver.script("/denied", Reply(401, body=marker.encode(), echo=True))
    broken = receiver.script("/broken", *[Reply(500, body=marker.encode(), echo=True)] * 4)
    for job_id in ("job-1", "job-2"):
        finished_job(redis_client, names, job_id)
    start_worker()

    enqueue_webhook(redis_client, settings, "job-1", denied, terminal_event("job-1"))
    enqueue_webhook(redis_client, settings, "job-2", broken, terminal_event("job-2"))
    wait_until("2 dead letters", lambda: redis_client.xlen(names.dead) == 2, WAIT_S)

    (signed,) = receiver.on("/denied")
    dead = {fields["job_id"]: fields for _, fields in redis_client.xrange(names.dead)}
    assert dead["job-1"]["reason"] == "HTTP 401" and dead["job-2"]["reason"] == "HTTP 500"
    stored = json.dumps(
        [
            redis_client.xrange(names.dead),
            redis_client.xrange(names.events),
            [attempts(redis_client, names, j) for j in ("job-1", "job-2")],
            [redis_client.hgetall(names.job(j)) for j in ("job-1", "job-2")],
        ]
    )
    for secret in ("echo-marker", "echo-pw", "sk-echo", signed.headers["webhook-signature"]):
        assert secret not in stored, secret
