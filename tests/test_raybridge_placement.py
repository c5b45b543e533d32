"""Node choice over a cluster snapshot: pure, no Ray, no Redis."""

from __future__ import annotations

from collections import Counter

from raybridge.placement import ClusterSnapshot, NodeView, analysers_wanted, choose_node


def gpu_node(name: str, gpus: int = 1, slots: float = 1, **kw: object) -> NodeView:
    return NodeView(name, gpus=gpus, download_slots=slots, analysers=gpus, **kw)  # type: ignore[arg-type]


def place(snapshot: ClusterSnapshot, jobs: int, lookahead: int | None = None) -> Counter[str]:
    """Place jobs one after another as the bridge does (each counts on its node)."""
    assigned: Counter[str] = Counter()
    for _ in range(jobs):
        node = choose_node(snapshot.with_assigned(assigned), lookahead=lookahead)
        if node is None:
            break
        assigned[node] += 1
    return assigned


def test_goes_to_the_gpu_that_frees_soonest() -> None:
    busy = gpu_node("busy", assigned=2)
    idle = gpu_node("idle", assigned=0)
    assert choose_node(ClusterSnapshot((busy, idle))) == "idle"


def test_backlog_is_divided_by_gpus() -> None:
    # 2 jobs on 2 GPUs start after 1 round; 1 job on 1 GPU too, but the new job would wait a
    # whole round on the 1-GPU node and half as long on the 2-GPU node.
    two = gpu_node("two", gpus=2, slots=2, assigned=2)
    one = gpu_node("one", gpus=1, assigned=1)
    assert choose_node(ClusterSnapshot((one, two))) == "two"


def test_spreads_in_proportion_to_gpus() -> None:
    snapshot = ClusterSnapshot((gpu_node("two", gpus=2, slots=2), gpu_node("one", gpus=1)))
    assert place(snapshot, jobs=6) == {"two": 4, "one": 2}


def test_lookahead_bounds_what_a_node_holds() -> None:
    snapshot = ClusterSnapshot((gpu_node("a"), gpu_node("b")))
    # default look-ahead: one job per analyser besides the one being analysed
    assert place(snapshot, jobs=10) == {"a": 2, "b": 2}
    assert place(snapshot, jobs=10, lookahead=0) == {"a": 1, "b": 1}
    assert place(snapshot, jobs=10, lookahead=3) == {"a": 4, "b": 4}


def test_full_cluster_leaves_the_job_waiting() -> None:
    snapshot = ClusterSnapshot((gpu_node("a", assigned=2),))
    assert choose_node(snapshot) is None


def test_dead_nodes_and_nodes_without_analysers_or_slots_are_skipped() -> None:
    snapshot = ClusterSnapshot(
        (
            gpu_node("dead", alive=False),
            NodeView("cpu-head", download_slots=4),  # no analyser: cannot analyse what it fetches
            gpu_node("no-slot", slots=0),
            gpu_node("ok", assigned=1),
        )
    )
    assert choose_node(snapshot) == "ok"


def test_no_gpu_cluster_uses_cpu_analysers() -> None:
    nodes = (NodeView("n1", download_slots=2), NodeView("n2", download_slots=2))
    snapshot = ClusterSnapshot(nodes)
    assert not snapshot.has_gpus
    wanted = {n.node_id: analysers_wanted(n, on_gpus=False, cpu_per_node=2) for n in nodes}
    assert wanted == {"n1": 2, "n2": 2}
    with_actors = ClusterSnapshot(tuple(NodeView(n, download_slots=2, analysers=2) for n in wanted))
    assert place(with_actors, jobs=8) == {"n1": 4, "n2": 4}


def test_analysers_wanted_on_gpus() -> None:
    assert analysers_wanted(gpu_node("g", gpus=2), on_gpus=True, cpu_per_node=1) == 2
    assert analysers_wanted(NodeView("head"), on_gpus=True, cpu_per_node=1) == 0
    assert analysers_wanted(gpu_node("x", alive=False), on_gpus=True, cpu_per_node=1) == 0


def test_resumed_job_prefers_the_node_holding_its_download() -> None:
    snapshot = ClusterSnapshot((gpu_node("a", assigned=2), gpu_node("b")))
    assert choose_node(snapshot, prefer="a") == "a"  # its video is there, even if a is full
    dead = ClusterSnapshot((gpu_node("a", alive=False), gpu_node("b")))
    assert choose_node(dead, prefer="a") == "b"
    assert choose_node(snapshot, prefer="gone") == "b"


def test_ties_are_deterministic() -> None:
    snapshot = ClusterSnapshot((gpu_node("b"), gpu_node("a")))
    assert choose_node(snapshot) == "a"


def test_a_node_takes_no_more_downloads_than_it_has_slots() -> None:
    # The 2-GPU node has look-ahead room (2 of 4) but both its download slots are taken: a
    # third download would queue in Ray, where a look-ahead job can take the slot a job for an
    # idle GPU needs. The job goes to the other node, or waits when no slot is free anywhere.
    busy = gpu_node("two", gpus=2, slots=2, assigned=2, downloading=2)
    assert busy.has_room(lookahead=None) is False
    other = gpu_node("one", gpus=1, slots=1, assigned=1, downloading=0)
    assert choose_node(ClusterSnapshot((busy, other))) == "one"
    full = gpu_node("one", gpus=1, slots=1, assigned=1, downloading=1)
    assert choose_node(ClusterSnapshot((busy, full))) is None
    # once a download ends (downloading falls), the node takes the next job again
    freed = gpu_node("two", gpus=2, slots=2, assigned=2, downloading=1)
    assert choose_node(ClusterSnapshot((freed, full))) == "two"


def test_snapshot_carries_download_counts() -> None:
    snapshot = ClusterSnapshot((gpu_node("a", gpus=2, slots=2),)).with_assigned({"a": 3}, {"a": 2})
    node = snapshot.nodes[0]
    assert (node.assigned, node.downloading) == (3, 2)
    assert choose_node(snapshot) is None


# -- by expected work --------------------------------------------------------------------------


def test_a_job_of_known_length_goes_where_it_finishes_first() -> None:
    # Fewer jobs on "few", but they are long: 20 s of backlog on one GPU against 6 s on two.
    few = gpu_node("few", assigned=1, backlog_s=20.0, pace=0.1, download_s=1.0)
    many = gpu_node("many", gpus=2, slots=2, assigned=5, backlog_s=6.0, pace=0.1, download_s=1.0)
    snapshot = ClusterSnapshot((few, many))
    assert choose_node(snapshot, lookahead=4) == "few"  # the count rule: fewer jobs per GPU
    assert choose_node(snapshot, lookahead=4, media_s=30.0) == "many"


def test_a_faster_node_gets_the_job_when_backlogs_match() -> None:
    slow = gpu_node("slow", pace=0.2, download_s=1.0)
    fast = gpu_node("fast", pace=0.05, download_s=1.0)
    assert choose_node(ClusterSnapshot((slow, fast)), media_s=60.0) == "fast"


def test_it_waits_for_the_best_node_rather_than_take_a_worse_one_now() -> None:
    # "best" has its only download slot busy for 0.5 s more; "worse" is free but 10 s behind.
    best = gpu_node(
        "best", downloading=1, assigned=1, backlog_s=0.0, download_s=1.0, slot_wait_s=0.5
    )
    worse = gpu_node("worse", backlog_s=10.0, download_s=1.0)
    assert choose_node(ClusterSnapshot((best, worse)), media_s=10.0) is None
    freed = gpu_node("best", backlog_s=0.0, download_s=1.0)
    assert choose_node(ClusterSnapshot((freed, worse)), media_s=10.0) == "best"
