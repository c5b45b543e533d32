"""The pure arithmetic of the schedule benchmark: lower bounds, efficiency, GPU duty, lanes.

No Ray, no Redis, no clock: everything takes durations or measured spans and returns numbers,
so ``tests/test_bench.py`` checks it on hand-made schedules.

The lower bound on the makespan of a flow shop (every job runs its steps in chain order; a
step needs one server of its resource class) is the largest of:

- for each resource class *k* with *m* servers: the earliest any job can reach *k* (the
  shortest sum of the steps before *k*) + the total work of *k* / *m* + the shortest sum of
  the steps after *k* (some job must still run them after *k*'s last work);
- the longest single chain (one job alone, every step back to back).

For the seed article's example (4 jobs, a=10 s, b=30 s on 1 GPU, c=6 s, d=1 s) the GPU class
gives 10 + 4 × 30 / 1 + (6 + 1) = 137 s, the bound the article states.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ingest.names import ANALYSE_STEP, BRIEF_STEP, DOWNLOAD_STEP, REPORT_STEP, STEP_NAMES

#: The chain's steps in order (pipeline/chain.py CHAIN; repeated here to stay import-light).
STEPS: tuple[str, ...] = STEP_NAMES
GPU_STEP = ANALYSE_STEP

#: Durations of one job: step name → seconds.
JobDurations = Mapping[str, float]


@dataclass(frozen=True)
class Span:
    """One step of one job as it ran: wall-clock seconds (epoch) and the Ray node."""

    job: str
    step: str
    start: float
    end: float
    node: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Run:
    """One design's run of one workload: spans, when it began and when each job completed."""

    design: str
    t0: float
    t_end: float
    spans: list[Span]
    completions: dict[str, float] = field(default_factory=dict)

    @property
    def makespan_s(self) -> float:
        return self.t_end - self.t0

    def step_spans(self, step: str) -> list[Span]:
        return [s for s in self.spans if s.step == step]


# -- the lower bound ------------------------------------------------------------------------


def class_bound(
    jobs: Sequence[JobDurations], step: str, servers: float, steps: Sequence[str] = STEPS
) -> float:
    """Earliest start + total work / servers + shortest tail, for one resource class."""
    if not jobs:
        return 0.0
    index = list(steps).index(step)
    heads = [sum(job.get(s, 0.0) for s in steps[:index]) for job in jobs]
    tails = [sum(job.get(s, 0.0) for s in steps[index + 1 :]) for job in jobs]
    work = sum(job.get(step, 0.0) for job in jobs)
    return min(heads) + work / servers + min(tails)


def longest_chain(jobs: Sequence[JobDurations], steps: Sequence[str] = STEPS) -> float:
    """The longest single job, its steps back to back."""
    return max((sum(job.get(s, 0.0) for s in steps) for job in jobs), default=0.0)


def lower_bound(
    jobs: Sequence[JobDurations], servers: Mapping[str, float], steps: Sequence[str] = STEPS
) -> float:
    """No schedule finishes these jobs sooner. ``servers``: step → servers (absent: unlimited)."""
    bounds = [class_bound(jobs, s, servers[s], steps) for s in steps if s in servers]
    return max([longest_chain(jobs, steps), *bounds])


def list_schedule(
    jobs: Sequence[JobDurations], servers: Mapping[str, float], steps: Sequence[str] = STEPS
) -> float:
    """Makespan of an idealised greedy schedule: a reference, not a bound.

    Jobs in submission order; each step takes the server of its class that frees first (no
    node pinning, no overhead, servers of a class pooled); steps without servers never wait.
    For indivisible jobs of different lengths it shows how far the bound is from reachable.
    """
    free = {step: [0.0] * int(servers[step]) for step in steps if step in servers}
    end = 0.0
    for job in jobs:
        t = 0.0
        for step in steps:
            if step in free:
                k = min(range(len(free[step])), key=free[step].__getitem__)
                t = free[step][k] = max(free[step][k], t) + job.get(step, 0.0)
            else:
                t += job.get(step, 0.0)
        end = max(end, t)
    return end


def efficiency(bound_s: float, makespan_s: float) -> float:
    """Lower bound / measured makespan: 1.0 is a schedule nobody can beat."""
    return bound_s / makespan_s if makespan_s > 0 else math.nan


# -- GPU duty -------------------------------------------------------------------------------


def busy_seconds(spans: Iterable[Span], start: float, end: float) -> float:
    """Seconds of work inside [start, end], summed over spans (parallel spans add up)."""
    return sum(max(0.0, min(s.end, end) - max(s.start, start)) for s in spans)


def backlog_end(completions: Sequence[float], window: int) -> float | None:
    """When the jobs not yet completed fell to ``window`` (all jobs arrive at once at the start).

    Until then more jobs waited than the window holds, so every GPU had work queued somewhere
    and an idle GPU is the scheduler's doing. None when there never were more than ``window``.
    """
    done = sorted(completions)
    if len(done) <= window:
        return None
    return done[len(done) - window - 1]


def duty_interval(
    gpu_spans: Sequence[Span], completions: Sequence[float], window: int
) -> tuple[float, float]:
    """[first analysis start, backlog end]; the whole GPU activity when there was no backlog."""
    start = min(s.start for s in gpu_spans)
    end = backlog_end(completions, window)
    if end is None or end <= start:
        end = max(s.end for s in gpu_spans)
    return start, end


def gpu_duty(
    gpu_spans: Sequence[Span], gpus: int, completions: Sequence[float], window: int
) -> float:
    """Busy GPU-seconds / (GPUs × length) over ``duty_interval``."""
    if not gpu_spans or gpus <= 0:
        return math.nan
    start, end = duty_interval(gpu_spans, completions, window)
    return busy_seconds(gpu_spans, start, end) / (gpus * (end - start))


# -- Gantt lanes and statistics -------------------------------------------------------------


def assign_lanes(spans: Sequence[Span], slack_s: float = 1e-3) -> list[int]:
    """A lane per span so that spans in one lane never overlap (greedy by start time).

    ``slack_s`` lets a span start a hair before the previous one's recorded end (clocks of
    different processes) without opening a new lane.
    """
    order = sorted(range(len(spans)), key=lambda i: spans[i].start)
    lane_ends: list[float] = []
    lanes = [0] * len(spans)
    for i in order:
        free = [n for n, end in enumerate(lane_ends) if end <= spans[i].start + slack_s]
        lane = min(free, key=lambda n: lane_ends[n]) if free else len(lane_ends)
        if lane == len(lane_ends):
            lane_ends.append(0.0)
        lane_ends[lane] = spans[i].end
        lanes[i] = lane
    return lanes


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# -- where a schedule loses time ------------------------------------------------------------


def _by_job(run: Run) -> dict[str, dict[str, Span]]:
    out: dict[str, dict[str, Span]] = {}
    for span in run.spans:
        out.setdefault(span.job, {})[span.step] = span
    return out


def gpu_gaps(run: Run) -> list[float]:
    """Per analysis: start − the moment it could have started (its download done, its GPU free).

    The GPU of an analysis is its lane among the analyses of its node (``assign_lanes``).
    """
    jobs = _by_job(run)
    gaps: list[float] = []
    for node in {s.node for s in run.step_spans(GPU_STEP)}:
        spans = [s for s in run.step_spans(GPU_STEP) if s.node == node]
        lane_end: dict[int, float] = {}
        for span, lane in sorted(
            zip(spans, assign_lanes(spans), strict=True), key=lambda p: p[0].start
        ):
            ready = max(jobs[span.job][DOWNLOAD_STEP].end, lane_end.get(lane, run.t0))
            gaps.append(max(0.0, span.start - ready))
            lane_end[lane] = span.end
    return gaps


def handoffs(run: Run) -> dict[str, float]:
    """Median seconds lost at each hand-over of the chain (the overhead a scheduler adds)."""
    jobs = _by_job(run)
    pairs = {
        "analyse_to_brief_s": (ANALYSE_STEP, BRIEF_STEP),
        "brief_to_report_s": (BRIEF_STEP, REPORT_STEP),
    }
    out = {
        "submit_to_first_start_s": min(s.start for s in run.step_spans(DOWNLOAD_STEP)) - run.t0,
        "gpu_gap_s": median(gpu_gaps(run)),
    }
    for key, (a, b) in pairs.items():
        out[key] = median([j[b].start - j[a].end for j in jobs.values() if a in j and b in j])
    out["report_to_done_s"] = median(
        [run.completions[job] - j[REPORT_STEP].end for job, j in jobs.items() if REPORT_STEP in j]
    )
    return out
