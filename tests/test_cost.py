"""Parameter counts, analytic FLOPs and latency of dense and pruned classifiers."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from conftest import build_tiny_model
from pruning.cost import (
    LatencyResult,
    compare_latency,
    count_parameters,
    encoder_flops_per_example,
    flops_breakdown,
    flops_per_example,
    interleaved_latency,
    max_sequence_length,
    measure_latency,
    nonzero_parameters,
)
from pruning.heads import remove_heads

# ---------------------------------------------------------------------------------------------
# parameters and FLOPs: tiny BERT, 3 layers x 4 heads, hidden H=32, head size d=8, FFN I=64,
# vocab 120, 64 positions, 2 types, 2 labels

H, D, I_FFN, HEADS, LAYERS = 32, 8, 64, 4, 3


def worked_case() -> tuple[torch.nn.Module, torch.nn.Module]:
    """Dense tiny BERT and a copy with 3 heads removed in layer 0 and all 4 in layer 2."""
    model = build_tiny_model("bert")
    mask = torch.ones(LAYERS, HEADS, dtype=torch.bool)
    mask[0, :3] = False
    mask[2, :] = False
    return model, remove_heads(model, mask)


def test_count_parameters_drops_by_exactly_the_removed_heads() -> None:
    dense, pruned = worked_case()
    # each head owns d rows (+ d biases) of q, k and v and d input columns of the output
    # projection: 3 * (32*8 + 8) + 8*32 = 792 + 256 = 1048 parameters; 7 heads removed
    per_head = 3 * (H * D + D) + D * H
    assert per_head == 1048
    assert count_parameters(dense) - count_parameters(pruned) == 7 * 1048 == 7336
    assert count_parameters(dense) == sum(p.numel() for p in dense.parameters())
    # embeddings: words 120*32 + positions 64*32 + types 2*32 + layer norm 2*32 = 6016
    embeddings = 120 * 32 + 64 * 32 + 2 * 32 + 2 * 32
    assert count_parameters(dense) - count_parameters(dense, include_embeddings=False) == 6016
    assert embeddings == 6016


def test_flops_worked_example_dense_and_pruned() -> None:
    dense, pruned = worked_case()
    tokens = 16
    # one dense layer at T=16: q/k/v 3*2*16*32*32 = 98,304; output 2*16*32*32 = 32,768;
    # scores + context 2 * 2*16*16*32 = 32,768; FFN 2 * 2*16*32*64 = 131,072 -> 294,912
    layer = (
        3 * 2 * tokens * H * H
        + 2 * tokens * H * H
        + 2 * 2 * tokens**2 * H
        + 2 * 2 * tokens * H * I_FFN
    )
    assert layer == 294_912
    assert encoder_flops_per_example(dense, tokens) == 3 * 294_912 == 884_736
    # pooler 2*32*32 = 2,048 and classifier 2*32*2 = 128 on the first token only
    assert flops_per_example(dense, tokens) == 884_736 + 2_048 + 128 == 886_912
    # one head at T=16: q/k/v 3*2*16*32*8 = 24,576; output 2*16*8*32 = 8,192;
    # scores + context 2 * 2*16*16*8 = 8,192 -> 40,960; 7 heads removed -> 286,720
    per_head = 3 * 2 * tokens * H * D + 2 * tokens * D * H + 2 * 2 * tokens**2 * D
    assert per_head == 40_960
    assert flops_per_example(dense, tokens) - flops_per_example(pruned, tokens) == 286_720
    assert flops_per_example(pruned, tokens) == 600_192
    parts = flops_breakdown(pruned, tokens)
    assert parts["feed_forward"] == 3 * 131_072
    assert parts["pooler"] == 2_048 and parts["classifier"] == 128
    assert parts["embedding_projection"] == 0


def test_flops_attention_scores_are_quadratic_in_length(arch: str) -> None:
    model = build_tiny_model(arch)
    short, long = flops_breakdown(model, 20), flops_breakdown(model, 40)
    assert long["attention_scores"] == 4 * short["attention_scores"]
    for part in ("attention_projections", "feed_forward", "embedding_projection"):
        assert long[part] == 2 * short[part]
    assert long["pooler"] == short["pooler"] and long["classifier"] == short["classifier"]
    # total: linear terms double, the quadratic term quadruples
    linear = sum(short.values()) - short["attention_scores"] - short["pooler"] - short["classifier"]
    assert flops_per_example(model, 40) == (
        2 * linear + 4 * short["attention_scores"] + short["pooler"] + short["classifier"]
    )
    with pytest.raises(ValueError, match="seq_len"):
        flops_per_example(model, 0)


def test_flops_count_each_family_head_and_electra_projection() -> None:
    tokens = 10
    bert = flops_breakdown(build_tiny_model("bert"), tokens)
    for arch in ("roberta", "distilbert", "electra"):
        other = flops_breakdown(build_tiny_model(arch), tokens)
        assert encoder_flops_per_example(build_tiny_model(arch), tokens) == sum(
            bert[p] for p in ("attention_projections", "attention_scores", "feed_forward")
        )
        # RoBERTa / ELECTRA heads: dense 32->32 + out 32->2; DistilBERT: pre_classifier + classifier
        assert other["pooler"] + other["classifier"] == 2 * 32 * 32 + 2 * 32 * 2
    electra = flops_breakdown(build_tiny_model("electra"), tokens)
    assert electra["embedding_projection"] == 2 * tokens * 24 * 32


# ---------------------------------------------------------------------------------------------
# latency


def test_measure_latency_returns_sane_numbers_and_restores_threads() -> None:
    model = build_tiny_model("bert")
    threads_before = torch.get_num_threads()
    result = measure_latency(model, batch_size=2, seq_len=16, repeats=5, warmup=1, threads=1)
    assert isinstance(result, LatencyResult)
    assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms
    assert result.mean_ms > 0
    assert (result.repeats, result.batch_size, result.seq_len) == (5, 2, 16)
    assert (result.device, result.threads, result.dtype) == ("cpu", 1, "float32")
    assert torch.get_num_threads() == threads_before
    assert result.to_dict()["median_ms"] == result.median_ms


def test_measure_latency_accepts_the_longest_allowed_input(arch: str) -> None:
    model = build_tiny_model(arch)
    longest = max_sequence_length(model)
    assert longest == (69 if arch == "roberta" else 64)
    assert measure_latency(model, seq_len=longest, repeats=1, warmup=0).median_ms > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"seq_len": 0}, "seq_len"),
        ({"seq_len": 65}, "between 1 and 64"),
        ({"repeats": 0}, "repeats"),
        ({"warmup": -1}, "warmup"),
        ({"threads": 0}, "threads"),
        ({"device": "cuda"}, "move the model first"),
    ],
)
def test_measure_latency_validates_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        measure_latency(build_tiny_model("bert"), **{"seq_len": 16, **kwargs})


def test_compare_latency_interleaves_and_reports_spread() -> None:
    dense, pruned = worked_case()
    report = compare_latency(dense, pruned, seq_len=16, repeats=6, warmup=1)
    assert report["dense"].repeats == report["pruned"].repeats == 6
    assert len(report["pair_speedups"]) == 6
    assert report["speedup"] == pytest.approx(
        report["dense"].median_ms / report["pruned"].median_ms
    )
    assert 0 < report["speedup_min"] <= report["speedup"] <= report["speedup_max"]
    with pytest.raises(ValueError, match="seq_len"):
        compare_latency(dense, pruned, seq_len=100)


def test_interleaved_latency_rotates_the_order_every_round(monkeypatch) -> None:
    """Each round runs every model once and the first model changes every round."""
    import pruning.cost as cost

    models = [build_tiny_model("bert", layers=layers) for layers in (1, 2, 3)]
    order: list[int] = []

    def fake_forward(model: Any, *_args: Any) -> Any:
        index = next(i for i, m in enumerate(models) if m is model)

        def run() -> float:
            order.append(index)
            return float(index + 1)

        return run

    monkeypatch.setattr(cost, "_timed_forward", fake_forward)
    results = interleaved_latency(models, seq_len=8, repeats=3, warmup=0)
    assert order == [0, 1, 2, 1, 2, 0, 2, 0, 1]
    assert [r.times_ms for r in results] == [(1.0,) * 3, (2.0,) * 3, (3.0,) * 3]
    assert [r.median_ms for r in results] == [1.0, 2.0, 3.0]
    assert results[0].to_dict()["times_ms"] == [1.0, 1.0, 1.0]


def test_interleaved_latency_times_real_models_and_validates() -> None:
    dense, pruned = worked_case()
    results = interleaved_latency([dense, pruned, dense], seq_len=16, repeats=4, warmup=1)
    assert [r.repeats for r in results] == [4, 4, 4]
    assert all(r.median_ms > 0 and len(r.times_ms) == 4 for r in results)
    with pytest.raises(ValueError, match="at least one model"):
        interleaved_latency([])
    with pytest.raises(ValueError, match="seq_len"):
        interleaved_latency([dense, pruned], seq_len=100)


def test_nonzero_parameters_counts_zeros_and_csr_bytes() -> None:
    model = build_tiny_model("bert")
    dense = nonzero_parameters(model)
    # Fresh biases and the padding embedding row are zeros already.
    assert 0.9 * count_parameters(model) < dense["params_nonzero"] < count_parameters(model)
    assert dense["dense_bytes"] == 4 * count_parameters(model)
    weight = model.bert.encoder.layer[0].intermediate.dense.weight
    rows, cols = weight.shape  # 64 x 32, random normal: no exact zeros before
    with torch.no_grad():
        weight[:, : cols // 2] = 0  # half density: CSR (8 bytes a weight) does not pay
    half = nonzero_parameters(model)
    assert half["params_nonzero"] == dense["params_nonzero"] - weight.numel() // 2
    assert half["sparse_bytes"] == dense["sparse_bytes"]
    with torch.no_grad():
        weight[:, : cols * 7 // 8] = 0  # an eighth kept: CSR pays
    kept = rows * (cols - cols * 7 // 8)
    sparse = nonzero_parameters(model)
    assert sparse["sparse_bytes"] == dense["sparse_bytes"] - 4 * weight.numel() + (
        8 * kept + 4 * (rows + 1)
    )
    assert sparse["dense_bytes"] == dense["dense_bytes"]
