"""The layer x head grid that every mask figure draws, and the checks its inputs go through.

Mask convention (as everywhere in HeadScope): a head mask is a bool array of shape
``(n_layers, n_heads)`` with **True = keep**. ``present`` (same shape, bool) marks the heads that
physically exist in the model the mask belongs to; heads that are absent were removed by an earlier
pruning step and are drawn as "removed earlier" whatever the mask says about them.

The grid puts layers on the y axis ("L0" at the top) and heads on the x axis ("H0" at the left).
Kept heads are coloured by their score on a sequential scale (Viridis, with a colour bar); removed
heads are light grey with a "×"; heads removed earlier are paler still with a "–". Without scores
every kept head has one colour. Every cell's hover names the layer, the head, the score and the
status. :mod:`viz.heads` and :mod:`viz.compare` both build on the helpers here, so a single run
and a comparison of runs look the same.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

# Head status, as returned by head_status.
KEPT, REMOVED, REMOVED_EARLIER = 0, 1, 2
STATUS_NAMES = ("kept", "removed", "removed earlier")

# Display categories of the status trace (the score trace draws kept heads that have a score).
CAT_KEPT = 0  # kept, no scores given
CAT_NO_SCORE = 1  # kept, but its score is NaN / inf
CAT_REMOVED = 2
CAT_EARLIER = 3

SCORE_COLOURSCALE = "Viridis"
KEPT_COLOUR = "rgb(34, 144, 140)"  # the middle of Viridis, so kept reads the same in every figure
NO_SCORE_COLOUR = "#ffffff"
REMOVED_COLOUR = "#d4d4d4"
EARLIER_COLOUR = "#f1f1f1"
MARK_COLOUR = "#555555"
GRID_BG = "#ffffff"
MARGIN_LEFT = 50
COLOURBAR_PX = 110  # room a vertical colour bar with its title takes to the right of the plot

_CATEGORY_COLOURS = (KEPT_COLOUR, NO_SCORE_COLOUR, REMOVED_COLOUR, EARLIER_COLOUR)
_CATEGORY_MARKS = ("", "n/a", "×", "–")
# Stepped scale: category k (z = k on zmin=0..zmax=3) gets exactly _CATEGORY_COLOURS[k].
STATUS_COLOURSCALE = [
    [0.0, KEPT_COLOUR],
    [1 / 6, KEPT_COLOUR],
    [1 / 6, NO_SCORE_COLOUR],
    [3 / 6, NO_SCORE_COLOUR],
    [3 / 6, REMOVED_COLOUR],
    [5 / 6, REMOVED_COLOUR],
    [5 / 6, EARLIER_COLOUR],
    [1.0, EARLIER_COLOUR],
]


def check_mask(mask: Any, what: str = "mask") -> np.ndarray:
    """``mask`` as a bool numpy array of shape ``(n_layers, n_heads)``, True = keep.

    Raises:
        ValueError: when it is not 2-D, is empty or is not boolean; the message says how to fix it.
    """
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(
            f"{what} must be 2-D (n_layers, n_heads) with True = keep; got shape {array.shape}. "
            "Pass one row per layer, e.g. mask.reshape(n_layers, n_heads)."
        )
    if array.size == 0:
        raise ValueError(
            f"{what} is empty (shape {array.shape}); pass at least one layer and head."
        )
    if array.dtype != np.bool_:
        raise ValueError(
            f"{what} must be boolean (True = keep); got dtype {array.dtype}. Convert a 0/1 mask "
            "with mask.astype(bool); threshold a score or gate array first (e.g. gates > 0.5)."
        )
    return array


def check_scores(scores: Any, shape: tuple[int, ...], what: str = "scores") -> np.ndarray:
    """``scores`` as a float64 array of ``shape`` (NaN allowed: drawn as "n/a").

    Raises:
        ValueError: when it is not numeric or its shape differs from the mask's.
    """
    array = np.asarray(scores)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"{what} must be a numeric (n_layers, n_heads) array; got dtype {array.dtype}. "
            "Pass per-head scores as floats (NaN where a head has none)."
        )
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{what} must be real numbers; got dtype {array.dtype}.")
    if array.shape != shape:
        raise ValueError(
            f"{what} has shape {array.shape} but the mask has shape {shape}; pass one score per "
            "head on the same (n_layers, n_heads) grid."
        )
    return array.astype(np.float64)


def check_present(present: Any, shape: tuple[int, ...], what: str = "present") -> np.ndarray:
    """``present`` as a bool array of ``shape`` (True where the head exists in the model).

    Raises:
        ValueError: when it is not boolean or its shape differs from the mask's.
    """
    array = np.asarray(present)
    if array.dtype != np.bool_:
        raise ValueError(
            f"{what} must be boolean (True = the head exists in the model); got dtype "
            f"{array.dtype}. Convert with present.astype(bool)."
        )
    if array.shape != shape:
        raise ValueError(
            f"{what} has shape {array.shape} but the mask has shape {shape}; pass it on the "
            "model's original (n_layers, n_heads) grid."
        )
    return array


def head_status(mask: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """Per head: KEPT (0), REMOVED (1) by this mask, or REMOVED_EARLIER (2): absent from the model.

    Shapes: ``mask`` and ``present`` bool ``(n_layers, n_heads)``; returns int8 of the same shape.
    """
    status = np.where(mask, KEPT, REMOVED).astype(np.int8)
    if present is not None:
        status[~present] = REMOVED_EARLIER
    return status


def check_names(names: Sequence[str], n_runs: int, what: str = "masks") -> list[str]:
    """``names`` as strings, one per run and all different, HTML-escaped for plotly.

    Plotly renders a subset of HTML in titles, ticks and hovers (``<a href>`` becomes a live
    link), and run names are user text, so the returned labels are escaped (plotly shows
    ``&lt;`` as ``<``).

    Raises:
        ValueError: when the count differs from ``n_runs`` or a name repeats.
    """
    labels = [str(n) for n in names]
    if len(labels) != n_runs:
        raise ValueError(
            f"Got {n_runs} {what} but {len(labels)} names; pass exactly one name per run."
        )
    duplicates = sorted({n for n in labels if labels.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"Run names must be unique; {', '.join(map(repr, duplicates))} appear more than once. "
            "Add a suffix such as the run id."
        )
    return [html.escape(n, quote=False) for n in labels]


def format_score(value: float) -> str:
    """A score for hover text: four significant digits, "n/a" for NaN."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.4g}"


def layer_labels(n_layers: int) -> list[str]:
    """``["L0", ..., "L{n_layers-1}"]``."""
    return [f"L{i}" for i in range(n_layers)]


def head_labels(n_heads: int) -> list[str]:
    """``["H0", ..., "H{n_heads-1}"]``."""
    return [f"H{i}" for i in range(n_heads)]


def score_range(scores: list[np.ndarray]) -> tuple[float, float] | None:
    """``(low, high)`` over the finite entries of all arrays; None when there are none."""
    finite = [s[np.isfinite(s)] for s in scores]
    values = np.concatenate(finite) if finite else np.empty(0)
    if values.size == 0:
        return None
    low, high = float(values.min()), float(values.max())
    if low == high:
        # A flat range would make plotly pick an arbitrary one; centre the single value instead.
        pad = 0.5 if low == 0 else abs(low) * 0.5
        low, high = low - pad, high + pad
    return low, high


def cell_font_size(cell_px: float) -> int:
    """Font size for marks inside a cell of ``cell_px`` pixels."""
    return int(np.clip(round(cell_px * 0.45), 7, 14))


def grid_traces(
    mask: np.ndarray,
    scores: np.ndarray | None = None,
    present: np.ndarray | None = None,
    *,
    score_label: str = "importance",
    colour_values: np.ndarray | None = None,
    font_size: int = 12,
    coloraxis: str = "coloraxis",
) -> list[go.Heatmap]:
    """The two heatmap traces of one mask grid: a status trace and, with scores, a score trace.

    Every cell belongs to exactly one trace (the other has a gap there), so hover always shows one
    label. The score trace draws kept heads with a finite score, coloured through ``coloraxis``
    by ``colour_values`` (default: the scores themselves); the status trace draws everything else.

    Args:
        mask: bool ``(L, H)``, True = keep (already validated).
        scores: float ``(L, H)`` or None.
        present: bool ``(L, H)`` or None (all heads exist).
        score_label: what the score is, used in the hover text.
        colour_values: float ``(L, H)`` used for colour instead of ``scores`` (hover still shows
            the scores), e.g. per-run normalised scores.
        font_size: size of the marks ("×", "–", "n/a") inside cells.
        coloraxis: the layout colour axis the score trace uses.

    Returns:
        ``[status_trace]`` or ``[status_trace, score_trace]``.
    """
    n_layers, n_heads = mask.shape
    status = head_status(mask, present)
    kept = status == KEPT
    finite = np.isfinite(scores) if scores is not None else np.zeros(mask.shape, dtype=bool)
    scored = kept & finite

    category = np.full(mask.shape, np.nan)
    category[kept & ~finite] = CAT_KEPT if scores is None else CAT_NO_SCORE
    category[status == REMOVED] = CAT_REMOVED
    category[status == REMOVED_EARLIER] = CAT_EARLIER
    marks = [["" if math.isnan(c) else _CATEGORY_MARKS[int(c)] for c in row] for row in category]

    hover = []
    for layer in range(n_layers):
        row = []
        for head in range(n_heads):
            lines = [f"Layer {layer} · Head {head}"]
            if scores is not None:
                lines.append(f"{score_label}: {format_score(float(scores[layer, head]))}")
            lines.append(f"status: {STATUS_NAMES[status[layer, head]]}")
            row.append("<br>".join(lines))
        hover.append(row)

    x, y = head_labels(n_heads), layer_labels(n_layers)
    common: dict[str, Any] = {
        "x": x,
        "y": y,
        "xgap": 2,
        "ygap": 2,
        "hoverongaps": False,
        "hovertext": hover,
        "hoverinfo": "text",
    }
    traces = [
        go.Heatmap(
            z=category.tolist(),
            zmin=0,
            zmax=3,
            colorscale=STATUS_COLOURSCALE,
            showscale=False,
            text=marks,
            texttemplate="%{text}",
            textfont={"color": MARK_COLOUR, "size": font_size},
            name="status",
            **common,
        )
    ]
    if scores is not None:
        values = scores if colour_values is None else colour_values
        traces.append(
            go.Heatmap(
                z=np.where(scored, values, np.nan).tolist(),
                coloraxis=coloraxis,
                name=score_label,
                **common,
            )
        )
    return traces


def legend_traces(
    *, scored: bool, no_score: bool, earlier: bool, score_label: str = "importance"
) -> list[go.Scatter]:
    """Data-less square markers that explain the cell colours in the legend."""
    entries = [
        (f"kept (colour = {score_label})" if scored else "kept", KEPT_COLOUR),
        ("removed ×", REMOVED_COLOUR),
    ]
    if no_score:
        entries.append(("kept, no score (n/a)", NO_SCORE_COLOUR))
    if earlier:
        entries.append(("removed earlier –", EARLIER_COLOUR))
    return [
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            marker={
                "symbol": "square",
                "size": 13,
                "color": colour,
                "line": {"color": "#999999", "width": 1},
            },
            name=name,
            showlegend=True,
            hoverinfo="skip",
        )
        for name, colour in entries
    ]


def style_grid_axes(
    fig: go.Figure,
    *,
    cell_px: int,
    row: int | None = None,
    col: int | None = None,
    show_layers: bool = True,
) -> None:
    """Square cells, layer 0 at the top, no grid lines; for one subplot when row/col are given.

    When the space is short in one direction the grid shrinks towards the top left, so it stays
    next to its labels and subplot title.
    """
    selector: dict[str, int] = {} if row is None or col is None else {"row": row, "col": col}
    if selector:
        subplot = fig.get_subplot(row, col)
        x_anchor = subplot.xaxis.plotly_name.replace("axis", "")
    else:
        x_anchor = "x"
    tick_font = {"size": int(np.clip(round(cell_px * 0.4), 9, 12))}
    common: dict[str, Any] = {
        "type": "category",
        "showgrid": False,
        "zeroline": False,
        "ticks": "",
        "tickangle": 0,
        "tickfont": tick_font,
        "constrain": "domain",
    }
    # Below ~22 px "H10 H11 ..." run together; label every other head (hover names each one).
    fig.update_xaxes(constraintoward="left", dtick=2 if cell_px < 22 else 1, **common, **selector)
    fig.update_yaxes(
        autorange="reversed",
        scaleanchor=x_anchor,
        scaleratio=1,
        constraintoward="top",
        showticklabels=show_layers,
        **common,
        **selector,
    )


def legend_below(plot_px: float, offset_px: float = 30) -> dict[str, Any]:
    """A horizontal legend ``offset_px`` under a plot area ``plot_px`` tall (below tick labels)."""
    return {
        "orientation": "h",
        "x": 0.0,
        "y": -offset_px / max(plot_px, 40),
        "yanchor": "top",
        "font": {"size": 11},
        "traceorder": "normal",
    }


def grid_cell_px(n_layers: int, n_heads: int) -> int:
    """Pixels per cell for a single grid: 40 up to 16 x 16, about 27 for 24 x 16 (BERT-large)."""
    return int(np.clip(round(640 / max(n_layers, n_heads)), 20, 40))


def set_coloraxis(fig: go.Figure, scores: list[np.ndarray], colour_title: str) -> None:
    """One shared colour axis over the finite ``scores``; hidden when there are none."""
    bounds = score_range(scores)
    axis: dict[str, Any] = {
        "colorscale": SCORE_COLOURSCALE,
        "colorbar": {"title": {"text": colour_title}, "thickness": 14},
        "showscale": bounds is not None,
    }
    if bounds is not None:
        axis["cmin"], axis["cmax"] = bounds
    fig.update_layout(coloraxis=axis)


def accuracy_range(values: Sequence[float], pad: float = 0.02) -> list[float]:
    """A y range around accuracies, padded, within [0, 1] (plotly pads a flat line to ±0.5)."""
    finite = [float(v) for v in values if math.isfinite(float(v))]
    if not finite:
        return [0.0, 1.0]
    low, high = min(finite), max(finite)
    pad = max(pad, 0.1 * (high - low))
    return [max(0.0, low - pad), min(1.0, high + pad)]
