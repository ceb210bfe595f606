"""Attention figures: one head's token x token weights and a head-role map over the head grid.

Inputs are plain arrays: a head's attention matrix ``(T, T)`` (rows = query tokens, columns = key
tokens, each row summing to 1) with its ``T`` tokens, and per-head role scores
``(n_layers, n_heads)`` from :func:`pruning.head_roles.head_roles` with the bool ``present`` grid
(True where the head exists in the model; absent heads are drawn as removed, the way
:mod:`viz.heads` draws them). To compare the original and a pruned model side by side with one
colour scale, compute it with :func:`shared_range` and pass it to both figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from viz.grid import check_present, check_scores, score_range
from viz.heads import build_mask_heatmap

__all__ = ["build_attention_heatmap", "build_head_roles_figure", "shared_range"]

ATTENTION_COLOURSCALE = "Blues"
_MAX_LABEL_CHARS = 14


def shared_range(arrays: Sequence[Any]) -> tuple[float, float] | None:
    """``(low, high)`` over the finite entries of all ``arrays`` (None when there are none).

    Pass it as ``colour_range`` to several figures so equal colours mean equal values.
    """
    return score_range([np.asarray(a, dtype=np.float64) for a in arrays])


def _check_range(colour_range: tuple[float, float] | None) -> tuple[float, float] | None:
    if colour_range is None:
        return None
    low, high = (float(v) for v in colour_range)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(
            f"colour_range must be two finite numbers, low < high; got {colour_range!r}. "
            "Use shared_range([...]) or None for the matrix's own range."
        )
    return low, high


def _tick_label(token: str) -> str:
    return token if len(token) <= _MAX_LABEL_CHARS else token[: _MAX_LABEL_CHARS - 1] + "…"


def build_attention_heatmap(
    tokens: Sequence[str],
    matrix: Any,
    *,
    title: str,
    colour_range: tuple[float, float] | None = None,
) -> go.Figure:
    """Query x key heatmap of one head's attention, tokens as tick labels.

    Args:
        tokens: the ``T`` tokens (special tokens included), in order; repeats are fine.
        matrix: float ``(T, T)``: row ``i`` is query token ``i``'s attention over the key tokens.
        title: the figure title (e.g. ``"original · L2 H5"``).
        colour_range: ``(low, high)`` of the colour scale; None = ``0`` to the matrix's maximum.

    Returns:
        A figure with one heatmap trace; queries run top to bottom, keys left to right; hovering a
        cell shows ``"query → key: weight"``. Cells shrink to 10 px so ~64 tokens stay readable.

    Raises:
        ValueError: a matrix that is not square, does not match the tokens, is not numeric, or
            holds no finite value (a removed head: show a note instead of the figure).
    """
    labels = [str(t) for t in tokens]
    array = np.asarray(matrix)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"matrix must be numeric attention weights; got dtype {array.dtype}. Pass "
            "SentenceCapture.attentions[layer, head] as a float array."
        )
    array = array.astype(np.float64)
    n = len(labels)
    if array.ndim != 2 or array.shape != (n, n) or n == 0:
        raise ValueError(
            f"matrix must be (T, T) with T = {n} tokens; got shape {array.shape}. Pass one "
            "head's attention, attentions[layer, head], with the tokens it was captured for."
        )
    if not np.isfinite(array).any():
        raise ValueError(
            "matrix holds no finite weight: the head was removed from this model. Show a note "
            "instead of its heatmap (SentenceCapture.present[layer, head] is False)."
        )
    bounds = _check_range(colour_range) or (0.0, max(float(np.nanmax(array)), 1e-6))
    hover = [[f"{labels[q]} → {labels[k]}: {array[q, k]:.3f}" for k in range(n)] for q in range(n)]
    positions = list(range(n))
    cell = int(np.clip(round(640 / n), 10, 36))
    font = int(np.clip(round(cell * 0.9), 8, 13))
    fig = go.Figure(
        go.Heatmap(
            z=array.tolist(),
            x=positions,
            y=positions,
            zmin=bounds[0],
            zmax=bounds[1],
            colorscale=ATTENTION_COLOURSCALE,
            colorbar={"title": {"text": "weight"}, "thickness": 14},
            hovertext=hover,
            hoverinfo="text",
            hoverongaps=False,
            name="attention",
        )
    )
    # Numeric axes with token tick text: category axes would merge repeated tokens.
    ticks = {
        "tickmode": "array",
        "tickvals": positions,
        "ticktext": [_tick_label(t) for t in labels],
        "tickfont": {"size": font},
        "showgrid": False,
        "zeroline": False,
    }
    # Square cells; when the width is short the grid shrinks toward its top-left labels.
    fig.update_xaxes(
        title="key (attended to)",
        side="top",
        tickangle=-60,
        constrain="domain",
        constraintoward="left",
        **ticks,
    )
    fig.update_yaxes(
        title="query",
        autorange="reversed",
        scaleanchor="x",
        scaleratio=1,
        constrain="domain",
        constraintoward="top",
        **ticks,
    )
    label_px = 8 * min(_MAX_LABEL_CHARS, max(len(t) for t in labels)) + 40
    fig.update_layout(
        title={
            "text": title,
            "x": 0.0,
            "y": 1.0,
            "yref": "container",
            "yanchor": "top",
            "pad": {"t": 10},
        },
        height=n * cell + label_px + 65,
        width=n * cell + label_px + 130,  # the grid, its labels and the colour bar, no gap
        margin={"t": label_px + 45, "b": 20, "l": label_px, "r": 20},
        plot_bgcolor="#ffffff",
    )
    return fig


def build_head_roles_figure(
    roles: Mapping[str, Any],
    present: Any,
    role: str,
    *,
    title: str,
    label: str | None = None,
    colour_range: tuple[float, float] | None = None,
) -> go.Figure:
    """Layer x head map of one head role; heads absent from the model are marked as removed.

    Args:
        roles: ``{role: float (n_layers, n_heads)}`` as :func:`pruning.head_roles.head_roles`
            returns it (NaN for absent heads).
        present: bool ``(n_layers, n_heads)``, True where the head exists in the model.
        role: which entry of ``roles`` to draw, e.g. ``"entropy"`` or ``"cls"``.
        title: first title line; the kept / removed head count is added below it.
        label: what the value is (colour bar and hover); default the role name.
        colour_range: ``(low, high)`` of the colour scale (e.g. :func:`shared_range` of the
            original's and the pruned model's maps); None = the finite values' own range.

    Returns:
        The :func:`viz.heads.build_mask_heatmap` grid with ``present`` as the keep mask: existing
        heads coloured by the role value, absent ones grey with "×".

    Raises:
        ValueError: an unknown role, or arrays that are not ``(n_layers, n_heads)`` (bool
            ``present``, numeric role values).
    """
    if role not in roles:
        raise ValueError(f"Unknown head role {role!r}; pick one of {sorted(roles)}.")
    values = np.asarray(roles[role])
    mask = np.asarray(present)
    if mask.ndim != 2:
        raise ValueError(
            f"present must be bool (n_layers, n_heads); got shape {mask.shape}. Pass "
            "SentenceCapture.present."
        )
    mask = check_present(mask, mask.shape)
    scores = check_scores(values, mask.shape, what=f"roles[{role!r}]")
    fig = build_mask_heatmap(mask, scores, title=title, score_label=label or role)
    bounds = _check_range(colour_range)
    if bounds is not None:
        fig.update_layout(coloraxis={"cmin": bounds[0], "cmax": bounds[1]})
    return fig
