"""Head-level methods: registry, shared properties on every architecture, oracles per method."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from conftest import build_tiny_model, random_inputs, real_tokenizer, sentiment_rows, small_bert
from pruning.adapters import encoder_layers
from pruning.batching import Batch, make_batches
from pruning.capture import capture_sentences
from pruning.datasets_base import LabelledDataset, TextSplit
from pruning.heads import remove_heads
from pruning.jobs import JobCancelled
from pruning.methods.base import (
    HeadTargetConfig,
    PruningContext,
    get_method,
    list_methods,
    select_lowest,
)

HEAD_METHODS = ("entropy", "hisp", "magnitude", "random", "sep")
SEP_ID = 3  # separator id of the stub tokenizer used with the tiny random-vocabulary models


def make_context(
    model: nn.Module,
    tokenizer: Any,
    batches: list[Batch],
    texts: tuple[str, ...] = ("a", "b"),
    *,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> PruningContext:
    """A context around ready batches (the dataset only carries label names here)."""
    split = TextSplit(texts, tuple(i % 2 for i in range(len(texts))))
    dataset = LabelledDataset("test", ("negative", "positive"), split, split, split, "fp", "test")
    device = next(model.parameters()).device
    return PruningContext(
        model=model,
        tokenizer=tokenizer,
        dataset=dataset,
        score_split=split,
        batches=batches,
        device=device,
        seed=seed,
        should_stop=should_stop,
    )


def sentiment_context(n: int = 12, batch_size: int = 4, **kwargs: Any) -> PruningContext:
    """small_bert + the real tokenizer on ``n`` sentiment rows, batched by length."""
    rows = sentiment_rows(n)
    # Uneven lengths, so batches carry padding that the methods must ignore.
    texts = tuple(text + " indeed" * (i % 5) for i, (text, _) in enumerate(rows))
    labels = [0 if label == "negative" else 1 for _, label in rows]
    tokenizer = real_tokenizer()
    batches = make_batches(tokenizer, texts, labels, batch_size=batch_size)
    return make_context(small_bert(), tokenizer, batches, texts, **kwargs)


def tiny_context(model: nn.Module, **kwargs: Any) -> PruningContext:
    """Two labelled random-token batches ending in a separator, for any tiny architecture."""
    device = next(model.parameters()).device
    batches = []
    for seed in (1, 2):
        inputs = random_inputs(seed=seed, batch=3, length=9)
        ids, attention = inputs["input_ids"].clone(), inputs["attention_mask"]
        ids[torch.arange(3), attention.sum(dim=1) - 1] = SEP_ID
        labels = torch.tensor([0, 1, seed % 2], device=device)
        indices = torch.arange(3, device=device) + 3 * (seed - 1)
        batches.append(Batch(ids, attention, None, labels, indices))
    return make_context(model, SimpleNamespace(sep_token_id=SEP_ID), batches, **kwargs)


def run_method(name: str, context: PruningContext, **config: Any):
    method_class = get_method(name)
    return method_class(method_class.config_class(**config)).run(context)


def hook_count(model: nn.Module) -> int:
    return sum(
        len(module._forward_hooks) + len(module._forward_pre_hooks) for module in model.modules()
    )


def test_registry_lists_the_head_methods_with_papers() -> None:
    names = {method.name for method in list_methods()}
    assert set(HEAD_METHODS) <= names
    for name in HEAD_METHODS:
        method = get_method(name)
        assert method.granularity == "head" and method.title
        assert "http" in method.paper and "http" in (method.__doc__ or "")
        assert issubclass(method.config_class, HeadTargetConfig)
        json.dumps(method.config_class().to_dict())


@pytest.mark.parametrize("name", HEAD_METHODS)
def test_method_contract_on_every_architecture(arch: str, name: str) -> None:
    model = build_tiny_model(arch)  # 3 layers x 4 heads
    inputs = random_inputs(seed=7)
    with torch.no_grad():
        before = model(**inputs).logits
    state = {key: value.clone() for key, value in model.state_dict().items()}
    hooks, attn = hook_count(model), model.config._attn_implementation
    model.train()  # the method must switch dropout off and restore the flag
    context = tiny_context(model)
    result = run_method(name, context, n_prune=9, min_heads_per_layer=1)

    assert result.mask.dtype == torch.bool and result.mask.shape == (3, 4)
    assert int((~result.mask).sum()) == 9
    assert result.mask.sum(dim=1).tolist() == [1, 1, 1]  # the minimum binds everywhere
    assert result.scores is not None and result.scores.shape == (3, 4)
    assert torch.isfinite(result.scores).all()
    assert torch.equal(result.mask, select_lowest(result.scores, 9, min_heads_per_layer=1))

    trace = result.trace
    assert trace and trace == tuple(context.trace)
    assert [event.step for event in trace] == list(range(len(trace)))
    assert [e.fraction for e in trace] == sorted(e.fraction for e in trace)
    assert trace[-1].kind == "mask" and trace[-1].data["mask"] == result.mask.tolist()
    assert trace[-1].fraction == 1.0
    scores_events = [event for event in trace if event.kind == "scores"]
    assert scores_events and scores_events[-1].data["scores"] == result.scores.tolist()
    json.dumps([event.to_dict() for event in trace])
    json.dumps(result.info)

    assert model.training and all(module.training for module in model.modules())
    assert hook_count(model) == hooks and model.config._attn_implementation == attn
    assert all(parameter.grad is None for parameter in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, before)


@pytest.mark.parametrize("name", HEAD_METHODS)
def test_exact_count_without_minimum(name: str) -> None:
    for n_prune in (0, 5, 12):
        result = run_method(name, tiny_context(build_tiny_model("bert")), n_prune=n_prune)
        assert int((~result.mask).sum()) == n_prune
    result = run_method(name, tiny_context(build_tiny_model("bert")), sparsity=0.25)
    assert int((~result.mask).sum()) == 3


@pytest.mark.parametrize("name", HEAD_METHODS)
def test_stop_request_raises_job_cancelled_and_cleans_up(name: str) -> None:
    model = build_tiny_model("bert")
    hooks = hook_count(model)
    for allowed in (0, 1):  # stop at the first check, or one check later
        calls = iter(range(100))
        context = tiny_context(model, should_stop=lambda a=allowed, c=calls: next(c) >= a)
        with pytest.raises(JobCancelled):
            run_method(name, context, sparsity=0.5)
        assert hook_count(model) == hooks and not model.training
        assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("name", HEAD_METHODS)
def test_model_with_removed_heads_is_refused(name: str) -> None:
    model = build_tiny_model("bert")
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 0] = False
    with pytest.raises(ValueError, match="already has 1 of 12 heads removed"):
        run_method(name, tiny_context(remove_heads(model, mask)))


def test_config_errors_say_how_to_fix() -> None:
    config_class = get_method("random").config_class
    with pytest.raises(ValueError, match=r"Head sparsity must be between 0.0 and 1.0 \(got 1.5\)"):
        config_class(sparsity=1.5)
    with pytest.raises(ValueError, match=r"Heads to remove must be between 0 and"):
        config_class(n_prune=-1)
    with pytest.raises(ValueError, match="Steps must be between 1 and 100"):
        get_method("hisp").config_class(steps=0)
    with pytest.raises(ValueError, match="Remove first must be one of high, low"):
        get_method("entropy").config_class(prune="middle")
    with pytest.raises(ValueError, match="Norm must be one of l2, l1"):
        get_method("magnitude").config_class(norm="l3")
    with pytest.raises(ValueError, match=r"exceeds the heads per layer \(4\); lower it"):
        run_method("random", tiny_context(build_tiny_model("bert")), min_heads_per_layer=5)
    with pytest.raises(ValueError, match="at most 9 can go. Lower the sparsity"):
        run_method(
            "magnitude", tiny_context(build_tiny_model("bert")), n_prune=10, min_heads_per_layer=1
        )
    with pytest.raises(ValueError, match="the model has 12. Lower the number"):
        run_method("hisp", tiny_context(build_tiny_model("bert")), n_prune=13)


def test_random_is_deterministic_per_seed_and_varies_across_seeds() -> None:
    model = build_tiny_model("bert")
    first = run_method("random", tiny_context(model, seed=3), sparsity=0.5)
    again = run_method("random", tiny_context(model, seed=3), sparsity=0.5)
    assert torch.equal(first.mask, again.mask) and torch.equal(first.scores, again.scores)
    others = [run_method("random", tiny_context(model, seed=s), sparsity=0.5) for s in (4, 5, 6)]
    assert all(not torch.equal(first.scores, other.scores) for other in others)
    assert any(not torch.equal(first.mask, other.mask) for other in others)


def _direct_weight_norms(model: nn.Module, arch: str, norm: str) -> torch.Tensor:
    """Per-head norms read straight from the named weights (independent of the adapters)."""
    d = 32 // 4
    grid = torch.zeros(3, 4)
    for index, layer in enumerate(encoder_layers(model)):
        if arch == "distilbert":
            attention = layer.attention
            q, k, v = attention.q_lin, attention.k_lin, attention.v_lin
            out = attention.out_lin
        else:
            q, k, v = (
                layer.attention.self.query,
                layer.attention.self.key,
                layer.attention.self.value,
            )
            out = layer.attention.output.dense
        for head in range(4):
            rows = slice(head * d, (head + 1) * d)
            parts = [q.weight[rows], k.weight[rows], v.weight[rows], out.weight[:, rows]]
            if norm == "l2":
                grid[index, head] = math.sqrt(sum(float((p.detach() ** 2).sum()) for p in parts))
            else:
                grid[index, head] = sum(float(p.detach().abs().sum()) for p in parts)
    return grid


@pytest.mark.parametrize("arch_name", ["bert", "distilbert"])
@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_magnitude_equals_direct_norms(arch_name: str, norm: str) -> None:
    model = build_tiny_model(arch_name)
    expected = _direct_weight_norms(model, arch_name, norm)
    result = run_method("magnitude", tiny_context(model), norm=norm, n_prune=4)
    torch.testing.assert_close(result.scores, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(result.mask, select_lowest(expected, 4))
    normalised = run_method("magnitude", tiny_context(model), norm=norm, normalize_layers=True)
    torch.testing.assert_close(
        normalised.scores, expected / expected.norm(dim=1, keepdim=True), rtol=1e-5, atol=1e-6
    )


def _captured_means(context: PruningContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-pooled mean entropy and [SEP] mass per head, one sentence at a time."""
    entropy_sum = torch.zeros(2, 4, dtype=torch.float64)
    sep_sum = torch.zeros(2, 4, dtype=torch.float64)
    tokens = 0
    for text in context.score_split.texts:
        capture = capture_sentences(context.model, context.tokenizer, [text], with_qk=False)[0]
        probs = capture.attentions.double()  # (L, H, T, T)
        logs = torch.where(probs > 0, probs.log(), torch.zeros_like(probs))
        entropy_sum += -(probs * logs).sum(dim=-1).sum(dim=-1)
        is_sep = torch.tensor([token == "[SEP]" for token in capture.tokens], dtype=torch.float64)
        sep_sum += (probs * is_sep).sum(dim=-1).sum(dim=-1)
        tokens += len(capture.tokens)
    return (entropy_sum / tokens).float(), (sep_sum / tokens).float()


def test_entropy_and_sep_equal_statistics_of_captured_attention() -> None:
    entropy, sep = _captured_means(sentiment_context())
    high = run_method("entropy", sentiment_context(), n_prune=3)
    torch.testing.assert_close(high.scores, -entropy, rtol=1e-4, atol=1e-5)
    assert torch.equal(high.mask, select_lowest(-entropy, 3))
    low = run_method("entropy", sentiment_context(), n_prune=3, prune="low")
    torch.testing.assert_close(low.scores, entropy, rtol=1e-4, atol=1e-5)
    sep_high = run_method("sep", sentiment_context(), n_prune=3)
    torch.testing.assert_close(sep_high.scores, -sep, rtol=1e-4, atol=1e-5)
    assert sep.min() > 0 and sep.max() < 1
    sep_low = run_method("sep", sentiment_context(), n_prune=3, prune="low")
    torch.testing.assert_close(sep_low.scores, sep, rtol=1e-4, atol=1e-5)


def test_uniform_head_has_maximal_entropy_and_known_sep_mass() -> None:
    context = sentiment_context()
    attention = context.model.bert.encoder.layer[1].attention.self
    with torch.no_grad():  # head 2 of layer 1 gets equal logits for every key: uniform attention
        for projection in (attention.query, attention.key):
            projection.weight[16:24] = 0.0
            projection.bias[16:24] = 0.0
    lengths = [
        int(batch.attention_mask[row].sum())
        for batch in context.batches
        for row in range(len(batch))
    ]
    expected_entropy = sum(n * math.log(n) for n in lengths) / sum(lengths)
    expected_sep = len(lengths) / sum(lengths)  # one [SEP] per text, mass 1/n from n queries

    entropy = run_method("entropy", context, n_prune=1)
    assert entropy.scores[1, 2] == pytest.approx(-expected_entropy, rel=1e-5)
    assert entropy.mask.tolist() == [[True] * 4, [True, True, False, True]]
    sep = run_method("sep", context, n_prune=1, prune="low")
    assert sep.scores[1, 2] == pytest.approx(expected_sep, rel=1e-5)
    assert sep.info["n_tokens"] == sum(lengths)


def test_sep_needs_a_separator_token() -> None:
    model = build_tiny_model("bert")
    context = tiny_context(model)
    context.tokenizer = SimpleNamespace(sep_token_id=None)
    with pytest.raises(ValueError, match="no separator token"):
        run_method("sep", context)
