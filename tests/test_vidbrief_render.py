"""What the CLI draws fits an 80-column terminal (the width of a pipe): no header cut to
`brid…`, no JSON centred in a narrow block, steps in chain order, nodes by host name."""

from __future__ import annotations

import json
import time

from rich.console import Console

from ingest.events import Event
from ingest.models import JobState
from vidbrief.live import event_line, events_table
from vidbrief.render import NODE_COLUMNS, cluster_view, dead_table, job_view, with_ages

WIDTH = 80
GIB = 1024**3
NODE_A = "3f2a9c1b" + "e" * 48
NODE_B = "77d0c4aa" + "f" * 48


def draw(renderable: object, width: int = WIDTH) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(renderable)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    return text


def node_row(node_id: str, host: str, **extra: object) -> dict[str, object]:
    return {
        "node_id": node_id,
        "host": host,
        "gpus": 2.0,
        "analysers": 2,
        "assigned": 3,
        "capacity": 5,
        "download_s": 12.04,
        "analysis_s": 31.5,
        "disk_free_bytes": 1234 * GIB,
        "memory_available_bytes": 96 * GIB,
        "measured_at": time.time() - 1,
        "healthy": True,
        "reason": "",
        "stale": False,
        **extra,
    }


def beats(now: float) -> dict[str, str]:
    fresh = {
        "updated_at": now - 1,
        "heartbeat_seconds": 2,
        "in_flight": 7,
        "window": 8,
        "cluster": [
            node_row(NODE_A, "gpu-worker-1.example.internal", analysing=1, waiting_for_analyser=3),
            node_row(
                NODE_B,
                "gpu-worker-2",
                healthy=False,
                reason="disk free 1,024 MiB < 4,096 MiB",
            ),
        ],
    }
    old = {"updated_at": now - 30, "heartbeat_seconds": 2, "cluster": []}
    return {"bridge-east-1": json.dumps(fresh), "bridge-west-2": json.dumps(old)}


def test_the_cluster_fits_80_columns_with_whole_headers_and_host_names() -> None:
    text = draw(cluster_view(with_ages(beats(time.time()), 2.0)))
    assert "…" not in text
    header = next(line for line in text.splitlines() if line.strip().startswith("node"))
    assert header.split() == [h for h, _ in NODE_COLUMNS]
    assert "gpu-worker-1.example.internal" in text.replace("\n", "") or "gpu-worker-1" in text
    assert "3f2a9c1b" in text and "gpu-worker-2" in text and "12.0/31.5" in text
    assert "1234G" in text and "no: disk" in text and "4,096" in text  # why, folded
    # Node A: one of its two actors runs this bridge's analysis, three videos wait for one;
    # node B's heartbeat comes from an older bridge: its actors only.
    row_a = next(line for line in text.splitlines() if "gpu-worker-1" in line)
    assert "1/2" in row_a and "+3" in text
    row_b = next(line for line in text.splitlines() if "gpu-worker-2" in line)
    assert " 2 " in row_b and "/2" not in row_b


def test_each_bridge_shows_its_heartbeat_age_and_an_old_one_is_stale() -> None:
    now = time.time()
    aged = with_ages(beats(now), 2.0, now=now)
    assert aged["bridge-east-1"]["age_s"] == 1.0 and not aged["bridge-east-1"]["stale"]
    assert aged["bridge-west-2"]["stale"]  # 30 s > 3 heartbeats of 2 s
    text = draw(cluster_view(aged))
    east = next(line for line in text.splitlines() if "bridge-east-1" in line)
    west = next(line for line in text.splitlines() if "bridge-west-2" in line)
    assert "heartbeat 1.0 s ago" in east and "7/8 in flight" in east
    assert "STALE" in west and "30.0 s ago" in west


def job(status: str, **fields: str) -> JobState:
    base = {
        "status": status,
        "url": "https://videos.example.com/talks/2026/keynote.mp4",
        "attempts": "1",
        "created_at": "1767225600.0",
        # Hash order is not chain order: report first, analyse last.
        "step:report:started": "1767225609.0",
        "step:download:started": "1767225601.0",
        "step:download:ended": "1767225603.5",
        "step:download:node": NODE_A,
        "step:brief:started": "1767225606.0",
        "step:brief:ended": "1767225609.0",
        "step:analyse:started": "1767225603.6",
        "step:analyse:ended": "1767225606.0",
        "step:analyse:node": NODE_A,
    }
    return JobState.from_hash("job-1", {**base, **fields})


def test_a_job_shows_its_steps_in_chain_order_with_host_names() -> None:
    result = {"report_url": "/data/reports/job-1/report.pdf", "pages": 3, "words": 1200}
    state = job("completed", **{"step:report:ended": "1767225610.0", "result": json.dumps(result)})
    text = draw(job_view(state, {NODE_A: "gpu-worker-1"}))
    order = [line.split()[0] for line in text.splitlines() if line.split()[:1]]
    steps = [w for w in order if w in ("download", "analyse", "brief", "report")]
    assert steps == ["download", "analyse", "brief", "report"]
    assert "gpu-worker-1 3f2a9c1b" in text
    # The result as indented JSON at the left, not centred in a narrow caption.
    pages = next(line for line in text.splitlines() if '"pages": 3' in line)
    assert len(pages) - len(pages.lstrip()) < 16


def test_a_failed_or_cancelled_step_is_not_shown_as_running() -> None:
    error = {"class": "PermanentStepError", "message": "bad media", "step": "report"}
    for status in ("failed", "cancelled"):
        text = draw(job_view(job(status, error=json.dumps(error))))
        report = next(line for line in text.splitlines() if line.split()[:1] == ["report"])
        assert "…" not in report and status in report
    running = draw(job_view(job("running")))
    report = next(line for line in running.splitlines() if line.split()[:1] == ["report"])
    assert "…" in report


def event(type_: str, **data: object) -> Event:
    return Event(
        id="e1",
        type=type_,
        source="vidbrief/bridge-1",
        subject="job-with-a-long-name-42",
        time="2026-01-01T00:00:01.5Z",
        data=dict(data),
    )


def test_events_leave_room_for_their_details_at_80_columns() -> None:
    details = "error=the download was refused: a private address (VIDBRIEF_ALLOW_PRIVATE_URLS)"
    failed = event("vidbrief.job.failed", error={"message": details.removeprefix("error=")})
    started = event("vidbrief.step.started", step="analyse", node=NODE_A, attempt=1)
    line = event_line(failed).plain
    assert "refused: a private" in line  # about 32 characters of details on the line
    text = draw(events_table([failed, started], {NODE_A: "gpu-worker-1"}))
    assert "analyse started" in text and "on gpu-worker-1" in text
    assert "VIDBRIEF_ALLOW_PRIVATE_URLS" in "".join(text.split())


def test_dead_letters_fit_80_columns() -> None:
    entry = {"job": json.dumps({"url": "https://example.com/" + "x" * 300}), "reason": "r" * 90}
    text = draw(dead_table([("1767225600000-0", {**entry, "deliveries": "5"})]))
    assert "1767225600000-0" in text and "…" in text  # the entry shortened, the id whole
