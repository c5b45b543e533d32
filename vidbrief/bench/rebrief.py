"""``vidbrief bench rebrief``: a video briefed twice through the bridge, the second time with
other instructions — how long each job takes, and which steps the second one reused.

A talk of ``--minutes`` of speech (espeak-ng, cut every 7 s) is served on loopback; a private
redis-server and a local Ray run a bridge with the real steps (the offline brief unless an LLM
is configured). Job 1 asks for the numbers; job 2 is ``vidbrief rebrief`` of job 1 asking for
the people. Each job's time runs from its submission (``created_at``) to its stored outcome
(``finished_at``), from the job hash; the target is job 2 ≤ 15 % of job 1.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.names import STEP_NAMES
from ingest.settings import Settings

log = logging.getLogger(__name__)

JOB_TIMEOUT_S = 3600.0
TARGET_RATIO = 0.15
FIRST, SECOND = "bench-rebrief-1", "bench-rebrief-2"


@dataclass(frozen=True)
class RebriefOptions:
    minutes: float = 10.0
    threads: int = 0


def run_rebrief(options: RebriefOptions) -> dict[str, Any]:
    """Generate the talk, run both jobs through a bridge; the JSON document."""
    from vidbrief.bench.media import EN_TEXT, make_talk, talk_samples
    from vidbrief.samples import serve_files

    with tempfile.TemporaryDirectory(prefix="vidbrief-bench-rebrief-") as tmp:
        root = Path(tmp)
        log.info("generating a %g min talk", options.minutes)
        samples = talk_samples(EN_TEXT, "en", options.minutes * 60)
        (root / "media").mkdir()
        video = make_talk(root / "media" / "talk.mp4", samples)
        with serve_files(video.parent) as base:
            jobs = _through_bridge(f"{base}/{video.name}", _settings(root, options), root)
    first, second = jobs[FIRST], jobs[SECOND]
    ratio = second["seconds"] / first["seconds"]
    return {
        "bench": "rebrief",
        "minutes": options.minutes,
        "jobs": jobs,
        "ratio": round(ratio, 4),
        "target_ratio": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO and second["reused_steps"] == ["download", "analyse"],
    }


def _settings(root: Path, options: RebriefOptions) -> Settings:
    return Settings(
        allow_private_urls=True,
        work_dir=root / "work",
        reports_url=str(root / "reports"),
        threads=options.threads,
        redis_url=None,
        window=2,
        _env_file=None,
    )  # type: ignore[call-arg]


def _through_bridge(url: str, settings: Settings, root: Path) -> dict[str, Any]:
    from ingest.client import Client
    from ingest.rebrief import rebrief_request
    from ingest.redis_server import start_redis_server
    from raybridge.run import connect_ray, disconnect_ray, start_bridge

    server = start_redis_server(root / "redis", appendonly=False, daemonize=False)
    started_ray = connect_ray(settings)
    try:
        handle = start_bridge(settings, server.url)
        try:
            client = Client(server.client(), settings.names)
            _run(client, {"url": url, "job_id": FIRST, "instructions": "What are the numbers?"})
            again = rebrief_request(
                client.status(FIRST), instructions="Who is involved, and what do they do?"
            )
            _run(client, again.model_copy(update={"job_id": SECOND}).model_dump(exclude_none=True))
        finally:
            handle.stop(grace_s=5)
        return {job: _job(client, job) for job in (FIRST, SECOND)}
    finally:
        disconnect_ray(started_ray)
        server.stop()


def _run(client: Any, request: dict[str, Any]) -> None:
    since = client.last_event_id()
    client.submit(request)
    event = client.wait(request["job_id"], timeout_s=JOB_TIMEOUT_S, since=since)
    log.info("%s: %s", request["job_id"], event.type)
    if event.type != "vidbrief.job.completed":
        raise RuntimeError(f"job {request['job_id']} did not complete: {event.data}")


def _job(client: Any, job_id: str) -> dict[str, Any]:
    state = client.status(job_id)
    steps = {s: state.steps[s] for s in STEP_NAMES if s in state.steps}
    return {
        "seconds": round((state.finished_at or 0) - (state.created_at or 0), 3),
        "step_seconds": {s: round(t.seconds or 0.0, 3) for s, t in steps.items()},
        "reused_steps": [s for s, t in steps.items() if t.reused],
    }


def rebrief_rows(doc: dict[str, Any]) -> list[list[str]]:
    """Table rows: job, seconds, each step's seconds, steps reused."""
    rows = []
    for job, found in doc["jobs"].items():
        steps = found["step_seconds"]
        cells = [f"{steps[s]:.2f}" if s in steps else "—" for s in STEP_NAMES]
        rows.append([job, f"{found['seconds']:.2f}", *cells, ", ".join(found["reused_steps"])])
    return rows
