"""``vidbrief demo``: the whole service on one machine, exactly as other services use it.

It starts (or reuses) the embedded Redis and a local Ray, serves generated sample videos with
real speech on a loopback HTTP server, XADDs jobs onto ``vidbrief:jobs`` like any producer,
runs the bridge on them, shows a live table, and stops everything it started.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ingest.client import Client
from ingest.models import JobState
from ingest.names import STEP_NAMES
from ingest.settings import Settings
from vidbrief.samples import DEMO_TALKS, ensure_demo_videos, serve_files

DEMO_TIMEOUT_S = 900.0
DEMO_MAX_DOWNLOAD_MB = 100.0
REFRESH_S = 0.25
STEP_MARK = {"done": "[green]✔[/]", "running": "[cyan]⋯[/]", "waiting": "[dim]·[/]"}


@dataclass
class DemoRun:
    client: Client
    job_ids: list[str]

    def states(self) -> list[JobState | None]:
        return [self.client.status(job_id) for job_id in self.job_ids]


def run_demo(settings: Settings, *, jobs: int = 3, console: Console | None = None) -> int:
    """Run the demo; 0 when every job completed."""
    console = console or Console()
    # The sample videos are served on 127.0.0.1: the demo allows loopback URLs explicitly.
    # The samples are small: a node needs room for them, not for a 2 GB video (node health).
    settings = settings.model_copy(
        update={
            "allow_private_urls": True,
            "max_download_mb": min(settings.max_download_mb, DEMO_MAX_DOWNLOAD_MB),
        }
    )
    with ExitStack() as stack:
        client = _start_services(settings, stack, console)
        videos = ensure_demo_videos(Path(settings.work_dir) / "demo-media", count=jobs)
        base_url = stack.enter_context(serve_files(videos[0].parent))
        console.print(f"serving {len(videos)} sample video(s) at {base_url}")
        run = DemoRun(client, _submit(client, base_url, videos))
        states = _follow(run, console)
        console.print()
        _summary(states, settings, console)
        console.print("stopping what the demo started …")
    ok = all(s is not None and s.status == "completed" for s in states)
    return 0 if ok else 1


def _start_services(settings: Settings, stack: ExitStack, console: Console) -> Client:
    from ingest.connect import connect, redis_url
    from ingest.redis_server import EmbeddedRedis
    from raybridge.run import connect_ray, disconnect_ray, start_bridge

    if settings.redis_url is None:
        server, started = EmbeddedRedis(settings.state_dir).ensure()
        if started:
            stack.callback(EmbeddedRedis(settings.state_dir).stop)
        console.print(f"embedded Redis {'started' if started else 'reused'} on port {server.port}")
    redis_client = connect(settings)
    console.print("starting a local Ray and the bridge …")
    stack.callback(disconnect_ray, connect_ray(settings))
    handle = start_bridge(settings, redis_url(settings))
    stack.callback(handle.stop)
    return Client(redis_client, settings.names)


def _submit(client: Client, base_url: str, videos: list[Path]) -> list[str]:
    """XADD one job per video, as any producer would."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    job_ids = []
    for i, video in enumerate(videos):
        topic = DEMO_TALKS[i % len(DEMO_TALKS)].title
        sent = client.submit(
            {
                "url": f"{base_url}/{video.name}",
                "job_id": f"demo-{stamp}-{i + 1}",
                "instructions": f"A short brief of the talk '{topic}'.",
                "producer": "vidbrief-demo",
            }
        )
        job_ids.append(sent.job_id)
    return job_ids


def _follow(run: DemoRun, console: Console) -> list[JobState | None]:
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    with Live(console=console, refresh_per_second=8) as live:
        while True:
            states = run.states()
            live.update(_table(run.job_ids, states))
            if all(s is not None and s.status.finished for s in states):
                return states
            if time.monotonic() > deadline:
                console.print(f"[red]gave up after {DEMO_TIMEOUT_S:.0f} s[/]")
                return states
            time.sleep(REFRESH_S)


def _table(job_ids: list[str], states: list[JobState | None]) -> Table:
    table = Table(title="vidbrief demo", expand=False)
    table.add_column("job")
    table.add_column("status")
    for step in STEP_NAMES:
        table.add_column(step, justify="center")
    for job_id, state in zip(job_ids, states, strict=True):
        status = state.status if state else "queued"
        table.add_row(job_id, str(status), *(_step_cell(state, s) for s in STEP_NAMES))
    return table


def _step_cell(state: JobState | None, step: str) -> str:
    timing = state.steps.get(step) if state else None
    if timing is None or timing.started is None:
        return STEP_MARK["waiting"]
    if timing.ended is None:
        return STEP_MARK["running"]
    return f"{STEP_MARK['done']} {timing.seconds:.1f}s"


def _summary(states: list[JobState | None], settings: Settings, console: Console) -> None:
    for state in states:
        if state is None:
            continue
        if state.status == "completed" and state.result:
            console.print(f"[green]✔[/] {state.job_id}: {state.result.get('report_url')}")
        else:
            console.print(f"[red]✘[/] {state.job_id}: {state.status} {state.error or ''}")
    console.print(f"reports are under {settings.reports_url}")
