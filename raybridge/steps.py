"""The wrapper every step runs in: it records when and where the step really started and ended.

The bridge only learns that a step ended when its ObjectRef resolves; the task itself knows
when it left Ray's queue. So the wrapper, inside the worker, writes ``step:<name>:started``,
``step:<name>:ended`` and ``step:<name>:node`` to the job hash and XADDs
``vidbrief.step.started`` / ``vidbrief.step.completed`` (ids ``<job>/<attempt>/<step>/started``)
through a sync Redis client cached per worker process. That is the live progress users see and
the XADD → step.started latency the benchmark measures.

A step whose output is kept from an earlier run returns it without recording, so the hash keeps
the timings of the run that did the work. Progress is best effort: a Redis hiccup is logged and
the step goes on (the bridge stores the outcome, which is what counts). A record from an
abandoned attempt (the hash's ``attempts`` moved on, or the job finished) is dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import redis

from ingest.errors import StepError
from ingest.events import EventType, build_event
from ingest.models import JobState, JobStatus, field_args, hash_fields, now, step_fields
from ingest.names import EVENT_FIELD, RedisNames
from pipeline.chain import CHAIN, compute_step, load_output
from pipeline.context import JobContext

log = logging.getLogger(__name__)

#: One client per Redis URL per worker process: tasks reuse the worker, so its connection too.
_CLIENTS: dict[str, redis.Redis] = {}
REDIS_TIMEOUT_S = 5.0
#: The step that writes result.json: it gets the earlier steps' durations from the job hash.
LAST_STEP = CHAIN[-1].name


def _client(url: str) -> redis.Redis:
    client = _CLIENTS.get(url)
    if client is None:
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        _CLIENTS[url] = client
    return client


#: This worker process's Ray node, once asked: every record of every step carries it.
_worker_node_id: str | None = None


def current_node_id() -> str:
    """The Ray node this code runs on ("" outside Ray)."""
    global _worker_node_id
    if _worker_node_id is not None:
        return _worker_node_id
    import ray

    if not ray.is_initialized():
        return ""
    context = ray.get_runtime_context()
    node = context.get_node_id()
    # A worker process lives and dies on its node; a driver may shut Ray down and join
    # another cluster, so it asks every time.
    if context.worker.mode == ray.WORKER_MODE:
        _worker_node_id = node
    return node


@dataclass(frozen=True)
class Progress:
    """Where steps report progress. Small and picklable: shipped with every step."""

    redis_url: str
    prefix: str
    source: str
    events_maxlen: int

    def step_seconds(self, ctx: JobContext) -> dict[str, float]:
        """How long each finished step of this job took, from the job hash (best effort)."""
        try:
            fields = _client(self.redis_url).hgetall(RedisNames(self.prefix).job(ctx.job_id))
            steps = JobState.from_hash(ctx.job_id, fields).steps
        except (redis.RedisError, ValueError) as e:
            log.warning("job %s: step timings not read: %s", ctx.job_id, e)
            return {}
        return {name: round(t.seconds, 3) for name, t in steps.items() if t.seconds is not None}

    def record(self, ctx: JobContext, step: str, what: str, **data: object) -> None:
        """Write ``step:<step>:<what>`` (+ node) and its event, best effort."""
        node, t = current_node_id(), now()
        started = what == "started"
        event_type = EventType.STEP_STARTED if started else EventType.STEP_COMPLETED
        event = build_event(
            event_type,
            ctx.job_id,
            self.source,
            f"{ctx.attempt}/{step}/{'started' if started else 'completed'}",
            {"step": step, "attempt": ctx.attempt, "node": node, **data},
        )
        names = RedisNames(self.prefix)
        fields = {**step_fields(step, **{what: t, "node": node}), **hash_fields(updated_at=t)}
        args = [
            ctx.attempt,
            JobStatus.RUNNING.value,
            self.events_maxlen,
            EVENT_FIELD,
            event,
            *field_args(fields),
        ]
        try:
            _record_script(self.redis_url)(keys=[names.job(ctx.job_id), names.events], args=args)
        except redis.RedisError as e:
            log.warning("job %s: could not record %s %s: %s", ctx.job_id, step, what, e)


# Records one step event only if it belongs to the job's current attempt and the job is not
# finished: a task of an abandoned attempt (a lost node, a killed bridge, a cancel) that ends
# late must not overwrite the hash. KEYS: job hash, events stream. ARGV: attempt, the running
# status, events maxlen, event field, event JSON, then hash field/value pairs.
_RECORD_LUA = """
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', ARGV[4], ARGV[5])
return 1
"""
_SCRIPTS: dict[str, Any] = {}


def _record_script(url: str) -> Any:
    script = _SCRIPTS.get(url)
    if script is None:
        script = _SCRIPTS[url] = _client(url).register_script(_RECORD_LUA)
    return script


def run_recorded(progress: Progress, step: str, ctx: JobContext, *earlier: Any) -> Any:
    """Run one step (its kept output, else ``pipeline.chain.compute_step``), recording it."""
    kept = None if step in ctx.fresh else load_output(step, ctx)
    if kept is not None:
        return kept
    progress.record(ctx, step, "started")
    if step == LAST_STEP:
        ctx = replace(ctx, step_seconds=progress.step_seconds(ctx))
    started = time.monotonic()
    try:
        output = compute_step(step, ctx, *earlier)
    except StepError as e:
        e.step = e.step or step  # the bridge reports which step failed
        raise
    progress.record(ctx, step, "ended", seconds=round(time.monotonic() - started, 6))
    return output
