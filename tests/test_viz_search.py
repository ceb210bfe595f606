"""viz.search: A* traces replay as masks, cost charts, progress panels and random baselines."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from viz import (
    build_cost_chart,
    build_random_vs_search,
    build_search_mask,
    build_search_progress,
    parse_search_trace,
    search_iterations,
)
from viz.grid import KEPT_COLOUR
from viz.search import (
    BUDGET_TEXT,
    CELL_ELIMINATED,
    CELL_PRUNED_NOW,
    CELL_REMOVED,
    CELL_SEARCHED,
    ELIMINATED_COLOUR,
    FREE_TEXT,
    MAX_TICK_LABELS,
    PRUNED_COLOUR,
    STATUS_COLOURS,
    SearchTrace,
    cost_axis_range,
)
from viz.search_trace import zero_budget_iteration

# Costs from the unpruned model A (metric points lost when a head goes alone) on a 3 x 4 grid; the
# metric is additive, A - the sum of the removed heads' costs. With a budget of 1.0 A* prunes (0,0)
# (0,1) (2,0) (1,0) (2,1) (1,1) in that order (ties go to the lower (layer, head)); iteration 1
# eliminates (0,2) and every dearer head: their increments 0, 0, 0.1, 0.2, 0.3, 0.5, ... add up to
# more than the budget (Figure 6, lines 16-28).
COSTS = np.array([[0.0, 0.0, 0.5, 2.0], [0.1, 0.3, 1.5, 3.0], [0.0, 0.2, 0.8, 4.0]])
BASELINE = 90.0
ORDER = [(0, 0), (0, 1), (2, 0), (1, 0), (2, 1), (1, 1)]
# Figure 8c's shape: heads with negative costs lift the metric above A, then it falls back to A
# and below. Each head removed past the fourth costs 0.25 more (RISE_DECAY), so costs grow as the
# search goes on. Budget 0.5: 8 heads pruned, 4 eliminated (3 at iteration 1, 1 at the last).
RISE = np.array([[-0.5, -0.25, 0.0, 0.25], [-0.25, 0.0, 0.0, 0.25], [0.0, 0.25, 0.25, 2.0]])
RISE_BUDGET, RISE_DECAY, RISE_FREE = 0.5, 0.25, 4
RISE_ORDER = [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (1, 2), (2, 0), (0, 3)]
RISE_METRICS = [90.5, 90.75, 91.0, 91.0, 90.75, 90.5, 90.25, 89.75, 89.75]
TOLERANCE = 1e-9

Head = tuple[int, int]


def _event(kind: str, data: dict[str, Any], step: int) -> dict[str, Any]:
    return {"kind": kind, "step": step, "fraction": 0.5, "message": kind, "data": data}


def oracle(costs: np.ndarray, decay: float = 0.0, free: int = 0) -> Callable[[list[Head]], float]:
    """The metric without ``removed``: A - their costs - ``decay`` per head past ``free``."""

    def metric(removed: list[Head]) -> float:
        extra = decay * max(0, len(removed) - free)
        return BASELINE - float(sum(costs[h] for h in removed)) - extra

    return metric


def search_trace(
    costs: np.ndarray = COSTS,
    budget: float = 1.0,
    *,
    algorithm: str = "astar",
    decay: float = 0.0,
    free: int = 0,
) -> list[dict[str, Any]]:
    """A trace of A* (local / global: no elimination) on the :func:`oracle`, by hand.

    Follows Figure 6 as pruning.methods.search_core does (test_fixture_matches_search_core
    checks it): costs from A, the cheapest pruned while its clamped cost is <= the budget,
    increments ``max(0, C_y) - C_x`` eliminating from the first one that does not fit.
    """
    n_layers, n_heads = costs.shape
    metric_of = oracle(costs, decay, free)
    if algorithm == "global":
        units = [tuple((layer, h) for layer in range(n_layers)) for h in range(n_heads)]
    else:
        units = [((layer, h),) for layer in range(n_layers) for h in range(n_heads)]

    def label(unit: tuple[Head, ...]) -> str:
        return (
            f"H{unit[0][1]}, all layers"
            if algorithm == "global"
            else f"L{unit[0][0]} H{unit[0][1]}"
        )

    events = [_event("stage", {"stage": "evaluating"}, 0)]
    start = {
        "algorithm": algorithm,
        "baseline": BASELINE,
        "budget": budget,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "search_space": len(units),
    }
    events.append(_event("search_start", {**start, "metric": "accuracy"}, 1))
    space, mask, removed = list(units), np.ones(costs.shape, dtype=bool), []
    current, evaluations, iteration, stop = BASELINE, 1, 0, "search_space_empty"
    while space:
        iteration += 1
        metrics = {u: metric_of([*removed, *u]) for u in space}
        cost = {u: BASELINE - metrics[u] for u in space}
        ordered = sorted(space, key=lambda u: (cost[u], units.index(u)))
        best, evaluations = ordered[0], evaluations + len(ordered)
        pruned_cost = max(0.0, cost[best])
        status = dict.fromkeys(space, "eliminated")
        increments: dict[tuple[Head, ...], float] = {}
        fits = pruned_cost <= budget + TOLERANCE
        space = []
        if fits:
            removed += list(best)
            for head in best:
                mask[head] = False
            status[best] = "pruned"
            space, total = ordered[1:], 0.0
            if algorithm == "astar":
                increments = {u: max(0.0, cost[u]) - pruned_cost for u in space}
                for position, u in enumerate(space):
                    total += increments[u]
                    if total > budget - pruned_cost + TOLERANCE:
                        space = space[:position]
                        break
            status.update(dict.fromkeys(space, "searched"))
            current = metrics[best]
        used = max(0.0, BASELINE - current)
        data = {
            "iteration": iteration,
            "algorithm": algorithm,
            "pruned": [list(h) for h in best] if fits else [],
            "cost": pruned_cost,
            "budget": budget,
            "budget_used": used,
            "budget_remaining": max(0.0, budget - used),
            "baseline": BASELINE,
            "metric": current,
            "evaluations": evaluations,
            "evaluations_this_iteration": len(ordered),
            "candidates": [
                {
                    "heads": [list(h) for h in u],
                    "label": label(u),
                    "cost": cost[u],
                    "metric": metrics[u],
                    "status": status[u],
                    **({"increment": increments[u]} if u in increments else {}),
                }
                for u in ordered
            ],
            "mask": mask.tolist(),
        }
        events.append(_event("search_iteration", data, len(events)))
        events.append(_event("progress", {"done": iteration}, len(events)))
        if not fits:
            stop = "over_budget"
    done = {
        "algorithm": algorithm,
        "pruned": [list(h) for h in removed],
        "evaluations": evaluations,
        "final_metric": current,
        "budget_used": max(0.0, BASELINE - current),
        "stop_reason": stop,
    }
    events.append(_event("search_done", done, len(events)))
    return events


def rise_trace() -> list[dict[str, Any]]:
    """A* on RISE: the metric rises above A, falls back and below it (Figure 8c's shape)."""
    return search_trace(RISE, RISE_BUDGET, decay=RISE_DECAY, free=RISE_FREE)


def legacy_trace(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``trace`` as searches stored it before costs were measured from A.

    Costs were then drops from the previous iteration's model, clamped at 0, with no increments;
    the budget used was the running sum of the pruned costs.
    """
    old, before, used = deepcopy(trace), BASELINE, 0.0
    for event in old:
        if event["kind"] != "search_iteration":
            continue
        data = event["data"]
        for candidate in data["candidates"]:
            candidate["cost"] = max(0.0, before - candidate["metric"])
            candidate.pop("increment", None)
        data["cost"] = data["candidates"][0]["cost"] if data["candidates"] else None
        used += data["cost"] if data["pruned"] else 0.0
        data.update(budget_used=used, budget_remaining=data["budget"] - used)
        before = data["metric"]
    return old


def _trials(heads: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "trial": i,
            "seed": 100 + i,
            "heads_pruned": h,
            "budget_used": 0.1 * h,
            "metric": BASELINE - 0.1 * h,
            "pruned": [[0, k] for k in range(h)],
        }
        for i, h in enumerate(heads)
    ]


def _random_trace(heads: list[int], *, in_done: bool) -> list[dict[str, Any]]:
    trials = _trials(heads)
    start = {"algorithm": "random", "baseline": BASELINE, "budget": 2.5, "metric": "accuracy"}
    events = [_event("search_start", start, 0)]
    if in_done:
        done = {"algorithm": "random", "pruned": [], "evaluations": 0, "trials": trials}
        return [*events, _event("search_done", done, 1)]
    return events + [
        _event("random_trial", {**t, "trials": len(trials)}, i + 1) for i, t in enumerate(trials)
    ]


def _grid(fig: go.Figure) -> go.Heatmap:
    (heatmap,) = [t for t in fig.data if t.type == "heatmap"]
    return heatmap


def _shape_ys(fig: go.Figure) -> dict[str, float]:
    return {s.name: s.y0 for s in fig.layout.shapes if s.y0 == s.y1}


def test_parse_keeps_search_events_only() -> None:
    trace = search_trace()
    parsed = parse_search_trace(trace)
    assert isinstance(parsed, SearchTrace)
    assert parsed.start is not None and parsed.start["budget"] == 1.0
    assert [tuple(it["pruned"][0]) for it in parsed.iterations] == ORDER
    assert parsed.done is not None and parsed.done["stop_reason"] == "search_space_empty"
    assert parsed.trials == ()
    assert (parsed.algorithm, parsed.metric, parsed.shape) == ("A*", "Accuracy", (3, 4))
    assert search_iterations(trace) == [1, 2, 3, 4, 5, 6]
    assert parse_search_trace(parsed) is parsed


def test_parse_accepts_trace_event_objects() -> None:
    @dataclass(frozen=True)
    class Event:
        kind: str
        step: int
        fraction: float
        message: str = ""
        data: dict[str, Any] = field(default_factory=dict)

    events = [Event(**e) for e in search_trace()]
    assert search_iterations(events) == [1, 2, 3, 4, 5, 6]


def _drop_key(trace: list[dict], key: str) -> list[dict]:
    trace[2]["data"].pop(key)
    return trace


def _swap_iterations(trace: list[dict]) -> list[dict]:
    trace[2], trace[4] = trace[4], trace[2]
    return trace


def _keep_pruned_head(trace: list[dict]) -> list[dict]:
    trace[2]["data"]["mask"][0][0] = True
    return trace


def _bad_status(trace: list[dict]) -> list[dict]:
    trace[2]["data"]["candidates"][0]["status"] = "removed"
    return trace


def _off_grid(trace: list[dict]) -> list[dict]:
    trace[2]["data"]["candidates"][-1]["heads"] = [[3, 0]]
    return trace


def _small_mask(trace: list[dict]) -> list[dict]:
    trace[2]["data"]["mask"] = trace[2]["data"]["mask"][:2]
    return trace


def _int_mask(trace: list[dict]) -> list[dict]:
    trace[2]["data"]["mask"] = np.ones((3, 4), dtype=int).tolist()
    return trace


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda t: [e for e in t if e["kind"] in ("stage", "progress")], "progress, stage"),
        (lambda t: [], "kinds: none"),
        (lambda t: "search_start", "list of trace events"),
        (lambda t: [*t, {"kind": 3}], r"trace\[15\] is not a trace event"),
        (lambda t: _drop_key(t, "mask"), "lacks 'mask'"),
        (_swap_iterations, "increase strictly"),
        (_keep_pruned_head, "inconsistent"),
        (_bad_status, "status 'removed'"),
        (_int_mask, r"astype\(bool\)"),
        (_off_grid, r"off the \(3, 4\) grid: \[\(3, 0\)\]"),
        (_small_mask, r"shape \(2, 4\), but the search runs on a \(3, 4\)"),
        (lambda t: [e for e in t if e["kind"] != "search_start"], "no search_start"),
    ],
)
def test_parse_rejects_malformed_traces(spoil: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_search_trace(spoil(search_trace()))


def test_no_search_events_message_names_the_kinds() -> None:
    trace = [_event("scores", {}, 0), _event("mask", {}, 1)]
    with pytest.raises(ValueError, match=r"event kinds: mask, scores\); it was made by a method"):
        build_search_mask(trace)


def test_mask_at_first_iteration() -> None:
    fig = build_search_mask(search_trace(), 1)
    grid = _grid(fig)
    z = np.array(grid.z)
    expected = np.full((3, 4), CELL_SEARCHED)
    expected[0, 0] = CELL_PRUNED_NOW
    for head in [(0, 2), (0, 3), (1, 2), (1, 3), (2, 2), (2, 3)]:  # increments over the budget
        expected[head] = CELL_ELIMINATED
    np.testing.assert_array_equal(z, expected)
    assert grid.text[0][0] == "1" and grid.text[0][1] == ""
    assert grid.hovertext[0][0] == (
        "Layer 0 · Head 0<br>pruned at this iteration<br>pruned at iteration 1 (step 1)"
    )
    assert grid.hovertext[1][2].endswith(
        "(estimated cost did not fit the budget)<br>eliminated at iteration 1"
    )
    assert grid.hovertext[0][1] == "Layer 0 · Head 1<br>kept, still searched"
    assert fig.layout.title.text == (
        "A* search, iteration 1 of 6<br><sup>1 of 12 heads pruned · 6 eliminated · "
        "5 still searched</sup>"
    )
    assert list(grid.x) == ["H0", "H1", "H2", "H3"] and list(grid.y) == ["L0", "L1", "L2"]


def test_final_mask_shows_order_and_states() -> None:
    trace = search_trace()
    fig = build_search_mask(trace)
    assert fig.to_json() == build_search_mask(trace, 6).to_json()
    grid = _grid(fig)
    z, text = np.array(grid.z), np.array(grid.text)
    for step, head in enumerate(ORDER, start=1):
        assert text[head] == str(step)
        assert z[head] == (CELL_PRUNED_NOW if step == 6 else CELL_REMOVED)
    kept = np.ones((3, 4), dtype=bool)
    for head in ORDER:
        kept[head] = False
    assert (z[kept] == CELL_ELIMINATED).all()  # every head left was eliminated
    assert (text[kept] == "").all()
    assert grid.hovertext[2][2].endswith("eliminated at iteration 1")
    assert grid.hovertext[1][0].endswith("pruned earlier<br>pruned at iteration 4 (step 4)")
    legend = {t.name: t.marker.color for t in fig.data if t.type == "scatter"}
    assert legend["pruned at this iteration"] == PRUNED_COLOUR
    assert legend["kept, eliminated (estimated cost did not fit the budget)"] == ELIMINATED_COLOUR


def test_pruning_steps_skip_iterations_that_prune_nothing() -> None:
    trace = search_trace()
    idle = deepcopy(trace[2])  # iteration 1's mask, but nothing evaluated or pruned
    idle["data"].update(iteration=2, pruned=[], cost=None, candidates=[])
    events = [*trace[:4], idle, *deepcopy(trace[4:])]
    for event in events[5:]:
        if event["kind"] == "search_iteration":
            event["data"]["iteration"] += 1
    assert search_iterations(events) == [1, 2, 3, 4, 5, 6, 7]
    grid = _grid(build_search_mask(events))
    for step, head in enumerate(ORDER, start=1):
        assert grid.text[head[0]][head[1]] == str(step)
    assert grid.hovertext[0][1].endswith("pruned at iteration 3 (step 2)")
    empty = build_cost_chart(events, 2)
    assert len(empty.data) == 0
    assert empty.layout.annotations[0].text == "No candidates were evaluated at iteration 2."


def test_global_search_prunes_whole_columns() -> None:
    costs = np.array([[0.0, 0.4, 0.1], [0.0, 0.9, 0.1]])
    trace = search_trace(costs, budget=0.5, algorithm="global")  # no elimination
    parsed = parse_search_trace(trace)
    assert parsed.algorithm == "Global"
    # Iteration 3: H1 would cost 0.2 + 1.3 = 1.5 from A, over the budget; it is eliminated.
    assert [it["pruned"] for it in parsed.iterations] == [[[0, 0], [1, 0]], [[0, 2], [1, 2]], []]
    grid = _grid(build_search_mask(trace, 2))
    np.testing.assert_array_equal(
        np.array(grid.z),
        [[CELL_REMOVED, CELL_SEARCHED, CELL_PRUNED_NOW]] * 2,
    )
    assert [row[0] for row in grid.text] == ["1", "1"] and [row[2] for row in grid.text] == [
        "2"
    ] * 2
    assert np.array(_grid(build_search_mask(trace)).z)[0, 1] == CELL_ELIMINATED
    chart = build_cost_chart(trace, 1)
    assert list(chart.data[0].x) == ["H0, all layers", "H2, all layers", "H1, all layers"]
    np.testing.assert_allclose(chart.data[0].y, [0.0, 0.2, 1.3])
    np.testing.assert_allclose(build_cost_chart(trace, 3).data[0].y, [1.5])


@pytest.mark.parametrize("shape", [(12, 12), (24, 16)])
def test_large_grids(shape: tuple[int, int]) -> None:
    costs = np.random.default_rng(0).exponential(0.05, size=shape)
    costs[costs < 0.02] = 0.0
    trace = search_trace(costs, budget=0.3)
    iterations = search_iterations(trace)
    grid_fig = build_search_mask(trace, iterations[len(iterations) // 2])
    z = np.array(_grid(grid_fig).z)
    assert z.shape == shape
    assert 300 <= grid_fig.layout.height <= 1000
    chart = build_cost_chart(trace, 1)
    assert len(chart.data[0].x) == shape[0] * shape[1] > MAX_TICK_LABELS
    assert chart.layout.xaxis.showticklabels is False
    assert "hover for names" in chart.layout.xaxis.title.text
    assert len(build_search_progress(trace).data[0].x) == len(iterations) + 1


def test_cost_chart_colours_bars_by_status() -> None:
    fig = build_cost_chart(search_trace(), 5)
    bars = fig.data[0]
    # Iteration 5, after (0,0) (0,1) (2,0) (1,0) are pruned (the metric 0.1 below A): (2,1) costs
    # 0.1 + 0.2 from A, (1,1) 0.1 + 0.3.
    assert list(bars.x) == ["L2 H1", "L1 H1"]
    np.testing.assert_allclose(bars.y, [0.3, 0.4])
    assert list(bars.marker.color) == [STATUS_COLOURS["pruned"], STATUS_COLOURS["searched"]]
    assert STATUS_COLOURS["searched"] == KEPT_COLOUR
    # The line is the given budget B (the cost from A a head may have and still be pruned),
    # no longer the budget left before the prune: costs are measured from A, not from the
    # previous model.
    assert _shape_ys(fig)["budget"] == 1.0
    assert list(fig.layout.xaxis.categoryarray) == list(bars.x)
    assert fig.layout.xaxis.showticklabels is True
    assert bars.hovertext[1] == (
        "L1 H1<br>cost from A: 0.4 points<br>Accuracy without it: 89.6<br>"
        "increment (Figure 6, line 20): 0.1 points<br>still searched"
    )
    assert "pruned L2 H1 · 0 eliminated · 0 free" in fig.layout.title.text
    assert "drop from the unpruned model" in fig.layout.title.text
    assert [t.name for t in fig.data[1:]] == ["pruned", "still searched"]
    assert fig.layout.yaxis.range == pytest.approx((0.0, 1.12))


def test_cost_chart_shows_negative_costs() -> None:
    fig = build_cost_chart(rise_trace(), 1)
    bars = fig.data[0]
    assert list(bars.x) == [
        "L0 H0", "L0 H1", "L1 H0", "L0 H2", "L1 H1", "L1 H2",
        "L2 H0", "L0 H3", "L1 H3", "L2 H1", "L2 H2", "L2 H3",
    ]  # fmt: skip
    assert list(bars.y) == [-0.5, -0.25, -0.25, 0, 0, 0, 0, 0.25, 0.25, 0.25, 0.25, 2.0]
    statuses = ["pruned"] + ["searched"] * 8 + ["eliminated"] * 3
    assert list(bars.marker.color) == [STATUS_COLOURS[s] for s in statuses]
    assert _shape_ys(fig)["budget"] == RISE_BUDGET
    (budget,) = [a for a in fig.layout.annotations if "budget B" in a.text]
    assert budget.text == f"{BUDGET_TEXT}: 0.5"
    assert fig.layout.yaxis.range == pytest.approx((-0.5 * 1.12, 2.0 * 1.12))
    assert fig.layout.yaxis.zeroline is True
    assert bars.hovertext[0] == (
        "L0 H0<br>cost from A: -0.5 points<br>Accuracy without it: 90.5<br>pruned"
    )
    assert "increment (Figure 6, line 20): 0 points" in bars.hovertext[1]
    assert "pruned L0 H0 · 3 eliminated · 7 free" in fig.layout.title.text
    # Iteration 8: the metric is back at A, so (0,3) costs 0.25 from A and fits B = 0.5.
    later = build_cost_chart(rise_trace(), 8)
    assert list(later.data[0].y) == [0.25, 0.25]
    assert _shape_ys(later)["budget"] == RISE_BUDGET
    assert later.layout.yaxis.range == pytest.approx((0.0, 0.5 * 1.12))


def test_cost_chart_marks_free_candidates() -> None:
    fig = build_cost_chart(rise_trace(), 1)
    (dots,) = [t for t in fig.data if t.name == FREE_TEXT and t.x[0] is not None]
    free = ["L0 H0", "L0 H1", "L1 H0", "L0 H2", "L1 H1", "L1 H2", "L2 H0"]  # cost <= 0
    assert list(dots.x) == free and list(dots.y) == [0] * 7
    assert list(dots.marker.color) == [PRUNED_COLOUR] + [KEPT_COLOUR] * 6
    assert list(dots.marker.size) == [10] + [6] * 6
    (legend,) = [t for t in fig.data if t.name == FREE_TEXT and t.x[0] is None]
    assert legend.showlegend is not False
    assert FREE_TEXT == "free: the metric stays at or above A"
    assert "1 eliminated · 0 free" in build_cost_chart(rise_trace(), 9).layout.title.text
    assert not any(t.name == FREE_TEXT for t in build_cost_chart(rise_trace(), 9).data)


def test_cost_chart_when_the_search_stops() -> None:
    trace = rise_trace()
    fig = build_cost_chart(trace, 9)  # (1,3) costs 0.75 from A, over B = 0.5: nothing pruned
    # The old chart drew budget_remaining + cost (0.25 here); the rule is the given budget B.
    assert _shape_ys(fig)["budget"] == RISE_BUDGET
    assert list(fig.data[0].y) == [0.75]
    assert list(fig.data[0].marker.color) == [STATUS_COLOURS["eliminated"]]
    assert "nothing pruned" in fig.layout.title.text
    assert fig.layout.yaxis.range == pytest.approx((0.0, 0.75 * 1.12))
    progress = build_search_progress(trace)
    assert (
        "stopped: the cheapest candidate's cost from the unpruned model exceeds the budget"
        in progress.layout.title.text
    )
    mask = build_search_mask(trace)
    assert not (np.array(_grid(mask).z) == CELL_PRUNED_NOW).any()


def test_cost_chart_without_a_budget_anywhere() -> None:
    trace = rise_trace()
    for event in trace:
        event["data"].pop("budget", None)
    fig = build_cost_chart(trace, 1)
    assert "budget" not in _shape_ys(fig)
    assert fig.layout.yaxis.range == pytest.approx((-0.56, 2.24))


def test_cost_axis_range_edges() -> None:
    assert cost_axis_range([0.0, 0.0], 0.0) == [0.0, 1.0]
    assert cost_axis_range([], None) == [0.0, 1.0]
    bottom, top = cost_axis_range([-1.0, -0.5], 0.0)  # every cost negative, budget 0
    assert bottom == pytest.approx(-1.12) and top == pytest.approx(0.06 * 1.12)


def test_search_that_stops_immediately() -> None:
    trace = search_trace(COSTS + 0.5, budget=0.2)
    assert search_iterations(trace) == [1]
    grid = _grid(build_search_mask(trace))
    assert (np.array(grid.z) == CELL_ELIMINATED).all()
    chart = build_cost_chart(trace, 1)
    assert set(chart.data[0].marker.color) == {ELIMINATED_COLOUR}
    progress = build_search_progress(trace, 1)
    assert list(progress.data[0].x) == [0, 1]
    assert list(progress.data[0].y) == [BASELINE, BASELINE]
    assert "zero-budget point" not in {s.name for s in progress.layout.shapes}
    assert "budget never used" in progress.layout.title.text


def test_search_without_iterations_explains_itself() -> None:
    trace = [e for e in search_trace() if e["kind"] != "search_iteration"]
    assert search_iterations(trace) == []
    for fig in (build_search_progress(trace), build_cost_chart(trace)):
        assert len(fig.data) == 0
        assert "(stopped: no candidates left)" in fig.layout.annotations[0].text
    grid = _grid(build_search_mask(trace))
    assert (np.array(grid.z) == CELL_SEARCHED).all()
    with pytest.raises(ValueError, match="it has no iterations"):
        build_cost_chart(trace, 1)


def test_progress_series_lines_and_marker() -> None:
    fig = build_search_progress(search_trace(), 3)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["metric"].x) == [0, 1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(by_name["metric"].y, [90, 90, 90, 90, 89.9, 89.7, 89.4])
    np.testing.assert_allclose(by_name["budget used"].y, [0, 0, 0, 0, 0.1, 0.3, 0.6])
    assert list(by_name["heads searched"].x) == [1, 2, 3, 4, 5, 6]
    assert list(by_name["heads searched"].y) == [12, 5, 4, 3, 2, 1]
    assert by_name["heads searched"].hovertext[1] == (
        "iteration 2: 5 heads searched (5 evaluations, 18 so far)"
    )
    lines = _shape_ys(fig)
    assert lines["baseline"] == BASELINE
    assert lines["floor"] == pytest.approx(BASELINE - 1.0)
    assert lines["budget"] == 1.0
    (marker,) = [s for s in fig.layout.shapes if s.name == "iteration marker"]
    assert marker.x0 == marker.x1 == 3
    (zero,) = [s for s in fig.layout.shapes if s.name == "zero-budget point"]
    assert zero.x0 == zero.x1 == 3  # iteration 4 is the first below A
    assert "6 heads pruned in 6 iterations, 28 evaluations" in fig.layout.title.text
    assert "with zero budget 3 heads pruned (iteration 3)" in fig.layout.title.text
    assert not any(
        s.name == "iteration marker" for s in build_search_progress(search_trace()).layout.shapes
    )


def test_progress_of_a_search_that_rises_then_falls() -> None:
    fig = build_search_progress(rise_trace())
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["metric"].x) == list(range(10))
    assert list(by_name["metric"].y) == [BASELINE, *RISE_METRICS]
    # Budget used is max(0, A - metric): 0 while the metric is at or above A.
    assert list(by_name["budget used"].y) == [0.0] * 8 + [0.25, 0.25]
    assert list(by_name["heads searched"].y) == [12, 8, 7, 6, 5, 4, 3, 2, 1]
    assert [a.text for a in fig.layout.annotations[:3]] == [
        "Accuracy after each iteration",
        "Budget used",
        "Heads searched",
    ]
    assert fig.layout.yaxis3.title.text == "heads searched"
    (baseline,) = [s for s in fig.layout.shapes if s.name == "baseline"]
    assert baseline.y0 == BASELINE and baseline.line.dash == "dot"
    (budget,) = [s for s in fig.layout.shapes if s.name == "budget"]
    assert budget.y0 == RISE_BUDGET and budget.line.dash == "dash"
    (zero,) = [s for s in fig.layout.shapes if s.name == "zero-budget point"]
    assert (zero.x0, zero.x1, zero.yref, zero.line.dash) == (7, 7, "paper", "dot")
    (note,) = [a for a in fig.layout.annotations if a.text == "budget first used"]
    assert note.x == 7
    assert "with zero budget 7 heads pruned (iteration 7)" in fig.layout.title.text
    assert zero_budget_iteration(parse_search_trace(rise_trace())) == 7


def test_zero_budget_point() -> None:
    running = [e for e in rise_trace() if e["kind"] != "search_done"][:16]  # 7 iterations
    assert search_iterations(running) == list(range(1, 8))
    assert zero_budget_iteration(parse_search_trace(running)) is None  # never below A yet
    fig = build_search_progress(running)
    assert "zero-budget point" not in {s.name for s in fig.layout.shapes}
    assert "budget first used" not in {a.text for a in fig.layout.annotations}
    assert "budget never used; search still running" in fig.layout.title.text
    dearer = search_trace(COSTS + 0.1, budget=1.0)  # the first prune already drops below A
    assert zero_budget_iteration(parse_search_trace(dearer)) == 0
    shapes = build_search_progress(dearer).layout.shapes
    (zero,) = [s for s in shapes if s.name == "zero-budget point"]
    assert zero.x0 == zero.x1 == 0
    no_baseline = rise_trace()
    for event in no_baseline:
        event["data"].pop("baseline", None)
    assert zero_budget_iteration(parse_search_trace(no_baseline)) is None


def test_progress_of_a_running_search() -> None:
    trace = [e for e in search_trace() if e["kind"] != "search_done"][:8]  # three iterations
    fig = build_search_progress(trace, 3)
    assert list(fig.data[0].x) == [0, 1, 2, 3]
    assert "3 heads pruned in 3 iterations, 22 evaluations<br>budget never used; search still " in (
        fig.layout.title.text
    )
    assert search_iterations(trace) == [1, 2, 3]


def test_old_traces_still_render() -> None:
    """Runs stored before costs were measured from A: non-negative costs from the previous model."""
    old = legacy_trace(rise_trace())
    parsed = parse_search_trace(old)
    assert all(c["cost"] >= 0 for it in parsed.iterations for c in it["candidates"])
    chart = build_cost_chart(old, 8)
    assert list(chart.data[0].y) == [0.5, 0.5]  # 90.25 -> 89.75: a drop of 0.5 from iteration 7
    assert _shape_ys(chart)["budget"] == RISE_BUDGET
    progress = build_search_progress(old)
    assert list(progress.data[0].y) == [BASELINE, *RISE_METRICS]
    (zero,) = [s for s in progress.layout.shapes if s.name == "zero-budget point"]
    assert zero.x0 == 7  # read from the metric, the same in both meanings
    for fig in (chart, progress, build_search_mask(old)):
        assert fig.to_json()


def test_fixture_matches_search_core() -> None:
    """The hand-made traces are what pruning.methods.search_core records (same payloads)."""
    search_core = pytest.importorskip("pruning.methods.search_core")
    metric_of = oracle(RISE, RISE_DECAY, RISE_FREE)

    def evaluate(mask: Any) -> float:
        layers, heads = np.nonzero(~mask.numpy())
        return metric_of([(int(a), int(b)) for a, b in zip(layers, heads, strict=True)])

    for search, ours in [
        (search_core.astar_search, rise_trace()),
        (search_core.local_search, search_trace(RISE, 0.5, algorithm="local", decay=0.25, free=4)),
    ]:
        starts: list[dict[str, Any]] = []
        result = search(evaluate, 3, 4, RISE_BUDGET, on_start=starts.append)
        mine = parse_search_trace(ours)
        assert mine.start == {**starts[0], "metric": "accuracy"}
        assert list(mine.iterations) == result.iterations
        assert mine.done is not None and mine.done["stop_reason"] == result.stop_reason


@pytest.mark.parametrize("iteration", [0, 7, -1, True])
@pytest.mark.parametrize("builder", [build_search_mask, build_cost_chart, build_search_progress])
def test_unknown_iteration_is_rejected(builder: Any, iteration: int) -> None:
    with pytest.raises(ValueError, match=r"not in this search trace; pick one of 1\.\.6"):
        builder(search_trace(), iteration)


@pytest.mark.parametrize("in_done", [True, False])
def test_random_vs_search_histogram(in_done: bool) -> None:
    heads = [3, 5, 5, 6, 8, 5, 3]
    fig = build_random_vs_search(_random_trace(heads, in_done=in_done), {"A*": 9, "Local": 7})
    histogram, astar, local, budget = fig.data
    assert list(histogram.x) == [3, 4, 5, 6, 7, 8, 9]
    assert list(histogram.y) == [2, 0, 3, 1, 0, 1, 0]
    assert list(astar.x) == [9, 9] and astar.name == "A*: 9 heads"
    assert list(local.x) == [7, 7] and astar.line.color != local.line.color
    assert list(budget.x) == list(range(7))
    np.testing.assert_allclose(budget.y, [0.1 * h for h in heads])
    assert _shape_ys(fig)["budget"] == 2.5
    assert "A*: 9 heads, more than 7 of 7 trials; Local: 7 heads, more than 6 of 7 trials" in (
        fig.layout.title.text
    )
    assert astar.hovertext == "A*: 9 heads, more than 7 of 7 trials"


def test_random_vs_search_from_trial_list() -> None:
    fig = build_random_vs_search(_trials([4, 2]), 3, budget=1.0)
    assert list(fig.data[0].x) == [2, 3, 4] and list(fig.data[0].y) == [1, 0, 1]
    assert fig.data[1].name == "A*: 3 heads"
    assert _shape_ys(fig)["budget"] == 1.0
    assert not _shape_ys(build_random_vs_search(_trials([4, 2]), 3))  # no budget known


def test_random_vs_search_edge_cases() -> None:
    empty = build_random_vs_search(search_trace(), 6)
    assert len(empty.data) == 0 and "no random trials" in empty.layout.annotations[0].text
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="non-negative integer"):
            build_random_vs_search(_trials([1]), bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lacks 'budget_used'"):
        build_random_vs_search([{"trial": 0, "heads_pruned": 3}], 4)
    with pytest.raises(ValueError, match="no search events"):
        build_random_vs_search([_event("progress", {}, 0)], 4)


def _all_figures() -> list[go.Figure]:
    trace = search_trace()
    return [
        build_search_mask(trace, 2, title="A*"),
        build_cost_chart(trace, 2),
        build_search_progress(trace, 2),
        build_random_vs_search(_random_trace([1, 2, 2], in_done=True), {"A*": 6}),
        build_search_progress([e for e in trace if e["kind"] != "search_iteration"]),
    ]


def test_figures_serialise_without_external_urls() -> None:
    for fig in _all_figures():
        text = fig.to_json()
        assert re.findall(r"(?:https?:)?//[\w.-]+\.\w+", text) == []
        assert fig.layout.title.text
        assert json.loads(pio.from_json(text).to_json()) == json.loads(text)  # round-trips


def test_builders_do_not_modify_the_trace() -> None:
    trace = search_trace()
    copy = deepcopy(trace)
    build_search_mask(trace, 3)
    build_cost_chart(trace, 3)
    build_search_progress(trace, 3)
    assert trace == copy
