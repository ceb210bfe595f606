"""viz.pareto: the front on hand-made points, figure traces and axes, escaping, bench rows."""

from __future__ import annotations

import math

import pytest

from viz.pareto import ParetoPoint, build_pareto_figure, pareto_front, points_from_rows


def test_front_maximising_x_keeps_the_non_dominated_points_ordered_by_x() -> None:
    xs = [0.1, 0.2, 0.3, 0.3, 0.5, 0.6, 0.4]
    ys = [0.90, 0.85, 0.88, 0.80, 0.70, 0.60, 0.70]
    # (0.2, .85) is beaten by (0.3, .88); (0.3, .80) by (0.3, .88); (0.4, .70) by (0.5, .70).
    assert pareto_front(xs, ys, maximize_x=True) == [0, 2, 4, 5]


def test_front_minimising_x_is_the_fast_and_accurate_staircase() -> None:
    latency = [100.0, 80.0, 60.0, 90.0, 60.0]
    accuracy = [0.90, 0.85, 0.70, 0.80, 0.75]
    # (90, .80) is beaten by (80, .85); (60, .70) by (60, .75).
    assert pareto_front(latency, accuracy, maximize_x=False) == [4, 1, 0]


def test_front_keeps_ties_drops_non_finite_points_and_checks_lengths() -> None:
    assert pareto_front([0.5, 0.5, 0.2], [0.8, 0.8, 0.9], maximize_x=True) == [2, 0, 1]
    assert pareto_front([0.1, math.nan, 0.3], [0.5, 0.99, math.inf], maximize_x=True) == [0]
    assert pareto_front([], [], maximize_x=True) == []
    with pytest.raises(ValueError, match="same length"):
        pareto_front([0.1], [0.5, 0.6], maximize_x=True)


def test_front_matches_a_brute_force_oracle_on_random_points() -> None:
    import random

    generator = random.Random(0)
    for maximize in (True, False):
        for _ in range(50):
            xs = [generator.choice([0.1, 0.2, 0.3, 0.4]) for _ in range(12)]
            ys = [generator.choice([0.5, 0.6, 0.7]) for _ in range(12)]

            def better(
                a: int, b: int, xs: list[float] = xs, ys: list[float] = ys, up: bool = maximize
            ) -> bool:
                bx = xs[a] >= xs[b] if up else xs[a] <= xs[b]
                strict = xs[a] != xs[b] or ys[a] != ys[b]
                return bx and ys[a] >= ys[b] and strict

            expected = {i for i in range(12) if not any(better(j, i) for j in range(12))}
            front = pareto_front(xs, ys, maximize_x=maximize)
            assert set(front) == expected
            assert [xs[i] for i in front] == sorted(xs[i] for i in front)


def _points() -> list[ParetoPoint]:
    return [
        ParetoPoint("HISP 30%", "hisp", "k1", 0.3, 0.82, mcc=0.64, latency_ms=50.0, speedup=1.2),
        ParetoPoint("HISP 50%", "hisp", "k2", 0.5, 0.78, mcc=0.56, latency_ms=40.0, speedup=1.5),
        ParetoPoint("HISP 50% + rec", "hisp", "k3", 0.5, 0.81, recovered=True, latency_ms=40.0),
        ParetoPoint("Random 50%", "random", None, 0.5, 0.70, latency_ms=41.0, speedup=1.45),
        ParetoPoint("no accuracy", "random", "k5", 0.3, None),
    ]


def test_figure_has_a_trace_per_method_and_recovery_a_front_and_the_dense_line() -> None:
    fig = build_pareto_figure(_points(), title="Accuracy vs sparsity", dense=0.84)
    names = [trace.name for trace in fig.data]
    assert names == ["hisp", "hisp · recovered", "random", "Pareto front", "dense (84.0%)"]
    hisp, recovered, random, front, dense = fig.data
    assert list(hisp.x) == [0.3, 0.5] and list(hisp.y) == [0.82, 0.78]
    assert hisp.marker.symbol == "circle" and recovered.marker.symbol == "diamond"
    assert hisp.marker.color == recovered.marker.color != random.marker.color
    assert list(front.x) == [0.3, 0.5] and list(front.y) == [0.82, 0.81]
    assert front.line.shape == "vh"
    assert dense.line.dash == "dash" and set(dense.y) == {0.84}
    assert fig.layout.xaxis.title.text == "heads removed (%)"
    assert fig.layout.xaxis.tickformat == ".0%" and fig.layout.yaxis.tickformat == ".0%"
    assert fig.layout.yaxis.title.text == "test accuracy (%)"
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0
    [note] = fig.layout.annotations
    assert note.text == "1 run without heads removed or accuracy left out."
    hover = hisp.hovertext[0]
    for part in ("HISP 30%", "method: hisp", "heads removed: 30.0%", "accuracy: 82.0%", "key: k1"):
        assert part in hover
    assert "key: –" in random.hovertext[0]


def test_latency_axis_minimises_x_and_mcc_axis_formats_plain_numbers() -> None:
    fig = build_pareto_figure(_points(), x="latency_ms", y="mcc")
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert list(front.x) == [40.0, 50.0] and list(front.y) == [0.56, 0.64]
    assert front.line.shape == "hv"
    assert fig.layout.xaxis.title.text == "latency (ms per batch)"
    assert fig.layout.yaxis.tickformat is None
    # Only two points carry an MCC: the other three are counted as left out.
    assert "3 runs without latency or mcc left out." in fig.layout.annotations[0].text
    speed = build_pareto_figure(_points(), x="speedup")
    assert speed.layout.xaxis.ticksuffix == "×"
    assert next(t for t in speed.data if t.name == "Pareto front").line.shape == "vh"


def test_unknown_axes_are_refused_and_empty_input_says_so() -> None:
    with pytest.raises(ValueError, match="x must be one of head_sparsity"):
        build_pareto_figure(_points(), x="flops")
    with pytest.raises(ValueError, match="y must be one of accuracy, mcc"):
        build_pareto_figure(_points(), y="f1")
    empty = build_pareto_figure([], title="Nothing")
    assert len(empty.data) == 0
    assert empty.layout.annotations[0].text.startswith("No runs to plot")
    unplottable = build_pareto_figure([ParetoPoint("a", "hisp", "k", 0.2, None)], dense=0.8)
    assert [t.name for t in unplottable.data] == ["dense (80.0%)"]
    assert "none of the 1 runs" in unplottable.layout.annotations[0].text


def test_labels_methods_keys_and_title_are_escaped() -> None:
    evil = "<img src=x onerror=alert(1)>"
    point = ParetoPoint(evil, f"m{evil}", f"k{evil}", 0.5, 0.8)
    fig = build_pareto_figure([point], title=f"t {evil}")
    html_text = fig.to_html(include_plotlyjs=False)
    assert "<img" not in html_text
    trace = fig.data[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in trace.hovertext[0]
    assert trace.name == "m&lt;img src=x onerror=alert(1)&gt;"
    assert fig.layout.title.text == "t &lt;img src=x onerror=alert(1)&gt;"


def test_points_from_bench_rows_fill_what_the_rows_carry() -> None:
    rows = [
        {"label": "HISP 50% + 200 recovery steps", "method": "hisp", "key": "abc",
         "head_sparsity": 0.5, "accuracy": 0.81, "mcc": 0.62, "recovered": True,
         "latency_ms": 40.0, "speedup": 1.5},
        {"label": "gates", "method": "autoattention", "key": "def", "heads_removed": 18,
         "heads": 72, "accuracy": 0.8, "recovered_accuracy": 0.8},
        {"key": "ghi", "method": "deepcuts", "head_sparsity": 0.0, "accuracy": float("nan"),
         "weight_sparsity": 0.667},
    ]  # fmt: skip
    first, second, third = points_from_rows(rows)
    assert first == ParetoPoint(
        "HISP 50% + 200 recovery steps", "hisp", "abc", 0.5, 0.81, 0.62, True, 40.0, 1.5, None
    )
    assert second.head_sparsity == 0.25 and second.recovered and second.latency_ms is None
    assert third.label == "ghi" and third.accuracy is None and third.weight_sparsity == 0.667
    assert points_from_rows([]) == []
