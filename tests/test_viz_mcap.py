"""viz.mcap: episode curves, importance over episodes, the final map and the Table I view."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest

from pruning.methods.base import TraceEvent
from viz.mcap import (
    UNPRUNED,
    Table1Row,
    build_episode_curves,
    build_final_importance,
    build_head_patterns,
    build_importance_heatmap,
    build_keep_map,
    build_pattern_confusion,
    build_pattern_examples,
    build_table1_chart,
    episode_rows,
    pattern_event,
    table1_frame,
    table1_rows,
)

N_LAYERS, N_HEADS, EPISODES = 3, 4, 25
UPDATES = [7, 15, 23]  # update_every = 8: an SGD step after every eighth episode


def _keep_prob(episode: int) -> np.ndarray:
    """Head (l, h) drifts from 0.5 towards its own target; head (2, 3) heads for 0."""
    target = np.linspace(0.0, 1.0, N_LAYERS * N_HEADS)[::-1].reshape(N_LAYERS, N_HEADS)
    return 0.5 + (target - 0.5) * episode / (EPISODES - 1)


CLASSES = ["vertical", "diagonal", "vertical+diagonal", "block", "heterogeneous"]
CONFUSION = [[9, 1, 0, 0, 0], [0, 8, 2, 0, 0], [0, 0, 10, 0, 0], [0, 0, 0, 10, 0], [0, 0, 0, 1, 9]]
HEAD_PATTERNS = [[0, 1, 2, 4], [4, 4, 0, 1], [2, 3, 4, 0]]


def patterns_data() -> dict[str, Any]:
    """A pattern CNN event's data by hand: 46 of 50 held-out maps right."""
    examples = np.stack([np.eye(4), np.eye(4, k=-1), np.eye(4), np.ones((4, 4)), np.eye(4)])
    delta = np.where(np.asarray(HEAD_PATTERNS) == 0, 0.1, 0.9)
    return {
        "classes": CLASSES,
        "accuracy": 0.92,
        "confusion": CONFUSION,
        "accuracy_by_source": {"generated": 0.95, "model": 0.85},
        "train_counts": {"generated": [40] * 5, "model": [30, 2, 10, 0, 20]},
        "test_counts": {"generated": [10] * 5, "model": [0] * 5},
        "losses": [1.6, 0.4],
        "epochs": 2,
        "texts": 16,
        "model_maps": 192,
        "labelled_model_maps": 62,
        "examples": (examples / 4).tolist(),
        "head_patterns": HEAD_PATTERNS,
        "head_delta": delta.tolist(),
    }


def mcap_trace(episodes: int = EPISODES, *, patterns: bool = True) -> list[dict[str, Any]]:
    """An MCAP trace by hand: stage noise, the pattern CNN's event, one event per episode, the
    final event."""
    events: list[dict[str, Any]] = [
        {"kind": "stage", "step": -1, "fraction": 0.0, "message": "loading", "data": {}}
    ]
    if patterns:
        events.append({"kind": "patterns", "step": 0, "fraction": 0.05, "data": patterns_data()})
    for episode in range(episodes):
        data = {
            "episode": episode,
            "total_episodes": episodes,
            "pass": 0 if episode < 20 else 1,
            "instances_seen": 60 * (episode + 1),
            "total_instances": 60 * episodes,
            "kl": 0.001 * (episode + 1),
            "cnn_loss": 2.0 - 0.05 * episode,
            "budget_loss": 0.5 / (episode + 1),
            "objective": 2.5 - 0.05 * episode,
            "update": episode in UPDATES,
            "updates": sum(u <= episode for u in UPDATES),
            "keep_prob": _keep_prob(episode).tolist(),
            "cnn_score": (1 - _keep_prob(episode)).tolist(),
            "sampled_keep": 9,
        }
        events.append(
            {"kind": "episode", "step": len(events), "fraction": 0.5, "message": "", "data": data}
        )
        events.append({"kind": "stage", "step": -1, "fraction": 0.5, "message": "x", "data": {}})
    scores = _keep_prob(episodes - 1)
    mask = scores > np.sort(scores.reshape(-1))[2]  # the three lowest go
    final = {"scores": scores.tolist(), "mask": mask.tolist(), "n_pruned": 3}
    events.append({"kind": "final", "step": len(events), "fraction": 1.0, "data": final})
    return events


def _trace(fig: go.Figure, name: str) -> Any:
    return next(t for t in fig.data if t.name == name)


def test_episode_rows_skip_other_kinds_and_accept_trace_events() -> None:
    trace = mcap_trace()
    rows = episode_rows(trace)
    assert [r["episode"] for r in rows] == list(range(EPISODES))
    objects = [TraceEvent(kind=e["kind"], step=0, fraction=0.0, data=e["data"]) for e in trace]
    assert episode_rows(objects) == rows
    assert episode_rows([]) == [] and episode_rows(None) == []
    with pytest.raises(ValueError, match="not a trace event"):
        episode_rows([42])


def test_curves_have_one_trace_per_quantity_and_the_updates_marked() -> None:
    fig = build_episode_curves(mcap_trace())
    names = [t.name for t in fig.data]
    assert names == ["KL", "CNN loss", "budget loss", "objective", "SGD update"]
    assert list(_trace(fig, "KL").x) == list(range(EPISODES))
    assert _trace(fig, "KL").y[3] == pytest.approx(0.004)
    # KL sits in its own panel: its y axis is not the objective's.
    assert _trace(fig, "KL").yaxis != _trace(fig, "objective").yaxis
    assert list(_trace(fig, "SGD update").x) == UPDATES
    lines = [s for s in fig.layout.shapes if s.x0 == s.x1]
    assert sorted(s.x0 for s in lines if s.line.dash != "dash") == UPDATES
    assert [s.x0 for s in lines if s.line.dash == "dash"] == [19.5]  # pass 2 starts
    assert "episode 25 of 25 · 3 updates" in fig.layout.title.text
    assert fig.layout.xaxis4.title.text == "episode"


def test_importance_heatmap_is_heads_by_episodes_with_head_labels() -> None:
    fig = build_importance_heatmap(mcap_trace())
    heat = fig.data[0]
    z = np.asarray(heat.z, dtype=float)
    assert z.shape == (N_LAYERS * N_HEADS, EPISODES)
    assert list(heat.y)[:5] == ["L0·H0", "L0·H1", "L0·H2", "L0·H3", "L1·H0"]
    assert z[11, 24] == pytest.approx(_keep_prob(24)[2, 3])
    assert (heat.zmin, heat.zmax) == (0.0, 1.0)
    assert fig.layout.yaxis.autorange == "reversed"
    assert len(fig.layout.shapes) == N_LAYERS - 1  # separators between the layers
    scores = build_importance_heatmap(mcap_trace(), value="cnn_score", episode=10)
    assert np.asarray(scores.data[0].z, dtype=float)[11, 24] == pytest.approx(
        1 - _keep_prob(24)[2, 3]
    )
    assert "CNN score" in scores.layout.title.text
    assert any(s.x0 == 10 for s in scores.layout.shapes)
    with pytest.raises(ValueError, match="keep_prob"):
        build_importance_heatmap(mcap_trace(), value="w")  # type: ignore[arg-type]


def test_importance_heatmap_stays_readable_with_72_heads_and_200_episodes() -> None:
    rows = [
        {
            "kind": "episode",
            "data": {"episode": e, "keep_prob": np.full((6, 12), e / 200).tolist()},
        }
        for e in range(200)
    ]
    fig = build_importance_heatmap(rows)
    assert np.asarray(fig.data[0].z).shape == (72, 200)
    assert list(fig.layout.yaxis.ticktext) == [f"L{i}" for i in range(6)]
    assert 400 <= fig.layout.height <= 1200
    curves = build_episode_curves(rows)
    assert len(curves.data[0].x) == 200


def test_keep_map_replays_one_episode() -> None:
    trace = mcap_trace()
    fig = build_keep_map(trace, 4)
    assert np.asarray(fig.data[0].z) == pytest.approx(_keep_prob(4))
    assert "episode 5 of 25" in fig.layout.title.text
    assert "episode 25 of 25" in build_keep_map(trace).layout.title.text
    with pytest.raises(ValueError, match="not in this trace"):
        build_keep_map(trace, 99)


def test_final_importance_marks_the_pruned_heads() -> None:
    final = mcap_trace()[-1]["data"]
    fig = build_final_importance(final["scores"], final["mask"])
    assert "9 of 12 heads kept" in fig.layout.title.text
    status = next(t for t in fig.data if t.name == "status")
    marked = {(r, c) for r, row in enumerate(status.text) for c, mark in enumerate(row) if mark}
    assert marked == {(2, 1), (2, 2), (2, 3)}  # the three lowest final scores, marked "×"
    as_ints = build_final_importance(final["scores"], np.asarray(final["mask"], dtype=int))
    assert "9 of 12 heads kept" in as_ints.layout.title.text


def test_empty_inputs_give_annotated_figures() -> None:
    for fig in (
        build_episode_curves([]),
        build_importance_heatmap([]),
        build_keep_map(None),
        build_final_importance(None, None),
        build_table1_chart([]),
    ):
        assert fig.layout.title.text
        assert "Nothing to show" in fig.layout.annotations[0].text
    assert "Method" in table1_frame([]).columns
    assert table1_frame([]).empty


DENSE_COST = {"params_dense": 110_000_000, "flops_dense": 22_000_000_000}


def _record(key: str, name: str, granularity: str, **extra: Any) -> SimpleNamespace:
    cost = {"params_dense": 110_000_000, "flops_dense": 22_000_000_000}
    if granularity == "head":
        cost |= {"params_pruned": 99_000_000, "flops_pruned": 18_000_000_000, "head_sparsity": 0.2}
    else:
        cost |= {"params_pruned": 110_000_000, "flops_pruned": 22_000_000_000}
        cost |= {"head_sparsity": 0.0, "params_nonzero": 95_000_000}
    metrics = {
        "dense": {"mcc": 0.8, "accuracy": 0.9, "loss": 0.3},
        "pruned": {"mcc": 0.7, "accuracy": 0.85, "loss": 0.4},
        "cost": cost,
    }
    metrics |= extra.pop("metrics", {})
    info = {"name": name, "granularity": granularity, "settings": {"protocol": "before"}}
    return SimpleNamespace(
        key=key, method=extra.pop("method", "mcap"), config=extra, metrics=metrics, info=info
    )


def test_table1_rows_cover_head_and_weight_level_runs() -> None:
    latency = {"latency": {"dense_ms": 20.0, "pruned_ms": 15.0, "p10_ms": 14.0, "p90_ms": 16.5}}
    records = [
        _record("a" * 16, "MCAP · 20%", "head", sparsity=0.2, metrics=latency),
        _record("b" * 16, "IMP · 20%", "weight", sparsity=0.2, method="unstructured"),
        _record("c" * 16, "L1 · 30%", "weight", method="unstructured"),
    ]
    dense = {"mcc": 0.8, "accuracy": 0.9, "loss": 0.3}
    rows = table1_rows(records, dense, DENSE_COST, {"median_ms": 20.0, "p10_ms": 19.0})
    assert [r.method for r in rows] == [UNPRUNED, "MCAP · 20%", "IMP · 20%", "L1 · 30%"]
    first, mcap, imp, l1 = rows
    assert first == Table1Row(
        UNPRUNED, "none", 0.0, 0.0, 0.8, 0.9, 0.3, 22 * 10**9, 110 * 10**6, 20.0, 19.0, None, None
    )
    assert mcap.heads_removed == 0.2 and mcap.weights_removed == pytest.approx(0.1)
    assert (mcap.latency_ms, mcap.latency_p10_ms, mcap.latency_p90_ms) == (15.0, 14.0, 16.5)
    assert mcap.run_key == "a" * 16 and mcap.mcc == 0.7 and mcap.params == 99_000_000
    # One denominator for every row: the share of all parameters (non-zeros for weight level).
    assert imp.granularity == "weight" and imp.heads_removed == 0
    assert imp.weights_removed == pytest.approx(1 - 95 / 110)
    assert imp.params == 95_000_000 and imp.latency_ms is None
    assert l1.weights_removed == pytest.approx(1 - 95 / 110)
    measured = table1_rows(records, dense, DENSE_COST, latencies={"b" * 16: {"median_ms": 9.0}})
    assert measured[2].latency_ms == 9.0 and measured[0].latency_ms is None


def test_table1_frame_and_chart() -> None:
    records = [
        _record("a" * 16, "MCAP", "head", metrics={"latency": {"pruned_ms": 15.0}}),
        _record("b" * 16, "IMP", "weight", sparsity=0.2),
    ]
    rows = table1_rows(records, {"mcc": 0.8, "accuracy": 0.9, "loss": 0.3}, DENSE_COST, 20.0)
    frame = table1_frame(rows)
    assert list(frame.columns) == [
        "Method",
        "Heads removed %",
        "Weights removed %",
        "MCC",
        "Accuracy %",
        "Loss",
        "Latency ms (p10–p90)",
        "GFLOPs / example",
        "Params M",
    ]
    assert frame["Heads removed %"].tolist() == [0.0, 20.0, 0.0]
    assert frame["Accuracy %"].tolist() == [90.0, 85.0, 85.0]
    assert frame["Latency ms (p10–p90)"].tolist() == ["20.0", "15.0", "—"]
    assert frame["GFLOPs / example"].tolist() == [22.0, 18.0, 22.0]
    assert frame["Params M"].tolist() == [110.0, 99.0, 95.0]

    fig = build_table1_chart(rows)
    mcc = _trace(fig, "MCC")
    assert list(mcc.x) == ["MCAP", "IMP"] and list(mcc.y) == [0.7, 0.7]
    assert mcc.marker.color[0] != mcc.marker.color[1]  # head vs weight level
    dashed = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert sorted(s.y0 for s in dashed) == [0.8, 20.0]
    assert list(_trace(fig, "latency").y) == [15.0, None]
    untimed = build_table1_chart(table1_rows(records[1:], {"mcc": 0.8}, DENSE_COST))
    assert [t.name for t in untimed.data] == ["MCC"]
    assert math.isnan(table1_rows([], {}, {})[0].mcc)
    json.loads(fig.to_json())  # serialisable for st.plotly_chart


def test_pattern_event_is_found_and_absent_in_legacy_traces() -> None:
    assert pattern_event(mcap_trace()) == patterns_data()
    assert pattern_event(mcap_trace(patterns=False)) is None
    assert pattern_event(None) is None


def test_pattern_confusion_shows_counts_row_shares_and_accuracy() -> None:
    fig = build_pattern_confusion(CONFUSION, CLASSES, subtitle="generated and model maps")
    (heat,) = fig.data
    assert list(heat.x) == CLASSES and list(heat.y) == CLASSES
    assert list(heat.text[1]) == ["0", "8", "2", "0", "0"]
    assert heat.z[1] == pytest.approx([0.0, 0.8, 0.2, 0.0, 0.0])  # share of the true row
    assert heat.z[2][2] == 1.0
    assert "accuracy 92.0% on 50 held-out maps" in fig.layout.title.text
    assert "generated and model maps" in fig.layout.title.text
    assert fig.layout.yaxis.autorange == "reversed"
    with pytest.raises(ValueError, match="square"):
        build_pattern_confusion([[1, 2, 3]], ["a"])
    with pytest.raises(ValueError, match="2 class names for a 5 x 5"):
        build_pattern_confusion(CONFUSION, ["a", "b"])
    json.loads(fig.to_json())


def test_pattern_examples_one_panel_per_pattern() -> None:
    fig = build_pattern_examples(patterns_data()["examples"], CLASSES)
    assert [t.name for t in fig.data] == CLASSES
    assert [a.text for a in fig.layout.annotations] == CLASSES
    assert [bool(t.showscale) for t in fig.data] == [False] * 4 + [True]
    assert np.asarray(fig.data[1].z)[1, 0] == pytest.approx(0.25)  # previous-token diagonal
    with pytest.raises(ValueError, match=r"shape \(k, S, S\)"):
        build_pattern_examples(np.zeros((2, 3, 4)), ["a", "b"])
    with pytest.raises(ValueError, match="1 pattern names for 5 example maps"):
        build_pattern_examples(patterns_data()["examples"], ["a"])


def test_head_patterns_grid_colours_each_head_by_its_pattern() -> None:
    data = patterns_data()
    fig = build_head_patterns(data["head_patterns"], CLASSES, data["head_delta"])
    (heat,) = fig.data
    assert np.asarray(heat.z).shape == (3, 4)
    assert np.asarray(heat.z)[0].tolist() == [0.5, 1.5, 2.5, 4.5]  # the middle of each band
    assert heat.customdata[2][1] == "block" and heat.text[0][0] == "0.10"
    assert list(heat.colorbar.ticktext) == CLASSES
    title = fig.layout.title.text
    assert "vertical 3" in title and "heterogeneous 4" in title and "block 1" in title
    missing = build_head_patterns([[-1, 0]], CLASSES)
    assert np.isnan(np.asarray(missing.data[0].z, dtype=float)[0, 0])
    assert missing.data[0].customdata[0][0] == "none"
    with pytest.raises(ValueError, match=r"-1..4 for 5 patterns"):
        build_head_patterns([[7]], CLASSES)
    with pytest.raises(ValueError, match="delta has shape"):
        build_head_patterns(data["head_patterns"], CLASSES, [[0.5]])


def test_empty_pattern_inputs_give_annotated_figures() -> None:
    for fig in (
        build_pattern_confusion(None),
        build_pattern_confusion([[0, 0], [0, 0]], ["a", "b"]),
        build_pattern_examples(None),
        build_head_patterns(None, CLASSES),
    ):
        assert "Nothing to show" in fig.layout.annotations[0].text
