"""viz.explain: highlighted text, top words, word x model heatmap, Table II/III, faithfulness."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import pytest

from viz.explain import (
    agreement_frame,
    build_faithfulness_chart,
    build_top_words_chart,
    build_word_model_heatmap,
    column_labels,
    explanation_report_html,
    highlighted_text_html,
    side_by_side_html,
    table23_frame,
)

TEXT = "A <script>alert(1)</script> film, great great!"


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
    label_names: tuple[str, ...] = ("negative", "positive")
    probabilities: tuple[float, ...] = (0.2, 0.8)
    spans: tuple[tuple[int, int], ...] = ()


def make(label: str, scale: float = 1.0, method: str = "lime", text: str = TEXT) -> Attr:
    matches = list(re.finditer(r"\w+", text))
    values = tuple(scale * v for v in np.linspace(-0.5, 1.0, len(matches)))
    return Attr(
        method=method,
        model_label=label,
        model_key=f"key-{label}",
        text=text,
        words=tuple(m.group() for m in matches),
        values=values,
        spans=tuple((m.start(), m.end()) for m in matches),
    )


def three() -> list[Attr]:
    return [
        make("original"),
        make("run a", 0.5),
        replace(make("run b", 0.25), probabilities=(0.7, 0.3)),
    ]


def alphas(fragment: str) -> list[float]:
    return [float(a) for a in re.findall(r"rgba\(\d+,\d+,\d+,([0-9.]+)\)", fragment)]


def test_highlighted_text_escapes_user_text_and_names_the_prediction() -> None:
    words = tuple(TEXT.split())  # "<script>alert(1)</script>" is one whitespace word here
    attribution = replace(
        make("<b>run</b>"),
        words=words,
        values=tuple(np.linspace(-0.5, 1.0, len(words))),
        spans=(),
        label_names=("neg<i>", "pos & co"),
    )
    out = highlighted_text_html(attribution)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out and "<script" not in out
    assert "&lt;b&gt;run&lt;/b&gt;" in out and "<i>" not in out and "<b>run" not in out
    assert "predicts <b>pos &amp; co</b> (80.0%)" in out
    assert out.count("<span title=") == len(words)
    assert "title='great!: +1.0000 toward pos &amp; co'" in out
    assert "https://" not in out and "http://" not in out


def test_highlighted_text_keeps_the_text_between_word_spans() -> None:
    attribution = make("original")
    out = highlighted_text_html(attribution)
    assert out.count("<span title=") == len(attribution.words) == 8
    assert "&lt;<span title='script: " in out and "<script" not in out
    assert "film</span>, <span" in out and "</span>!</div>" in out


def test_highlighted_text_colours_sign_and_strength() -> None:
    attribution = make("original")
    out = highlighted_text_html(attribution)
    assert max(alphas(out)) == pytest.approx(0.85)  # the largest |value| at full strength
    assert "rgba(213,94,0,0.425)" in out  # -0.5 of 1.0 against the target: vermillion, half
    assert "rgba(0,114,178,0.850)" in out
    halved = highlighted_text_html(attribution, max_abs=2.0)
    assert max(alphas(halved)) == pytest.approx(0.425)


def test_highlighted_text_without_spans_joins_the_words() -> None:
    attribution = replace(make("original"), spans=())
    out = highlighted_text_html(attribution)
    assert ">A</span> <span" in out and "&lt;" not in out.split("</div>", 2)[2]


def test_side_by_side_uses_one_scale_for_all_columns() -> None:
    attributions = three()
    out = side_by_side_html(attributions)
    columns = out.split("flex:1 1 240px")[1:]
    assert len(columns) == 3
    strongest = [max(alphas(column)) for column in columns]
    np.testing.assert_allclose(strongest, [0.85, 0.425, 0.2125], atol=1e-3)
    assert "supports positive" in out and "speaks against positive" in out
    assert side_by_side_html([]).count("nothing to show") == 1


def test_top_words_chart_one_subplot_per_model_with_shared_range() -> None:
    one = build_top_words_chart([make("original")], k=4)
    bars = [t for t in one.data if t.x[0] is not None]
    assert len(bars) == 1
    assert list(bars[0].x) == pytest.approx([1.0, 0.785714, 0.571429, -0.5], abs=1e-5)
    assert list(bars[0].y) == ["great #8", "great #7", "film #6", "A #1"]
    assert list(bars[0].marker.color) == ["#0072b2"] * 3 + ["#d55e00"]

    fig = build_top_words_chart(three(), k=5)
    bars = [t for t in fig.data if t.x[0] is not None]
    assert [b.name for b in bars] == ["original", "run a", "run b"]
    assert all(len(b.x) == 5 for b in bars)
    ranges = {tuple(fig.layout[f"xaxis{i if i > 1 else ''}"].range) for i in range(1, 4)}
    assert ranges == {(-1.15, 1.15)}
    assert fig.layout.height > one.layout.height
    titles = [a.text for a in fig.layout.annotations]
    assert "run b: predicts negative (70.0%)" in titles
    assert {t.name for t in fig.data if t.x[0] is None} == {
        "supports positive",
        "speaks against positive",
    }


def test_figures_handle_a_one_word_sentence_and_six_models() -> None:
    single = [make(f"m{i}", 1.0 + i, text="Great") for i in range(6)]
    assert len(build_top_words_chart(single).data) == 8
    heat = build_word_model_heatmap(single)
    assert np.array(heat.data[0].z).shape == (1, 6)
    frame = table23_frame(single)
    assert frame.shape == (2, 7)


def test_empty_input_draws_nothing_to_show() -> None:
    for fig in (
        build_top_words_chart([]),
        build_word_model_heatmap([]),
        build_faithfulness_chart([]),
        build_top_words_chart([make("x", text="...")]),
    ):
        assert [a.text for a in fig.layout.annotations] == ["nothing to show"]
        assert not fig.data
    assert list(table23_frame([]).columns) == ["word"]


def test_heatmap_rows_are_words_in_order_and_columns_models() -> None:
    attributions = three()
    fig = build_word_model_heatmap(attributions)
    (trace,) = fig.data
    assert list(trace.x) == ["original", "run a", "run b"]
    assert list(trace.y)[-2:] == ["great #7", "great #8"]  # repeated words stay distinct
    assert list(trace.y)[1] == "script #2"
    z = np.array(trace.z)
    np.testing.assert_allclose(z[:, 1], attributions[1].values)
    assert (trace.zmid, trace.zmin, trace.zmax) == (0.0, -1.0, 1.0)
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.height == 8 * 22 + 190


def test_heatmap_names_methods_when_several_and_rejects_mixed_texts() -> None:
    fig = build_word_model_heatmap([make("original"), make("original", method="shap")])
    assert list(fig.data[0].x) == ["original · lime", "original · shap"]
    with pytest.raises(ValueError, match="different texts"):
        build_word_model_heatmap([make("a"), make("b", text="other words")])


def test_column_labels_keep_duplicate_model_labels_apart() -> None:
    a, b = make("run"), replace(make("run"), model_key="abcdef123")
    assert column_labels([a, b]) == ["run (key-ru)", "run (abcdef)"]


def test_table23_has_a_row_per_word_and_the_probability_row() -> None:
    attributions = three()
    frame = table23_frame(attributions)
    assert frame.shape == (len(attributions[0].words) + 1, 4)
    assert list(frame.columns) == ["word", "original", "run a", "run b"]
    assert list(frame["word"][:3]) == ["A", "script", "alert"]
    last = frame.iloc[-1]
    assert last["word"] == "P(positive)"
    assert [last["original"], last["run a"], last["run b"]] == [0.8, 0.8, 0.3]
    np.testing.assert_allclose(frame["run a"][:-1], attributions[1].values)


FAITH = [
    {
        "model": "original",
        "method": "lime",
        "comprehensiveness": 0.4,
        "comprehensiveness_std": 0.1,
        "sufficiency": 0.1,
        "sufficiency_std": 0.05,
        "random_comprehensiveness": 0.15,
        "random_sufficiency": 0.3,
    },
    {
        "model": "run a",
        "method": "lime",
        "comprehensiveness": 0.3,
        "sufficiency": 0.2,
        "random_comprehensiveness": 0.1,
        "random_sufficiency": 0.25,
    },
    {  # a dataset average, as pruning.faithfulness.dataset_faithfulness names its keys
        "model": "original",
        "method": "shap",
        "comprehensiveness_mean": 0.5,
        "sufficiency_mean": 0.05,
        "random_comprehensiveness_mean": 0.15,
        "random_sufficiency_mean": 0.3,
    },
]


def test_faithfulness_chart_bars_per_method_and_random_baseline() -> None:
    fig = build_faithfulness_chart(FAITH)
    names = [t.name for t in fig.data]
    assert names == ["LIME", "SHAP", "random word order (baseline)"] * 2
    lime_comp, shap_comp, random_comp = fig.data[:3]
    assert list(lime_comp.y) == [0.4, 0.3] and list(shap_comp.y) == [0.5]
    assert list(lime_comp.error_y.array) == [0.1, 0.0]
    assert shap_comp.error_y.array is None
    assert list(random_comp.y) == [0.15, 0.1, 0.15]
    assert list(fig.data[5].y) == [0.3, 0.25, 0.3]
    assert "higher = more faithful" in fig.layout.yaxis.title.text
    assert "lower = more faithful" in fig.layout.yaxis2.title.text
    assert [t.showlegend for t in fig.data] == [True, True, True, False, False, False]


def test_report_is_a_standalone_escaped_document_with_plotly_once() -> None:
    faith = [{**FAITH[0], "model": "<img src=x onerror=alert(1)>"}]
    doc = explanation_report_html(three(), [{"pair": "a <> b", "spearman": 0.5}], faith, "T <1>")
    assert doc.startswith("<!DOCTYPE html>") and doc.rstrip().endswith("</html>")
    assert "<title>T &lt;1&gt;</title>" in doc
    assert "&lt;script&gt;alert(1)" in doc and "<script>alert" not in doc
    assert "<img src=x" not in doc and "a &lt;&gt; b" in doc
    assert doc.count("* plotly.js v") == 1  # the library inlined once, not fetched
    markup = re.sub(r"<script[^>]*>.*?</script>", "", doc, flags=re.DOTALL)
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", markup)
    assert "<script src" not in doc
    assert doc.count('class="plotly-graph-div"') == 3  # top words, heatmap, faithfulness


def test_agreement_frame_one_row_per_pair_and_method() -> None:
    attribution = pytest.importorskip("pruning.attribution").Attribution

    def real(label: str, values: tuple[float, ...], method: str = "lime") -> object:
        return attribution(
            method=method,
            model_label=label,
            model_key=f"run:{label}",
            text="a b c",
            words=("a", "b", "c"),
            spans=((0, 1), (2, 3), (4, 5)),
            values=values,
            target=1,
            label_names=("negative", "positive"),
            probabilities=(0.3, 0.7) if label != "c" else (0.6, 0.4),
            samples=50,
            seed=0,
            seconds=0.1,
        )

    models = [real("a", (0.1, 0.2, 0.3)), real("b", (0.3, 0.2, 0.1)), real("c", (0.0, 0.2, 0.4))]
    frame = agreement_frame([*models, real("a", (1.0, 0.0, -1.0), "shap")], k=1)
    assert list(frame["method"]) == ["LIME"] * 3  # one SHAP model: no pair
    assert list(zip(frame["model A"], frame["model B"], strict=True)) == [
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
    ]
    assert list(frame["top-1 overlap"]) == [0.0, 1.0, 0.0]
    assert list(frame["Spearman"]) == pytest.approx([-1.0, 1.0, -1.0])
    assert list(frame["P(target) B"]) == [0.7, 0.4, 0.4]
    assert list(frame["same prediction"]) == [True, False, False]
    assert agreement_frame(models[:1]).empty
