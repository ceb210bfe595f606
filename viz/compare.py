"""Figures that compare the head masks of pruning runs: side by side, agreement per head, overlap.

Masks follow the HeadScope convention: bool ``(n_layers, n_heads)``, **True = keep**. All masks
given to one call must share a shape (the same model's head grid). Metric deltas between runs
are in :mod:`viz.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from viz.grid import (
    COLOURBAR_PX,
    GRID_BG,
    KEPT,
    MARGIN_LEFT,
    REMOVED_EARLIER,
    cell_font_size,
    check_mask,
    check_names,
    check_present,
    check_scores,
    grid_cell_px,
    grid_traces,
    head_labels,
    head_status,
    layer_labels,
    legend_below,
    legend_traces,
    set_coloraxis,
    style_grid_axes,
)

__all__ = [
    "MaskOverlap",
    "build_agreement_heatmap",
    "build_mask_comparison",
    "mask_overlap",
]

MAX_SIDE_BY_SIDE = 6


class MaskOverlap(TypedDict):
    """How two masks' removed sets overlap (see :func:`mask_overlap`)."""

    removed_both: int
    removed_only_a: int
    removed_only_b: int
    kept_both: int
    removed_union: int
    jaccard: float
    same_status: float


def _check_masks(
    masks: Sequence[np.ndarray], *, min_runs: int = 2, max_runs: int | None = None
) -> list[np.ndarray]:
    arrays = [check_mask(m, f"masks[{i}]") for i, m in enumerate(masks)]
    if len(arrays) < min_runs:
        raise ValueError(f"Pass at least {min_runs} masks to compare; got {len(arrays)}.")
    if max_runs is not None and len(arrays) > max_runs:
        raise ValueError(
            f"build_mask_comparison draws at most {max_runs} runs side by side; got "
            f"{len(arrays)}. Pick {max_runs} runs, or use build_agreement_heatmap, which takes "
            "any number."
        )
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        listed = ", ".join(f"masks[{i}] {a.shape}" for i, a in enumerate(arrays))
        raise ValueError(
            f"All masks must have the same (n_layers, n_heads) shape; got {listed}. Compare runs "
            "of the same model (mask it on the original head grid)."
        )
    return arrays


def _per_run(values: Sequence[Any] | None, n_runs: int, what: str) -> list[Any]:
    if values is None:
        return [None] * n_runs
    items = list(values)
    if len(items) != n_runs:
        raise ValueError(
            f"Got {n_runs} masks but {len(items)} {what}; pass one entry per run (None where a "
            "run has none)."
        )
    return items


def build_mask_comparison(
    masks: Sequence[np.ndarray],
    names: Sequence[str],
    scores: Sequence[np.ndarray | None] | None = None,
    *,
    presents: Sequence[np.ndarray | None] | None = None,
    score_label: str = "importance",
    shared_range: bool = True,
    title: str = "",
) -> go.Figure:
    """Head masks of 2 to 6 runs side by side, one layer x head grid per run.

    Each subplot looks like :func:`viz.heads.build_mask_heatmap` (kept heads coloured by score,
    removed grey with "×", removed earlier pale with "–") and is titled with the run's name and
    kept count. All runs share one colour axis and one colour bar.

    Args:
        masks: 2..6 bool ``(n_layers, n_heads)`` arrays of one shape, **True = keep**.
        names: one unique name per run.
        scores: per run a float ``(n_layers, n_heads)`` array or None; None = no scores at all.
        presents: per run a bool ``(n_layers, n_heads)`` array of existing heads, or None.
        score_label: what the scores are (colour bar title, hover label).
        shared_range: True: one colour range over all runs' finite scores (comparable when the
            runs score heads the same way). False: each run's scores are min-max scaled to 0..1
            for colour (use it when methods score on different scales); hover still shows raw
            scores.
        title: optional figure title.

    Returns:
        A figure with ``len(masks)`` subplots in up to 3 columns. Each run adds a status heatmap
        and, when it has scores, a score heatmap (names ``status`` / ``score_label``), plus
        legend-only marker traces.

    Raises:
        ValueError: for fewer than 2 or more than 6 runs, masks of different shapes, non-bool
            masks, counts of names / scores / presents that differ from the masks', or arrays of
            the wrong shape.
    """
    arrays = _check_masks(masks, max_runs=MAX_SIDE_BY_SIDE)
    labels = check_names(names, len(arrays))
    shape = arrays[0].shape
    n_layers, n_heads = shape
    score_arrays = [
        None if s is None else check_scores(s, shape, f"scores[{i}]")
        for i, s in enumerate(_per_run(scores, len(arrays), "score arrays"))
    ]
    present_arrays = [
        None if p is None else check_present(p, shape, f"presents[{i}]")
        for i, p in enumerate(_per_run(presents, len(arrays), "present arrays"))
    ]

    n_cols = min(len(arrays), 3)
    n_rows = math.ceil(len(arrays) / n_cols)
    cell = int(np.clip(min(960 / (n_cols * n_heads), 520 / n_layers), 10, 36))
    grid_px = n_layers * cell
    gap_px, spacing_px = 70, 24
    top, bottom = (100 if title else 70), 70
    plot_px = n_rows * grid_px + (n_rows - 1) * gap_px
    plot_w = n_cols * n_heads * cell + (n_cols - 1) * spacing_px

    subtitles = []
    for name, mask, present in zip(labels, arrays, present_arrays, strict=True):
        kept = int((head_status(mask, present) == KEPT).sum())
        subtitles.append(f"{name}<br><sup>{kept} of {mask.size} kept</sup>")
    fig = make_subplots(
        rows=n_rows,
        cols=n_cols,
        subplot_titles=subtitles,
        horizontal_spacing=spacing_px / plot_w,
        vertical_spacing=gap_px / plot_px if n_rows > 1 else 0.0,
    )

    colour_scores = score_arrays
    colour_title = score_label
    if not shared_range:
        colour_scores = [
            None if s is None else _min_max(s, p)
            for s, p in zip(score_arrays, present_arrays, strict=True)
        ]
        colour_title = f"{score_label} (min–max per run)"

    any_no_score = any_earlier = False
    for index, (mask, score, colour, present) in enumerate(
        zip(arrays, score_arrays, colour_scores, present_arrays, strict=True)
    ):
        row, col = index // n_cols + 1, index % n_cols + 1
        for trace in grid_traces(
            mask,
            score,
            present,
            score_label=score_label,
            colour_values=colour,
            font_size=cell_font_size(cell),
        ):
            fig.add_trace(trace, row=row, col=col)
        style_grid_axes(fig, cell_px=cell, row=row, col=col, show_layers=col == 1)
        status = head_status(mask, present)
        any_earlier = any_earlier or bool((status == REMOVED_EARLIER).any())
        if score is not None:
            any_no_score = any_no_score or bool(((status == KEPT) & ~np.isfinite(score)).any())

    for trace in legend_traces(
        scored=any(s is not None for s in score_arrays),
        no_score=any_no_score,
        earlier=any_earlier,
        score_label=score_label,
    ):
        fig.add_trace(trace, row=1, col=1)

    set_coloraxis(
        fig,
        [
            _present_only(s, p)
            for s, p in zip(colour_scores, present_arrays, strict=True)
            if s is not None
        ],
        colour_title,
    )
    fig.update_layout(
        title={"text": title, "x": 0.0} if title else None,
        height=plot_px + top + bottom,
        width=max(MARGIN_LEFT + plot_w + COLOURBAR_PX, 460),
        margin={"t": top, "b": bottom, "l": MARGIN_LEFT, "r": 20},
        plot_bgcolor=GRID_BG,
        legend=legend_below(plot_px),
    )
    return fig


def _present_only(scores: np.ndarray, present: np.ndarray | None) -> np.ndarray:
    return scores if present is None else np.where(present, scores, np.nan)


def _min_max(scores: np.ndarray, present: np.ndarray | None) -> np.ndarray:
    """Scores scaled to 0..1 over the run's finite, existing heads (0.5 when all are equal)."""
    values = _present_only(scores, present)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return values
    low, high = float(finite.min()), float(finite.max())
    if high == low:
        return np.where(np.isfinite(values), 0.5, np.nan)
    return (values - low) / (high - low)


def build_agreement_heatmap(
    masks: Sequence[np.ndarray], names: Sequence[str], *, title: str = ""
) -> go.Figure:
    """Per head, how many runs keep it (0..n): where the runs agree and where they differ.

    Args:
        masks: two or more bool ``(n_layers, n_heads)`` arrays of one shape, **True = keep**.
        names: one unique name per run; the hover lists which runs keep and which remove a head.
        title: first title line; the agreement summary is always added.

    Returns:
        A figure with one heatmap trace whose ``z`` is the integer count ``(n_layers, n_heads)``
        of runs keeping each head, drawn on a stepped scale from pale (no run keeps it) to dark
        (every run keeps it), with the count written in each cell.

    Raises:
        ValueError: for fewer than 2 masks, different shapes, non-bool masks or a names count
            that differs from the masks'.
    """
    arrays = _check_masks(masks)
    labels = check_names(names, len(arrays))
    n_runs = len(arrays)
    n_layers, n_heads = arrays[0].shape
    stack = np.stack(arrays)
    counts = stack.sum(axis=0).astype(int)

    hover = []
    for layer in range(n_layers):
        row = []
        for head in range(n_heads):
            keeping = [labels[i] for i in range(n_runs) if stack[i, layer, head]]
            removing = [labels[i] for i in range(n_runs) if not stack[i, layer, head]]
            row.append(
                f"Layer {layer} · Head {head}<br>kept by {len(keeping)} of {n_runs}: "
                f"{', '.join(keeping) or 'none'}<br>removed by: {', '.join(removing) or 'none'}"
            )
        hover.append(row)

    colours = sample_colorscale("Blues", [0.08 + 0.92 * k / n_runs for k in range(n_runs + 1)])
    scale: list[list[Any]] = []
    for k, colour in enumerate(colours):
        scale += [[k / (n_runs + 1), colour], [(k + 1) / (n_runs + 1), colour]]

    cell = grid_cell_px(n_layers, n_heads)
    grid_px = n_layers * cell
    fig = go.Figure(
        go.Heatmap(
            z=counts.tolist(),
            x=head_labels(n_heads),
            y=layer_labels(n_layers),
            zmin=-0.5,
            zmax=n_runs + 0.5,
            colorscale=scale,
            colorbar={
                "title": {"text": "runs keeping"},
                "tickvals": list(range(n_runs + 1)),
                "thickness": 14,
            },
            text=counts.astype(str).tolist(),
            texttemplate="%{text}",
            textfont={"size": cell_font_size(cell)},
            hovertext=hover,
            hoverinfo="text",
            xgap=2,
            ygap=2,
            name="runs keeping",
        )
    )
    all_keep = int((counts == n_runs).sum())
    none_keep = int((counts == 0).sum())
    summary = (
        f"{n_runs} runs: {all_keep} heads kept by all, {none_keep} removed by all, "
        f"{counts.size - all_keep - none_keep} disputed"
    )
    top = 90 if title else 60
    fig.update_layout(
        title={"text": f"{title}<br><sup>{summary}</sup>" if title else summary, "x": 0.0},
        height=max(grid_px, 120) + top + 50,
        width=max(MARGIN_LEFT + max(n_heads * cell, 120) + COLOURBAR_PX, 460),
        margin={"t": top, "b": 50, "l": MARGIN_LEFT, "r": 20},
        plot_bgcolor=GRID_BG,
    )
    style_grid_axes(fig, cell_px=cell)
    return fig


def mask_overlap(a: np.ndarray, b: np.ndarray) -> MaskOverlap:
    """How the heads removed by two masks overlap.

    Args:
        a, b: bool ``(n_layers, n_heads)`` masks of one shape, **True = keep**.

    Returns:
        ``removed_both``, ``removed_only_a``, ``removed_only_b``, ``kept_both``,
        ``removed_union`` (head counts), ``jaccard``: |removed_a ∩ removed_b| / |removed_a ∪
        removed_b| (1.0 when neither removes anything: the removed sets are equal), and
        ``same_status``: the share of heads both masks treat alike.

    Raises:
        ValueError: for non-bool or non-2-D masks or masks of different shapes.
    """
    first, second = check_mask(a, "a"), check_mask(b, "b")
    if first.shape != second.shape:
        raise ValueError(
            f"a has shape {first.shape} but b has shape {second.shape}; compare masks of the "
            "same (n_layers, n_heads) grid."
        )
    removed_a, removed_b = ~first, ~second
    both = int((removed_a & removed_b).sum())
    union = int((removed_a | removed_b).sum())
    return MaskOverlap(
        removed_both=both,
        removed_only_a=int((removed_a & second).sum()),
        removed_only_b=int((removed_b & first).sum()),
        kept_both=int((first & second).sum()),
        removed_union=union,
        jaccard=1.0 if union == 0 else both / union,
        same_status=float((first == second).mean()),
    )
