"""``vidbrief bench schedule``: flow-shop efficiency of our bridge beside the seed design.

For each topology (a simulated cluster of its own) and workload: the lower bound from the
durations, then ours (the bridge end to end through Redis), the seed article's design, and on
one node a thread pool and asyncio in one process; each measured ``repeat`` times, medians
reported, the last repeat drawn as a Gantt chart.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.names import ANALYSE_STEP, DOWNLOAD_STEP
from vidbrief.bench.bounds import (
    GPU_STEP,
    Run,
    efficiency,
    gpu_duty,
    gpu_gaps,
    handoffs,
    list_schedule,
    lower_bound,
    median,
)
from vidbrief.bench.targets import Target
from vidbrief.bench.workloads import TOPOLOGIES, Topology, Workload, workloads

log = logging.getLogger(__name__)

#: Efficiency targets by topology, and the GPU duty target while backlogged.
EFFICIENCY_TARGET = {"one-node": 0.98, "three-nodes": 0.97}
GPU_DUTY_TARGET = 0.95
DEFAULT_WINDOW = 8


@dataclass(frozen=True)
class ScheduleOptions:
    jobs: int = 24
    scale: float = 1.0
    window: int = DEFAULT_WINDOW
    repeat: int = 1
    topologies: tuple[str, ...] = tuple(TOPOLOGIES)
    workloads: tuple[str, ...] = ("seed-example", "mix")
    gantt_dir: Path | None = None
    local: bool = True
    #: Worker processes warmed per node before timing (None: one per logical CPU).
    warm_per_node: int | None = None
    #: Also the Celery peer (celerypeer.py).
    celery: bool = True


def run_schedule(options: ScheduleOptions) -> dict[str, Any]:
    """Every selected topology × workload; returns the JSON document."""
    from vidbrief.bench.cluster import private_redis, simulated_cluster

    rows: list[dict[str, Any]] = []
    chosen = [w for w in workloads(options.jobs, options.scale) if w.name in options.workloads]
    with private_redis() as server, tempfile.TemporaryDirectory(prefix="vidbrief-bench-") as tmp:
        for name in options.topologies:
            with simulated_cluster(TOPOLOGIES[name], options.warm_per_node) as sim:
                for workload in chosen:
                    log.info("schedule: %s, %s", name, workload.name)
                    rows.append(_bench_one(sim, workload, server.url, Path(tmp), options))
    return {
        "bench": "schedule",
        "window": options.window,
        "scale": options.scale,
        "repeat": options.repeat,
        "topologies": rows,
        "targets": [t for row in rows for t in row["targets"]],
    }


def _bench_one(
    sim: Any, workload: Workload, redis_url: str, tmp: Path, options: ScheduleOptions
) -> dict[str, Any]:
    topology: Topology = sim.topology
    durations = workload.durations()
    bound = lower_bound(list(durations.values()), topology.servers())
    reference = list_schedule(list(durations.values()), topology.servers())
    runs: list[dict[str, Run]] = [
        _designs(
            sim,
            workload,
            durations,
            redis_url,
            tmp / f"{topology.name}-{workload.name}-{r}",
            bound,
            options,
        )
        for r in range(options.repeat)
    ]
    row = _row(topology, workload, bound, runs, sim.names, options.window)
    row["list_schedule_s"] = round(reference, 3)
    row["list_efficiency"] = reference / row["makespan_s"]
    if options.gantt_dir is not None:
        row["gantt"] = str(_gantt(sim, workload, runs[-1], options.gantt_dir))
    return row


def _designs(
    sim: Any,
    workload: Workload,
    durations: dict[str, Any],
    redis_url: str,
    workdir: Path,
    bound: float,
    options: ScheduleOptions,
) -> dict[str, Run]:
    from vidbrief.bench.cluster import wait_for_gpus_free
    from vidbrief.bench.local import run_asyncio, run_threadpool
    from vidbrief.bench.ours import bench_settings, run_ours
    from vidbrief.bench.seed import run_seed

    settings = bench_settings(
        redis_url, workdir, window=options.window, **workload.settings_fields()
    )
    runs = {"ours": run_ours(settings, redis_url, workload.job_ids(), bound)}
    wait_for_gpus_free()
    runs["seed"] = run_seed(durations)
    if options.celery:
        from vidbrief.bench.celerypeer import run_celery

        runs["celery"] = run_celery(sim.topology, durations, redis_url)
    if options.local and len(sim.topology.nodes) == 1:
        servers = sim.topology.servers()
        runs["threadpool"] = run_threadpool(durations, servers, options.window)
        runs["asyncio"] = run_asyncio(durations, servers, options.window)
    for design, run in runs.items():
        log.info("  %s: makespan %.2f s (bound %.2f s)", design, run.makespan_s, bound)
    return runs


# -- figures of a run -----------------------------------------------------------------------


def _measures(run: Run, bound: float, gpus: int, window: int) -> dict[str, float]:
    duty = gpu_duty(run.step_spans(GPU_STEP), gpus, list(run.completions.values()), window)
    return {
        "makespan_s": run.makespan_s,
        "efficiency": efficiency(bound, run.makespan_s),
        "gpu_duty": duty,
    }


def _pinned(run: Run) -> bool:
    """Every analysis ran on the node that downloaded its video."""
    nodes = {(s.job, s.step): s.node for s in run.spans}
    return all(
        nodes.get((job, ANALYSE_STEP)) == node
        for (job, step), node in nodes.items()
        if step == DOWNLOAD_STEP
    )


def _analyses_per_node(run: Run, names: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for span in run.step_spans(GPU_STEP):
        name = names.get(span.node, span.node)
        out[name] = out.get(name, 0) + 1
    return out


#: Designs and their prefix in the row ("" for ours: the row's plain keys are ours).
PREFIX = {
    "ours": "",
    "seed": "seed_",
    "threadpool": "threadpool_",
    "asyncio": "asyncio_",
    "celery": "celery_",
}


def _row(
    topology: Topology,
    workload: Workload,
    bound: float,
    runs: list[dict[str, Run]],
    names: dict[str, str],
    window: int,
) -> dict[str, Any]:
    per_repeat = [
        {design: _measures(run, bound, topology.gpus, window) for design, run in repeat.items()}
        for repeat in runs
    ]
    row: dict[str, Any] = {
        "name": topology.name,
        "workload": workload.name,
        "jobs": workload.jobs,
        "window": window,
        "bound_s": round(bound, 3),
        **_medians(per_repeat),
        **_where_it_went(runs, names),
        "repeats": per_repeat,
    }
    row["targets"] = [t.as_dict() for t in _targets(row)]
    return row


def _medians(per_repeat: list[dict[str, dict[str, float]]]) -> dict[str, float]:
    """``efficiency``, ``seed_efficiency``, ``threadpool_makespan_s``…: medians over repeats."""
    keys = ("efficiency", "makespan_s", "gpu_duty")
    return {
        f"{PREFIX[design]}{key}": median([r[design][key] for r in per_repeat])
        for design in per_repeat[0]
        for key in keys
        if not (key == "gpu_duty" and design in ("threadpool", "asyncio", "celery"))
    }


def _where_it_went(runs: list[dict[str, Run]], names: dict[str, str]) -> dict[str, Any]:
    """Pinning over all repeats; placement and hand-over delays of the last repeat."""
    last = runs[-1]
    return {
        "pinned": all(all(_pinned(run) for run in r.values()) for r in runs),
        "analyses_per_node": _analyses_per_node(last["ours"], names),
        "seed_analyses_per_node": _analyses_per_node(last["seed"], names),
        "handoffs": _handoffs(last["ours"]),
        "seed_handoffs": _handoffs(last["seed"]),
    }


def _handoffs(run: Run) -> dict[str, float]:
    """Where the last repeat lost time: median hand-over delays, and all GPU gaps summed."""
    return {**handoffs(run), "gpu_gap_total_s": sum(gpu_gaps(run))}


def _targets(row: dict[str, Any]) -> list[Target]:
    where = f"{row['name']}/{row['workload']}"
    goal = EFFICIENCY_TARGET.get(row["name"], EFFICIENCY_TARGET["three-nodes"])
    return [
        Target(f"efficiency {where}", row["efficiency"], goal),
        Target(
            f"efficiency above seed {where}", row["efficiency"], row["seed_efficiency"], strict=True
        ),
        Target(f"GPU duty while backlogged {where}", row["gpu_duty"], GPU_DUTY_TARGET),
    ]


def _gantt(sim: Any, workload: Workload, runs: dict[str, Run], folder: Path) -> Path:
    from vidbrief.bench.gantt import draw

    path = folder / f"bench-schedule-{sim.topology.name}-{workload.name}.png"
    title = (
        f"{sim.topology.name}, {workload.name} workload, {workload.jobs} jobs "
        f"(scale {workload.scale:g})"
    )
    panels = [
        (label, runs[d])
        for d, label in (("ours", "ours (bridge)"), ("seed", "seed article design"))
        if d in runs
    ]
    order = [n.name for n in sim.topology.nodes]
    return draw(panels, sim.names, order, title, path)
