"""Metrics, ordered batched prediction, many-mask evaluation, parameter/FLOP counts and latency."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import BertTokenizer

from conftest import build_tiny_model
from pruning.data import Batch, TextSplit, make_batches
from pruning.evaluate import (
    METRIC_NAMES,
    LatencyResult,
    Metrics,
    compare_latency,
    compute_metrics,
    count_parameters,
    encoder_flops_per_example,
    evaluate_masks,
    evaluate_model,
    evaluate_split,
    flops_breakdown,
    flops_per_example,
    max_sequence_length,
    measure_latency,
    predict_logits,
)
from pruning.heads import apply_mask, head_grid, remove_heads


def token_rows(seed: int, count: int, vocab: int = 120) -> list[list[int]]:
    """``count`` rows of random token ids (never the pad id 0) with lengths 3..13."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        length = int(torch.randint(3, 14, (1,), generator=generator))
        rows.append(torch.randint(5, vocab, (length,), generator=generator).tolist())
    return rows


def sorted_batches(rows: list[list[int]], labels: list[int] | None, batch_size: int) -> list[Batch]:
    """Length-sorted (longest first), dynamically padded batches, as make_batches builds them."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        width = max(len(rows[i]) for i in chosen)
        input_ids = torch.zeros(len(chosen), width, dtype=torch.long)
        attention_mask = torch.zeros(len(chosen), width, dtype=torch.long)
        for slot, i in enumerate(chosen):
            input_ids[slot, : len(rows[i])] = torch.tensor(rows[i])
            attention_mask[slot, : len(rows[i])] = 1
        batches.append(
            Batch(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=None,
                labels=None if labels is None else torch.tensor([labels[i] for i in chosen]),
                indices=torch.tensor(chosen),
            )
        )
    return batches


def labelled_batches(
    seed: int = 0, count: int = 11, batch_size: int = 4, classes: int = 3
) -> tuple[list[list[int]], list[int], list[Batch]]:
    rows = token_rows(seed, count)
    labels = [(i + seed) % classes for i in range(count)]
    return rows, labels, sorted_batches(rows, labels, batch_size)


# ---------------------------------------------------------------------------------------------
# compute_metrics


def test_compute_metrics_worked_three_class_example() -> None:
    # preds 0,1,1,1,2,0 against labels 0,0,1,1,2,2: confusion rows (true) [[1,1,0],[0,2,0],[1,0,1]]
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = [0, 1, 1, 1, 2, 0]
    logits = torch.zeros(6, 3)
    for row, pred in enumerate(preds):
        logits[row, pred] = math.log(2.0)  # p(pred) = 2/4, every other class 1/4
    metrics = compute_metrics(logits, labels)
    assert metrics.n_examples == 6
    assert metrics.accuracy == pytest.approx(4 / 6)
    # MCC = (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)), c=4, s=6, t=(2,2,2), p=(2,3,1)
    assert metrics.mcc == pytest.approx((24 - 12) / math.sqrt((36 - 14) * (36 - 12)))
    # per-class F1 = 2TP / (2TP + FP + FN): 2/4, 4/5, 2/3
    assert metrics.macro_f1 == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert metrics.macro_f1 == pytest.approx(59 / 90)
    # 4 correct rows lose ln 2, 2 wrong rows lose ln 4
    assert metrics.loss == pytest.approx((4 * math.log(2) + 2 * math.log(4)) / 6)


def test_compute_metrics_binary_constant_prediction_has_zero_mcc() -> None:
    labels = torch.tensor([0, 1, 0, 1])
    logits = torch.tensor([[1.0, 0.0]] * 4)
    metrics = compute_metrics(logits, labels)
    assert metrics.accuracy == 0.5
    assert metrics.mcc == 0.0
    assert metrics.macro_f1 == pytest.approx((2 / 3 + 0.0) / 2)


def test_compute_metrics_perfect_and_class_absent_from_both() -> None:
    # class 2 of 3 never occurs: macro-F1 averages over classes 0 and 1 only
    labels = torch.tensor([0, 1, 1, 0])
    logits = torch.nn.functional.one_hot(labels, 3).float() * 5
    metrics = compute_metrics(logits, labels)
    assert (metrics.accuracy, metrics.mcc, metrics.macro_f1) == (1.0, 1.0, 1.0)


def test_compute_metrics_agrees_with_sklearn_on_random_data() -> None:
    generator = torch.Generator().manual_seed(0)
    for classes in (2, 3, 5):
        logits = torch.randn(200, classes, generator=generator)
        labels = torch.randint(0, classes, (200,), generator=generator)
        preds = logits.argmax(1).numpy()
        metrics = compute_metrics(logits, labels)
        assert metrics.accuracy == pytest.approx(accuracy_score(labels.numpy(), preds))
        assert metrics.mcc == pytest.approx(matthews_corrcoef(labels.numpy(), preds))
        assert metrics.macro_f1 == pytest.approx(f1_score(labels.numpy(), preds, average="macro"))
        assert metrics.loss == pytest.approx(
            float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-6
        )


def test_compute_metrics_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="one row of logits per label"):
        compute_metrics(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="zero examples"):
        compute_metrics(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="num_labels"):
        compute_metrics(torch.zeros(2, 2), torch.tensor([0, 2]))


def test_metrics_get_and_round_trip() -> None:
    metrics = Metrics(accuracy=0.75, mcc=0.5, macro_f1=0.7, loss=0.4, n_examples=8)
    assert metrics.get("f1") == metrics.get("macro_f1") == 0.7
    assert [metrics.get(name) for name in METRIC_NAMES] == [0.75, 0.5, 0.7, 0.4]
    assert Metrics.from_dict(metrics.to_dict()) == metrics
    with pytest.raises(ValueError, match="Unknown metric"):
        metrics.get("precision")


# ---------------------------------------------------------------------------------------------
# prediction and evaluation over batches


def test_predict_logits_restores_original_order(arch: str) -> None:
    model = build_tiny_model(arch, num_labels=3)
    rows, labels, batches = labelled_batches(seed=1)
    assert [int(i) for b in batches for i in b.indices] != list(range(len(rows)))
    logits, ordered_labels = predict_logits(model, batches)
    with torch.no_grad():
        expected = torch.cat([model(input_ids=torch.tensor([row])).logits for row in rows])
    assert logits.shape == (len(rows), 3)
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, expected, atol=1e-5)
    assert ordered_labels is not None
    assert ordered_labels.tolist() == labels


def test_predict_logits_without_labels_and_restores_training_flag() -> None:
    model = build_tiny_model("bert")
    rows = token_rows(2, 5)
    model.train()
    logits, labels = predict_logits(model, sorted_batches(rows, None, 2))
    assert labels is None
    assert model.training
    model.eval()
    again, _ = predict_logits(model, sorted_batches(rows, None, 2))
    assert torch.equal(logits, again)  # dropout was off during the first call too


def test_evaluate_model_equals_compute_metrics_of_ordered_logits() -> None:
    model = build_tiny_model("roberta", num_labels=3)
    _, labels, batches = labelled_batches(seed=3)
    logits, _ = predict_logits(model, batches)
    assert evaluate_model(model, batches) == compute_metrics(logits, torch.tensor(labels))


SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "a", "movie", "film", "good", "bad", "great", "awful", "plot", "acting", "was"]


def test_evaluate_split_tokenises_with_dynamic_padding_and_matches_batches() -> None:
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)})
    generator = torch.Generator().manual_seed(0)
    texts = [
        " ".join(WORDS[int(j)] for j in torch.randint(0, len(WORDS), (n,), generator=generator))
        for n in (3, 11, 5, 8, 2, 13, 7)
    ]
    split = TextSplit(tuple(texts), (0, 1, 2, 0, 1, 2, 0))
    model = build_tiny_model("bert", num_labels=3)
    metrics = evaluate_split(model, tokenizer, split, batch_size=3, max_length=12)
    batches = make_batches(tokenizer, texts, split.labels, batch_size=3, max_length=12)
    # words + [CLS]/[SEP]: 5, 13->12 (truncated), 7, 10, 4, 15->12, 9; longest first, in threes
    assert [b.input_ids.shape[1] for b in batches] == [12, 9, 4]
    assert metrics == evaluate_model(model, batches)
    assert metrics.n_examples == 7
    with pytest.raises(ValueError, match="split is empty"):
        evaluate_split(model, tokenizer, TextSplit((), ()))


def test_evaluation_rejects_bad_batches_and_devices() -> None:
    model = build_tiny_model("bert")
    rows = token_rows(0, 4)
    with pytest.raises(ValueError, match="no labels"):
        evaluate_model(model, sorted_batches(rows, None, 2))
    with pytest.raises(ValueError, match="No batches"):
        predict_logits(model, [])
    twice = sorted_batches(rows, [0, 1, 0, 1], 2)
    with pytest.raises(ValueError, match="repeat an original row"):
        predict_logits(model, twice + twice)
    with pytest.raises(ValueError, match="move the model first"):
        predict_logits(model, twice, device="cuda")


# ---------------------------------------------------------------------------------------------
# many masks


def sensitive_model(arch: str, seed: int) -> torch.nn.Module:
    """A tiny 3-class classifier with large random weights, so every head visibly moves the loss.

    The default initialisation (std 0.02) leaves tiny models almost blind to their heads: losses
    of different masks differ by ~1e-4, too little to tell a right gating from a wrong one.
    """
    model = build_tiny_model(arch, num_labels=3, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, 0.3, generator=generator)
            elif isinstance(module, torch.nn.Embedding):
                module.weight.normal_(0.0, 1.0, generator=generator)
    return model


def candidate_masks(n_layers: int, n_heads: int, count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    masks = [torch.ones(n_layers, n_heads, dtype=torch.bool)]
    masks.append(torch.zeros(n_layers, n_heads, dtype=torch.bool))
    emptied = torch.ones(n_layers, n_heads, dtype=torch.bool)
    emptied[1] = False
    masks.append(emptied)
    masks += [torch.rand(n_layers, n_heads, generator=generator) < 0.6 for _ in range(count)]
    return masks


def assert_metrics_close(actual: Metrics, expected: Metrics) -> None:
    assert actual.n_examples == expected.n_examples
    assert actual.accuracy == expected.accuracy
    assert actual.mcc == pytest.approx(expected.mcc, abs=1e-9)
    assert actual.macro_f1 == pytest.approx(expected.macro_f1, abs=1e-9)
    assert actual.loss == pytest.approx(expected.loss, abs=1e-5)


@pytest.mark.parametrize("per_forward", [None, 1, 3])
def test_evaluate_masks_equals_apply_mask_one_by_one(arch: str, per_forward: int | None) -> None:
    model = sensitive_model(arch, seed=4)
    _, _, batches = labelled_batches(seed=5, count=13)
    masks = candidate_masks(*head_grid(model), count=5, seed=6)
    results = evaluate_masks(model, batches, masks, masks_per_forward=per_forward)
    assert len(results) == len(masks)
    for mask, metrics in zip(masks, results, strict=True):
        with apply_mask(model, mask):
            assert_metrics_close(metrics, evaluate_model(model, batches))
    assert_metrics_close(results[0], evaluate_model(model, batches))
    losses = [metrics.loss for metrics in results]
    assert max(losses) - min(losses) > 0.1  # masks matter, so a wrong gating would show


def test_evaluate_masks_leaves_model_unchanged_and_reports_progress() -> None:
    model = sensitive_model("bert", seed=0)
    _, _, batches = labelled_batches(seed=7)
    before, _ = predict_logits(model, batches)
    masks = torch.stack(candidate_masks(*head_grid(model), count=4, seed=8))
    progress: list[tuple[int, int]] = []
    results = evaluate_masks(
        model,
        batches,
        masks,
        masks_per_forward=3,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert len(results) == masks.shape[0] == 7
    assert progress == [(3, 7), (6, 7), (7, 7)]
    after, _ = predict_logits(model, batches)
    assert torch.equal(before, after)
    assert evaluate_masks(model, batches, []) == []


def test_evaluate_masks_on_a_pruned_model_uses_the_original_grid() -> None:
    model = sensitive_model("distilbert", seed=9)
    _, _, batches = labelled_batches(seed=10)
    first = torch.ones(3, 4, dtype=torch.bool)
    first[0, :2] = False
    pruned = remove_heads(model, first)
    masks = candidate_masks(3, 4, count=4, seed=11)
    for mask, metrics in zip(masks, evaluate_masks(pruned, batches, masks), strict=True):
        assert_metrics_close(metrics, evaluate_model(remove_heads(model, mask & first), batches))


def test_evaluate_masks_rejects_bad_masks_and_unlabelled_batches() -> None:
    model = build_tiny_model("bert")
    rows, _, batches = labelled_batches(seed=0, classes=2)
    with pytest.raises(ValueError, match="single mask"):
        evaluate_masks(model, batches, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"shape \(3, 4\)"):
        evaluate_masks(model, batches, [torch.ones(4, 3, dtype=torch.bool)])
    with pytest.raises(ValueError, match="masks_per_forward"):
        evaluate_masks(model, batches, [torch.ones(3, 4)], masks_per_forward=0)
    with pytest.raises(ValueError, match="no labels"):
        evaluate_masks(model, sorted_batches(rows, None, 4), [torch.ones(3, 4)])


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
