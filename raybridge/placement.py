"""Where a job's download goes: a pure function over a snapshot of the cluster.

The rule
--------
A job's analysis must run on the node that downloaded its video, so the download node *is* the
analysis node. Each node with analysers (one warm analysis actor per GPU, or per-node CPU
actors when the cluster has no GPU) is a queue: the jobs assigned to it are downloading,
downloaded and waiting, or being analysed. A new job goes to the node where its analysis would
start soonest, i.e. the smallest ``(assigned + 1) / analysers`` — the GPU backlog divided by the
GPUs, counting the new job. Ties go to the node with more analysers, then more download slots,
then the lower node id (deterministic).

A node takes at most ``analysers + lookahead`` jobs (``lookahead`` is measured per node, see
pace.py: one per analyser until then and whenever analyses outlast downloads): enough that the
next video is on disk when a GPU frees (downloads overlap analysis), few enough that one node
cannot hoard the stream while another GPU idles — the starvation the
seed article fights with a per-node ``step_a_slot``. It also takes a job only while one of its
download slots is free, so Ray never queues a download behind another on a node: the bridge's
read order decides which job downloads first. A job that finds every node full waits in the
bridge's window, not on a node.

**By expected work.** When the job's video duration is known (a metadata probe before placement,
pipeline/probe.py), each node's measured pace (analysis seconds per media second, pace.py; the
cluster's mean until the node has one) turns it into expected GPU seconds there, and the job
goes to the node with room where it is expected to *finish* first: the later of its download
there and the node's expected backlog (the expected seconds of the jobs bound to it, all
bridges together, ÷ its analysers), plus its own expected seconds; a node whose download
slots are busy counts the time until one frees. When that node has no room yet, the job waits
for it (the dispatch runs again whenever a download ends) rather than take a worse node now.
Without a duration, the count rule above decides.

A job resumed after a bridge restart prefers the node that holds its download (``prefer``) as
long as that node is alive and still has analysers, whatever its look-ahead or health, since its
video is already there.

A node that is not ``healthy`` (too little free disk or memory, measured on it, or no answer to
its health probes for ``health_probe_seconds``: see health.py) gets no new download until it
recovers; the jobs it holds carry on.

Cluster resources (``ray start --resources``; the README copies these lines)
---------------------------------------------------------------------------
``vidbrief_download``: concurrent downloads a node runs (a node without it gets no download and
so no analysis). ``vidbrief_report``: nodes that can write the reports location (the report
step asks for 0.01 of it). GPUs: one analysis actor per GPU. For example::

    # head: runs the bridge, briefs and reports; no GPU
    ray start --head --port=6379 --num-cpus=8 --resources='{"vidbrief_report": 8}'
    # a GPU worker: 2 GPUs, 2 concurrent downloads
    ray start --address=HEAD:6379 --num-gpus=2 --resources='{"vidbrief_download": 2}'
    # a CPU-only cluster: analysis runs on CPU actors (VIDBRIEF_CPU_ANALYSERS_PER_NODE each)
    ray start --address=HEAD:6379 --num-cpus=16 --resources='{"vidbrief_download": 2}'

Settings: ``VIDBRIEF_DOWNLOAD_LOOKAHEAD`` (jobs per node beyond one per analyser),
``VIDBRIEF_ANALYSIS_ON`` (auto, gpu, cpu), ``VIDBRIEF_CPU_ANALYSERS_PER_NODE``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class NodeView:
    """What placement needs to know about one node."""

    node_id: str
    alive: bool = True
    #: The node's host name, for people (placement never uses it).
    host: str = ""
    gpus: float = 0.0
    download_slots: float = 0.0
    #: Warm analysis actors on this node (0: it cannot analyse, so it gets no downloads).
    analysers: int = 0
    #: This bridge's jobs downloading, downloaded-waiting or analysing here.
    assigned: int = 0
    #: Of those, the ones whose download is running or queued in Ray.
    downloading: int = 0
    #: Look-ahead measured for this node (pace.py); None: one per analyser.
    lookahead: int | None = None
    #: Enough free disk and memory for the next download (health.py); why not, when not.
    healthy: bool = True
    health_reason: str = ""
    #: Expected analysis seconds of the jobs bound here and not yet analysed (None: unknown).
    backlog_s: float | None = None
    #: Analysis seconds per media second measured here (None: not yet).
    pace: float | None = None
    #: Download seconds measured here (launch to end; None: not yet).
    download_s: float | None = None
    #: Seconds until one of its download slots frees (0 when one is free).
    slot_wait_s: float = 0.0

    def capacity(self, lookahead: int | None) -> int:
        """Jobs this node may hold at once: one per analyser plus the look-ahead — the one
        configured if any, else the node's measured one, else one per analyser."""
        extra = next(x for x in (lookahead, self.lookahead, self.analysers) if x is not None)
        return self.analysers + extra

    @property
    def can_analyse(self) -> bool:
        return self.alive and self.analysers > 0 and self.download_slots > 0

    def has_room(self, lookahead: int | None) -> bool:
        """Room for one more job now: below its look-ahead *and* a download slot free.

        The slot check keeps Ray from holding more downloads for a node than it can run: given
        three at once for two slots, Ray (not the bridge) picks which waits, and a look-ahead
        download could take the slot that the job for an idle GPU needed. The job waits in the
        window instead, and goes to whichever node frees a slot first.
        """
        return (
            self.can_analyse
            and self.healthy
            and self.assigned < self.capacity(lookahead)
            and self.downloading < self.download_slots
        )

    @property
    def start_rank(self) -> float:
        """How many analysis rounds pass before a new job here starts (lower is sooner)."""
        return (self.assigned + 1) / self.analysers

    def expected_finish(self, media_s: float, default_pace: float) -> float:
        """Seconds from now until a new job of ``media_s`` would be analysed here."""
        pace = self.pace if self.pace is not None else default_pace
        downloaded = self.slot_wait_s + (self.download_s or 0.0)
        start = max((self.backlog_s or 0.0) / self.analysers, downloaded)
        return start + media_s * pace


@dataclass(frozen=True)
class ClusterSnapshot:
    """The nodes at one moment."""

    nodes: tuple[NodeView, ...] = ()

    def node(self, node_id: str) -> NodeView | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    @property
    def has_gpus(self) -> bool:
        return any(n.alive and n.gpus >= 1 for n in self.nodes)

    @property
    def mean_pace(self) -> float:
        """The mean measured pace of the nodes (1.0 before any: then only ratios matter)."""
        paces = [n.pace for n in self.nodes if n.alive and n.pace is not None]
        return sum(paces) / len(paces) if paces else 1.0

    @property
    def alive_ids(self) -> frozenset[str]:
        return frozenset(n.node_id for n in self.nodes if n.alive)

    def with_assigned(
        self, assigned: Mapping[str, int], downloading: Mapping[str, int] | None = None
    ) -> ClusterSnapshot:
        """The same nodes with the bridge's current assignment (and download) counts."""
        downloading = downloading or {}
        return ClusterSnapshot(
            tuple(
                replace(
                    n,
                    assigned=assigned.get(n.node_id, 0),
                    downloading=downloading.get(n.node_id, 0),
                )
                for n in self.nodes
            )
        )


def _preference(node: NodeView) -> tuple[float, int, float, str]:
    return (node.start_rank, -node.analysers, -node.download_slots, node.node_id)


def choose_node(
    snapshot: ClusterSnapshot,
    *,
    lookahead: int | None = None,
    prefer: str | None = None,
    media_s: float | None = None,
) -> str | None:
    """The node for the next job's download, or None when every node is at its look-ahead.

    ``media_s``: the video's duration, when a probe found it (placement by expected work).
    """
    preferred = snapshot.node(prefer) if prefer else None
    if preferred is not None and preferred.can_analyse:
        return preferred.node_id
    if media_s is not None:
        able = [n for n in snapshot.nodes if n.can_analyse and n.healthy]
        pace = snapshot.mean_pace
        best = min(able, key=lambda n: _by_finish(n, media_s, pace), default=None)
        # The node where it finishes first, or none yet: it waits for that node's room.
        return best.node_id if best is not None and best.has_room(lookahead) else None
    candidates = [n for n in snapshot.nodes if n.has_room(lookahead)]
    if not candidates:
        return None
    return min(candidates, key=_preference).node_id


def _by_finish(node: NodeView, media_s: float, pace: float) -> tuple[float, int, str]:
    return (node.expected_finish(media_s, pace), -node.analysers, node.node_id)


def analysers_wanted(node: NodeView, *, on_gpus: bool, cpu_per_node: int) -> int:
    """How many analysis actors a node should hold: one per whole GPU, or the CPU setting."""
    if not node.alive or node.download_slots <= 0:
        return 0  # it would never get a download, so never an analysis
    if on_gpus:
        return int(node.gpus)
    return cpu_per_node
