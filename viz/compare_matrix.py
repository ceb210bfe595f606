"""How much pruning runs agree on which heads to remove: the mask IoU matrix and its heatmap.

Masks follow the HeadScope convention: bool ``(n_layers, n_heads)``, **True = keep**. The IoU
(Jaccard index) is taken over the sets of REMOVED heads, as :func:`viz.compare.mask_overlap`
does for one pair: ``|removed_a ∩ removed_b| / |removed_a ∪ removed_b|``, and 1.0 when neither
mask removes anything (two empty sets are equal).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from viz.grid import check_mask, check_names

__all__ = ["build_iou_heatmap", "mask_iou_matrix"]

MAX_TICK_CHARS = 28
_MIN_CELL_PX, _MAX_CELL_PX = 22, 120
_LABEL_PX_PER_CHAR = 6.5


def mask_iou_matrix(masks: Sequence[Any]) -> np.ndarray:
    """Pairwise IoU of the heads each mask removes.

    Args:
        masks: bool arrays ``(n_layers, n_heads)``, True = keep, all of one shape (numpy arrays
            or CPU tensors).

    Returns:
        float64 ``(n_runs, n_runs)``, symmetric, values in [0, 1], 1.0 on the diagonal; 1.0 for a
        pair that both remove nothing, 0.0 when exactly one of them removes nothing.

    Raises:
        ValueError: no masks, a mask that is not a 2-D bool array, or masks of different shapes.
    """
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        raise ValueError(
            "Pass a sequence of masks (e.g. [mask_a, mask_b]), not one 2-D mask; a single mask "
            "gives the 1 x 1 matrix [[1.0]]."
        )
    arrays = [check_mask(np.asarray(m), f"masks[{i}]") for i, m in enumerate(masks)]
    if not arrays:
        raise ValueError("Pass at least one mask; got none.")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        listed = ", ".join(f"masks[{i}] {a.shape}" for i, a in enumerate(arrays))
        raise ValueError(
            f"All masks must have the same (n_layers, n_heads) shape; got {listed}. Compare runs "
            "of one model (masks on its original head grid)."
        )
    removed = np.stack([~a for a in arrays]).reshape(len(arrays), -1).astype(np.float64)
    both = removed @ removed.T
    sizes = removed.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - both
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union == 0, 1.0, both / np.where(union == 0, 1.0, union))
    return np.asarray(iou, dtype=np.float64)


def _short(name: str) -> str:
    """A tick label: at most :data:`MAX_TICK_CHARS` characters (the hover keeps the full name)."""
    return name if len(name) <= MAX_TICK_CHARS else name[: MAX_TICK_CHARS - 1] + "…"


def _check_matrix(matrix: Any) -> np.ndarray:
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise ValueError(
            f"matrix must be square (n_runs, n_runs) with n_runs >= 1; got shape {array.shape}. "
            "Build it with mask_iou_matrix(masks)."
        )
    finite = array[np.isfinite(array)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
        raise ValueError(
            f"IoU values lie in [0, 1]; got values from {finite.min():g} to {finite.max():g}. "
            "Build the matrix with mask_iou_matrix(masks)."
        )
    return array


def build_iou_heatmap(
    matrix: Any,
    names: Sequence[str],
    *,
    title: str = "Mask overlap: IoU of the removed heads",
) -> go.Figure:
    """An annotated heatmap of a mask IoU matrix (0 = no removed head in common, 1 = same set).

    Args:
        matrix: ``(n_runs, n_runs)`` values in [0, 1] (NaN cells are left blank), e.g. from
            :func:`mask_iou_matrix`.
        names: one unique name per run (user text: escaped here; long names are shortened on
            the axes and shown in full on hover).
        title: figure title (escaped).

    Raises:
        ValueError: a matrix that is not square or has values outside [0, 1], or names that do
            not match it one to one (see :func:`viz.grid.check_names`).
    """
    values = _check_matrix(matrix)
    n_runs = values.shape[0]
    full = check_names(names, n_runs, "runs")
    ticks = [html.escape(_short(str(n)), quote=False) for n in names]
    cell = int(np.clip(560 / n_runs, _MIN_CELL_PX, _MAX_CELL_PX))
    label_px = int(min(MAX_TICK_CHARS, max(len(t) for t in ticks)) * _LABEL_PX_PER_CHAR) + 20
    font = int(np.clip(round(cell * 0.32), 7, 13))
    customdata = np.empty((n_runs, n_runs, 2), dtype=object)
    for row in range(n_runs):
        for col in range(n_runs):
            customdata[row, col] = (full[row], full[col])
    text = np.where(np.isfinite(values), np.char.mod("%.2f", np.nan_to_num(values)), "")
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=list(range(n_runs)),
            y=list(range(n_runs)),
            zmin=0.0,
            zmax=1.0,
            colorscale="Blues",
            colorbar={"title": {"text": "IoU"}, "thickness": 14},
            text=text,
            texttemplate="%{text}",
            textfont={"size": font},
            customdata=customdata,
            hovertemplate=(
                "%{customdata[0]}<br>vs %{customdata[1]}<br>"
                "IoU of removed heads: %{z:.3f}<extra></extra>"
            ),
            xgap=1,
            ygap=1,
        )
    )
    side = n_runs * cell
    fig.update_layout(
        title={"text": html.escape(str(title), quote=False)},
        width=label_px + side + 120,
        height=label_px + side + 90,
        margin={"l": label_px, "b": label_px, "t": 60, "r": 30},
        plot_bgcolor="white",
    )
    axis = {"tickmode": "array", "tickvals": list(range(n_runs)), "ticktext": ticks}
    fig.update_xaxes(**axis, tickangle=-45, showgrid=False, constrain="domain")
    fig.update_yaxes(
        **axis, autorange="reversed", showgrid=False, scaleanchor="x", constrain="domain"
    )
    return fig
