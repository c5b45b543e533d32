"""Work folders: deleted on their nodes once the job's outcome is stored (completed, failed,
cancelled), kept for the retention when asked, orphans swept; 50 jobs through a real bridge
leave no video behind; the heartbeat says how much each node's work folder holds."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import redis
from fake_launcher import NODE, FakeLauncher
from helpers import FAST_STEPS_S, all_finished, run_all, states, video, wait_until, xadd_raw

from ingest.models import JobStatus
from ingest.names import RedisNames
from ingest.settings import Settings
from pipeline.chain import DOWNLOAD_SLOT, REPORT_NODE, SYNTHETIC_MEDIA
from raybridge import BridgeHandle
from raybridge.actor import Bridge
from raybridge.cleanup import ORPHAN_GRACE_S

pytestmark = pytest.mark.integration

HOUR_S = 3600.0


def folder(settings: Settings, job_id: str, age_s: float = 0.0) -> Path:
    """A job's work folder with a stand-in video, last changed ``age_s`` ago."""
    path = Path(settings.work_dir) / job_id / "download"
    path.mkdir(parents=True, exist_ok=True)
    media = path / "media.mp4"
    media.write_bytes(b"\0" * 1000)
    t = time.time() - age_s
    for p in (media, path, path.parent):
        os.utime(p, (t, t))
    return path.parent


def test_finished_jobs_folders_are_deleted_on_their_nodes(
    on_bridge: Callable[..., Any],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    settings = make_settings()
    for job_id in ("ok", "broken"):
        folder(settings, job_id)
        xadd_raw(redis_client, names, video(job_id))
    launcher = FakeLauncher(fail={"broken": 99})
    on_bridge(run_all, launcher, step_retries=0)

    found = states(redis_client, names, ["ok", "broken"])
    assert found["ok"].status is JobStatus.COMPLETED
    assert found["broken"].status is JobStatus.FAILED
    assert not (Path(settings.work_dir) / "ok").exists()
    assert not (Path(settings.work_dir) / "broken").exists()
    removals = [
        (node, args[1]) for node, fn, args in launcher.node_calls if fn == "remove_job_folders"
    ]
    assert removals == [(NODE, ["broken", "ok"])]  # on the node they ran on, in one task


def test_a_cancelled_jobs_folder_is_deleted_once_its_tasks_stopped(
    on_bridge: Callable[..., Any],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    settings = make_settings()
    work = folder(settings, "stop")
    xadd_raw(redis_client, names, video("stop"))

    async def action(bridge: Bridge) -> bool:
        await bridge.fleet.refresh_nodes()
        await bridge.fleet.wait_warm()
        [entry] = await bridge.stream.read_new(1, block_ms=10)
        admitted = await bridge.admission.admit(entry)
        task = asyncio.create_task(bridge.runner.run(admitted.slot, admitted.request, None))
        while not admitted.slot.refs:
            await asyncio.sleep(0.01)
        bridge._cancel("stop")  # what a cancel request does
        await task
        await bridge.cleaner.idle()
        return work.exists()

    assert on_bridge(action, FakeLauncher(step_s=5.0)) is False
    assert states(redis_client, names, ["stop"])["stop"].status is JobStatus.CANCELLED


def test_the_retention_keeps_a_folder_that_long(
    on_bridge: Callable[..., Any],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    settings = make_settings()
    work = folder(settings, "kept")
    xadd_raw(redis_client, names, video("kept"))

    async def action(bridge: Bridge) -> tuple[bool, bool]:
        await bridge.fleet.refresh_nodes()
        entries = await bridge.stream.read_new(1, block_ms=10)
        admitted = await bridge.admission.admit(entries[0])
        await bridge.runner.run(admitted.slot, admitted.request, None)
        await asyncio.sleep(0.2)
        during = work.exists()
        await bridge.cleaner.idle()
        return during, work.exists()

    assert on_bridge(action, work_retention_seconds=1.0) == (True, False)


def test_the_sweep_removes_folders_of_finished_and_unknown_jobs_only(
    on_bridge: Callable[..., Any],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    store = str(make_settings().work_dir / "store")  # an artefact store put in the work folder
    settings = make_settings(work_retention_seconds=60, artefacts_url=store)
    ages = {
        "finished-old": 120,  # finished, older than the retention: swept
        "finished-young": 10,  # finished, within the retention: kept
        "unknown-idle": ORPHAN_GRACE_S + 60,  # no job owns it, idle past the grace: swept
        "unknown-recent": 120,  # no job owns it, changed recently (a run-local?): kept
        "running": HOUR_S * 5,  # a job still running: kept, however old
        "store": HOUR_S * 5,  # the artefact store: never a job's folder
    }
    for job_id, age in ages.items():
        folder(settings, job_id, age)
    for job_id in ("finished-old", "finished-young"):
        redis_client.hset(names.job(job_id), mapping={"status": "completed"})
    redis_client.hset(names.job("running"), mapping={"status": "running"})
    (Path(settings.work_dir) / "not a job id").mkdir()  # never touched

    async def action(bridge: Bridge) -> list[str]:
        return await bridge.cleaner.sweep([NODE])

    swept = on_bridge(action, work_retention_seconds=60, artefacts_url=store)
    assert swept == ["finished-old", "unknown-idle"]
    left = sorted(p.name for p in Path(settings.work_dir).iterdir())
    assert left == ["finished-young", "not a job id", "running", "store", "unknown-recent"]


# -- through a real bridge ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(
        address="local",
        num_cpus=8,
        resources={DOWNLOAD_SLOT: 4, REPORT_NODE: 1},
        include_dashboard=False,
    )
    yield
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_fifty_jobs_leave_no_video_in_the_work_folder(
    local_ray: None,
    bridge: Callable[..., BridgeHandle],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    work = Path(make_settings().work_dir)
    orphan = folder(make_settings(), "left-by-a-dead-bridge", ORPHAN_GRACE_S + 60)
    bridge(window=8, cpu_analysers_per_node=2, work_retention_seconds=0, heartbeat_seconds=0.2)
    job_ids = [f"disk-{n:02d}" for n in range(50)]
    for job_id in job_ids:
        xadd_raw(redis_client, names, video(job_id))

    wait_until("50 jobs finished", lambda: all_finished(redis_client, names, job_ids), 120)
    assert {s.status for s in states(redis_client, names, job_ids).values()} == {
        JobStatus.COMPLETED
    }
    wait_until("every work folder deleted", lambda: not any(work.iterdir()), 30)
    assert not orphan.exists()  # swept at start
    assert not list(work.rglob(SYNTHETIC_MEDIA))

    def work_bytes() -> list[Any]:
        beat = json.loads(redis_client.hget(names.bridges, "bridge-1") or "{}")
        return [row.get("work_bytes") for row in beat.get("cluster", [])]

    assert work_bytes() and all(isinstance(n, int) for n in work_bytes())
    wait_until("the heartbeat says the work folder is empty", lambda: work_bytes() == [0], 30)
    assert FAST_STEPS_S  # the steps slept while holding their resources, as configured


def test_a_settle_cancelled_by_a_stopping_bridge_logs_no_unretrieved_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every drain cancels the waits on finished jobs' refs: Python 3.11's wait_for then left
    the gathering future's CancelledError unretrieved, and asyncio printed "_GatheringFuture
    exception was never retrieved" with a traceback at every bridge stop."""
    import gc

    from raybridge.cleanup import settle

    async def main() -> None:
        never = asyncio.get_running_loop().create_future()  # a step that has not ended
        waiting = asyncio.create_task(settle([never], timeout_s=60))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gc.collect()
        await asyncio.sleep(0.01)

    with caplog.at_level("ERROR", logger="asyncio"):
        asyncio.run(main())
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
