"""DeepCuts (Grover et al. 2022): weight scores, exact masks, per-head analysis and the method."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertTokenizer

from conftest import build_tiny_model, random_inputs
from pruning.adapters import encoder_layers, get_adapter, get_submodule
from pruning.batching import Batch, make_batches
from pruning.datasets_base import LabelledDataset, TextSplit
from pruning.heads import head_dim, remove_heads
from pruning.jobs import JobCancelled
from pruning.methods import deepcuts as deepcuts_module
from pruning.methods.base import PruneResult, PruningContext, get_method
from pruning.methods.deepcuts import REWIND_LR, DeepCuts, DeepCutsConfig
from pruning.weight_masks import head_density, head_iou, iou_matrices, layer_iou, mask_iou
from pruning.weight_scores import (
    STRATEGIES,
    Scope,
    apply_weight_masks,
    compute_weight_scores,
    masks_for_ratio,
    masks_for_ratios,
    prunable_weights,
)

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"w{i}" for i in range(100)]  # ids 5..104, inside the tiny models' vocabulary of 120
RATIOS = (2.0, 3.0, 3.5, 4.0)
SUFFIXES = {
    "bert": {
        "attention.self.query.weight",
        "attention.self.key.weight",
        "attention.self.value.weight",
        "attention.output.dense.weight",
        "intermediate.dense.weight",
        "output.dense.weight",
    },
    "distilbert": {
        "attention.q_lin.weight",
        "attention.k_lin.weight",
        "attention.v_lin.weight",
        "attention.out_lin.weight",
        "ffn.lin1.weight",
        "ffn.lin2.weight",
    },
}


def word_tokenizer() -> BertTokenizer:
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(SPECIAL + WORDS)})
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # DistilBERT has no token types
    return tokenizer


def word_split(n: int, seed: int) -> TextSplit:
    """``n`` random texts of 2-10 words; the label says whether the first word is below w50."""
    generator = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for _ in range(n):
        length = int(torch.randint(2, 11, (1,), generator=generator))
        picks = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
        texts.append(" ".join(WORDS[i] for i in picks))
        labels.append(int(picks[0] < 50))
    return TextSplit(tuple(texts), tuple(labels))


def word_batches(n: int = 8, batch_size: int = 4, seed: int = 5) -> list[Batch]:
    split = word_split(n, seed)
    return make_batches(word_tokenizer(), split.texts, split.labels, batch_size=batch_size)


def deepcuts_context(
    arch: str = "bert",
    *,
    model: nn.Module | None = None,
    seed: int = 0,
    n_train: int = 24,
    should_stop: Callable[[], bool] | None = None,
) -> PruningContext:
    model = model if model is not None else build_tiny_model(arch).cpu()
    train, validation = word_split(n_train, seed=1), word_split(8, seed=2)
    dataset = LabelledDataset("words", ("low", "high"), train, validation, validation, "fp", "t")
    return PruningContext(
        model=model,
        tokenizer=word_tokenizer(),
        dataset=dataset,
        score_split=validation,
        batches=word_batches(),
        device=torch.device("cpu"),
        seed=seed,
        should_stop=should_stop,
    )


def run(context: PruningContext, *, reuse: bool = False, **config: Any) -> PruneResult:
    """One DeepCuts run; scores are computed afresh unless ``reuse`` (the process cache)."""
    if not reuse:
        deepcuts_module._SCORES.clear()
    settings = {"grad_batches": 2, "batch_size": 4, **config}
    return DeepCuts(DeepCutsConfig(**settings)).run(context)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def assert_same_weights(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before)


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def assert_exact_counts(masks: dict[str, torch.Tensor], ratio: float) -> None:
    for name, mask in masks.items():
        assert mask.dtype == torch.bool
        assert int(mask.sum()) == round(mask.numel() / ratio), name


# --- prunable weights ---------------------------------------------------------------------------


def test_prunable_weights_are_the_encoder_linear_matrices(arch: str) -> None:
    model = build_tiny_model(arch)
    weights = prunable_weights(model)
    assert len(weights) == 6 * 3
    expected = SUFFIXES["distilbert" if arch == "distilbert" else "bert"]
    parameters = dict(model.named_parameters())
    for name, weight in weights.items():
        assert weight is parameters[name] and weight.dim() == 2
        assert any(name.endswith(suffix) for suffix in expected), name
        for excluded in ("embeddings", "LayerNorm", "layer_norm", "pooler", "classifier", "bias"):
            assert excluded not in name
    assert {name.split(".layer.")[1].split(".", 1)[1] for name in weights} == expected


# --- masks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", RATIOS)
def test_layer_scope_keeps_exactly_round_numel_over_ratio_per_tensor(ratio: float) -> None:
    model = build_tiny_model("bert")
    # Rounded magnitudes: many ties, which must not change the counts.
    scores = {name: (w.detach().abs() * 10).round() for name, w in prunable_weights(model).items()}
    masks = masks_for_ratio(scores, ratio)
    assert_exact_counts(masks, ratio)
    for name, mask in masks.items():
        assert float(scores[name][mask].min()) >= float(scores[name][~mask].max())


@pytest.mark.parametrize("ratio", RATIOS)
def test_global_scope_keeps_exactly_round_total_over_ratio(ratio: float) -> None:
    model = build_tiny_model("bert")
    scores = compute_weight_scores(model, [], "global_mag_weight")
    masks = masks_for_ratio(scores, ratio, scope="global")
    total = sum(mask.numel() for mask in masks.values())
    assert sum(int(mask.sum()) for mask in masks.values()) == round(total / ratio)
    kept = torch.cat([scores[name][mask] for name, mask in masks.items()])
    pruned = torch.cat([scores[name][~mask] for name, mask in masks.items()])
    assert float(kept.min()) >= float(pruned.max())  # one threshold over every tensor
    densities = {round(float(mask.float().mean()), 4) for mask in masks.values()}
    assert len(densities) > 1


def test_ties_go_to_the_earlier_position_and_ratios_share_one_scoring() -> None:
    scores = {"a": torch.ones(2, 3), "b": torch.ones(1, 4)}
    assert masks_for_ratio(scores, 2.0)["a"].flatten().tolist() == [True] * 3 + [False] * 3
    assert masks_for_ratio(scores, 2.0, scope="global")["a"].flatten().tolist() == [True] * 5 + [
        False
    ]
    model = build_tiny_model("bert")
    scores = compute_weight_scores(model, [], "layer_mag_weight")
    many = masks_for_ratios(scores, RATIOS)
    assert list(many) == list(RATIOS)
    for ratio in RATIOS:
        one = masks_for_ratio(scores, ratio)
        assert all(torch.equal(many[ratio][name], one[name]) for name in one)


def test_mask_errors_say_how_to_fix() -> None:
    scores = {"a": torch.ones(2, 2)}
    with pytest.raises(ValueError, match=">= 1"):
        masks_for_ratio(scores, 0.5)
    with pytest.raises(ValueError, match="scope"):
        masks_for_ratio(scores, 2.0, scope="heads")  # type: ignore[arg-type]
    model = build_tiny_model("bert")
    with pytest.raises(ValueError, match="names no parameter"):
        apply_weight_masks(model, {"nope.weight": torch.ones(2, 2, dtype=torch.bool)})
    name = next(iter(prunable_weights(model)))
    with pytest.raises(ValueError, match="shape"):
        apply_weight_masks(model, {name: torch.ones(2, 2, dtype=torch.bool)})


# --- scores ---------------------------------------------------------------------------------------


class ToyClassifier(nn.Module):
    """Token table -> one Linear per token -> mean over real tokens = logits."""

    def __init__(self) -> None:
        super().__init__()
        table = [[0, 0, 0], [1, 2, -1], [0.5, -1, 2], [-2, 1, 0.5], [1.5, 0.5, 1]]
        self.register_buffer("table", torch.tensor(table, dtype=torch.float32))
        self.linear = nn.Linear(3, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.5, -0.5]]))
            self.linear.bias.copy_(torch.tensor([0.1, -0.2]))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        z = self.linear(self.table[input_ids])
        m = attention_mask.unsqueeze(-1).float()
        return SimpleNamespace(logits=(z * m).sum(1) / m.sum(1))


def toy_batches() -> list[Batch]:
    first = Batch(
        torch.tensor([[1, 2, 3], [4, 1, 0]]),
        torch.tensor([[1, 1, 1], [1, 1, 0]]),
        None,
        torch.tensor([0, 1]),
        torch.tensor([0, 1]),
    )
    second = Batch(
        torch.tensor([[2, 4, 3]]),
        torch.tensor([[1, 1, 1]]),
        None,
        torch.tensor([1]),
        torch.tensor([2]),
    )
    return [first, second]


def hand_scores(model: ToyClassifier, batch: Batch, cam_lambda: float | None) -> torch.Tensor:
    """|w * dL/dw (* (a + lambda))| from the closed-form gradient of softmax cross-entropy."""
    w, b = model.linear.weight.detach(), model.linear.bias.detach()
    x = model.table[batch.input_ids]  # (B, T, 3)
    m = batch.attention_mask.float().unsqueeze(-1)
    x_mean = (x * m).sum(1) / m.sum(1)  # (B, 3): logits = W x_mean + b
    p = torch.softmax(x_mean @ w.T + b, dim=-1)
    onehot = F.one_hot(batch.labels, 2).float()
    grad = (p - onehot).T @ x_mean / len(batch)  # dL/dW of the batch's mean loss: (2, 3)
    if cam_lambda is None:
        return (w * grad).abs()
    z = x @ w.T + b  # pre-activation output per token: (B, T, 2)
    a = (z * m).sum((0, 1)) / m.sum()  # mean over real tokens of the batch: (2,)
    return (w * grad * (a + cam_lambda).unsqueeze(1)).abs()


@pytest.mark.parametrize("cam_lambda", [10.0, 0.0, -1.5])
def test_cam_cut_equals_the_hand_computed_score_on_a_toy_linear_model(cam_lambda: float) -> None:
    model = ToyClassifier()
    batches = toy_batches()
    weights = {"linear.weight": model.linear.weight}
    scores = compute_weight_scores(
        model, batches, "cam_cut", cam_lambda=cam_lambda, weights=weights
    )
    expected = sum(hand_scores(model, batch, cam_lambda) for batch in batches) / len(batches)
    torch.testing.assert_close(scores["linear.weight"], expected, rtol=1e-6, atol=1e-7)
    grads = compute_weight_scores(model, batches, "layer_mag_grad", weights=weights)
    expected = sum(hand_scores(model, batch, None) for batch in batches) / len(batches)
    torch.testing.assert_close(grads["linear.weight"], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("smooth", "plain"), [("smooth_cut", "layer_mag_grad"), ("smooth_cam", "cam_cut")]
)
def test_smoothgrad_with_one_clean_pass_equals_the_plain_score(smooth: str, plain: str) -> None:
    model = build_tiny_model("bert")
    batches = word_batches()
    smoothed = compute_weight_scores(model, batches, smooth, smooth_samples=1, smooth_noise_std=0.0)
    reference = compute_weight_scores(model, batches, plain)
    assert smoothed.keys() == reference.keys() == prunable_weights(model).keys()
    assert all(torch.equal(smoothed[name], reference[name]) for name in reference)


def test_smoothgrad_noise_is_seeded_and_changes_the_scores() -> None:
    model = build_tiny_model("bert")
    batches = word_batches()

    def scores(seed: int) -> dict[str, torch.Tensor]:
        return compute_weight_scores(
            model,
            batches,
            "smooth_cut",
            smooth_samples=3,
            smooth_noise_std=0.05,
            generator=torch.Generator().manual_seed(seed),
        )

    first, again, other = scores(0), scores(0), scores(1)
    plain = compute_weight_scores(model, batches, "layer_mag_grad")
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert any(not torch.equal(first[name], other[name]) for name in first)
    assert any(not torch.allclose(first[name], plain[name]) for name in first)


@pytest.mark.parametrize("strategy", ["cam_cut", "smooth_cam"])
def test_scoring_leaves_the_model_weights_flags_and_grads_alone(strategy: str) -> None:
    model = build_tiny_model("bert")
    weights = prunable_weights(model)
    frozen = next(iter(weights.values()))
    frozen.requires_grad_(False)
    for name, parameter in model.named_parameters():
        if "embeddings" in name:
            parameter.requires_grad_(False)
    model.train()
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    before = snapshot(model)
    scores = compute_weight_scores(model, word_batches(), strategy, smooth_samples=2)
    assert_same_weights(model, before)
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert model.training and hook_count(model) == 0
    assert all(
        bool((score >= 0).all()) and score.dtype == torch.float32 for score in scores.values()
    )


def test_scores_need_labels_and_a_known_strategy() -> None:
    model = build_tiny_model("bert")
    batches = word_batches()
    batches[0].labels = None
    with pytest.raises(ValueError, match="needs labels"):
        compute_weight_scores(model, batches, "cam_cut")
    with pytest.raises(ValueError, match="Unknown strategy"):
        compute_weight_scores(model, batches, "snip")
    with pytest.raises(ValueError, match="labelled batches"):
        compute_weight_scores(model, [], "smooth_cut")


# --- applying masks and reading them per head ---------------------------------------------------


def test_masked_model_forward_equals_manual_zeroing(arch: str) -> None:
    model = build_tiny_model(arch)
    before = snapshot(model)
    masks = masks_for_ratio(compute_weight_scores(model, word_batches(), "cam_cut"), 3.0)
    masked = apply_weight_masks(model, masks)
    manual = copy.deepcopy(model)
    parameters = dict(manual.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            parameters[name][~mask] = 0.0
    inputs = random_inputs(seed=3)
    with torch.no_grad():
        assert torch.equal(masked(**inputs).logits, manual(**inputs).logits)
        assert not torch.equal(masked(**inputs).logits, model(**inputs).logits)
    masked_parameters = dict(masked.named_parameters())
    for name, mask in masks.items():
        assert int(torch.count_nonzero(masked_parameters[name])) == int(mask.sum())
    assert_same_weights(model, before)


def head_slices(model: nn.Module, layer: int, head: int) -> list[tuple[str, int]]:
    """(name, dim) of the q/k/v rows and output columns of one head, read from the adapter."""
    adapter = get_adapter(model)
    block = encoder_layers(model)[layer]
    attention = get_submodule(block, adapter.attention)
    names = {id(p): name for name, p in model.named_parameters()}
    rows = [getattr(attention, attr).weight for attr in (adapter.query, adapter.key, adapter.value)]
    output = get_submodule(block, adapter.output).weight
    return [(names[id(w)], 0) for w in rows] + [(names[id(output)], 1)]


def test_head_density_all_kept_and_on_a_hand_made_mask(arch: str) -> None:
    model = build_tiny_model(arch)
    weights = prunable_weights(model)
    full = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    assert torch.equal(head_density(model, full), torch.ones(3, 4))
    size = head_dim(model)
    masks = {name: mask.clone() for name, mask in full.items()}
    (query, _), _, _, (output, _) = head_slices(model, 1, 2)
    masks[query][2 * size : 3 * size, :] = False  # the head's query rows: 1 of its 4 slices
    masks[output][: masks[output].shape[0] // 2, 2 * size : 3 * size] = False  # half a slice
    feed_forward = next(name for name in weights if name not in dict(head_slices(model, 0, 0)))
    masks[feed_forward][:] = False  # feed-forward weights belong to no head
    expected = torch.ones(3, 4)
    expected[1, 2] = 1 - 1.5 / 4
    torch.testing.assert_close(head_density(model, masks), expected)
    one_head = {name: mask for name, mask in masks.items() if name != feed_forward}
    torch.testing.assert_close(head_density(model, one_head), expected)


def test_iou_of_a_mask_with_itself_is_one_and_with_its_complement_zero() -> None:
    model = build_tiny_model("bert")
    masks = masks_for_ratio(compute_weight_scores(model, [], "layer_mag_weight"), 2.0)
    complement = {name: ~mask for name, mask in masks.items()}
    assert mask_iou(masks, masks) == 1.0
    assert mask_iou(masks, complement) == 0.0
    assert mask_iou(masks, complement, which="pruned") == 0.0
    assert torch.equal(layer_iou(model, masks, masks), torch.ones(3))
    assert torch.equal(layer_iou(model, masks, complement), torch.zeros(3))
    assert torch.equal(head_iou(model, masks, masks), torch.ones(3, 4))
    assert torch.equal(head_iou(model, masks, complement), torch.zeros(3, 4))
    empty = {name: torch.zeros_like(mask) for name, mask in masks.items()}
    assert mask_iou(empty, empty) == 1.0  # both kept sets empty
    assert mask_iou(empty, masks) == 0.0
    half = {"w": torch.tensor([True, True, False, False])}
    other = {"w": torch.tensor([True, False, True, False])}
    assert mask_iou(half, other) == pytest.approx(1 / 3)
    assert mask_iou(half, other, which="pruned") == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="different weights"):
        mask_iou(half, {"v": torch.ones(4, dtype=torch.bool)})


def test_iou_matrices_are_symmetric_means_and_minima_over_heads() -> None:
    model = build_tiny_model("bert")
    weights = prunable_weights(model)
    generator = torch.Generator().manual_seed(0)
    by_strategy = {
        "layer_mag_weight": masks_for_ratio(
            compute_weight_scores(model, [], "layer_mag_weight"), 3
        ),
        "global_mag_weight": masks_for_ratio(
            compute_weight_scores(model, [], "global_mag_weight"), 3, scope="global"
        ),
        "random": masks_for_ratio(
            {name: torch.rand(w.shape, generator=generator) for name, w in weights.items()}, 3
        ),
    }
    names, mean, low = iou_matrices(model, by_strategy)
    assert names == list(by_strategy)
    assert torch.equal(mean.diagonal(), torch.ones(3)) and torch.equal(mean, mean.T)
    assert torch.equal(low, low.T) and bool((low <= mean).all())
    per_head = head_iou(model, by_strategy["layer_mag_weight"], by_strategy["random"])
    assert float(mean[0, 2]) == pytest.approx(float(per_head.mean()))
    assert float(low[0, 2]) == pytest.approx(float(per_head.min()))


# --- the method -------------------------------------------------------------------------------


def test_deepcuts_is_registered_as_a_weight_level_method() -> None:
    method = get_method("deepcuts")
    assert method is DeepCuts and method.granularity == "weight"
    assert "http" in method.paper and "2212.13392" in (method.__doc__ or "")
    assert DeepCutsConfig.from_dict(DeepCutsConfig().to_dict()) == DeepCutsConfig()
    assert DeepCutsConfig(compression_ratio=3).to_dict() == DeepCutsConfig().to_dict()
    fields = {spec.name: spec for spec in dataclasses.fields(DeepCutsConfig)}
    assert fields["strategy"].metadata["choices"] == STRATEGIES


def test_config_errors_say_how_to_fix() -> None:
    with pytest.raises(ValueError, match="Compression ratio must be between 1.0 and 100"):
        DeepCutsConfig(compression_ratio=0.5)
    with pytest.raises(ValueError, match="Strategy must be one of"):
        DeepCutsConfig(strategy="snip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="set refine steps above 0"):
        DeepCutsConfig(rewind=True)


def test_method_contract_on_every_architecture(arch: str) -> None:
    context = deepcuts_context(arch)
    before = snapshot(context.model)
    result = run(context, strategy="cam_cut", compression_ratio=3.0)
    assert_same_weights(context.model, before)
    weights = prunable_weights(context.model)
    assert list(result.weight_masks) == list(weights)
    assert_exact_counts(result.weight_masks, 3.0)
    assert result.mask.dtype == torch.bool and result.mask.shape == (3, 4)
    assert result.scores is not None and result.scores.dtype == torch.float32
    assert torch.equal(result.mask, result.scores > 0)
    torch.testing.assert_close(result.scores, head_density(context.model, result.weight_masks))
    assert result.model is not None and result.model is not context.model
    masked = dict(result.model.named_parameters())
    for name, mask in result.weight_masks.items():
        assert bool((masked[name][~mask] == 0).all())
        assert torch.equal(masked[name][mask], weights[name][mask])
    kinds = [event.kind for event in result.trace]
    assert kinds == ["scores", "scores", "mask"]
    assert [event.step for event in result.trace] == list(range(len(result.trace)))
    fractions = [event.fraction for event in result.trace]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert [event.data["batch"] for event in result.trace[:2]] == [1, 2]
    mask_event = result.trace[-1].data
    kept = sum(int(mask.sum()) for mask in result.weight_masks.values())
    prunable = sum(mask.numel() for mask in result.weight_masks.values())
    assert mask_event["kept"] == result.info["kept"] == kept
    assert mask_event["prunable"] == result.info["prunable"] == prunable
    assert mask_event["achieved_ratio"] == pytest.approx(prunable / kept)
    assert mask_event["strategy"] == "cam_cut" and mask_event["ratio"] == 3.0
    assert mask_event["density"] == result.scores.tolist()
    assert result.info["grad_batches"] == 2 and result.info["grad_examples"] == 8
    assert result.info["seconds"] >= 0


@pytest.mark.parametrize("strategy", ["layer_mag_weight", "global_mag_weight"])
def test_magnitude_strategies_use_no_data(strategy: str) -> None:
    context = deepcuts_context(n_train=0)
    result = run(context, strategy=strategy, compression_ratio=4.0)
    scope: Scope = "global" if strategy == "global_mag_weight" else "layer"
    expected = masks_for_ratio(
        {name: w.detach().abs() for name, w in prunable_weights(context.model).items()},
        4.0,
        scope=scope,
    )
    assert all(torch.equal(result.weight_masks[name], expected[name]) for name in expected)
    assert [event.kind for event in result.trace] == ["scores", "mask"]
    assert result.trace[0].data == {"batch": 0, "total_batches": 0}
    assert result.info["scope"] == scope and result.info["grad_batches"] == 0
    with pytest.raises(ValueError, match="training texts"):
        run(deepcuts_context(n_train=0), strategy="cam_cut")


def test_same_seed_gives_the_same_masks() -> None:
    def masks(seed: int) -> dict[str, torch.Tensor]:
        context = deepcuts_context(seed=seed)
        return run(context, strategy="smooth_cam", smooth_samples=2).weight_masks

    first, again, other = masks(3), masks(3), masks(4)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert any(not torch.equal(first[name], other[name]) for name in first)


def test_refine_keeps_the_masked_weights_exactly_zero() -> None:
    context = deepcuts_context()
    before = snapshot(context.model)
    plain = run(context, strategy="layer_mag_grad")
    context = deepcuts_context()
    refined = run(context, strategy="layer_mag_grad", refine_steps=3)
    assert_same_weights(context.model, before)
    assert refined.model is not None and plain.model is not None
    trained = dict(refined.model.named_parameters())
    untrained = dict(plain.model.named_parameters())
    for name, mask in refined.weight_masks.items():
        assert torch.equal(mask, plain.weight_masks[name])
        assert bool((trained[name][~mask] == 0).all())
    assert any(not torch.equal(trained[name], untrained[name]) for name in refined.weight_masks)
    kinds = [event.kind for event in refined.trace]
    assert kinds == ["scores", "scores", "mask", "refine", "refine", "refine"]
    assert [event.data["step"] for event in refined.trace[3:]] == [1, 2, 3]
    fractions = [event.fraction for event in refined.trace]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert refined.info["refine"]["steps"] == 3 and refined.info["refine"]["rewind"] == "none"


def test_rewind_replays_the_preparation_learning_rate() -> None:
    def refined(**config: Any) -> PruneResult:
        return run(deepcuts_context(), strategy="layer_mag_weight", refine_steps=2, **config)

    rewound = refined(rewind=True)
    same_rate = refined(refine_lr=REWIND_LR)
    gentle = refined()
    assert rewound.info["refine"]["lr"] == REWIND_LR == 1e-4
    assert rewound.info["refine"]["rewind"] == "learning_rate"
    assert rewound.model is not None and same_rate.model is not None and gentle.model is not None
    rewound_state, same_state = rewound.model.state_dict(), same_rate.model.state_dict()
    assert all(torch.equal(rewound_state[name], same_state[name]) for name in rewound_state)
    gentle_state = gentle.model.state_dict()
    assert any(not torch.equal(rewound_state[name], gentle_state[name]) for name in gentle_state)
    # Survivors start from the context model's values (no weight rewind is possible here), and
    # the mask is the same as without refinement.
    unrefined = run(deepcuts_context(), strategy="layer_mag_weight")
    assert all(
        torch.equal(rewound.weight_masks[name], unrefined.weight_masks[name])
        for name in unrefined.weight_masks
    )


def test_stop_request_raises_job_cancelled_and_cleans_up() -> None:
    context = deepcuts_context(should_stop=lambda: True)
    flags = [p.requires_grad for p in context.model.parameters()]
    with pytest.raises(JobCancelled):
        run(context)
    assert hook_count(context.model) == 0
    assert [p.requires_grad for p in context.model.parameters()] == flags


def test_model_with_removed_heads_is_refused() -> None:
    model = remove_heads(build_tiny_model("bert"), torch.ones(3, 4, dtype=torch.bool).tril())
    with pytest.raises(ValueError, match="already has"):
        run(deepcuts_context(model=model))


def test_a_ratio_sweep_scores_once_and_gives_the_same_masks_as_fresh_scoring() -> None:
    fresh = {
        ratio: run(deepcuts_context(), strategy="cam_cut", compression_ratio=ratio)
        for ratio in (2.0, 4.0)
    }
    run(deepcuts_context(), strategy="cam_cut", compression_ratio=3.0)
    for ratio, expected in fresh.items():
        reused = run(deepcuts_context(), reuse=True, strategy="cam_cut", compression_ratio=ratio)
        assert reused.info["scores_reused"] and reused.trace[0].data["cached"]
        assert [event.kind for event in reused.trace] == ["scores", "mask"]
        assert all(
            torch.equal(reused.weight_masks[name], mask)
            for name, mask in expected.weight_masks.items()
        )
    other_seed = run(deepcuts_context(seed=9), reuse=True, strategy="cam_cut")
    assert not other_seed.info["scores_reused"]


# --- issue #27: the paper's compression ratio, SmoothGrad noise, re-training, IoU ---------------


# What DeepCutsConfig().to_dict() was before issue #27; the run keys of stored runs hash it.
PRE_27_DEFAULT_DICT = {
    "strategy": "cam_cut",
    "compression_ratio": 3.0,
    "grad_batches": 16,
    "batch_size": 32,
    "cam_lambda": 10.0,
    "smooth_samples": 10,
    "smooth_noise_std": 0.01,
    "refine_steps": 0,
    "refine_lr": 5e-5,
    "rewind": False,
}


def test_configs_of_earlier_runs_keep_their_dict_and_run_key() -> None:
    from cache.run_store import RunStore

    def key(config: dict[str, Any]) -> str:
        return RunStore.key_for(
            model_fingerprint="m", data_fingerprint="d", method="deepcuts", config=config, seed=0
        )

    earlier = DeepCutsConfig.from_dict(PRE_27_DEFAULT_DICT)
    assert earlier.ratio_definition == "prunable"
    assert earlier.to_dict() == PRE_27_DEFAULT_DICT
    assert key(earlier.to_dict()) == key(PRE_27_DEFAULT_DICT)
    assert DeepCutsConfig(smooth_noise_std=0.01).to_dict() == PRE_27_DEFAULT_DICT
    # The paper's noise is a new default, so a default config is a new setting...
    assert DeepCutsConfig().to_dict() == {**PRE_27_DEFAULT_DICT, "smooth_noise_std": 0.1}
    # ... and a non-default definition enters the dict (and the key).
    shares = DeepCutsConfig(ratio_definition="bert_base_equivalent").to_dict()
    assert shares["ratio_definition"] == "bert_base_equivalent"
    assert DeepCutsConfig.from_dict(shares) == DeepCutsConfig(
        ratio_definition="bert_base_equivalent"
    )


def test_smoothgrad_noise_defaults_to_the_papers_standard_deviation() -> None:
    # Section 3.5.1: "a normal distribution with a variance of 0.01": sigma = 0.1.
    assert DeepCutsConfig().smooth_noise_std == deepcuts_module.PAPER_NOISE_STD == 0.1
    assert math.isclose(deepcuts_module.PAPER_NOISE_STD**2, 0.01)
    assert deepcuts_module.AUTHORS_CODE_NOISE_STD == 1e-3  # torch.randn_like(output) * 1e-3
    fields = {spec.name: spec for spec in dataclasses.fields(DeepCutsConfig)}
    assert "0.1 is the paper's" in fields["smooth_noise_std"].metadata["help"]


def test_the_hooks_add_noise_with_smooth_noise_std_as_its_standard_deviation() -> None:
    from pruning.weight_scores import _output_hooks

    linear = nn.Linear(3, 500)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
    for sigma in (0.1, 1e-3):
        state: dict[str, Any] = {"record": False, "noise": sigma, "sums": {}, "counts": {}}
        with _output_hooks({"linear": linear}, state, torch.Generator().manual_seed(0)):
            noise = linear(torch.ones(200, 3)).detach()  # zero map: the output is the noise
        assert float(noise.std()) == pytest.approx(sigma, rel=0.01)
        assert abs(float(noise.mean())) < sigma / 50


def test_the_method_passes_its_noise_and_passes_to_the_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}
    real = deepcuts_module.compute_weight_scores

    def spy(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(deepcuts_module, "compute_weight_scores", spy)
    run(deepcuts_context(), strategy="smooth_cut", smooth_samples=2)
    assert seen["smooth_noise_std"] == 0.1 and seen["smooth_samples"] == 2


@pytest.mark.parametrize("ratio", [2.0, 3.0, 3.5, 4.0])
def test_bert_base_equivalent_keeps_the_share_the_papers_ratio_leaves_on_bert_base(
    ratio: float,
) -> None:
    from pruning.compression import bert_base_keep_share, headscope_counts

    context = deepcuts_context()
    result = run(
        context,
        strategy="layer_mag_weight",
        compression_ratio=ratio,
        ratio_definition="bert_base_equivalent",
    )
    share = bert_base_keep_share(ratio)
    for name, mask in result.weight_masks.items():
        assert int(mask.sum()) == round(mask.numel() * share), name
    info = result.info
    counts = headscope_counts(context.model)
    kept = sum(int(mask.sum()) for mask in result.weight_masks.values())
    assert info["ratio_definition"] == "bert_base_equivalent" and info["ratio"] == ratio
    assert info["target_keep_share"] == share
    assert info["keep_share"] == pytest.approx(share, abs=0.01)
    assert info["bert_base_ratio"] == pytest.approx(ratio, rel=0.02)
    assert info["achieved_ratio"] == pytest.approx(counts.prunable / kept)
    assert info["whole_model_ratio"] == pytest.approx(
        counts.total / (counts.total - (counts.prunable - kept))
    )
    assert info["params_total"] == counts.total
    event = result.trace[-1].data
    assert event["ratio_definition"] == "bert_base_equivalent"
    assert event["whole_model_ratio"] == info["whole_model_ratio"]


def test_prunable_definition_reports_the_papers_ratio_too() -> None:
    result = run(deepcuts_context(), strategy="layer_mag_weight", compression_ratio=3.0)
    assert result.info["ratio_definition"] == "prunable"
    assert result.info["achieved_ratio"] == pytest.approx(3.0, rel=0.01)
    assert result.info["bert_base_ratio"] == pytest.approx(2.09, abs=0.02)
    assert 1.0 < result.info["whole_model_ratio"] < 3.0


def test_whole_model_ratio_is_reached_on_the_model_or_refused_before_gradients() -> None:
    from pruning.compression import headscope_counts

    context = deepcuts_context()
    counts = headscope_counts(context.model)
    ratio = round(1 + (counts.max_whole_model_ratio - 1) / 2, 2)
    result = run(
        context, strategy="cam_cut", compression_ratio=ratio, ratio_definition="whole_model"
    )
    assert result.info["whole_model_ratio"] == pytest.approx(ratio, rel=0.01)
    polled: list[bool] = []

    def should_stop() -> bool:
        polled.append(True)
        return False

    too_far = counts.max_whole_model_ratio + 0.5
    with pytest.raises(ValueError, match="cannot be reached"):
        run(
            deepcuts_context(should_stop=should_stop),
            strategy="cam_cut",
            compression_ratio=too_far,
            ratio_definition="whole_model",
        )
    assert polled == []  # refused before the first gradient


def test_bert_base_equivalent_ratios_beyond_bert_base_are_refused() -> None:
    with pytest.raises(ValueError, match="below 4.586"):
        DeepCutsConfig(ratio_definition="bert_base_equivalent", compression_ratio=5.0)
    with pytest.raises(ValueError, match="Ratio definition must be one of"):
        DeepCutsConfig(ratio_definition="params")  # type: ignore[arg-type]


def test_refine_is_the_lottery_ticket_retraining_mask_fixed_under_adamw() -> None:
    """The pruned weights stay exactly zero after every AdamW step (weight decay, momentum)."""
    from pruning.train import TrainConfig, fine_tune

    context = deepcuts_context()
    result = run(context, strategy="layer_mag_weight", compression_ratio=4.0)
    assert result.model is not None
    masks = result.weight_masks
    config = TrainConfig(lr=1e-2, weight_decay=0.1, batch_size=4, max_steps=4)

    def pruned_values(model: nn.Module) -> torch.Tensor:
        parameters = dict(model.named_parameters())
        return torch.cat([parameters[name][~mask].detach() for name, mask in masks.items()])

    masked = copy.deepcopy(result.model)
    kept_before = {name: dict(masked.named_parameters())[name][mask].clone()
                   for name, mask in masks.items()}  # fmt: skip
    steps: list[float] = []

    def on_event(event: Any) -> None:
        steps.append(float(pruned_values(masked).abs().max()))

    fine_tune(masked, context.tokenizer, context.dataset.train, config, on_event=on_event,
              weight_masks=masks)  # fmt: skip
    assert steps == [0.0] * 4
    parameters = dict(masked.named_parameters())
    assert any(not torch.equal(parameters[n][m], kept_before[n]) for n, m in masks.items())
    # Without the mask the same training moves the pruned weights: the test can fail.
    free = copy.deepcopy(result.model)
    fine_tune(free, context.tokenizer, context.dataset.train, config)
    assert float(pruned_values(free).abs().max()) > 0.0


def test_iou_of_kept_and_of_pruned_sets_on_hand_made_masks() -> None:
    from pruning.weight_masks import random_iou

    a = {"w": torch.tensor([[True, True, True, False]])}
    b = {"w": torch.tensor([[True, True, False, False]])}
    assert mask_iou(a, b) == pytest.approx(2 / 3)  # kept: {0,1} / {0,1,2}
    assert mask_iou(a, b, which="pruned") == pytest.approx(1 / 2)  # pruned: {3} / {2,3}
    # Chance levels at the paper's ratios 3 and 3.5 on BERT-base (14.7% and 8.7% kept).
    assert random_iou(0.1474, which="kept") == pytest.approx(0.0796, abs=1e-4)
    assert random_iou(0.1474, which="pruned") == pytest.approx(0.7431, abs=1e-4)
    assert random_iou(0.0865, which="pruned") == pytest.approx(0.8408, abs=1e-4)
    generator = torch.Generator().manual_seed(0)
    x = {"w": torch.rand(400_000, generator=generator) < 0.25}
    y = {"w": torch.rand(400_000, generator=generator) < 0.25}
    for which in ("kept", "pruned"):
        assert mask_iou(x, y, which=which) == pytest.approx(random_iou(0.25, which=which), abs=3e-3)
    assert random_iou(0.0, which="kept") == 1.0
    with pytest.raises(ValueError, match="keep_share"):
        random_iou(1.5)


def test_iou_matrices_across_layers_are_the_papers_figure_9() -> None:
    model = build_tiny_model("bert")
    weights = prunable_weights(model)
    generator = torch.Generator().manual_seed(1)
    by_strategy = {
        name: masks_for_ratio(
            {n: torch.rand(w.shape, generator=generator) for n, w in weights.items()}, 3.0
        )
        for name in ("layer_mag_weight", "cam_cut", "smooth_cut")
    }
    for which in ("kept", "pruned"):
        names, mean, low = iou_matrices(model, by_strategy, which=which, over="layers")
        assert names == list(by_strategy)
        per_layer = layer_iou(model, by_strategy["cam_cut"], by_strategy["smooth_cut"], which=which)
        assert float(mean[1, 2]) == pytest.approx(float(per_layer.mean()))
        assert float(low[2, 1]) == pytest.approx(float(per_layer.min()))
        assert torch.equal(mean.diagonal(), torch.ones(3))
    _, kept_mean, _ = iou_matrices(model, by_strategy, which="kept", over="layers")
    _, pruned_mean, _ = iou_matrices(model, by_strategy, which="pruned", over="layers")
    off_diagonal = ~torch.eye(3, dtype=torch.bool)
    assert bool((pruned_mean[off_diagonal] > kept_mean[off_diagonal]).all())
    with pytest.raises(ValueError, match="over must be"):
        iou_matrices(model, by_strategy, over="tokens")  # type: ignore[arg-type]
