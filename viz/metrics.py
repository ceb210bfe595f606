"""Metric changes between pruning runs: one small bar chart per metric against a baseline run."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.grid import GRID_BG, check_names, format_score

__all__ = ["LOWER_IS_BETTER", "build_metric_deltas"]

LOWER_IS_BETTER = frozenset({"loss", "latency_ms", "median_ms", "mean_ms", "flops", "params"})
BETTER_COLOUR = "#2166ac"
WORSE_COLOUR = "#b2182b"
NEUTRAL_COLOUR = "#9e9e9e"
_METRIC_TITLES = {"accuracy": "Accuracy", "mcc": "MCC", "macro_f1": "Macro-F1", "loss": "Loss"}


def _metric_value(row: Mapping[str, float], metric: str, name: str) -> float:
    try:
        return float(row[metric])
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Run {name!r} has {metric}={row[metric]!r}, which is not a number; pass floats "
            "(NaN where a metric is unknown)."
        ) from error


def build_metric_deltas(
    rows: Sequence[Mapping[str, float]],
    names: Sequence[str],
    baseline: int = 0,
    metrics: Sequence[str] = ("accuracy", "mcc", "macro_f1", "loss"),
    *,
    lower_is_better: Collection[str] = LOWER_IS_BETTER,
) -> go.Figure:
    """Change of each metric against a baseline run: one small bar chart per metric.

    Bars are blue where a run is better than the baseline and red where it is worse: higher is
    better for every metric except those in ``lower_is_better`` (loss, latency, FLOPs, params).
    Each bar is labelled with its signed delta; the hover shows both values.

    Args:
        rows: one mapping of metric name to value per run (e.g. ``Metrics.to_dict()``).
        names: one unique name per run.
        baseline: index of the run the others are compared with.
        metrics: the metric names to draw, one subplot each; every row must have them.
        lower_is_better: metric names for which a decrease is an improvement.

    Returns:
        A figure with one bar trace per metric; trace ``i``'s ``x`` are the non-baseline run
        names and ``y`` their deltas ``value - baseline value`` (a NaN delta draws no bar and an
        "n/a" annotation).

    Raises:
        ValueError: for fewer than 2 runs, a names count that differs, a baseline index out of
            range, no metrics, or a row without one of the metrics.
    """
    items = list(rows)
    labels = check_names(names, len(items), "metric rows")
    if len(items) < 2:
        raise ValueError(f"Pass at least 2 runs (a baseline and one to compare); got {len(items)}.")
    if not 0 <= baseline < len(items):
        raise ValueError(
            f"baseline={baseline} is not a run index; use 0..{len(items) - 1} (the position of "
            "the baseline run in rows)."
        )
    metric_names = list(metrics)
    if not metric_names:
        raise ValueError("Pass at least one metric name, e.g. metrics=('accuracy',).")
    for index, row in enumerate(items):
        missing = [m for m in metric_names if m not in row]
        if missing:
            raise ValueError(
                f"rows[{index}] ({labels[index]!r}) has no {', '.join(map(repr, missing))}; it "
                f"has {', '.join(map(repr, row))}. Pass metrics= with names every run has."
            )

    others = [i for i in range(len(items)) if i != baseline]
    base_name = labels[baseline]
    subplot_titles = [
        f"{_METRIC_TITLES.get(m, m)}<br><sup>{'lower' if m in lower_is_better else 'higher'} "
        "is better</sup>"
        for m in metric_names
    ]
    fig = make_subplots(
        rows=1, cols=len(metric_names), subplot_titles=subplot_titles, horizontal_spacing=0.07
    )
    for col, metric in enumerate(metric_names, start=1):
        base = _metric_value(items[baseline], metric, labels[baseline])
        sign = -1.0 if metric in lower_is_better else 1.0
        deltas, colours, texts, hovers = [], [], [], []
        for i in others:
            value = _metric_value(items[i], metric, labels[i])
            delta = value - base
            deltas.append(delta)
            texts.append("n/a" if math.isnan(delta) else f"{delta:+.4g}")
            good = 0.0 if math.isnan(delta) else sign * delta
            colours.append(
                BETTER_COLOUR if good > 0 else WORSE_COLOUR if good < 0 else NEUTRAL_COLOUR
            )
            hovers.append(
                f"{labels[i]}<br>{metric}: {format_score(value)} "
                f"(baseline {base_name}: {format_score(base)})<br>change: {texts[-1]}"
            )
            if math.isnan(delta):
                fig.add_annotation(
                    x=labels[i], y=0, text="n/a", showarrow=False, yshift=10, row=1, col=col
                )
        fig.add_trace(
            go.Bar(
                x=[labels[i] for i in others],
                y=deltas,
                marker={"color": colours},
                text=texts,
                textposition="outside",
                cliponaxis=False,
                hovertext=hovers,
                hoverinfo="text",
                name=metric,
                showlegend=False,
            ),
            row=1,
            col=col,
        )
        finite = [d for d in deltas if not math.isnan(d)]
        low, high = min([0.0, *finite]), max([0.0, *finite])
        # Room above and below the bars for their "outside" labels; a flat range still shows 0.
        pad = 0.25 * (high - low) if high > low else 1.0
        fig.update_yaxes(range=[low - pad, high + pad], row=1, col=col)
    fig.update_yaxes(zeroline=True, zerolinecolor="#555555", zerolinewidth=1, gridcolor="#eeeeee")
    fig.update_layout(
        title={"text": f"Change against the baseline {base_name!r}", "x": 0.0},
        height=400,
        width=max(300 * len(metric_names), 460),
        margin={"t": 110, "b": 60, "l": 60, "r": 20},
        plot_bgcolor=GRID_BG,
        bargap=0.35,
    )
    return fig
