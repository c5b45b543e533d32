"""How far ahead of its GPUs a node should download: measured, per node.

A node's GPUs consume one job per analysis; its downloads must keep up. By Little's law the
downloads that must be under way at once to never leave a GPU waiting are
``gpus × download seconds / analysis seconds``. A fixed look-ahead of one job per analyser is
right when an analysis takes longer than a download (the usual case: seconds of GPU for a short
download) and starves the GPU when it does not (a slow site, a fast GPU, short videos): with a
60 s download and a 10 s analysis one look-ahead job keeps an H100 busy a third of the time.

So the bridge times, per node, each download (from its launch to its ref resolving: what the
look-ahead has to cover, queueing and worker start included) and each analysis (from when the
bridge sent it to a free analyser, fleet.py, to its end), keeps a moving average of both,
and sets the node's look-ahead to ``ceil(analysers × download / analysis)``, never below one
per analyser (the behaviour without measurements) nor above ``MAX_PER_ANALYSER`` per
analyser. A node still takes a job only while one of its download slots is free
(placement.py), so a large look-ahead never queues downloads in Ray.
``VIDBRIEF_DOWNLOAD_LOOKAHEAD`` fixes the look-ahead instead.

For placement by expected work (placement.py) it also keeps, per node, the analysis seconds per
media second of the jobs whose duration a probe gave: GPUs differ, so the same video costs
different seconds on different nodes. A GPU's speed does not drift, but each sample carries the
probe's error (±20 % in synthetic mode), so a node's pace is the mean of all its samples,
shrunk toward the cluster's mean by ``PACE_PRIOR_SAMPLES`` pseudo-samples: with few samples
two identical GPUs would otherwise look different by the noise, and placement would follow it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Weight of the newest sample in the moving averages.
ALPHA = 0.2
#: Upper bound on the look-ahead, per analyser (the window bounds it too).
MAX_PER_ANALYSER = 8
#: Analyses shorter than this count as this long (no division by ~0 for no-op steps).
MIN_ANALYSIS_S = 1e-3
#: Weight of the cluster's mean pace in a node's, in samples.
PACE_PRIOR_SAMPLES = 8


@dataclass
class _Average:
    value: float | None = None

    def add(self, sample: float) -> None:
        sample = max(sample, 0.0)
        self.value = sample if self.value is None else self.value + ALPHA * (sample - self.value)


@dataclass
class _Mean:
    total: float = 0.0
    count: int = 0

    def add(self, sample: float) -> None:
        self.total += sample
        self.count += 1


@dataclass
class _NodePace:
    download: _Average
    analysis: _Average
    per_media_s: _Mean


class Pace:
    """Download and analysis times per node, and the look-ahead they call for."""

    def __init__(self) -> None:
        self._nodes: dict[str, _NodePace] = {}

    def _node(self, node_id: str) -> _NodePace:
        return self._nodes.setdefault(node_id, _NodePace(_Average(), _Average(), _Mean()))

    def downloaded(self, node_id: str, launched_at: float, ended_at: float) -> None:
        self._node(node_id).download.add(ended_at - launched_at)

    def analysed(
        self, node_id: str, started_at: float, ended_at: float, media_s: float | None = None
    ) -> None:
        """One analysis ended; it started when the bridge sent it to a free analyser."""
        seconds = max(ended_at - started_at, MIN_ANALYSIS_S)
        node = self._node(node_id)
        node.analysis.add(seconds)
        if media_s:
            node.per_media_s.add(seconds / media_s)

    def pace(self, node_id: str) -> float | None:
        """Analysis seconds per media second here (None until measured), shrunk toward the
        cluster's mean (module docstring)."""
        pace = self._nodes.get(node_id)
        if pace is None or not pace.per_media_s.count:
            return None
        total = sum(p.per_media_s.total for p in self._nodes.values())
        count = sum(p.per_media_s.count for p in self._nodes.values())
        prior = PACE_PRIOR_SAMPLES * total / count
        return (pace.per_media_s.total + prior) / (pace.per_media_s.count + PACE_PRIOR_SAMPLES)

    def download_s(self, node_id: str) -> float | None:
        pace = self._nodes.get(node_id)
        return pace.download.value if pace else None

    def forget(self, node_id: str) -> None:
        """A node that left: its measurements no longer apply."""
        self._nodes.pop(node_id, None)

    def lookahead(self, node_id: str, analysers: int) -> int | None:
        """Jobs beyond one per analyser the node should hold; None until both are measured."""
        pace = self._nodes.get(node_id)
        if pace is None or pace.download.value is None or pace.analysis.value is None:
            return None
        wanted = math.ceil(analysers * pace.download.value / pace.analysis.value)
        return min(max(wanted, analysers), MAX_PER_ANALYSER * analysers)

    def as_dict(self, node_id: str) -> dict[str, float | None]:
        pace = self._nodes.get(node_id)
        if pace is None:
            return {"download_s": None, "analysis_s": None, "pace": None}
        return {
            "download_s": pace.download.value,
            "analysis_s": pace.analysis.value,
            "pace": self.pace(node_id),
        }
