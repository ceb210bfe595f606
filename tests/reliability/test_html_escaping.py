"""Every HTML the dashboard shows escapes user text: sentences, run and model names, labels, tokens.

Each builder gets markup as every piece of user text and must hand it back as text: escaped in
HTML, JSON-escaped inside <script> (no literal ``</script``), escaped in plotly's titles, ticks and
legends (plotly renders ``<a href>`` there). A scan of pages/ keeps the list of HTML sinks
(``st.html``, ``components.html``, ``unsafe_allow_html=True``) to the reviewed ones below.
"""

from __future__ import annotations

import ast
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest

from viz.bertviz_html import build_head_view_html, build_model_view_html
from viz.explain import (
    build_faithfulness_chart,
    build_top_words_chart,
    build_word_model_heatmap,
    explanation_report_html,
    highlighted_text_html,
    side_by_side_html,
)

ROOT = Path(__file__).resolve().parents[2]
IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "</script><script>alert(1)</script>"
LINK = "<a href='https://example.com/'>click</a>"
PAYLOADS = (IMG, SCRIPT, LINK)
RAW_MARKUP = re.compile(r"<\s*(img|a|script)\b|</\s*script", re.I)
# Keys whose strings plotly uses as identifiers and never draws.
IDENTIFIERS = frozenset({"legendgroup", "uid", "xaxis", "yaxis", "coloraxis"})
SCRIPTS = {"d3": "/* D3 */", "jquery": "/* JQUERY */", "requirejs": "/* REQUIREJS */"}


@dataclass(frozen=True)
class Attr:
    """The fields of pruning.explain.Attribution that the builders read."""

    method: str
    model_label: str
    model_key: str
    text: str
    words: tuple[str, ...]
    values: tuple[float, ...]
    target: int = 1
    label_names: tuple[str, ...] = (IMG, SCRIPT)
    probabilities: tuple[float, ...] = (0.3, 0.7)


def hostile_attributions() -> list[Attr]:
    """Two models whose sentence, words, labels, model names and methods are all markup."""
    text = f"a {IMG} film {SCRIPT} and {LINK}"
    words = tuple(text.split(" "))
    values = tuple(float(v) for v in np.linspace(-1.0, 1.0, len(words)))
    return [
        Attr(SCRIPT, IMG, "k1", text, words, values),
        Attr(LINK, SCRIPT, "k2", text, words, tuple(-v for v in values)),
    ]


def assert_escaped_html(fragment: str) -> None:
    """No payload survives as markup, and the markup is shown (escaped), not dropped."""
    for payload in PAYLOADS:
        assert payload not in fragment
    assert not RAW_MARKUP.search(fragment), RAW_MARKUP.search(fragment)
    # The class names are whole payloads (the sentence's words are wrapped one by one).
    assert html.escape(IMG, quote=True) in fragment
    assert html.escape(SCRIPT, quote=True) in fragment


def without_scripts(document: str) -> str:
    return re.sub(r"<script[^>]*>.*?</script>", "", document, flags=re.DOTALL | re.I)


def script_bodies(document: str) -> list[str]:
    return re.findall(r"<script[^>]*>(.*?)</script>", document, flags=re.DOTALL | re.I)


def figure_texts(figure: go.Figure) -> Iterator[str]:
    """Every string plotly may draw (titles, annotations, ticks, trace names, hover labels)."""

    def walk(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for key, item in value.items():
                if key not in IDENTIFIERS:
                    yield from walk(item)
        elif isinstance(value, list | tuple | np.ndarray):
            for item in value:
                yield from walk(item)

    yield from walk(figure.to_plotly_json())


def test_highlighted_text_escapes_sentence_words_labels_and_model_names() -> None:
    first = hostile_attributions()[0]
    assert_escaped_html(highlighted_text_html(first))


def test_side_by_side_escapes_every_column_and_the_legend() -> None:
    assert_escaped_html(side_by_side_html(hostile_attributions()))


@pytest.mark.parametrize("build", [build_top_words_chart, build_word_model_heatmap])
def test_explanation_figures_show_user_markup_as_text(build: Any) -> None:
    texts = list(figure_texts(build(hostile_attributions())))
    assert not [t for t in texts if RAW_MARKUP.search(t)]
    assert any("&lt;img src=x onerror=alert(1)&gt;" in t for t in texts)


def test_faithfulness_chart_escapes_model_and_method_names() -> None:
    rows = [
        {"model": IMG, "method": LINK, "comprehensiveness": 0.4, "sufficiency": 0.1},
        {"model": SCRIPT, "method": "lime", "comprehensiveness": 0.3, "sufficiency": 0.2},
    ]
    texts = list(figure_texts(build_faithfulness_chart(rows)))
    assert not [t for t in texts if RAW_MARKUP.search(t)]
    assert any(html.escape(IMG) in t for t in texts)


def test_report_escapes_user_text_in_markup_tables_and_embedded_figures() -> None:
    attributions = hostile_attributions()
    faithfulness = [{"model": IMG, "method": SCRIPT, "comprehensiveness": 0.4, "sufficiency": 0.1}]
    document = explanation_report_html(
        attributions, [{"model A": SCRIPT, "model B": LINK}], faithfulness, title=SCRIPT + IMG
    )
    assert_escaped_html(without_scripts(document))
    assert f"<title>{html.escape(SCRIPT + IMG)}</title>" in document
    # The figures' JSON sits in <script> elements: user text there cannot end the element.
    for body in script_bodies(document):
        assert "alert(1)</script" not in body and "onerror=alert(1)>" not in body
    assert document.lower().count("<script") == document.lower().count("</script")


@pytest.mark.parametrize("build", [build_head_view_html, build_model_view_html])
def test_bertviz_views_keep_tokens_and_titles_inside_their_elements(build: Any) -> None:
    tokens = ["[CLS]", IMG, SCRIPT, LINK, "[SEP]"]
    generator = np.random.default_rng(0)
    attentions = generator.random((2, 2, len(tokens), len(tokens)))
    attentions /= attentions.sum(axis=-1, keepdims=True)
    present = np.array([[True, True], [True, False]])
    document = build(tokens, attentions, present, SCRIPTS, title=SCRIPT + IMG)
    assert f"<title>{html.escape(SCRIPT + IMG)}</title>" in document
    assert f'<p class="hs-title">{html.escape(SCRIPT + IMG)}</p>' in document
    for payload in PAYLOADS:
        assert payload not in document
    # The tokens reach bertviz's params as JSON with <, > and & escaped: no '</script' in it.
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in document
    for body in script_bodies(document):
        assert "</script" not in body.lower() and "<img" not in body.lower()
    assert not RAW_MARKUP.search(without_scripts(document))
    assert document.lower().count("<script") == document.lower().count("</script")


# ---------------------------------------------------------------------------------------------
# Where HTML reaches the browser: every sink in pages/ and app.py is one of the reviewed ones.

# (file, sink, first argument): each takes its HTML from a builder tested above.
REVIEWED_SINKS = {
    ("pages/explanations.py", "html", "side_by_side_html(group)"),
    # `page` is build_head_view_html(...) or build_model_view_html(...), a line above the call.
    ("pages/attention.py", "html", "page"),
    (
        "pages/head_editor.py",
        "html",
        "side_by_side_html([Attribution.from_dict(item) for item in result])",
    ),
    # A gallery tile's `html` is only ever side_by_side_html(...) (checked below).
    ("pages/overview.py", "html", "tile['html']"),
}


def html_sinks(source: str) -> set[tuple[str, str]]:
    """``(sink, first argument)`` of every ``<x>.html(...)`` call and ``unsafe_allow_html=True``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        first = ast.unparse(node.args[0]) if node.args else ""
        if isinstance(node.func, ast.Attribute) and node.func.attr == "html":
            found.add(("html", first))
        for keyword in node.keywords:
            if keyword.arg == "unsafe_allow_html" and not (
                isinstance(keyword.value, ast.Constant) and keyword.value.value is False
            ):
                found.add(("unsafe_allow_html", first))
    return found


def test_the_sink_scanner_finds_each_kind_of_sink() -> None:
    source = (
        "import streamlit as st\n"
        "st.markdown(f'<b>{name}</b>', unsafe_allow_html=True)\n"
        "tabs[0].html(text)\n"
        "components.html(page, height=3)\n"
        "st.markdown('plain', unsafe_allow_html=False)\n"
        "fig.to_html(full_html=False)\n"
    )
    assert html_sinks(source) == {
        ("unsafe_allow_html", "f'<b>{name}</b>'"),
        ("html", "text"),
        ("html", "page"),
    }


def test_pages_send_html_only_through_reviewed_escaping_builders() -> None:
    files = [ROOT / "app.py", *sorted((ROOT / "pages").rglob("*.py"))]  # pages/support too
    found = {
        (path.relative_to(ROOT).as_posix(), sink, argument)
        for path in files
        for sink, argument in html_sinks(path.read_text(encoding="utf-8"))
    }
    unreviewed = found - REVIEWED_SINKS
    assert not unreviewed, (
        f"New HTML sinks {sorted(unreviewed)}: build their HTML in viz/ with every piece of user "
        "text escaped (html.escape), test the builder in this file, then list the sink in "
        "REVIEWED_SINKS."
    )
    assert found == REVIEWED_SINKS, f"reviewed sinks gone; update REVIEWED_SINKS: {found}"
    attention = (ROOT / "pages/attention.py").read_text(encoding="utf-8")
    assert "build = build_head_view_html if" in attention and "page = build(" in attention
    overview = (ROOT / "pages/overview.py").read_text(encoding="utf-8")
    assert re.findall(r"\bhtml=[^,)]*", overview) == ["html=side_by_side_html(chosen"]


def test_run_names_in_mask_and_metric_figures_show_markup_as_text() -> None:
    """Run names reach plotly titles, subplot titles, ticks and hovers: never a live link."""
    from viz.compare import build_mask_comparison
    from viz.heads import build_mask_heatmap
    from viz.metrics import build_metric_deltas

    masks = [np.ones((2, 2), dtype=bool), np.eye(2, dtype=bool)]
    names = [LINK, "other"]
    rows = [{"accuracy": 0.8}, {"accuracy": 0.7}]
    figures = [
        build_mask_heatmap(masks[0], title=LINK),
        build_mask_comparison(masks, names),
        build_metric_deltas(rows, names, metrics=("accuracy",)),
    ]
    for figure in figures:
        texts = "".join(figure_texts(figure))
        assert "<a " not in texts
        assert html.escape(LINK, quote=False) in texts
