"""Gantt charts of schedule runs: one lane per resource, one panel per design, same time axis.

Lanes, top to bottom: for each node, its download slots and its GPUs; then brief and report
(which run wherever Ray puts them). Spans of one resource group are spread over as many lanes
as were busy at once (``bounds.assign_lanes``), so a lane is one slot or one GPU. A bar's
colour and number identify its job, so a job can be followed down the chain.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from ingest.names import ANALYSE_STEP, BRIEF_STEP, DOWNLOAD_STEP, REPORT_STEP
from vidbrief.bench.bounds import Run, Span, assign_lanes

STEP_GROUP = {DOWNLOAD_STEP: DOWNLOAD_STEP, ANALYSE_STEP: "GPU"}
LANE_HEIGHT_IN = 0.32
PANEL_EXTRA_IN = 0.9
FIG_WIDTH_IN = 13
#: Bars narrower than this fraction of the axis get no job number.
LABEL_MIN_FRACTION = 0.012


def _group(span: Span, node_names: Mapping[str, str]) -> str:
    node = node_names.get(span.node, span.node[:8] or "?")
    kind = STEP_GROUP.get(span.step)
    return f"{node} {kind}" if kind else span.step


def _group_order(node_order: Sequence[str]) -> list[str]:
    return [f"{n} {k}" for n in node_order for k in (DOWNLOAD_STEP, "GPU")] + [
        BRIEF_STEP,
        REPORT_STEP,
    ]


def lanes_of(run: Run, node_names: Mapping[str, str]) -> dict[tuple[str, int], list[Span]]:
    """(resource group, lane number) → the spans drawn in that lane."""
    groups: dict[str, list[Span]] = defaultdict(list)
    for span in run.spans:
        groups[_group(span, node_names)].append(span)
    out: dict[tuple[str, int], list[Span]] = defaultdict(list)
    for group, spans in groups.items():
        for span, lane in zip(spans, assign_lanes(spans), strict=True):
            out[(group, lane)].append(span)
    return out


def _lane_labels(lanes: Mapping[tuple[str, int], list[Span]], order: list[str]) -> list[tuple]:
    rank = {g: i for i, g in enumerate(order)}
    keys = sorted(lanes, key=lambda k: (rank.get(k[0], len(order)), k[0], k[1]))
    return keys


def draw(
    runs: Sequence[tuple[str, Run]],
    node_names: Mapping[str, str],
    node_order: Sequence[str],
    title: str,
    path: Path,
) -> Path:
    """Save a PNG with one panel per (label, run); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = _group_order(node_order)
    laid_out = [(label, run, lanes_of(run, node_names)) for label, run in runs]
    heights = [max(1, len(lanes)) * LANE_HEIGHT_IN + PANEL_EXTRA_IN for _, _, lanes in laid_out]
    fig, axes = plt.subplots(
        len(runs),
        1,
        figsize=(FIG_WIDTH_IN, sum(heights)),
        sharex=True,
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    span_s = max(run.makespan_s for _, run in runs)
    jobs = sorted({s.job for _, run in runs for s in run.spans})
    index = {job: n for n, job in enumerate(jobs)}
    for ax, (label, run, lanes) in zip(axes[:, 0], laid_out, strict=True):
        _panel(ax, label, run, lanes, order, index, span_s)
    axes[-1, 0].set_xlabel("seconds since the first job was submitted")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _panel(ax, label, run, lanes, order, index, span_s) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab20").colors
    keys = _lane_labels(lanes, order)
    for row, key in enumerate(keys):
        for span in lanes[key]:
            n = index[span.job]
            left, width = span.start - run.t0, span.seconds
            ax.broken_barh(
                [(left, width)],
                (row - 0.4, 0.8),
                color=colours[n % len(colours)],
                edgecolor="black",
                linewidth=0.3,
            )
            if width > LABEL_MIN_FRACTION * span_s:
                ax.text(left + width / 2, row, str(n), ha="center", va="center", fontsize=6)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels(
        [f"{g} {lane + 1}" if _many(lanes, g) else g for g, lane in keys], fontsize=7
    )
    ax.invert_yaxis()
    ax.axvline(run.makespan_s, color="red", linewidth=0.8)
    ax.set_title(f"{label}: makespan {run.makespan_s:.2f} s", fontsize=9, loc="left")
    ax.grid(axis="x", linewidth=0.3)


def _many(lanes: Mapping[tuple[str, int], list[Span]], group: str) -> bool:
    return sum(1 for g, _ in lanes if g == group) > 1
