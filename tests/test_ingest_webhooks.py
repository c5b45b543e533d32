"""Completion webhooks end to end: a real redis-server, real rq worker processes
(``python -m webhooks``), a real HTTP receiver on loopback; and the live event view."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import redis
from rich.console import Console
from rq import Queue
from rq.job import Job
from standardwebhooks import Webhook

from ingest.client import Client
from ingest.errors import UnsafeURL, WebhookRejected
from ingest.events import EventType, build_event
from ingest.names import EVENT_FIELD, RedisNames
from ingest.redis_server import RedisServer
from ingest.settings import Settings
from ingest.urlsafety import AddressPolicy
from vidbrief.live import show_events
from webhooks.enqueue import enqueue_webhook, rq_connection, webhook_id_for
from webhooks.send import connect_guard, retry_after_seconds
from webhooks.verify import verify_webhook, verify_webhook_files

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
SECRET = "whsec_" + base64.b64encode(b"vidbrief test secret, 32 bytes!!").decode()
BACKOFF_S = (0.2, 0.2, 0.2)
WEBHOOK_TIMEOUT_S = 5
HOLD_MAX_S = 60.0  # a held request is answered at teardown at the latest
WAIT_S = 20.0  # upper bound for a delivery that needs no crash recovery
RECOVERY_WAIT_S = 45.0  # upper bound for the crash case (expected 15–25 s, see WebhookWorker)
STOP_GRACE_S = 5.0


# ----------------------------------------------------------------------------- receiver
@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False  # keep the request open until the test ends (a worker killed mid-POST)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """A loopback HTTP server answering each path from a script; records every request."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.requests: list[Received] = []
        self.release = threading.Event()
        self._arrived = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def script(self, path: str, *replies: Reply | int) -> str:
        self.scripts[path] = [r if isinstance(r, Reply) else Reply(r) for r in replies]
        return self.url(path)

    def record(self, request: Received) -> Reply:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()
            script = self.scripts.get(request.path, [])
            return script.pop(0) if script else Reply(200)

    def wait_for(self, path: str, n: int, timeout_s: float) -> list[Received]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.on(path)) >= n, timeout_s)
            got = self.on(path)
        assert len(got) >= n, f"{path}: {len(got)} of {n} request(s) within {timeout_s} s"
        return got

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = receiver.record(Received(self.path, headers, body, time.monotonic()))
            if reply.hold:
                receiver.release.wait(HOLD_MAX_S)
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the sender is gone (killed mid-request)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    rx._thread.start()
    yield rx
    rx.release.set()
    rx.server.shutdown()
    rx.server.server_close()


# ----------------------------------------------------------------------------- worker processes
@pytest.fixture
def start_worker(
    redis_server: RedisServer, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Factory: ``python -m webhooks`` in its own session (stopped by process group)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**env_overrides: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIDBRIEF_")}
        env.update(
            PYTHONPATH=str(REPO),
            VIDBRIEF_REDIS_URL=redis_server.url,
            VIDBRIEF_WEBHOOK_SECRET=SECRET,
            VIDBRIEF_WEBHOOK_BACKOFF_SECONDS=",".join(map(str, BACKOFF_S)),
            VIDBRIEF_WEBHOOK_TIMEOUT_SECONDS=str(WEBHOOK_TIMEOUT_S),
            VIDBRIEF_ALLOW_PRIVATE_URLS="true",
            VIDBRIEF_STATE_DIR=str(tmp_path / "state"),
        )
        env.update(env_overrides)
        log = (tmp_path / f"worker-{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "webhooks"],
            cwd=tmp_path,  # no stray .env from the repository
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the worker (rq's warm shutdown), then SIGKILL whatever is left of it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(STOP_GRACE_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    kill_session(proc)


def kill_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL every process of the worker's session, by PID: the worker, its scheduler, and its
    work horse, which rq puts in a process group of its own (so killpg on the worker misses it).
    """
    for pid in _session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        webhook_secret=SECRET,
        webhook_backoff_seconds=BACKOFF_S,
        webhook_timeout_seconds=WEBHOOK_TIMEOUT_S,
    )


def terminal_event(job_id: str) -> bytes:
    return build_event(EventType.COMPLETED, job_id, "vidbrief/test", "completed", {"pages": 3})


def finished_job(r: redis.Redis, names: RedisNames, job_id: str) -> None:
    """The job hash the bridge leaves behind (the webhook summary goes there)."""
    r.hset(names.job(job_id), mapping={"status": "completed", "attempts": "1"})


def attempts(r: redis.Redis, names: RedisNames, job_id: str) -> list[dict]:
    return [json.loads(x) for x in r.lrange(names.webhook_log(job_id), 0, -1)]


def wait_until(predicate: Callable[[], object], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not true within {timeout_s} s"
        time.sleep(0.05)


def webhook_status(r: redis.Redis, names: RedisNames, job_id: str) -> str | None:
    return r.hget(names.job(job_id), "webhook_status")


def signed(body: str, sent_at: datetime, msg_id: str = "msg_test") -> dict[str, str]:
    """Headers for ``body`` as the official library signs them."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(msg_id, sent_at, body),
    }


# ----------------------------------------------------------------------------- delivery
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
    wait_until(lambda: webhook_status(redis_client, names, "job-1") == "delivered")

    assert {r.headers["webhook-id"] for r in requests} == {rq_id}
    for request in requests:
        assert request.body == event
        assert request.headers["content-type"] == "application/json"
        # the official library, then ours
        assert Webhook(SECRET).verify(request.body, request.headers)["id"] == "job-1/completed"
        assert verify_webhook(request.body, request.headers, SECRET)["subject"] == "job-1"
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
    time.sleep(1.5)
    assert len(receiver.on("/hook")) == 4


def test_gone_disables_the_url(redis_client, names, settings, receiver, start_worker):
    url = receiver.script("/gone", 410)
    finished_job(redis_client, names, "job-1")
    start_worker()

    enqueue_webhook(redis_client, settings, "job-1", url, terminal_event("job-1"))
    wait_until(lambda: webhook_status(redis_client, names, "job-1") == "disabled")
    time.sleep(1.5)  # longer than a retry interval plus rq's scheduler tick

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
    wait_until(lambda: len(attempts(redis_client, names, "job-1")) == 2)

    assert second.at - first.at >= 2.0  # the receiver's Retry-After, not our 0.2 s
    log = attempts(redis_client, names, "job-1")
    assert [(e["status"], e["outcome"]) for e in log] == [(429, "postponed"), (200, "delivered")]
    assert log[0]["retry_after_s"] == 2.0
    # the postponement used up one of the three retries
    assert Job.fetch(rq_id, connection=rq_connection(redis_client)).retries_left == 2

    wait_until(lambda: redis_client.xlen(names.dead) == 2)
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
    wait_until(lambda: webhook_status(redis_client, names, "job-1") == "delivered")

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
    wait_until(lambda: len(attempts(redis_client, names, "job-1")) == 2)

    log = attempts(redis_client, names, "job-1")
    assert [(e.get("status"), e["outcome"]) for e in log] == [(None, "lost"), (200, "delivered")]
    assert "work horse died" in log[0]["error"]


def work_horse(proc: subprocess.Popen[bytes]) -> int:
    """The worker's child in a process group of its own (rq's horse; the scheduler is not)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    [horse] = [int(pid) for pid in children if os.getpgid(int(pid)) == int(pid)]
    return horse


# ----------------------------------------------------------------------------- address policy
def test_private_webhook_url_refused_at_enqueue(redis_client, names, make_settings, receiver):
    settings = make_settings(webhook_secret=SECRET, allow_private_urls=False)
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
    wait_until(lambda: redis_client.xlen(names.dead) == 1)

    assert receiver.requests == []
    [entry] = attempts(redis_client, names, "job-1")
    assert entry["outcome"] == "failed" and "loopback" in entry["error"]


def test_connect_guard_refuses_a_name_that_turns_private(receiver):
    """DNS rebinding: the name looked public when checked, the socket reached loopback."""
    url = receiver.script("/rebound", 200).replace("127.0.0.1", "localhost")
    policy = AddressPolicy.create(resolver=lambda host, port: ["93.184.216.34"])
    policy.check_url(url)  # passes: the (stubbed) DNS answer was public

    with httpx.Client(trust_env=False) as http, pytest.raises(UnsafeURL, match="loopback"):
        http.post(url, content=b"{}", extensions={"trace": connect_guard(policy, url)})
    assert receiver.requests == []


# ----------------------------------------------------------------------------- receivers
def test_verify_webhook_accepts_genuine_and_rejects_forged_or_stale(tmp_path):
    body = terminal_event("job-1").decode()
    now = datetime.now(UTC)

    assert verify_webhook(body.encode(), signed(body, now), SECRET)["id"] == "job-1/completed"
    forged = body.replace('"pages": 3', '"pages": 4')
    assert forged != body
    with pytest.raises(WebhookRejected, match="signature"):
        verify_webhook(forged.encode(), signed(body, now), SECRET)
    other = "whsec_" + base64.b64encode(b"another secret of thirty-two b!!").decode()
    with pytest.raises(WebhookRejected, match="signature"):
        verify_webhook(body.encode(), signed(body, now), other)
    stale = now - timedelta(minutes=10)
    with pytest.raises(WebhookRejected, match=r"timestamp is 60\d s old"):
        verify_webhook(body.encode(), signed(body, stale), SECRET)
    with pytest.raises(WebhookRejected, match="timestamp"):
        verify_webhook(body.encode(), signed(body, now - timedelta(seconds=90)), SECRET, 60)
    with pytest.raises(WebhookRejected, match="Missing required headers"):
        verify_webhook(body.encode(), {}, SECRET)

    # the same check from files, as `vidbrief verify-webhook` reads them (curl -D format)
    (tmp_path / "body.json").write_text(body)
    lines = ["HTTP/1.1 200 OK"] + [f"{k}: {v}" for k, v in signed(body, now).items()]
    (tmp_path / "headers.txt").write_text("\r\n".join(lines) + "\r\n\r\n")
    event = verify_webhook_files(
        tmp_path / "body.json", SECRET, headers_file=tmp_path / "headers.txt"
    )
    assert event["subject"] == "job-1"


def test_retry_after_parsing():
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Mon, 23 Nov 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Mon, 23 Nov 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("999999") == 3600.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


# ----------------------------------------------------------------------------- live view
def _publish(r: redis.Redis, names: RedisNames, type_: EventType, job: str, fact: str, **data):
    event = build_event(type_, job, "vidbrief/bridge-1", fact, data)
    r.xadd(names.events, {EVENT_FIELD: event})


def _render(**kwargs) -> tuple[int, str]:
    buffer = io.StringIO()
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
    assert "step.started" in text and "step.completed" in text and "node-7f3a" in text
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
        time.sleep(0.3)
        _publish(redis_client, names, EventType.STEP_STARTED, "job-b", "x", step="download")
        _publish(
            redis_client,
            names,
            EventType.FAILED,
            "job-a",
            "failed",
            error={"message": "no such video"},
        )

    threading.Thread(target=later, daemon=True).start()
    shown, text = _render(client=client, follow=True, job_id="job-a", max_events=2)

    assert shown == 2
    assert "job.accepted" in text and "job.failed" in text and "no such video" in text
    assert "job-b" not in text
