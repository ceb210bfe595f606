"""viz: mask heatmaps, run comparisons, agreement, overlap and metric deltas carry the inputs."""

from __future__ import annotations

import math
import re

import numpy as np
import plotly.graph_objects as go
import pytest

from viz import (
    build_agreement_heatmap,
    build_layer_counts,
    build_mask_comparison,
    build_mask_heatmap,
    build_metric_deltas,
    mask_overlap,
)
from viz.grid import CAT_EARLIER, CAT_KEPT, CAT_NO_SCORE, CAT_REMOVED
from viz.metrics import BETTER_COLOUR, NEUTRAL_COLOUR, WORSE_COLOUR

GRIDS = [(6, 12), (12, 12), (1, 1), (24, 16)]


def _random_run(shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=shape)
    mask = rng.random(shape) < 0.5
    mask.flat[0] = True  # at least one kept head, so 1 x 1 grids exercise the score trace
    return mask, scores


def _heatmaps(fig: go.Figure) -> list[go.Heatmap]:
    return [t for t in fig.data if t.type == "heatmap"]


def _status_and_score(fig: go.Figure) -> tuple[np.ndarray, np.ndarray | None]:
    """z of the status trace and of the score trace (None without scores) as float arrays."""
    traces = _heatmaps(fig)
    status = np.array(traces[0].z, dtype=float)
    score = np.array(traces[1].z, dtype=float) if len(traces) > 1 else None
    return status, score


@pytest.mark.parametrize("shape", GRIDS)
def test_heatmap_data_matches_mask_and_scores(shape: tuple[int, int]) -> None:
    mask, scores = _random_run(shape)
    fig = build_mask_heatmap(mask, scores, score_label="taylor")
    status, score = _status_and_score(fig)
    assert score is not None
    n_layers, n_heads = shape

    np.testing.assert_array_equal(score[mask], scores[mask])
    assert np.isnan(score[~mask]).all()
    assert (status[~mask] == CAT_REMOVED).all()
    assert np.isnan(status[mask]).all()
    # Every cell is drawn (and hovered) by exactly one of the two traces.
    assert (np.isnan(status) ^ np.isnan(score)).all()

    marks = np.array(_heatmaps(fig)[0].text)
    assert (marks[~mask] == "×").all()
    assert (marks[mask] == "").all()

    trace = _heatmaps(fig)[0]
    assert list(trace.y) == [f"L{i}" for i in range(n_layers)]
    assert list(trace.x) == [f"H{i}" for i in range(n_heads)]
    assert fig.layout.yaxis.autorange == "reversed"  # layer 0 at the top
    assert fig.layout.yaxis.scaleanchor == "x"  # square cells
    assert fig.layout.coloraxis.colorbar.title.text == "taylor"
    if scores.size > 1:
        assert fig.layout.coloraxis.cmin == pytest.approx(scores.min())
        assert fig.layout.coloraxis.cmax == pytest.approx(scores.max())

    kept = int(mask.sum())
    total = mask.size
    assert fig.layout.title.text == (
        f"{kept} of {total} heads kept ({100 * (total - kept) / total:.1f}% removed)"
    )
    for layer in range(n_layers):
        for head in range(n_heads):
            text = trace.hovertext[layer][head]
            assert text.startswith(f"Layer {layer} · Head {head}<br>taylor: ")
            assert text.endswith("status: kept" if mask[layer, head] else "status: removed")
            assert f"{scores[layer, head]:.4g}" in text


def test_heatmap_title_summary_example() -> None:
    mask = np.zeros((6, 12), dtype=bool)
    mask.flat[:34] = True
    fig = build_mask_heatmap(mask, title="A* on SST-2")
    assert fig.layout.title.text == "A* on SST-2<br><sup>34 of 72 heads kept (52.8% removed)</sup>"


def test_heatmap_height_follows_layers() -> None:
    heights = [build_mask_heatmap(np.ones((n, 12), dtype=bool)).layout.height for n in (6, 12, 24)]
    assert heights[0] < heights[1] < heights[2]
    assert all(200 <= h <= 1000 for h in heights)


def test_heatmap_without_scores_uses_one_kept_colour() -> None:
    mask = np.array([[True, False], [False, True]])
    fig = build_mask_heatmap(mask)
    assert len(_heatmaps(fig)) == 1
    status, _ = _status_and_score(fig)
    np.testing.assert_array_equal(status, [[CAT_KEPT, CAT_REMOVED], [CAT_REMOVED, CAT_KEPT]])
    assert fig.layout.coloraxis.showscale is False
    hover = _heatmaps(fig)[0].hovertext
    assert hover[0][1] == "Layer 0 · Head 1<br>status: removed"
    assert hover[1][1] == "Layer 1 · Head 1<br>status: kept"


def test_heatmap_nan_scores_show_as_na() -> None:
    mask = np.array([[True, True, False]])
    scores = np.array([[np.nan, 0.5, np.nan]])
    fig = build_mask_heatmap(mask, scores)
    status, score = _status_and_score(fig)
    assert score is not None
    assert status[0, 0] == CAT_NO_SCORE and np.isnan(score[0, 0])
    assert score[0, 1] == 0.5 and np.isnan(status[0, 1])
    assert status[0, 2] == CAT_REMOVED
    trace = _heatmaps(fig)[0]
    assert trace.text[0][0] == "n/a"
    assert "importance: n/a<br>status: kept" in trace.hovertext[0][0]
    assert "importance: n/a<br>status: removed" in trace.hovertext[0][2]
    assert any(t.name == "kept, no score (n/a)" for t in fig.data)


def test_heatmap_all_nan_scores_hide_the_colour_bar() -> None:
    fig = build_mask_heatmap(np.ones((2, 2), dtype=bool), np.full((2, 2), np.nan))
    assert fig.layout.coloraxis.showscale is False


def test_heatmap_marks_heads_removed_earlier() -> None:
    mask = np.array([[True, True, False, False]])
    present = np.array([[True, False, True, False]])
    fig = build_mask_heatmap(mask, np.arange(4.0).reshape(1, 4), present=present)
    status, score = _status_and_score(fig)
    assert score is not None
    assert score[0, 0] == 0.0
    assert status[0, 1] == CAT_EARLIER  # kept by the mask, but absent from the model
    assert status[0, 2] == CAT_REMOVED
    assert status[0, 3] == CAT_EARLIER
    trace = _heatmaps(fig)[0]
    assert trace.text[0][1] == "–"
    assert trace.hovertext[0][1].endswith("status: removed earlier")
    assert fig.layout.title.text == "1 of 4 heads kept (75.0% removed, 2 of them earlier)"
    assert any(t.name == "removed earlier –" for t in fig.data)


def test_heatmap_does_not_modify_its_inputs() -> None:
    mask, scores = _random_run((3, 4))
    scores[0, 1] = np.nan
    mask_copy, scores_copy = mask.copy(), scores.copy()
    build_mask_heatmap(mask, scores)
    np.testing.assert_array_equal(mask, mask_copy)
    np.testing.assert_array_equal(scores, scores_copy)


@pytest.mark.parametrize(
    ("mask", "kwargs", "message"),
    [
        (np.ones(12, dtype=bool), {}, "must be 2-D"),
        (np.ones((2, 3, 4), dtype=bool), {}, "must be 2-D"),
        (np.zeros((0, 4), dtype=bool), {}, "is empty"),
        (np.ones((2, 3), dtype=int), {}, r"astype\(bool\)"),
        (np.ones((2, 3), dtype=bool), {"scores": np.ones((3, 2))}, "same"),
        (np.ones((2, 3), dtype=bool), {"scores": np.full((2, 3), "a")}, "numeric"),
        (np.ones((2, 3), dtype=bool), {"present": np.ones((2, 3))}, "boolean"),
        (np.ones((2, 3), dtype=bool), {"present": np.ones((3, 3), dtype=bool)}, "original"),
    ],
)
def test_heatmap_rejects_bad_input(mask: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_mask_heatmap(mask, **kwargs)


def test_layer_counts_match_mask() -> None:
    mask, _ = _random_run((6, 12), seed=3)
    present = np.ones_like(mask)
    present[2, :3] = False
    fig = build_layer_counts(mask, present=present)
    by_name = {t.name: np.array(t.x) for t in fig.data}
    np.testing.assert_array_equal(by_name["kept"], (mask & present).sum(axis=1))
    np.testing.assert_array_equal(by_name["removed"], (~mask & present).sum(axis=1))
    np.testing.assert_array_equal(by_name["removed earlier"], (~present).sum(axis=1))
    assert list(fig.data[0].y) == [f"L{i}" for i in range(6)]
    assert "removed earlier" not in {t.name for t in build_layer_counts(mask).data}


@pytest.mark.parametrize("n_runs", [2, 3, 4, 6])
def test_comparison_has_one_subplot_per_run(n_runs: int) -> None:
    runs = [_random_run((6, 12), seed=i) for i in range(n_runs)]
    masks = [m for m, _ in runs]
    names = [f"run{i}" for i in range(n_runs)]
    fig = build_mask_comparison(masks, names, [s for _, s in runs])

    heatmaps = _heatmaps(fig)
    assert len(heatmaps) == 2 * n_runs
    assert len({t.xaxis for t in heatmaps}) == n_runs
    titles = [a.text for a in fig.layout.annotations]
    for name, mask in zip(names, masks, strict=True):
        assert f"{name}<br><sup>{int(mask.sum())} of 72 kept</sup>" in titles
    # One shared colour axis over every run's scores.
    assert {t.coloraxis for t in heatmaps if t.name == "importance"} == {"coloraxis"}
    all_scores = np.stack([s for _, s in runs])
    assert fig.layout.coloraxis.cmin == pytest.approx(all_scores.min())
    assert fig.layout.coloraxis.cmax == pytest.approx(all_scores.max())
    # The score trace of run i carries run i's kept scores, on run i's axes.
    for i, (mask, scores) in enumerate(runs):
        z = np.array(heatmaps[2 * i + 1].z, dtype=float)
        np.testing.assert_array_equal(z[mask], scores[mask])
        assert heatmaps[2 * i].xaxis == heatmaps[2 * i + 1].xaxis


def test_comparison_without_shared_range_scales_each_run() -> None:
    first, second = _random_run((3, 4), seed=1), _random_run((3, 4), seed=2)
    scores = [first[1], second[1] * 100]
    fig = build_mask_comparison([first[0], second[0]], ["a", "b"], scores, shared_range=False)
    for trace in (t for t in _heatmaps(fig) if t.name == "importance"):
        z = np.array(trace.z, dtype=float)
        assert np.nanmin(z) >= 0.0 and np.nanmax(z) <= 1.0
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 1.0)
    assert fig.layout.coloraxis.colorbar.title.text == "importance (min–max per run)"
    hover = _heatmaps(fig)[2].hovertext[0][0]
    assert f"{scores[1][0, 0]:.4g}" in hover  # hover keeps the raw score


def test_comparison_mixes_runs_with_and_without_scores() -> None:
    mask = np.ones((2, 2), dtype=bool)
    fig = build_mask_comparison([mask, mask], ["a", "b"], [np.ones((2, 2)), None])
    assert [t.name for t in _heatmaps(fig)] == ["status", "importance", "status"]


@pytest.mark.parametrize(
    ("masks", "names", "kwargs", "message"),
    [
        ([np.ones((2, 2), dtype=bool)], ["a"], {}, "at least 2"),
        ([np.ones((2, 2), dtype=bool)] * 7, list("abcdefg"), {}, "at most 6"),
        ([np.ones((2, 2), dtype=bool), np.ones((2, 3), dtype=bool)], ["a", "b"], {}, "same"),
        ([np.ones((2, 2), dtype=bool)] * 2, ["a"], {}, "one name per run"),
        ([np.ones((2, 2), dtype=bool)] * 2, ["a", "a"], {}, "unique"),
        ([np.ones((2, 2), dtype=bool), np.ones((2, 2))], ["a", "b"], {}, r"masks\[1\]"),
        ([np.ones((2, 2), dtype=bool)] * 2, ["a", "b"], {"scores": [None]}, "one entry per run"),
        (
            [np.ones((2, 2), dtype=bool)] * 2,
            ["a", "b"],
            {"scores": [None, np.ones((2, 3))]},
            r"scores\[1\]",
        ),
    ],
)
def test_comparison_rejects_bad_input(
    masks: list[np.ndarray], names: list[str], kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_mask_comparison(masks, names, **kwargs)


def test_agreement_counts_equal_numpy() -> None:
    masks = [_random_run((12, 12), seed=i)[0] for i in range(4)]
    names = ["astar", "gates", "mcap", "random"]
    fig = build_agreement_heatmap(masks, names)
    (trace,) = _heatmaps(fig)
    counts = np.sum(np.stack(masks), axis=0)
    np.testing.assert_array_equal(np.array(trace.z), counts)
    np.testing.assert_array_equal(np.array(trace.text, dtype=int), counts)
    assert list(trace.colorbar.tickvals) == [0, 1, 2, 3, 4]

    layer, head = 5, 7
    keeping = [n for n, m in zip(names, masks, strict=True) if m[layer, head]]
    removing = [n for n, m in zip(names, masks, strict=True) if not m[layer, head]]
    hover = trace.hovertext[layer][head]
    assert hover.startswith(f"Layer {layer} · Head {head}<br>kept by {len(keeping)} of 4: ")
    assert ", ".join(keeping or ["none"]) in hover
    assert hover.endswith(f"removed by: {', '.join(removing) or 'none'}")

    all_keep, none_keep = int((counts == 4).sum()), int((counts == 0).sum())
    assert fig.layout.title.text == (
        f"4 runs: {all_keep} heads kept by all, {none_keep} removed by all, "
        f"{144 - all_keep - none_keep} disputed"
    )


def test_agreement_rejects_mismatched_names() -> None:
    with pytest.raises(ValueError, match="one name per run"):
        build_agreement_heatmap([np.ones((2, 2), dtype=bool)] * 3, ["a", "b"])


def test_mask_overlap_on_a_hand_made_example() -> None:
    a = np.array([[True, False, False], [True, True, False]])  # removes (0,1) (0,2) (1,2)
    b = np.array([[False, False, True], [True, True, True]])  # removes (0,0) (0,1)
    overlap = mask_overlap(a, b)
    assert overlap == {
        "removed_both": 1,
        "removed_only_a": 2,
        "removed_only_b": 1,
        "kept_both": 2,
        "removed_union": 4,
        "jaccard": 0.25,
        "same_status": pytest.approx(3 / 6),
    }


def test_mask_overlap_edge_cases() -> None:
    keep_all = np.ones((2, 3), dtype=bool)
    assert mask_overlap(keep_all, keep_all)["jaccard"] == 1.0
    assert mask_overlap(~keep_all, ~keep_all)["jaccard"] == 1.0
    assert mask_overlap(keep_all, ~keep_all)["jaccard"] == 0.0
    with pytest.raises(ValueError, match="same"):
        mask_overlap(keep_all, np.ones((3, 2), dtype=bool))
    with pytest.raises(ValueError, match="^b must be boolean"):
        mask_overlap(keep_all, np.ones((2, 3)))


def _rows() -> list[dict[str, float]]:
    return [
        {"accuracy": 0.90, "mcc": 0.80, "macro_f1": 0.88, "loss": 0.30, "n_examples": 100},
        {"accuracy": 0.88, "mcc": 0.80, "macro_f1": 0.89, "loss": 0.35, "n_examples": 100},
        {"accuracy": 0.91, "mcc": 0.75, "macro_f1": math.nan, "loss": 0.25, "n_examples": 100},
    ]


def test_metric_deltas_values_and_colours() -> None:
    fig = build_metric_deltas(_rows(), ["dense", "astar", "gates"])
    by_metric = {t.name: t for t in fig.data}
    assert list(by_metric) == ["accuracy", "mcc", "macro_f1", "loss"]
    for trace in fig.data:
        assert list(trace.x) == ["astar", "gates"]

    np.testing.assert_allclose(by_metric["accuracy"].y, [-0.02, 0.01])
    assert list(by_metric["accuracy"].marker.color) == [WORSE_COLOUR, BETTER_COLOUR]
    assert list(by_metric["mcc"].marker.color) == [NEUTRAL_COLOUR, WORSE_COLOUR]
    # Loss: lower is better, so a rise is bad and a fall is good.
    np.testing.assert_allclose(by_metric["loss"].y, [0.05, -0.05])
    assert list(by_metric["loss"].marker.color) == [WORSE_COLOUR, BETTER_COLOUR]
    assert list(by_metric["loss"].text) == ["+0.05", "-0.05"]
    # A NaN metric draws no bar and says n/a.
    assert math.isnan(by_metric["macro_f1"].y[1])
    assert by_metric["macro_f1"].text[1] == "n/a"
    assert any(a.text == "n/a" for a in fig.layout.annotations)
    assert "baseline dense: 0.3" in by_metric["loss"].hovertext[0]
    assert "'dense'" in fig.layout.title.text


def test_metric_deltas_against_another_baseline() -> None:
    fig = build_metric_deltas(_rows(), ["dense", "astar", "gates"], baseline=1, metrics=["loss"])
    (trace,) = fig.data
    assert list(trace.x) == ["dense", "gates"]
    np.testing.assert_allclose(trace.y, [-0.05, -0.10])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"names": ["a", "b"]}, "one name per run"),
        ({"baseline": 3}, "not a run index"),
        ({"baseline": -1}, "not a run index"),
        ({"metrics": ["accuracy", "latency_ms"]}, "latency_ms"),
        ({"metrics": []}, "at least one metric"),
    ],
)
def test_metric_deltas_reject_bad_input(kwargs: dict, message: str) -> None:
    arguments = {"rows": _rows(), "names": ["dense", "astar", "gates"], **kwargs}
    with pytest.raises(ValueError, match=message):
        build_metric_deltas(**arguments)


def test_metric_deltas_need_two_runs_and_numbers() -> None:
    with pytest.raises(ValueError, match="at least 2 runs"):
        build_metric_deltas(_rows()[:1], ["dense"])
    rows = [{"accuracy": 0.9}, {"accuracy": "high"}]
    with pytest.raises(ValueError, match="not a number"):
        build_metric_deltas(rows, ["a", "b"], metrics=["accuracy"])


def _all_figures() -> list[go.Figure]:
    mask, scores = _random_run((6, 12))
    other, other_scores = _random_run((6, 12), seed=1)
    return [
        build_mask_heatmap(mask, scores, title="t"),
        build_mask_heatmap(mask),
        build_layer_counts(mask),
        build_mask_comparison([mask, other], ["a", "b"], [scores, other_scores]),
        build_agreement_heatmap([mask, other], ["a", "b"]),
        build_metric_deltas(_rows(), ["dense", "astar", "gates"]),
    ]


def test_figures_reference_no_external_urls() -> None:
    for fig in _all_figures():
        found = re.findall(r"(?:https?:)?//[\w.-]+\.\w+", fig.to_json())
        assert found == [], found


def test_figures_serialise_to_standalone_html(tmp_path) -> None:
    fig = build_mask_heatmap(*_random_run((12, 12)), title="Serialise me")
    path = tmp_path / "heatmap.html"
    path.write_text(fig.to_html(include_plotlyjs=True, full_html=True), encoding="utf-8")
    html = path.read_text(encoding="utf-8")
    assert "Serialise me" in html
    assert "Plotly.newPlot" in html
    # plotly.js is inlined (megabytes), not loaded from a CDN.
    assert path.stat().st_size > 1_000_000
    assert not re.search(r"<script[^>]+src=", html)
