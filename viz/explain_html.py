"""HTML of word attributions: the sentence with each word coloured by its contribution.

Shared by :mod:`viz.explain` (figures, tables, the downloadable report). An attribution is what
:class:`pruning.explain.Attribution` holds (any object with the same fields works): one signed
value per word toward the ``target`` class, positive = the word supports the target. Blue
supports, vermillion opposes (Okabe-Ito, colour-blind safe); the strength of a colour is
``|value| / max_abs`` with one ``max_abs`` across the models shown, so columns compare. All user
text is HTML-escaped (``html.escape(..., quote=True)``) and the HTML uses inline styles only.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "AttributionLike",
    "column_labels",
    "highlighted_text_html",
    "side_by_side_html",
    "word_labels",
]

SUPPORT_RGB = (0, 114, 178)  # Okabe-Ito blue: supports the target class
AGAINST_RGB = (213, 94, 0)  # Okabe-Ito vermillion: speaks against it
SUPPORT_COLOUR = "#0072b2"
AGAINST_COLOUR = "#d55e00"
FONT = "font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;"
_WORD_CHARS = 24


class AttributionLike(Protocol):
    """The fields of :class:`pruning.explain.Attribution` the builders read."""

    @property
    def method(self) -> str: ...
    @property
    def model_label(self) -> str: ...
    @property
    def model_key(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def words(self) -> Sequence[str]: ...
    @property
    def values(self) -> Sequence[float]: ...
    @property
    def target(self) -> int: ...
    @property
    def label_names(self) -> Sequence[str]: ...
    @property
    def probabilities(self) -> Sequence[float]: ...


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def class_label(attribution: AttributionLike, class_id: int) -> str:
    names = attribution.label_names
    return str(names[class_id]) if 0 <= class_id < len(names) else f"class {class_id}"


def predicted_class(attribution: AttributionLike) -> int:
    probs = list(attribution.probabilities)
    return max(range(len(probs)), key=probs.__getitem__) if probs else attribution.target


def class_probability(attribution: AttributionLike, class_id: int) -> float:
    probs = attribution.probabilities
    return float(probs[class_id]) if 0 <= class_id < len(probs) else math.nan


def max_abs_value(attributions: Sequence[AttributionLike]) -> float:
    values = [abs(float(v)) for a in attributions for v in a.values if math.isfinite(float(v))]
    return max(values, default=0.0)


def _short(word: str) -> str:
    return word if len(word) <= _WORD_CHARS else word[: _WORD_CHARS - 1] + "…"


def word_labels(words: Sequence[str]) -> list[str]:
    """``"word #i"`` (1-based position, escaped for plotly's text) so repeated words stay
    distinct rows and bars."""
    return [esc(f"{_short(w)} #{i + 1}") for i, w in enumerate(words)]


def column_labels(attributions: Sequence[AttributionLike]) -> list[str]:
    """One distinct column name per attribution: the model, plus the method when several."""
    several = len({a.method for a in attributions}) > 1
    labels = [f"{a.model_label} · {a.method}" if several else a.model_label for a in attributions]
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return [
        f"{label} ({a.model_key[:6]})" if counts[label] > 1 else label
        for label, a in zip(labels, attributions, strict=True)
    ]


def _word_spans(attribution: AttributionLike) -> list[tuple[int, int]] | None:
    """The words' character spans in the text when they are usable, else None."""
    spans = getattr(attribution, "spans", None)
    text = attribution.text
    try:
        pairs = [(int(s), int(e)) for s, e in spans]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if len(pairs) != len(attribution.words):
        return None
    previous = 0
    for start, end in pairs:
        if not previous <= start <= end <= len(text):
            return None
        previous = end
    return pairs


def _word_style(value: float, max_abs: float) -> str:
    strength = min(1.0, abs(value) / max_abs) if max_abs > 0 and math.isfinite(value) else 0.0
    red, green, blue = SUPPORT_RGB if value >= 0 else AGAINST_RGB
    ink = "#ffffff" if strength > 0.6 else "#111111"
    return (
        f"background-color:rgba({red},{green},{blue},{0.85 * strength:.3f});color:{ink};"
        "padding:1px 3px;border-radius:3px;"
    )


def highlighted_text_html(attribution: AttributionLike, *, max_abs: float | None = None) -> str:
    """One model's explanation: the sentence with every word coloured by its contribution.

    Args:
        attribution: an :class:`~pruning.explain.Attribution` (or an object with its fields).
        max_abs: the ``|value|`` drawn at full strength; pass one value for several models so
            their colours compare. None = this attribution's own largest ``|value|``.

    Returns:
        An HTML fragment with inline styles only; every piece of user text is escaped, and each
        word's ``title`` tooltip gives its signed value toward the target class.
    """
    scale = max_abs_value([attribution]) if max_abs is None else float(max_abs)
    target = class_label(attribution, attribution.target)
    predicted = predicted_class(attribution)
    title = (
        f"<div style='font-weight:600'>{esc(attribution.model_label)} · "
        f"{esc(attribution.method.upper())}</div><div style='color:#555;font-size:0.85em'>"
        f"predicts <b>{esc(class_label(attribution, predicted))}</b> "
        f"({class_probability(attribution, predicted):.1%}) · colours toward "
        f"<b>{esc(target)}</b></div>"
    )
    pieces = []
    for word, value in zip(attribution.words, attribution.values, strict=True):
        tip = f"{word}: {float(value):+.4f} toward {target}"
        pieces.append(
            f"<span title='{esc(tip)}' style='{_word_style(float(value), scale)}'>"
            f"{esc(word)}</span>"
        )
    spans = _word_spans(attribution)
    if spans is None:
        body = " ".join(pieces)
    else:
        text, cursor, parts = attribution.text, 0, []
        for piece, (start, end) in zip(pieces, spans, strict=True):
            parts += [esc(text[cursor:start]), piece]
            cursor = end
        body = "".join(parts) + esc(text[cursor:])
    return (
        f"<div style='{FONT}padding:6px 0'>{title}"
        f"<div style='line-height:2;margin-top:4px;white-space:pre-wrap'>{body}</div></div>"
    )


def side_by_side_html(attributions: Sequence[AttributionLike]) -> str:
    """One column of highlighted text per model on one shared colour scale, with a legend."""
    if not attributions:
        return f"<div style='{FONT}color:#555'>nothing to show</div>"
    scale = max_abs_value(attributions)
    targets = {class_label(a, a.target) for a in attributions}
    target = esc(targets.pop()) if len(targets) == 1 else "its target class"
    columns = "".join(
        f"<div style='flex:1 1 240px;min-width:200px;border:1px solid #ddd;border-radius:6px;"
        f"padding:4px 10px'>{highlighted_text_html(a, max_abs=scale)}</div>"
        for a in attributions
    )
    swatch = "display:inline-block;width:14px;height:14px;border-radius:3px;vertical-align:middle;"
    legend = (
        f"<div style='{FONT}font-size:0.85em;color:#333;margin-top:6px'>"
        f"<span style='{swatch}background:{SUPPORT_COLOUR}'></span> supports {target} &nbsp; "
        f"<span style='{swatch}background:{AGAINST_COLOUR}'></span> speaks against {target} · "
        f"stronger colour = larger |contribution|, one scale for all columns (full colour = "
        f"{scale:.3g}); hover a word for its value.</div>"
    )
    return f"<div style='display:flex;flex-wrap:wrap;gap:10px'>{columns}</div>{legend}"
