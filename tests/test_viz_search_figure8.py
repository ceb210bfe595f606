"""viz.search_figure8: every head a search settled, at its cost from A, sorted (Figure 8b)."""

from __future__ import annotations

import json
import re
from copy import deepcopy

import numpy as np
import plotly.io as pio
import pytest
from test_viz_search import (
    BASELINE,
    COSTS,
    RISE_BUDGET,
    legacy_trace,
    rise_trace,
    search_trace,
)

from viz.grid import KEPT_COLOUR
from viz.search import BUDGET_TEXT, ELIMINATED_COLOUR, MAX_TICK_LABELS, PRUNED_COLOUR
from viz.search_figure8 import SETTLED_NAMES, build_sorted_costs, settled_costs

P, E, S = PRUNED_COLOUR, ELIMINATED_COLOUR, KEPT_COLOUR
# rise_trace, cheapest first (ties in the order iteration 1 evaluated them): each head at its cost
# from A when it was pruned (iterations 1-8) or eliminated (iteration 1: L2 H1, L2 H2, L2 H3;
# iteration 9, over the budget: L1 H3).
FINAL = [
    ("L1 H0", -1.0, P),
    ("L0 H2", -1.0, P),
    ("L0 H1", -0.75, P),
    ("L1 H1", -0.75, P),
    ("L0 H0", -0.5, P),
    ("L1 H2", -0.5, P),
    ("L2 H0", -0.25, P),
    ("L0 H3", 0.25, P),
    ("L2 H1", 0.25, E),
    ("L2 H2", 0.25, E),
    ("L1 H3", 0.75, E),
    ("L2 H3", 2.0, E),
]


def _budget_line(fig: object) -> float:
    (line,) = [s for s in fig.layout.shapes if s.name == "budget"]  # type: ignore[attr-defined]
    assert line.y0 == line.y1 and line.line.dash == "dash"
    return float(line.y0)


def test_sorted_costs_of_a_finished_search() -> None:
    fig = build_sorted_costs(rise_trace())
    bars = fig.data[0]
    assert list(zip(bars.x, bars.y, bars.marker.color, strict=True)) == FINAL
    assert list(fig.layout.xaxis.categoryarray) == list(bars.x)
    assert _budget_line(fig) == RISE_BUDGET
    assert f"{BUDGET_TEXT}: 0.5" in [a.text for a in fig.layout.annotations]
    assert fig.layout.yaxis.range == pytest.approx((-1.0 * 1.12, 2.0 * 1.12))
    assert fig.layout.yaxis.zeroline is True
    assert fig.layout.title.text.startswith("A* sorted costs: 8 pruned, 4 eliminated<br>")
    assert "still searched" not in fig.layout.title.text
    assert "drop from the unpruned model" in fig.layout.title.text
    assert "never evaluated" not in fig.layout.title.text
    legend = {t.name: t.marker.color for t in fig.data[1:]}
    assert legend == {SETTLED_NAMES["pruned"]: P, SETTLED_NAMES["eliminated"]: E}
    assert bars.hovertext[0] == (
        "L1 H0<br>cost from A: -1 points<br>Accuracy without it: 91<br>pruned at iteration 3"
    )
    assert bars.hovertext[8] == (
        "L2 H1<br>cost from A: 0.25 points<br>Accuracy without it: 89.75<br>"
        "increment (Figure 6, line 20): 0.25 points<br>eliminated at iteration 1"
    )
    assert bars.hovertext[10].endswith("eliminated at iteration 9")


def test_sorted_costs_while_replaying() -> None:
    fig = build_sorted_costs(rise_trace(), 3)
    bars = fig.data[0]
    # After iteration 3: three pruned, three eliminated, six still searched at their iteration 3
    # costs (the third colour).
    assert list(zip(bars.x, bars.y, bars.marker.color, strict=True)) == [
        ("L1 H0", -1.0, P),
        ("L0 H1", -0.75, P),
        ("L0 H2", -0.75, S),
        ("L1 H1", -0.75, S),
        ("L1 H2", -0.75, S),
        ("L2 H0", -0.75, S),
        ("L0 H0", -0.5, P),
        ("L0 H3", -0.5, S),
        ("L1 H3", -0.5, S),
        ("L2 H1", 0.25, E),
        ("L2 H2", 0.25, E),
        ("L2 H3", 2.0, E),
    ]
    assert fig.layout.title.text.startswith(
        "A* sorted costs: 3 pruned, 3 eliminated, 6 still searched<br>"
    )
    assert "after iteration 3" in fig.layout.title.text
    assert bars.hovertext[2].endswith("still searched (cost at iteration 3)")
    assert [t.name for t in fig.data[1:]] == list(SETTLED_NAMES.values())
    assert SETTLED_NAMES["searched"] == "still searched (last cost)"


def test_sorted_costs_of_a_running_search_with_unevaluated_heads() -> None:
    trace = [e for e in rise_trace() if e["kind"] != "search_done"][:6]  # two iterations
    for event in trace:  # as if L2 H3 had never been a candidate (e.g. a per-layer floor)
        if event["kind"] == "search_iteration":
            candidates = event["data"]["candidates"]
            candidates[:] = [c for c in candidates if c["label"] != "L2 H3"]
    fig = build_sorted_costs(trace)
    assert len(fig.data[0].x) == 11
    assert "2 pruned, 2 eliminated, 7 still searched" in fig.layout.title.text
    assert "after iteration 2 · 1 head never evaluated" in fig.layout.title.text
    assert fig.layout.yaxis.range == pytest.approx((-0.75 * 1.12, 0.5 * 1.12))  # B on top


def test_settled_costs_keep_the_candidate() -> None:
    rows = settled_costs(rise_trace())
    assert [(r.label, r.cost, r.status[0]) for r in rows] == [
        (label, cost, {P: "p", E: "e"}[colour]) for label, cost, colour in FINAL
    ]
    first = rows[0]
    assert (first.heads, first.iteration) == (((1, 0),), 3)
    assert first.candidate["metric"] == BASELINE + 1.0
    assert [r.iteration for r in rows if r.status == "eliminated"] == [1, 1, 9, 1]


def test_sorted_costs_of_an_old_trace() -> None:
    # Old runs: costs from the previous model, clamped at 0. They draw, just read differently.
    fig = build_sorted_costs(legacy_trace(rise_trace()))
    assert min(fig.data[0].y) == 0.0 and len(fig.data[0].x) == 12
    assert _budget_line(fig) == RISE_BUDGET
    assert fig.layout.yaxis.range[0] == 0.0


def test_sorted_costs_of_a_global_search() -> None:
    costs = np.array([[0.0, 0.4, 0.1], [0.0, 0.9, 0.1]])
    fig = build_sorted_costs(search_trace(costs, budget=0.5, algorithm="global"))
    assert list(fig.data[0].x) == ["H0, all layers", "H2, all layers", "H1, all layers"]
    np.testing.assert_allclose(fig.data[0].y, [0.0, 0.2, 1.5])
    assert list(fig.data[0].marker.color) == [P, P, E]
    assert "Global sorted costs: 2 pruned, 1 eliminated" in fig.layout.title.text


def test_sorted_costs_of_a_large_search() -> None:
    costs = np.random.default_rng(0).exponential(0.05, size=(12, 12))
    fig = build_sorted_costs(search_trace(costs, budget=0.3))
    assert len(fig.data[0].x) == 144 > MAX_TICK_LABELS
    assert fig.layout.xaxis.showticklabels is False
    assert list(fig.data[0].y) == sorted(fig.data[0].y)


def test_sorted_costs_edge_cases() -> None:
    trace = [e for e in search_trace() if e["kind"] != "search_iteration"]
    empty = build_sorted_costs(trace)
    assert len(empty.data) == 0
    assert "(stopped: no candidates left)" in empty.layout.annotations[0].text
    with pytest.raises(ValueError, match=r"not in this search trace; pick one of 1\.\.6"):
        build_sorted_costs(search_trace(COSTS), 7)
    idle = search_trace()[:3]  # one iteration whose candidates are gone
    idle[2]["data"].update(candidates=[])
    assert "No candidates were evaluated." in build_sorted_costs(idle).layout.annotations[0].text


def test_sorted_costs_is_pure_and_serialises() -> None:
    trace = rise_trace()
    copy = deepcopy(trace)
    fig = build_sorted_costs(trace, 5)
    assert trace == copy
    text = fig.to_json()
    assert re.findall(r"(?:https?:)?//[\w.-]+\.\w+", text) == []
    assert json.loads(pio.from_json(text).to_json()) == json.loads(text)
