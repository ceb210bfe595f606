"""MCAP figures: the controller's episodes, head importance over episodes, and the Table I view.

MCAP (Rajapaksha and Crespi, *Explainable Attention Pruning: A Meta-learning-based Approach*,
IEEE TAI 2024) trains a controller that samples head masks in episodes; its trace has one
``episode`` event per episode (KL, CNN and budget losses, the objective, whether an SGD update
followed, the keep probability and CNN score of every head) and a ``final`` event (scores, mask).
The builders here read those events (dicts or TraceEvent objects; other kinds are skipped) and
RunRecord-like objects for the Table I comparison; the pattern CNN's figures (its ``patterns``
event) live in :mod:`viz.mcap_patterns` and are re-exported here. Masks: bool
``(n_layers, n_heads)``, **True = keep**.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.grid import GRID_BG, legend_below
from viz.heads import build_mask_heatmap
from viz.mcap_patterns import (
    build_head_patterns,
    build_pattern_confusion,
    build_pattern_examples,
    pattern_event,
)
from viz.mcap_table import (
    UNPRUNED,
    Table1Row,
    build_table1_chart,
    finite_or_none,
    table1_frame,
    table1_rows,
)
from viz.search import PRUNED_COLOUR, _message_figure, _title
from viz.search_trace import event_fields

__all__ = [
    "UNPRUNED",
    "Table1Row",
    "build_episode_curves",
    "build_final_importance",
    "build_head_patterns",
    "build_importance_heatmap",
    "build_keep_map",
    "build_pattern_confusion",
    "build_pattern_examples",
    "build_table1_chart",
    "episode_rows",
    "final_event",
    "pattern_event",
    "table1_frame",
    "table1_rows",
]

HeadValue = Literal["keep_prob", "cnn_score"]
VALUE_NAMES = {"keep_prob": "keep probability", "cnn_score": "CNN score"}
# (trace name, data key, colour): the controller's losses and their sum, one panel each.
CURVES = (
    ("KL", "kl", "#0072b2"),
    ("CNN loss", "cnn_loss", "#e69f00"),
    ("budget loss", "budget_loss", "#56b4e9"),
    ("objective", "objective", "#009e73"),
)
MAX_UPDATE_LINES = 80  # beyond this many updates the vertical lines would hide the curves
MAX_ROW_LABELS = 48  # more heads than this: one tick label per layer


def episode_rows(events: Iterable[Any] | None) -> list[dict[str, Any]]:
    """The ``data`` of every ``episode`` event, ordered by episode (a repeated episode: the last).

    Args:
        events: a run's trace or a job's live events: dicts with ``kind`` and ``data``, or
            TraceEvent objects; other kinds (``stage``, ``final``, ...) are skipped.

    Raises:
        ValueError: for an item that is not a trace event, or an episode event without
            ``episode``.
    """
    rows: dict[int, dict[str, Any]] = {}
    for index, event in enumerate(events or ()):
        kind, data = event_fields(event, index)
        if kind != "episode":
            continue
        if "episode" not in data:
            raise ValueError(
                f"The episode event at trace[{index}] has no 'episode' number; the trace was "
                "written by another version of MCAP. Run it again."
            )
        rows[int(data["episode"])] = dict(data)
    return [rows[number] for number in sorted(rows)]


def final_event(events: Iterable[Any] | None) -> dict[str, Any] | None:
    """The ``data`` of the last ``final`` event, or None while the run has none."""
    found = None
    for index, event in enumerate(events or ()):
        kind, data = event_fields(event, index)
        if kind == "final":
            found = dict(data)
    return found


def _full_height_line(fig: go.Figure, x: float, line: dict[str, Any], **extra: Any) -> None:
    """A vertical line through every panel of a figure with shared x axes (one shape)."""
    fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, yref="paper", line=line, **extra)


def build_episode_curves(events: Iterable[Any] | None) -> go.Figure:
    """KL, CNN loss, budget loss and objective per episode, one panel each (shared x).

    Every panel has its own y axis, so the small KL stays readable next to the other losses.
    Episodes followed by an SGD update of the controller get a faint vertical line (up to 80 of
    them) and a marker on the objective (the trace "SGD update"); a new pass over the training
    data gets a dashed line.

    Returns:
        Traces "KL", "CNN loss", "budget loss", "objective" (x = episode, 0-based) and
        "SGD update"; a "nothing to show" figure when there are no episodes.
    """
    rows = episode_rows(events)
    title = "MCAP controller training"
    if not rows:
        return _message_figure(title, "Nothing to show yet: no episode has finished.")
    episodes = [int(r["episode"]) for r in rows]
    fig = make_subplots(
        rows=len(CURVES),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.05,
        subplot_titles=["KL divergence", "CNN loss", "Budget loss", "Objective"],
    )
    # Panel titles on the left, clear of the "pass" labels of the dashed pass lines.
    fig.update_annotations(x=0.0, xanchor="left")
    for row, (name, key, colour) in enumerate(CURVES, start=1):
        fig.add_trace(
            go.Scatter(
                x=episodes,
                y=[finite_or_none(r.get(key)) for r in rows],
                mode="lines+markers" if len(rows) <= 60 else "lines",
                name=name,
                line={"color": colour, "width": 1.6},
                marker={"size": 4},
                hovertemplate=f"episode %{{x}}<br>{name}: %{{y:.4g}}<extra></extra>",
            ),
            row=row,
            col=1,
        )
    updates = [r for r in rows if r.get("update")]
    fig.add_trace(
        go.Scatter(
            x=[int(r["episode"]) for r in updates],
            y=[finite_or_none(r.get("objective")) for r in updates],
            mode="markers",
            name="SGD update",
            marker={"symbol": "triangle-up", "size": 9, "color": PRUNED_COLOUR},
            hovertemplate="update after episode %{x}<extra></extra>",
        ),
        row=len(CURVES),
        col=1,
    )
    line = {"color": PRUNED_COLOUR, "width": 1}
    for r in updates if len(updates) <= MAX_UPDATE_LINES else ():
        _full_height_line(fig, int(r["episode"]), line, opacity=0.25, layer="below")
    for before, after in itertools.pairwise(rows):
        if before.get("pass") != after.get("pass"):
            x = int(after["episode"]) - 0.5
            _full_height_line(fig, x, {"color": "#555555", "width": 1.2, "dash": "dash"})
            fig.add_annotation(
                x=x,
                y=1.0,
                yref="paper",
                text=f"pass {int(after.get('pass', 0)) + 1}",
                showarrow=False,
                xanchor="left",
                yanchor="bottom",
            )
    last = rows[-1]
    total = last.get("total_episodes")
    of_total = f" of {int(total)}" if total is not None else ""
    objective = finite_or_none(last.get("objective"))
    summary = (
        f"episode {int(last['episode']) + 1}{of_total} · {int(last.get('updates', len(updates)))} "
        "updates" + ("" if objective is None else f" · objective {objective:.4g}")
    )
    height = 180 * len(CURVES) + 190
    fig.update_layout(
        title=_title(title, summary),
        height=height,
        margin={"t": 100, "b": 90, "l": 70, "r": 20},
        plot_bgcolor=GRID_BG,
        legend=legend_below(height - 190, offset_px=50),
    )
    fig.update_xaxes(gridcolor="#eeeeee")
    fig.update_xaxes(title="episode", row=len(CURVES), col=1)
    fig.update_yaxes(gridcolor="#eeeeee")
    for row, (name, _, _) in enumerate(CURVES, start=1):
        fig.update_yaxes(title=name, row=row, col=1)
    return fig


def _head_matrix(row: Mapping[str, Any], value: str, episode: int) -> np.ndarray:
    grid = np.asarray(row.get(value), dtype=float)
    if grid.ndim != 2:
        raise ValueError(
            f"Episode {episode}'s {value!r} is not a (n_layers, n_heads) grid; the trace was "
            "written by another version of MCAP. Run it again."
        )
    return grid


def _head_labels(shape: tuple[int, int]) -> list[str]:
    return [f"L{layer}·H{head}" for layer in range(shape[0]) for head in range(shape[1])]


def build_importance_heatmap(
    events: Iterable[Any] | None, *, value: HeadValue = "keep_prob", episode: int | None = None
) -> go.Figure:
    """Every head's keep probability (or CNN score) over the episodes.

    Args:
        events: the trace or live events (see :func:`episode_rows`).
        value: ``"keep_prob"`` (the controller's keep probability) or ``"cnn_score"``.
        episode: an episode to mark with a vertical line (the replay position), or None.

    Returns:
        One heatmap: ``x`` = episodes, ``y`` = head labels ``"L{l}·H{h}"`` (layer 0 at the top,
        ``z`` of shape ``(n_layers * n_heads, n_episodes)``), colour in [0, 1] (wider when the
        values leave it). Layers are separated by lines; with more than 48 heads the y ticks
        name the layers only. A "nothing to show" figure when there are no episodes.

    Raises:
        ValueError: for an unknown ``value`` or grids that change shape between episodes.
    """
    if value not in VALUE_NAMES:
        raise ValueError(f"value must be one of {', '.join(VALUE_NAMES)}; got {value!r}.")
    name = VALUE_NAMES[value]
    title = f"MCAP: {name} of every head over the episodes"
    rows = [r for r in episode_rows(events) if r.get(value) is not None]
    if not rows:
        return _message_figure(title, f"Nothing to show yet: no episode recorded a {name}.")
    grids = [_head_matrix(r, value, int(r["episode"])) for r in rows]
    shape = grids[0].shape
    if any(g.shape != shape for g in grids):
        raise ValueError(f"The {name} grids change shape between episodes; the trace is broken.")
    z = np.stack([g.reshape(-1) for g in grids], axis=1)
    labels = _head_labels((int(shape[0]), int(shape[1])))
    episodes = [int(r["episode"]) for r in rows]
    finite = z[np.isfinite(z)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    high = max(1.0, float(finite.max())) if finite.size else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=np.where(np.isfinite(z), z, np.nan).tolist(),
            x=episodes,
            y=labels,
            zmin=low,
            zmax=high,
            colorscale="Viridis",
            colorbar={"title": {"text": name}, "thickness": 14},
            hovertemplate=f"%{{y}} · episode %{{x}}<br>{name}: %{{z:.3f}}<extra></extra>",
        )
    )
    n_layers, n_heads = int(shape[0]), int(shape[1])
    for layer in range(1, n_layers):
        fig.add_hline(y=layer * n_heads - 0.5, line={"color": "#ffffff", "width": 1.5})
    if episode is not None:
        fig.add_vline(x=episode, line={"color": PRUNED_COLOUR, "width": 2}, name="episode marker")
    row_px = max(6, min(18, 720 // len(labels)))
    ticks = labels if len(labels) <= MAX_ROW_LABELS else labels[::n_heads]
    ticktext = ticks if len(labels) <= MAX_ROW_LABELS else [f"L{i}" for i in range(n_layers)]
    fig.update_layout(
        title=_title(title, f"{len(labels)} heads × {len(episodes)} episodes"),
        height=len(labels) * row_px + 170,
        margin={"t": 90, "b": 60, "l": 80, "r": 20},
        plot_bgcolor=GRID_BG,
    )
    fig.update_xaxes(title="episode")
    fig.update_yaxes(
        title="head (layer · head)",
        type="category",
        autorange="reversed",
        tickvals=ticks,
        ticktext=ticktext,
    )
    return fig


def build_keep_map(
    events: Iterable[Any] | None, episode: int | None = None, *, value: HeadValue = "keep_prob"
) -> go.Figure:
    """Layer x head map of the keep probability (or CNN score) at one episode (None = the last).

    Raises:
        ValueError: for an episode the events do not have.
    """
    name = VALUE_NAMES[value]
    rows = [r for r in episode_rows(events) if r.get(value) is not None]
    if not rows:
        return _message_figure(f"MCAP: {name} per head", "Nothing to show yet: no episode.")
    numbers = [int(r["episode"]) for r in rows]
    if episode is not None and episode not in numbers:
        raise ValueError(f"episode={episode} is not in this trace; pick one of 0..{numbers[-1]}.")
    row = rows[-1 if episode is None else numbers.index(episode)]
    grid = _head_matrix(row, value, int(row["episode"]))
    n_layers, n_heads = grid.shape
    fig = go.Figure(
        go.Heatmap(
            z=grid.tolist(),
            x=[f"H{h}" for h in range(n_heads)],
            y=[f"L{layer}" for layer in range(n_layers)],
            zmin=0.0,
            zmax=max(1.0, float(np.nanmax(grid))),
            colorscale="Viridis",
            colorbar={"title": {"text": name}, "thickness": 14},
            text=[[f"{v:.2f}" for v in line] for line in grid],
            texttemplate="%{text}" if grid.size <= 400 else None,
            hovertemplate=f"%{{y}} %{{x}}<br>{name}: %{{z:.3f}}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    total = row.get("total_episodes")
    where = f"episode {int(row['episode']) + 1}" + ("" if total is None else f" of {int(total)}")
    sampled = row.get("sampled_keep")
    summary = where + ("" if sampled is None else f" · {int(sampled)} heads kept in its sample")
    fig.update_layout(
        title=_title(f"MCAP: {name} per head", summary),
        height=max(n_layers * 40, 140) + 150,
        margin={"t": 90, "b": 50, "l": 60, "r": 20},
    )
    fig.update_yaxes(autorange="reversed", title="layer")
    fig.update_xaxes(title="head")
    return fig


def build_final_importance(scores: Any, mask: Any) -> go.Figure:
    """Layer x head grid of MCAP's final importance, pruned heads greyed out and marked "×".

    Args:
        scores: float ``(n_layers, n_heads)`` final importance (higher = more important).
        mask: bool ``(n_layers, n_heads)``, **True = keep**.

    Raises:
        ValueError: for a non-bool mask or scores of another shape.
    """
    title = "MCAP: final head importance"
    if scores is None or mask is None or np.asarray(mask).size == 0:
        return _message_figure(title, "Nothing to show: the run has no final mask yet.")
    keep = np.asarray(mask)
    if keep.dtype != bool and np.isin(keep, (0, 1)).all():
        keep = keep.astype(bool)  # a 0/1 grid read back from JSON
    return build_mask_heatmap(
        keep, np.asarray(scores, dtype=float), title=title, score_label="importance"
    )
