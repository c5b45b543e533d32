"""``vidbrief bench bridges``: one, two and three bridges on one simulated cluster; one killed.

The three-node topology of ``bench schedule`` (2 + 1 GPUs, 2 + 1 download slots), the mix
workload (48 jobs by default). For each number of bridges: start them (each with the window of
one), XADD the jobs at once, wait for every outcome, and check from the job hashes and events:

- each job completed exactly once (one ``job.completed`` event each, every entry acknowledged);
- never more analyses running on a node than its GPUs, never more downloads than its download
  slots (the most step spans open at once per node, ``step:<name>:started|ended|node``);
- efficiency (the lower bound ÷ the makespan), beside one bridge's.

Then the kill: three bridges, and once every bridge holds jobs part-way, one bridge's process
gets SIGKILL. Its jobs must finish on the others; the figure is the time from the kill to the
first step that one of its jobs starts again elsewhere (``vidbrief.step.started``).
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from ingest.events import EventType, parse_event
from ingest.names import ANALYSE_STEP, DOWNLOAD_STEP, EVENT_FIELD, RedisNames
from ingest.settings import Settings
from vidbrief.bench.bounds import Run, Span, efficiency, lower_bound, median
from vidbrief.bench.targets import Target
from vidbrief.bench.workloads import THREE_NODES, Topology, Workload, workloads

log = logging.getLogger(__name__)

BRIDGE_COUNTS = (1, 2, 3)
#: Efficiency of several bridges may fall at most this far below one bridge's.
EFFICIENCY_GAP = 0.03
#: The first step of a killed bridge's jobs must start again elsewhere within this.
RESUME_TARGET_S = 10.0
POLL_S = 0.05


def max_open(spans: list[Span]) -> int:
    """Most spans open at one moment (one ending as another starts: not both open)."""
    edges = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans])
    most = now = 0
    for _, delta in edges:
        now += delta
        most = max(most, now)
    return most


def most_per_node(spans: list[Span], step: str) -> dict[str, int]:
    nodes = {s.node for s in spans if s.step == step}
    return {n: max_open([s for s in spans if s.step == step and s.node == n]) for n in nodes}


def oversubscribed(run: Run, topology: Topology, names: dict[str, str]) -> list[str]:
    """Nodes where more analyses ran at once than GPUs, or more downloads than slots."""
    limits = {n.name: (n.gpus, n.download_slots) for n in topology.nodes}
    found = []
    for step, index in ((ANALYSE_STEP, 0), (DOWNLOAD_STEP, 1)):
        for node, most in most_per_node(run.spans, step).items():
            if most > limits[names.get(node, node)][index]:
                found.append(f"{step} on {names.get(node, node)}: {most} at once")
    return found


def start_bridges(settings: Settings, redis_url: str, n: int) -> list[Any]:
    from raybridge import start_bridge

    return [
        start_bridge(settings.model_copy(update={"bridge_name": f"bench-{i + 1}"}), redis_url)
        for i in range(n)
    ]


def completions(client: redis.Redis, names: RedisNames) -> dict[str, int]:
    out: dict[str, int] = {}
    for sid, fields in client.xrange(names.events):
        event = parse_event(fields[EVENT_FIELD], sid)
        if event.type == EventType.COMPLETED:
            out[event.job_id] = out.get(event.job_id, 0) + 1
    return out


def run_n(
    settings: Settings, redis_url: str, workload: Workload, n: int, bound: float
) -> tuple[Run, bool]:
    """``n`` bridges on the jobs; the run and whether each job completed exactly once."""
    from vidbrief.bench.cluster import wait_for_gpus_free
    from vidbrief.bench.ours import read_states, spans_of, wait_done, xadd_jobs

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    handles = start_bridges(settings, redis_url, n)
    job_ids = workload.job_ids()
    try:
        t0 = xadd_jobs(client, settings.names, job_ids)
        wait_done(client, settings.names, job_ids, max(120.0, 5 * bound))
    finally:
        for handle in reversed(handles):
            handle.stop(grace_s=0)
        wait_for_gpus_free()
    states = read_states(client, settings.names, job_ids)
    done = {s.job_id: float(s.finished_at or 0) for s in states}
    spans = [x for s in states for x in spans_of(s)]
    once = completions(client, settings.names) == dict.fromkeys(job_ids, 1)
    return Run(f"{n} bridges", t0, max(done.values()), spans, done), once


def run_kill(
    settings: Settings, redis_url: str, workload: Workload, bound: float
) -> dict[str, Any]:
    """Three bridges; SIGKILL one once all hold jobs; time until its jobs go on elsewhere."""
    import ray

    from vidbrief.bench.cluster import wait_for_gpus_free
    from vidbrief.bench.ours import wait_done, xadd_jobs

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    names = settings.names
    handles = start_bridges(settings, redis_url, 3)
    job_ids = workload.job_ids()
    victim = handles[0]
    try:
        xadd_jobs(client, names, job_ids)
        held = _wait_holding(victim)
        pid = victim.stats()["pid"]
        ours = [s["job_id"] for s in held]
        t_kill = time.time()
        os.kill(pid, signal.SIGKILL)
        attempts = {j: int(client.hget(names.job(j), "attempts") or 0) for j in ours}
        log.info("killed bridge %s (pid %d) holding %d jobs", "bench-1", pid, len(ours))
        wait_done(client, names, job_ids, max(180.0, 6 * bound))
    finally:
        for handle in handles[1:]:
            handle.stop(grace_s=0)
        ray.kill(victim.actor, no_restart=True)
        wait_for_gpus_free()
    resumed = _first_step_after(client, names, attempts, t_kill)
    return {
        "killed_jobs": len(ours),
        "completed_once": completions(client, names) == dict.fromkeys(job_ids, 1),
        "first_resumed_step_s": resumed - t_kill if resumed else float("nan"),
    }


def _wait_holding(handle: Any, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Until the bridge holds a job whose download ended (part-way through its chain)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = handle.stats()["jobs"]
        if any(j["downloaded"] for j in jobs):
            return jobs
        time.sleep(POLL_S)
    raise TimeoutError("the bridge to kill got no job")


def _first_step_after(
    client: redis.Redis, names: RedisNames, attempts: dict[str, int], t: float
) -> float:
    """When the first step of a new attempt of one of ``attempts``' jobs started (a step of
    the killed bridge's own attempt may still end on a shared analyser: not a resumed one)."""
    for sid, fields in client.xrange(names.events, min=f"{int(t * 1000)}-0"):
        event = parse_event(fields[EVENT_FIELD], sid)
        if event.type != EventType.STEP_STARTED or event.job_id not in attempts:
            continue
        if int(event.data.get("attempt", 0)) > attempts[event.job_id]:
            return int(sid.split("-")[0]) / 1000
    return 0.0


def run_bridges_bench(jobs: int, scale: float, window: int, repeat: int) -> dict[str, Any]:
    from vidbrief.bench.cluster import private_redis, simulated_cluster
    from vidbrief.bench.ours import bench_settings

    workload = next(w for w in workloads(jobs, scale) if w.name == "mix")
    bound = lower_bound(list(workload.durations().values()), THREE_NODES.servers())
    rows: dict[int, list[tuple[Run, bool]]] = {n: [] for n in BRIDGE_COUNTS}
    with (
        private_redis() as server,
        tempfile.TemporaryDirectory(prefix="vidbrief-bench-") as tmp,
        simulated_cluster(THREE_NODES) as sim,
    ):
        for r in range(repeat):
            for n in BRIDGE_COUNTS:
                settings = bench_settings(
                    server.url,
                    Path(tmp) / f"{n}-{r}",
                    window=window,
                    **workload.settings_fields(),
                )
                run, once = run_n(settings, server.url, workload, n, bound)
                log.info("%d bridges: %.2f s (bound %.2f s)", n, run.makespan_s, bound)
                rows[n].append((run, once))
        settings = bench_settings(
            server.url, Path(tmp) / "kill", window=window, **workload.settings_fields()
        )
        kill = run_kill(settings, server.url, workload, bound)
        fair = bench_settings(
            server.url,
            Path(tmp) / "fair",
            window=window,
            step_mode="synthetic",
            synthetic_seconds=FAIR_STEPS_S,
        )
        kill["fairness"] = run_fairness(fair, server.url)
        names = sim.names
    return _document(workload, bound, rows, kill, names, window)


def _document(
    workload: Workload,
    bound: float,
    rows: dict[int, list[tuple[Run, bool]]],
    kill: dict[str, Any],
    names: dict[str, str],
    window: int,
) -> dict[str, Any]:
    out = []
    for n, pairs in rows.items():
        runs = [r for r, _ in pairs]
        out.append(
            {
                "bridges": n,
                "makespan_s": median([r.makespan_s for r in runs]),
                "efficiency": median([efficiency(bound, r.makespan_s) for r in runs]),
                "exactly_once": all(once for _, once in pairs),
                "oversubscribed": [o for r in runs for o in oversubscribed(r, THREE_NODES, names)],
                "most_analyses": most_per_node(runs[-1].spans, ANALYSE_STEP),
                "most_downloads": most_per_node(runs[-1].spans, DOWNLOAD_STEP),
            }
        )
    one = out[0]["efficiency"]
    targets = [
        Target(f"efficiency {r['bridges']} bridges vs one", r["efficiency"], one - EFFICIENCY_GAP)
        for r in out[1:]
    ] + [
        Target(
            "first resumed step after a kill s",
            kill["first_resumed_step_s"],
            RESUME_TARGET_S,
            at_most=True,
        )
    ]
    fair = kill.get("fairness")
    if fair:
        targets += [
            Target(
                f"A's jobs completed before B's last (of {FLOOD})",
                fair["a_completed_before_bs_last"],
                FAIR_BEFORE_A,
                at_most=True,
            ),
            Target(
                "jobs started between a high job's XADD and its start",
                fair["urgent_started_after"],
                fair["window"],
                at_most=True,
            ),
        ]
    return {
        "bench": "bridges",
        "jobs": workload.jobs,
        "scale": workload.scale,
        "window": window,
        "bound_s": bound,
        "rows": out,
        "kill": kill,
        "node_names": names,
        "targets": [t.as_dict() for t in targets],
    }


# -- fairness and priority ----------------------------------------------------------------------

#: Short synthetic steps for the fairness runs (what counts is the order, not the durations).
FAIR_STEPS_S = {DOWNLOAD_STEP: 0.05, ANALYSE_STEP: 0.15, "brief": 0.02, "report": 0.01}
FLOOD, FEW, BACKLOG = 300, 10, 200
#: B's 10 jobs must all complete before A's 60th: at most 59 of A's before B's last.
FAIR_BEFORE_A = 59


def _xadd(client: redis.Redis, names: RedisNames, jobs: list[tuple[str, str, str]]) -> None:
    import json

    from ingest.names import JOB_FIELD

    pipe = client.pipeline(transaction=False)
    for job_id, producer, priority in jobs:
        doc = {"url": f"https://videos.example.com/{job_id}.mp4", "job_id": job_id}
        doc |= {"producer": producer, "priority": priority}
        pipe.xadd(names.jobs, {JOB_FIELD: json.dumps(doc)})
    pipe.execute()


def _order(client: redis.Redis, names: RedisNames, type_: EventType) -> list[str]:
    out = []
    for sid, fields in client.xrange(names.events):
        event = parse_event(fields[EVENT_FIELD], sid)
        if event.type == type_:
            out.append(event.job_id)
    return out


def run_fairness(settings: Settings, redis_url: str) -> dict[str, Any]:
    """A floods 300 jobs, then B sends 10; then 200 normal jobs and one high behind them."""
    from vidbrief.bench.ours import wait_done

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    names = settings.names
    (handle,) = start_bridges(settings, redis_url, 1)
    try:
        a = [(f"a-{n:03d}", "A", "normal") for n in range(FLOOD)]
        b = [(f"b-{n:03d}", "B", "normal") for n in range(FEW)]
        _xadd(client, names, a)
        _xadd(client, names, b)
        wait_done(client, names, [j for j, _, _ in a + b], 600)
        done = _order(client, names, EventType.COMPLETED)
        a_done = [j for j in done if j.startswith("a-")]
        last_b = max(done.index(j) for j, _, _ in b)
        a_before = sum(1 for j in done[:last_b] if j.startswith("a-"))
        client.delete(names.events)
        backlog = [(f"n-{n:03d}", "A", "normal") for n in range(BACKLOG)]
        _xadd(client, names, backlog)
        time.sleep(1.0)  # the backlog is being worked on
        started_before = len(_order(client, names, EventType.ACCEPTED))
        _xadd(client, names, [("urgent", "C", "high")])
        wait_done(client, names, [j for j, _, _ in backlog] + ["urgent"], 600)
        accepted = _order(client, names, EventType.ACCEPTED)
    finally:
        handle.stop(grace_s=0)
    return {
        "a_completed_before_bs_last": a_before,
        "a_total": len(a_done),
        "urgent_started_after": accepted.index("urgent") - started_before,
        "window": settings.window,
    }
