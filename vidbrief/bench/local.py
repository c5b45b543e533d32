"""The one-node workload in a single process, no Ray: a thread pool, and asyncio.

The same shape as the bridge on one node: at most ``window`` jobs in flight, a semaphore per
download slot count and one per GPU, the steps as sleeps of the very same durations; brief and
report are never the limit, so they only sleep. This is the floor a scheduler pays nothing
for: what Ray adds on one node (task start-up, object transfer, the bridge's Redis writes)
shows as the gap between these efficiencies and ours.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

from ingest.names import ANALYSE_STEP, DOWNLOAD_STEP
from vidbrief.bench.bounds import STEPS, Run, Span

LOCAL_NODE = "local"
LIMITED = (DOWNLOAD_STEP, ANALYSE_STEP)


def _job_in_threads(
    job: str, seconds: Mapping[str, float], gates: Mapping[str, threading.Semaphore]
) -> list[Span]:
    spans = []
    for step in STEPS:
        with gates.get(step, nullcontext()):
            start = time.time()
            time.sleep(seconds[step])
            spans.append(Span(job, step, start, time.time(), LOCAL_NODE))
    return spans


def run_threadpool(
    durations: Mapping[str, Mapping[str, float]], servers: Mapping[str, float], window: int
) -> Run:
    """Every job a function in a pool of ``window`` threads; semaphores hold the slots."""
    gates = {step: threading.Semaphore(int(servers[step])) for step in LIMITED}
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=window) as pool:
        futures = [pool.submit(_job_in_threads, j, d, gates) for j, d in durations.items()]
        chains = [f.result() for f in futures]
    return _run("threadpool", t0, chains)


async def _job_in_loop(
    job: str, seconds: Mapping[str, float], gates: Mapping[str, asyncio.Semaphore]
) -> list[Span]:
    spans = []
    for step in STEPS:
        async with gates.get(step, nullcontext()):
            start = time.time()
            await asyncio.sleep(seconds[step])
            spans.append(Span(job, step, start, time.time(), LOCAL_NODE))
    return spans


async def _all_in_loop(
    durations: Mapping[str, Mapping[str, float]], servers: Mapping[str, float], window: int
) -> list[list[Span]]:
    gates = {step: asyncio.Semaphore(int(servers[step])) for step in LIMITED}
    room = asyncio.Semaphore(window)

    async def one(job: str, seconds: Mapping[str, float]) -> list[Span]:
        async with room:
            return await _job_in_loop(job, seconds, gates)

    return await asyncio.gather(*(one(j, d) for j, d in durations.items()))


def run_asyncio(
    durations: Mapping[str, Mapping[str, float]], servers: Mapping[str, float], window: int
) -> Run:
    """Every job a coroutine, ``window`` at a time; asyncio semaphores hold the slots."""
    t0 = time.time()
    chains = asyncio.run(_all_in_loop(durations, servers, window))
    return _run("asyncio", t0, chains)


def _run(design: str, t0: float, chains: list[list[Span]]) -> Run:
    t_end = time.time()
    completions = {chain[-1].job: chain[-1].end for chain in chains}
    return Run(design, t0, t_end, [s for chain in chains for s in chain], completions)
