"""Training curves of learned head gates: one run's open gates, losses and metric; runs compared.

Companion of :mod:`viz.gates` (which re-exports these builders): :func:`build_gate_curves` draws a
:class:`~viz.gates_trace.GateHistory` over its training steps, :func:`build_gate_comparison` puts
several runs (AutoAttention's STE gates next to L0 gates at the same settings) on shared axes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.gates_trace import GateHistory, snapshot_position
from viz.grid import GRID_BG, KEPT_COLOUR, accuracy_range, legend_below
from viz.search import METRIC_COLOUR, PRUNED_COLOUR, SEARCH_LINE_COLOURS

__all__ = ["build_gate_comparison", "build_gate_curves"]

OPEN_COLOUR = KEPT_COLOUR  # an open gate keeps its head: the colour of kept heads everywhere
EXPECTED_COLOUR = "#cc79a7"  # Okabe-Ito reddish purple: the L0 expected open count
CURVE_COLOURS = {"task loss": "#e69f00", "penalty": "#56b4e9"}


def _title(main: str, summary: str) -> dict[str, Any]:
    return {"text": f"{main}<br><sup>{summary}</sup>", "x": 0.0}


def _line(x: np.ndarray, y: np.ndarray, name: str, colour: str, **extra: Any) -> go.Scatter:
    values = [None if not np.isfinite(v) else float(v) for v in y]
    return go.Scatter(
        x=[int(s) for s in x],
        y=values,
        mode="lines+markers",
        name=name,
        line={"color": colour, **extra.pop("line", {})},
        marker={"size": 5},
        hovertemplate=f"step %{{x}}<br>{name}: %{{y:.4g}}<extra></extra>",
        **extra,
    )


def _step_marker(fig: go.Figure, step: int) -> None:
    """One vertical line through every panel (their x axes are shared)."""
    fig.add_shape(
        type="line",
        x0=step,
        x1=step,
        y0=0,
        y1=1,
        yref="paper",
        line={"color": PRUNED_COLOUR, "width": 2},
        opacity=0.7,
        name="step marker",
    )


def build_gate_curves(history: GateHistory, index: int | None = None) -> go.Figure:
    """Open gates, task loss, penalty and validation metric over the training steps.

    For L0 gates the top panel adds the expected open count (sum of P(gate ≠ 0)), what training
    sees, next to the deterministic count used at test time: the gap is the train / test
    discrepancy of stochastic gates. With a fixed sparsity the final number of kept heads is a
    dashed line.

    Args:
        history: the parsed gate snapshots.
        index: snapshot to mark with a vertical line (0-based); None = no marker.

    Returns:
        A figure with the traces "open gates" (+ "expected open gates" for L0), "task loss",
        "penalty" and the validation metric (named after it), all with ``x`` = training steps.
        The marker is the shape named "step marker".

    Raises:
        ValueError: for an index the history does not have.
    """
    position = None if index is None else snapshot_position(history, index)
    metric = history.val_metric_name
    fig = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=["Open gates", "Task loss", "Penalty", f"Validation {metric}"],
    )
    steps = history.steps
    fig.add_trace(_line(steps, history.open_gates.astype(float), "open gates", OPEN_COLOUR), 1, 1)
    if history.expected_open is not None:
        expected = _line(
            steps,
            history.expected_open,
            "expected open gates",
            EXPECTED_COLOUR,
            line={"dash": "dot"},
        )
        fig.add_trace(expected, row=1, col=1)
    singles = [
        (history.task_loss, "task loss", CURVE_COLOURS["task loss"]),
        (history.penalty, "penalty", CURVE_COLOURS["penalty"]),
        (history.val_metric, metric, METRIC_COLOUR),
    ]
    for row, (values, name, colour) in enumerate(singles, start=2):
        # Their panel titles name them; the legend explains the top panel's two lines.
        fig.add_trace(_line(steps, values, name, colour, showlegend=False), row=row, col=1)
    if history.final_mask is not None and history.fixed_sparsity is not None:
        kept = int(history.final_mask.sum())
        fig.add_hline(
            y=kept,
            line={"color": "#555555", "width": 1.2, "dash": "dash"},
            name="final kept heads",
            annotation_text=f"fixed sparsity keeps {kept}",
            annotation_position="bottom right",
            row=1,
            col=1,
        )
    if position is not None:
        _step_marker(fig, int(steps[position]))
    last = history.n_snapshots - 1
    summary = (
        f"{int(history.open_gates[last])} of {history.n_gates} gates open at step {steps[last]}"
    )
    if history.expected_open is not None and np.isfinite(history.expected_open[last]):
        summary += f", {history.expected_open[last]:.1f} expected in training"
    fig.update_layout(
        title=_title(f"{history.method_label}: training of the gates", summary),
        height=800,
        margin={"t": 100, "b": 110, "l": 70, "r": 20},
        plot_bgcolor=GRID_BG,
        legend=legend_below(800 - 100 - 110, offset_px=60),
    )
    fig.update_xaxes(gridcolor="#eeeeee")
    fig.update_xaxes(title="training step", row=4, col=1)
    fig.update_yaxes(gridcolor="#eeeeee")
    fig.update_yaxes(title="gates", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title="loss", row=2, col=1)
    fig.update_yaxes(title="penalty", row=3, col=1)
    fig.update_yaxes(title=metric, row=4, col=1, range=accuracy_range(history.val_metric.tolist()))
    return fig


def build_gate_comparison(histories: Mapping[str, GateHistory]) -> go.Figure:
    """Open gates and validation metric over training steps for several runs, on shared axes.

    Args:
        histories: parsed gate snapshots by run name (e.g. ``{"STE": ste, "L0": l0}``), in the
            order to draw them.

    Returns:
        A figure with two panels and one trace per run in each (the same colour per run):
        "Open gates" (top) and the validation metric (bottom); L0 runs are dashed.

    Raises:
        ValueError: when no run is given.
    """
    if not histories:
        raise ValueError("Pass at least one gate history to compare, e.g. {'STE': ste, 'L0': l0}.")
    metrics = {h.val_metric_name for h in histories.values()}
    metric = metrics.pop() if len(metrics) == 1 else "metric"
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.1,
        subplot_titles=["Open gates (test-time gate)", f"Validation {metric}"],
    )
    for number, (name, history) in enumerate(histories.items()):
        colour = SEARCH_LINE_COLOURS[number % len(SEARCH_LINE_COLOURS)]
        dash = "dash" if history.gate_kind == "l0" else "solid"
        for row, values in ((1, history.open_gates.astype(float)), (2, history.val_metric)):
            trace = _line(history.steps, values, name, colour, line={"dash": dash})
            trace.update(legendgroup=name, showlegend=row == 1)
            fig.add_trace(trace, row=row, col=1)
    ends = " · ".join(
        f"{name}: {int(h.open_gates[-1])} of {h.n_gates} open" for name, h in histories.items()
    )
    fig.update_layout(
        title=_title("Gate runs compared", ends),
        height=600,
        margin={"t": 100, "b": 110, "l": 70, "r": 20},
        plot_bgcolor=GRID_BG,
        legend=legend_below(600 - 100 - 110, offset_px=60),
    )
    fig.update_xaxes(gridcolor="#eeeeee")
    fig.update_xaxes(title="training step", row=2, col=1)
    fig.update_yaxes(gridcolor="#eeeeee")
    fig.update_yaxes(title="open gates", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title=metric, row=2, col=1)
    return fig
