"""Offline bertviz views of pruned models: padding, marking, no external URLs, escaping."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from conftest import real_tokenizer, tiny_config
from pruning.capture import SentenceCapture, capture_sentences
from pruning.heads import remove_heads
from viz.bertviz_html import (
    build_head_view_html,
    build_model_view_html,
    removed_heads_caption,
)

SCRIPTS = {"d3": "/* D3 */", "jquery": "/* JQUERY */", "requirejs": "/* REQUIREJS */"}
XSS = "</script><img src=x onerror=alert(1)>"
# Layer 0 loses every head, layer 1 keeps only head 2, layer 2 keeps all four.
KEEP = torch.tensor([[False] * 4, [False, False, True, False], [True] * 4])


def pruned_model() -> torch.nn.Module:
    """A tiny 3-layer, 4-head BERT sized for the real tokenizer, pruned to ``KEEP``."""
    config = tiny_config("bert", layers=3, heads=4)
    config.vocab_size = real_tokenizer().vocab_size
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    return remove_heads(model, KEEP)


def capture(text: str = "a gorgeous, witty movie") -> SentenceCapture:
    return capture_sentences(pruned_model(), real_tokenizer(), [text], with_qk=False)[0]


def bertviz_params(document: str) -> dict[str, Any]:
    start = document.index("const params = ") + len("const params = ")
    params, _ = json.JSONDecoder().raw_decode(document, start)
    return dict(params)


def assert_offline(document: str) -> None:
    assert not re.search(r"<script[^>]*\bsrc\s*=", document, re.I)
    assert "cdnjs" not in document
    assert "require.config" not in document
    assert not re.search(r"paths\s*:", document)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", document, re.I)


@pytest.fixture(scope="module")
def pruned_capture() -> SentenceCapture:
    return capture()


def test_capture_has_an_empty_and_a_one_head_layer(pruned_capture: SentenceCapture) -> None:
    assert pruned_capture.present.tolist() == KEEP.tolist()
    assert torch.isnan(pruned_capture.attentions[0]).all()


@pytest.mark.parametrize("builder", [build_head_view_html, build_model_view_html])
def test_views_of_a_pruned_model_pad_zero_and_list_removed_heads(
    builder: Any, pruned_capture: SentenceCapture
) -> None:
    document = builder(
        pruned_capture.tokens,
        pruned_capture.attentions,
        pruned_capture.present,
        SCRIPTS,
        title="Pruned <model>",
    )
    assert_offline(document)
    assert "Removed heads (shown empty): layer 0: all · layer 1: 0, 1, 3" in document
    assert "Pruned &lt;model&gt;" in document
    attn = np.array(bertviz_params(document)["attention"][0]["attn"])
    n_tokens = len(pruned_capture.tokens)
    assert attn.shape == (3, 4, n_tokens, n_tokens)
    assert (attn[~KEEP.numpy()] == 0).all()
    np.testing.assert_allclose(attn[KEEP.numpy()].sum(-1), 1.0, atol=1e-3)
    expected = np.nan_to_num(pruned_capture.attentions.numpy())[KEEP.numpy()]
    np.testing.assert_allclose(attn[KEEP.numpy()], expected, atol=1e-4)


def test_scripts_are_inlined_before_bertviz_in_a_working_amd_order(
    pruned_capture: SentenceCapture,
) -> None:
    document = build_model_view_html(
        pruned_capture.tokens, pruned_capture.attentions, pruned_capture.present, SCRIPTS
    )
    positions = [
        document.index(marker)
        for marker in (
            "/* D3 */",
            "/* JQUERY */",
            "/* REQUIREJS */",
            "define('d3', [], function () { return window.d3; });",
            "define('jquery', [], function () { return window.jQuery; });",
            "requirejs(['jquery', 'd3']",
            "hs-removed-head",
        )
    ]
    assert positions == sorted(positions)


def test_model_view_marks_each_removed_thumbnail(pruned_capture: SentenceCapture) -> None:
    document = build_model_view_html(
        pruned_capture.tokens, pruned_capture.attentions, pruned_capture.present, SCRIPTS
    )
    removed = json.loads(re.search(r"var removed = (\[.*?\]\]);", document).group(1))  # type: ignore[union-attr]
    assert removed == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [1, 3]]
    assert "attn_background_" in document


def test_head_view_opens_on_a_layer_with_heads_and_counts_only_existing_heads(
    pruned_capture: SentenceCapture,
) -> None:
    document = build_head_view_html(
        pruned_capture.tokens, pruned_capture.attentions, pruned_capture.present, SCRIPTS
    )
    params = bertviz_params(document)
    assert params["layer"] == 1
    assert "return d / activeHeads()" not in document
    assert "HS_PRESENT" not in document
    removed = json.loads(re.search(r"var removed = (\[.*?\]\]);", document).group(1))  # type: ignore[union-attr]
    assert removed == [[0, 1, 2, 3], [0, 1, 3], []]
    chosen = build_head_view_html(
        pruned_capture.tokens,
        pruned_capture.attentions,
        pruned_capture.present,
        SCRIPTS,
        layer=2,
        heads=[1, 3],
    )
    assert (bertviz_params(chosen)["layer"], bertviz_params(chosen)["heads"]) == (2, [1, 3])


def test_tokens_cannot_break_out_of_the_script() -> None:
    tokens = ["[CLS]", XSS, "a & b", "[SEP]"]
    attentions = np.full((1, 2, 4, 4), 0.25, dtype=np.float32)
    present = np.array([[True, True]])
    for builder in (build_head_view_html, build_model_view_html):
        document = builder(tokens, attentions, present, SCRIPTS, title=XSS)
        assert "<img" not in document
        assert document.count("</script>") == document.count("<script")
        assert bertviz_params(document)["attention"][0]["left_text"][1] == XSS
        # Once as left text, once as right text: bertviz's commented copy of the params is gone.
        assert document.count("\\u003c/script\\u003e\\u003cimg") == 2


def test_torch_and_numpy_inputs_give_the_same_document(pruned_capture: SentenceCapture) -> None:
    args = (pruned_capture.tokens, pruned_capture.attentions, pruned_capture.present)
    as_numpy = (list(args[0]), args[1].numpy(), args[2].numpy())
    for builder in (build_head_view_html, build_model_view_html):
        assert builder(*args, SCRIPTS) == builder(*as_numpy, SCRIPTS)


def test_dense_model_has_no_caption() -> None:
    present = np.ones((2, 3), dtype=bool)
    assert removed_heads_caption(present) == ""
    attentions = np.full((2, 3, 2, 2), 0.5)
    document = build_model_view_html(["[CLS]", "[SEP]"], attentions, present, SCRIPTS)
    assert "Removed heads" not in document
    assert_offline(document)


def test_caption_format() -> None:
    present = np.ones((5, 4), dtype=bool)
    present[1, [0, 3]] = False
    present[4] = False
    expected = "Removed heads (shown empty): layer 1: 0, 3 · layer 4: all"
    assert removed_heads_caption(present) == expected
    assert removed_heads_caption(torch.from_numpy(present)) == expected


@pytest.mark.parametrize(
    ("tokens", "shape", "present_shape", "match"),
    [
        (["a", "b"], (2, 4, 3, 3), (2, 4), "3 x 3 positions but there are 2 tokens"),
        (["a", "b", "c"], (2, 4, 3, 2), (2, 4), "3 x 2 positions"),
        (["a", "b", "c"], (2, 4, 3, 3), (2, 3), "2 layers x 4 heads but present is 2 x 3"),
        (["a", "b", "c"], (4, 3, 3), (2, 4), r"\(n_layers, n_heads, T, T\)"),
        (["a", "b", "c"], (2, 4, 3, 3), (8,), r"bool \(n_layers, n_heads\)"),
        ("abc", (2, 4, 3, 3), (2, 4), "list of strings"),
    ],
)
def test_unequal_shapes_raise_value_error(
    tokens: Any, shape: tuple[int, ...], present_shape: tuple[int, ...], match: str
) -> None:
    attentions = np.full(shape, 0.5)
    present = np.ones(present_shape, dtype=bool)
    for builder in (build_head_view_html, build_model_view_html):
        with pytest.raises(ValueError, match=match):
            builder(tokens, attentions, present, SCRIPTS)


def test_other_bad_inputs_raise_value_error() -> None:
    tokens = ["a", "b"]
    attentions = np.full((1, 2, 2, 2), 0.5)
    present = np.ones((1, 2), dtype=bool)
    with_nan = attentions.copy()
    with_nan[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf for heads that present marks as existing"):
        build_model_view_html(tokens, with_nan, present, SCRIPTS)
    with pytest.raises(ValueError, match="scripts lacks requirejs"):
        build_model_view_html(tokens, attentions, present, {"d3": "x", "jquery": "y"})
    with pytest.raises(ValueError, match="layer must be between 0 and 0"):
        build_head_view_html(tokens, attentions, present, SCRIPTS, layer=1)
    with pytest.raises(ValueError, match="head indices 0..1"):
        build_head_view_html(tokens, attentions, present, SCRIPTS, heads=[2])
    with pytest.raises(ValueError, match="booleans"):
        build_model_view_html(tokens, attentions, np.full((1, 2), 0.7), SCRIPTS)
