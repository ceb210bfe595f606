"""Figures of head-pruning search traces: A* (with its local / global baselines) and random trials.

:func:`parse_search_trace` (:mod:`viz.search_trace`) picks the search events out of a stored
trace; the builders here replay them after Parnami et al., "Pruning Attention Heads of Transformer
Models Using A* Search" (2021): the head grid at an iteration, that iteration's sorted candidate
costs against the budget, metric / budget used / heads searched per iteration (their Figure 8c)
and random trials against the searches (Figures 9 and 10); every head at its cost when it was
pruned or eliminated (Figure 8b) is in :mod:`viz.search_figure8`.
A cost is the drop from the unpruned model ``A`` (``A - P``, their Section 3.2.2), negative when
removing a head lifts the metric above ``A``; a head is pruned while its cost, clamped at 0, is
within the given budget ``B``. Masks are bool ``(n_layers, n_heads)``, **True = keep**; costs and
budgets are in metric points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.grid import (
    GRID_BG,
    KEPT_COLOUR,
    MARGIN_LEFT,
    MARK_COLOUR,
    REMOVED_COLOUR,
    cell_font_size,
    format_score,
    grid_cell_px,
    head_labels,
    layer_labels,
    legend_below,
    style_grid_axes,
)
from viz.search_trace import (
    SearchTrace,
    Trace,
    check_trial,
    iteration_position,
    parse_search_trace,
    search_iterations,
    zero_budget_iteration,
)

__all__ = [
    "SearchTrace",
    "build_cost_chart",
    "build_random_vs_search",
    "build_search_mask",
    "build_search_progress",
    "parse_search_trace",
    "search_iterations",
]

ELIMINATED_COLOUR = "#440154"  # Viridis' dark end: kept for good, out of the search
PRUNED_COLOUR = "#d55e00"  # Okabe-Ito vermillion: pruned at the shown iteration, replay marker
METRIC_COLOUR = "#0072b2"  # Okabe-Ito blue
# Okabe-Ito, for the lines of the searches compared with random trials.
SEARCH_LINE_COLOURS = ("#d55e00", "#0072b2", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")
STATUS_COLOURS = {"pruned": PRUNED_COLOUR, "eliminated": ELIMINATED_COLOUR, "searched": KEPT_COLOUR}
STATUS_NAMES = {"pruned": "pruned", "eliminated": "eliminated", "searched": "still searched"}
MAX_TICK_LABELS = 60
BUDGET_TEXT = "budget B (a head is pruned while its cost from A stays under it)"
FREE_TEXT = "free: the metric stays at or above A"

# Cell states of the search grid (z of its heatmap).
CELL_SEARCHED, CELL_ELIMINATED, CELL_REMOVED, CELL_PRUNED_NOW = 0, 1, 2, 3
CELL_NAMES = (
    "kept, still searched",
    "kept, eliminated (estimated cost did not fit the budget)",
    "pruned earlier",
    "pruned at this iteration",
)
CELL_COLOURS = (KEPT_COLOUR, ELIMINATED_COLOUR, REMOVED_COLOUR, PRUNED_COLOUR)
CELL_COLOURSCALE = [  # stepped: state k gets exactly CELL_COLOURS[k] on zmin=0..zmax=3
    [bound, colour]
    for k, colour in enumerate(CELL_COLOURS)
    for bound in (k / len(CELL_COLOURS), (k + 1) / len(CELL_COLOURS))
]
_LINE = {"color": MARK_COLOUR, "width": 1.2}
_STOP_REASONS = {  # pruning.methods.search_core's codes
    "search_space_empty": "no candidates left",
    "over_budget": "the cheapest candidate's cost from the unpruned model exceeds the budget",
    "trials_done": "all trials done",
}
_SQUARE_EDGE = {"color": "#999999", "width": 1}


def _message_figure(title: str, message: str) -> go.Figure:
    """A figure that says why there is nothing to draw."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    fig.update_layout(title={"text": title, "x": 0.0}, height=260, plot_bgcolor=GRID_BG)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _title(main: str, summary: str) -> dict[str, Any]:
    return {"text": f"{main}<br><sup>{summary}</sup>", "x": 0.0}


def _heads_text(heads: Sequence[Sequence[int]]) -> str:
    return ", ".join(f"L{layer} H{head}" for layer, head in heads) or "none"


def _stop_text(parsed: SearchTrace) -> str:
    reason = (parsed.done or {}).get("stop_reason")
    if not reason:
        return "search still running"
    return f"stopped: {_STOP_REASONS.get(reason, str(reason).replace('_', ' '))}"


def _legend_square(name: str, colour: str) -> go.Scatter:
    marker = {"symbol": "square", "size": 13, "color": colour, "line": _SQUARE_EDGE}
    return go.Scatter(
        x=[None], y=[None], mode="markers", marker=marker, name=name, hoverinfo="skip"
    )


def build_search_mask(
    trace: SearchTrace | Trace, iteration: int | None = None, *, title: str = ""
) -> go.Figure:
    """Layer x head grid of a search at one iteration: pruned, eliminated and searched heads.

    Cells: teal = kept and still searched; dark purple = eliminated (its cost no longer fits the
    budget: kept for good); grey = pruned at an earlier iteration; vermillion = pruned at this
    iteration. Pruned cells show their pruning step (1, 2, 3, ...; a global search prunes a whole
    column in one step). The hover names the head, its state and the iteration it changed.

    Args:
        trace: the run's trace (or a parsed :class:`SearchTrace`).
        iteration: iteration number to show (1-based); None = the last one.
        title: first title line (default: the search and iteration); the counts go below it.

    Returns:
        A figure with one heatmap trace (``z``: the state 0..3 of each ``(n_layers, n_heads)``
        head, see ``CELL_NAMES``; ``text``: the pruning step) and legend-only marker traces.
        Before any iteration every head is drawn as still searched.

    Raises:
        ValueError: for a trace without search events, malformed events or an iteration that
            the trace does not have.
    """
    parsed = parse_search_trace(trace)
    position = iteration_position(parsed, iteration)
    if parsed.shape is None:
        return _message_figure("Search mask", "This trace has no head search, only random trials.")
    n_layers, n_heads = parsed.shape
    state = np.full(parsed.shape, CELL_SEARCHED, dtype=np.int8)
    step, when = np.zeros(parsed.shape, dtype=int), np.zeros(parsed.shape, dtype=int)
    shown = [] if position is None else parsed.iterations[: position + 1]
    n_steps = 0
    for it in shown:
        n_steps += bool(it["pruned"])
        for layer, head in it["pruned"]:
            state[layer, head] = CELL_PRUNED_NOW if it is shown[-1] else CELL_REMOVED
            step[layer, head], when[layer, head] = n_steps, it["iteration"]
        for candidate in it["candidates"]:
            for layer, head in candidate["heads"] if candidate["status"] == "eliminated" else []:
                state[layer, head], when[layer, head] = CELL_ELIMINATED, it["iteration"]

    def describe(layer: int, head: int) -> str:
        text = f"Layer {layer} · Head {head}<br>{CELL_NAMES[state[layer, head]]}"
        if step[layer, head]:
            return f"{text}<br>pruned at iteration {when[layer, head]} (step {step[layer, head]})"
        return (
            f"{text}<br>eliminated at iteration {when[layer, head]}" if when[layer, head] else text
        )

    hover = [[describe(layer, head) for head in range(n_heads)] for layer in range(n_layers)]
    cell = grid_cell_px(n_layers, n_heads)
    heatmap = go.Heatmap(
        z=state.tolist(),
        x=head_labels(n_heads),
        y=layer_labels(n_layers),
        zmin=0,
        zmax=len(CELL_NAMES) - 1,
        colorscale=CELL_COLOURSCALE,
        showscale=False,
        text=[[str(s) if s else "" for s in row] for row in step],
        texttemplate="%{text}",
        textfont={"size": cell_font_size(cell)},  # no colour: plotly picks one that contrasts
        hovertext=hover,
        hoverinfo="text",
        xgap=2,
        ygap=2,
        name="search state",
    )
    states = range(len(CELL_NAMES)) if position is not None else [CELL_SEARCHED]
    fig = go.Figure([heatmap, *(_legend_square(CELL_NAMES[s], CELL_COLOURS[s]) for s in states)])

    count = [int((state == s).sum()) for s in range(len(CELL_NAMES))]
    where = (
        f"before its first iteration ({_stop_text(parsed)})"
        if position is None
        else f"iteration {parsed.iterations[position]['iteration']} of {len(parsed.iterations)}"
    )
    summary = (
        f"{count[CELL_REMOVED] + count[CELL_PRUNED_NOW]} of {state.size} heads pruned · "
        f"{count[CELL_ELIMINATED]} eliminated · {count[CELL_SEARCHED]} still searched"
    )
    top, bottom, plot_h = 90, 70, max(n_layers * cell, 120)
    fig.update_layout(
        title=_title(title or f"{parsed.algorithm} search, {where}", summary),
        height=plot_h + top + bottom,
        width=max(MARGIN_LEFT + max(n_heads * cell, 120) + 40, 520),
        margin={"t": top, "b": bottom, "l": MARGIN_LEFT, "r": 20},
        plot_bgcolor=GRID_BG,
        legend=legend_below(plot_h),
    )
    style_grid_axes(fig, cell_px=cell)
    return fig


def cost_axis_range(costs: Sequence[float], budget: float | None) -> list[float]:
    """y range of a cost chart: every cost (negative ones too), zero and the budget, 12% spare."""
    bottom = min([0.0, *costs]) * 1.12
    top = max([0.0, *costs, *([] if budget is None else [budget])]) * 1.12
    if top == bottom:
        return [0.0, 1.0]
    return [bottom, max(top, 0.06 * (top - bottom))]  # room above zero when every cost is < 0


def add_budget_line(fig: go.Figure, budget: float) -> None:
    """The given budget ``B`` as the dashed horizontal shape named "budget"."""
    fig.add_hline(
        y=budget,
        line={**_LINE, "dash": "dash"},
        name="budget",
        annotation_text=f"{BUDGET_TEXT}: {format_score(budget)}",
        annotation_position="top left",
    )


def style_cost_axes(
    fig: go.Figure, labels: list[str], costs: list[float], budget: float | None, what: str
) -> None:
    """Category x axis in bar order (tick labels hidden when crowded) and the cost y axis."""
    crowded = len(labels) > MAX_TICK_LABELS
    fig.update_xaxes(
        type="category",
        categoryorder="array",
        categoryarray=labels,
        showticklabels=not crowded,
        title=f"{what}, cheapest first{' (hover for names)' if crowded else ''}",
    )
    fig.update_yaxes(
        title="cost: drop from A (metric points)",
        gridcolor="#eeeeee",
        range=cost_axis_range(costs, budget),
        zeroline=True,
        zerolinecolor=MARK_COLOUR,
        zerolinewidth=1,
    )


def budget_of(parsed: SearchTrace, it: Mapping[str, Any] | None = None) -> float | None:
    """The given budget ``B`` (the iteration's, else the trace's), or None when none says."""
    budget = (it or {}).get("budget")
    budget = parsed.info("budget") if budget is None else budget
    return None if budget is None else float(budget)


def build_cost_chart(trace: SearchTrace | Trace, iteration: int | None = None) -> go.Figure:
    """One iteration's candidates sorted by cost, coloured by what the search did with them.

    A candidate's cost is the drop from the unpruned model ``A`` with the heads pruned so far
    plus this one removed (``A - P``, Parnami et al. Section 3.2.2); it is negative when removing
    the head lifts the metric above ``A``. Bars: vermillion = pruned, dark purple = eliminated,
    teal = still searched; candidates with cost <= 0 are free (the metric stays at or above
    ``A``) and get a dot on the zero line, so those of cost 0 stay visible. The dashed line is the
    given budget ``B``: the cheapest candidate is pruned while its cost (clamped at 0) stays
    under it (Figure 6, line 11). The hover shows the cost, the metric without the candidate, its
    Figure 6 line 20 increment when the trace has one, and its status. Over 60 bars the tick
    labels are hidden (hover names each candidate). Traces written before costs were measured
    from ``A`` (non-negative costs from the previous model) draw the same way.

    Args:
        trace: the run's trace (or a parsed :class:`SearchTrace`).
        iteration: iteration number (1-based); None = the last one.

    Returns:
        A figure whose first trace is the bar trace (``x``: candidate labels cheapest first,
        ``y``: costs, ``marker.color``: status colours); then the free-candidate dots (named
        ``FREE_TEXT``) and legend entries. The budget line is the shape named "budget"; the y
        axis spans every cost, negative ones included, with a zero line.

    Raises:
        ValueError: for a trace without search events, malformed events or an unknown iteration.
    """
    parsed = parse_search_trace(trace)
    position = iteration_position(parsed, iteration)
    if position is None:
        return _message_figure("Candidate costs", f"No search iterations ({_stop_text(parsed)}).")
    it = parsed.iterations[position]
    number, candidates = it["iteration"], sorted(it["candidates"], key=lambda c: float(c["cost"]))
    title = (
        f"Iteration {number}: costs of {len(candidates)} candidates "
        f"({parsed.metric} drop from the unpruned model)"
    )
    if not candidates:
        return _message_figure(title, f"No candidates were evaluated at iteration {number}.")

    budget = budget_of(parsed, it)
    labels = [str(c["label"]) for c in candidates]
    costs = [float(c["cost"]) for c in candidates]
    colours = [STATUS_COLOURS[c["status"]] for c in candidates]
    hover = [candidate_hover(c, parsed.metric) for c in candidates]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=costs,
            marker={"color": colours},
            name="candidates",
            hovertext=hover,
            hoverinfo="text",
            showlegend=False,
        )
    )
    free = [i for i, cost in enumerate(costs) if cost <= 0.0]
    if free:
        fig.add_scatter(
            x=[labels[i] for i in free],
            y=[0.0] * len(free),
            mode="markers",
            marker={  # the pruned candidate's dot is larger, so it stands out among many
                "color": [colours[i] for i in free],
                "size": [10 if candidates[i]["status"] == "pruned" else 6 for i in free],
                "line": {"color": MARK_COLOUR, "width": 1},
            },
            hovertext=[hover[i] for i in free],
            hoverinfo="text",
            name=FREE_TEXT,
            showlegend=False,
        )
    for status, colour in STATUS_COLOURS.items():
        if any(c["status"] == status for c in candidates):
            fig.add_trace(_legend_square(STATUS_NAMES[status], colour))
    if free:
        dot = {"color": "white", "size": 8, "line": {"color": MARK_COLOUR, "width": 1}}
        fig.add_scatter(x=[None], y=[None], mode="markers", marker=dot, name=FREE_TEXT)
    if budget is not None:
        add_budget_line(fig, budget)
    eliminated = sum(c["status"] == "eliminated" for c in candidates)
    summary = (
        f"{'pruned ' + _heads_text(it['pruned']) if it['pruned'] else 'nothing pruned'} · "
        f"{eliminated} eliminated · {len(free)} free"
    )
    fig.update_layout(
        title=_title(title, summary),
        height=420,
        margin={"t": 90, "b": 90, "l": 60, "r": 20},
        plot_bgcolor=GRID_BG,
        bargap=0.15 if len(candidates) > MAX_TICK_LABELS else 0.3,
        legend={"orientation": "h", "x": 1.0, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
    )
    style_cost_axes(fig, labels, costs, budget, "candidates")
    return fig


def candidate_hover(candidate: Mapping[str, Any], metric: str, status: str = "") -> str:
    """Hover of a candidate: its cost from A, the metric without it, its increment, its status."""
    lines = [
        str(candidate["label"]),
        f"cost from A: {format_score(float(candidate['cost']))} points",
        f"{metric} without it: {format_score(float(candidate['metric']))}",
    ]
    if candidate.get("increment") is not None:
        increment = format_score(float(candidate["increment"]))
        lines.append(f"increment (Figure 6, line 20): {increment} points")
    return "<br>".join([*lines, status or STATUS_NAMES[candidate["status"]]])


def build_search_progress(trace: SearchTrace | Trace, iteration: int | None = None) -> go.Figure:
    """Metric, budget used and heads searched per iteration (Parnami et al.'s Figure 8c).

    Top: the metric after each iteration (iteration 0 = the unpruned baseline ``A``), ``A``
    dotted and the floor ``A - B`` dashed; A* often lifts the metric above ``A`` first, then
    brings it back down. Middle: budget used, ``max(0, A - metric)`` (0 while the metric is at or
    above ``A``), the given budget ``B`` dashed. Bottom: heads searched (candidates evaluated) in
    each iteration; it falls once elimination starts. A dotted vertical line through every panel
    marks the zero-budget point (Table 3's "with zero budget": the last state before the metric
    first falls below ``A``, after which the budget is first used); with ``iteration`` a solid
    line marks the replayed iteration.

    Args:
        trace: the run's trace (or a parsed :class:`SearchTrace`).
        iteration: iteration to mark for a replay; None = no marker.

    Returns:
        A figure with the traces "metric" and "budget used" (``x`` = ``[0, *iterations]``) and
        "heads searched" (``x`` = iterations). The shapes "baseline", "floor" and "budget" are the
        reference lines, "zero-budget point" (absent when the metric never falls below ``A``) and
        "iteration marker" the vertical markers.

    Raises:
        ValueError: for a trace without search events, malformed events or an unknown iteration.
    """
    parsed = parse_search_trace(trace)
    if iteration is not None:
        iteration_position(parsed, iteration)
    its = parsed.iterations
    if not its:
        return _message_figure(
            "Search progress", f"The search made no iterations ({_stop_text(parsed)})."
        )
    baseline, budget = float(parsed.info("baseline")), float(parsed.info("budget"))
    numbers = [0, *(int(it["iteration"]) for it in its)]
    pruned = ["unpruned model", *(f"pruned {_heads_text(it['pruned'])}" for it in its)]
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.09,
        row_heights=[0.4, 0.3, 0.3],
        subplot_titles=[f"{parsed.metric} after each iteration", "Budget used", "Heads searched"],
    )
    used = [0.0, *(float(it["budget_used"]) for it in its)]
    series = [
        ("metric", [baseline, *(float(it["metric"]) for it in its)], METRIC_COLOUR),
        ("budget used", used, KEPT_COLOUR),
    ]
    for row, (name, values, colour) in enumerate(series, start=1):
        hover = [
            f"iteration {n}<br>{name}: {format_score(v)}<br>{p}"
            for n, v, p in zip(numbers, values, pruned, strict=True)
        ]
        line = go.Scatter(x=numbers, y=values, mode="lines+markers", line_color=colour, name=name)
        fig.add_trace(line.update(hovertext=hover, hoverinfo="text"), row=row, col=1)
    bars = go.Bar(
        x=numbers[1:],
        y=[int(it["evaluations_this_iteration"]) for it in its],
        marker={"color": ELIMINATED_COLOUR},
        name="heads searched",
        hovertext=[
            f"iteration {it['iteration']}: {it['evaluations_this_iteration']} heads searched "
            f"({it['evaluations_this_iteration']} evaluations, {it.get('evaluations', '?')} so far)"
            for it in its
        ],
        hoverinfo="text",
    )
    fig.add_trace(bars, row=3, col=1)
    for row, y, dash, name in [
        (1, baseline, "dot", "baseline"),
        (1, baseline - budget, "dash", "floor"),
        (2, budget, "dash", "budget"),
    ]:
        fig.add_hline(
            y=y,
            line={**_LINE, "dash": dash},
            name=name,
            annotation_text=f"{name} {format_score(y)}",
            annotation_position="bottom right",
            row=row,
            col=1,
        )
    zero = zero_budget_iteration(parsed)
    if zero is not None:  # x axes are shared: one line through all three panels
        fig.add_shape(
            type="line",
            x0=zero,
            x1=zero,
            y0=0,
            y1=1,
            yref="paper",
            line={**_LINE, "dash": "dot"},
            name="zero-budget point",
        )
        fig.add_annotation(
            x=zero,
            y=0.02,
            yref="y domain",
            text="budget first used",
            showarrow=False,
            xanchor="left",
            yanchor="bottom",
            font={"size": 11},
            name="zero-budget point",
        )
    if iteration is not None:
        fig.add_shape(
            type="line",
            x0=iteration,
            x1=iteration,
            y0=0,
            y1=1,
            yref="paper",
            line={"color": PRUNED_COLOUR, "width": 2},
            opacity=0.7,
            name="iteration marker",
        )
    evaluations = (parsed.done or its[-1]).get("evaluations", its[-1].get("evaluations"))
    summary = (
        f"{parsed.algorithm}: {sum(len(it['pruned']) for it in its)} heads pruned in {len(its)} "
        f"iterations, {evaluations} evaluations<br>{_zero_budget_text(parsed, zero)}; "
        f"{_stop_text(parsed)}"
    )
    fig.update_layout(
        title=_title("Search progress", summary),
        height=640,
        margin={"t": 120, "b": 50, "l": 60, "r": 20},
        plot_bgcolor=GRID_BG,
        showlegend=False,
    )
    fig.update_xaxes(tick0=0, dtick=max(1, int(np.ceil(len(numbers) / 15))), gridcolor="#eeeeee")
    fig.update_xaxes(title="iteration", row=3, col=1)
    fig.update_yaxes(gridcolor="#eeeeee")
    fig.update_yaxes(title=f"{parsed.metric} (points)", row=1, col=1)
    fig.update_yaxes(
        title="budget used (points)", range=[0, max(budget, *used) * 1.2 or 1.0], row=2, col=1
    )
    fig.update_yaxes(title="heads searched", row=3, col=1)
    return fig


def _zero_budget_text(parsed: SearchTrace, zero: int | None) -> str:
    """Table 3's "with zero budget" column: heads pruned before the budget is first used."""
    if zero is None:
        return "budget never used"
    heads = sum(len(it["pruned"]) for it in parsed.iterations if int(it["iteration"]) <= zero)
    return f"with zero budget {heads} heads pruned (iteration {zero})"


def _random_trials(source: SearchTrace | Trace) -> tuple[list[dict[str, Any]], float | None]:
    """The trials of a random run's trace, or of a list of trial dicts, and the trace's budget."""
    items = list(source) if isinstance(source, list | tuple) else []
    if items and isinstance(items[0], Mapping) and "kind" not in items[0]:
        return [check_trial(t, f"trials[{i}]") for i, t in enumerate(items)], None
    parsed = parse_search_trace(source)
    budget = parsed.info("budget")
    return list(parsed.trials), None if budget is None else float(budget)


def build_random_vs_search(
    random_trace_or_trials: SearchTrace | Trace,
    search_heads_pruned: int | Mapping[str, int],
    *,
    budget: float | None = None,
    title: str = "",
) -> go.Figure:
    """Heads pruned by random trials against the searches, and the budget each trial used.

    Left (the paper's Figure 9): how many random trials pruned each number of heads, with a
    vertical line per search. Right (Figure 10): the budget used by each trial, the budget dashed.

    Args:
        random_trace_or_trials: the trace of a random run, or its trial dicts (``trial``,
            ``heads_pruned``, ``budget_used``, ``metric``).
        search_heads_pruned: heads pruned by A* (int), or by several searches by name, e.g.
            ``{"A*": 29, "Local": 27}``.
        budget: the budget line of the right panel; None = the trace's budget (none for a list).
        title: first title line.

    Returns:
        A figure with the bar trace "random trials" (``x``: every head count from the smallest
        to the largest, ``y``: trials), one line trace per search, and the bar trace "budget
        used" (``x``: trial number). The budget line is the shape named "budget".

    Raises:
        ValueError: for a trace without search events, malformed trials, or search counts that
            are not non-negative integers.
    """
    searches = (
        dict(search_heads_pruned)
        if isinstance(search_heads_pruned, Mapping)
        else {"A*": search_heads_pruned}
    )
    for name, count in searches.items():
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
            raise ValueError(
                f"search_heads_pruned[{name!r}] = {count!r}; pass the number of heads the search "
                "pruned, a non-negative integer (e.g. {'A*': 29})."
            )
    trials, trace_budget = _random_trials(random_trace_or_trials)
    budget = trace_budget if budget is None else budget
    if not trials:
        return _message_figure(title or "Random trials", "This trace has no random trials.")

    heads, n = [int(t["heads_pruned"]) for t in trials], len(trials)
    every = [*heads, *searches.values()]
    xs = list(range(min(every), max(every) + 1))
    counts = [heads.count(x) for x in xs]
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=[f"Heads pruned by {n} random trials", "Budget used per random trial"],
    )
    histogram = go.Bar(x=xs, y=counts, marker={"color": KEPT_COLOUR}, name="random trials")
    template = f"%{{x}} heads pruned: %{{y}} of {n} trials<extra></extra>"
    fig.add_trace(histogram.update(hovertemplate=template), row=1, col=1)
    shares = []
    for index, (name, count) in enumerate(searches.items()):
        fewer = sum(h < count for h in heads)
        shares.append(f"{name}: {count} heads, more than {fewer} of {n} trials")
        colour = SEARCH_LINE_COLOURS[index % len(SEARCH_LINE_COLOURS)]
        line = go.Scatter(
            x=[count, count],
            y=[0, max(counts) * 1.1],
            mode="lines",
            line={"color": colour, "width": 2.5, "dash": "dash" if index else "solid"},
            name=f"{name}: {count} heads",
            hovertext=shares[-1],
            hoverinfo="text",
        )
        fig.add_trace(line, row=1, col=1)
    numbers = [int(t.get("trial", i)) for i, t in enumerate(trials)]
    hover = [
        f"trial {k}: {t['heads_pruned']} heads pruned, budget used "
        f"{format_score(float(t['budget_used']))}"
        + (f", metric {format_score(float(t['metric']))}" if "metric" in t else "")
        for k, t in zip(numbers, trials, strict=True)
    ]
    used = go.Bar(x=numbers, y=[float(t["budget_used"]) for t in trials], name="budget used")
    used.update(marker_color=ELIMINATED_COLOUR, hovertext=hover, hoverinfo="text")
    fig.add_trace(used.update(showlegend=False), row=1, col=2)
    if budget is not None:
        fig.add_hline(
            y=budget,
            line={**_LINE, "dash": "dash"},
            name="budget",
            annotation_text=f"budget {format_score(budget)}",
            row=1,
            col=2,
        )
    fig.update_layout(
        title=_title(title or "Random pruning against search", "; ".join(shares)),
        height=440,
        margin={"t": 100, "b": 90, "l": 60, "r": 20},
        plot_bgcolor=GRID_BG,
        bargap=0.1,
        legend={"orientation": "h", "x": 0.0, "y": -0.2, "yanchor": "top"},
    )
    fig.update_xaxes(title="heads pruned", dtick=1 if len(xs) <= 20 else None, row=1, col=1)
    fig.update_xaxes(title="trial", row=1, col=2)
    fig.update_yaxes(gridcolor="#eeeeee")
    fig.update_yaxes(title="trials", row=1, col=1)
    fig.update_yaxes(title="budget used (points)", rangemode="tozero", row=1, col=2)
    return fig
