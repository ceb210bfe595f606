"""Pareto figures: accuracy (or MCC) against head sparsity, speed-up, latency or weight sparsity.

Every point is one pruning run (:class:`ParetoPoint`): a colour per method, a diamond for runs
that were fine-tuned after pruning, a circle for the others. The front over all the plotted points
(no other point is at least as good on both axes and better on one) is drawn as a step line, and
the unpruned model's value as a dashed horizontal line. Points that lack the chosen x or y value
are left out and counted in a note under the plot, so a figure never hides runs silently.

Used by ``headscope bench quality`` (``quality_sparsity.html``, ``quality_latency.html``) and by
the Compare page. Labels and method names are user text: they are HTML-escaped before they reach
hover text, legend or title.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from viz.grid import GRID_BG, MARK_COLOUR, legend_below

__all__ = [
    "X_AXES",
    "Y_AXES",
    "ParetoPoint",
    "build_pareto_figure",
    "pareto_front",
    "points_from_rows",
]

# x axis -> (title with its unit, larger is better, tick format or None, tick suffix)
X_AXES: dict[str, tuple[str, bool, str | None, str]] = {
    "head_sparsity": ("heads removed (%)", True, ".0%", ""),
    "speedup": ("speed-up (×, dense latency / pruned latency)", True, None, "×"),
    "latency_ms": ("latency (ms per batch)", False, None, ""),
    "weight_sparsity": ("prunable weights removed (%)", True, ".0%", ""),
}
# y axis -> (title, tick format)
Y_AXES: dict[str, tuple[str, str | None]] = {
    "accuracy": ("test accuracy (%)", ".0%"),
    "mcc": ("test MCC (-1 to 1)", None),
}

# Okabe-Ito first, then further distinct colours; one fixed colour per known method so a method
# looks the same in every figure.
METHOD_COLOURS = {
    "random": "#7f7f7f",
    "hisp": "#0072b2",
    "entropy": "#009e73",
    "sep": "#56b4e9",
    "magnitude": "#e69f00",
    "astar": "#d55e00",
    "random_budget": "#bbbbbb",
    "local_greedy": "#8c564b",
    "global_heads": "#bcbd22",
    "autoattention": "#cc79a7",
    "l0_gates": "#9467bd",
    "mcap": "#000000",
    "deepcuts": "#17becf",
    "unstructured": "#f0e442",
}
OTHER_COLOURS = ("#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#e377c2", "#393b79")
FRONT_COLOUR = "#333333"
PLOT_PX = 420


@dataclass(frozen=True)
class ParetoPoint:
    """One run on a Pareto figure.

    Attributes:
        label: shown in hover and notes (user text: escaped before display).
        method: registry name; one colour per method.
        key: the run's key, or None (e.g. a bench row that is not stored).
        head_sparsity: share of heads removed, 0..1.
        accuracy: test accuracy, 0..1, or None.
        mcc: Matthews correlation, -1..1, or None.
        recovered: fine-tuned after pruning (drawn with a different marker symbol).
        latency_ms: median forward latency of the pruned model, or None.
        speedup: dense median latency / pruned median latency, or None.
        weight_sparsity: share of prunable weights removed (weight-level runs), or None.
    """

    label: str
    method: str
    key: str | None
    head_sparsity: float
    accuracy: float | None
    mcc: float | None = None
    recovered: bool = False
    latency_ms: float | None = None
    speedup: float | None = None
    weight_sparsity: float | None = None


def _finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not a number, NaN or infinite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def pareto_front(xs: Sequence[float], ys: Sequence[float], *, maximize_x: bool) -> list[int]:
    """Indices of the non-dominated points, ordered by x (ascending); y is always maximised.

    A point is dominated when another one is at least as good on both axes and strictly better on
    one (better x: larger when ``maximize_x``, smaller otherwise). Identical points are all on the
    front. Points with a NaN or infinite coordinate are never on it.

    Raises:
        ValueError: when ``xs`` and ``ys`` differ in length.
    """
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys must have the same length; got {len(xs)} and {len(ys)}.")
    valid = [
        (i, float(x), float(y))
        for i, (x, y) in enumerate(zip(xs, ys, strict=True))
        if math.isfinite(float(x)) and math.isfinite(float(y))
    ]
    # Best x first; among equal x, best y first. A point is on the front when its y beats every
    # point seen before it (those have a better or equal x), or when it repeats the last one.
    sign = -1.0 if maximize_x else 1.0
    valid.sort(key=lambda item: (sign * item[1], -item[2], item[0]))
    front: list[tuple[int, float, float]] = []
    best_y = -math.inf
    for index, x, y in valid:
        if y > best_y or (front and (x, y) == front[-1][1:]):
            front.append((index, x, y))
            best_y = max(best_y, y)
    return [index for index, _, _ in sorted(front, key=lambda item: (item[1], item[0]))]


def _check_axes(x: str, y: str) -> None:
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}; got {x!r}.")
    if y not in Y_AXES:
        raise ValueError(f"y must be one of {', '.join(Y_AXES)}; got {y!r}.")


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _hover(point: ParetoPoint) -> str:
    lines = [
        f"<b>{html.escape(str(point.label))}</b>",
        f"method: {html.escape(str(point.method))}" + (" · recovered" if point.recovered else ""),
        f"heads removed: {_percent(_finite(point.head_sparsity))}",
        f"accuracy: {_percent(_finite(point.accuracy))}",
    ]
    mcc = _finite(point.mcc)
    if mcc is not None:
        lines.append(f"MCC: {mcc:.3f}")
    weight = _finite(point.weight_sparsity)
    if weight is not None:
        lines.append(f"weights removed: {_percent(weight)}")
    latency, speedup = _finite(point.latency_ms), _finite(point.speedup)
    if latency is not None:
        lines.append(f"latency: {latency:.1f} ms")
    if speedup is not None:
        lines.append(f"speed-up: {speedup:.2f}×")
    lines.append(f"key: {html.escape(point.key) if point.key else '–'}")
    return "<br>".join(lines)


def _method_colour(method: str, order: list[str]) -> str:
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    unknown = [m for m in order if m not in METHOD_COLOURS]
    return OTHER_COLOURS[unknown.index(method) % len(OTHER_COLOURS)]


def _y_text(value: float, y: str) -> str:
    return f"{100 * value:.1f}%" if y == "accuracy" else f"{value:.3f}"


def build_pareto_figure(
    points: Sequence[ParetoPoint],
    *,
    x: str = "head_sparsity",
    y: str = "accuracy",
    title: str = "",
    dense: float | None = None,
) -> go.Figure:
    """Scatter of runs with their Pareto front (a step line) and the dense value (dashed).

    Args:
        points: the runs.
        x: ``"head_sparsity"``, ``"speedup"`` or ``"weight_sparsity"`` (larger is better) or
            ``"latency_ms"`` (smaller is better).
        y: ``"accuracy"`` or ``"mcc"`` (larger is better).
        title: figure title (escaped).
        dense: the unpruned model's y value, drawn as a dashed horizontal line, or None.

    Returns:
        One marker trace per (method, recovered) pair, named ``method`` or
        ``"method · recovered"``; a ``"Pareto front"`` line trace; a ``"dense (...)"`` trace when
        ``dense`` is given. Points missing x or y are left out and counted in an annotation; with
        no plottable point the figure carries a "No runs to plot" annotation instead.

    Raises:
        ValueError: for an unknown ``x`` or ``y``.
    """
    _check_axes(x, y)
    x_title, maximize_x, x_format, x_suffix = X_AXES[x]
    y_title, y_format = Y_AXES[y]
    usable: list[tuple[ParetoPoint, float, float]] = []
    for point in points:
        xv, yv = _finite(getattr(point, x)), _finite(getattr(point, y))
        if xv is not None and yv is not None:
            usable.append((point, xv, yv))
    left_out = len(points) - len(usable)
    fig = go.Figure()
    methods = list(dict.fromkeys(str(p.method) for p, _, _ in usable))
    for method in methods:
        for recovered in (False, True):
            mine = [
                (p, xv, yv)
                for p, xv, yv in usable
                if p.method == method and p.recovered is recovered
            ]
            if not mine:
                continue
            name = html.escape(method) + (" · recovered" if recovered else "")
            fig.add_trace(
                go.Scatter(
                    x=[xv for _, xv, _ in mine],
                    y=[yv for _, _, yv in mine],
                    mode="markers",
                    name=name,
                    legendgroup=html.escape(method),
                    marker={
                        "size": 10 if recovered else 9,
                        "symbol": "diamond" if recovered else "circle",
                        "color": _method_colour(method, methods),
                        "line": {"width": 1, "color": "#ffffff"},
                    },
                    hovertext=[_hover(p) for p, _, _ in mine],
                    hoverinfo="text",
                )
            )
    if usable:
        front = pareto_front(
            [xv for _, xv, _ in usable], [yv for _, _, yv in usable], maximize_x=maximize_x
        )
        fig.add_trace(
            go.Scatter(
                x=[usable[i][1] for i in front],
                y=[usable[i][2] for i in front],
                mode="lines",
                name="Pareto front",
                # The region a front point dominates lies below it and toward worse x, so the
                # staircase drops at a point when x is maximised and rises after it otherwise.
                line={"color": FRONT_COLOUR, "width": 1.5, "shape": "vh" if maximize_x else "hv"},
                hoverinfo="skip",
            )
        )
    xs = [xv for _, xv, _ in usable]
    dense_value = _finite(dense)
    if dense_value is not None:
        low, high = (min(xs), max(xs)) if xs else (0.0, 1.0)
        pad = 0.05 * (high - low) if high > low else max(0.02, 0.05 * abs(high))
        fig.add_trace(
            go.Scatter(
                x=[low - pad, high + pad],
                y=[dense_value, dense_value],
                mode="lines",
                name=f"dense ({_y_text(dense_value, y)})",
                line={"color": MARK_COLOUR, "width": 1.5, "dash": "dash"},
                hovertext=f"unpruned model<br>{y}: {_y_text(dense_value, y)}",
                hoverinfo="text",
            )
        )
    notes = []
    if not usable:
        notes.append(
            "No runs to plot: "
            + (
                f"none of the {len(points)} runs has both {x_title} and {y_title}."
                if points
                else "select or run some pruning runs first."
            )
        )
    elif left_out:
        plural = "run" if left_out == 1 else "runs"
        notes.append(f"{left_out} {plural} without {x_title.split(' (')[0]} or {y} left out.")
    for note in notes:
        fig.add_annotation(
            text=html.escape(note),
            xref="paper",
            yref="paper",
            x=0.5 if not usable else 0.0,
            y=0.5 if not usable else 1.0,
            xanchor="center" if not usable else "left",
            yanchor="middle" if not usable else "bottom",
            showarrow=False,
            font={"size": 14 if not usable else 11, "color": MARK_COLOUR},
        )
    fig.update_layout(
        title={"text": html.escape(title), "x": 0.0},
        height=PLOT_PX + 160,
        margin={"t": 70, "b": 150, "l": 70, "r": 20},
        plot_bgcolor=GRID_BG,
        legend=legend_below(PLOT_PX, 60),
        hovermode="closest",
    )
    fig.update_xaxes(
        title=x_title,
        tickformat=x_format,
        ticksuffix=x_suffix,
        gridcolor="#eeeeee",
        zeroline=False,
    )
    fig.update_yaxes(title=y_title, tickformat=y_format, gridcolor="#eeeeee", zeroline=False)
    return fig


def points_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[ParetoPoint]:
    """Pareto points from bench rows (``headscope bench quality`` and the other run benches).

    Reads ``label``, ``method``, ``key``, ``head_sparsity`` (else ``heads_removed / heads``),
    ``accuracy``, ``mcc``, ``recovered`` (else: a ``recovered_accuracy`` is present),
    ``latency_ms``, ``speedup`` and ``weight_sparsity``; missing values become None (the figure
    counts such points as left out), a missing label becomes the key.
    """
    points = []
    for row in rows:
        sparsity = _finite(row.get("head_sparsity"))
        if sparsity is None:
            removed, total = _finite(row.get("heads_removed")), _finite(row.get("heads"))
            sparsity = removed / total if removed is not None and total else math.nan
        recovered = row.get("recovered")
        if recovered is None:
            recovered = row.get("recovered_accuracy") is not None
        key = row.get("key")
        points.append(
            ParetoPoint(
                label=str(row.get("label") or key or "run"),
                method=str(row.get("method") or "unknown"),
                key=None if key is None else str(key),
                head_sparsity=sparsity,
                accuracy=_finite(row.get("accuracy")),
                mcc=_finite(row.get("mcc")),
                recovered=bool(recovered),
                latency_ms=_finite(row.get("latency_ms")),
                speedup=_finite(row.get("speedup")),
                weight_sparsity=_finite(row.get("weight_sparsity")),
            )
        )
    return points
