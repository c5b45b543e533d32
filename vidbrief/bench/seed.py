"""The seed article's design (seeds/000, ``schedule_task``), rebuilt to be measured beside ours.

As in the article: ``step_a`` (download) holds one ``step_a_slot``; the driver ``ray.get``s it
to learn the node, then submits ``step_b`` (``num_gpus=1``, a plain task, so Ray gives it a
fresh worker process each time) pinned to that node, ``step_c`` anywhere and ``step_d`` on the
``head`` resource, chained by ObjectRefs; the driver calls ``schedule_task`` for one job after
another. One change: the article pins step_b with the ``node:<ip>`` resource, but simulated
nodes on one machine share ``node:127.0.0.1``, so here step_b is pinned with
``NodeAffinitySchedulingStrategy(node_id, soft=False)`` — the same constraint, by node id.

Each step sleeps for ``pipeline.chain.synthetic_duration`` of its job (the same durations our
bridge runs) and returns the spans so far, so the chain's result is its own timeline.
"""

from __future__ import annotations

import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ingest.names import ANALYSE_STEP, BRIEF_STEP, DOWNLOAD_STEP, REPORT_STEP
from vidbrief.bench.bounds import Run, Span
from vidbrief.bench.workloads import SEED_DOWNLOAD_SLOT, SEED_HEAD


def _work(job: str, step: str, seconds: float, earlier: list[Span]) -> list[Span]:
    node = ray.get_runtime_context().get_node_id()
    start = time.time()
    time.sleep(seconds)
    return [*earlier, Span(job, step, start, time.time(), node)]


@ray.remote(resources={SEED_DOWNLOAD_SLOT: 1})
def step_a(job: str, seconds: float) -> tuple[str, list[Span]]:
    spans = _work(job, DOWNLOAD_STEP, seconds, [])
    return spans[-1].node, spans


@ray.remote(num_gpus=1)
def step_b(job: str, seconds: float, earlier: list[Span]) -> list[Span]:
    return _work(job, ANALYSE_STEP, seconds, earlier)


@ray.remote
def step_c(job: str, seconds: float, earlier: list[Span]) -> list[Span]:
    return _work(job, BRIEF_STEP, seconds, earlier)


@ray.remote(resources={SEED_HEAD: 1})
def step_d(job: str, seconds: float, earlier: list[Span]) -> list[Span]:
    return _work(job, REPORT_STEP, seconds, earlier)


def schedule_task(job: str, seconds: dict[str, float]) -> ray.ObjectRef:
    """The article's ``schedule_task``: wait for the download, then chain the rest."""
    node, spans = ray.get(step_a.remote(job, seconds[DOWNLOAD_STEP]))
    pinned = NodeAffinitySchedulingStrategy(node, soft=False)
    future_b = step_b.options(scheduling_strategy=pinned).remote(job, seconds[ANALYSE_STEP], spans)
    future_c = step_c.remote(job, seconds[BRIEF_STEP], future_b)
    return step_d.remote(job, seconds[REPORT_STEP], future_c)


def run_seed(durations: dict[str, dict[str, float]]) -> Run:
    """All jobs through ``schedule_task``, one after another, then ``ray.get`` of them all."""
    t0 = time.time()
    futures = [schedule_task(job, dict(seconds)) for job, seconds in durations.items()]
    chains = ray.get(futures)
    t_end = time.time()
    spans = [span for chain in chains for span in chain]
    completions = {chain[-1].job: chain[-1].end for chain in chains}
    return Run("seed", t0, t_end, spans, completions)
