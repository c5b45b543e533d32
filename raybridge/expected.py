"""Expected work on a node, and tail work stealing: pure functions over the window's slots.

A job bound to a node carries its expected analysis seconds there (``Slot.expected_s``: the
probed duration × the node's pace). A node's *backlog* is what its bound jobs still have to do:
their expected seconds, less what the analysis under way on each analyser has done already.

**Tail work stealing.** When nothing waits for a node any more (the stream's backlog is in
flight) and a node has an analyser with nothing bound to it, the jobs downloaded elsewhere but
still queued behind another analysis are candidates: the one that would finish soonest here
rather than there, by more than ``STEAL_MARGIN_S``, is taken over. Its queued analysis is
cancelled and it is downloaded again here (its video is on the other node's disk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from raybridge.window import Phase, Slot

#: A steal must gain at least this much (seconds), or the move is not worth its disruption.
STEAL_MARGIN_S = 0.25


def backlog_s(slots: Iterable[Slot], could_start: Callable[[Slot], float], now: float) -> float:
    """Expected seconds of analysis the jobs bound to a node still need.

    ``could_start(slot)``: when its analysis could begin (its video there, its analyser free);
    the earliest-queued downloaded job of each analyser counts as running since then.
    """
    total, running = 0.0, {}
    for slot in slots:
        total += slot.expected_s or 0.0
        if slot.phase is Phase.ANALYSING and slot.downloaded_at is not None:
            first = running.get(id(slot.analyser))
            if first is None or slot.downloaded_at < first.downloaded_at:
                running[id(slot.analyser)] = slot
    for slot in running.values():
        done = max(0.0, now - could_start(slot))
        total -= min(done, slot.expected_s or 0.0)
    return max(total, 0.0)


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


def queued_start_s(slot: Slot, others: list[Slot], now: float, could_start: Callable) -> float:
    """Seconds until ``slot``'s analysis may start: the expected work ahead of it on its
    analyser (jobs downloaded before it, the one running counted by what it has left)."""
    ahead = [
        s
        for s in others
        if s.analyser is slot.analyser
        and s is not slot
        and s.phase is Phase.ANALYSING
        and s.downloaded_at is not None
        and slot.downloaded_at is not None
        and s.downloaded_at <= slot.downloaded_at
    ]
    return backlog_s(ahead, could_start, now)


def choose_steal(
    candidates: list[Slot],
    bound: Callable[[str], list[Slot]],
    here_s: Callable[[Slot], float],
    could_start: Callable[[Slot], float],
    now: float,
) -> Steal | None:
    """The queued job that gains most by moving here, if any gains more than the margin.

    ``here_s(slot)``: seconds until it would be analysed here (download + expected analysis).
    Only downloaded jobs queued behind another analysis are candidates.
    """
    best: Steal | None = None
    for slot in candidates:
        if slot.phase is not Phase.ANALYSING or slot.node_id is None or slot.expected_s is None:
            continue
        wait = queued_start_s(slot, bound(slot.node_id), now, could_start)
        if wait <= 0:
            continue  # it is the one running (or about to): leave it
        gain = wait + slot.expected_s - here_s(slot)
        if gain > STEAL_MARGIN_S and (best is None or gain > best.gain_s):
            best = Steal(slot, gain)
    return best
