"""Small figures of the Paper claims page: one per claim, from the per-seed numbers it judged.

* :func:`build_trials_histogram`: heads removed by each random pruning order under the budget
  (a histogram) with a vertical line at A*'s heads (one per seed that ran);
* :func:`build_paired_seeds`: test accuracy of the paper's method and its baselines, one dot per
  seed, the dots of a seed joined so the pairing the rule judges is visible, and a bar at the mean;
* :func:`build_claim_figure`: the one of these that fits a claim dict (the page's and the HTML
  report's);
* :func:`build_ratio_accuracy`: DeepCuts' test accuracy against the paper's compression ratio per
  strategy, the mean with the seeds' min-max as error bars.

Plain mappings in (as :func:`pruning.claims_live.live_claims` puts them in ``series``), plotly
figures out; missing data gives a figure that says what is missing.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from viz.grid import accuracy_range, legend_below

__all__ = [
    "build_claim_figure",
    "build_paired_seeds",
    "build_ratio_accuracy",
    "build_trials_histogram",
]

HEIGHT = 280
ASTAR_COLOUR = "#d55e00"
TRIALS_COLOUR = "#7f7f7f"
SEED_COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#f0e442")
STRATEGY_COLOURS = {"LayerMagWeight": "#0072b2", "Cam-Cut": "#d55e00", "Smooth-Cut": "#e69f00"}
OTHER_COLOURS = ("#000000", "#009e73", "#cc79a7", "#56b4e9")


def _layout(fig: go.Figure, title: str, **more: object) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.0, "font": {"size": 13}},
        height=HEIGHT,
        margin={"l": 50, "r": 20, "t": 40, "b": 60},
        legend=legend_below(HEIGHT - 100),
        **more,
    )
    return fig


def _missing(title: str, what: str) -> go.Figure:
    """A figure that says what is missing instead of an empty plot."""
    fig = go.Figure()
    fig.add_annotation(
        text=what, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 13}
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title)


def build_trials_histogram(
    astar_heads: Mapping[int, int], random_heads: Sequence[int], *, budget: float | None = None
) -> go.Figure:
    """Heads each random order removed within the budget, and a line at A*'s heads per seed.

    Args:
        astar_heads: heads A* removed, by seed.
        random_heads: heads removed by every random trial (all seeds pooled).
        budget: the accuracy budget in points (for the title).
    """
    title = "Heads removed: A* vs random orders" + (
        f" (budget {budget:g} point{'' if budget == 1 else 's'})" if budget is not None else ""
    )
    if not random_heads and not astar_heads:
        return _missing(title, "not measured yet: run the A* and random rows")
    fig = go.Figure()
    if random_heads:
        fig.add_trace(
            go.Histogram(
                x=[int(h) for h in random_heads],
                name=f"random orders ({len(random_heads)})",
                marker={"color": TRIALS_COLOUR},
                xbins={"size": 1},
                hovertemplate="%{x} heads: %{y} orders<extra></extra>",
            )
        )
    else:
        fig.add_annotation(
            text="random orders not run yet",
            showarrow=False,
            x=0.5,
            y=0.9,
            xref="paper",
            yref="paper",
        )
    for seed, heads in sorted(astar_heads.items()):
        fig.add_vline(
            x=int(heads),
            line={"color": ASTAR_COLOUR, "width": 3},
            annotation={"text": f"A* {int(heads)} (seed {seed})", "font": {"color": ASTAR_COLOUR}},
        )
    if not astar_heads:
        fig.add_annotation(
            text="A* not run yet", showarrow=False, x=0.98, y=0.9, xref="paper", yref="paper"
        )
    fig.update_xaxes(title="heads removed")
    fig.update_yaxes(title="random orders")
    return _layout(fig, title, bargap=0.05)


def build_paired_seeds(
    accuracy: Mapping[str, Mapping[int, float]], *, title: str = "Test accuracy by seed"
) -> go.Figure:
    """The method's and its baselines' test accuracy, a dot per seed, joined within a seed.

    Args:
        accuracy: test accuracy by seed, per series; the first series is the paper's method.
    """
    shown = {name: values for name, values in accuracy.items() if values}
    if not shown:
        return _missing(title, "not measured yet: run the rows below")
    names = list(accuracy)
    seeds = sorted({seed for values in shown.values() for seed in values})
    fig = go.Figure()
    for index, seed in enumerate(seeds):
        xs = [name for name in names if seed in accuracy[name]]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[float(accuracy[name][seed]) for name in xs],
                mode="lines+markers",
                name=f"seed {seed}",
                marker={"size": 9, "color": SEED_COLOURS[index % len(SEED_COLOURS)]},
                line={"width": 1, "color": SEED_COLOURS[index % len(SEED_COLOURS)]},
                hovertemplate="%{x}: %{y:.2%}<extra>seed " + str(seed) + "</extra>",
            )
        )
    means = {name: statistics.fmean(values.values()) for name, values in shown.items()}
    fig.add_trace(
        go.Scatter(
            x=list(means),
            y=list(means.values()),
            mode="markers",
            name="mean",
            marker={"symbol": "line-ew", "size": 28, "line": {"width": 2, "color": "black"}},
            hovertemplate="%{x}: mean %{y:.2%}<extra></extra>",
        )
    )
    values = [float(v) for series in shown.values() for v in series.values()]
    fig.update_xaxes(categoryorder="array", categoryarray=names, range=[-0.5, len(names) - 0.5])
    fig.update_yaxes(title="test accuracy", tickformat=".0%", range=accuracy_range(values))
    return _layout(fig, title)


def build_ratio_accuracy(
    accuracy: Mapping[str, Mapping[float, Mapping[int, float]]],
    *,
    title: str = "DeepCuts: test accuracy by the paper's compression ratio",
) -> go.Figure:
    """Mean test accuracy per strategy and ratio, with the seeds' min-max as error bars.

    Args:
        accuracy: per strategy, per compression ratio, test accuracy by seed.
    """
    if not any(by_seed for ratios in accuracy.values() for by_seed in ratios.values()):
        return _missing(title, "not measured yet: run the DeepCuts rows below")
    fig = go.Figure()
    values: list[float] = []
    others = iter(OTHER_COLOURS * 4)
    for strategy, ratios in accuracy.items():
        points = sorted((float(r), list(v.values())) for r, v in ratios.items() if v)
        if not points:
            continue
        means = [statistics.fmean(v) for _, v in points]
        values += [x for _, v in points for x in v]
        colour = STRATEGY_COLOURS.get(strategy) or next(others)
        fig.add_trace(
            go.Scatter(
                x=[r for r, _ in points],
                y=means,
                mode="lines+markers",
                name=strategy,
                marker={"size": 8, "color": colour},
                line={"color": colour},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [max(v) - m for (_, v), m in zip(points, means, strict=True)],
                    "arrayminus": [m - min(v) for (_, v), m in zip(points, means, strict=True)],
                },
                customdata=[len(v) for _, v in points],
                hovertemplate=f"{strategy} ×%{{x:g}}: mean %{{y:.2%}} over %{{customdata}} "
                "seed(s)<extra></extra>",
            )
        )
    fig.update_xaxes(title="compression ratio (paper's, BERT-base equivalent)")
    fig.update_yaxes(title="test accuracy", tickformat=".0%", range=accuracy_range(values))
    return _layout(fig, title)


def build_claim_figure(claim: Mapping[str, Any]) -> go.Figure:
    """The figure of one claim of :func:`pruning.claims_report.live_claims` (by its ``id``)."""
    series = claim.get("series") or {}
    if claim.get("id") == "astar_vs_random":
        return build_trials_histogram(
            series.get("astar_heads") or {},
            series.get("random_heads") or [],
            budget=series.get("budget"),
        )
    if claim.get("id") == "deepcuts_vs_layer_magnitude":
        return build_ratio_accuracy(series.get("accuracy") or {})
    return build_paired_seeds(
        series.get("accuracy") or {}, title=f"{claim.get('title', 'claim')}: test accuracy by seed"
    )
