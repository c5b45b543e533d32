"""The bridge logs one line per job outcome, and with VIDBRIEF_LOG_FORMAT=json every line it
writes is one JSON document (the driver's, and the bridge actor's forwarded by Ray)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import all_finished, family, video, wait_until, xadd_raw

from ingest.models import JobState, JobStatus
from raybridge.finish import outcome_line
from raybridge.logs import json_line
from raybridge.outcome import Outcome
from raybridge.run import ray_in_its_own_process_group

STEPS = "download=0.05,analyse=0.05,brief=0.01,report=0.01"


def in_group(pids: set[int], group: int) -> set[int]:
    """The processes among ``pids`` in process group ``group`` (gone ones left out)."""
    members = set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(pid) == group:
                members.add(pid)
    return members


def test_the_outcome_line_says_how_the_job_ended() -> None:
    state = JobState(job_id="j1", status=JobStatus.RUNNING, attempts=2, started_at=100.0)
    line, fields = outcome_line("j1", Outcome.completed({}), state, 112.5)
    assert line == "job j1 completed after 2 attempt(s) in 12.5 s"
    assert fields == {"job": "j1", "outcome": "completed", "attempts": 2, "seconds": 12.5}
    error = {"class": "PermanentStepError", "message": "no video", "step": "download"}
    line, fields = outcome_line("j1", Outcome(JobStatus.FAILED, error=error), state, 101.0)
    assert line.endswith(": PermanentStepError in download: no video")
    assert fields["error_class"] == "PermanentStepError" and fields["failed_step"] == "download"


@pytest.mark.integration
@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_json_logs_of_a_bridge_process(redis_server, redis_client, names, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDBRIEF_", "RAY_ADDR"))}
    env.update(
        VIDBRIEF_REDIS_URL=redis_server.url,
        VIDBRIEF_LOG_FORMAT="json",
        VIDBRIEF_STEP_MODE="synthetic",
        VIDBRIEF_SYNTHETIC_SECONDS=STEPS,
        VIDBRIEF_STATE_DIR=str(tmp_path / "state"),
        VIDBRIEF_WORK_DIR=str(tmp_path / "work"),
        VIDBRIEF_REPORTS_URL=str(tmp_path / "reports"),
        VIDBRIEF_RAY_NUM_CPUS="2",
        VIDBRIEF_DRAIN_GRACE_SECONDS="5",
        VIDBRIEF_MIN_FREE_DISK_MB="64",
        VIDBRIEF_MAX_DOWNLOAD_MB="16",
        VIDBRIEF_MIN_FREE_MEMORY_MB="64",
    )
    log = tmp_path / "bridge.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidbrief", "bridge"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until("the bridge", lambda: redis_client.hlen(names.bridges) or proc.poll(), 180)
        assert proc.poll() is None, log.read_text()
        for job_id in ("log-1", "log-2"):
            xadd_raw(redis_client, names, video(job_id))
        wait_until("2 jobs", lambda: all_finished(redis_client, names, ["log-1", "log-2"]), 120)
        # Ray's log monitor forwards the actor's lines to the driver within a moment.
        wait_until("2 outcome lines", lambda: log.read_text().count('"outcome"') >= 2, 30)
        ray_processes = family(proc) - {proc.pid}
        assert ray_processes and not in_group(ray_processes, os.getpgid(proc.pid))
    finally:
        # To the whole group, as a supervisor or `kill -- -PGID` sends it: the private Ray's
        # processes are in groups of their own, so the driver alone hears it and drains.
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    documents = [json.loads(line) for line in lines]  # every line: one JSON document
    outcomes = {d["job"]: d for d in documents if "outcome" in d}
    assert set(outcomes) == {"log-1", "log-2"}
    assert {d["outcome"] for d in outcomes.values()} == {"completed"}
    assert all("node_id" in d for d in outcomes.values())  # Ray's context on the actor's lines
    assert any("private Ray" in d["message"] for d in documents)  # the driver's own lines
    assert proc.returncode == 0 and any("drained" in d["message"] for d in documents), lines[-3:]


def test_a_line_outside_the_logs_is_json_like_them() -> None:
    document = json.loads(json_line("lost Redis: refused", exit_code=3))
    assert document["levelname"] == "ERROR" and document["message"] == "lost Redis: refused"
    assert document["exit_code"] == 3


def test_without_kernel_fate_sharing_ray_keeps_our_process_group(monkeypatch) -> None:
    """Where Ray's reaper kills its own process group when the driver dies (macOS), moving
    Ray's processes to groups of their own would let them outlive it: nothing is changed."""
    from ray._private import services, utils

    original = services.ConsolePopen
    monkeypatch.setattr(utils, "detect_fate_sharing_support", lambda: False)
    with ray_in_its_own_process_group():
        assert services.ConsolePopen is original
    monkeypatch.setattr(utils, "detect_fate_sharing_support", lambda: True)
    with ray_in_its_own_process_group():
        assert services.ConsolePopen is not original
    assert services.ConsolePopen is original
