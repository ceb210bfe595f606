"""Parnami et al.'s Figure 8b: every head a search settled, at its cost, cheapest first.

"Pruning Attention Heads of Transformer Models Using A* Search" (2021), Figure 8b: "the sorted
cost matrix (C) shows the cost of pruned heads ... and the heads that were eliminated by the
heuristic". A head's cost is the drop from the unpruned model ``A`` with the heads pruned so far
plus this one removed (``A - P``, Section 3.2.2); it is negative when removing the head lifts the
metric above ``A``. :func:`settled_costs` reads, from a search trace, each head's cost in the
iteration that pruned or eliminated it; :func:`build_sorted_costs` draws them against the given
budget ``B``. The per-iteration cost chart and the progress panels (Figure 8c) are in
:mod:`viz.search`. Costs and budgets are in metric points.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from viz.grid import GRID_BG
from viz.search import (
    MAX_TICK_LABELS,
    STATUS_COLOURS,
    _legend_square,
    _message_figure,
    _stop_text,
    _title,
    add_budget_line,
    budget_of,
    candidate_hover,
    style_cost_axes,
)
from viz.search_trace import SearchTrace, Trace, iteration_position, parse_search_trace

__all__ = ["SETTLED_NAMES", "SettledCost", "build_sorted_costs", "settled_costs"]

SETTLED_NAMES = {  # legend names of the bar colours (STATUS_COLOURS)
    "pruned": "pruned (cost when pruned)",
    "eliminated": "eliminated (cost when eliminated)",
    "searched": "still searched (last cost)",
}


@dataclass(frozen=True)
class SettledCost:
    """One candidate (a head; a column of heads in a global search) and where the search left it.

    Attributes:
        label: the candidate's label, e.g. "L3 H7".
        heads: its ``[layer, head]`` pairs.
        cost: its cost from ``A`` (points) in ``iteration``.
        status: "pruned" or "eliminated" in ``iteration``, or "searched": still in the search
            space at the last iteration read (``cost`` is then the last one seen).
        iteration: the iteration that pruned or eliminated it, or last evaluated it.
        candidate: its candidate dict from that iteration (metric, increment, ...).
    """

    label: str
    heads: tuple[tuple[int, int], ...]
    cost: float
    status: str
    iteration: int
    candidate: Mapping[str, Any]


def settled_costs(trace: SearchTrace | Trace, iteration: int | None = None) -> list[SettledCost]:
    """Every candidate a search evaluated, at the cost it had when it was pruned or eliminated.

    Args:
        trace: the run's trace (or a parsed :class:`SearchTrace`).
        iteration: read the iterations up to this one (1-based); None = all of them.

    Returns:
        One :class:`SettledCost` per candidate label, cheapest first (ties in the order the
        candidates were first evaluated). Candidates still searched at ``iteration`` keep the
        last cost seen; heads never evaluated have no entry.

    Raises:
        ValueError: for a trace without search events, malformed events or an unknown iteration.
    """
    parsed = parse_search_trace(trace)
    position = iteration_position(parsed, iteration)
    shown = () if position is None else parsed.iterations[: position + 1]
    latest: dict[str, SettledCost] = {}
    for it in shown:
        for candidate in it["candidates"]:
            label = str(candidate["label"])
            if label in latest and latest[label].status != "searched":
                continue  # settled earlier: a pruned or eliminated head is never a candidate again
            latest[label] = SettledCost(
                label=label,
                heads=tuple((int(layer), int(head)) for layer, head in candidate["heads"]),
                cost=float(candidate["cost"]),
                status=str(candidate["status"]),
                iteration=int(it["iteration"]),
                candidate=candidate,
            )
    return sorted(latest.values(), key=lambda settled: settled.cost)


def _status_text(settled: SettledCost) -> str:
    if settled.status == "searched":
        return f"still searched (cost at iteration {settled.iteration})"
    return f"{settled.status} at iteration {settled.iteration}"


def build_sorted_costs(trace: SearchTrace | Trace, iteration: int | None = None) -> go.Figure:
    """Every head pruned or eliminated by a search at its cost then, sorted (Figure 8b).

    A pruned head is drawn at its cost in the iteration that pruned it, an eliminated head at its
    cost in the iteration that eliminated it (the last iteration of a search that stopped over
    budget eliminates every candidate left). Bars: vermillion = pruned, dark purple = eliminated,
    teal = still searched when the trace ends (a running or interrupted search), at the last cost
    seen. The dashed line is the given budget ``B``; the y axis spans negative costs too, with a
    zero line. Over 60 bars the tick labels are hidden (hover names each head). Traces written
    before costs were measured from ``A`` (non-negative costs from the previous model) draw the
    same way.

    Args:
        trace: the run's trace (or a parsed :class:`SearchTrace`).
        iteration: show the search as it stood after this iteration (1-based); None = the end.

    Returns:
        A figure whose first trace is the bar trace (``x``: labels cheapest first, ``y``: costs,
        ``marker.color``: ``STATUS_COLOURS`` of each status), then legend squares named by
        ``SETTLED_NAMES``. The budget line is the shape named "budget".

    Raises:
        ValueError: for a trace without search events, malformed events or an unknown iteration.
    """
    parsed = parse_search_trace(trace)
    position = iteration_position(parsed, iteration)
    if position is None:
        return _message_figure("Sorted costs", f"No search iterations ({_stop_text(parsed)}).")
    rows = settled_costs(parsed, parsed.iterations[position]["iteration"])
    count = {status: sum(r.status == status for r in rows) for status in SETTLED_NAMES}
    title = (
        f"{parsed.algorithm} sorted costs: {count['pruned']} pruned, "
        f"{count['eliminated']} eliminated"
        + (f", {count['searched']} still searched" if count["searched"] else "")
    )
    if not rows:
        return _message_figure(title, "No candidates were evaluated.")

    budget = budget_of(parsed, parsed.iterations[position])
    labels, costs = [r.label for r in rows], [r.cost for r in rows]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=costs,
            marker={"color": [STATUS_COLOURS[r.status] for r in rows]},
            name="heads",
            hovertext=[candidate_hover(r.candidate, parsed.metric, _status_text(r)) for r in rows],
            hoverinfo="text",
            showlegend=False,
        )
    )
    for status, name in SETTLED_NAMES.items():
        if count[status]:
            fig.add_trace(_legend_square(name, STATUS_COLOURS[status]))
    if budget is not None:
        add_budget_line(fig, budget)

    covered = {head for r in rows for head in r.heads}
    cells = parsed.shape[0] * parsed.shape[1] if parsed.shape is not None else len(covered)
    unseen = cells - len(covered)
    summary = (
        f"cost = {parsed.metric} drop from the unpruned model when each head was pruned or "
        f"eliminated, after iteration {parsed.iterations[position]['iteration']}"
    )
    if unseen:
        summary += f" · {unseen} head{'s' * (unseen != 1)} never evaluated"
    fig.update_layout(
        title=_title(title, summary),
        height=420,
        margin={"t": 90, "b": 90, "l": 60, "r": 20},
        plot_bgcolor=GRID_BG,
        bargap=0.15 if len(rows) > MAX_TICK_LABELS else 0.3,
        legend={"orientation": "h", "x": 1.0, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
    )
    style_cost_axes(fig, labels, costs, budget, "heads")
    return fig
