"""Head roles on hand-built attention with known answers, and on a real tiny capture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import build_tiny_model, real_tokenizer
from pruning.capture import SentenceCapture, capture_sentences
from pruning.head_roles import HEAD_ROLES, head_roles, sep_positions
from pruning.heads import remove_heads

BERT_TOKENS = ("[CLS]", "a", "fine", "film", "[SEP]")


def _capture(
    pattern: np.ndarray, tokens: tuple[str, ...] = BERT_TOKENS, present: np.ndarray | None = None
) -> SentenceCapture:
    """One sentence whose every head (2 layers x 3 heads) attends with ``pattern`` (T, T)."""
    grid = np.ones((2, 3), dtype=bool) if present is None else present
    attentions = np.broadcast_to(pattern, (2, 3, *pattern.shape)).copy()
    attentions[~grid] = np.nan
    return SentenceCapture(
        tokens=tokens,
        attentions=torch.from_numpy(attentions),
        queries=None,
        keys=None,
        present=torch.from_numpy(grid),
    )


def _shift(length: int, offset: int) -> np.ndarray:
    """Each query attends fully to the token ``offset`` away, or to itself at the edges."""
    pattern = np.zeros((length, length))
    for query in range(length):
        key = query + offset
        pattern[query, key if 0 <= key < length else query] = 1.0
    return pattern


def test_roles_come_in_the_documented_order() -> None:
    roles = head_roles([_capture(np.eye(5))])
    assert list(roles) == list(HEAD_ROLES) == ["entropy", "cls", "sep", "self", "previous", "next"]
    assert all(r.shape == (2, 3) and r.dtype == np.float64 for r in roles.values())


def test_identity_attention_is_all_self_with_zero_entropy() -> None:
    roles = head_roles([_capture(np.eye(5))])
    expected = {"entropy": 0.0, "cls": 0.2, "sep": 0.2, "self": 1.0, "previous": 0.0, "next": 0.0}
    for name, value in expected.items():
        np.testing.assert_allclose(roles[name], value, atol=1e-12, err_msg=name)


def test_uniform_attention_has_log2_t_bits_and_equal_shares() -> None:
    roles = head_roles([_capture(np.full((5, 5), 0.2))])
    np.testing.assert_allclose(roles["entropy"], math.log2(5))
    for name in ("cls", "sep", "self", "previous", "next"):
        np.testing.assert_allclose(roles[name], 0.2, err_msg=name)


def test_previous_and_next_token_heads() -> None:
    previous = head_roles([_capture(_shift(5, -1))])
    np.testing.assert_allclose(previous["previous"], 1.0)  # queries 1..4 all look back
    np.testing.assert_allclose(previous["next"], 0.0)
    np.testing.assert_allclose(previous["self"], 0.2)  # only query 0 falls back on itself
    np.testing.assert_allclose(previous["cls"], 0.4)  # queries 0 and 1 land on [CLS]
    following = head_roles([_capture(_shift(5, 1))])
    np.testing.assert_allclose(following["next"], 1.0)
    np.testing.assert_allclose(following["previous"], 0.0)
    np.testing.assert_allclose(following["sep"], 0.4)  # queries 3 and 4 land on [SEP]


def test_all_attention_on_cls_or_on_roberta_end_tokens() -> None:
    on_cls = np.zeros((5, 5))
    on_cls[:, 0] = 1.0
    np.testing.assert_allclose(head_roles([_capture(on_cls)])["cls"], 1.0)
    roberta = ("<s>", "a", "</s>", "</s>", "b", "</s>")  # a sentence pair: three end tokens
    assert sep_positions(roberta) == [2, 3, 5]
    on_ends = np.zeros((6, 6))
    on_ends[:, [2, 3, 5]] = 1 / 3
    roles = head_roles([_capture(on_ends, tokens=roberta)])
    np.testing.assert_allclose(roles["sep"], 1.0)
    np.testing.assert_allclose(roles["entropy"], math.log2(3))
    own = head_roles([_capture(on_ends, tokens=("[S]", "a", "[E]", "[E]", "b", "[E]"))])
    np.testing.assert_allclose(own["sep"], 0.0)  # unknown separators: say which ones
    custom = head_roles(
        [_capture(on_ends, tokens=("[S]", "a", "[E]", "[E]", "b", "[E]"))], sep_tokens={"[E]"}
    )
    np.testing.assert_allclose(custom["sep"], 1.0)


def test_every_query_token_of_every_sentence_weighs_the_same() -> None:
    short = _capture(np.eye(2), tokens=("[CLS]", "[SEP]"))
    long = _capture(np.full((4, 4), 0.25), tokens=("[CLS]", "a", "b", "[SEP]"))
    roles = head_roles([short, long])
    np.testing.assert_allclose(roles["self"], (2 * 1.0 + 4 * 0.25) / 6)
    np.testing.assert_allclose(roles["entropy"], (2 * 0.0 + 4 * 2.0) / 6)
    np.testing.assert_allclose(roles["previous"], (1 * 0.0 + 3 * 0.25) / 4)


def test_removed_heads_are_nan_and_a_single_token_has_no_neighbours() -> None:
    present = np.ones((2, 3), dtype=bool)
    present[0, 1] = present[1, 2] = False
    roles = head_roles([_capture(np.eye(5), present=present)])
    for values in roles.values():
        assert np.isnan(values[~present]).all() and np.isfinite(values[present]).all()
    lone = head_roles([_capture(np.ones((1, 1)), tokens=("[CLS]",))])
    assert np.isnan(lone["previous"]).all() and np.isnan(lone["next"]).all()
    np.testing.assert_allclose(lone["self"], 1.0)


def test_bad_input_raises_with_what_to_pass() -> None:
    with pytest.raises(ValueError, match="at least one captured sentence"):
        head_roles([])
    with pytest.raises(ValueError, match="has 4 tokens but its attention covers 5"):
        head_roles([_capture(np.eye(5), tokens=BERT_TOKENS[:4])])
    bad = SentenceCapture(BERT_TOKENS, torch.ones(2, 5, 5), None, None, torch.ones(2, 3).bool())
    with pytest.raises(ValueError, match=r"\(n_layers, n_heads, T, T\)"):
        head_roles([bad])
    other = np.ones((2, 3), dtype=bool)
    other[0, 0] = False
    with pytest.raises(ValueError, match="another head grid"):
        head_roles([_capture(np.eye(5)), _capture(np.eye(5), present=other)])


def test_roles_of_a_real_capture_stay_in_range() -> None:
    tokenizer = real_tokenizer()
    model = build_tiny_model("bert", seed=3)
    model.resize_token_embeddings(len(tokenizer))
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1, :2] = False
    captures = capture_sentences(
        remove_heads(model, mask), tokenizer, ["a fine film", "dull"], with_qk=False
    )
    roles = head_roles(captures)
    present = mask.numpy()
    for name in ("cls", "sep", "self", "previous", "next"):
        assert ((roles[name][present] >= 0) & (roles[name][present] <= 1 + 1e-6)).all()
    longest = max(len(c.tokens) for c in captures)
    assert (roles["entropy"][present] <= math.log2(longest) + 1e-6).all()
    assert np.isnan(roles["entropy"][~present]).all()
