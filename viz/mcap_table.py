"""The Table I view of MCAP's paper: pruned-before-fine-tuning runs against the unpruned model.

Rajapaksha and Crespi (*Explainable Attention Pruning*, IEEE TAI 2024, Table I) compare MCAP with
head-level (random, attention entropy, attention to [SEP]) and weight-level (IMP, L1, random)
baselines at the same share removed. :func:`table1_rows` turns RunRecord-like objects into rows,
:func:`table1_frame` lays them out as the paper does, :func:`build_table1_chart` draws them.
Re-exported by :mod:`viz.mcap`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.grid import GRID_BG
from viz.search import METRIC_COLOUR, _message_figure, _title

__all__ = [
    "TABLE1_COLUMNS",
    "UNPRUNED",
    "Table1Row",
    "build_table1_chart",
    "finite_or_none",
    "table1_frame",
    "table1_rows",
]

UNPRUNED = "Unpruned (fine-tuned)"
GRANULARITY_COLOURS = {"head": METRIC_COLOUR, "weight": "#e69f00"}


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, not a number, NaN or infinite)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Table1Row:
    """One row of the Table I comparison (the unpruned row has ``run_key`` None).

    ``heads_removed`` and ``weights_removed`` are shares in [0, 1]; ``flops`` per example;
    latencies in milliseconds (median and p10 / p90), None when not measured.
    """

    method: str
    granularity: str
    heads_removed: float
    weights_removed: float
    mcc: float
    accuracy: float
    loss: float
    flops: int
    params: int
    latency_ms: float | None
    latency_p10_ms: float | None
    latency_p90_ms: float | None
    run_key: str | None


Latency = tuple[float | None, float | None, float | None]


def _latency(source: Any, median_keys: Sequence[str]) -> Latency:
    """``(median, p10, p90)`` from a float or a mapping (LatencyResult.to_dict() or similar)."""
    if source is None:
        return None, None, None
    if not isinstance(source, Mapping):
        return finite_or_none(source), None, None
    median = next((finite_or_none(source[k]) for k in median_keys if k in source), None)
    return median, finite_or_none(source.get("p10_ms")), finite_or_none(source.get("p90_ms"))


def _quality(metrics: Mapping[str, Any]) -> tuple[float, float, float]:
    """``(mcc, accuracy, loss)``, NaN where missing."""

    def value(name: str) -> float:
        number = finite_or_none(metrics.get(name))
        return float("nan") if number is None else number

    return value("mcc"), value("accuracy"), value("loss")


def table1_rows(
    records: Iterable[Any],
    dense_metrics: Mapping[str, Any],
    dense_cost: Mapping[str, Any],
    dense_latency: Mapping[str, Any] | float | None = None,
    *,
    latencies: Mapping[str, Any] | None = None,
) -> list[Table1Row]:
    """Table I rows: the unpruned classifier first, then one row per run record.

    Args:
        records: RunRecord-like objects (``key``, ``method``, ``config``, ``metrics``, ``info``).
            Quality comes from ``metrics["recovered"]`` when present, else ``metrics["pruned"]``
            (for runs pruned before fine-tuning: the pruned-then-fine-tuned model). The method
            label is ``info["name"]`` (else ``info["method_title"]``, else the method).
        dense_metrics: the unpruned fine-tuned classifier's metrics (mcc, accuracy, loss).
        dense_cost: ``params_dense`` and ``flops_dense`` (a run's ``metrics["cost"]``).
        dense_latency: the unpruned latency: ms, or a mapping with ``median_ms`` (or
            ``dense_ms``) and optionally ``p10_ms`` / ``p90_ms``.
        latencies: measured latencies by run key (mappings as above, ``median_ms`` or
            ``pruned_ms``); they win over a run's stored ``metrics["latency"]``.

    ``weights_removed`` is the share of ALL parameters removed, one denominator for every row:
    ``1 - params_pruned / params_dense`` for head-level runs and ``1 - params_nonzero /
    params_dense`` for weight-level runs (whose target share counts only the encoder layers'
    linear weights, so 20% of those is a smaller share of all parameters); ``params`` counts the
    remaining (non-zero) parameters.
    """
    mcc, accuracy, loss = _quality(dense_metrics)
    params_dense = int(dense_cost.get("params_dense", 0) or 0)
    latency = _latency(dense_latency, ("median_ms", "dense_ms"))
    rows = [
        Table1Row(
            UNPRUNED,
            "none",
            0.0,
            0.0,
            mcc,
            accuracy,
            loss,
            int(dense_cost.get("flops_dense", 0) or 0),
            params_dense,
            *latency,
            None,
        )
    ]
    for record in records:
        metrics, info = record.metrics, record.info
        cost = metrics.get("cost", {})
        granularity = str(info.get("granularity", "head"))
        dense = int(cost.get("params_dense", params_dense) or 0)
        params = int(cost.get("params_pruned", dense) or 0)
        if granularity == "weight":
            params = int(cost.get("params_nonzero", params) or 0)
        removed = 1 - params / dense if dense else 0.0
        quality = metrics.get("recovered") or metrics.get("pruned", {})
        measured = (latencies or {}).get(record.key)
        run_latency = _latency(
            measured if measured is not None else metrics.get("latency"),
            ("median_ms", "pruned_ms"),
        )
        rows.append(
            Table1Row(
                str(info.get("name") or info.get("method_title") or record.method),
                granularity,
                float(cost.get("head_sparsity", 0.0) or 0.0),
                float(removed),
                *_quality(quality),
                int(cost.get("flops_pruned", 0) or 0),
                params,
                *run_latency,
                str(record.key),
            )
        )
    return rows


def _latency_text(row: Table1Row) -> str:
    if row.latency_ms is None:
        return "—"
    text = f"{row.latency_ms:.1f}"
    if row.latency_p10_ms is not None and row.latency_p90_ms is not None:
        text += f" ({row.latency_p10_ms:.1f}–{row.latency_p90_ms:.1f})"
    return text


TABLE1_COLUMNS = (
    "Method",
    "Heads removed %",
    "Weights removed %",
    "MCC",
    "Accuracy %",
    "Loss",
    "Latency ms (p10–p90)",
    "GFLOPs / example",
    "Params M",
)


def table1_frame(rows: Sequence[Table1Row]) -> pd.DataFrame:
    """The rows in the layout of the paper's Table I (shares and accuracy in percent)."""
    records = [
        (
            row.method,
            round(100 * row.heads_removed, 1),
            round(100 * row.weights_removed, 1),
            round(row.mcc, 4),
            round(100 * row.accuracy, 2),
            round(row.loss, 4),
            _latency_text(row),
            round(row.flops / 1e9, 2),
            round(row.params / 1e6, 2),
        )
        for row in rows
    ]
    return pd.DataFrame(records, columns=list(TABLE1_COLUMNS))


def build_table1_chart(rows: Sequence[Table1Row]) -> go.Figure:
    """MCC per method as bars (the unpruned level dashed); latency beside it when measured.

    Returns:
        Bar traces "MCC" (one bar per run, coloured by granularity: head or weight level) and,
        when any row has a latency, "latency" with p10–p90 error bars in a second panel; the
        unpruned levels are dashed horizontal lines. "Nothing to show" without run rows.
    """
    runs = [row for row in rows if row.run_key is not None]
    dense = next((row for row in rows if row.run_key is None), None)
    title = "Table I: pruned models against the unpruned classifier"
    if not runs:
        return _message_figure(title, "Nothing to show: no pruned run matches.")
    timed = any(row.latency_ms is not None for row in rows)
    fig = make_subplots(
        rows=1,
        cols=2 if timed else 1,
        horizontal_spacing=0.12,
        subplot_titles=["MCC", "Latency (median, p10–p90)"] if timed else ["MCC"],
    )
    names = [row.method for row in runs]
    colours = [GRANULARITY_COLOURS.get(row.granularity, "#999999") for row in runs]
    fig.add_trace(
        go.Bar(
            x=names,
            y=[None if math.isnan(row.mcc) else row.mcc for row in runs],
            name="MCC",
            marker={"color": colours},
            text=[f"{row.mcc:.3f}" for row in runs],
            textposition="outside",
            customdata=[row.granularity for row in runs],
            hovertemplate="%{x}<br>MCC %{y:.4f} (%{customdata} level)<extra></extra>",
        ),
        row=1,
        col=1,
    )
    dashed = {"color": "#555555", "width": 1.5, "dash": "dash"}
    if dense is not None and not math.isnan(dense.mcc):
        fig.add_hline(
            y=dense.mcc,
            line=dashed,
            annotation_text=f"unpruned {dense.mcc:.3f}",
            annotation_position="top left",
            row=1,
            col=1,
        )
    if timed:
        lows = [
            0.0
            if r.latency_p10_ms is None or r.latency_ms is None
            else r.latency_ms - r.latency_p10_ms
            for r in runs
        ]
        highs = [
            0.0
            if r.latency_p90_ms is None or r.latency_ms is None
            else r.latency_p90_ms - r.latency_ms
            for r in runs
        ]
        fig.add_trace(
            go.Bar(
                x=names,
                y=[row.latency_ms for row in runs],
                name="latency",
                marker={"color": colours},
                error_y={"type": "data", "symmetric": False, "array": highs, "arrayminus": lows},
                hovertemplate="%{x}<br>%{y:.2f} ms<extra></extra>",
            ),
            row=1,
            col=2,
        )
        if dense is not None and dense.latency_ms is not None:
            fig.add_hline(
                y=dense.latency_ms,
                line=dashed,
                annotation_text=f"unpruned {dense.latency_ms:.1f} ms",
                annotation_position="top left",
                row=1,
                col=2,
            )
        fig.update_yaxes(title="ms per batch", rangemode="tozero", row=1, col=2)
    fig.update_layout(
        title=_title(title, "blue: head-level methods · orange: weight-level methods"),
        height=460,
        showlegend=False,
        margin={"t": 100, "b": 120, "l": 70, "r": 20},
        plot_bgcolor=GRID_BG,
        bargap=0.3,
    )
    fig.update_xaxes(title="method", tickangle=-30)
    fig.update_yaxes(gridcolor="#eeeeee")
    fig.update_yaxes(title="MCC", row=1, col=1)
    return fig
