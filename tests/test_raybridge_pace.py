"""The measured look-ahead: enough downloads under way to cover the download time."""

from __future__ import annotations

from raybridge.pace import MAX_PER_ANALYSER, Pace
from raybridge.placement import ClusterSnapshot, NodeView, choose_node


def test_no_measurement_means_one_per_analyser() -> None:
    assert Pace().lookahead("n", analysers=2) is None
    node = NodeView("n", gpus=2, download_slots=4, analysers=2)
    assert node.capacity(None) == 4


def test_slow_downloads_raise_the_lookahead_fast_ones_leave_it_at_one_per_analyser() -> None:
    pace = Pace()
    t = 0.0
    for _ in range(20):  # downloads of 6 s, analyses of 2 s back to back on one GPU
        pace.downloaded("slow", t, t + 6.0)
        pace.analysed("slow", started_at=t + 6.0, ended_at=t + 8.0)
        t += 8.0
    assert pace.lookahead("slow", analysers=1) == 3  # 1 GPU × 6 s / 2 s
    assert pace.lookahead("slow", analysers=2) == 6

    for i in range(20):  # 1 s downloads, 3 s analyses: the default suffices
        pace.downloaded("fast", i, i + 1.0)
        pace.analysed("fast", started_at=i + 1.0, ended_at=i + 4.0)
    assert pace.lookahead("fast", analysers=2) == 2


def test_lookahead_is_bounded_and_forgotten_with_the_node() -> None:
    pace = Pace()
    pace.downloaded("n", 0.0, 100.0)
    pace.analysed("n", started_at=100.0, ended_at=100.0)  # a no-op analysis
    assert pace.lookahead("n", analysers=1) == MAX_PER_ANALYSER
    pace.forget("n")
    assert pace.lookahead("n", analysers=1) is None


def test_measured_lookahead_lets_a_node_hold_more_but_slots_still_bound_downloads() -> None:
    busy = NodeView("n", gpus=1, download_slots=2, analysers=1, assigned=2, downloading=1)
    assert choose_node(ClusterSnapshot((busy,))) is None  # default capacity 2 is full
    measured = NodeView(
        "n", gpus=1, download_slots=2, analysers=1, assigned=2, downloading=1, lookahead=3
    )
    assert choose_node(ClusterSnapshot((measured,))) == "n"
    assert choose_node(ClusterSnapshot((measured,)), lookahead=1) is None  # the setting wins
    slots_full = NodeView(
        "n", gpus=1, download_slots=2, analysers=1, assigned=3, downloading=2, lookahead=3
    )
    assert choose_node(ClusterSnapshot((slots_full,))) is None


def test_the_pace_per_media_second_is_shrunk_toward_the_clusters_mean() -> None:
    from raybridge.pace import Pace

    pace = Pace()
    # Identical GPUs (0.1 s per media second); the probes were off by +20 % on a, -20 % on b.
    for n in range(3):
        pace.analysed("a", n * 10.0, n * 10.0 + 3.0, media_s=30 / 1.2)
        pace.analysed("b", n * 10.0, n * 10.0 + 3.0, media_s=30 / 0.8)
    raw_a, raw_b = 1.2 * 0.1, 0.8 * 0.1
    a, b = pace.pace("a"), pace.pace("b")
    assert a is not None and b is not None
    assert abs(a - b) < (raw_a - raw_b) / 2  # three samples each: mostly the cluster's mean
    assert pace.pace("c") is None
