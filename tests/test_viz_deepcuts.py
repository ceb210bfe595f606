"""viz.deepcuts: density and IoU grids, IoU charts, ratio curves and the cost table."""

from __future__ import annotations

import re

import numpy as np
import pytest

from viz.deepcuts import (
    CostRow,
    IouMatrices,
    RatioPoint,
    build_cost_table,
    build_density_heatmap,
    build_head_iou_heatmap,
    build_iou_matrices,
    build_iou_matrix,
    build_layer_iou_chart,
    build_ratio_curves,
)


@pytest.mark.parametrize("shape", [(6, 12), (1, 1), (24, 16)])
def test_density_heatmap_draws_the_shares_on_a_fixed_unit_scale(shape: tuple[int, int]) -> None:
    density = np.random.default_rng(0).random(shape)
    fig = build_density_heatmap(density, title="cam_cut 3×")
    (trace,) = fig.data
    np.testing.assert_allclose(np.array(trace.z), density)
    assert (trace.zmin, trace.zmax) == (0.0, 1.0)
    assert list(trace.y) == [f"L{i}" for i in range(shape[0])]
    assert list(trace.x) == [f"H{i}" for i in range(shape[1])]
    assert fig.layout.yaxis.autorange == "reversed"
    assert trace.text[0][0] == f"{100 * density[0, 0]:.0f}%"
    assert trace.hovertext[0][0] == f"Layer 0 · Head 0<br>weights kept: {100 * density[0, 0]:.1f}%"
    assert fig.layout.title.text.startswith("cam_cut 3×<br><sup>mean ")


def test_density_summary_counts_emptied_heads_and_nan_is_na() -> None:
    density = np.array([[0.0, 0.5], [0.0, np.nan]])
    fig = build_density_heatmap(density)
    assert "mean 16.7% of weights kept · 2 heads emptied" in fig.layout.title.text
    assert fig.data[0].text[1][1] == "n/a"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.ones(4), "(n_layers, n_heads)"),
        (np.zeros((0, 3)), "non-empty"),
        (np.ones((2, 2), dtype=bool), "real shares"),
        (np.full((2, 2), 63.0), "[0, 1]"),
        (np.full((2, 2), -0.5), "[0, 1]"),
    ],
)
def test_density_heatmap_rejects_bad_input(values: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_density_heatmap(values)


def test_head_iou_heatmap_names_both_runs_and_summarises() -> None:
    iou = np.array([[1.0, 0.5], [0.25, 0.75]])
    fig = build_head_iou_heatmap(iou, ("cam_cut", "smooth_cut"))
    (trace,) = fig.data
    np.testing.assert_array_equal(np.array(trace.z), iou)
    assert (trace.zmin, trace.zmax) == (0.0, 1.0)
    assert trace.text[1][0] == "0.25"
    assert "IoU of kept weights, cam_cut vs smooth_cut: 0.500" in trace.hovertext[0][1]
    pruned = build_head_iou_heatmap(iou, ("cam_cut", "smooth_cut"), which="pruned")
    assert "IoU of pruned weights, cam_cut vs smooth_cut" in pruned.data[0].hovertext[0][1]
    assert fig.layout.title.text == (
        "Weight-mask IoU per head<br><sup>cam_cut vs smooth_cut · mean 0.62 · min 0.25 over "
        "heads</sup>"
    )
    with pytest.raises(ValueError, match="unique"):
        build_head_iou_heatmap(iou, ("a", "a"))
    with pytest.raises(ValueError, match="names"):
        build_head_iou_heatmap(iou, ("a", "b", "c"))


def test_layer_iou_chart_one_line_per_pair() -> None:
    pairs = {"a vs b": np.array([1.0, 0.5, 0.2]), "a vs c": np.array([0.9, 0.8, 0.7])}
    fig = build_layer_iou_chart(pairs)
    assert [t.name for t in fig.data] == ["a vs b", "a vs c"]
    assert list(fig.data[0].x) == ["L0", "L1", "L2"]
    assert list(fig.data[1].y) == [0.9, 0.8, 0.7]
    assert tuple(fig.layout.yaxis.range) == (0, 1.02)
    assert fig.layout.yaxis.title.text == "IoU of kept weights"
    assert build_layer_iou_chart(pairs, which="pruned").layout.yaxis.title.text == (
        "IoU of pruned weights"
    )
    with pytest.raises(ValueError, match="empty"):
        build_layer_iou_chart({})
    with pytest.raises(ValueError, match="lengths"):
        build_layer_iou_chart({"a vs b": np.ones(3), "a vs c": np.ones(2)})
    with pytest.raises(ValueError, match=r"\(n_layers,\)"):
        build_layer_iou_chart({"a vs b": np.ones((3, 2))})


def test_iou_matrix_annotates_every_cell() -> None:
    names = ["cam_cut", "smooth_cut", "layer_mag_weight"]
    matrix = np.array([[1.0, 0.6, 0.3], [0.6, 1.0, 0.4], [0.3, 0.4, 1.0]])
    fig = build_iou_matrix(names, matrix, title="Mean IoU")
    (trace,) = fig.data
    np.testing.assert_array_equal(np.array(trace.z), matrix)
    assert list(trace.x) == names and list(trace.y) == names
    assert len(fig.layout.annotations) == len(names) ** 2
    texts = {(a.x, a.y): a.text for a in fig.layout.annotations}
    assert texts[("layer_mag_weight", "cam_cut")] == "0.30"
    assert fig.layout.title.text == "Mean IoU"
    with pytest.raises(ValueError, match="square"):
        build_iou_matrix(names, np.ones((3, 2)))
    with pytest.raises(ValueError, match="names"):
        build_iou_matrix(names[:2], matrix)


def _figure9_panels() -> list[IouMatrices]:
    names = ("LayerMagWeight", "Cam-Cut", "Smooth-Cut")
    mean = np.array([[1.0, 0.84, 0.83], [0.84, 1.0, 0.95], [0.83, 0.95, 1.0]])
    return [
        IouMatrices(3.0, names, mean, mean - 0.05 * (mean < 1), chance=0.743),
        IouMatrices(3.5, names, mean, mean - 0.02 * (mean < 1)),
    ]


def test_iou_matrices_draw_figure_9_mean_and_minimum_per_ratio() -> None:
    fig = build_iou_matrices(_figure9_panels())
    assert [t.name for t in fig.data] == [
        "mean IoU at 3×", "min IoU at 3×", "mean IoU at 3.5×", "min IoU at 3.5×",
    ]  # fmt: skip
    np.testing.assert_allclose(np.array(fig.data[1].z), _figure9_panels()[0].minimum)
    assert all((t.zmin, t.zmax) == (0.0, 1.0) for t in fig.data)
    assert [t.showscale for t in fig.data] == [False, True, False, False]
    titles = [a.text for a in fig.layout.annotations[:4]]
    assert titles == ["mean at 3× (random masks: 0.74)", "minimum at 3× (random masks: 0.74)",
                      "mean at 3.5×", "minimum at 3.5×"]  # fmt: skip
    values = [a.text for a in fig.layout.annotations[4:]]
    assert len(values) == 4 * 9 and values[1] == "0.84" and values[9 + 1] == "0.79"
    assert "IoU of the pruned weights" in fig.layout.title.text
    assert fig.layout.yaxis.autorange == "reversed"


@pytest.mark.parametrize(
    ("panels", "message"),
    [
        ([], "at least one"),
        ([IouMatrices(3.0, ("a", "b"), np.ones((2, 3)), np.ones((2, 3)))], "square"),
        ([IouMatrices(3.0, ("a",), np.ones((2, 2)), np.ones((2, 2)))], "names"),
        ([IouMatrices(3.0, ("a", "b"), np.full((2, 2), 2.0), np.ones((2, 2)))], "[0, 1]"),
        ([IouMatrices(-1.0, ("a", "b"), np.ones((2, 2)), np.ones((2, 2)))], "positive"),
    ],
)
def test_iou_matrices_reject_bad_panels(panels: list[IouMatrices], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_iou_matrices(panels)


def _rows() -> list[dict[str, object]]:
    return [
        {"strategy": "cam_cut", "ratio": 3.0, "accuracy": 0.80},
        {"strategy": "cam_cut", "ratio": 2.0, "accuracy": 0.84},
        {"strategy": "layer_mag_weight", "ratio": 2.0, "accuracy": 0.82},
        {"strategy": "layer_mag_weight", "ratio": 4.0, "accuracy": 0.70},
    ]


def test_ratio_curves_one_line_per_strategy_and_a_dense_line() -> None:
    fig = build_ratio_curves(_rows(), dense_accuracy=0.85, strategy_labels={"cam_cut": "CAM-Cut"})
    names = [t.name for t in fig.data]
    assert names == ["layer_mag_weight", "CAM-Cut", "dense (0.8500)"]
    cam = fig.data[1]
    assert list(cam.x) == [2.0, 3.0] and list(cam.y) == [0.84, 0.80]  # sorted by ratio
    dense = fig.data[-1]
    assert set(dense.y) == {0.85} and dense.line.dash == "dash"
    assert dense.x[0] < 2.0 and dense.x[1] > 4.0
    assert list(fig.layout.xaxis.ticktext) == ["2×", "3×", "4×"]
    assert not any("recovered" in n for n in names)
    assert all(t.name != "dense" for t in build_ratio_curves(_rows()).data)
    assert fig.layout.xaxis.title.text.endswith("(all prunable weights / kept weights)")
    paper = build_ratio_curves(_rows(), axis_title="the paper's ratio on BERT-base")
    assert paper.layout.xaxis.title.text == "the paper's ratio on BERT-base"


def test_ratio_curves_show_recovered_accuracy_only_where_present() -> None:
    rows: list[RatioPoint | dict[str, object]] = [
        RatioPoint("cam_cut", 2.0, 0.80, 0.83),
        RatioPoint("cam_cut", 3.0, 0.75, None),
        {"strategy": "smooth_cut", "ratio": 3.0, "accuracy": 0.78},
    ]
    fig = build_ratio_curves(rows)
    names = [t.name for t in fig.data]
    assert names == ["cam_cut", "cam_cut · recovered", "smooth_cut"]
    recovered = fig.data[1]
    assert recovered.line.dash == "dot"
    assert recovered.y[0] == 0.83 and np.isnan(recovered.y[1])
    assert recovered.line.color == fig.data[0].line.color


def test_ratio_curves_reject_empty_and_incomplete_rows() -> None:
    with pytest.raises(ValueError, match="empty"):
        build_ratio_curves([])
    with pytest.raises(ValueError, match="'accuracy'"):
        build_ratio_curves([{"strategy": "cam_cut", "ratio": 3.0}])
    with pytest.raises(ValueError, match="not a number"):
        build_ratio_curves([{"strategy": "cam_cut", "ratio": "x", "accuracy": 0.5}])
    with pytest.raises(ValueError, match="positive"):
        build_ratio_curves([{"strategy": "cam_cut", "ratio": 0.0, "accuracy": 0.5}])


def test_cost_table_lists_honest_sizes_and_latency_when_measured() -> None:
    rows = [
        CostRow("cam_cut 3×", 1_000, 4_000_000, 2_500_000, params_total=1_000_000),
        {"name": "smooth_cut 3×", "params_nonzero": 10, "dense_bytes": 40, "sparse_bytes": 84},
    ]
    fig = build_cost_table(rows)
    (table,) = fig.data
    header = [h.replace("<b>", "").replace("</b>", "") for h in table.header.values]
    assert header == ["Run", "Non-zero weights", "Dense (MB)", "Sparse CSR (MB)", "CSR / dense"]
    columns = [list(c) for c in table.cells.values]
    assert columns[0] == ["cam_cut 3×", "smooth_cut 3×"]
    assert columns[1] == ["1,000 (0.1%)", "10"]
    assert columns[2][0] == "4.00" and columns[3][0] == "2.50"
    assert columns[4] == ["0.62×", "2.10×"]  # CSR grows the model above half density

    timed = build_cost_table([CostRow("a", 1, 4, 8, dense_ms=12.34, masked_ms=12.5)])
    assert [list(c) for c in timed.data[0].cells.values[-2:]] == [["12.3"], ["12.5"]]
    with pytest.raises(ValueError, match="empty"):
        build_cost_table([])
    with pytest.raises(ValueError, match="'sparse_bytes'"):
        build_cost_table([{"name": "a", "params_nonzero": 1, "dense_bytes": 4}])
    with pytest.raises(ValueError, match="positive"):
        build_cost_table([CostRow("a", 1, 0, 8)])
