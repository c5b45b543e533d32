"""The consumer side: the Redis stream in, Ray chains out, outcomes back to Redis.

    actor.py           Bridge: the read loop, start and drain, cancel, heartbeat (no Ray)
    admission.py       what an entry becomes: a job, a dead letter, an acknowledgement
    job.py             one job's coroutine: place, launch, follow, retry, outcome
    fleet.py           nodes, analysis actors, health rounds, which job downloads where
    finish.py          storing an outcome (hash + event + XACK) and announcing it
    stream.py          Redis I/O: read, ack, dead-letter, job hashes (redis.asyncio)
    fairness.py        which waiting entry comes next: priorities, producers in turn (Lua)
    leases.py          bridge leases; the entries of a bridge without one are claimed
    window.py          the in-flight window and the backpressure policy (pure)
    placement.py       which node downloads (and so analyses) a job (pure)
    analysers.py       which of its node's analysis actors a downloaded job goes to
    pace.py            per-node download and analysis times, and the look-ahead (pure)
    health.py          node health: thresholds, verdicts, the probe's measurement
    outcome.py         how an attempt failed and how a job ended (data)
    failures.py        Ray's and the steps' errors, classified
    protocols.py       Launcher: what the bridge needs from Ray
    launcher.py        RayLauncher: the chains, the analysis actors, the health probe (Ray)
    analysis_actor.py  one warm analysis actor per GPU
    steps.py           the wrapper that records each step's start, end and node
    announce.py        after an outcome: the webhook and the dataset row
    metrics.py         Prometheus metrics
    run.py             the edge: RayBridge, run_bridge (``vidbrief bridge``), start_bridge

Importing ``raybridge`` does not import Ray: the Ray-facing names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from raybridge.placement import ClusterSnapshot, NodeView, choose_node
from raybridge.window import BackpressurePolicy, Phase, Slot, Window, WindowRoom

_LAZY = {
    "Bridge": "raybridge.actor",
    "BridgeHandle": "raybridge.run",
    "BridgeMetrics": "raybridge.metrics",
    "JobStream": "raybridge.stream",
    "Launcher": "raybridge.protocols",
    "RayLauncher": "raybridge.launcher",
    "Progress": "raybridge.steps",
    "connect_ray": "raybridge.run",
    "run_bridge": "raybridge.run",
    "start_bridge": "raybridge.run",
}

__all__ = [
    "BackpressurePolicy",
    "Bridge",
    "BridgeHandle",
    "BridgeMetrics",
    "ClusterSnapshot",
    "JobStream",
    "Launcher",
    "NodeView",
    "Phase",
    "Progress",
    "RayLauncher",
    "Slot",
    "Window",
    "WindowRoom",
    "choose_node",
    "connect_ray",
    "run_bridge",
    "start_bridge",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raybridge' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
