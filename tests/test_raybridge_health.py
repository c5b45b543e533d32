"""Node health: a node short of disk or memory gets no new downloads until it recovers.

Fast tests cover the pure part (thresholds, verdicts, placement skipping an unhealthy node and
taking it back once healthy), the monitor with a fake probe (stale, recovery), the metrics and
the ``vidbrief status --cluster`` rendering. The cluster test runs the bridge on a simulated
cluster where one GPU node's disk threshold (the ``vidbrief_min_free_disk_mb`` resource) lies
above its free disk: every download goes to the other node.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from typing import Any

import pytest
from rich.console import Console

from ingest.settings import Settings
from raybridge.health import (
    DISK_OVERRIDE_RESOURCE,
    MIB,
    Figures,
    HealthMonitor,
    Thresholds,
    default_thresholds,
    judge,
    measure,
    node_thresholds,
)
from raybridge.metrics import BridgeMetrics
from raybridge.placement import ClusterSnapshot, NodeView, choose_node
from vidbrief.render import cluster_view, with_ages

GIB = 1024 * MIB
#: A threshold no test machine's disk reaches (MiB): about 1 PiB.
HUGE_MB = 1e9
STEPS_S = {"download": 0.1, "analyse": 0.2, "brief": 0.05, "report": 0.02}


def figures(disk_gib: float, memory_gib: float = 8.0) -> Figures:
    return Figures(int(disk_gib * GIB), int(memory_gib * GIB), 5.0, 0.0)


def two_nodes(a_healthy: bool = True) -> ClusterSnapshot:
    return ClusterSnapshot(
        (
            NodeView("a", gpus=2, download_slots=2, analysers=2, healthy=a_healthy),
            NodeView("b", gpus=1, download_slots=1, analysers=1),
        )
    )


# -- the pure part ---------------------------------------------------------------------------


def test_default_disk_threshold_is_two_downloads_or_the_setting(make_settings) -> None:
    s = make_settings(max_download_mb=100, min_free_disk_mb=1000, min_free_memory_mb=256)
    assert default_thresholds(s) == Thresholds(1000 * MIB, 256 * MIB)
    big = make_settings(max_download_mb=2048, min_free_disk_mb=1000)
    assert default_thresholds(big).min_free_disk_bytes == 4096 * MIB


def test_node_resource_overrides_the_setting(make_settings) -> None:
    s = make_settings(max_download_mb=100, min_free_disk_mb=1000, min_free_memory_mb=256)
    t = node_thresholds(s, {"GPU": 1, DISK_OVERRIDE_RESOURCE: 50})
    assert t == Thresholds(50 * MIB, 256 * MIB)


def test_judge_names_the_reason() -> None:
    t = Thresholds(4 * GIB, 1 * GIB)
    assert judge(figures(10), t) == (True, "")
    ok, reason = judge(figures(3), t)
    assert not ok and reason.startswith("disk free 3,072 MiB < 4,096 MiB")
    ok, reason = judge(figures(10, memory_gib=0.5), t)
    assert not ok and reason.startswith("memory available")
    assert judge(None, t) == (True, "not measured yet")


def test_choose_node_skips_an_unhealthy_node_and_takes_it_back() -> None:
    assert choose_node(two_nodes()) == "a"  # 2 GPUs: sooner
    assert choose_node(two_nodes(a_healthy=False)) == "b"
    sick_only = ClusterSnapshot(
        (NodeView("a", gpus=1, download_slots=1, analysers=1, healthy=False),)
    )
    assert choose_node(sick_only) is None  # the job waits in the window
    assert choose_node(two_nodes(a_healthy=True)) == "a"  # recovered


def test_a_resumed_job_still_goes_back_to_its_unhealthy_node() -> None:
    # Its video is on that disk already: no new download needs the room.
    assert choose_node(two_nodes(a_healthy=False), prefer="a") == "a"


def test_measure_reads_this_machine(tmp_path) -> None:
    got = measure(str(tmp_path / "not" / "made" / "yet"))
    assert got["disk_free_bytes"] > 0 and got["memory_available_bytes"] > 0
    assert 0.0 <= got["cpu_percent"] <= 100.0 * 1024


# -- the monitor with a fake probe -----------------------------------------------------------


class FakeProbe:
    """Per node: figures to return, an error to raise, or never answer."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}

    async def __call__(self, node_id: str) -> Mapping[str, Any]:
        answer = self.answers[node_id]
        if answer == "hang":
            await asyncio.Event().wait()
        if isinstance(answer, Exception):
            raise answer
        return answer


def raw(disk_gib: float) -> dict[str, float]:
    return {"disk_free_bytes": disk_gib * GIB, "memory_available_bytes": 8 * GIB}


def test_monitor_marks_unhealthy_stale_and_recovered(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        max_download_mb=512, min_free_disk_mb=0, min_free_memory_mb=0, health_probe_seconds=0.1
    )
    probe = FakeProbe()
    monitor = HealthMonitor(settings, probe, timeout_s=0.2)

    async def rounds() -> None:
        probe.answers = {"a": raw(0.5), "b": raw(10)}
        health = await monitor.refresh(["a", "b"])
        assert not health["a"].healthy and "disk free" in health["a"].reason
        assert health["b"].healthy and not health["b"].stale

        probe.answers = {"a": raw(0.5), "b": "hang"}  # b keeps its last figures, stale
        health = await monitor.refresh(["a", "b"])
        assert health["b"].healthy and health["b"].stale  # no answer for 0.2 s > 0.1 s
        assert health["b"].figures.disk_free_bytes == 10 * GIB  # type: ignore[union-attr]
        assert health["b"].takes_work[0] is False
        assert "no answer to the health probes" in health["b"].takes_work[1]

        probe.answers = {"a": raw(2), "b": RuntimeError("node gone")}
        health = await monitor.refresh(["a", "b"])
        assert health["a"].healthy and not health["a"].stale  # recovered
        assert health["b"].stale  # the hung probe is still the one in flight

        health = await monitor.refresh(["a"])  # b left the cluster
        assert set(health) == {"a"}
        monitor.close()

    asyncio.run(rounds())


def test_metrics_per_node_and_gone_nodes_dropped(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(max_download_mb=512, min_free_disk_mb=0)
    probe = FakeProbe()
    monitor = HealthMonitor(settings, probe, timeout_s=0.2)
    metrics = BridgeMetrics()
    probe.answers = {"node-a": raw(0.5), "node-b": raw(10)}
    metrics.observe_health(asyncio.run(monitor.refresh(["node-a", "node-b"])).values())
    value = metrics.registry.get_sample_value
    assert value("vidbrief_bridge_node_healthy", {"node": "node-a"}) == 0
    assert value("vidbrief_bridge_node_healthy", {"node": "node-b"}) == 1
    assert value("vidbrief_bridge_node_disk_free_bytes", {"node": "node-b"}) == 10 * GIB
    metrics.observe_health([monitor.get("node-b")])  # type: ignore[list-item]
    assert value("vidbrief_bridge_node_healthy", {"node": "node-a"}) is None


# -- vidbrief status --cluster ---------------------------------------------------------------


HEARTBEAT = {
    "name": "bridge-1",
    "cluster": [
        {
            "node_id": "aaaaaaaaaaaaaaaa",
            "gpus": 2.0,
            "analysers": 2,
            "assigned": 3,
            "capacity": 5,
            "download_s": 6.04,
            "analysis_s": 2.5,
            "disk_free_bytes": 120 * GIB,
            "memory_available_bytes": 30 * GIB,
            "healthy": True,
            "reason": "",
            "stale": False,
        },
        {
            "node_id": "bbbbbbbbbbbbbbbb",
            "gpus": 1.0,
            "analysers": 1,
            "assigned": 0,
            "disk_free_bytes": 1 * GIB,
            "memory_available_bytes": 30 * GIB,
            "healthy": False,
            "reason": "disk free 1,024 MiB < 4,096 MiB",
            "stale": True,
        },
    ],
}


def test_cluster_view_renders_the_heartbeat() -> None:
    console = Console(record=True, width=200)
    beat = {**HEARTBEAT, "updated_at": time.time(), "heartbeat_seconds": 2}
    console.print(cluster_view(with_ages({"bridge-1": json.dumps(beat)}, 2.0)))
    text = console.export_text()
    lines = {line.split()[0]: line for line in text.splitlines() if line[:4] in (" aaa", " bbb")}
    assert set(lines) == {"aaaaaaaa", "bbbbbbbb"}
    assert "120G" in lines["aaaaaaaa"] and " ok" in lines["aaaaaaaa"]
    assert "3/5" in lines["aaaaaaaa"]  # jobs held / what its look-ahead allows
    assert "6.0/2.5" in lines["aaaaaaaa"]  # measured download / analysis seconds
    sick = lines["bbbbbbbb"]
    assert "no answer" in sick and "disk free 1,024 MiB < 4,096 MiB" in sick
    assert "bridge bridge-1 · heartbeat 0." in text


def test_status_cluster_command_reads_the_heartbeats(
    redis_client, names, make_settings, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from vidbrief.cli import app

    settings = make_settings()
    monkeypatch.setenv("VIDBRIEF_REDIS_URL", settings.redis_url.get_secret_value())
    runner = CliRunner()
    assert runner.invoke(app, ["status", "--cluster"]).exit_code == 1  # no bridge yet
    redis_client.hset(names.bridges, "bridge-1", json.dumps(HEARTBEAT))
    result = runner.invoke(app, ["status", "--cluster"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "bbbbbbbb" in result.output and "no answer" in result.output
    assert "STALE" in result.output  # no updated_at in that heartbeat: its age is unknown
    as_json = runner.invoke(app, ["status", "--cluster", "--json"])
    assert json.loads(as_json.output)["bridge-1"]["cluster"][1]["healthy"] is False
    assert runner.invoke(app, ["status"]).exit_code != 0  # neither a job nor --cluster


# -- a simulated cluster ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sick_cluster() -> Iterator[Any]:
    """A head (reports) and two GPU nodes; the second's disk threshold is above any disk."""
    import ray
    from ray.cluster_utils import Cluster

    from pipeline.chain import DOWNLOAD_SLOT, REPORT_NODE

    sim = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "resources": {REPORT_NODE: 1}}
    )
    healthy = sim.add_node(num_cpus=2, num_gpus=1, resources={DOWNLOAD_SLOT: 1})
    sick = sim.add_node(
        num_cpus=2, num_gpus=1, resources={DOWNLOAD_SLOT: 1, DISK_OVERRIDE_RESOURCE: HUGE_MB}
    )
    sim.wait_for_nodes()
    sim.connect()
    yield sim, healthy.node_id, sick.node_id
    ray.shutdown()
    sim.shutdown()  # stops the node processes it started, by PID


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_downloads_avoid_the_node_short_of_disk(
    sick_cluster: Any,
    make_settings: Callable[..., Settings],
    redis_server: Any,
    redis_client: Any,
    names: Any,
) -> None:
    from helpers import all_finished, states, video, wait_until, xadd_raw

    from raybridge import start_bridge

    _, healthy, sick = sick_cluster
    settings = make_settings(step_mode="synthetic", synthetic_seconds=STEPS_S, window=6)
    handle = start_bridge(settings, redis_server.url)
    try:
        beat = json.loads(redis_client.hget(names.bridges, settings.bridge_name))
        rows = {row["node_id"]: row for row in beat["cluster"]}
        assert rows[sick]["healthy"] is False and "disk free" in rows[sick]["reason"]
        assert rows[healthy]["healthy"] is True and rows[healthy]["disk_free_bytes"] > 0
        assert rows[sick]["analysers"] == 1  # it keeps its analyser: it just gets no download

        job_ids = [f"health-{n:02d}" for n in range(6)]
        for job_id in job_ids:
            xadd_raw(redis_client, names, video(job_id))
        wait_until("6 jobs finished", lambda: all_finished(redis_client, names, job_ids), 90)
        found = states(redis_client, names, job_ids)
        assert {s.steps["download"].node for s in found.values()} == {healthy}
    finally:
        with suppress(Exception):
            handle.stop(grace_s=0)
