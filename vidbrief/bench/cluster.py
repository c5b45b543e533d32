"""A private simulated Ray cluster and a private redis-server for one benchmark.

Both are started here and stopped here: the cluster with ``Cluster.shutdown`` (it stops the
node processes it started, by PID), Redis by its PID. The driver connects with
``ray.init(address=<this cluster>)`` only, never to a cluster found on the machine.

``Cluster`` writes its address to ``/tmp/ray/ray_current_cluster``, where any other process's
``ray.init()`` without an address would find it and attach (or fail, when it passes
``num_cpus``). Other engineers run Ray tests on this machine at the same time, so the file is
put back as it was as soon as the cluster is up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidbrief.bench.workloads import Topology

log = logging.getLogger(__name__)

#: Seconds every warm-up task sleeps, so that the node starts several workers side by side.
WARM_TASK_S = 0.5
#: Ray settings that keep a local benchmark cluster light and on loopback.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}


@dataclass
class SimCluster:
    """A running simulated cluster: node names by Ray node id, and the ids by name."""

    cluster: Any
    topology: Topology
    names: dict[str, str]

    def node_id(self, name: str) -> str:
        return next(node_id for node_id, n in self.names.items() if n == name)


def _quiet_ray_env() -> None:
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def simulated_cluster(topology: Topology, warm_per_node: int | None = None) -> Iterator[SimCluster]:
    """Start the topology's nodes, connect this driver to them, warm their workers; stop all.

    ``warm_per_node``: worker processes to warm per node (default: one per logical CPU).
    """
    _quiet_ray_env()
    import ray
    from ray.cluster_utils import Cluster

    head, *others = topology.nodes
    before = _address_file_text()
    cluster = Cluster(
        initialize_head=True, head_node_args={**head.ray_args(), "include_dashboard": False}
    )
    try:
        _restore_address_file(cluster.address, before)
        names = {cluster.head_node.node_id: head.name}
        for spec in others:
            names[cluster.add_node(**spec.ray_args()).node_id] = spec.name
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        sim = SimCluster(cluster, topology, names)
        warm_workers(sim, warm_per_node)
        yield sim
    finally:
        ray.shutdown()
        _shutdown(cluster)


def _shutdown(cluster: Any) -> None:
    """``Cluster.shutdown`` (by PID), keeping Ray's address file if another cluster wrote it."""
    current = _address_file_text()
    cluster.shutdown()  # also deletes the address file, whoever wrote it
    if current is not None and current.strip() != cluster.address:
        with contextlib.suppress(OSError):
            _address_file().write_text(current)


def _address_file() -> Path:
    from ray._common.utils import get_ray_address_file

    return Path(get_ray_address_file(None))


def _address_file_text() -> str | None:
    try:
        return _address_file().read_text()
    except OSError:
        return None


def _restore_address_file(ours: str, before: str | None) -> None:
    """Put Ray's "latest cluster" file back as it was, if it now names ours (module docstring)."""
    path = _address_file()
    with contextlib.suppress(OSError):
        if path.read_text().strip() != ours:
            return  # someone else's cluster wrote it meanwhile: theirs to keep
        if before is None:
            path.unlink()
        else:
            path.write_text(before)


def _warm_task() -> str:
    """Load what the steps load, then hold the worker a moment so siblings start too."""
    import ray

    import raybridge.steps  # noqa: F401  (the bridge's step wrapper and its imports)
    import vidbrief.bench.seed  # noqa: F401  (the seed design's steps)

    time.sleep(WARM_TASK_S)
    return ray.get_runtime_context().get_node_id()


def warm_workers(sim: SimCluster, per_node: int | None = None) -> None:
    """Start and warm each node's worker processes before any timing, for both designs alike.

    A cold worker costs about a second here (process start, imports): that is start-up, not
    scheduling, and would land on whichever design happens to run first.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(_warm_task)
    refs = [
        task.options(
            num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
        ).remote()
        for node_id, name in sim.names.items()
        for _ in range(per_node or next(n.cpus for n in sim.topology.nodes if n.name == name))
    ]
    ray.get(refs)


def stop_shared_analysers() -> None:
    """Kill the bridges' named analysis actors still alive (a killed bridge cannot be the last
    to stop, which is what stops them)."""
    import ray

    from raybridge.launcher import ANALYSER_NAMESPACE

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor.get("namespace") == ANALYSER_NAMESPACE:
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(actor["name"], namespace=ANALYSER_NAMESPACE))


def wait_for_gpus_free(timeout_s: float = 30.0) -> None:
    """Wait until every GPU is free again (a stopped bridge's analysis actors are gone)."""
    import ray

    stop_shared_analysers()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.available_resources().get("GPU", 0) >= ray.cluster_resources().get("GPU", 0):
            return
        time.sleep(0.1)
    raise TimeoutError("GPUs still held after the bridge stopped")


@contextlib.contextmanager
def private_redis() -> Iterator[Any]:
    """A redis-server of our own on a free loopback port, stopped by its PID."""
    from ingest.redis_server import start_redis_server

    with tempfile.TemporaryDirectory(prefix="vidbrief-bench-redis-") as tmp:
        server = start_redis_server(Path(tmp), appendonly=False, daemonize=False)
        try:
            yield server
        finally:
            server.stop()
