"""viz.search: A* traces replay as masks, cost charts, progress panels and random baselines."""

from __future__ import annotations

import json
import re
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
    CELL_ELIMINATED,
    CELL_PRUNED_NOW,
    CELL_REMOVED,
    CELL_SEARCHED,
    ELIMINATED_COLOUR,
    MAX_TICK_LABELS,
    PRUNED_COLOUR,
    STATUS_COLOURS,
    SearchTrace,
)

# Additive costs (metric points lost when a head goes) on a 3 x 4 grid. With a budget of 1.0 the
# search prunes (0,0) (0,1) (2,0) (1,0) (2,1) (1,1) in that order: ties go to the lower (layer,
# head), and each iteration eliminates the heads whose cost exceeds the budget left.
COSTS = np.array([[0.0, 0.0, 0.5, 2.0], [0.1, 0.3, 1.5, 3.0], [0.0, 0.2, 0.8, 4.0]])
BASELINE = 90.0
ORDER = [(0, 0), (0, 1), (2, 0), (1, 0), (2, 1), (1, 1)]


def _event(kind: str, data: dict[str, Any], step: int) -> dict[str, Any]:
    return {"kind": kind, "step": step, "fraction": 0.5, "message": kind, "data": data}


def search_trace(
    costs: np.ndarray = COSTS,
    budget: float = 1.0,
    *,
    algorithm: str = "astar",
    eliminate: bool = True,
) -> list[dict[str, Any]]:
    """A trace of A* (or the global column search) on additive per-head costs, by hand."""
    n_layers, n_heads = costs.shape
    if algorithm == "global":
        units = [tuple((layer, h) for layer in range(n_layers)) for h in range(n_heads)]
    else:
        units = [((layer, h),) for layer in range(n_layers) for h in range(n_heads)]

    def label(unit: tuple[tuple[int, int], ...]) -> str:
        return (
            f"H{unit[0][1]}, all layers"
            if algorithm == "global"
            else f"L{unit[0][0]} H{unit[0][1]}"
        )

    events = [_event("stage", {"stage": "evaluating"}, 0)]
    events.append(
        _event(
            "search_start",
            {
                "algorithm": algorithm,
                "baseline": BASELINE,
                "budget": budget,
                "metric": "accuracy",
                "n_layers": n_layers,
                "n_heads": n_heads,
                "eval_examples": 256,
                "search_space": len(units),
            },
            1,
        )
    )
    space, mask = list(units), np.ones(costs.shape, dtype=bool)
    used, evaluations, pruned_all, iteration = 0.0, 0, [], 0
    stop = "search_space_empty"
    while space:
        iteration += 1
        cost = {u: float(sum(costs[h] for h in u)) for u in space}
        ordered = sorted(space, key=lambda u: (cost[u], u))
        best, before = ordered[0], used
        fits = cost[best] <= budget - used + 1e-12
        if fits:
            used += cost[best]
            space.remove(best)
            for head in best:
                mask[head] = False
            pruned_all += [list(h) for h in best]
        eliminated = [u for u in space if eliminate and cost[u] > budget - used + 1e-12]
        space = [u for u in space if u not in eliminated]
        evaluations += len(ordered)
        candidates = [
            {
                "heads": [list(h) for h in u],
                "label": label(u),
                "cost": cost[u],
                "metric": BASELINE - before - cost[u],
                "status": "pruned"
                if fits and u == best
                else "eliminated"
                if u in eliminated
                else "searched",
            }
            for u in ordered
        ]
        data = {
            "iteration": iteration,
            "algorithm": algorithm,
            "pruned": [list(h) for h in best] if fits else [],
            "cost": cost[best],  # as pruning.methods.search_core: the cheapest, pruned or not
            "budget": budget,
            "budget_used": used,
            "budget_remaining": budget - used,
            "baseline": BASELINE,
            "metric": BASELINE - used,
            "evaluations": evaluations,
            "evaluations_this_iteration": len(ordered),
            "candidates": candidates,
            "mask": mask.tolist(),
        }
        events.append(_event("search_iteration", data, len(events)))
        events.append(_event("progress", {"done": iteration}, len(events)))
        if not fits:
            stop = "over_budget"
            break
    done = {
        "algorithm": algorithm,
        "pruned": pruned_all,
        "evaluations": evaluations,
        "final_metric": BASELINE - used,
        "budget_used": used,
        "stop_reason": stop,
    }
    events.append(_event("search_done", done, len(events)))
    return events


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
    for head in [(0, 3), (1, 2), (1, 3), (2, 3)]:  # cost over the budget of 1.0
        expected[head] = CELL_ELIMINATED
    np.testing.assert_array_equal(z, expected)
    assert grid.text[0][0] == "1" and grid.text[0][1] == ""
    assert grid.hovertext[0][0] == (
        "Layer 0 · Head 0<br>pruned at this iteration<br>pruned at iteration 1 (step 1)"
    )
    assert grid.hovertext[1][2].endswith("(cost over budget)<br>eliminated at iteration 1")
    assert grid.hovertext[0][1] == "Layer 0 · Head 1<br>kept, still searched"
    assert fig.layout.title.text == (
        "A* search, iteration 1 of 6<br><sup>1 of 12 heads pruned · 4 eliminated · "
        "7 still searched</sup>"
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
    assert grid.hovertext[2][2].endswith("eliminated at iteration 5")
    assert grid.hovertext[1][0].endswith("pruned earlier<br>pruned at iteration 4 (step 4)")
    legend = {t.name: t.marker.color for t in fig.data if t.type == "scatter"}
    assert legend["pruned at this iteration"] == PRUNED_COLOUR
    assert legend["kept, eliminated (cost over budget)"] == ELIMINATED_COLOUR


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
    trace = search_trace(costs, budget=0.5, algorithm="global")
    parsed = parse_search_trace(trace)
    assert parsed.algorithm == "Global"
    assert [it["pruned"] for it in parsed.iterations] == [[[0, 0], [1, 0]], [[0, 2], [1, 2]]]
    grid = _grid(build_search_mask(trace))
    np.testing.assert_array_equal(
        np.array(grid.z),
        [[CELL_REMOVED, CELL_ELIMINATED, CELL_PRUNED_NOW]] * 2,
    )
    assert [row[0] for row in grid.text] == ["1", "1"] and [row[2] for row in grid.text] == [
        "2"
    ] * 2
    chart = build_cost_chart(trace, 1)
    assert list(chart.data[0].x) == ["H0, all layers", "H2, all layers", "H1, all layers"]
    np.testing.assert_allclose(chart.data[0].y, [0.0, 0.2, 1.3])


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
    # Iteration 5 evaluates (2,1) 0.2, (1,1) 0.3, (0,2) 0.5, (2,2) 0.8 with 0.9 of the budget left.
    assert list(bars.x) == ["L2 H1", "L1 H1", "L0 H2", "L2 H2"]
    np.testing.assert_allclose(bars.y, [0.2, 0.3, 0.5, 0.8])
    statuses = ["pruned", "searched", "searched", "eliminated"]
    assert list(bars.marker.color) == [STATUS_COLOURS[s] for s in statuses]
    assert STATUS_COLOURS["searched"] == KEPT_COLOUR
    assert _shape_ys(fig)["budget before this prune"] == pytest.approx(0.9)
    assert list(fig.layout.xaxis.categoryarray) == list(bars.x)
    assert fig.layout.xaxis.showticklabels is True
    assert "cost: 0.8 points" in bars.hovertext[3] and "eliminated" in bars.hovertext[3]
    assert "pruned L2 H1 · 1 eliminated · 0 cost nothing" in fig.layout.title.text
    assert {t.name for t in fig.data[1:]} == {"pruned", "still searched", "eliminated"}


def test_cost_chart_marks_free_candidates() -> None:
    fig = build_cost_chart(search_trace(), 1)
    (dots,) = [t for t in fig.data if t.name == "zero cost"]
    assert list(dots.x) == ["L0 H0", "L0 H1", "L2 H0"] and list(dots.y) == [0, 0, 0]
    assert list(dots.marker.color) == [PRUNED_COLOUR, KEPT_COLOUR, KEPT_COLOUR]
    assert _shape_ys(fig)["budget before this prune"] == 1.0
    assert "pruned L0 H0 · 4 eliminated · 3 cost nothing" in fig.layout.title.text
    assert not any(t.name == "zero cost" for t in build_cost_chart(search_trace(), 5).data)


def test_cost_chart_when_the_search_stops() -> None:
    trace = search_trace(budget=0.25, eliminate=False)
    assert search_iterations(trace) == [1, 2, 3, 4, 5]
    fig = build_cost_chart(trace, 5)  # (2,1) costs 0.2 but only 0.15 is left: nothing pruned
    assert _shape_ys(fig)["budget before this prune"] == pytest.approx(0.15)
    trace[-3]["data"]["cost"] = None  # the schema allows None where nothing was pruned
    assert _shape_ys(build_cost_chart(trace, 5))["budget before this prune"] == pytest.approx(0.15)
    assert set(fig.data[0].marker.color) == {STATUS_COLOURS["searched"]}
    assert "nothing pruned" in fig.layout.title.text
    progress = build_search_progress(trace)
    assert "stopped: the cheapest candidate costs more than the budget left" in (
        progress.layout.title.text
    )
    mask = build_search_mask(trace)
    assert not (np.array(_grid(mask).z) == CELL_PRUNED_NOW).any()


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
    assert list(by_name["evaluations"].x) == [1, 2, 3, 4, 5, 6]
    assert list(by_name["evaluations"].y) == [12, 7, 6, 5, 4, 2]
    lines = _shape_ys(fig)
    assert lines["baseline"] == BASELINE
    assert lines["floor"] == pytest.approx(BASELINE - 1.0)
    assert lines["budget"] == 1.0
    (marker,) = [s for s in fig.layout.shapes if s.name == "iteration marker"]
    assert marker.x0 == marker.x1 == 3
    assert "6 heads pruned in 6 iterations, 36 evaluations" in fig.layout.title.text
    assert not any(
        s.name == "iteration marker" for s in build_search_progress(search_trace()).layout.shapes
    )


def test_progress_of_a_running_search() -> None:
    trace = [e for e in search_trace() if e["kind"] != "search_done"][:8]  # three iterations
    fig = build_search_progress(trace, 3)
    assert list(fig.data[0].x) == [0, 1, 2, 3]
    assert "3 heads pruned in 3 iterations, 25 evaluations; search still running" in (
        fig.layout.title.text
    )
    assert search_iterations(trace) == [1, 2, 3]


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
