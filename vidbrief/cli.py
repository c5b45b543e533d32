"""The ``vidbrief`` command line (typer). Commands import their heavy parts lazily, so
``vidbrief submit`` starts in a fraction of a second and never loads Ray or torch."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from ingest.errors import (
    JobTimeout,
    NotReplayable,
    UnknownDeadLetter,
    VidbriefError,
    WebhookRejected,
)
from ingest.settings import Settings
from vidbrief.bench import bench_app
from vidbrief.health_check import health_app

app = typer.Typer(
    help="Turn videos into written briefs: a Redis stream in, a Ray chain, PDFs and webhooks out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
dead_app = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True)
redis_app = typer.Typer(
    help="The embedded Redis (used when VIDBRIEF_REDIS_URL is unset).", no_args_is_help=True
)
app.add_typer(dead_app, name="dead")
app.add_typer(bench_app, name="bench")
app.add_typer(redis_app, name="redis")
app.add_typer(health_app, name="health")

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, a non-zero exit: how every user error ends."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings() -> Settings:
    try:
        return Settings()
    except ValueError as e:
        fail(f"bad configuration: {e}")


def producer():
    """A producer client on the configured (or embedded) Redis."""
    from ingest.client import Client
    from ingest.connect import connect

    s = settings()
    return Client(connect(s), s.names)


# ---------------------------------------------------------------- producer commands
@app.command()
def submit(
    url: str,
    job_id: Annotated[
        str | None, typer.Option(help="Idempotency key (generated if absent).")
    ] = None,
    webhook_url: Annotated[str | None, typer.Option(help="POST the terminal event here.")] = None,
    instructions: Annotated[
        str | None, typer.Option(help="What the brief should focus on.")
    ] = None,
    language: Annotated[
        str | None, typer.Option(help="Language of the brief, e.g. en, zh.")
    ] = None,
    producer_name: Annotated[str | None, typer.Option("--producer")] = "vidbrief-cli",
    priority: Annotated[str | None, typer.Option(help="low, normal (default) or high.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job's events to the end.")] = False,
    timeout: Annotated[
        float | None, typer.Option(help="With --wait: give up after seconds.")
    ] = None,
) -> None:
    """Submit a job: XADD it to the jobs stream and print its job id."""
    from ingest.models import parse_request

    raw = {
        "url": url,
        "job_id": job_id,
        "webhook_url": webhook_url,
        "instructions": instructions,
        "language": language,
        "producer": producer_name,
        "priority": priority,
    }
    request = parse_request({k: v for k, v in raw.items() if v is not None})
    client = producer()
    since = client.last_event_id() if wait else None
    result = client.submit(request)
    print(result.job_id)
    if not result.created:
        err.print(f"job {result.job_id} exists already ({result.status}); not enqueued again")
    if wait:
        _wait_and_show(client, result.job_id, since, timeout)


def _wait_and_show(client, job_id: str, since: str | None, timeout: float | None) -> None:
    from ingest.events import EventType

    try:
        event = client.wait(job_id, timeout_s=timeout, since=since)
    except JobTimeout as e:
        fail(str(e), code=3)
    err.print(f"{event.type} {json.dumps(event.data)}", highlight=False)
    if event.type != EventType.COMPLETED:
        raise typer.Exit(1)


@app.command()
def status(
    job_id: Annotated[str | None, typer.Argument(help="The job (omit with --cluster).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the state as JSON.")] = False,
    cluster: Annotated[
        bool, typer.Option("--cluster", help="Show the nodes and their health, per bridge.")
    ] = False,
) -> None:
    """Show a job's state, or with --cluster the cluster as the running bridges see it."""
    if cluster:
        _show_cluster(as_json)
        return
    if job_id is None:
        fail("give a job id, or --cluster")
    state = producer().status(job_id)
    if state is None:
        fail(f"no job {job_id}", code=1)
    if as_json:
        print(state.model_dump_json(indent=2))
        return
    from vidbrief.render import job_table

    out.print(job_table(state))


def _show_cluster(as_json: bool) -> None:
    """The nodes from each bridge's heartbeat (``names.bridges``): Ray is not imported."""
    from ingest.connect import connect
    from vidbrief.render import cluster_table

    s = settings()
    beats = {name: json.loads(raw) for name, raw in connect(s).hgetall(s.names.bridges).items()}
    if as_json:
        print(json.dumps(beats, indent=2))
    elif not beats:
        fail("no bridge is running (no heartbeat in Redis)", code=1)
    else:
        out.print(cluster_table(beats))


@app.command()
def events(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep showing new events.")
    ] = False,
    job: Annotated[str | None, typer.Option(help="Only this job id.")] = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="Event type or prefix*.")
    ] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
) -> None:
    """Show the event stream (CloudEvents)."""
    from vidbrief.live import show_events

    show_events(producer(), follow=follow, job_id=job, types=type_, console=out, max_events=count)


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    state = producer().cancel(job_id)
    if state is None:
        fail(f"no job {job_id}", code=1)
    if state.status.finished:
        err.print(f"job {job_id} already finished: {state.status}")
        raise typer.Exit(1)
    err.print(f"cancel requested for {job_id}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the job request."""
    from ingest.models import request_json_schema

    print(json.dumps(request_json_schema(), indent=2))


@app.command("config")
def show_config() -> None:
    """Show the effective configuration (secrets masked)."""
    print(json.dumps(settings().masked(), indent=2, default=str))


# ---------------------------------------------------------------- dead letters
@dead_app.command("list")
def dead_list(count: int = 20) -> None:
    """Show the newest dead letters."""
    from vidbrief.render import dead_table

    out.print(dead_table(producer().dead_letters(count)))


@dead_app.command("replay")
def dead_replay(dead_id: str) -> None:
    """Put a dead letter's job back on the jobs stream."""
    try:
        new_id = producer().replay_dead(dead_id)
    except (UnknownDeadLetter, NotReplayable) as e:
        fail(str(e), code=1)
    print(new_id)


# ---------------------------------------------------------------- embedded redis
@redis_app.command("start")
def redis_start() -> None:
    """Start the embedded Redis (or find the running one) and print its URL."""
    from ingest.redis_server import EmbeddedRedis

    server, started = EmbeddedRedis(settings().state_dir).ensure()
    err.print(f"embedded Redis {'started' if started else 'already running'} (pid {server.pid})")
    print(server.url)


@redis_app.command("stop")
def redis_stop() -> None:
    """Stop the embedded Redis (its data stays on disk, AOF)."""
    from ingest.redis_server import EmbeddedRedis

    stopped = EmbeddedRedis(settings().state_dir).stop()
    err.print("stopped" if stopped else "the embedded Redis was not running")


@redis_app.command("url")
def redis_url_cmd() -> None:
    """Print the URL of the running embedded Redis (for redis-cli -u, other services)."""
    from ingest.redis_server import EmbeddedRedis

    server = EmbeddedRedis(settings().state_dir).find()
    if server is None:
        fail("the embedded Redis is not running (vidbrief redis start)", code=1)
    print(server.url)


# ---------------------------------------------------------------- services
@app.command()
def bridge() -> None:
    """Run the bridge against VIDBRIEF_REDIS_URL and VIDBRIEF_RAY_ADDRESS until SIGTERM."""
    from raybridge.run import run_bridge

    raise typer.Exit(run_bridge(settings()))


@app.command("webhook-worker")
def webhook_worker() -> None:
    """Run the rq worker (with its scheduler) that delivers webhooks."""
    from webhooks.worker import run_worker

    raise typer.Exit(run_worker(settings()))


@app.command("verify-webhook")
def verify_webhook_cmd(
    body: Annotated[str, typer.Option(help="File with the request body (- for stdin).")],
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="'name: value' (repeatable).")
    ] = None,
    headers_file: Annotated[
        Path | None, typer.Option(help="Headers as saved by `curl -D` (name: value lines).")
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(envvar="VIDBRIEF_WEBHOOK_SECRET", help="whsec_… (default: settings)."),
    ] = None,
) -> None:
    """Verify a received webhook delivery (headers + body) with the signing secret."""
    from webhooks.verify import verify_webhook_files

    if not secret:
        fail("no secret: pass --secret or set VIDBRIEF_WEBHOOK_SECRET")
    try:
        event = verify_webhook_files(body, secret, header or (), headers_file)
    except WebhookRejected as e:
        fail(f"not verified: {e}", code=1)
    err.print("[green]verified[/]")
    print(json.dumps(event, indent=2))


@app.command("run-local")
def run_local_cmd(
    url: str,
    out_dir: Annotated[Path, typer.Option("--out", help="Where <job_id>/report.pdf goes.")] = Path(
        "vidbrief-out"
    ),
    job_id: Annotated[str | None, typer.Option(help="Job id (generated if absent).")] = None,
    instructions: str | None = None,
    language: str | None = None,
) -> None:
    """Run the four steps in-process on one URL (no Redis, no Ray)."""
    from pipeline.local import run_local

    s = settings().model_copy(update={"reports_url": str(out_dir.resolve())})
    files = run_local(url, out_dir, s, job_id=job_id, instructions=instructions, language=language)
    err.print(f"[green]done[/] — {files.pages} page(s)")
    print(files.report_url)
    print(files.result_url)


@app.command()
def export(
    compact: Annotated[bool, typer.Option(help="Merge each day's small files into one.")] = False,
    day: Annotated[str | None, typer.Option(help="Only this day (YYYY-MM-DD).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """Print (or compact) the Parquet dataset of finished jobs (VIDBRIEF_DATASET_URL)."""
    from pipeline.dataset import export as export_rows

    try:
        export_rows(settings(), compact=compact, day=day, fmt=fmt, out=sys.stdout)
    except ValueError as e:
        fail(str(e))


@app.command()
def demo(
    jobs: Annotated[int, typer.Option(help="How many sample jobs to submit.")] = 3,
) -> None:
    """The main job on the embedded default: Redis, local Ray, sample videos, PDFs."""
    from vidbrief.demo import run_demo

    raise typer.Exit(run_demo(settings(), jobs=jobs, console=out))


def main() -> None:
    """Entry point: user errors end with one line, not a traceback."""
    import redis

    try:
        app(standalone_mode=True)
    except VidbriefError as e:
        _exit(str(e))
    except redis.exceptions.ConnectionError as e:
        _exit(f"cannot reach Redis: {e} (check VIDBRIEF_REDIS_URL)")


def _exit(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
