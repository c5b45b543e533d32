"""The bridge on a simulated cluster: placement, a killed bridge process, a lost node.

Three nodes on this machine (``ray.cluster_utils.Cluster``): a head without GPU or download
slot (briefs, reports) and two nodes with one logical GPU and one download slot each. Every
process a test starts is stopped by its PID or process group, never by name.
"""

from __future__ import annotations

import functools
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import ray
import redis
from helpers import (
    alive,
    all_finished,
    assert_pinned,
    bridge_env,
    count_events,
    events,
    family,
    group_idle,
    lose_node_mid_analysis,
    pending,
    spawn_bridge_process,
    started_on,
    states,
    stop_group,
    video,
    wait_until,
    xadd_raw,
)
from ray.cluster_utils import Cluster

from ingest.events import EventType
from ingest.models import JobStatus
from ingest.names import RedisNames
from ingest.redis_server import RedisServer
from pipeline.chain import DOWNLOAD_SLOT, REPORT_NODE
from raybridge import BridgeHandle

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("cluster")]

STEPS_S = {"download": 0.2, "analyse": 0.5, "brief": 0.1, "report": 0.05}
GPU_NODE = {"num_cpus": 2, "num_gpus": 1, "resources": {DOWNLOAD_SLOT: 1}}
PROCESS_EXIT_S = 60


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    sim = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "resources": {REPORT_NODE: 1}}
    )
    for _ in range(2):
        sim.add_node(**GPU_NODE)
    sim.wait_for_nodes()
    sim.connect()
    yield sim
    ray.shutdown()
    sim.shutdown()  # stops the node processes it started, by PID


def gpu_nodes() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")}


def head_node(cluster: Cluster) -> str:
    return cluster.head_node.node_id


@pytest.fixture
def bridge(bridge: Callable[..., BridgeHandle]) -> Callable[..., BridgeHandle]:
    """conftest's bridge factory, with this module's step durations by default."""
    return functools.partial(bridge, synthetic_seconds=STEPS_S)


@pytest.mark.timeout(180)
def test_analysis_runs_where_the_download_ran_and_both_gpus_work(
    cluster: Cluster,
    bridge: Callable[..., BridgeHandle],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    bridge(window=8)
    job_ids = [f"place-{n:02d}" for n in range(12)]
    for job_id in job_ids:
        xadd_raw(redis_client, names, video(job_id))
    wait_until("12 jobs finished", lambda: all_finished(redis_client, names, job_ids), 90)

    found = states(redis_client, names, job_ids)
    assert {s.status for s in found.values()} == {JobStatus.COMPLETED}
    for job_id, state in found.items():
        assert state.steps["analyse"].node == state.steps["download"].node, job_id
        assert state.steps["report"].node == head_node(cluster), job_id
    analysed_on = [s.steps["analyse"].node for s in found.values()]
    assert set(analysed_on) == gpu_nodes()
    # Shared, not one node hoarding (11 or 12 of 12). Placement follows each node's measured
    # pace, and on a loaded 2-core machine one node can look slower for a while: 9 / 3 was
    # seen in a CI run beside other work, 6 / 6 is usual.
    assert min(analysed_on.count(n) for n in gpu_nodes()) >= 3


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_bridge_process_killed_mid_flight_then_restarted_loses_and_repeats_nothing(
    cluster: Cluster,
    redis_client: redis.Redis,
    redis_server: RedisServer,
    names: RedisNames,
    tmp_path: Path,
) -> None:
    env = bridge_env(tmp_path, redis_server.url, cluster.address, STEPS_S)
    log = tmp_path / "bridge.log"
    job_ids = [f"kill-{n:02d}" for n in range(20)]
    for job_id in job_ids:
        xadd_raw(redis_client, names, video(job_id))
    started: list[subprocess.Popen[bytes]] = []
    pids: set[int] = set()
    try:
        first = spawn_bridge_process(env, log)
        started.append(first)
        wait_until(
            "20 jobs in flight",
            lambda: (
                pending(redis_client, names) == 20
                and any(
                    s.steps.get("download") and s.steps["download"].ended
                    for s in states(redis_client, names, job_ids).values()
                )
            ),
            120,
        )
        pids |= family(first)
        done_before = sum(
            s.status is JobStatus.COMPLETED for s in states(redis_client, names, job_ids).values()
        )
        stop_group(first, signal.SIGKILL)
        assert first.wait(PROCESS_EXIT_S) == -signal.SIGKILL

        second = spawn_bridge_process(env, log)
        started.append(second)
        wait_until("all 20 finished", lambda: all_finished(redis_client, names, job_ids), 150)
        wait_until("every entry acknowledged", lambda: group_idle(redis_client, names), 30)
        pids |= family(second)
        stop_group(second, signal.SIGTERM)
        assert second.wait(PROCESS_EXIT_S) == 0, log.read_text()[-3000:]
    finally:
        for proc in started:
            stop_group(proc, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(PROCESS_EXIT_S)
    assert not alive(pids), f"left running: {alive(pids)}"

    found = states(redis_client, names, job_ids)
    assert {s.status for s in found.values()} == {JobStatus.COMPLETED}
    assert count_events(events(redis_client, names), EventType.COMPLETED) == dict.fromkeys(
        job_ids, 1
    )
    assert done_before < len(job_ids)  # the kill did interrupt work
    for job_id, state in found.items():
        assert state.steps["analyse"].node == state.steps["download"].node, job_id


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_jobs_on_a_lost_node_are_downloaded_again_elsewhere(
    cluster: Cluster,
    bridge: Callable[..., BridgeHandle],
    redis_client: redis.Redis,
    names: RedisNames,
) -> None:
    job_ids = [f"lost-{n:02d}" for n in range(12)]
    lost, _ = lose_node_mid_analysis(
        cluster, GPU_NODE, bridge, STEPS_S, redis_client, names, job_ids
    )
    wait_until("all finished", lambda: all_finished(redis_client, names, job_ids), 150)
    found = states(redis_client, names, job_ids)
    assert {s.status for s in found.values()} == {JobStatus.COMPLETED}, {
        j: s.error for j, s in found.items() if s.error
    }
    moved = {j for j in started_on(events(redis_client, names), lost)}
    assert {j for j in moved if found[j].attempts > 1}, "no job downloaded again elsewhere"
    assert_pinned(found, lost)
    assert count_events(events(redis_client, names), EventType.COMPLETED) == dict.fromkeys(
        job_ids, 1
    )
