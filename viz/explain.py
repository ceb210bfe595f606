"""Figures and tables of word attributions (LIME / SHAP) compared across models, and a report.

The inputs are :class:`pruning.explain.Attribution` objects (or any object with their fields, see
:class:`viz.explain_html.AttributionLike`): one signed value per word toward the ``target`` class,
positive = supports it. Signed colours: blue supports, vermillion opposes; one colour range for
all models shown. The highlighted-text HTML lives in :mod:`viz.explain_html` and is re-exported.
User text (words, model labels, class names, methods, titles) is HTML-escaped wherever it becomes
markup: in the HTML, and in plotly's titles, ticks and legends, whose text renders tags such as
``<a href>``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.explain_html import (
    AGAINST_COLOUR,
    FONT,
    SUPPORT_COLOUR,
    AttributionLike,
    class_label,
    class_probability,
    column_labels,
    esc,
    highlighted_text_html,
    max_abs_value,
    predicted_class,
    side_by_side_html,
    word_labels,
)

if TYPE_CHECKING:
    from pruning.attribution import Attribution

__all__ = [
    "AttributionLike",
    "agreement_frame",
    "build_faithfulness_chart",
    "build_top_words_chart",
    "build_word_model_heatmap",
    "column_labels",
    "explanation_report_html",
    "highlighted_text_html",
    "side_by_side_html",
    "table23_frame",
]

DIVERGING_COLOURSCALE = [[0.0, AGAINST_COLOUR], [0.5, "#f7f7f7"], [1.0, SUPPORT_COLOUR]]
METHOD_COLOURS = {"lime": "#009e73", "shap": "#cc79a7"}
OTHER_COLOURS = ("#e69f00", "#56b4e9", "#7f7f7f", "#000000")
_ROW_PX = 22


def _same_words(attributions: Sequence[AttributionLike]) -> list[str]:
    words = list(attributions[0].words)
    for attribution in attributions[1:]:
        if list(attribution.words) != words:
            raise ValueError(
                "These attributions explain different texts; pass the attributions of one "
                "sentence (group them by their text first)."
            )
    return words


def _empty_figure(title: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(
        text="nothing to show", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper"
    )
    fig.update_layout(title={"text": title, "x": 0.0}, height=220)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _prediction(attribution: AttributionLike) -> str:
    predicted = predicted_class(attribution)
    probability = class_probability(attribution, predicted)
    return f"predicts {class_label(attribution, predicted)} ({probability:.1%})"


def build_top_words_chart(attributions: Sequence[AttributionLike], *, k: int = 10) -> go.Figure:
    """The ``k`` words with the largest ``|value|`` per model: one bar subplot per model.

    Bars are signed (blue supports the target, vermillion opposes it), the largest at the top;
    every subplot shares one x range so bar lengths compare across models.
    """
    title = f"Top {k} words per model (largest |contribution|)"
    shown = [a for a in attributions if len(a.words)]
    if not shown or k < 1:
        return _empty_figure(title)
    names = column_labels(shown)
    fig = make_subplots(
        rows=len(shown),
        cols=1,
        subplot_titles=[esc(f"{n}: {_prediction(a)}") for n, a in zip(names, shown, strict=True)],
        vertical_spacing=min(0.3 / len(shown), 0.12),
    )
    bars = []
    for row, (name, attribution) in enumerate(zip(names, shown, strict=True), start=1):
        labels = word_labels(attribution.words)
        values = [float(v) for v in attribution.values]
        order = sorted(range(len(values)), key=lambda i: -abs(values[i]))[:k]
        bars.append(len(order))
        fig.add_trace(
            go.Bar(
                x=[values[i] for i in order],
                y=[labels[i] for i in order],
                orientation="h",
                marker_color=[SUPPORT_COLOUR if values[i] >= 0 else AGAINST_COLOUR for i in order],
                text=[f"{values[i]:+.3g}" for i in order],
                textposition="auto",
                name=esc(name),
                showlegend=False,
                hovertemplate=f"{esc(name)}<br>%{{y}}: %{{x:+.4f}}<extra></extra>",
            ),
            row=row,
            col=1,
        )
        fig.update_yaxes(autorange="reversed", type="category", row=row, col=1)
    target = class_label(shown[0], shown[0].target)
    for colour, what in ((SUPPORT_COLOUR, "supports"), (AGAINST_COLOUR, "speaks against")):
        fig.add_trace(
            go.Bar(x=[None], y=[None], marker_color=colour, name=esc(f"{what} {target}")),
            row=1,
            col=1,
        )
    limit = 1.15 * (max_abs_value(shown) or 1.0)
    fig.update_xaxes(range=[-limit, limit], zeroline=True, zerolinecolor="#888")
    fig.update_xaxes(title_text=f"contribution toward {esc(target)}", row=len(shown), col=1)
    fig.update_layout(
        title={"text": title, "x": 0.0},
        height=sum(bars) * _ROW_PX + len(shown) * 70 + 120,
        margin={"t": 90, "b": 60, "l": 10, "r": 20},
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1.0, "xanchor": "right"},
        plot_bgcolor="#ffffff",
        bargap=0.25,
    )
    return fig


def build_word_model_heatmap(attributions: Sequence[AttributionLike]) -> go.Figure:
    """Words (sentence order, top down) x models: the signed contribution on a diverging scale."""
    title = "Contribution of every word, per model"
    if not attributions or not len(attributions[0].words):
        return _empty_figure(title)
    words = _same_words(attributions)
    names = column_labels(attributions)
    rows = word_labels(words)
    z = [[float(a.values[i]) for a in attributions] for i in range(len(words))]
    limit = max_abs_value(attributions) or 1.0
    target = class_label(attributions[0], attributions[0].target)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[esc(name) for name in names],
            y=rows,
            zmid=0.0,
            zmin=-limit,
            zmax=limit,
            colorscale=DIVERGING_COLOURSCALE,
            colorbar={"title": {"text": f"toward<br>{esc(target)}"}, "thickness": 14},
            texttemplate="%{z:+.2g}" if len(words) * len(names) <= 150 else None,
            hovertemplate="%{y} · %{x}<br>contribution: %{z:+.4f}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(side="top", type="category", tickangle=0 if len(names) <= 3 else -25)
    fig.update_layout(
        title={"text": title, "x": 0.0},
        height=len(words) * _ROW_PX + 190,
        margin={"t": 120, "b": 20, "l": 10, "r": 20},
    )
    return fig


def table23_frame(attributions: Sequence[AttributionLike]) -> pd.DataFrame:
    """The MCAP paper's Table II/III: one row per word, one column per model, then P(target).

    Returns a frame with a ``word`` column and one float column per model (the signed
    contribution); its last row is ``P(<target label>)`` with each model's probability of it.
    """
    if not attributions:
        return pd.DataFrame({"word": []})
    words = _same_words(attributions)
    target = attributions[0].target
    columns: dict[str, list[Any]] = {"word": [*words, f"P({class_label(attributions[0], target)})"]}
    for name, attribution in zip(column_labels(attributions), attributions, strict=True):
        probability = class_probability(attribution, target)
        columns[name] = [*(float(v) for v in attribution.values), probability]
    return pd.DataFrame(columns)


def _rows_value(row: Mapping[str, Any], key: str) -> float:
    """``row[key]``, else ``row[key + "_mean"]`` (dataset averages), as a float; NaN if absent."""
    value = row.get(key, row.get(f"{key}_mean"))
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def build_faithfulness_chart(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Comprehensiveness and sufficiency per model and method, against a random word order.

    ``rows``: dicts with ``model``, ``method``, ``comprehensiveness``, ``sufficiency``,
    ``random_comprehensiveness``, ``random_sufficiency`` (or each with a ``_mean`` suffix, as
    :func:`pruning.faithfulness.dataset_faithfulness` returns them) and optionally ``*_std``
    (error bars). One bar trace per method
    and measure; the random baseline is one marker trace per measure.
    """
    title = "Faithfulness of the explanations"
    if not rows:
        return _empty_figure(title)
    groups = [
        f"{esc(row.get('model', '?'))}<br>{esc(str(row.get('method', '?')).upper())}"
        for row in rows
    ]
    measures = (
        ("comprehensiveness", "Comprehensiveness: higher = more faithful"),
        ("sufficiency", "Sufficiency: lower = more faithful"),
    )
    fig = make_subplots(rows=1, cols=2, subplot_titles=[text for _, text in measures])
    methods = list(dict.fromkeys(str(row.get("method", "?")) for row in rows))
    spare = itertools.cycle(OTHER_COLOURS)
    colours = {m: METHOD_COLOURS.get(m.lower()) or next(spare) for m in methods}
    for col, (key, label) in enumerate(measures, start=1):
        for method in methods:
            picked = [i for i, row in enumerate(rows) if str(row.get("method", "?")) == method]
            stds = [_rows_value(rows[i], f"{key}_std") for i in picked]
            fig.add_trace(
                go.Bar(
                    x=[groups[i] for i in picked],
                    y=[_rows_value(rows[i], key) for i in picked],
                    error_y=None
                    if all(math.isnan(s) for s in stds)
                    else {"type": "data", "array": [0.0 if math.isnan(s) else s for s in stds]},
                    name=esc(method.upper()),
                    legendgroup=method,
                    showlegend=col == 1,
                    marker_color=colours[method],
                    hovertemplate=f"%{{x}}<br>{key}: %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.add_trace(
            go.Scatter(
                x=groups,
                y=[_rows_value(row, f"random_{key}") for row in rows],
                mode="markers",
                marker={"symbol": "line-ew-open", "size": 34, "line": {"width": 3}},
                marker_color="#222222",
                name="random word order (baseline)",
                legendgroup="random",
                showlegend=col == 1,
                hovertemplate=f"%{{x}}<br>random order {key}: %{{y:.3f}}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(title_text=label.replace(": ", " (") + ")", row=1, col=col)
    fig.update_layout(
        title={"text": title, "x": 0.0},
        barmode="overlay",
        height=460 if len(groups) <= 6 else 520,
        margin={"t": 90, "b": 40, "l": 60, "r": 20},
        legend={"orientation": "h", "y": -0.25, "x": 0.0},
        plot_bgcolor="#ffffff",
    )
    fig.update_xaxes(type="category", tickangle=0 if len(groups) <= 4 else -30)
    fig.update_yaxes(gridcolor="#eeeeee", rangemode="tozero")
    return fig


def agreement_frame(attributions: Sequence[Attribution], *, k: int = 5) -> pd.DataFrame:
    """Every pair of models explained by one method: :func:`pruning.explain.agreement` per pair.

    Returns one row per (method, model A, model B): the share of shared words among each one's
    ``k`` most supportive words, the Spearman rank correlation of the values (NaN when one side
    is constant), both models' probabilities of A's target and whether they predict alike.
    """
    from pruning.attribution import agreement

    rows = []
    methods = list(dict.fromkeys(a.method for a in attributions))
    for method in methods:
        same = [a for a in attributions if a.method == method]
        names = dict(zip(map(id, same), column_labels(same), strict=True))
        for a, b in itertools.combinations(same, 2):
            result = agreement(a, b, k=k)
            rows.append(
                {
                    "method": method.upper(),
                    "model A": names[id(a)],
                    "model B": names[id(b)],
                    f"top-{k} overlap": float(result["topk_overlap"]),
                    "Spearman": float(result["spearman"]),
                    "P(target) A": float(result["prob_a"]),
                    "P(target) B": float(result["prob_b"]),
                    "same prediction": bool(result["same_prediction"]),
                }
            )
    columns = [
        "method",
        "model A",
        "model B",
        f"top-{k} overlap",
        "Spearman",
        "P(target) A",
        "P(target) B",
    ]
    return pd.DataFrame(rows, columns=[*columns, "same prediction"])


def _table_html(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> str:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if frame.empty:
        return "<p class='note'>nothing to show</p>"
    table = frame.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}", border=0)
    return f"<div style='overflow-x:auto'>{table}</div>"


def explanation_report_html(
    attributions: Sequence[AttributionLike],
    agreement_rows: pd.DataFrame | Sequence[Mapping[str, Any]],
    faithfulness_rows: Sequence[Mapping[str, Any]],
    title: str,
) -> str:
    """A standalone HTML document (plotly.js embedded once, no external URL) for download.

    One section per sentence (highlighted text, top words, word x model heatmap, Table II/III),
    then the agreement table and the faithfulness chart and table when rows are given.
    """
    figures: list[str] = []

    def figure(fig: go.Figure) -> str:
        html = fig.to_html(
            full_html=False, include_plotlyjs=not figures, config={"displaylogo": False}
        )
        figures.append(html)
        return figures[-1]

    by_text: dict[str, list[AttributionLike]] = {}
    for attribution in attributions:
        by_text.setdefault(attribution.text, []).append(attribution)
    parts = [f"<h1>{esc(title)}</h1>"]
    for number, (text, group) in enumerate(by_text.items(), start=1):
        parts += [
            f"<h2>Sentence {number}</h2><blockquote>{esc(text)}</blockquote>",
            side_by_side_html(group),
            figure(build_top_words_chart(group)),
            figure(build_word_model_heatmap(group)),
            "<h3>Contribution per word (Table II/III layout)</h3>",
            _table_html(table23_frame(group)),
        ]
    if not by_text:
        parts.append("<p class='note'>nothing to show</p>")
    parts += ["<h2>Agreement between models</h2>", _table_html(agreement_rows)]
    if faithfulness_rows:
        parts += [
            "<h2>Faithfulness</h2>",
            figure(build_faithfulness_chart(faithfulness_rows)),
            _table_html(faithfulness_rows),
        ]
    style = (
        f"body{{{FONT}max-width:1100px;margin:24px auto;padding:0 16px;color:#111}}"
        "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}blockquote{color:#333;border-left:3px solid #ccc;"
        "margin:8px 0;padding-left:10px}.note{color:#666}"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{style}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )
