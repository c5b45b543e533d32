"""The in-flight window and the backpressure policy: pure bookkeeping, no Ray, no Redis."""

from __future__ import annotations

import pytest

from raybridge.window import Phase, Slot, Window, WindowFull, WindowRoom


def slot(n: int, **kw: object) -> Slot:
    return Slot(job_id=f"job-{n}", stream_id=f"{n}-0", **kw)  # type: ignore[arg-type]


def test_add_until_full_then_refuse() -> None:
    window = Window(2)
    window.add(slot(1))
    window.add(slot(2))
    assert window.free == 0 and window.occupancy == 1.0
    with pytest.raises(WindowFull, match="window of 2 is full"):
        window.add(slot(3))


def test_high_water_mark_remembers_the_most_held() -> None:
    window = Window(3)
    for n in range(3):
        window.add(slot(n))
    window.remove("job-0")
    window.remove("job-1")
    window.add(slot(9))
    assert len(window) == 2 and window.high_water == 3


def test_duplicate_job_is_refused() -> None:
    window = Window(3)
    window.add(slot(1))
    with pytest.raises(ValueError, match="already in the window"):
        window.add(slot(1))


def test_lookup_by_job_and_by_stream_id() -> None:
    window = Window(3)
    window.add(slot(1))
    assert "job-1" in window and window.get("job-1") is not None
    assert window.by_stream_id("1-0") is window.get("job-1")
    assert window.by_stream_id("2-0") is None
    assert window.stream_ids() == ["1-0"]


def test_node_bound_phases_count_against_their_node() -> None:
    window = Window(4)
    for n in range(4):
        window.add(slot(n))
    window.assign("job-0", "A")  # downloading on A
    window.assign("job-1", "A")
    window.advance("job-1", Phase.ANALYSING)  # downloaded, waiting for A's GPU
    window.assign("job-2", "B")
    window.advance("job-2", Phase.FINISHING)  # analysed: brief and report anywhere
    assert window.assigned_per_node() == {"A": 2}
    assert window.get("job-2").node_id is None  # type: ignore[union-attr]
    assert window.phases() == {"waiting": 1, "downloading": 1, "analysing": 1, "finishing": 1}


def test_window_room_policy() -> None:
    window, policy = Window(1), WindowRoom()
    assert policy.can_add_input(window)
    window.add(slot(1))
    assert not policy.can_add_input(window)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Window(0)


def test_downloading_per_node_counts_only_running_downloads() -> None:
    window = Window(4)
    for job in ("a", "b", "c"):
        window.add(Slot(job, f"{job}-0"))
        window.assign(job, "n1")
    window.advance("b", Phase.ANALYSING)
    window.advance("c", Phase.FINISHING)
    assert window.downloading_per_node() == {"n1": 1}
    assert window.assigned_per_node() == {"n1": 2}
