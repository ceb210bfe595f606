"""The Paper claims figures: what each draws, and what they say when data is missing."""

from __future__ import annotations

import pytest

from viz.claims import build_paired_seeds, build_ratio_accuracy, build_trials_histogram


def _annotations(fig: object) -> list[str]:
    return [a.text for a in fig.layout.annotations]  # type: ignore[attr-defined]


def test_the_trials_histogram_has_the_random_orders_and_a_line_per_astar_seed() -> None:
    fig = build_trials_histogram({0: 8, 1: 9}, [2, 3, 3, 4, 4, 4], budget=1.0)
    (histogram,) = fig.data
    assert histogram.type == "histogram" and list(histogram.x) == [2, 3, 3, 4, 4, 4]
    assert histogram.name == "random orders (6)"
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert sorted(s.x0 for s in lines) == [8, 9]
    assert "A* 8 (seed 0)" in _annotations(fig) and "A* 9 (seed 1)" in _annotations(fig)
    assert "budget 1 point)" in fig.layout.title.text


def test_the_trials_histogram_says_what_is_missing() -> None:
    empty = build_trials_histogram({}, [])
    assert not empty.data and "not measured yet" in _annotations(empty)[0]
    only_astar = build_trials_histogram({0: 8}, [])
    assert not only_astar.data and "random orders not run yet" in _annotations(only_astar)
    only_random = build_trials_histogram({}, [1, 2])
    assert len(only_random.data) == 1 and "A* not run yet" in _annotations(only_random)
    assert not only_random.layout.shapes


def test_paired_seeds_join_each_seeds_dots_and_mark_the_means() -> None:
    accuracy = {"MCAP": {0: 0.8, 1: 0.82, 2: 0.81}, "Random heads": {0: 0.7, 1: 0.72, 2: 0.74}}
    fig = build_paired_seeds(accuracy, title="MCAP")
    seeds = [t for t in fig.data if t.name.startswith("seed")]
    assert [t.name for t in seeds] == ["seed 0", "seed 1", "seed 2"]
    assert list(seeds[1].x) == ["MCAP", "Random heads"] and list(seeds[1].y) == [0.82, 0.72]
    mean = next(t for t in fig.data if t.name == "mean")
    assert list(mean.y) == pytest.approx([0.81, 0.72])
    assert list(fig.layout.xaxis.categoryarray) == ["MCAP", "Random heads"]
    low, high = fig.layout.yaxis.range
    assert low < 0.7 and high > 0.82


def test_paired_seeds_with_a_missing_series_or_seed() -> None:
    fig = build_paired_seeds({"HISP": {0: 0.8, 1: 0.81}, "Random heads": {0: 0.7}})
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["seed 1"].x) == ["HISP"]  # random heads did not run at seed 1
    assert list(by_name["mean"].x) == ["HISP", "Random heads"]
    empty = build_paired_seeds({"HISP": {}, "Random heads": {}}, title="HISP")
    assert not empty.data and "not measured yet" in _annotations(empty)[0]


def test_ratio_accuracy_has_a_line_per_strategy_with_seed_min_max_bars() -> None:
    accuracy = {
        "LayerMagWeight": {2.0: {0: 0.8, 1: 0.84, 2: 0.82}, 3.0: {0: 0.7, 1: 0.7, 2: 0.7}},
        "Cam-Cut": {3.0: {0: 0.75, 1: 0.77}},
        "Smooth-Cut": {},
    }
    fig = build_ratio_accuracy(accuracy)
    assert [t.name for t in fig.data] == ["LayerMagWeight", "Cam-Cut"]
    layer = fig.data[0]
    assert list(layer.x) == [2.0, 3.0] and list(layer.y) == pytest.approx([0.82, 0.7])
    assert list(layer.error_y.array) == pytest.approx([0.02, 0.0])
    assert list(layer.error_y.arrayminus) == pytest.approx([0.02, 0.0])
    assert list(fig.data[1].customdata) == [2]
    empty = build_ratio_accuracy({"Cam-Cut": {}})
    assert not empty.data and "not measured yet" in _annotations(empty)[0]
