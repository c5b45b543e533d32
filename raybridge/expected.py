"""Expected work on a node, and tail work stealing: pure functions over the window's slots.

A job bound to a node carries its expected analysis seconds there (``Slot.expected_s``: the
probed duration × the node's pace). A node's *backlog* is what its bound jobs still have to do:
their expected seconds, less what the analyses under way have done already.

**Tail work stealing.** When nothing waits for a node any more (the stream's backlog is in
flight) and a node has an analyser with nothing bound to it, the jobs downloaded elsewhere but
still waiting for an analyser there are candidates: the one that would finish soonest here
rather than there, by more than ``STEAL_MARGIN_S``, is taken over. It leaves the other node's
queue (its analysis was never sent: fleet.py sends an analysis only to a free analyser) and is
downloaded again here (its video is on the other node's disk).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from raybridge.window import Phase, Slot

#: A steal must gain at least this much (seconds), or the move is not worth its disruption.
STEAL_MARGIN_S = 0.25


def backlog_s(slots: Iterable[Slot], now: float) -> float:
    """Expected seconds of analysis the jobs bound to a node still need: each job's expected
    seconds, less what an analysis under way (``analysis_started_at``) has done already."""
    total = 0.0
    for slot in slots:
        expected = slot.expected_s or 0.0
        if slot.analysis_started_at is not None:
            expected -= min(max(0.0, now - slot.analysis_started_at), expected)
        total += expected
    return total


def slot_wait_s(bound: Iterable[Slot], slots: float, download_s: float, now: float) -> float:
    """Seconds until one of a node's ``slots`` download slots frees (0 when one is free), from
    its jobs ``bound`` there and its measured download time."""
    running = [s for s in bound if s.phase is Phase.DOWNLOADING]
    if not running or len(running) < slots:
        return 0.0
    return min(max(0.0, download_s - (now - (s.launched_at or now))) for s in running)


def update_expected(slots: Iterable[Slot], paces: Mapping[str, float | None]) -> None:
    """Each bound job's expected seconds from its node's pace as measured now (a job placed
    before any pace was known would otherwise weigh its node down for its whole stay)."""
    known = [p for p in paces.values() if p is not None]
    mean = sum(known) / len(known) if known else 1.0
    for slot in slots:
        if slot.media_s is not None and slot.node_id is not None:
            pace = paces.get(slot.node_id)
            slot.expected_s = slot.media_s * (pace if pace is not None else mean)


@dataclass(frozen=True)
class Steal:
    slot: Slot
    gain_s: float


def queued_start_s(slot: Slot, bound: list[Slot], analysers: int, now: float) -> float:
    """Seconds until ``slot``'s analysis may start on its node: its analysers free up as the
    analyses under way end, and the jobs downloaded before it take them first (the order in
    which the bridge hands a node's downloaded jobs to its free analysers)."""
    free_in = sorted(
        max(0.0, (s.expected_s or 0.0) - (now - s.analysis_started_at))
        for s in bound
        if s.analysis_started_at is not None
    )
    free_in = ([0.0] * max(analysers - len(free_in), 0) + free_in)[: max(analysers, 1)]
    if not free_in:
        return 0.0
    ahead = sorted(
        (s for s in bound if _queued(s) and s is not slot and _before(s, slot)),
        key=lambda s: s.downloaded_at or 0.0,
    )
    heapq.heapify(free_in)
    for other in ahead:  # each takes the analyser that frees first
        heapq.heapreplace(free_in, free_in[0] + (other.expected_s or 0.0))
    return free_in[0]


def _queued(slot: Slot) -> bool:
    """Downloaded and waiting in the bridge for one of its node's analysers."""
    return (
        slot.phase is Phase.ANALYSING
        and slot.downloaded_at is not None
        and slot.analysis_started_at is None
    )


def _before(other: Slot, slot: Slot) -> bool:
    return (other.downloaded_at or 0.0) <= (slot.downloaded_at or 0.0)


def choose_steal(
    candidates: list[Slot],
    bound: Callable[[str], list[Slot]],
    analysers: Callable[[str], int],
    here_s: Callable[[Slot], float],
    now: float,
) -> Steal | None:
    """The queued job that gains most by moving here, if any gains more than the margin.

    ``here_s(slot)``: seconds until it would be analysed here (download + expected analysis).
    Only downloaded jobs still waiting in the bridge for an analyser of their node are
    candidates (one sent to an analyser is running: it stays).
    """
    best: Steal | None = None
    for slot in candidates:
        if not _queued(slot) or slot.node_id is None or slot.expected_s is None:
            continue
        wait = queued_start_s(slot, bound(slot.node_id), analysers(slot.node_id), now)
        if wait <= 0:
            continue  # an analyser is about to take it: leave it
        gain = wait + slot.expected_s - here_s(slot)
        if gain > STEAL_MARGIN_S and (best is None or gain > best.gain_s):
            best = Steal(slot, gain)
    return best
