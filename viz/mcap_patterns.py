"""MCAP's pattern CNN: its held-out confusion matrix, example maps and each head's pattern.

MCAP (Rajapaksha and Crespi, *Explainable Attention Pruning: A Meta-learning-based Approach*,
IEEE TAI 2024, Section II-D) classifies attention maps into five patterns (vertical, diagonal,
vertical+diagonal, block, heterogeneous) with a CNN before the meta-learning loop. A run's
``"patterns"`` trace event carries the CNN's held-out test (accuracy, confusion matrix rows =
label, columns = prediction), one generated example map per pattern and the CNN's pattern of
every head; the builders here draw them. Re-exported by :mod:`viz.mcap`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.search import _message_figure, _title
from viz.search_trace import event_fields

__all__ = [
    "PATTERN_COLOURS",
    "build_head_patterns",
    "build_pattern_confusion",
    "build_pattern_examples",
    "pattern_event",
]

# Okabe-Ito colours, one per pattern (vertical, diagonal, vertical+diagonal, block, heterog.).
PATTERN_COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#999999")


def pattern_event(events: Iterable[Any] | None) -> dict[str, Any] | None:
    """The ``data`` of the last ``patterns`` event, or None (legacy runs, runs still loading)."""
    found = None
    for index, event in enumerate(events or ()):
        kind, data = event_fields(event, index)
        if kind == "patterns":
            found = dict(data)
    return found


def _classes(classes: Sequence[str] | None, size: int) -> list[str]:
    names = list(classes) if classes is not None else [f"pattern {i}" for i in range(size)]
    if len(names) != size:
        raise ValueError(f"{len(names)} class names for a {size} x {size} confusion matrix.")
    return names


def build_pattern_confusion(
    confusion: Any, classes: Sequence[str] | None = None, *, subtitle: str = ""
) -> go.Figure:
    """The held-out confusion matrix: counts in the cells, colour = share of the true row.

    Args:
        confusion: ``(k, k)`` counts, rows = true pattern, columns = predicted.
        classes: the ``k`` pattern names.
        subtitle: extra text after the accuracy (e.g. the maps' sources).

    Returns:
        One heatmap (``x`` predicted, ``y`` true, first pattern at the top); the title states
        the accuracy. A "nothing to show" figure for an empty matrix.

    Raises:
        ValueError: for a matrix that is not square or names of another count.
    """
    title = "Pattern CNN: held-out confusion matrix"
    counts = np.asarray(confusion if confusion is not None else [], dtype=float)
    if counts.size == 0 or counts.sum() == 0:
        return _message_figure(title, "Nothing to show: no held-out map was tested.")
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"The confusion matrix must be square; got shape {counts.shape}.")
    names = _classes(classes, counts.shape[0])
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    accuracy = float(np.trace(counts) / counts.sum())
    fig = go.Figure(
        go.Heatmap(
            z=shares.tolist(),
            x=names,
            y=names,
            zmin=0.0,
            zmax=1.0,
            colorscale="Blues",
            colorbar={"title": {"text": "share of row"}, "thickness": 14},
            text=[[f"{int(v)}" for v in row] for row in counts],
            texttemplate="%{text}",
            customdata=counts.astype(int).tolist(),
            hovertemplate="true %{y} · predicted %{x}<br>%{customdata} maps (%{z:.0%} of the row)"
            "<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    summary = f"accuracy {accuracy:.1%} on {int(counts.sum())} held-out maps"
    fig.update_layout(
        title=_title(title, summary + (f" · {subtitle}" if subtitle else "")),
        height=420,
        margin={"t": 90, "b": 80, "l": 130, "r": 20},
    )
    fig.update_xaxes(title="predicted", side="bottom")
    fig.update_yaxes(title="true (label)", autorange="reversed")
    return fig


def build_pattern_examples(examples: Any, classes: Sequence[str] | None = None) -> go.Figure:
    """One generated example map per pattern, side by side (rows = queries, columns = keys).

    Args:
        examples: ``(k, S, S)`` maps (each row a distribution over the keys).
        classes: the ``k`` pattern names.

    Raises:
        ValueError: for maps that are not ``(k, S, S)`` or names of another count.
    """
    title = "The five patterns the CNN learns (generated examples)"
    maps = np.asarray(examples if examples is not None else [], dtype=float)
    if maps.size == 0:
        return _message_figure(title, "Nothing to show: the run has no example maps.")
    if maps.ndim != 3 or maps.shape[1] != maps.shape[2]:
        raise ValueError(f"Example maps must have shape (k, S, S); got {maps.shape}.")
    names = list(classes) if classes is not None else [f"pattern {i}" for i in range(len(maps))]
    if len(names) != len(maps):
        raise ValueError(f"{len(names)} pattern names for {len(maps)} example maps.")
    fig = make_subplots(rows=1, cols=len(maps), subplot_titles=names, horizontal_spacing=0.02)
    high = float(np.nanmax(maps)) or 1.0
    for column, grid in enumerate(maps, start=1):
        fig.add_trace(
            go.Heatmap(
                z=grid.tolist(),
                zmin=0.0,
                zmax=high,
                colorscale="Viridis",
                showscale=column == len(maps),
                colorbar={"title": {"text": "attention"}, "thickness": 12},
                name=names[column - 1],
                hovertemplate="query %{y} · key %{x}<br>%{z:.3f}<extra></extra>",
            ),
            row=1,
            col=column,
        )
    fig.update_xaxes(showticklabels=False, title="key")
    fig.update_yaxes(showticklabels=False, autorange="reversed", scaleanchor=None)
    fig.update_yaxes(title="query", row=1, col=1)
    fig.update_layout(title={"text": title, "x": 0.0}, height=300, margin={"t": 90, "b": 40})
    return fig


def build_head_patterns(
    head_patterns: Any, classes: Sequence[str], delta: Any | None = None
) -> go.Figure:
    """Layer x head grid coloured by the pattern the CNN sees most often in each head.

    Args:
        head_patterns: int ``(n_layers, n_heads)`` pattern indices into ``classes`` (-1: none).
        classes: the pattern names.
        delta: optional float ``(n_layers, n_heads)``: each head's mean ``1 - P(vertical)``,
            written in the cells.

    Raises:
        ValueError: for a grid that is not 2-D, indices outside ``classes`` or a ``delta`` of
            another shape.
    """
    title = "Pattern CNN: each head's most frequent pattern"
    grid = np.asarray(head_patterns if head_patterns is not None else [], dtype=float)
    if grid.size == 0:
        return _message_figure(title, "Nothing to show: no head was classified.")
    if grid.ndim != 2:
        raise ValueError(f"head_patterns must be (n_layers, n_heads); got shape {grid.shape}.")
    k = len(classes)
    if ((grid < -1) | (grid >= k)).any():
        raise ValueError(f"Pattern indices must be in -1..{k - 1} for {k} patterns.")
    values = np.asarray(delta, dtype=float) if delta is not None else None
    if values is not None and values.shape != grid.shape:
        raise ValueError(f"delta has shape {values.shape}, the grid {grid.shape}.")
    n_layers, n_heads = grid.shape
    # A discrete colour scale: band i of [0, 1] is pattern i's colour.
    colours = PATTERN_COLOURS[:k]
    scale = []
    for index, colour in enumerate(colours):
        scale += [[index / k, colour], [(index + 1) / k, colour]]
    names = np.array([classes[int(v)] if v >= 0 else "none" for v in grid.reshape(-1)])
    text = (
        [[f"{v:.2f}" for v in row] for row in values]
        if values is not None
        else [[""] * n_heads for _ in range(n_layers)]
    )
    fig = go.Figure(
        go.Heatmap(
            z=np.where(grid >= 0, grid + 0.5, np.nan).tolist(),
            x=[f"H{h}" for h in range(n_heads)],
            y=[f"L{layer}" for layer in range(n_layers)],
            zmin=0.0,
            zmax=float(k),
            colorscale=scale,
            colorbar={
                "tickvals": [i + 0.5 for i in range(k)],
                "ticktext": list(classes),
                "thickness": 14,
            },
            text=text,
            texttemplate="%{text}" if grid.size <= 400 else None,
            customdata=names.reshape(grid.shape).tolist(),
            hovertemplate="%{y} %{x}<br>%{customdata}<br>delta %{text}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    counts = {name: int((names == name).sum()) for name in classes}
    summary = " · ".join(f"{name} {count}" for name, count in counts.items() if count)
    if values is not None:
        summary += " · cells: delta = 1 − P(vertical)"
    fig.update_layout(
        title=_title(title, summary),
        height=max(n_layers * 40, 140) + 150,
        margin={"t": 90, "b": 50, "l": 60, "r": 20},
    )
    fig.update_yaxes(autorange="reversed", title="layer")
    fig.update_xaxes(title="head")
    return fig
