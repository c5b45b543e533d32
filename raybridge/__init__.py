"""The consumer side: the Redis stream in, Ray chains out, outcomes back to Redis.

    stream.py          read, reclaim, ack, dead-letter, publish outcomes (redis.asyncio)
    window.py          the in-flight window and the backpressure policy (pure)
    placement.py       which node downloads (and so analyses) a job (pure)
    launcher.py        the chains, the analysis actors, the bridge actor (the only .remote())
    analysis_actor.py  one warm analysis actor per GPU
    steps.py           the wrapper that records each step's start, end and node
    actor.py           Bridge: the async loop
    metrics.py         Prometheus metrics
    run.py             run_bridge (``vidbrief bridge``), start_bridge (tests, benchmarks)

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
    "Launcher": "raybridge.launcher",
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
