"""The fleet with a fake launcher and no Redis: analysis actors per node, jobs waiting for a
node in read order, node health, dead analysers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from fake_launcher import FakeLauncher

from ingest.settings import Settings
from raybridge.health import MIB, HealthMonitor
from raybridge.metrics import BridgeMetrics
from raybridge.outcome import Failure, FailureKind
from raybridge.placement import NodeView
from raybridge.window import Phase, Slot, Window

TWO_GPUS = NodeView("a", gpus=2, download_slots=2)
ONE_GPU = NodeView("b", gpus=1, download_slots=1)


def fleet_of(
    settings: Settings,
    nodes: list[NodeView],
    window: int = 8,
    probe: Callable[[str], Any] | None = None,
) -> tuple[Any, FakeLauncher]:
    from raybridge.fleet import Fleet

    launcher = FakeLauncher(nodes=nodes)
    health = HealthMonitor(settings, probe, timeout_s=1) if probe else None
    return Fleet(settings, launcher, Window(window), BridgeMetrics(), health), launcher


def counts(analysers: Mapping[str, list[Any]]) -> dict[str, int]:
    return {node: len(handles) for node, handles in analysers.items() if handles}


def test_one_analyser_per_gpu_none_without_download_slots_and_none_on_dead_nodes(
    make_settings: Callable[..., Settings],
) -> None:
    no_slot = NodeView("c", gpus=1, download_slots=0)
    dead = NodeView("d", alive=False, gpus=1, download_slots=1)

    async def main() -> tuple[dict[str, int], dict[str, int]]:
        fleet, launcher = fleet_of(make_settings(), [TWO_GPUS, ONE_GPU, no_slot, dead])
        await fleet.refresh_nodes()
        await fleet.wait_warm()
        before = counts(fleet.analysers)
        launcher.node_views = [NodeView("a", alive=False, gpus=2, download_slots=2), ONE_GPU]
        await fleet.refresh_nodes()
        return before, counts(fleet.analysers)

    before, after = asyncio.run(main())
    assert before == {"a": 2, "b": 1}
    assert after == {"b": 1}  # a's actors died with it


def test_a_cluster_without_gpus_gets_cpu_analysers(make_settings: Callable[..., Settings]) -> None:
    cpu_only = [NodeView("a", download_slots=1), NodeView("b", download_slots=1)]

    async def main() -> dict[str, int]:
        fleet, _ = fleet_of(make_settings(cpu_analysers_per_node=2), cpu_only)
        await fleet.refresh_nodes()
        await fleet.wait_warm()
        return counts(fleet.analysers)

    assert asyncio.run(main()) == {"a": 2, "b": 2}


def test_jobs_take_nodes_in_read_order_as_download_slots_and_look_ahead_free(
    make_settings: Callable[..., Settings],
) -> None:
    async def main() -> list[tuple[str, ...]]:
        fleet, _ = fleet_of(make_settings(download_lookahead=1), [ONE_GPU])
        await fleet.refresh_nodes()
        await fleet.wait_warm()
        slots = [fleet.window.add(Slot(f"j{i}", f"{i}-0")) for i in range(3)]
        waits = [asyncio.create_task(fleet.acquire_node(s, None)) for s in slots]
        seen = []

        async def placed() -> tuple[str, ...]:
            await asyncio.sleep(0)
            return tuple(s.job_id for s, w in zip(slots, waits, strict=True) if w.done())

        seen.append(await placed())  # one download slot: one job downloads
        fleet.downloaded(slots[0], 1.0)
        seen.append(await placed())  # the slot is free: the next one downloads
        fleet.downloaded(slots[1], 2.0)
        seen.append(await placed())  # 1 analyser + look-ahead 1: the node is full
        fleet.analysed(slots[0], 3.0)
        seen.append(await placed())  # j0 left the node for brief and report
        return seen

    assert asyncio.run(main()) == [("j0",), ("j0", "j1"), ("j0", "j1"), ("j0", "j1", "j2")]


def test_an_unhealthy_node_gets_no_download_until_it_recovers(
    make_settings: Callable[..., Settings],
) -> None:
    disk = {"a": 1 * MIB, "b": 100_000 * MIB}

    async def probe(node_id: str) -> dict[str, float]:
        return {"disk_free_bytes": disk[node_id], "memory_available_bytes": 100_000 * MIB}

    async def main() -> list[str]:
        fleet, _ = fleet_of(make_settings(), [TWO_GPUS, ONE_GPU], probe=probe)
        await fleet.refresh_nodes()
        await fleet.wait_warm()
        await fleet.refresh_health()
        first = await fleet.acquire_node(fleet.window.add(Slot("j1", "1-0")), None)
        disk["a"] = 100_000 * MIB
        await fleet.refresh_health()
        second = await fleet.acquire_node(fleet.window.add(Slot("j2", "2-0")), None)
        rows = {r["node_id"]: r for r in fleet.stats()["cluster"]}
        assert rows["a"]["healthy"] and rows["b"]["assigned"] == 1
        fleet.close()
        return [first, second]

    # a would start a job sooner (2 GPUs) but is short of disk; once it recovers it is first
    assert asyncio.run(main()) == ["b", "a"]


def test_a_dead_analyser_is_stopped_and_forgotten_a_failed_step_is_not(
    make_settings: Callable[..., Settings],
) -> None:
    async def main() -> tuple[int, int, list[Any]]:
        fleet, launcher = fleet_of(make_settings(), [ONE_GPU])
        await fleet.refresh_nodes()
        await fleet.wait_warm()
        [handle] = fleet.analysers["b"]
        step_failed = Failure(FailureKind.RETRYABLE, "analyse", "RetryableStepError", "x")
        fleet.drop_analyser(handle, step_failed)
        kept = len(fleet.analysers["b"])
        died = Failure(FailureKind.NODE_LOST, "analyse", "ActorDiedError", "the actor died")
        fleet.drop_analyser(handle, died)
        return kept, len(fleet.analysers["b"]), launcher.stopped

    kept, left, stopped = asyncio.run(main())
    assert (kept, left) == (1, 0) and len(stopped) == 1


def test_leaving_a_node_frees_it_only_once(make_settings: Callable[..., Settings]) -> None:
    async def main() -> tuple[dict[str, int], dict[str, int]]:
        fleet, _ = fleet_of(make_settings(), [ONE_GPU])
        await fleet.refresh_nodes()
        await fleet.wait_warm()
        slot = fleet.window.add(Slot("j", "1-0"))
        await fleet.acquire_node(slot, None)
        held = dict(fleet.window.assigned_per_node())
        fleet.leave_node(slot, Phase.FINISHING)
        fleet.leave_node(slot, Phase.FINISHING)  # the job coroutine's clean-up, again
        return held, dict(fleet.window.assigned_per_node())

    assert asyncio.run(main()) == ({"b": 1}, {})


def test_a_node_that_stops_answering_gets_no_download_within_one_probe_interval(
    make_settings: Callable[..., Settings],
) -> None:
    """A killed raylet answers no probe; Ray calls the node dead only after about 15 s. The
    bridge stops sending it downloads once its last answer is a probe interval old, while a
    node that keeps answering never goes stale, however long the silent one's probe hangs."""
    interval_s = 0.4
    silent: set[str] = set()

    async def probe(node_id: str) -> dict[str, float]:
        if node_id in silent:
            await asyncio.Event().wait()  # never answers
        return {"disk_free_bytes": 100_000 * MIB, "memory_available_bytes": 100_000 * MIB}

    async def main() -> tuple[str, list[str], float, bool]:
        settings = make_settings(health_probe_seconds=interval_s)
        fleet, _ = fleet_of(settings, [TWO_GPUS, ONE_GPU], probe=probe)
        fleet.health.wait_s = interval_s / 4  # as built by the bridge (the fixture passes 1 s)
        await fleet.refresh_nodes()
        await fleet.wait_warm()
        await fleet.refresh_health()

        async def rounds() -> None:
            while True:
                await asyncio.sleep(fleet.health_round_s)
                await fleet.refresh_health()

        loop = asyncio.create_task(rounds())
        before = await fleet.acquire_node(fleet.window.add(Slot("j0", "0-0")), None)
        fleet.leave_node(fleet.window.get("j0"), Phase.FINISHING)
        silent.add("a")
        killed_at = asyncio.get_running_loop().time()
        b_stale = False
        while not fleet.health.stale("a"):
            b_stale |= fleet.health.stale("b")
            await asyncio.sleep(0.01)
        noticed_s = asyncio.get_running_loop().time() - killed_at
        placed = []
        for i in range(1, 4):  # a has two GPUs: it would win every one of these
            slot = fleet.window.add(Slot(f"j{i}", f"{i}-0"))
            placed.append(await asyncio.wait_for(fleet.acquire_node(slot, None), 5))
            fleet.downloaded(slot, float(i))
            fleet.analysed(slot, float(i))  # b is free again for the next one
        for _ in range(int(3 * interval_s / 0.01)):  # a while longer: b stays fresh
            b_stale |= fleet.health.stale("b")
            await asyncio.sleep(0.01)
        loop.cancel()
        fleet.close()
        return before, placed, noticed_s, b_stale

    before, placed, noticed_s, b_stale = asyncio.run(main())
    assert before == "a"
    assert noticed_s <= interval_s + 0.1  # within one probe interval (+ the 10 ms polling)
    assert placed == ["b", "b", "b"]
    assert not b_stale


def test_a_downloaded_video_goes_to_the_first_analyser_of_its_node_to_be_free(
    make_settings: Callable[..., Settings],
) -> None:
    """Bound when its download ends, not when it began: a job never waits behind one GPU's
    long analysis while the node's other GPU is free; waiting jobs go in download order."""

    async def main() -> list[Any]:
        fleet, _ = fleet_of(make_settings(), [TWO_GPUS])
        await fleet.refresh_nodes()
        await fleet.wait_warm()
        jobs = []
        for name in ("long", "short", "next", "last"):
            slot = fleet.window.add(Slot(name, f"{name}-0"))
            fleet.window.assign(name, "a")
            fleet.window.advance(name, Phase.ANALYSING)
            jobs.append(slot)
        long, short, after, last = jobs
        given = [await fleet.acquire_analyser(long), await fleet.acquire_analyser(short)]
        waiting = [asyncio.create_task(fleet.acquire_analyser(s)) for s in (after, last)]
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in waiting)  # both GPUs busy
        fleet.analysis_ended(short)  # the short one ends; "long" runs on
        given.append(await waiting[0])
        assert not waiting[1].done()
        fleet.leave_node(long, Phase.FINISHING)  # any way out of the node frees its analyser
        given.append(await waiting[1])
        return given

    long_gpu, short_gpu, next_gpu, last_gpu = asyncio.run(main())
    assert long_gpu is not short_gpu
    assert next_gpu is short_gpu  # not queued behind "long"
    assert last_gpu is long_gpu


def test_a_job_waiting_for_a_busy_node_is_taken_over_by_an_idle_one(
    make_settings: Callable[..., Settings],
) -> None:
    """Tail work stealing: nothing waits for a node, node b's GPU is idle, and a job
    downloaded on node a waits there behind a long analysis: b takes it over."""

    async def main() -> tuple[Any, str | None, Any]:
        fleet, _ = fleet_of(make_settings(), [ONE_GPU, NodeView("a", gpus=1, download_slots=1)])
        await fleet.refresh_nodes()
        await fleet.wait_warm()
        for node in ("a", "b"):
            fleet.pace.downloaded(node, 0.0, 0.5)
        running, queued = Slot("running", "r-0"), Slot("queued", "q-0")
        for slot, expected in ((running, 20.0), (queued, 2.0)):
            fleet.window.add(slot)
            fleet.window.assign(slot.job_id, "a")
            fleet.window.advance(slot.job_id, Phase.ANALYSING)
            slot.media_s, slot.downloaded_at = expected, 0.0
        first = await fleet.acquire_analyser(running)
        waited = await fleet.acquire_analyser(queued)  # waits behind 20 s: b takes it over
        return first, queued.steal_to, waited

    first, stolen_by, waited = asyncio.run(main())
    assert first is not None
    assert stolen_by == "b" and waited is None


def test_a_job_waiting_for_an_analyser_of_a_node_that_dies_is_told_so(
    make_settings: Callable[..., Settings],
) -> None:
    """Its acquire_analyser returns None without a taker: the job's coroutine then fails the
    attempt as a lost node and downloads the video again elsewhere (job.py)."""

    async def main() -> tuple[Any, Any, str | None]:
        fleet, launcher = fleet_of(make_settings(), [ONE_GPU])
        await fleet.refresh_nodes()
        await fleet.wait_warm()
        running, queued = Slot("running", "r-0"), Slot("queued", "q-0")
        for slot in (running, queued):
            fleet.window.add(slot)
            fleet.window.assign(slot.job_id, "b")
            fleet.window.advance(slot.job_id, Phase.ANALYSING)
        first = await fleet.acquire_analyser(running)
        waiting = asyncio.create_task(fleet.acquire_analyser(queued))
        await asyncio.sleep(0.01)
        launcher.node_views = [NodeView("b", alive=False, gpus=1, download_slots=1)]
        await fleet.refresh_nodes()
        return first, await asyncio.wait_for(waiting, 1.0), queued.steal_to

    first, waited, stolen_by = asyncio.run(main())
    assert first is not None
    assert waited is None and stolen_by is None


def test_of_the_analysers_free_in_its_view_a_bridge_takes_the_one_its_job_left_last(
    make_settings: Callable[..., Settings],
) -> None:
    """The actors are shared by every bridge: one this bridge has not used lately may be
    running another bridge's job; the one its own analysis just left is surely idle."""

    async def main() -> tuple[Any, Any, Any]:
        fleet, _ = fleet_of(make_settings(), [TWO_GPUS])
        await fleet.refresh_nodes()
        await fleet.wait_warm()
        jobs = []
        for name in ("first", "second", "third"):
            slot = fleet.window.add(Slot(name, f"{name}-0"))
            fleet.window.assign(name, "a")
            fleet.window.advance(name, Phase.ANALYSING)
            jobs.append(slot)
        first, second, third = jobs
        gpu_first = await fleet.acquire_analyser(first)
        gpu_second = await fleet.acquire_analyser(second)
        fleet.analysis_ended(first)
        await asyncio.sleep(0.01)
        fleet.analysis_ended(second)  # both free now; "second"'s was left last
        return gpu_first, gpu_second, await fleet.acquire_analyser(third)

    gpu_first, gpu_second, gpu_third = asyncio.run(main())
    assert gpu_first is not gpu_second
    assert gpu_third is gpu_second
