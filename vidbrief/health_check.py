"""Container health probes: ``vidbrief health bridge | webhook-worker | ray-node``.

Each probe answers for the component in its own container, cheaply (one Redis read, or one
HTTP GET on loopback), and never starts anything (no embedded Redis, no Ray). It prints one
line (Docker keeps it in ``docker inspect``; Kubernetes in the pod's events) and exits with:

    0  healthy
    1  unhealthy: the heartbeat is missing or older than --max-age, or the Ray node says so
    3  unreachable: Redis, or the Ray node's agent, did not answer
    4  bad configuration: invalid VIDBRIEF_* settings, or a secret file that cannot be read

2 is left out: Docker reserves it in health checks, and click uses it for a mistyped command.
Docker and Kubernetes count every non-zero status as a failed probe; the codes are for people.

The bridge writes its heartbeat to the ``<prefix>:bridges`` hash every
``VIDBRIEF_HEARTBEAT_SECONDS`` from its actor on the Ray head (``updated_at``, seconds since the
epoch): the age is measured with this host's clock, so hosts must keep their clocks in step
(NTP). rq registers each webhook worker with a ``last_heartbeat`` that it renews every few
seconds (``webhooks.worker.WorkerTuning``), from the worker's own host.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    import redis

    from ingest.settings import Settings

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_UNREACHABLE, EXIT_CONFIG = 0, 1, 3, 4
#: A bridge is stale after this many missed heartbeats (the same rule as ``status --cluster``).
BRIDGE_STALE_BEATS = 3
#: The dashboard agent of every Ray node (``ray start --dashboard-agent-listen-port``).
RAY_AGENT_PORT = 52365
#: Ray's own node health endpoint (raylet, and GCS on the head); public under token auth.
RAY_HEALTH_PATH = "/api/healthz"
PROBE_TIMEOUT_S = 5.0

health_app = typer.Typer(
    help="Health probes for containers: exit 0 when healthy, else one line and 1, 3 or 4.",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class Probe:
    """The outcome of one probe: an exit status and the line that explains it."""

    code: int
    message: str


# ---------------------------------------------------------------- the probes
def bridge_health(conn: redis.Redis, key: str, name: str, max_age_s: float) -> Probe:
    """Whether bridge ``name`` wrote its heartbeat to hash ``key`` within ``max_age_s``."""
    raw = conn.hget(key, name)
    if raw is None:
        return Probe(EXIT_UNHEALTHY, f"bridge {name}: no heartbeat in {key}")
    try:
        beat = json.loads(raw)
        age = time.time() - float(beat["updated_at"])
    except (ValueError, KeyError, TypeError):
        return Probe(EXIT_UNHEALTHY, f"bridge {name}: unreadable heartbeat in {key}")
    if age > max_age_s:
        return Probe(EXIT_UNHEALTHY, f"bridge {name}: last heartbeat {age:.1f} s ago")
    state = "draining" if beat.get("draining") else "running"
    load = f"{beat.get('in_flight', '?')}/{beat.get('window', '?')} in flight"
    return Probe(EXIT_HEALTHY, f"bridge {name}: {state}, {load}, heartbeat {age:.1f} s ago")


def webhook_worker_health(
    conn: redis.Redis, queue_name: str, max_age_s: float, hostname: str | None
) -> Probe:
    """Whether an rq worker on ``queue_name`` (on ``hostname``, if given) beat lately."""
    from rq import Queue, Worker

    where = f" on {hostname}" if hostname else ""
    workers = [
        w
        for w in Worker.all(queue=Queue(queue_name, connection=conn))
        if hostname is None or w.hostname == hostname
    ]
    beats = [w.last_heartbeat.timestamp() for w in workers if w.last_heartbeat is not None]
    if not beats:
        return Probe(EXIT_UNHEALTHY, f"no webhook worker{where} registered on {queue_name}")
    age = time.time() - max(beats)
    if age > max_age_s:
        return Probe(EXIT_UNHEALTHY, f"webhook worker{where}: last heartbeat {age:.1f} s ago")
    return Probe(EXIT_HEALTHY, f"webhook worker{where}: heartbeat {age:.1f} s ago")


def ray_node_health(port: int = RAY_AGENT_PORT, timeout_s: float = PROBE_TIMEOUT_S) -> Probe:
    """Ray's own verdict on the node in this container (its agent's health endpoint)."""
    url = f"http://127.0.0.1:{port}{RAY_HEALTH_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return Probe(EXIT_HEALTHY, f"ray node: {_one_line(reply.read())}")
    except urllib.error.HTTPError as e:  # 503: the raylet (or the head's GCS) is not alive
        return Probe(EXIT_UNHEALTHY, f"ray node: HTTP {e.code}: {_one_line(e.read())}")
    except OSError as e:  # refused, timed out: no agent, so no node, on this port
        return Probe(EXIT_UNREACHABLE, f"ray node: no answer from {url}: {_reason(e)}")


def _one_line(body: bytes) -> str:
    return "; ".join(body.decode(errors="replace").split("\n")).strip("; ") or "(empty)"


def _reason(error: OSError) -> str:
    return str(getattr(error, "reason", None) or error)


# ---------------------------------------------------------------- commands
@health_app.command("bridge")
def bridge_cmd(
    name: Annotated[
        str | None, typer.Option(help="The bridge (default: VIDBRIEF_BRIDGE_NAME).")
    ] = None,
    max_age: Annotated[
        float | None,
        typer.Option(
            help="Seconds a heartbeat stays fresh (default: 3 × VIDBRIEF_HEARTBEAT_SECONDS)."
        ),
    ] = None,
) -> None:
    """Healthy when the bridge's heartbeat in Redis is fresh."""
    settings = _settings()
    age = max_age if max_age is not None else BRIDGE_STALE_BEATS * settings.heartbeat_seconds
    key = settings.names.bridges
    _finish(
        _with_redis(settings, lambda c: bridge_health(c, key, name or settings.bridge_name, age))
    )


@health_app.command("webhook-worker")
def webhook_worker_cmd(
    max_age: Annotated[
        float | None,
        typer.Option(help="Seconds a heartbeat stays fresh (default: the worker's TTL, 20)."),
    ] = None,
    any_host: Annotated[
        bool, typer.Option("--any-host", help="Any worker on the queue, not only this host's.")
    ] = False,
) -> None:
    """Healthy when a webhook worker on this host (rq's registry in Redis) beat lately."""
    from webhooks.worker import WorkerTuning

    settings = _settings()
    age = max_age if max_age is not None else float(WorkerTuning().worker_ttl_s)
    host = None if any_host else socket.gethostname()
    queue = settings.names.webhook_queue
    _finish(_with_redis(settings, lambda c: webhook_worker_health(c, queue, age, host)))


@health_app.command("ray-node")
def ray_node_cmd(
    port: Annotated[int, typer.Option(help="The node's dashboard agent port.")] = RAY_AGENT_PORT,
) -> None:
    """Healthy when the Ray node in this container says so (raylet; GCS too on the head)."""
    _finish(ray_node_health(port))


# ---------------------------------------------------------------- plumbing
def _settings() -> Settings:
    from ingest.settings import Settings

    try:
        return Settings()
    except (ValueError, OSError) as e:  # invalid values; an unreadable secret file
        _finish(Probe(EXIT_CONFIG, f"bad configuration: {_first_error(e)}"))


def _first_error(error: Exception) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors) and errors():
        first = errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return str(error).splitlines()[0]


def _with_redis(settings: Settings, probe: Callable[[redis.Redis], Probe]) -> Probe:
    """``probe(conn)`` on the configured Redis (or a running embedded one: none is started)."""
    import redis

    from ingest.connect import redis_url
    from ingest.redact import redact

    try:
        url = redis_url(settings, start=False)
        conn = redis.Redis.from_url(url, socket_connect_timeout=PROBE_TIMEOUT_S)
        with conn:
            return probe(conn)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        return Probe(EXIT_UNREACHABLE, f"cannot reach Redis: {redact(e)}")
    except redis.exceptions.RedisError as e:  # WRONGPASS, NOPERM …
        return Probe(EXIT_UNREACHABLE, f"Redis refused the probe: {redact(e)}")
    except ValueError as e:  # a URL redis-py cannot parse: its text may quote part of it
        return Probe(
            EXIT_CONFIG,
            "bad configuration: VIDBRIEF_REDIS_URL is not a redis://, rediss:// or unix:// URL "
            f"redis-py can read ({type(e).__name__})",
        )


def _finish(result: Probe) -> NoReturn:
    if result.code == EXIT_HEALTHY:
        typer.echo(result.message)
    else:
        label = "unhealthy" if result.code == EXIT_UNHEALTHY else "error"
        typer.echo(f"{label}: {result.message}", err=True)
    raise typer.Exit(result.code)
