"""How efficient can any "longest job first" order be on the three-node mix of `bench schedule`?

    .venv/bin/python scripts/schedule_ceiling.py [TRIALS]

No Ray, no bridge: the idealised greedy list schedule of ``vidbrief.bench.bounds`` (servers
pooled, no overhead) over the benchmark's own 24 mix jobs, with the jobs taken in different
orders. A policy sees a look-ahead of K jobs in stream order (the bridge's window is 8) and
takes the one expected to run longest (analysis + brief + report) — with exact durations, and
with the ±20 % error of the synthetic duration probe (median of TRIALS draws). The last lines
are searches over orders: of the whole backlog with exact durations (what an all-knowing
planner could reach), and planned on the probe's guesses then run with the true durations —
of the last 8 jobs (the window, all a bridge holds once the stream is empty) and of the whole
backlog (a planner that sees every job, but only through the probe); medians of PLANNED_TRIALS
draws.

Prints one JSON object; efficiencies are lower bound / makespan, as in the benchmark.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence

from vidbrief.bench.bounds import list_schedule, lower_bound
from vidbrief.bench.schedule import TOPOLOGIES
from vidbrief.bench.workloads import workloads

Job = Mapping[str, float]
PROBE_ERROR = 0.2  # the synthetic probe's default error (VIDBRIEF_SYNTHETIC_PROBE_ERROR)
LOOK_AHEADS = (1, 4, 8, 16, 24)
SEARCH_RESTARTS, SEARCH_SWAPS = 30, 1500
#: Draws of the probe's error for the planner that searches on guesses (each draw is a search),
#: and how many of the last jobs it orders: the bridge's window (8), and the whole backlog.
PLANNED_TRIALS = 9
PLANNED_TAILS = (8, 24)


def work(job: Job) -> float:
    return job["analyse"] + job["brief"] + job["report"]


def longest_first(jobs: Sequence[Job], look_ahead: int, key: Callable[[Job], float]) -> list[Job]:
    """The order a policy gives: of the next ``look_ahead`` jobs, the longest by ``key``."""
    rest, order = list(jobs), []
    while rest:
        chosen = max(rest[:look_ahead], key=key)
        order.append(chosen)
        rest.remove(chosen)
    return order


def searched(jobs: Sequence[Job], servers: Mapping[str, float], seed: int = 0) -> float:
    """The shortest makespan a swap hill climb from random orders finds (exact durations)."""
    return list_schedule(best_order(jobs, servers, seed), servers)


def planned_on_guesses(
    jobs: Sequence[Job], servers: Mapping[str, float], draw: int, planned: int
) -> float:
    """The makespan when the last ``planned`` jobs run in the order searched on the probe's
    guesses (the others in stream order before them), run with the true durations."""
    rng = random.Random(1000 + draw)
    factors = [1 + rng.uniform(-PROBE_ERROR, PROBE_ERROR) for _ in jobs]  # one per video
    guessed = [{step: s * f for step, s in j.items()} for j, f in zip(jobs, factors, strict=True)]
    truth = {id(g): j for g, j in zip(guessed, jobs, strict=True)}
    cut = len(jobs) - planned
    order = best_order(guessed[cut:], servers, seed=draw, before=guessed[:cut])
    return list_schedule([*jobs[:cut], *(truth[id(g)] for g in order)], servers)


def best_order(
    jobs: Sequence[Job], servers: Mapping[str, float], seed: int = 0, before: Sequence[Job] = ()
) -> list[Job]:
    """The order of ``jobs`` (after ``before``, in its order) with the shortest makespan a
    swap hill climb from random orders finds."""
    rng = random.Random(seed)
    head = list(before)
    best, best_s = list(jobs), list_schedule([*head, *jobs], servers)
    for _ in range(SEARCH_RESTARTS):
        order = list(jobs)
        rng.shuffle(order)
        current = list_schedule([*head, *order], servers)
        for _ in range(SEARCH_SWAPS):
            i, j = rng.randrange(len(order)), rng.randrange(len(order))
            order[i], order[j] = order[j], order[i]
            tried = list_schedule([*head, *order], servers)
            if tried <= current:
                current = tried
            else:
                order[i], order[j] = order[j], order[i]
        if current < best_s:
            best, best_s = list(order), current
    return best


def planned_median(jobs: Sequence[Job], servers: Mapping[str, float], planned: int) -> float:
    bound = lower_bound(jobs, servers)
    runs = [planned_on_guesses(jobs, servers, d, planned) for d in range(PLANNED_TRIALS)]
    return round(bound / statistics.median(runs), 3)


def main(trials: int) -> dict[str, object]:
    mix = next(w for w in workloads(24, 1.0) if w.name == "mix")
    jobs = list(mix.durations().values())
    servers = TOPOLOGIES["three-nodes"].servers()
    bound = lower_bound(jobs, servers)
    rows = []
    for k in LOOK_AHEADS:
        exact = list_schedule(longest_first(jobs, k, work), servers)
        rng = random.Random(k)
        noisy = []
        for _ in range(trials):
            guess = {id(j): work(j) * (1 + rng.uniform(-PROBE_ERROR, PROBE_ERROR)) for j in jobs}
            order = longest_first(jobs, k, lambda j, g=guess: g[id(j)])
            noisy.append(list_schedule(order, servers))
        rows.append(
            {
                "look_ahead": k,
                "exact": round(bound / exact, 3),
                "probe_error_20pct_median": round(bound / statistics.median(noisy), 3),
            }
        )
    return {
        "bound_s": round(bound, 2),
        "in_stream_order": round(bound / list_schedule(jobs, servers), 3),
        "longest_first": rows,
        "searched_order_exact": round(bound / searched(jobs, servers), 3),
        "searched_on_probe_guesses_median": {
            f"last_{k}": planned_median(jobs, servers, k) for k in PLANNED_TAILS
        },
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50), indent=2))
