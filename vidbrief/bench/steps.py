"""``vidbrief bench steps``: each real step on a sample video, standalone vs inside the pipeline.

Three ways of running the same four steps on the same generated talk:

- **standalone**: each step function called directly, one after the other, in this process —
  once cold (imports, model load) and once warm;
- **run-local**: the in-process chain (``pipeline.local.run_local``), no Redis, no Ray;
- **bridge**: a job XADDed to a private redis-server, run by the bridge on a local Ray; step
  times come from the job hash (what a user sees in ``vidbrief status``).

Figures: download MB/s from loopback, frames sampled per second of decoding, the speech
real-time factor, PDF pages/s, and the zstd sizes of the analysis artefact.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.names import ANALYSE_STEP, BRIEF_STEP, DOWNLOAD_STEP, REPORT_STEP, STEP_NAMES
from ingest.settings import Settings
from vidbrief.samples import DEMO_TALKS, make_sample_video, serve_files

log = logging.getLogger(__name__)

JOB_TIMEOUT_S = 300.0
#: The ways of running the steps, in table order (cold: first call in a fresh process).
STEP_COLUMNS = ("standalone_cold", "standalone", "run_local", "bridge")


@dataclass(frozen=True)
class StepsOptions:
    seconds: float = 60.0  # length of the sample talk
    size: tuple[int, int] = (640, 360)
    bridge: bool = True


def run_steps(options: StepsOptions) -> dict[str, Any]:
    """Run the three ways; return one JSON-able document."""
    with tempfile.TemporaryDirectory(prefix="vidbrief-bench-steps-") as tmp:
        root = Path(tmp)
        video = _make_video(root, options)
        with serve_files(video.parent) as base:
            url = f"{base}/{video.name}"
            cold = _standalone(url, _settings(root / "cold"), "bench-cold")
            standalone = _standalone(url, _settings(root / "standalone"), "bench-warm")
            local = _run_local(url, _settings(root / "local"))
            bridge = _bridge(url, _settings(root / "bridge"), root) if options.bridge else {}
    return {
        "bench": "steps",
        "video": {
            "seconds": options.seconds,
            "size": list(options.size),
            "bytes": standalone.pop("bytes"),
        },
        "figures": standalone.pop("figures"),
        "seconds": {
            "standalone_cold": _only_seconds(cold),
            "standalone": standalone,
            "run_local": local,
            "bridge": bridge,
        },
    }


def _make_video(root: Path, options: StepsOptions) -> Path:
    talk = DEMO_TALKS[0]
    # The talk's text, repeated to fill the length: speech all along, as in a real talk.
    repeats = max(1, round(options.seconds / talk.seconds))
    cuts = [c + i * talk.seconds for i in range(repeats) for c in talk.cuts]
    path = root / "media" / "talk.mp4"
    path.parent.mkdir(parents=True)
    log.info("generating a %.0f s %dx%d talk", options.seconds, *options.size)
    return make_sample_video(
        path,
        seconds=options.seconds,
        cuts=cuts,
        text=" ".join([talk.text] * repeats),
        size=options.size,
    )


def _settings(root: Path) -> Settings:
    return Settings(
        allow_private_urls=True,
        work_dir=root / "work",
        reports_url=str(root / "reports"),
        _env_file=None,
    )  # type: ignore[call-arg]


def _only_seconds(run: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in run.items() if k in STEP_NAMES}


def _standalone(url: str, settings: Settings, job_id: str) -> dict[str, Any]:
    from ingest.models import JobRequest
    from pipeline import analyse, artefacts, brief, download, report
    from pipeline.context import JobContext

    ctx = JobContext(job_id, JobRequest(url=url, job_id=job_id), settings)
    seconds: dict[str, float] = {}
    media = _timed(seconds, DOWNLOAD_STEP, download.run, ctx)
    analysis = _timed(seconds, ANALYSE_STEP, analyse.run, ctx, media)
    written = _timed(seconds, BRIEF_STEP, brief.run, ctx, media, analysis)
    files = _timed(seconds, REPORT_STEP, report.run, ctx, media, analysis, written)
    sizes = artefacts.sizes(analysis)
    duration = analysis.duration_s or 1.0
    figures = {
        "download_mb_per_s": media.size_bytes / 1e6 / seconds[DOWNLOAD_STEP],
        "frames_sampled_per_s": analysis.frames_sampled / max(analysis.timings["decode_s"], 1e-9),
        "speech_rtf": analysis.timings["asr_s"] / duration,
        "pdf_pages": files.pages,
        "pdf_pages_per_s": files.pages / seconds[REPORT_STEP],
        "analysis_json_bytes": sizes.raw_bytes,
        "analysis_zstd_bytes": sizes.compressed_bytes,
        "zstd_ratio": sizes.ratio,
        "asr_device": analysis.device,
    }
    return {**seconds, "bytes": media.size_bytes, "figures": figures}


def _timed(seconds: dict[str, float], step: str, fn: Any, *args: Any) -> Any:
    started = time.perf_counter()
    out = fn(*args)
    seconds[step] = round(time.perf_counter() - started, 3)
    return out


def _run_local(url: str, settings: Settings) -> dict[str, float]:
    from pipeline.local import run_local

    seconds: dict[str, float] = {}

    def on_progress(event: Any) -> None:
        if event.status == "completed" and event.seconds is not None:
            seconds[event.step] = round(event.seconds, 3)

    # A store of its own: the bridge's run must not reuse this run's analysis.
    settings = settings.model_copy(
        update={"artefacts_url": str(Path(settings.reports_url).parent / "artefacts-local")}
    )
    run_local(url, Path(settings.reports_url), settings, on_progress, job_id="bench-local")
    return seconds


def _bridge(url: str, settings: Settings, root: Path) -> dict[str, float]:
    from ingest.client import Client
    from ingest.redis_server import start_redis_server
    from raybridge.run import connect_ray, disconnect_ray, start_bridge

    server = start_redis_server(root / "redis", appendonly=False, daemonize=False)
    artefacts = str(root / "artefacts-bridge")  # not run-local's: it must analyse again
    settings = settings.model_copy(update={"redis_url": None, "artefacts_url": artefacts})
    started_ray = connect_ray(settings)
    try:
        handle = start_bridge(settings, server.url)
        try:
            client = Client(server.client(), settings.names)
            since = client.last_event_id()
            client.submit({"url": url, "job_id": "bench-bridge"})
            client.wait("bench-bridge", timeout_s=JOB_TIMEOUT_S, since=since)
        finally:
            handle.stop(grace_s=5)
        state = client.status("bench-bridge")
        return {s: round(state.steps[s].seconds or 0.0, 3) for s in STEP_NAMES if s in state.steps}
    finally:
        disconnect_ray(started_ray)
        server.stop()


def steps_rows(doc: dict[str, Any]) -> list[list[str]]:
    """Table rows: step, then its seconds in each way of running it (STEP_COLUMNS)."""
    runs = doc["seconds"]
    return [[step, *(_cell(runs[k].get(step)) for k in STEP_COLUMNS)] for step in STEP_NAMES]


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"
