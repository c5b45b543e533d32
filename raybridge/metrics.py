"""Prometheus metrics of one bridge, served on ``metrics_port`` when it is set.

Each bridge has its own registry, so several bridges (tests, benchmarks) can live in one
process without clashing over the default registry.

    vidbrief_bridge_jobs_in_flight                 gauge    jobs read and not yet finished
    vidbrief_bridge_window_size                    gauge    the window (settings.window)
    vidbrief_bridge_window_occupancy_ratio         gauge    in flight / window
    vidbrief_bridge_window_high_water              gauge    most jobs ever in flight at once
    vidbrief_bridge_jobs_finished_total{outcome}   counter  completed, failed, cancelled
    vidbrief_bridge_dead_letters_total             counter  entries sent to the dead stream
    vidbrief_bridge_step_seconds{step}             histogram  step durations (from the job hash)
    vidbrief_bridge_downloads_placed_total{node}   counter  placement decisions per node
    vidbrief_bridge_node_disk_free_bytes{node}     gauge    free disk under work_dir there
    vidbrief_bridge_node_memory_available_bytes{node}  gauge  available memory there
    vidbrief_bridge_node_healthy{node}             gauge    1: takes new downloads, 0: not
    vidbrief_bridge_node_health_stale{node}        gauge    1: the last probe did not answer
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from raybridge.window import Window

if TYPE_CHECKING:
    from raybridge.health import NodeHealth

log = logging.getLogger(__name__)

#: Step duration buckets in seconds: synthetic steps take tens of ms, real analyses minutes.
STEP_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
NODE_LABEL_CHARS = 12


class BridgeMetrics:
    """The bridge's metrics in a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.in_flight = Gauge("vidbrief_bridge_jobs_in_flight", "Jobs in flight.", registry=r)
        self.window_size = Gauge("vidbrief_bridge_window_size", "The window.", registry=r)
        self.occupancy = Gauge(
            "vidbrief_bridge_window_occupancy_ratio", "Jobs in flight / window.", registry=r
        )
        self.high_water = Gauge(
            "vidbrief_bridge_window_high_water", "Most jobs in flight at once.", registry=r
        )
        self.finished = Counter(
            "vidbrief_bridge_jobs_finished", "Jobs finished.", ["outcome"], registry=r
        )
        self.dead_letters = Counter(
            "vidbrief_bridge_dead_letters", "Entries dead-lettered.", registry=r
        )
        self.step_seconds = Histogram(
            "vidbrief_bridge_step_seconds",
            "Step durations.",
            ["step"],
            buckets=STEP_BUCKETS_S,
            registry=r,
        )
        self.placed = Counter(
            "vidbrief_bridge_downloads_placed", "Downloads placed per node.", ["node"], registry=r
        )
        self.node_gauges = {
            "disk": Gauge(
                "vidbrief_bridge_node_disk_free_bytes", "Free disk.", ["node"], registry=r
            ),
            "memory": Gauge(
                "vidbrief_bridge_node_memory_available_bytes",
                "Available memory.",
                ["node"],
                registry=r,
            ),
            "healthy": Gauge(
                "vidbrief_bridge_node_healthy", "Takes new downloads.", ["node"], registry=r
            ),
            "stale": Gauge(
                "vidbrief_bridge_node_health_stale", "Last probe unanswered.", ["node"], registry=r
            ),
        }
        self._health_nodes: set[str] = set()
        self._server: Any = None

    def observe_window(self, window: Window) -> None:
        self.in_flight.set(len(window))
        self.window_size.set(window.capacity)
        self.occupancy.set(window.occupancy)
        self.high_water.set(window.high_water)

    def observe_steps(self, seconds: dict[str, float]) -> None:
        for step, value in seconds.items():
            self.step_seconds.labels(step=step).observe(value)

    def placed_on(self, node_id: str) -> None:
        self.placed.labels(node=node_id[:NODE_LABEL_CHARS]).inc()

    def observe_health(self, nodes: Iterable[NodeHealth]) -> None:
        """Per-node health gauges; a node that left loses its series."""
        seen: set[str] = set()
        for health in nodes:
            node = health.node_id[:NODE_LABEL_CHARS]
            seen.add(node)
            g = self.node_gauges
            if health.figures is not None:
                g["disk"].labels(node=node).set(health.figures.disk_free_bytes)
                g["memory"].labels(node=node).set(health.figures.memory_available_bytes)
            g["healthy"].labels(node=node).set(1 if health.healthy else 0)
            g["stale"].labels(node=node).set(1 if health.stale else 0)
        for node in self._health_nodes - seen:
            for gauge in self.node_gauges.values():
                with contextlib.suppress(KeyError):  # never set for this node
                    gauge.remove(node)
        self._health_nodes = seen

    def serve(self, port: int, host: str) -> None:
        """Start the HTTP endpoint (a daemon thread) once."""
        if self._server is not None:
            return
        try:
            self._server = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise OSError(
                f"cannot serve metrics on {host}:{port} ({e}): set VIDBRIEF_METRICS_PORT to a "
                "free port, or unset it to serve none"
            ) from e
        log.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        if isinstance(self._server, tuple):  # prometheus_client >= 0.17: (server, thread)
            self._server[0].shutdown()
        self._server = None
