"""Expected work on a node and tail work stealing: pure, over hand-made slots."""

from __future__ import annotations

from raybridge.expected import backlog_s, choose_steal, queued_start_s
from raybridge.window import Phase, Slot

GPU = object()


def slot(
    job: str,
    phase: Phase,
    expected: float,
    downloaded_at: float | None = None,
    started_at: float | None = None,
    node: str = "y",
) -> Slot:
    return Slot(
        job,
        f"{job}-0",
        phase=phase,
        node_id=node,
        analyser=GPU if started_at is not None else None,
        analysis_started_at=started_at,
        downloaded_at=downloaded_at,
        expected_s=expected,
        media_s=expected * 10,
    )


def test_backlog_counts_what_the_running_analysis_has_left() -> None:
    running = slot("a", Phase.ANALYSING, 3.0, downloaded_at=0.0, started_at=0.0)
    queued = slot("b", Phase.ANALYSING, 2.0, downloaded_at=1.0)
    coming = slot("c", Phase.DOWNLOADING, 4.0)
    # "a" started at 0: at t=1 it has 2 s left.
    assert backlog_s([running, queued, coming], 1.0) == 8.0


def test_a_queued_job_starts_when_the_first_analyser_frees_after_those_before_it() -> None:
    long = slot("long", Phase.ANALYSING, 10.0, downloaded_at=0.0, started_at=0.0)
    short = slot("short", Phase.ANALYSING, 2.0, downloaded_at=0.0, started_at=0.0)
    first = slot("first", Phase.ANALYSING, 3.0, downloaded_at=0.5)
    second = slot("second", Phase.ANALYSING, 1.0, downloaded_at=0.7)
    bound = [long, short, first, second]
    # Two GPUs at t=1: "short" frees in 1 s and takes "first" (3 s): "second" starts when
    # that ends (4 s), not behind "long" (9 s) — the first free analyser takes the next job.
    assert queued_start_s(first, bound, analysers=2, now=1.0) == 1.0
    assert queued_start_s(second, bound, analysers=2, now=1.0) == 4.0
    # A third GPU, idle: "first" takes it, "second" the one "short" frees.
    assert queued_start_s(second, bound, analysers=3, now=1.0) == 1.0
    assert queued_start_s(second, bound, analysers=4, now=1.0) == 0.0


def test_an_idle_node_takes_over_a_job_queued_long_behind_another() -> None:
    running = slot("a", Phase.ANALYSING, 5.0, downloaded_at=0.0, started_at=0.0)
    queued = slot("b", Phase.ANALYSING, 2.0, downloaded_at=0.5)
    bound = {"y": [running, queued]}
    steal = choose_steal(
        [running, queued], bound.__getitem__, lambda n: 1, lambda s: 1.0 + s.expected_s, now=1.0
    )
    assert steal is not None and steal.slot is queued  # waits 4 s there, 1 s download here
    assert abs(steal.gain_s - 3.0) < 1e-9


def test_no_steal_when_waiting_costs_less_than_downloading_again() -> None:
    running = slot("a", Phase.ANALYSING, 3.0, downloaded_at=0.0, started_at=0.0)
    queued = slot("b", Phase.ANALYSING, 2.0, downloaded_at=0.5)
    bound = {"y": [running, queued]}
    steal = choose_steal(
        [running, queued],
        bound.__getitem__,
        lambda n: 1,
        lambda s: 1.0 + s.expected_s,
        now=2.5,  # "a" has 0.5 s left
    )
    assert steal is None


def test_a_running_analysis_is_never_taken_over() -> None:
    running = slot("a", Phase.ANALYSING, 30.0, downloaded_at=0.0, started_at=0.0)
    steal = choose_steal(
        [running], {"y": [running]}.__getitem__, lambda n: 1, lambda s: 0.1, now=1.0
    )
    assert steal is None
