"""Several bridges on one simulated Ray cluster (a small ``vidbrief bench bridges``): every job
completed exactly once, never more analyses on a node than its GPUs nor more downloads than its
download slots (from the step spans in the job hashes), and one bridge SIGKILLed mid-run: its
jobs finish on the others, the first of their steps again within seconds.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import ray
import redis
from helpers import (
    all_finished,
    count_events,
    events,
    group_idle,
    states,
    video,
    wait_until,
    xadd_raw,
)
from ray.cluster_utils import Cluster

from ingest.events import EventType
from ingest.names import ANALYSE_STEP, DOWNLOAD_STEP, RedisNames
from pipeline.chain import DOWNLOAD_SLOT, REPORT_NODE
from vidbrief.bench.bounds import Span
from vidbrief.bench.bridges import most_per_node

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STEPS_S = {"download": 0.3, "analyse": 0.8, "brief": 0.05, "report": 0.02}
NODES = ({"gpus": 2, "slots": 2}, {"gpus": 1, "slots": 1})


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    sim = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "resources": {REPORT_NODE: 1}}
    )
    for node in NODES:
        sim.add_node(num_cpus=3, num_gpus=node["gpus"], resources={DOWNLOAD_SLOT: node["slots"]})
    sim.wait_for_nodes()
    sim.connect()
    yield sim
    ray.shutdown()
    sim.shutdown()


def spans(client: redis.Redis, names: RedisNames, job_ids: list[str]) -> list[Span]:
    out = []
    for state in states(client, names, job_ids).values():
        for step, t in state.steps.items():
            # A kept output reused by a resumed attempt ran on no node this time.
            if t.started is not None and t.ended is not None and not t.reused:
                out.append(Span(state.job_id, step, t.started, t.ended, t.node or ""))
    return out


def limits() -> dict[str, tuple[float, float]]:
    return {
        n["NodeID"]: (n["Resources"].get("GPU", 0), n["Resources"].get(DOWNLOAD_SLOT, 0))
        for n in ray.nodes()
        if n["Alive"]
    }


@pytest.mark.timeout(300)
def test_three_bridges_share_the_nodes_and_survive_one_killed(
    cluster: Cluster, bridge, redis_client: redis.Redis, names: RedisNames
) -> None:
    bridges = [
        bridge(bridge_name=f"b{i}", window=4, synthetic_seconds=STEPS_S, lease_seconds=1.5)
        for i in range(3)
    ]
    job_ids = [f"scale-{n:02d}" for n in range(24)]
    for n, job_id in enumerate(job_ids):
        xadd_raw(redis_client, names, {**video(job_id), "producer": f"p{n % 2}"})
    victim = bridges[0]
    held = wait_until(
        "the first bridge holding a downloaded job",
        lambda: [j["job_id"] for j in victim.stats()["jobs"] if j["downloaded"]],
        120,
    )
    theirs = {j["job_id"] for j in victim.stats()["jobs"]} | set(held)
    pid = victim.stats()["pid"]
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    attempts = {j: int(redis_client.hget(names.job(j), "attempts") or 0) for j in theirs}

    wait_until("all finished", lambda: all_finished(redis_client, names, job_ids), 200)
    wait_until("every entry acknowledged", lambda: group_idle(redis_client, names), 30)
    evs = events(redis_client, names)
    assert count_events(evs, EventType.COMPLETED) == dict.fromkeys(job_ids, 1)
    again = [  # a step of a new attempt (one of the dead bridge's may still end meanwhile)
        e
        for e in evs
        if e.type == EventType.STEP_STARTED
        and e.job_id in theirs
        and int(e.data.get("attempt", 0)) > attempts[e.job_id]
    ]
    assert again, "none of the killed bridge's jobs ran a step afterwards"
    assert int(again[0].stream_id.split("-")[0]) / 1000 - killed_at < 10

    found = spans(redis_client, names, job_ids)
    for node, (gpus, slots) in limits().items():
        assert most_per_node(found, ANALYSE_STEP).get(node, 0) <= gpus, node
        assert most_per_node(found, DOWNLOAD_STEP).get(node, 0) <= slots, node
    analysed_on = {s.node for s in found if s.step == ANALYSE_STEP}
    assert len(analysed_on) == 2  # both GPU nodes worked
