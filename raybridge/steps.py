"""The wrapper every step runs in: it records when and where the step really started and ended.

The bridge only learns that a step ended when its ObjectRef resolves; the task itself knows
when it left Ray's queue. So the wrapper, inside the worker, writes ``step:<name>:started``,
``step:<name>:ended`` and ``step:<name>:node`` to the job hash and XADDs
``vidbrief.step.started`` / ``vidbrief.step.completed`` (ids ``<job>/<attempt>/<step>/started``)
through a sync Redis client cached per worker process. That is the live progress users see and
the XADD → step.started latency the benchmark measures.

A step whose output is kept from an earlier attempt of the job returns it without recording,
so the hash keeps the timings of the run that did the work. One reused from the artefact store
(another job's analysis or brief) is recorded as ``step:<name>:reused`` with its start and end,
and its ``step.completed`` event says ``reused`` — unless the hash shows the step done already.
Progress is best effort: a Redis hiccup is logged and the step goes on (the bridge stores the
outcome, which is what counts). A record from an abandoned attempt (the hash's ``attempts``
moved on, or the job finished) is dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import redis
from pydantic import SecretStr

from ingest.connect import as_secret
from ingest.errors import StepError
from ingest.events import EventType, build_event
from ingest.models import JobState, JobStatus, field_args, hash_fields, now, step_fields
from ingest.names import EVENT_FIELD, RedisNames
from ingest.redact import error_summary
from pipeline.chain import CHAIN, compute_step
from pipeline.context import JobContext
from pipeline.reuse import find_kept

log = logging.getLogger(__name__)

#: One client per Redis URL per worker process: tasks reuse the worker, so its connection too.
_CLIENTS: dict[SecretStr, redis.Redis] = {}
REDIS_TIMEOUT_S = 5.0
#: The step that writes result.json: it gets the earlier steps' durations from the job hash.
LAST_STEP = CHAIN[-1].name


def _client(url: SecretStr) -> redis.Redis:
    client = _CLIENTS.get(url)
    if client is None:
        client = redis.Redis.from_url(
            url.get_secret_value(),
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
    """Where steps report progress. Small and picklable: shipped with every step, so the
    Redis URL is a secret (a plain string given is made one): Ray's task arguments, a log line
    or a traceback show it masked."""

    redis_url: SecretStr
    prefix: str
    source: str
    events_maxlen: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "redis_url", as_secret(self.redis_url))

    def step_seconds(self, ctx: JobContext) -> dict[str, float]:
        """How long each finished step of this job took, from the job hash (best effort)."""
        return self.finished_steps(ctx)[0]

    def finished_steps(self, ctx: JobContext) -> tuple[dict[str, float], tuple[str, ...]]:
        """Each finished step's seconds, and the steps reused, from the job hash (best effort)."""
        try:
            fields = _client(self.redis_url).hgetall(RedisNames(self.prefix).job(ctx.job_id))
            steps = JobState.from_hash(ctx.job_id, fields).steps
        except (redis.RedisError, ValueError) as e:
            log.warning("job %s: step timings not read: %s", ctx.job_id, error_summary(e))
            return {}, ()
        seconds = {n: round(t.seconds, 3) for n, t in steps.items() if t.seconds is not None}
        return seconds, tuple(s.name for s in CHAIN if s.name in steps and steps[s.name].reused)

    def record(self, ctx: JobContext, step: str, what: str, **data: object) -> None:
        """Write ``step:<step>:<what>`` (+ node) and its event, best effort."""
        node, t = current_node_id(), now()
        started = what == "started"
        fact = "started" if started else "completed"
        # The attempt tells the bridge's time limit which run of the step this start is.
        fields = step_fields(step, **{what: t, "node": node, "attempt": ctx.attempt})
        self._write(ctx, step, fact, fields, {"node": node, **data})

    def reused(self, ctx: JobContext, step: str) -> None:
        """Record a step served by a kept output, unless the hash has it done already."""
        node, t = current_node_id(), now()
        fields = step_fields(step, started=t, ended=t, node=node, reused="1")
        guard = next(iter(step_fields(step, ended=t)))
        self._write(ctx, step, "completed", fields, {"node": node, "reused": True}, guard)

    def _write(
        self,
        ctx: JobContext,
        step: str,
        fact: str,
        fields: dict[str, str],
        data: dict[str, object],
        unless: str = "",
    ) -> None:
        event_type = EventType.STEP_STARTED if fact == "started" else EventType.STEP_COMPLETED
        event = build_event(
            event_type,
            ctx.job_id,
            self.source,
            f"{ctx.attempt}/{step}/{fact}",
            {"step": step, "attempt": ctx.attempt, **data},
        )
        names = RedisNames(self.prefix)
        fields = {**fields, **hash_fields(updated_at=now())}
        args = [
            ctx.attempt,
            JobStatus.RUNNING.value,
            self.events_maxlen,
            EVENT_FIELD,
            event,
            unless,
            *field_args(fields),
        ]
        try:
            _record_script(self.redis_url)(keys=[names.job(ctx.job_id), names.events], args=args)
        except redis.RedisError as e:
            why = error_summary(e)
            log.warning("job %s: could not record %s %s: %s", ctx.job_id, step, fact, why)


# Records one step event only if it belongs to the job's current attempt and the job is not
# finished: a task of an abandoned attempt (a lost node, a killed bridge, a cancel) that ends
# late must not overwrite the hash. KEYS: job hash, events stream. ARGV: attempt, the running
# status, events maxlen, event field, event JSON, a field whose presence stops the record ("":
# none), then hash field/value pairs.
_RECORD_LUA = """
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[2] then return 0 end
if ARGV[6] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[6]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', ARGV[4], ARGV[5])
return 1
"""
_SCRIPTS: dict[SecretStr, Any] = {}


def _record_script(url: SecretStr) -> Any:
    script = _SCRIPTS.get(url)
    if script is None:
        script = _SCRIPTS[url] = _client(url).register_script(_RECORD_LUA)
    return script


def run_recorded(progress: Progress, step: str, ctx: JobContext, *earlier: Any) -> Any:
    """Run one step (its kept output, else ``pipeline.chain.compute_step``), recording it."""
    try:
        return _run_recorded(progress, step, ctx, *earlier)
    except StepError as e:
        e.step = e.step or step  # the bridge reports which step failed
        raise


def _run_recorded(progress: Progress, step: str, ctx: JobContext, *earlier: Any) -> Any:
    # A step that must run again (a job moved to another node) skips what is kept.
    found = None if step in ctx.fresh else find_kept(step, ctx, *earlier)
    if found is not None:
        if found.reused:
            progress.reused(ctx, step)
        return found.output
    progress.record(ctx, step, "started")
    if step == LAST_STEP:
        seconds, reused = progress.finished_steps(ctx)
        ctx = replace(ctx, step_seconds=seconds, reused_steps=reused)
    started = time.monotonic()
    output = compute_step(step, ctx, *earlier)
    progress.record(ctx, step, "ended", seconds=round(time.monotonic() - started, 6))
    return output
