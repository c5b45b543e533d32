"""The ``vidbrief`` command line (typer). Commands import their heavy parts lazily, so
``vidbrief submit`` starts in a fraction of a second and never loads Ray or torch."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from typer._click.exceptions import NoArgsIsHelpError
from typer.core import TyperGroup

from ingest.errors import WebhookRejected
from ingest.settings import Settings
from vidbrief.bench import bench_app
from vidbrief.exits import (
    ENV_PREFIX,
    EXIT_BROKEN_PIPE,
    EXIT_CONFIG,
    EXIT_NO,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    explain,
    redis_where,
    settings_problem,
)
from vidbrief.health_check import health_app
from vidbrief.terminal import clean, print_error

if TYPE_CHECKING:
    from vidbrief.config_check import Finding

#: How long a command waits for Redis to connect (TCP and a TLS handshake) and to answer; the
#: longest blocking read a command makes (events --follow, submit --wait) is 1 s.
REDIS_TIMEOUT_S = 3.0
#: A dead-letter id is a stream id: milliseconds, then a sequence number.
STREAM_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")


class OneLineErrors(TyperGroup):
    """Every error that reaches the top of a command ends as one line and its exit status
    (vidbrief/exits.py); ``vidbrief --debug …`` lets it through with its traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, NoArgsIsHelpError):
            raise
        except BrokenPipeError:
            if ctx.find_root().params.get("debug"):
                raise
            raise typer.Exit(reader_gone()) from None
        except Exception as e:
            if ctx.find_root().params.get("debug"):
                raise
            code, message = explain(e)
            print_error(err, message)
            raise typer.Exit(code) from None


app = typer.Typer(
    cls=OneLineErrors,
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


@app.callback()
def root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an error, not one line.")
    ] = False,
) -> None:
    """Turn videos into written briefs: a Redis stream in, a Ray chain, PDFs and webhooks out."""


def reader_gone() -> int:
    """The reader of stdout went away (``vidbrief events | head``): end quietly, as click does
    when it sees it first. Stdout now points at /dev/null, so the interpreter's flush at exit
    does not fail on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """One line on stderr, a non-zero exit: how every user error ends (exits.py)."""
    print_error(err, message)
    raise typer.Exit(code)


def settings(say: ServiceOutput | None = None) -> Settings:
    """The settings, or the command ends with one line (``say``: a service's way of saying it)."""
    try:
        return Settings()
    except ValidationError as e:
        message = settings_problem(e)
    except ValueError as e:  # pydantic-settings could not decode a value (it names the field)
        message = f"invalid configuration: {e}"
    if say is None:
        fail(message, EXIT_CONFIG)
    say.error(message, EXIT_CONFIG)
    raise typer.Exit(EXIT_CONFIG)


def redis_client(s: Settings, *, start: bool):
    """A client on the configured Redis, or on the embedded one; started only when ``start``
    (commands that produce work), checked with a PING bounded in time."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from ingest.connect import redis_url
    from ingest.redis_server import EmbeddedRedis

    if s.redis_url is None and not start and EmbeddedRedis(s.state_dir).find() is None:
        fail(
            "the embedded Redis is not running, so there is nothing to show yet: "
            "`vidbrief submit` or `vidbrief redis start` starts it (or set VIDBRIEF_REDIS_URL)",
            EXIT_UNREACHABLE,
        )
    url = redis_url(s, start=start)
    client = redis.Redis.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),  # a command answers now, or says why it cannot
    )
    try:
        client.ping()
    except redis.exceptions.AuthenticationError as e:
        fail(
            f"Redis at {redis_where(url)} refused the credentials: {e} "
            "(check the password in VIDBRIEF_REDIS_URL)",
            EXIT_CONFIG,
        )
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        fail(
            f"cannot reach Redis at {redis_where(url)}: {e}{_tls_hint(url)} "
            "(check VIDBRIEF_REDIS_URL)",
            EXIT_UNREACHABLE,
        )
    return client


def _tls_hint(url: str) -> str:
    if url.startswith("rediss://"):
        return "; rediss:// needs a Redis that speaks TLS, redis:// is a plain one"
    return ""


def producer(*, start: bool = False):
    """A producer client on the configured (or embedded) Redis."""
    from ingest.client import Client

    s = settings()
    return Client(redis_client(s, start=start), s.names)


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
        float | None, typer.Option(help="With --wait: give up after seconds.", min=0.001)
    ] = None,
) -> None:
    """Submit a job: XADD it to the jobs stream and print its job id."""
    from ingest.models import parse_request

    if timeout is not None and not wait:  # checked before anything is submitted
        fail("--timeout needs --wait (it limits the wait, not the job)")
    if timeout is not None and not math.isfinite(timeout):
        fail(f"--timeout must be a number of seconds, not {timeout}")

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
    _warn_of_refused_addresses(request, settings())
    client = producer(start=True)
    since = client.last_event_id() if wait else None
    result = client.submit(request)
    print(result.job_id)
    if not result.created:
        err.print(
            f"job {clean(result.job_id)} exists already ({clean(result.status)}); "
            "not enqueued again",
            markup=False,
            highlight=False,
        )
    if wait:
        _wait_and_show(client, result.job_id, since, timeout)


def _warn_of_refused_addresses(request: Any, s: Settings) -> None:
    """Say now what the bridge and the webhook worker will refuse later: a cloud metadata
    address or name is an error (refused whatever the settings), a loopback or private
    address written in the URL a warning (their settings decide). Names are not looked up
    here; they are checked where they are fetched."""
    from urllib.parse import urlsplit

    from ingest.urlsafety import METADATA_HOSTS, literal_addresses, refusal_reason

    for what, url in (("url", request.url), ("webhook_url", request.webhook_url)):
        host = (urlsplit(url or "").hostname or "").rstrip(".")
        if host in METADATA_HOSTS:
            fail(f"{what}: {host!r} is a cloud metadata endpoint (always refused)")
        for address in literal_addresses(host, 0) if host else []:
            if always := refusal_reason(address, allow_private=True):
                fail(f"{what}: {always} (always refused)")
            if reason := refusal_reason(address, allow_private=s.allow_private_urls):
                shown = f"{what} {clean(url)[:200]} will be refused: {reason}"
                hint = "VIDBRIEF_ALLOW_PRIVATE_URLS=true where the bridge runs allows it"
                err.print(
                    f"warning: {shown} ({hint})", markup=False, highlight=False, soft_wrap=True
                )


def _wait_and_show(client, job_id: str, since: str | None, timeout: float | None) -> None:
    from ingest.events import EventType

    event = client.wait(job_id, timeout_s=timeout, since=since)  # JobTimeout: exit 6
    err.print(f"{event.type} {json.dumps(event.data)}", markup=False, highlight=False)
    if event.type != EventType.COMPLETED:
        raise typer.Exit(EXIT_NO)


@app.command()
def rebrief(
    job_id: Annotated[str, typer.Argument(help="The earlier job whose video is briefed again.")],
    instructions: Annotated[
        str | None, typer.Option(help="What the new brief should focus on (default: as before).")
    ] = None,
    language: Annotated[
        str | None, typer.Option(help="Language of the new brief (default: as before).")
    ] = None,
    new_job_id: Annotated[
        str | None, typer.Option("--job-id", help="Id of the new job (generated if absent).")
    ] = None,
) -> None:
    """Brief an analysed video again: a new job that reuses the kept analysis (brief, report)."""
    from ingest.rebrief import reanalysed_because, rebrief_request

    client = producer()
    earlier = client.status(job_id)
    if earlier is None:
        fail(f"no job {job_id} (expired?); submit its URL again with `vidbrief submit`", code=1)
    request = rebrief_request(
        earlier,
        instructions=instructions,
        language=language,
        job_id=new_job_id,
        producer="vidbrief-cli",
    )
    why = reanalysed_because(earlier, request)
    result = client.submit(request)
    print(result.job_id)
    if not result.created:
        err.print(f"job {result.job_id} exists already ({result.status}); not enqueued again")
    elif why:
        err.print(f"note: {why}", highlight=False)


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
    client = producer()
    state = client.status(job_id)
    if state is None:
        fail(f"no job {job_id}", EXIT_NOT_FOUND)
    if as_json:
        print(state.model_dump_json(indent=2))
        return
    from vidbrief.render import job_view

    out.print(job_view(state, _hosts(client)))


def _hosts(client) -> dict[str, str]:
    """Node id → host name, from the running bridges' heartbeats."""
    from vidbrief.render import hosts_from, with_ages

    return hosts_from(with_ages(client.redis.hgetall(client.names.bridges), 1.0))


def _show_cluster(as_json: bool) -> None:
    """The nodes from each bridge's heartbeat (``names.bridges``): Ray is not imported."""
    from vidbrief.render import cluster_view, with_ages

    s = settings()
    raw = redis_client(s, start=False).hgetall(s.names.bridges)
    beats = with_ages(raw, s.heartbeat_seconds)
    if as_json:
        print(json.dumps(beats, indent=2))
    elif not beats:
        fail("no bridge is running (no heartbeat in Redis)", EXIT_NO)
    else:
        out.print(cluster_view(beats))


@app.command()
def events(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep showing new events.")
    ] = False,
    job: Annotated[str | None, typer.Option(help="Only this job id.")] = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="Event type or prefix*.")
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One CloudEvent JSON document per line.")
    ] = False,
) -> None:
    """Show the event stream (CloudEvents)."""
    from vidbrief.live import show_events

    client = producer()
    show_events(
        client,
        follow=follow,
        job_id=job,
        types=type_,
        console=out,
        max_events=count,
        as_json=as_json,
        hosts=_hosts(client),
    )


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    state = producer().cancel(job_id)
    if state is None:
        fail(f"no job {job_id}", EXIT_NOT_FOUND)
    if state.status.finished:
        fail(f"job {job_id} already finished: {state.status}", EXIT_NO)
    err.print(f"cancel requested for {clean(job_id)}", markup=False, highlight=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the job request."""
    from ingest.models import request_json_schema

    print(json.dumps(request_json_schema(), indent=2))


@app.command("config")
def show_config(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Check the whole configuration (names, URLs, Redis, Ray, the LLM endpoint) "
            "instead: exit 4 if a value is invalid, 3 if a service does not answer.",
        ),
    ] = False,
) -> None:
    """Show the effective configuration (secrets masked), or check it."""
    from vidbrief.config_check import check_all, exit_code, show

    s = settings()
    if check:
        findings = check_all(s)
        print("\n".join(show(findings)))
        raise typer.Exit(exit_code(findings))
    print(json.dumps(s.masked(), indent=2, default=str))
    for line in show(check_all(s, network=False), quiet_ok=True):
        err.print(line, markup=False, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- dead letters
@dead_app.command("list")
def dead_list(
    count: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
) -> None:
    """Show the newest dead letters."""
    from vidbrief.render import dead_json, dead_table

    letters = producer().dead_letters(count)
    if as_json:
        print(json.dumps(dead_json(letters), indent=2))
    else:
        out.print(dead_table(letters))


@dead_app.command("replay")
def dead_replay(dead_id: str) -> None:
    """Put a dead letter's job back on the jobs stream."""
    if not STREAM_ID.match(dead_id):
        fail(
            f"{dead_id!r} is not a dead-letter id (they look like 1767225600000-0: "
            "see `vidbrief dead list`)"
        )
    print(producer().replay_dead(dead_id))  # UnknownDeadLetter: exit 5


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
        fail("the embedded Redis is not running (vidbrief redis start)", EXIT_UNREACHABLE)
    print(server.url)


# ---------------------------------------------------------------- services
@app.command(
    help="Run the bridge until SIGTERM or SIGINT (then it drains).\n\n"
    "Redis: VIDBRIEF_REDIS_URL. Ray: VIDBRIEF_RAY_ADDRESS or RAY_ADDRESS, a private local Ray "
    "without either. The configuration is checked first (`vidbrief config --check`): an "
    "invalid one stops it before it starts."
)
def bridge(ctx: typer.Context) -> None:
    from raybridge.run import run_bridge
    from vidbrief.config_check import check_all, exit_code, for_the_bridge

    debug = ctx.find_root().params.get("debug")
    # Before the settings load, only the environment can say the logs are JSON.
    say = ServiceOutput(os.environ.get(f"{ENV_PREFIX}LOG_FORMAT", "").lower() == "json")
    s = settings(say)
    say.json_logs = s.log_format == "json" and not debug
    findings = for_the_bridge(check_all(s))
    for f in findings:
        if f.level != "ok":
            say.finding(f)
    if code := exit_code(findings):
        say.error("the bridge did not start: its configuration fails the check above", code)
        raise typer.Exit(code)
    if not say.json_logs:
        raise typer.Exit(run_bridge(s))
    try:
        code = run_bridge(s)
    except Exception as e:  # with JSON logs the last line is JSON too
        code, message = explain(e)
        say.error(message, code)
    raise typer.Exit(code)


class ServiceOutput:
    """What a service command prints outside its logs (the configuration check, the error
    that stopped it): lines for people or, with ``VIDBRIEF_LOG_FORMAT=json`` and no
    ``--debug``, JSON documents like its log lines, so a collector can parse every line."""

    def __init__(self, json_logs: bool) -> None:
        self.json_logs = json_logs

    def finding(self, f: Finding) -> None:
        from raybridge.logs import json_line
        from vidbrief.config_check import show

        if not self.json_logs:
            err.print(show([f])[0], markup=False, highlight=False, soft_wrap=True)
            return
        level = logging.ERROR if f.level == "fail" else logging.WARNING
        print(json_line(f"{f.what}: {f.detail}", level, check=f.what), file=sys.stderr)

    def error(self, message: str, code: int) -> None:
        from raybridge.logs import json_line

        if self.json_logs:
            print(json_line(message, exit_code=code), file=sys.stderr)
        else:
            print_error(err, message)


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
        fail(f"not verified: {e}", EXIT_NO)
    except OSError as e:
        fail(f"cannot read {e.filename}: {e.strerror} (--body, --headers-file)")
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
    as_json: Annotated[bool, typer.Option("--json", help="The same as --format json.")] = False,
) -> None:
    """Print (or compact) the Parquet dataset of finished jobs (VIDBRIEF_DATASET_URL)."""
    from pipeline.dataset import EXPORT_FORMATS, export_rows, print_rows
    from vidbrief.render import dataset_table

    fmt = "json" if as_json else fmt
    if fmt not in EXPORT_FORMATS:
        fail(f"--format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    rows = export_rows(settings(), compact=compact, day=day)
    if fmt == "table":
        out.print(dataset_table(rows))
    else:
        print_rows(rows, fmt, sys.stdout)


@app.command()
def demo(
    jobs: Annotated[int, typer.Option(help="How many sample jobs to submit.")] = 3,
) -> None:
    """The main job on the embedded default: Redis, local Ray, sample videos, PDFs."""
    from vidbrief.demo import run_demo

    raise typer.Exit(run_demo(settings(), jobs=jobs, console=out))


def main() -> None:
    """Entry point: every error ends with one line and its exit status (exits.py), not a
    traceback; errors inside a command are turned into that line by OneLineErrors, the ones
    of the top-level options here."""
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as e:
        e.show()
        code = EXIT_USAGE
    except Exception as e:
        if "--debug" in sys.argv[1:]:
            raise
        code, message = explain(e)
        print_error(err, message)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
