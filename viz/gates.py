"""Figures of learned head gates: AutoAttention's straight-through gates and L0 hard-concrete gates.

:func:`parse_gate_trace` (:mod:`viz.gates_trace`) stacks a run's ``gates`` snapshots into a
:class:`GateHistory`; the builders here replay it: the gate values on the layer x head grid at one
snapshot (diverging colours centred on the gate threshold, one colour range over the whole run so
snapshots compare), the same grid as an animation, the open / closed map (the training curves and
runs side by side come from :mod:`viz.gates_curves`). Heads whose gate closed and later opened
again are outlined.
AutoAttention: "AutoAttention: Automatic Attention Head Selection Through Differentiable Pruning"
(2022); L0 gates: Voita et al., "Analyzing Multi-Head Self-Attention: Specialized Heads Do the
Heavy Lifting, the Rest Can Be Pruned" (2019), after Louizos et al. (2018).
Masks are bool ``(n_layers, n_heads)``, **True = keep** (= gate open).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.gates_curves import OPEN_COLOUR, _title, build_gate_comparison, build_gate_curves
from viz.gates_trace import (
    GateHistory,
    ReopenedHead,
    parse_gate_trace,
    reopened_heads,
    snapshot_position,
)
from viz.grid import (
    COLOURBAR_PX,
    GRID_BG,
    MARGIN_LEFT,
    REMOVED_COLOUR,
    cell_font_size,
    format_score,
    grid_cell_px,
    head_labels,
    layer_labels,
    legend_below,
    style_grid_axes,
)
from viz.search import PRUNED_COLOUR

__all__ = [
    "GateHistory",
    "ReopenedHead",
    "build_gate_animation",
    "build_gate_comparison",
    "build_gate_curves",
    "build_gate_heatmap",
    "build_open_gate_map",
    "parse_gate_trace",
    "reopened_heads",
]

CLOSED_COLOUR = PRUNED_COLOUR
MIDDLE_COLOUR = "#f7f7f7"
# Diverging: closed (below the threshold) vermillion, the threshold white, open teal.
GATE_COLOURSCALE = [[0.0, CLOSED_COLOUR], [0.5, MIDDLE_COLOUR], [1.0, OPEN_COLOUR]]
OPEN_MAP_COLOURSCALE = [
    [0.0, REMOVED_COLOUR],
    [0.5, REMOVED_COLOUR],
    [0.5, OPEN_COLOUR],
    [1.0, OPEN_COLOUR],
]
REOPENED_COLOUR = "#111111"
_MARK = "×"
_CONTROLS_PX = 150  # play / pause buttons, then the step slider, under an animation
_SQUARE_EDGE = {"color": "#999999", "width": 1}


def _reopened_by(history: GateHistory, position: int) -> list[ReopenedHead]:
    """Reopenings seen up to and including snapshot ``position`` (the latest per head)."""
    step = int(history.steps[position])
    latest = {(r.layer, r.head): r for r in reopened_heads(history) if r.reopened_at <= step}
    return sorted(latest.values(), key=lambda r: (r.layer, r.head))


def _value_range(history: GateHistory) -> float:
    """Half-width of the colour range: the largest distance of any finite value from the
    threshold over the whole run, so every snapshot uses the same colours."""
    distance = np.abs(history.w - history.threshold)
    finite = distance[np.isfinite(distance)]
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def _hover(history: GateHistory, position: int, reopened: list[ReopenedHead]) -> list[list[str]]:
    notes = {(r.layer, r.head): r for r in reopened}
    n_layers, n_heads = history.shape
    rows = []
    for layer in range(n_layers):
        row = []
        for head in range(n_heads):
            lines = [
                f"Layer {layer} · Head {head}",
                f"{history.value_label}: {format_score(float(history.w[position, layer, head]))}",
                f"gate: {'open' if history.open[position, layer, head] else 'closed'}",
            ]
            if history.prob is not None:
                prob = float(history.prob[position, layer, head])
                lines.append(f"P(gate ≠ 0): {format_score(prob)}")
            note = notes.get((layer, head))
            if note is not None:
                lines.append(f"closed at step {note.closed_at}, reopened at {note.reopened_at}")
            row.append("<br>".join(lines))
        rows.append(row)
    return rows


def _closed_marks(history: GateHistory, position: int) -> list[list[str]]:
    return [["" if g else _MARK for g in row] for row in history.open[position]]


def _reopened_trace(reopened: list[ReopenedHead], cell: int, *, show: bool) -> go.Scatter:
    """Outlines around the reopened heads (an empty trace keeps animation frames aligned)."""
    return go.Scatter(
        x=[f"H{r.head}" for r in reopened],
        y=[f"L{r.layer}" for r in reopened],
        mode="markers",
        marker={
            "symbol": "square-open",
            "size": max(cell - 6, 8),
            "color": REOPENED_COLOUR,
            "line": {"width": 3, "color": REOPENED_COLOUR},
        },
        name="reopened during training (outlined)",
        hoverinfo="skip",
        showlegend=show,
    )


def _gate_traces(
    history: GateHistory, position: int, cell: int, span: float, *, show_reopened: bool
) -> list[go.Heatmap | go.Scatter]:
    n_layers, n_heads = history.shape
    reopened = _reopened_by(history, position)
    heatmap = go.Heatmap(
        z=history.w[position].tolist(),
        x=head_labels(n_heads),
        y=layer_labels(n_layers),
        zmid=history.threshold,
        zmin=history.threshold - span,
        zmax=history.threshold + span,
        colorscale=GATE_COLOURSCALE,
        colorbar={
            "title": {
                "text": f"{history.value_label}<br><sup>{format_score(history.threshold)} = "
                "threshold</sup>"
            },
            "thickness": 14,
        },
        text=_closed_marks(history, position),
        texttemplate="%{text}",
        textfont={"color": "#222222", "size": cell_font_size(cell)},
        hovertext=_hover(history, position, reopened),
        hoverinfo="text",
        xgap=2,
        ygap=2,
        name="gate values",
    )
    return [heatmap, _reopened_trace(reopened, cell, show=show_reopened)]


def _gate_summary(history: GateHistory, position: int) -> str:
    text = f"{int(history.open_gates[position])} of {history.n_gates} gates open ({_MARK}: closed)"
    if history.expected_open is not None and np.isfinite(history.expected_open[position]):
        text += f" · {history.expected_open[position]:.1f} expected in training"
    return f"{text} · {len(_reopened_by(history, position))} reopened so far"


def _grid_size(history: GateHistory) -> tuple[int, int, int]:
    """``(cell_px, plot_height_px, width_px)`` of one gate grid with its colour bar."""
    n_layers, n_heads = history.shape
    cell = grid_cell_px(n_layers, n_heads)
    plot_h = max(n_layers * cell, 120)
    width = max(MARGIN_LEFT + max(n_heads * cell, 120) + COLOURBAR_PX, 480)
    return cell, plot_h, width


def _step_title(history: GateHistory, position: int, what: str) -> str:
    return (
        f"{history.method_label}: {what} at step {int(history.steps[position])} of "
        f"{history.total_steps}"
    )


def build_gate_heatmap(
    history: GateHistory, index: int | None = None, *, title: str = ""
) -> go.Figure:
    """Layer x head grid of the gate parameters ``w`` at one snapshot.

    Diverging colours centred on the gate threshold (``zmid``): vermillion = closed side, teal =
    open side, one symmetric range over the whole run so snapshots compare. Closed gates carry a
    "×"; heads that closed and reopened by this snapshot are outlined. The hover names the head,
    its value, its gate (and P(gate ≠ 0) for L0 gates).

    Args:
        history: the parsed gate snapshots.
        index: snapshot number (0-based); None = the last one.
        title: first title line (default: the method and step); the counts go below it.

    Returns:
        A figure with the heatmap trace "gate values" (``z``: ``w`` at the snapshot) and the
        scatter trace of the reopened heads' outlines.

    Raises:
        ValueError: for an index the history does not have.
    """
    position = snapshot_position(history, index)
    cell, plot_h, width = _grid_size(history)
    show = bool(reopened_heads(history))
    fig = go.Figure(
        _gate_traces(history, position, cell, _value_range(history), show_reopened=show)
    )
    top, bottom = 90, 70
    fig.update_layout(
        title=_title(
            title or _step_title(history, position, f"gate values {history.value_label}"),
            _gate_summary(history, position),
        ),
        height=plot_h + top + bottom,
        width=width,
        margin={"t": top, "b": bottom, "l": MARGIN_LEFT, "r": 20},
        plot_bgcolor=GRID_BG,
        legend=legend_below(plot_h),
    )
    style_grid_axes(fig, cell_px=cell)
    return fig


def build_gate_animation(history: GateHistory, *, frame_ms: int = 400) -> go.Figure:
    """The gate heatmap of :func:`build_gate_heatmap` as an animation over the snapshots.

    Args:
        history: the parsed gate snapshots.
        frame_ms: how long the play button shows each snapshot.

    Returns:
        A figure showing the first snapshot, with one frame per snapshot (named by its training
        step), a step slider and play / pause buttons.
    """
    cell, plot_h, width = _grid_size(history)
    span = _value_range(history)
    show = bool(reopened_heads(history))
    frames = []
    for position in range(history.n_snapshots):
        main = _step_title(history, position, f"gate values {history.value_label}")
        frames.append(
            go.Frame(
                data=_gate_traces(history, position, cell, span, show_reopened=show),
                traces=[0, 1],
                name=str(int(history.steps[position])),
                layout={"title": _title(main, _gate_summary(history, position))},
            )
        )
    fig = go.Figure(data=frames[0].data, frames=frames)
    buttons_y, slider_y = -70 / plot_h, -110 / plot_h  # under the legend, one below the other
    still = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}
    fig.update_layout(
        title=frames[0].layout.title,
        height=plot_h + 90 + 70 + _CONTROLS_PX,
        width=width,
        margin={"t": 90, "b": 70 + _CONTROLS_PX, "l": MARGIN_LEFT, "r": 20},
        plot_bgcolor=GRID_BG,
        legend=legend_below(plot_h),
        updatemenus=[
            {
                "type": "buttons",
                "direction": "left",
                "x": 0.0,
                "xanchor": "left",
                "y": buttons_y,
                "yanchor": "top",
                "pad": {"r": 10, "t": 10},
                "showactive": False,
                "buttons": [
                    {
                        "label": "▶ Play",
                        "method": "animate",
                        "args": [
                            None,
                            {
                                "frame": {"duration": frame_ms, "redraw": True},
                                "fromcurrent": True,
                                "transition": {"duration": 0},
                            },
                        ],
                    },
                    {
                        "label": "❚❚ Pause",
                        "method": "animate",
                        "args": [[None], {**still, "transition": {"duration": 0}}],
                    },
                ],
            }
        ],
        sliders=[
            {
                "active": 0,
                "x": 0.0,
                "len": 1.0,
                "y": slider_y,
                "yanchor": "top",
                "pad": {"t": 10},
                "currentvalue": {"prefix": "training step "},
                "steps": [
                    {
                        "label": frame.name,
                        "method": "animate",
                        "args": [[frame.name], {**still, "transition": {"duration": 0}}],
                    }
                    for frame in frames
                ],
            }
        ],
    )
    style_grid_axes(fig, cell_px=cell)
    return fig


def _legend_square(name: str, colour: str) -> go.Scatter:
    marker = {"symbol": "square", "size": 13, "color": colour, "line": _SQUARE_EDGE}
    return go.Scatter(
        x=[None], y=[None], mode="markers", marker=marker, name=name, hoverinfo="skip"
    )


def build_open_gate_map(
    history: GateHistory, index: int | None = None, *, title: str = ""
) -> go.Figure:
    """Layer x head map of open (teal) and closed (grey, "×") gates at one snapshot.

    Reopened heads are outlined as in :func:`build_gate_heatmap`; the colours are those of kept
    and removed heads in every mask figure.

    Args:
        history: the parsed gate snapshots.
        index: snapshot number (0-based); None = the last one.
        title: first title line (default: the method and step).

    Returns:
        A figure with the heatmap trace "gates" (``z``: 1 = open, 0 = closed), the reopened
        outlines and the legend squares "open (head kept)" and "closed (head removed)".

    Raises:
        ValueError: for an index the history does not have.
    """
    position = snapshot_position(history, index)
    cell, plot_h, _ = _grid_size(history)
    n_layers, n_heads = history.shape
    reopened = _reopened_by(history, position)
    heatmap = go.Heatmap(
        z=history.open[position].astype(int).tolist(),
        x=head_labels(n_heads),
        y=layer_labels(n_layers),
        zmin=0,
        zmax=1,
        colorscale=OPEN_MAP_COLOURSCALE,
        showscale=False,
        text=_closed_marks(history, position),
        texttemplate="%{text}",
        textfont={"color": "#555555", "size": cell_font_size(cell)},
        hovertext=_hover(history, position, reopened),
        hoverinfo="text",
        xgap=2,
        ygap=2,
        name="gates",
    )
    fig = go.Figure(
        [
            heatmap,
            _reopened_trace(reopened, cell, show=bool(reopened)),
            _legend_square("open (head kept)", OPEN_COLOUR),
            _legend_square(f"closed (head removed) {_MARK}", REMOVED_COLOUR),
        ]
    )
    opened = int(history.open_gates[position])
    summary = f"{opened} open · {history.n_gates - opened} closed · {len(reopened)} reopened so far"
    top, bottom = 90, 70
    fig.update_layout(
        title=_title(title or _step_title(history, position, "open gates"), summary),
        height=plot_h + top + bottom,
        width=max(MARGIN_LEFT + max(n_heads * cell, 120) + 40, 480),
        margin={"t": top, "b": bottom, "l": MARGIN_LEFT, "r": 20},
        plot_bgcolor=GRID_BG,
        legend=legend_below(plot_h),
    )
    style_grid_axes(fig, cell_px=cell)
    return fig
