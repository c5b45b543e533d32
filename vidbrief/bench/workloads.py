"""Workloads and topologies of the schedule benchmark (plain data, no Ray).

Workloads: the seed article's example scaled by 0.1 (download 1.0 s, analyse 3.0 s on a GPU,
brief 0.6 s, report 0.1 s) with identical jobs, and a randomised mix of the same means where
each (job, step) duration varies by up to ±50 % (``pipeline.chain.synthetic_duration``, so the
bridge's workers and the lower bound here see the very same numbers).

Topologies: one node with one GPU; three simulated nodes with 2, 1 and 0 logical GPUs. Each
GPU node has one download slot per GPU (2 + 1; the seed design's driver runs one download at a
time in the whole cluster anyway, so its slot count changes nothing); the head has no GPU and
no download slot, and holds the report resource (ours ``vidbrief_report``, the seed's ``head``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ingest.names import ANALYSE_STEP, BRIEF_STEP, DOWNLOAD_STEP, REPORT_STEP
from vidbrief.bench.bounds import STEPS, JobDurations

#: The seed article's durations (10 s, 30 s, 6 s, 1 s) scaled by 0.1.
SEED_EXAMPLE_S = {DOWNLOAD_STEP: 1.0, ANALYSE_STEP: 3.0, BRIEF_STEP: 0.6, REPORT_STEP: 0.1}
MIX_JITTER = 0.5
#: Logical CPUs per simulated node: steps sleep, so more than the 2 real cores is fine.
NODE_CPUS = 4
#: The seed's resource names (its ``ray start --resources``).
SEED_DOWNLOAD_SLOT, SEED_HEAD = "step_a_slot", "head"
SEED_HEAD_UNITS = 8


@dataclass(frozen=True)
class Workload:
    """Jobs with per-step synthetic durations (scaled), optionally jittered per job."""

    name: str
    jobs: int
    base_s: dict[str, float]
    jitter: float = 0.0
    scale: float = 1.0

    @property
    def seconds(self) -> dict[str, float]:
        return {step: self.base_s[step] * self.scale for step in STEPS}

    def job_ids(self) -> list[str]:
        return [f"{self.name}-{n:03d}" for n in range(self.jobs)]

    def settings_fields(self) -> dict[str, Any]:
        """The bridge settings that make its steps sleep exactly these durations."""
        return {
            "step_mode": "synthetic",
            "synthetic_seconds": self.seconds,
            "synthetic_jitter": self.jitter,
        }

    def durations(self) -> dict[str, JobDurations]:
        """job id → step → seconds, as ``pipeline.chain.synthetic_duration`` computes them."""
        from ingest.settings import Settings
        from pipeline.chain import synthetic_duration

        settings = Settings(_env_file=None, **self.settings_fields())  # type: ignore[arg-type]
        return {
            job: {step: synthetic_duration(settings, job, step) for step in STEPS}
            for job in self.job_ids()
        }


def workloads(jobs: int, scale: float) -> list[Workload]:
    return [
        Workload("seed-example", jobs, SEED_EXAMPLE_S, 0.0, scale),
        Workload("mix", jobs, SEED_EXAMPLE_S, MIX_JITTER, scale),
    ]


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node."""

    name: str
    gpus: int = 0
    download_slots: int = 0
    head: bool = False
    cpus: int = NODE_CPUS

    def ray_args(self) -> dict[str, Any]:
        """Arguments of ``Cluster.add_node`` (both designs' resources)."""
        from pipeline.chain import DOWNLOAD_SLOT, REPORT_NODE

        resources: dict[str, float] = {}
        if self.download_slots:
            resources |= {
                DOWNLOAD_SLOT: self.download_slots,
                SEED_DOWNLOAD_SLOT: self.download_slots,
            }
        if self.head:
            resources |= {REPORT_NODE: 1, SEED_HEAD: SEED_HEAD_UNITS}
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, "resources": resources}


@dataclass(frozen=True)
class Topology:
    name: str
    nodes: tuple[NodeSpec, ...] = field(default_factory=tuple)

    @property
    def gpus(self) -> int:
        return sum(n.gpus for n in self.nodes)

    @property
    def download_slots(self) -> int:
        return sum(n.download_slots for n in self.nodes)

    def servers(self) -> dict[str, float]:
        """Servers per resource class for the lower bound (brief, report: never the limit)."""
        return {DOWNLOAD_STEP: self.download_slots, ANALYSE_STEP: self.gpus}


ONE_NODE = Topology("one-node", (NodeSpec("node-1gpu", gpus=1, download_slots=1, head=True),))
THREE_NODES = Topology(
    "three-nodes",
    (
        NodeSpec("head", head=True),
        NodeSpec("node-2gpu", gpus=2, download_slots=2),
        NodeSpec("node-1gpu", gpus=1, download_slots=1),
    ),
)
TOPOLOGIES = {t.name: t for t in (ONE_NODE, THREE_NODES)}
