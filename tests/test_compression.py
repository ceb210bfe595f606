"""Compression-ratio definitions (DeepCuts paper vs HeadScope) against hand counts."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from conftest import build_tiny_model
from pruning.compression import (
    PAPER_RATIOS,
    RATIO_DEFINITIONS,
    ParameterCounts,
    bert_base_counts,
    bert_base_equivalent_ratio,
    bert_base_keep_share,
    bert_base_keep_shares,
    headscope_counts,
    keep_share_for,
    ratio_report,
    shrinkbench_counts,
    stored_ratios,
)
from pruning.weight_scores import prunable_weights

# BERT-base by hand (transformers.BertConfig() defaults, two labels): see bert_base_counts.
EMBEDDINGS = 30522 * 768 + 512 * 768 + 2 * 768 + 2 * 768
LINEAR = 4 * (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768)
LAYER = LINEAR + 2 * 2 * 768
POOLER = 768 * 768 + 768
CLASSIFIER = 768 * 2 + 2
BERT_BASE_TOTAL = EMBEDDINGS + 12 * LAYER + POOLER + CLASSIFIER
BERT_BASE_PRUNABLE = 12 * LINEAR + POOLER


def tiny_bert() -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=11,
        hidden_size=4,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=6,
        max_position_embeddings=8,
        type_vocab_size=2,
        num_labels=3,
    )
    return BertForSequenceClassification(config)


def test_hand_counts_of_a_tiny_bert_under_both_definitions() -> None:
    model = tiny_bert()
    # Embeddings: word 11*4, position 8*4, type 2*4, LayerNorm 2*4.
    embeddings = 44 + 32 + 8 + 8
    # Per layer: q, k, v, o 4*(4*4+4); intermediate 4*6+6; output 6*4+4; two LayerNorms 2*8.
    linear = 4 * 20 + 30 + 28
    layer = linear + 16
    pooler, classifier = 4 * 4 + 4, 4 * 3 + 3
    total = embeddings + 2 * layer + pooler + classifier
    assert total == 435
    assert shrinkbench_counts(model) == ParameterCounts(total=435, prunable=2 * linear + pooler)
    # HeadScope prunes the six weight matrices of each layer only: 4*16 + 24 + 24 per layer.
    assert headscope_counts(model) == ParameterCounts(total=435, prunable=2 * (64 + 24 + 24))
    counts = shrinkbench_counts(model)
    assert counts.fixed == 435 - 296
    # ShrinkBench's fraction_to_keep: (N / r - (N - P)) / P.
    assert counts.keep_share(1.25) == pytest.approx((435 / 1.25 - 139) / 296)
    assert counts.whole_model_ratio(209) == pytest.approx(1.25)
    assert counts.max_whole_model_ratio == pytest.approx(435 / 139)


def test_bert_base_counts_are_the_papers_110m_and_85m() -> None:
    assert BERT_BASE_TOTAL == 109_483_778 and BERT_BASE_PRUNABLE == 85_608_192
    counts = bert_base_counts()
    assert counts == ParameterCounts(total=BERT_BASE_TOTAL, prunable=BERT_BASE_PRUNABLE)
    assert round(counts.total / 1e6) == 109 and int(counts.prunable / 1e6) == 85


def test_bert_base_keep_shares_at_the_papers_ratios() -> None:
    fixed = BERT_BASE_TOTAL - BERT_BASE_PRUNABLE
    shares = bert_base_keep_shares()
    assert list(shares) == list(PAPER_RATIOS) == [2.0, 3.0, 3.5, 4.0]
    for ratio, share in shares.items():
        assert share == pytest.approx((BERT_BASE_TOTAL / ratio - fixed) / BERT_BASE_PRUNABLE)
        assert bert_base_equivalent_ratio(share) == pytest.approx(ratio)
    assert [round(s, 4) for s in shares.values()] == [0.3606, 0.1474, 0.0865, 0.0408]
    assert shares[4.0] < 0.05  # "less than 5% of prunable parameters remain" (Section 4.3)
    # HeadScope's prunable ratios 3-4 keep 25-33%: the paper's ratio 2.1-2.4 on BERT-base.
    assert bert_base_equivalent_ratio(1 / 3) == pytest.approx(2.089, abs=1e-3)
    assert bert_base_equivalent_ratio(1 / 4) == pytest.approx(2.418, abs=1e-3)
    with pytest.raises(ValueError, match="tops out at 4.59"):
        bert_base_keep_share(5.0)


def test_minilm_sized_models_cannot_reach_the_papers_whole_model_ratios() -> None:
    config = BertConfig(hidden_size=384, num_hidden_layers=6, intermediate_size=1536)
    with torch.device("meta"):
        model = BertForSequenceClassification(config)
    counts = headscope_counts(model)
    assert counts.prunable == 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    assert 1.85 < counts.max_whole_model_ratio < 1.95
    assert counts.keep_share(1.5) == pytest.approx(
        (counts.total / 1.5 - counts.fixed) / counts.prunable
    )
    with pytest.raises(ValueError, match="cannot be reached.*bert_base_equivalent"):
        counts.keep_share(2.0)


def test_keep_share_for_each_definition() -> None:
    model = build_tiny_model("bert")
    counts = headscope_counts(model)
    assert counts.prunable == sum(w.numel() for w in prunable_weights(model).values())
    assert RATIO_DEFINITIONS == ("prunable", "whole_model", "bert_base_equivalent")
    assert keep_share_for("prunable", 4.0) == 0.25
    assert keep_share_for("bert_base_equivalent", 3.0) == bert_base_keep_share(3.0)
    assert keep_share_for("whole_model", 1.1, counts) == counts.keep_share(1.1)
    with pytest.raises(ValueError, match="needs the model's parameter counts"):
        keep_share_for("whole_model", 1.1)
    with pytest.raises(ValueError, match="Unknown ratio definition"):
        keep_share_for("params", 2.0)
    with pytest.raises(ValueError, match="finite number >= 1"):
        keep_share_for("prunable", 0.5)


def test_ratio_report_gives_both_definitions() -> None:
    counts = ParameterCounts(total=1000, prunable=600)
    report = ratio_report(counts, 150)
    assert report == {
        "keep_share": 0.25,
        "achieved_ratio": 4.0,
        "whole_model_ratio": pytest.approx(1000 / 550),
        "bert_base_ratio": pytest.approx(bert_base_equivalent_ratio(0.25)),
        "params_total": 1000,
    }
    assert ratio_report(counts, 0)["achieved_ratio"] is None
    with pytest.raises(ValueError, match="some prunable"):
        ParameterCounts(total=10, prunable=11)


def test_stored_ratios_read_new_runs_and_derive_them_for_runs_made_before() -> None:
    new = {"achieved_ratio": 4.0, "keep_share": 0.25, "whole_model_ratio": 1.4,
           "bert_base_ratio": 2.42}  # fmt: skip
    assert stored_ratios(new, {}) == new
    # Before issue #27 a run stored only prunable / kept and its non-zero count.
    old = stored_ratios({"achieved_ratio": 4.0}, {"params_dense": 900, "params_nonzero": 600})
    assert old == {
        "keep_share": 0.25,
        "achieved_ratio": 4.0,
        "whole_model_ratio": 1.5,  # ShrinkBench's size / non-zero size
        "bert_base_ratio": pytest.approx(bert_base_equivalent_ratio(0.25)),
    }
    assert stored_ratios({}, {}) == dict.fromkeys(
        ("keep_share", "achieved_ratio", "whole_model_ratio", "bert_base_ratio")
    )
