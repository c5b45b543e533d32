"""Expected work on a node and tail work stealing: pure, over hand-made slots."""

from __future__ import annotations

from raybridge.expected import backlog_s, choose_steal
from raybridge.window import Phase, Slot

GPU = object()


def slot(
    job: str, phase: Phase, expected: float, downloaded_at: float | None = None, node: str = "y"
) -> Slot:
    return Slot(
        job,
        f"{job}-0",
        phase=phase,
        node_id=node,
        analyser=GPU,
        downloaded_at=downloaded_at,
        expected_s=expected,
        media_s=expected * 10,
    )


def test_backlog_counts_what_the_running_analysis_has_left() -> None:
    running = slot("a", Phase.ANALYSING, 3.0, downloaded_at=0.0)
    queued = slot("b", Phase.ANALYSING, 2.0, downloaded_at=1.0)
    coming = slot("c", Phase.DOWNLOADING, 4.0)
    # "a" could start at 0 (its video there, its analyser free): at t=1 it has 2 s left.
    assert backlog_s([running, queued, coming], lambda s: s.downloaded_at or 0.0, 1.0) == 8.0


def test_an_idle_node_takes_over_a_job_queued_long_behind_another() -> None:
    running = slot("a", Phase.ANALYSING, 5.0, downloaded_at=0.0)
    queued = slot("b", Phase.ANALYSING, 2.0, downloaded_at=0.5)
    bound = {"y": [running, queued]}
    steal = choose_steal(
        [running, queued],
        bound.__getitem__,
        lambda s: 1.0 + s.expected_s,
        lambda s: s.downloaded_at or 0.0,
        now=1.0,
    )
    assert steal is not None and steal.slot is queued  # waits 4 s there, 1 s download here
    assert abs(steal.gain_s - 3.0) < 1e-9


def test_no_steal_when_waiting_costs_less_than_downloading_again() -> None:
    running = slot("a", Phase.ANALYSING, 3.0, downloaded_at=0.0)
    queued = slot("b", Phase.ANALYSING, 2.0, downloaded_at=0.5)
    bound = {"y": [running, queued]}
    steal = choose_steal(
        [running, queued],
        bound.__getitem__,
        lambda s: 1.0 + s.expected_s,
        lambda s: s.downloaded_at or 0.0,
        now=2.5,  # "a" has 0.5 s left
    )
    assert steal is None
