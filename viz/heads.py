"""Layer x head figures of one head mask: the kept / removed grid and kept heads per layer.

Mask convention (as everywhere in HeadScope): a head mask is a bool array of shape
``(n_layers, n_heads)`` with **True = keep**; ``present`` (same shape, bool) marks the heads that
exist in the model, and absent heads are drawn as "removed earlier". The grid itself (colours,
marks, hover, axes) comes from :mod:`viz.grid`, shared with :mod:`viz.compare`.
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from viz.grid import (
    COLOURBAR_PX,
    EARLIER_COLOUR,
    GRID_BG,
    KEPT,
    KEPT_COLOUR,
    MARGIN_LEFT,
    REMOVED,
    REMOVED_COLOUR,
    REMOVED_EARLIER,
    cell_font_size,
    check_mask,
    check_present,
    check_scores,
    grid_cell_px,
    grid_traces,
    head_status,
    layer_labels,
    legend_below,
    legend_traces,
    set_coloraxis,
    style_grid_axes,
)

__all__ = ["build_layer_counts", "build_mask_heatmap"]


def kept_summary(mask: np.ndarray, present: np.ndarray | None = None) -> str:
    """E.g. ``"34 of 72 heads kept (52.8% removed)"``; counts over the full original grid."""
    status = head_status(mask, present)
    total = status.size
    kept = int((status == KEPT).sum())
    earlier = int((status == REMOVED_EARLIER).sum())
    text = f"{kept} of {total} heads kept ({100.0 * (total - kept) / total:.1f}% removed"
    if earlier:
        text += f", {earlier} of them earlier"
    return text + ")"


def build_mask_heatmap(
    mask: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    title: str = "",
    score_label: str = "importance",
    present: np.ndarray | None = None,
) -> go.Figure:
    """Layer x head grid of one head mask: kept heads coloured by score, removed heads greyed out.

    Args:
        mask: bool ``(n_layers, n_heads)``, **True = keep**.
        scores: float ``(n_layers, n_heads)`` per-head scores, or None. NaN shows as "n/a".
            The colour range spans the finite scores of all existing heads (kept or not), so the
            colour of a kept head says where it sits among all heads.
        title: first title line; the kept / removed summary is always added below it.
        score_label: what the scores are; titles the colour bar and labels the hover value.
        present: bool ``(n_layers, n_heads)``, True where the head exists in the model; absent
            heads are drawn as "removed earlier". None = all heads exist.

    Returns:
        A plotly figure: a status heatmap trace, a score heatmap trace (when scores are given) and
        legend-only marker traces. Height follows the number of layers; cells are square.

    Raises:
        ValueError: for a non-2-D or non-bool mask, or scores / present of another shape.
    """
    mask = check_mask(mask)
    shape = mask.shape
    score_array = None if scores is None else check_scores(scores, shape)
    present_array = None if present is None else check_present(present, shape)
    n_layers, n_heads = shape

    cell = grid_cell_px(n_layers, n_heads)
    traces = grid_traces(
        mask,
        score_array,
        present_array,
        score_label=score_label,
        font_size=cell_font_size(cell),
    )
    status = head_status(mask, present_array)
    kept = status == KEPT
    no_score = score_array is not None and bool((kept & ~np.isfinite(score_array)).any())
    fig = go.Figure(
        [
            *traces,
            *legend_traces(
                scored=score_array is not None,
                no_score=no_score,
                earlier=bool((status == REMOVED_EARLIER).any()),
                score_label=score_label,
            ),
        ]
    )

    summary = kept_summary(mask, present_array)
    top = 90 if title else 60
    bottom = 70
    # At least 120 px of plot area so a 1 x 1 grid still has a readable colour bar.
    plot_h = max(n_layers * cell, 120)
    fig.update_layout(
        # The title carries user text (run names): escaped, plotly would render <a href> live.
        title={
            "text": f"{html.escape(title, quote=False)}<br><sup>{summary}</sup>"
            if title
            else summary,
            "x": 0.0,
        },
        height=plot_h + top + bottom,
        width=max(MARGIN_LEFT + max(n_heads * cell, 120) + COLOURBAR_PX, 460),
        margin={"t": top, "b": bottom, "l": MARGIN_LEFT, "r": 20},
        plot_bgcolor=GRID_BG,
        legend=legend_below(plot_h),
    )
    set_coloraxis(fig, [score_array] if score_array is not None else [], score_label)
    style_grid_axes(fig, cell_px=cell)
    return fig


def build_layer_counts(mask: np.ndarray, *, present: np.ndarray | None = None) -> go.Figure:
    """Horizontal stacked bars of kept / removed (/ removed earlier) heads per layer.

    Layers run top to bottom ("L0" at the top) so the chart lines up with the heatmap.

    Args:
        mask: bool ``(n_layers, n_heads)``, **True = keep**.
        present: bool ``(n_layers, n_heads)``, True where the head exists; None = all exist.

    Returns:
        A figure with one bar trace per status ("kept", "removed", and "removed earlier" when
        ``present`` marks absent heads); ``x`` of each trace is the per-layer count.

    Raises:
        ValueError: for a non-2-D or non-bool mask or a present array of another shape.
    """
    mask = check_mask(mask)
    present_array = None if present is None else check_present(present, mask.shape)
    n_layers, n_heads = mask.shape
    status = head_status(mask, present_array)
    labels = layer_labels(n_layers)
    parts = [("kept", KEPT, KEPT_COLOUR), ("removed", REMOVED, REMOVED_COLOUR)]
    if bool((status == REMOVED_EARLIER).any()):
        parts.append(("removed earlier", REMOVED_EARLIER, EARLIER_COLOUR))

    fig = go.Figure()
    for name, code, colour in parts:
        counts = (status == code).sum(axis=1).astype(int)
        fig.add_trace(
            go.Bar(
                x=counts.tolist(),
                y=labels,
                orientation="h",
                name=name,
                marker={"color": colour, "line": {"color": "#999999", "width": 0.5}},
                text=[str(c) if c else "" for c in counts],
                textposition="inside",
                insidetextanchor="middle",
                hovertemplate=f"%{{y}}: %{{x}} of {n_heads} heads {name}<extra></extra>",
            )
        )
    cell = grid_cell_px(n_layers, n_heads)
    kept_total = int((status == KEPT).sum())
    fig.update_layout(
        barmode="stack",
        title={"text": f"Kept heads per layer ({kept_total} of {status.size})", "x": 0.0},
        height=max(n_layers * cell + 130, 220),
        margin={"t": 60, "b": 70, "l": 50, "r": 20},
        plot_bgcolor=GRID_BG,
        legend=legend_below(n_layers * cell, offset_px=55),
        bargap=0.25,
    )
    fig.update_yaxes(type="category", autorange="reversed")
    fig.update_xaxes(
        range=[0, n_heads], dtick=max(1, n_heads // 6), title="heads", gridcolor="#eeeeee"
    )
    return fig
