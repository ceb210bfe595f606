"""Metrics, ordered batched prediction and many-mask evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import BertTokenizer

from conftest import build_tiny_model
from pruning.data import Batch, TextSplit, make_batches
from pruning.evaluate import (
    METRIC_NAMES,
    Metrics,
    compute_metrics,
    evaluate_masks,
    evaluate_model,
    evaluate_split,
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
