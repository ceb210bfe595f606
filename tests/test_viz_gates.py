"""viz.gates: gate snapshots parse into a history; heatmaps, maps, curves, animation replay it."""

from __future__ import annotations

import json
from copy import deepcopy
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from pruning.methods.base import TraceEvent
from viz.gates import (
    GateHistory,
    ReopenedHead,
    build_gate_animation,
    build_gate_comparison,
    build_gate_curves,
    build_gate_heatmap,
    build_open_gate_map,
    parse_gate_trace,
    reopened_heads,
)

STEPS = [0, 10, 20, 30, 40]
# Open gates per snapshot on a 2 x 3 grid: head (0, 1) closes at snapshot 2 (step 20) and is open
# again at snapshot 4 (step 40); head (1, 2) closes at snapshot 1 and stays closed.
OPEN = [
    [[1, 1, 1], [1, 1, 1]],
    [[1, 1, 1], [1, 1, 0]],
    [[1, 0, 1], [1, 1, 0]],
    [[1, 0, 1], [1, 1, 0]],
    [[1, 1, 1], [1, 1, 0]],
]
TOTAL = 40


def _event(kind: str, data: dict[str, Any], step: int) -> dict[str, Any]:
    return {"kind": kind, "step": step, "fraction": 0.5, "message": kind, "data": data}


def _w(snapshot: int) -> list[list[float]]:
    """Positive where open, negative where closed; the run's largest distance from 0 is 2.0."""
    grid = np.where(np.asarray(OPEN[snapshot]) == 1, 0.5 + 0.1 * snapshot, -0.3)
    if snapshot == 3:
        grid[1, 2] = -2.0
    return grid.tolist()


def gate_trace(kind: str = "ste", *, final: bool = True) -> list[dict[str, Any]]:
    """A gating run's trace by hand: stage / progress noise, five snapshots, the final event."""
    events = [_event("stage", {"stage": "loading"}, 0)]
    for snapshot, step in enumerate(STEPS):
        opened = int(np.sum(OPEN[snapshot]))
        data: dict[str, Any] = {
            "train_step": step,
            "total_steps": TOTAL,
            "w": _w(snapshot),
            "open": deepcopy(OPEN[snapshot]),
            "task_loss": None if step == 0 else 0.7 - 0.01 * step,
            "penalty": 0.1 * opened,
            "open_gates": opened,
            "val_metric": 0.8 + 0.001 * step,
            "val_metric_name": "accuracy",
            "gate_kind": kind,
        }
        if kind == "l0":
            prob = np.where(np.asarray(OPEN[snapshot]) == 1, 0.9, 0.2)
            data |= {
                "prob": prob.tolist(),
                "expected_open": float(prob.sum()),
                "train_gate_mean": 0.6,
            }
        events.append(_event("gates", data, len(events)))
        events.append(_event("progress", {"train_step": step}, len(events)))
    if final:
        mask = np.asarray(OPEN[-1], dtype=bool)
        events.append(
            _event(
                "final",
                {
                    "mask": mask.tolist(),
                    "w": _w(4),
                    "open": OPEN[-1],
                    "fixed_sparsity": None,
                    "reopened": [],  # deliberately empty: reopenings come from the snapshots
                },
                len(events),
            )
        )
    return events


def test_parse_stacks_the_ste_snapshots() -> None:
    history = parse_gate_trace(gate_trace("ste"))
    assert isinstance(history, GateHistory)
    assert history.gate_kind == "ste" and history.value_label == "W′"
    assert history.steps.tolist() == STEPS
    assert history.total_steps == TOTAL
    assert history.w.shape == (5, 2, 3) and history.open.shape == (5, 2, 3)
    assert history.open.dtype == np.bool_
    assert history.open_gates.tolist() == [6, 5, 4, 4, 5]
    assert np.isnan(history.task_loss[0]) and history.task_loss[1] == pytest.approx(0.6)
    assert history.val_metric[-1] == pytest.approx(0.84)
    assert history.prob is None and history.expected_open is None
    assert history.final_mask is not None and history.final_mask.sum() == 5
    assert history.threshold == 0.0


def test_parse_reads_the_eq10_reading_of_an_ste_run() -> None:
    old = parse_gate_trace(gate_trace("ste"))  # written before the choice existed: sigmoid
    assert old.ste_gradient == "sigmoid" and old.method_label == "AutoAttention (STE)"
    assert old.gradient_label.startswith("dG/dW′ = σ(W′)")
    trace = gate_trace("ste")
    for event in trace:
        if event["kind"] == "gates":
            event["data"]["ste_gradient"] = "softplus"
    literal = parse_gate_trace(trace)
    assert literal.ste_gradient == "softplus"
    assert literal.gradient_label == "dG/dW′ = Softplus(W′), eq. 10 as printed"
    assert literal.method_label == "AutoAttention (STE, Softplus gradient)"
    assert "Softplus gradient" in build_gate_curves(literal).layout.title.text
    l0 = parse_gate_trace(gate_trace("l0"))
    assert l0.ste_gradient is None and l0.gradient_label == ""


def test_an_unknown_or_mixed_eq10_reading_is_refused() -> None:
    trace = gate_trace("ste")
    trace[1]["data"]["ste_gradient"] = "relu"
    with pytest.raises(ValueError, match="ste_gradient is 'relu'; expected one of sigmoid"):
        parse_gate_trace(trace)
    trace = gate_trace("ste")
    trace[3]["data"]["ste_gradient"] = "softplus"  # one snapshot only; the rest say nothing
    with pytest.raises(ValueError, match="mix eq. 10 gradients \\(sigmoid, softplus\\)"):
        parse_gate_trace(trace)


def test_parse_keeps_the_l0_probabilities() -> None:
    history = parse_gate_trace(gate_trace("l0"))
    assert history.gate_kind == "l0" and history.value_label == "log α"
    assert history.prob is not None and history.prob.shape == (5, 2, 3)
    assert history.expected_open is not None
    assert history.expected_open[0] == pytest.approx(5.4)
    assert history.expected_open[2] == pytest.approx(4 * 0.9 + 2 * 0.2)
    assert history.train_gate_mean is not None and history.train_gate_mean[0] == 0.6


def test_parse_accepts_trace_event_objects_and_drops_a_repeated_end_step() -> None:
    events = [TraceEvent(**event) for event in gate_trace("ste")]
    repeated = TraceEvent(**{**gate_trace("ste")[-3], "step": 99})  # the step-40 snapshot again
    history = parse_gate_trace([*events[:-1], repeated, events[-1]])
    assert history.steps.tolist() == STEPS


@pytest.mark.parametrize(
    ("trace", "message"),
    [
        ([_event("progress", {}, 0), _event("final", {"mask": [[True]]}, 1)], "no gate snapshots"),
        ([], "no gate snapshots"),
        ("gates", "list of trace events"),
    ],
)
def test_a_trace_without_gates_is_refused(trace: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_gate_trace(trace)


def test_malformed_snapshots_are_refused() -> None:
    trace = gate_trace("ste")
    trace[3]["data"]["w"] = [[0.1, 0.2], [0.3, 0.4]]  # the second snapshot on another grid
    with pytest.raises(ValueError, match="same \\(n_layers, n_heads\\) grid"):
        parse_gate_trace(trace)
    trace = gate_trace("ste")
    trace[3]["data"]["open"] = [[1, 2, 1], [1, 1, 0]]
    with pytest.raises(ValueError, match="0 \\(closed\\) or 1 \\(open\\)"):
        parse_gate_trace(trace)
    trace = gate_trace("ste")
    del trace[1]["data"]["penalty"]
    with pytest.raises(ValueError, match="lacks 'penalty'"):
        parse_gate_trace(trace)
    trace = gate_trace("ste")
    trace[3]["data"]["train_step"] = -5
    with pytest.raises(ValueError, match="go forward"):
        parse_gate_trace(trace)


def test_reopened_heads_come_from_the_snapshots() -> None:
    history = parse_gate_trace(gate_trace("ste"))
    assert reopened_heads(history) == [ReopenedHead(layer=0, head=1, closed_at=20, reopened_at=40)]


def test_a_head_that_reopens_twice_is_reported_twice() -> None:
    trace = gate_trace("ste")
    for snapshot, value in zip(range(5), [0, 1, 0, 1, 1], strict=True):
        trace[1 + 2 * snapshot]["data"]["open"][1][0] = value
    found = [(r.closed_at, r.reopened_at) for r in reopened_heads(parse_gate_trace(trace))]
    assert found == [(0, 10), (20, 30), (20, 40)]  # (1, 0) twice, then (0, 1)


def _heatmap(fig: go.Figure) -> go.Heatmap:
    return next(t for t in fig.data if isinstance(t, go.Heatmap))


def _outlines(fig: go.Figure) -> list[tuple[str, str]]:
    trace = next(t for t in fig.data if t.name and t.name.startswith("reopened"))
    return list(zip(trace.y or (), trace.x or (), strict=True))


def test_heatmap_is_centred_on_the_threshold_with_one_range_for_the_run() -> None:
    history = parse_gate_trace(gate_trace("ste"))
    for index in (0, 2, None):
        heat = _heatmap(build_gate_heatmap(history, index))
        assert heat.zmid == 0.0
        assert (heat.zmin, heat.zmax) == (-2.0, 2.0)  # from snapshot 3, also at snapshot 0
    fig = build_gate_heatmap(history, 2)
    heat = _heatmap(fig)
    assert np.allclose(heat.z, history.w[2])
    assert list(heat.x) == ["H0", "H1", "H2"] and list(heat.y) == ["L0", "L1"]
    assert heat.text[0][1] == "×" and heat.text[0][0] == ""
    assert "Layer 0 · Head 1" in heat.hovertext[0][1] and "gate: closed" in heat.hovertext[0][1]
    assert "step 20 of 40" in fig.layout.title.text
    assert "4 of 6 gates open" in fig.layout.title.text
    assert fig.layout.height >= 200 and fig.layout.width >= 400


def test_reopened_heads_are_outlined_once_they_reopen() -> None:
    history = parse_gate_trace(gate_trace("ste"))
    assert _outlines(build_gate_heatmap(history, 3)) == []
    last = build_gate_heatmap(history)
    assert _outlines(last) == [("L0", "H1")]
    assert "reopened at 40" in _heatmap(last).hovertext[0][1]


def test_l0_heatmap_hover_shows_the_probability() -> None:
    history = parse_gate_trace(gate_trace("l0"))
    fig = build_gate_heatmap(history, 0)
    assert "P(gate ≠ 0): 0.9" in _heatmap(fig).hovertext[0][0]
    assert "expected in training" in fig.layout.title.text


def test_a_bad_index_is_refused() -> None:
    history = parse_gate_trace(gate_trace("ste"))
    with pytest.raises(ValueError, match="pick 0..4"):
        build_gate_heatmap(history, 5)
    with pytest.raises(ValueError, match="pick 0..4"):
        build_open_gate_map(history, -1)


def test_animation_has_a_frame_per_snapshot_with_slider_and_buttons() -> None:
    history = parse_gate_trace(gate_trace("ste"))
    fig = build_gate_animation(history)
    assert len(fig.frames) == history.n_snapshots
    assert [f.name for f in fig.frames] == [str(s) for s in STEPS]
    assert [s.label for s in fig.layout.sliders[0].steps] == [str(s) for s in STEPS]
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert any("Play" in label for label in labels) and any("Pause" in label for label in labels)
    assert np.allclose(fig.frames[2].data[0].z, history.w[2])
    assert all(f.data[0].zmin == -2.0 for f in fig.frames)
    assert "step 0 of 40" in fig.layout.title.text


def test_open_map_counts_open_and_closed_gates() -> None:
    history = parse_gate_trace(gate_trace("ste"))
    fig = build_open_gate_map(history, 2)
    heat = _heatmap(fig)
    assert np.asarray(heat.z).sum() == 4
    assert "4 open · 2 closed" in fig.layout.title.text
    names = {t.name for t in fig.data}
    assert {"open (head kept)", "closed (head removed) ×"} <= names
    assert _outlines(build_open_gate_map(history)) == [("L0", "H1")]


def test_curves_have_the_expected_traces_and_marker() -> None:
    ste = build_gate_curves(parse_gate_trace(gate_trace("ste")), 2)
    assert [t.name for t in ste.data] == ["open gates", "task loss", "penalty", "accuracy"]
    assert list(ste.data[0].x) == STEPS and list(ste.data[0].y) == [6, 5, 4, 4, 5]
    assert ste.data[1].y[0] is None  # no task loss at step 0: a gap, not a zero
    markers = [s for s in ste.layout.shapes if s.name == "step marker"]
    assert len(markers) == 1 and markers[0].x0 == 20
    l0 = build_gate_curves(parse_gate_trace(gate_trace("l0")))
    assert [t.name for t in l0.data][:2] == ["open gates", "expected open gates"]
    assert not [s for s in l0.layout.shapes if s.name == "step marker"]


def test_curves_show_the_fixed_sparsity_target() -> None:
    trace = gate_trace("ste")
    trace[-1]["data"]["fixed_sparsity"] = 0.5
    fig = build_gate_curves(parse_gate_trace(trace))
    assert [s.y0 for s in fig.layout.shapes if s.name == "final kept heads"] == [5]


def test_comparison_has_one_trace_per_run_per_panel() -> None:
    runs = {
        "STE": parse_gate_trace(gate_trace("ste")),
        "L0": parse_gate_trace(gate_trace("l0")),
    }
    fig = build_gate_comparison(runs)
    assert len(fig.data) == 4
    top = [t for t in fig.data if t.yaxis == "y"]
    bottom = [t for t in fig.data if t.yaxis == "y2"]
    assert [t.name for t in top] == ["STE", "L0"] and [t.name for t in bottom] == ["STE", "L0"]
    assert top[0].line.color == bottom[0].line.color != top[1].line.color
    assert [t.showlegend for t in fig.data].count(True) == 2
    with pytest.raises(ValueError, match="at least one"):
        build_gate_comparison({})


def test_figures_are_self_contained_json() -> None:
    history = parse_gate_trace(gate_trace("l0"))
    for fig in (
        build_gate_heatmap(history),
        build_gate_animation(history),
        build_open_gate_map(history),
        build_gate_curves(history, 1),
        build_gate_comparison({"a": history}),
    ):
        text = pio.to_json(fig)
        assert "http" not in text
        assert json.loads(text)["layout"]["title"]["text"]
