"""Figures of weight-level (unstructured) pruning runs such as DeepCuts.

An unstructured mask keeps single weights inside the heads, so these figures show shares: each
head's density (share of its q/k/v/o weights kept), the IoU of two weight masks per head, per
layer and over all heads (the DeepCuts paper's IoU figures), accuracy against compression ratio
and the honest size of a sparse model. Head grids share :mod:`viz.grid`'s layout ("L0" at the top).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.grid import (
    COLOURBAR_PX,
    GRID_BG,
    MARGIN_LEFT,
    MARK_COLOUR,
    SCORE_COLOURSCALE,
    accuracy_range,
    check_names,
    grid_cell_px,
    head_labels,
    layer_labels,
    legend_below,
    style_grid_axes,
)

__all__ = [
    "CostRow",
    "IouMatrices",
    "RatioPoint",
    "build_cost_table",
    "build_density_heatmap",
    "build_head_iou_heatmap",
    "build_iou_matrices",
    "build_iou_matrix",
    "build_layer_iou_chart",
    "build_ratio_curves",
]

# Okabe-Ito, one fixed colour per DeepCuts strategy so a strategy looks the same in every figure.
STRATEGY_COLOURS = {
    "layer_mag_weight": "#0072b2",
    "global_mag_weight": "#56b4e9",
    "layer_mag_grad": "#009e73",
    "cam_cut": "#d55e00",
    "smooth_cut": "#e69f00",
    "smooth_cam": "#cc79a7",
}
OTHER_COLOURS = ("#000000", "#7f7f7f", "#8c564b", "#bcbd22", "#17becf", "#9467bd")
IOU_COLOURSCALE = "Blues"
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class RatioPoint:
    """One run on the accuracy-vs-compression chart (``recovered_accuracy`` after fine-tuning)."""

    strategy: str
    ratio: float
    accuracy: float
    recovered_accuracy: float | None = None


@dataclass(frozen=True)
class IouMatrices:
    """Mean and minimum IoU between strategies at one compression ratio (one row of Figure 9).

    ``mean`` and ``minimum``: float ``(S, S)`` in [0, 1], one row per name; ``chance``: the IoU
    two random masks of the same density would have (drawn as a reference in the titles), or None.
    """

    ratio: float
    names: tuple[str, ...]
    mean: np.ndarray
    minimum: np.ndarray
    chance: float | None = None


@dataclass(frozen=True)
class CostRow:
    """Honest size and speed of one weight-pruned model (bytes as fp32; milliseconds or None)."""

    name: str
    params_nonzero: int
    dense_bytes: int
    sparse_bytes: int
    params_total: int | None = None
    dense_ms: float | None = None
    masked_ms: float | None = None


def _unit_values(values: Any, what: str, ndim: int) -> np.ndarray:
    """``values`` as float64 with ``ndim`` dimensions and entries in [0, 1] (NaN allowed)."""
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":  # bool masks, strings, objects and complex numbers
        raise ValueError(
            f"{what} must be real shares in [0, 1]; got dtype {array.dtype}. Pass floats "
            "(e.g. the kept share per head), not masks."
        )
    if array.ndim != ndim or array.size == 0:
        shape = "(n_layers, n_heads)" if ndim == 2 else "(n_layers,)"
        raise ValueError(f"{what} must be a non-empty {shape} array; got shape {array.shape}.")
    result = array.astype(np.float64)
    finite = result[np.isfinite(result)]
    if finite.size and (finite.min() < -_TOLERANCE or finite.max() > 1 + _TOLERANCE):
        raise ValueError(
            f"{what} must lie in [0, 1]; got values from {finite.min():.4g} to "
            f"{finite.max():.4g}. Pass shares (0.25 = 25%), not percentages or counts."
        )
    return np.clip(result, 0.0, 1.0)


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"


def _decimal(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _unit_grid(
    values: np.ndarray,
    *,
    title: str,
    summary: str,
    value_label: str,
    colour_title: str,
    colourscale: str,
    tickformat: str,
    cell_text: Callable[[float], str],
    hover_value: Callable[[float], str],
) -> go.Figure:
    """Layer x head heatmap of values in [0, 1] with a fixed 0..1 colour range and cell labels."""
    n_layers, n_heads = values.shape
    cell = grid_cell_px(n_layers, n_heads)
    hover = [
        [
            f"Layer {layer} · Head {head}<br>{value_label}: {hover_value(values[layer, head])}"
            for head in range(n_heads)
        ]
        for layer in range(n_layers)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=values.tolist(),
            x=head_labels(n_heads),
            y=layer_labels(n_layers),
            zmin=0.0,
            zmax=1.0,
            colorscale=colourscale,
            colorbar={"title": {"text": colour_title}, "thickness": 14, "tickformat": tickformat},
            text=[[cell_text(v) for v in row] for row in values],
            texttemplate="%{text}",
            # Labels like "100%" need a smaller font than the grids' one-character marks.
            textfont={"size": int(np.clip(round(cell * 0.3), 7, 12))},
            hovertext=hover,
            hoverinfo="text",
            hoverongaps=False,
            xgap=2,
            ygap=2,
            name=value_label,
        )
    )
    top = 90 if title else 60
    plot_h = max(n_layers * cell, 120)
    fig.update_layout(
        title={"text": f"{title}<br><sup>{summary}</sup>" if title else summary, "x": 0.0},
        height=plot_h + top + 50,
        width=max(MARGIN_LEFT + max(n_heads * cell, 120) + COLOURBAR_PX, 460),
        margin={"t": top, "b": 50, "l": MARGIN_LEFT, "r": 20},
        plot_bgcolor=GRID_BG,
    )
    style_grid_axes(fig, cell_px=cell)
    return fig


def build_density_heatmap(
    density: np.ndarray, *, title: str = "Weight density per head"
) -> go.Figure:
    """Per head, the share of its attention weights (q/k/v rows, output columns) a mask keeps.

    ``density``: float ``(n_layers, n_heads)`` in [0, 1], NaN = "n/a". Returns one heatmap trace
    (``z`` = density, fixed 0..1 Viridis range, percentages in the cells and hovers) under a title
    with the mean density and the number of emptied heads.

    Raises:
        ValueError: for a non-2-D, empty, non-numeric array or values outside [0, 1].
    """
    values = _unit_values(density, "density", 2)
    finite = values[np.isfinite(values)]
    empty = int((finite == 0).sum())
    summary = f"mean {_percent(float(finite.mean())) if finite.size else 'n/a'} of weights kept"
    if empty:
        summary += f" · {empty} head{'s' if empty > 1 else ''} emptied"
    return _unit_grid(
        values,
        title=title,
        summary=summary,
        value_label="weights kept",
        colour_title="kept",
        colourscale=SCORE_COLOURSCALE,
        tickformat=".0%",
        cell_text=lambda v: "n/a" if math.isnan(v) else f"{100 * v:.0f}%",
        hover_value=_percent,
    )


def build_head_iou_heatmap(
    iou: np.ndarray, names: Sequence[str] = ("a", "b"), *, title: str = "", which: str = "kept"
) -> go.Figure:
    """Per head, the IoU of two weight masks: |kept by both| / |kept by either| of its weights.

    ``iou``: float ``(n_layers, n_heads)`` in [0, 1], NaN (neither mask keeps a weight) = "n/a";
    ``names``: the two runs; ``which``: ``"kept"`` or ``"pruned"`` (the IoU of the pruned sets
    instead), named in the hover. Returns one heatmap trace (``z`` = IoU, fixed 0..1 Blues range,
    values in the cells) under a title with the mean and minimum over heads.

    Raises:
        ValueError: for an array that is not 2-D in [0, 1] or not exactly two distinct names.
    """
    first, second = check_names(names, 2, "masks compared")
    values = _unit_values(iou, "iou", 2)
    finite = values[np.isfinite(values)]
    summary = f"{first} vs {second} · " + (
        f"mean {finite.mean():.2f} · min {finite.min():.2f} over heads"
        if finite.size
        else "no head has kept weights in either mask"
    )
    return _unit_grid(
        values,
        title=title or "Weight-mask IoU per head",
        summary=summary,
        value_label=f"IoU of {which} weights, {first} vs {second}",
        colour_title="IoU",
        colourscale=IOU_COLOURSCALE,
        tickformat=".1f",
        cell_text=_decimal,
        hover_value=lambda v: "n/a" if math.isnan(v) else f"{v:.3f}",
    )


def build_layer_iou_chart(
    layer_iou: Mapping[str, np.ndarray],
    *,
    title: str = "Weight-mask IoU per layer",
    which: str = "kept",
) -> go.Figure:
    """IoU of weight masks per layer, one line per pair of strategies (runs): Figures 10-12.

    ``layer_iou``: pair label (e.g. ``"cam_cut vs smooth_cut"``) to a float ``(n_layers,)`` array
    in [0, 1], all of one length; ``which``: ``"kept"`` or ``"pruned"``, the set the IoU was
    taken over (the y axis title). Returns one line-and-marker trace per pair (``x`` = "L0", ...,
    ``y`` = IoU) on a 0..1 axis.

    Raises:
        ValueError: for no pairs, arrays that are not 1-D in [0, 1] or of different lengths.
    """
    if not layer_iou:
        raise ValueError("Pass at least one pair of masks: layer_iou is empty.")
    arrays = {str(k): _unit_values(v, f"layer_iou[{k!r}]", 1) for k, v in layer_iou.items()}
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) > 1:
        listed = ", ".join(f"{k!r}: {len(a)}" for k, a in arrays.items())
        raise ValueError(
            f"Every pair needs one IoU per layer of the same model; got lengths {listed}."
        )
    labels = layer_labels(lengths.pop())
    fig = go.Figure()
    for pair, values in arrays.items():
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=values.tolist(),
                mode="lines+markers",
                name=pair,
                hovertemplate=f"{pair}<br>%{{x}}: IoU %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        title={"text": title, "x": 0.0},
        height=380,
        margin={"t": 60, "b": 90, "l": 60, "r": 20},
        plot_bgcolor=GRID_BG,
        legend=legend_below(230, offset_px=45),
    )
    fig.update_xaxes(type="category", title="layer")
    fig.update_yaxes(range=[0, 1.02], title=f"IoU of {which} weights", gridcolor="#eeeeee")
    return fig


def build_iou_matrix(
    names: Sequence[str], matrix: np.ndarray, *, title: str = "Mean weight-mask IoU over heads"
) -> go.Figure:
    """S x S IoU between strategies (runs), e.g. the mean or the minimum over heads.

    ``names``: one unique name per row of the float ``(S, S)`` ``matrix`` in [0, 1]. Returns one
    heatmap trace (fixed 0..1 Blues range, row 0 at the top) and ``S * S`` value annotations.

    Raises:
        ValueError: for a matrix that is not square in [0, 1], or names that do not match it.
    """
    values = np.asarray(matrix)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ValueError(f"matrix must be square (S, S); got shape {values.shape}.")
    labels = check_names(names, values.shape[0], "matrix rows")
    values = _unit_values(values, "matrix", 2)
    hover = [
        [f"{row} vs {col}: IoU {_decimal(values[i, j])}" for j, col in enumerate(labels)]
        for i, row in enumerate(labels)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=values.tolist(),
            x=labels,
            y=labels,
            zmin=0.0,
            zmax=1.0,
            colorscale=IOU_COLOURSCALE,
            colorbar={"title": {"text": "IoU"}, "thickness": 14},
            hovertext=hover,
            hoverinfo="text",
            xgap=2,
            ygap=2,
            name="IoU",
        )
    )
    _annotate_cells(fig, values, labels, size=12)
    side = max(60 * len(labels), 180)
    fig.update_layout(
        title={"text": title, "x": 0.0},
        height=side + 160,
        width=side + 260,
        margin={"t": 60, "b": 100, "l": 140, "r": 20},
        plot_bgcolor=GRID_BG,
    )
    fig.update_xaxes(type="category", tickangle=-30, showgrid=False)
    fig.update_yaxes(type="category", autorange="reversed", showgrid=False)
    return fig


def _matrix_values(names: Sequence[str], matrix: Any, what: str) -> tuple[list[str], np.ndarray]:
    values = np.asarray(matrix)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ValueError(f"{what} must be square (S, S); got shape {values.shape}.")
    labels = check_names(names, values.shape[0], f"{what} rows")
    return labels, _unit_values(values, what, 2)


def build_iou_matrices(
    panels: Sequence[IouMatrices],
    *,
    which: str = "pruned",
    over: str = "layers",
    title: str = "",
) -> go.Figure:
    """The paper's Figure 9: mean and minimum IoU between strategies, one row per ratio.

    Grover, Gawri and Manku (2022), Figure 9: "the confusion matrix of the mean and min values
    across all layers" at compression ratios 3 and 3.5. Row ``r`` holds ``panels[r]``'s mean
    (left) and minimum (right) matrix, each a heatmap on a fixed 0..1 Blues range with its value
    in every cell (``S * S`` annotations per panel), row 0 of a matrix at the top.

    Args:
        panels: one :class:`IouMatrices` per ratio (e.g. 3 and 3.5), in display order.
        which: ``"pruned"`` or ``"kept"``: the set the IoU was taken over (for the titles).
        over: ``"layers"`` or ``"heads"``: what the mean and minimum run across (for the titles).

    Raises:
        ValueError: for no panels, a matrix that is not square in [0, 1], names that do not match
            it, or a ratio that is not a positive number.
    """
    if not panels:
        raise ValueError("Pass at least one ratio's matrices: panels is empty.")
    rows = []
    for panel in panels:
        ratio = _number(panel.ratio, "ratio")
        if not math.isfinite(ratio) or ratio <= 0:
            raise ValueError(f"A panel's ratio must be a positive number; got {panel.ratio!r}.")
        labels, mean = _matrix_values(panel.names, panel.mean, f"mean IoU at {ratio:g}")
        _, low = _matrix_values(panel.names, panel.minimum, f"minimum IoU at {ratio:g}")
        if low.shape != mean.shape:
            raise ValueError(
                f"At {ratio:g} the mean matrix is {mean.shape} but the minimum {low.shape}; "
                "pass both for the same strategies."
            )
        rows.append((ratio, labels, mean, low, panel.chance))
    subtitles = []
    for ratio, _, _, _, chance in rows:
        note = "" if chance is None else f" (random masks: {chance:.2f})"
        subtitles += [f"mean at {ratio:g}×{note}", f"minimum at {ratio:g}×{note}"]
    fig = make_subplots(
        rows=len(rows),
        cols=2,
        subplot_titles=subtitles,
        horizontal_spacing=0.18,
        vertical_spacing=0.5 / len(rows),
    )
    for index, (ratio, labels, mean, low, _) in enumerate(rows, start=1):
        for col, (what, values) in enumerate((("mean", mean), ("min", low)), start=1):
            hover = [
                [f"{row} vs {other} at {ratio:g}×: {what} IoU {_decimal(values[i, j])}"
                 for j, other in enumerate(labels)]
                for i, row in enumerate(labels)
            ]  # fmt: skip
            fig.add_trace(
                go.Heatmap(
                    z=values.tolist(),
                    x=labels,
                    y=labels,
                    zmin=0.0,
                    zmax=1.0,
                    colorscale=IOU_COLOURSCALE,
                    showscale=index == 1 and col == 2,
                    colorbar={"title": {"text": "IoU"}, "thickness": 14},
                    hovertext=hover,
                    hoverinfo="text",
                    xgap=2,
                    ygap=2,
                    name=f"{what} IoU at {ratio:g}×",
                ),
                row=index,
                col=col,
            )
            _annotate_cells(fig, values, labels, size=11, row=index, col=col)
            fig.update_xaxes(type="category", tickangle=-30, showgrid=False, row=index, col=col)
            fig.update_yaxes(
                type="category", autorange="reversed", showgrid=False, row=index, col=col
            )
    side = max(55 * max(len(labels) for _, labels, _, _, _ in rows), 180)
    default = f"IoU of the {which} weights between strategies, {over}: mean and minimum"
    fig.update_layout(
        title={"text": title or default, "x": 0.0},
        height=len(rows) * (side + 130) + 60,
        width=2 * side + 400,
        margin={"t": 90, "b": 60, "l": 140, "r": 20},
        plot_bgcolor=GRID_BG,
    )
    return fig


def _rows_as(kind: type[Any], rows: Sequence[Any], what: str) -> list[Any]:
    """``rows`` (instances of ``kind`` or mappings with its field names) as ``kind``."""
    names = [f.name for f in fields(kind)]
    items = []
    for index, row in enumerate(rows):
        if isinstance(row, kind):
            items.append(row)
            continue
        if not isinstance(row, Mapping):
            raise ValueError(f"{what}[{index}] is a {type(row).__name__}; pass a dict or {kind}.")
        try:
            items.append(kind(**{n: row[n] for n in names if n in row}))
        except TypeError:
            missing = [f.name for f in fields(kind) if f.name not in row]
            raise ValueError(
                f"{what}[{index}] lacks {', '.join(map(repr, missing))}; every row needs "
                f"{', '.join(names)} (the optional ones may be None)."
            ) from None
    if not items:
        raise ValueError(f"{what} is empty; pass at least one run.")
    return items


def _number(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} is {value!r}, which is not a number.") from error


def build_ratio_curves(
    rows: Sequence[RatioPoint | Mapping[str, Any]],
    *,
    dense_accuracy: float | None = None,
    strategy_labels: Mapping[str, str] | None = None,
    title: str = "Accuracy against compression ratio",
    axis_title: str = "compression ratio (all prunable weights / kept weights)",
) -> go.Figure:
    """Accuracy against compression ratio: one line per strategy, the dense model dashed.

    Args:
        rows: :class:`RatioPoint` or dicts with its fields (``recovered_accuracy`` optional).
        dense_accuracy: the unpruned model's accuracy (a dashed grey horizontal line), or None.
        strategy_labels: display names by strategy (default: the strategy names).
        axis_title: the x axis title: say which compression-ratio definition the rows use.

    Returns:
        One line-and-marker trace per strategy (points sorted by ratio), a dotted trace
        ``"<name> · recovered"`` per strategy with recovered accuracies, and a ``"dense (…)"``
        trace when ``dense_accuracy`` is given.

    Raises:
        ValueError: for no rows, a row missing a field, a non-numeric value or a ratio <= 0.
    """
    points = _rows_as(RatioPoint, rows, "rows")
    labels = dict(strategy_labels or {})
    order = list(STRATEGY_COLOURS)
    strategies = sorted(
        {str(p.strategy) for p in points},
        key=lambda s: (order.index(s) if s in order else len(order), s),
    )
    ratios: list[float] = []
    fig = go.Figure()
    for index, strategy in enumerate(strategies):
        mine = sorted(
            (p for p in points if str(p.strategy) == strategy),
            key=lambda p: _number(p.ratio, f"ratio of {strategy}"),
        )
        x = [_number(p.ratio, f"ratio of {strategy}") for p in mine]
        if any(not math.isfinite(r) or r <= 0 for r in x):
            raise ValueError(f"Ratios must be positive numbers (3 = 3× fewer weights); got {x}.")
        ratios += x
        colour = STRATEGY_COLOURS.get(strategy, OTHER_COLOURS[index % len(OTHER_COLOURS)])
        name = labels.get(strategy, strategy)
        series = [("", [_number(p.accuracy, f"accuracy of {strategy}") for p in mine])]
        if any(p.recovered_accuracy is not None for p in mine):
            recovered = [
                math.nan if p.recovered_accuracy is None else _number(p.recovered_accuracy, name)
                for p in mine
            ]
            series.append((" · recovered", recovered))
        for suffix, y in series:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers",
                    name=name + suffix,
                    legendgroup=strategy,
                    line={"color": colour, "width": 2, "dash": "dot" if suffix else "solid"},
                    marker={"size": 9, "symbol": "circle-open" if suffix else "circle"},
                    hovertemplate=f"{name}{suffix}<br>ratio %{{x:g}}×<br>accuracy %{{y:.4f}}"
                    "<extra></extra>",
                )
            )
    low, high = min(ratios), max(ratios)
    pad = max(0.1 * (high - low), 0.25)
    if dense_accuracy is not None:
        dense = _number(dense_accuracy, "dense_accuracy")
        fig.add_trace(
            go.Scatter(
                x=[low - pad, high + pad],
                y=[dense, dense],
                mode="lines",
                name=f"dense ({dense:.4f})",
                line={"color": MARK_COLOUR, "width": 1.5, "dash": "dash"},
                hovertemplate=f"dense model<br>accuracy {dense:.4f}<extra></extra>",
            )
        )
    ticks = sorted(set(ratios))
    fig.update_layout(
        title={"text": title, "x": 0.0},
        height=420,
        margin={"t": 60, "b": 60, "l": 60, "r": 20},
        plot_bgcolor=GRID_BG,
        legend={"title": {"text": "strategy"}},
    )
    fig.update_xaxes(
        title=axis_title,
        range=[low - pad, high + pad],
        tickvals=ticks,
        ticktext=[f"{r:g}×" for r in ticks],
        gridcolor="#eeeeee",
    )
    values = [y for trace in fig.data for y in (trace.y or ()) if y is not None and y == y]
    fig.update_yaxes(title="accuracy", gridcolor="#eeeeee", range=accuracy_range(values))
    return fig


def _megabytes(value: float) -> str:
    return f"{value / 1e6:,.2f}"


def _milliseconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def build_cost_table(
    rows: Sequence[CostRow | Mapping[str, Any]], *, title: str = "Honest size of the sparse models"
) -> go.Figure:
    """A table of non-zero weights, dense and CSR sizes (MB = 10^6 bytes) and latency per run.

    CSR stores a kept weight as a 4-byte value plus a 4-byte column index, so a matrix shrinks
    only below half density: the "CSR / dense" column shows it. Latency columns appear when a
    row has a measurement. ``rows``: :class:`CostRow` or dicts with its fields. Returns one
    ``go.Table`` trace whose ``cells.values`` holds one list per column.

    Raises:
        ValueError: for no rows, a row missing a required field or with a non-positive size.
    """
    items = _rows_as(CostRow, rows, "rows")
    for row in items:
        if min(_number(row.dense_bytes, row.name), _number(row.sparse_bytes, row.name)) <= 0:
            raise ValueError(
                f"Run {row.name!r} has dense_bytes={row.dense_bytes}, sparse_bytes="
                f"{row.sparse_bytes}; pass the positive byte counts of pruning.cost."
            )
    header = ["Run", "Non-zero weights", "Dense (MB)", "Sparse CSR (MB)", "CSR / dense"]
    columns: list[list[str]] = [
        [row.name for row in items],
        [
            f"{int(row.params_nonzero):,}"
            + ("" if not row.params_total else f" ({row.params_nonzero / row.params_total:.1%})")
            for row in items
        ],
        [_megabytes(row.dense_bytes) for row in items],
        [_megabytes(row.sparse_bytes) for row in items],
        [f"{row.sparse_bytes / row.dense_bytes:.2f}×" for row in items],
    ]
    if any(row.dense_ms is not None or row.masked_ms is not None for row in items):
        header += ["Dense latency (ms)", "Masked latency (ms)"]
        columns += [
            [_milliseconds(row.dense_ms) for row in items],
            [_milliseconds(row.masked_ms) for row in items],
        ]
    fig = go.Figure(
        go.Table(
            header={
                "values": [f"<b>{h}</b>" for h in header],
                "fill_color": "#eeeeee",
                "align": "left",
            },
            cells={"values": columns, "align": ["left"] + ["right"] * (len(header) - 1)},
        )
    )
    fig.update_layout(
        title={"text": title, "x": 0.0},
        height=110 + 30 * len(items),
        margin={"t": 50, "b": 10, "l": 10, "r": 10},
    )
    return fig


def _annotate_cells(
    fig: go.Figure, values: np.ndarray, labels: Sequence[str], *, size: int, **where: Any
) -> None:
    """Write each cell's IoU on a square matrix heatmap (white on dark cells); ``where`` picks
    the subplot (``row``, ``col``) when there are several."""
    for i, row_name in enumerate(labels):
        for j, col_name in enumerate(labels):
            value = float(values[i, j])
            dark = not math.isnan(value) and value > 0.6
            fig.add_annotation(
                x=col_name,
                y=row_name,
                text=_decimal(value),
                showarrow=False,
                font={"color": "#ffffff" if dark else MARK_COLOUR, "size": size},
                **where,
            )
