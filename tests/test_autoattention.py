"""AutoAttention (binary STE gates) and the L0 hard-concrete baseline: gates, loop, method contract.

The gate dynamics are checked on a toy classifier whose "heads" are plain features (each head's
output is the mean of a per-token value; the logits read the gated head outputs linearly), so
which heads the task needs is known exactly. It exposes the BERT module layout that
:class:`pruning.heads.HeadGates` hooks, so the real methods run on it end to end. The method
contract (trace, copies, hooks, fixed sparsity, seeds, cancellation) is checked on a tiny BERT.
"""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig

from conftest import real_tokenizer
from pruning.batching import make_batches
from pruning.datasets_base import LabelledDataset, TextSplit
from pruning.heads import remove_heads
from pruning.jobs import JobCancelled
from pruning.methods.autoattention import (
    AutoAttention,
    AutoAttentionConfig,
    BinarySTEGates,
    binary_gates,
)
from pruning.methods.base import PruningContext, get_method, select_lowest
from pruning.methods.gate_training import make_gate_optimizer, train_head_gates
from pruning.methods.l0_gates import HardConcreteGates, L0Gates, L0GatesConfig
from test_methods import hook_count, sentiment_context

# ---------------------------------------------------------------------------------------------
# Toy classifier: heads are features with a known role.

# Per head, the word that sets its value to +1 and the word that sets it to -1.
HEAD_WORDS = (("red", "blue"), ("cat", "dog"), ("one", "two"))


class _Part(nn.Module):
    """A bare container module (attention, its self part, its output part, a layer)."""


class ToyHeads(nn.Module):
    """``n`` one-dimensional heads: head ``h`` outputs the token mean of its value column.

    Logits are ``readout(gated head outputs)``; the readout is the layer's attention output
    projection, so head gates act exactly where :class:`HeadGates` puts them.
    """

    def __init__(self, readout_weight: torch.Tensor) -> None:
        super().__init__()
        n_heads = len(HEAD_WORDS)
        tokenizer = real_tokenizer()
        self.config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=n_heads,
            num_hidden_layers=1,
            num_attention_heads=n_heads,
            num_labels=2,
        )
        self.values = nn.Embedding(tokenizer.vocab_size, n_heads)
        with torch.no_grad():
            self.values.weight.zero_()
            for head, (plus, minus) in enumerate(HEAD_WORDS):
                self.values.weight[tokenizer.convert_tokens_to_ids(plus), head] = 1.0
                self.values.weight[tokenizer.convert_tokens_to_ids(minus), head] = -1.0
        attention = _Part()
        attention.self = _Part()
        attention.self.num_attention_heads = n_heads
        attention.self.attention_head_size = 1
        attention.output = _Part()
        attention.output.dense = nn.Linear(n_heads, 2)
        with torch.no_grad():
            attention.output.dense.weight.copy_(readout_weight)
            attention.output.dense.bias.zero_()
        layer = _Part()
        layer.attention = attention
        self.encoder = _Part()
        self.encoder.layer = nn.ModuleList([layer])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> SimpleNamespace:
        keep = attention_mask.unsqueeze(-1).float()
        heads = (self.values(input_ids) * keep).sum(dim=1) / keep.sum(dim=1)
        return SimpleNamespace(logits=self.encoder.layer[0].attention.output.dense(heads))


def toy_rows(n: int, label_of: Any, seed: int = 0) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``n`` texts with one word per head (random sign) and labels ``label_of(signs)``."""
    generator = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for _ in range(n):
        signs = (torch.randint(0, 2, (len(HEAD_WORDS),), generator=generator) * 2 - 1).tolist()
        words = [
            pair[0] if sign > 0 else pair[1] for pair, sign in zip(HEAD_WORDS, signs, strict=True)
        ]
        texts.append(" ".join(words))
        labels.append(int(label_of(signs)))
    return tuple(texts), tuple(labels)


def toy_context(label_of: Any, *, scale: float = 4.0, **kwargs: Any) -> PruningContext:
    """The toy model (readout: class 1 = positive sum of head values) on 64 labelled texts."""
    readout = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]) * scale
    texts, labels = toy_rows(64, label_of)
    split = TextSplit(texts, labels)
    dataset = LabelledDataset("toy", ("no", "yes"), split, split, split, "fp", "toy")
    tokenizer = real_tokenizer()
    return PruningContext(
        model=ToyHeads(readout),
        tokenizer=tokenizer,
        dataset=dataset,
        score_split=split,
        batches=make_batches(tokenizer, texts, labels, batch_size=16),
        device=torch.device("cpu"),
        **kwargs,
    )


def majority(signs: list[int]) -> bool:
    return sum(signs) > 0


def first_head(signs: list[int]) -> bool:
    return signs[0] > 0


def gate_events(result: Any) -> list[Any]:
    return [event for event in result.trace if event.kind == "gates"]


TOY = {"train_weights": False, "batch_size": 16, "snapshot_every": 1}


# ---------------------------------------------------------------------------------------------
# The straight-through estimator.


def test_ste_forward_is_exactly_binary() -> None:
    weight = torch.tensor([-2.0, -1e-8, 0.0, 1e-8, 0.3, 7.0], dtype=torch.float64)
    gates = binary_gates(weight)
    assert gates.dtype == torch.float64
    assert gates.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    grid = binary_gates(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)))
    assert set(grid.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize(
    ("reading", "derivative"), [("sigmoid", torch.sigmoid), ("softplus", F.softplus)]
)
def test_ste_backward_is_the_chosen_eq10_factor(reading: str, derivative: Any) -> None:
    weight = torch.tensor([-3.0, -0.5, 0.0, 0.2, 2.5], dtype=torch.float64, requires_grad=True)
    upstream = torch.tensor([0.7, -1.3, 2.0, 0.4, -0.9], dtype=torch.float64)
    (binary_gates(weight, reading) * upstream).sum().backward()
    assert weight.grad is not None
    with torch.no_grad():
        factor = derivative(weight)
    torch.testing.assert_close(weight.grad, upstream * factor, rtol=1e-12, atol=0)
    # A closed gate still gets a gradient: what lets it reopen.
    assert bool((weight.grad[:2] != 0).all())
    if reading == "sigmoid":  # the derivative of Softplus, by central differences
        step = 1e-6
        with torch.no_grad():
            slope = (F.softplus(weight + step) - F.softplus(weight - step)) / (2 * step)
        torch.testing.assert_close(weight.grad, upstream * slope, rtol=1e-8, atol=1e-10)


def test_eq10_gradient_of_each_reading_on_a_hand_computed_graph() -> None:
    """``L = (2 G1 + 5 G2 - 1)^2 + 0.1 (G1 + G2)`` at ``W' = (ln 3, -ln 3)``.

    Forward: ``G = (1, 0)``, ``L = (2 - 1)^2 + 0.1 = 1.1``. Backward:
    ``dL/dG = (2 * 1 * 2 + 0.1, 2 * 1 * 5 + 0.1) = (4.1, 10.1)``.
    sigmoid reading: ``sigmoid(ln 3) = 3/4``, ``sigmoid(-ln 3) = 1/4``, so
    ``dL/dW' = (3.075, 2.525)``. Softplus reading: ``Softplus(ln 3) = ln 4``,
    ``Softplus(-ln 3) = ln(4/3)``, so ``dL/dW' = (4.1 ln 4, 10.1 ln(4/3)) = (5.6838, 2.9056)``.
    One SGD step of rate 0.1 (eq. 10's update) then moves ``W'`` by ``-0.1 * dL/dW'``.
    """
    expected = {
        "sigmoid": (3.075, 2.525),
        "softplus": (4.1 * math.log(4.0), 10.1 * math.log(4.0 / 3.0)),
    }
    assert expected["softplus"] == pytest.approx((5.683807, 2.905589), abs=1e-6)
    start = (math.log(3.0), -math.log(3.0))
    for reading, gradient in expected.items():
        weight = torch.tensor(start, dtype=torch.float64, requires_grad=True)
        gates = binary_gates(weight, reading)
        assert gates.tolist() == [1.0, 0.0]
        loss = (2 * gates[0] + 5 * gates[1] - 1) ** 2 + 0.1 * gates.sum()
        assert float(loss.detach()) == pytest.approx(1.1, abs=1e-15)
        optimizer = make_gate_optimizer(weight, "sgd", 0.1)
        loss.backward()
        assert weight.grad is not None
        assert weight.grad.tolist() == pytest.approx(gradient, rel=1e-12)
        optimizer.step()
        moved = [w - 0.1 * g for w, g in zip(start, gradient, strict=True)]
        assert weight.detach().tolist() == pytest.approx(moved, rel=1e-12)


def test_an_unknown_eq10_reading_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="use 'sigmoid'.*or 'softplus'"):
        binary_gates(torch.zeros(2), "relu")
    with pytest.raises(ValueError, match="use 'sigmoid'"):
        BinarySTEGates(0.3, 0.05, "identity")
    with pytest.raises(ValueError, match="Eq. 10 gradient must be one of sigmoid, softplus"):
        AutoAttentionConfig(ste_gradient="relu")


# ---------------------------------------------------------------------------------------------
# Gate dynamics on the toy (the real method and loop, weights frozen).


def test_without_penalty_every_needed_head_stays_open() -> None:
    result = AutoAttention(AutoAttentionConfig(mu=0.0, steps=12, **TOY)).run(toy_context(majority))
    events = gate_events(result)
    assert len(events) == 13
    assert all(event.data["open_gates"] == 3 for event in events)
    # Every head helps the majority vote, so the task gradient raises every W'.
    assert bool((result.scores > torch.tensor(events[0].data["w"])).all())
    assert result.mask.all() and result.info["reopened_count"] == 0
    assert result.model is None  # weights frozen: nothing changed to hand back


def test_a_large_penalty_closes_gates() -> None:
    result = AutoAttention(AutoAttentionConfig(mu=1.0, gate_lr=1.0, steps=12, **TOY)).run(
        toy_context(majority)
    )
    events = gate_events(result)
    assert events[0].data["open_gates"] == 3
    assert events[-1].data["open_gates"] == 0 and not result.mask.any()
    assert events[-1].data["penalty"] == 0.0 and events[0].data["penalty"] == 3.0


class StartClosed(BinarySTEGates):
    """AutoAttention gates whose head (0, 0) starts closed, just below zero."""

    def initial(self, n_layers: int, n_heads: int, generator: torch.Generator) -> torch.Tensor:
        weight = super().initial(n_layers, n_heads, generator)
        weight[0, 0] = -0.05
        return weight


def test_a_closed_gate_reopens_when_the_task_needs_its_head() -> None:
    config = AutoAttentionConfig(mu=0.0, gate_lr=1.0, steps=8, **TOY)
    context = toy_context(first_head)  # only head 0 carries the label
    result = train_head_gates(context, config, StartClosed(0.3, 0.05), title="toy")
    events = gate_events(result)
    assert events[0].data["open"] == [[0, 1, 1]]
    assert events[-1].data["open"][0][0] == 1 and result.mask[0, 0]
    reopened = result.trace[-1].data["reopened"]
    assert reopened and reopened[0]["layer"] == 0 and reopened[0]["head"] == 0
    assert reopened[0]["closed_at"] == 0 and reopened[0]["reopened_at"] > 0
    assert result.info["reopened_count"] == len(reopened)


def test_the_penalty_closes_useless_heads_and_the_needed_one_keeps_reopening() -> None:
    config = AutoAttentionConfig(mu=0.5, gate_lr=1.0, steps=30, **TOY)
    result = AutoAttention(config).run(toy_context(first_head))
    assert not result.mask[0, 1:].any()
    # The penalty closes head 0 too, and the task reopens it (G only switches, so W' hovers at 0).
    reopened = result.trace[-1].data["reopened"]
    assert len(reopened) >= 3
    assert {(entry["layer"], entry["head"]) for entry in reopened} == {(0, 0)}
    assert all(entry["closed_at"] < entry["reopened_at"] for entry in reopened)
    # Higher W' = more important: the signal head ranks first.
    assert int(result.scores.argmax()) == 0 and float(result.scores[0, 1:].max()) < -1.0


def test_the_loop_applies_the_chosen_reading_to_the_first_gate_step() -> None:
    """Same seed, same batch, same gates: the first SGD step of each ``W'`` differs between the
    readings exactly by ``Softplus(W') / sigmoid(W')`` (``dL/dG`` is the same in both)."""
    steps = {}
    for reading in ("sigmoid", "softplus"):
        config = AutoAttentionConfig(steps=1, ste_gradient=reading, **TOY)
        result = AutoAttention(config).run(toy_context(majority))
        events = gate_events(result)
        assert [event.data["ste_gradient"] for event in events] == [reading, reading]
        assert result.info["ste_gradient"] == reading
        start = torch.tensor(events[0].data["w"], dtype=torch.float64)
        steps[reading] = (start, torch.tensor(events[1].data["w"], dtype=torch.float64) - start)
    start, sigmoid_step = steps["sigmoid"]
    assert torch.equal(start, steps["softplus"][0])
    assert bool((sigmoid_step.abs() > 1e-3).all())
    ratio = F.softplus(start) / torch.sigmoid(start)
    torch.testing.assert_close(steps["softplus"][1], sigmoid_step * ratio, rtol=1e-4, atol=1e-7)


def test_the_literal_reading_can_diverge_and_says_what_to_change() -> None:
    """With one needed head, the Softplus factor grows with ``W'``: ``W'`` grows geometrically."""
    config = AutoAttentionConfig(
        steps=150, ste_gradient="softplus", **{**TOY, "snapshot_every": 150}
    )
    with pytest.raises(ValueError, match="NaN or infinite; lower gate_lr, or use ste_gradient="):
        AutoAttention(config).run(toy_context(first_head))
    sigmoid = AutoAttention(dataclasses.replace(config, ste_gradient="sigmoid"))
    assert bool(torch.isfinite(sigmoid.run(toy_context(first_head)).scores).all())


# ---------------------------------------------------------------------------------------------
# The method contract on a tiny BERT.

QUICK = {"steps": 6, "batch_size": 4, "snapshot_every": 2}


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def test_end_to_end_on_a_tiny_bert() -> None:
    context = sentiment_context(n=12, batch_size=4)
    before, hooks, model = state_of(context.model), hook_count(context.model), context.model
    result = AutoAttention(AutoAttentionConfig(lr=1e-3, **QUICK)).run(context)

    trace = result.trace
    assert trace and trace == tuple(context.trace)
    assert [event.step for event in trace] == list(range(len(trace)))
    assert [e.fraction for e in trace] == sorted(e.fraction for e in trace)
    events = gate_events(result)
    assert [event.data["train_step"] for event in events] == [0, 2, 4, 6]
    for index, event in enumerate(events):
        data = event.data
        assert data["total_steps"] == 6 and data["gate_kind"] == "ste"
        assert data["ste_gradient"] == "sigmoid"
        assert torch.tensor(data["w"]).shape == (2, 4)
        assert torch.tensor(data["open"]).shape == (2, 4)
        assert set(torch.tensor(data["open"]).unique().tolist()) <= {0, 1}
        assert data["open"] == (torch.tensor(data["w"]) > 0).int().tolist()
        assert data["open_gates"] == sum(map(sum, data["open"]))
        assert data["penalty"] == pytest.approx(1e-3 * data["open_gates"])
        assert (data["task_loss"] is None) == (index == 0)
        assert 0.0 <= data["val_metric"] <= 1.0 and data["val_metric_name"] == "accuracy"
    assert events[0].data["open_gates"] == 8  # every gate starts open
    final = trace[-1]
    assert final.kind == "final" and final.fraction == 1.0
    assert final.data["mask"] == result.mask.tolist() and final.data["fixed_sparsity"] is None
    assert final.data["w"] == result.scores.tolist() == events[-1].data["w"]
    json.dumps([event.to_dict() for event in trace])
    json.dumps(result.info)

    assert result.mask.dtype == torch.bool and result.mask.shape == (2, 4)
    assert torch.equal(result.mask, result.scores > 0)
    assert result.info["steps"] == 6 and result.info["removed"] == int((~result.mask).sum())
    # The training budget a baseline needs for the same fine-tuning, and the eq. 10 reading.
    assert result.info["batch_size"] == 4 and result.info["train_texts"] == 24
    assert result.info["lr"] == 1e-3 and result.info["ste_gradient"] == "sigmoid"
    # The context model is untouched; the returned copy was trained and carries no hooks.
    assert hook_count(model) == hooks and not model.training
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    assert result.model is not None and result.model is not model
    assert hook_count(result.model) == 0 and not result.model.training
    changed = state_of(result.model)
    assert any(not torch.equal(changed[key], before[key]) for key in before)
    assert all(parameter.requires_grad for parameter in result.model.parameters())


def test_fixed_sparsity_removes_exactly_the_requested_heads() -> None:
    for sparsity, minimum in ((0.5, 0), (0.75, 1), (0.25, 3)):
        config = AutoAttentionConfig(fixed_sparsity=sparsity, min_heads_per_layer=minimum, **QUICK)
        result = AutoAttention(config).run(sentiment_context(n=8, batch_size=4))
        assert int((~result.mask).sum()) == round(sparsity * 8)
        assert bool((result.mask.sum(dim=1) >= minimum).all())
        # The kept heads are the top ones by W' under the per-layer minimum.
        expected = select_lowest(result.scores, round(sparsity * 8), min_heads_per_layer=minimum)
        assert torch.equal(result.mask, expected)
        assert result.trace[-1].data["fixed_sparsity"] == sparsity


def test_impossible_fixed_sparsity_is_refused_before_training() -> None:
    context = sentiment_context(n=8, batch_size=4)
    config = AutoAttentionConfig(fixed_sparsity=0.5, min_heads_per_layer=3, **QUICK)
    with pytest.raises(ValueError, match="at most 2 can go. Lower the sparsity"):
        AutoAttention(config).run(context)
    assert context.trace == []
    with pytest.raises(ValueError, match=r"exceeds the heads per layer \(4\); lower it"):
        AutoAttention(AutoAttentionConfig(min_heads_per_layer=5, **QUICK)).run(context)


def test_minimum_heads_per_layer_keeps_the_best_heads_when_gates_close() -> None:
    config = AutoAttentionConfig(mu=10.0, min_heads_per_layer=2, **QUICK)
    result = AutoAttention(config).run(sentiment_context(n=8, batch_size=4))
    assert result.info["open_gates"] == 0  # the penalty closed everything
    assert result.mask.sum(dim=1).tolist() == [2, 2]
    for layer in range(2):
        top = torch.argsort(-result.scores[layer], stable=True)[:2]
        assert result.mask[layer, top].all()


def test_same_seed_same_run_and_another_seed_differs() -> None:
    def run(seed: int) -> Any:
        config = AutoAttentionConfig(lr=1e-3, gate_lr=50.0, **QUICK)
        return AutoAttention(config).run(sentiment_context(n=12, batch_size=4, seed=seed))

    first, second, other = run(0), run(0), run(1)
    assert torch.equal(first.scores, second.scores) and torch.equal(first.mask, second.mask)
    assert [e.data for e in first.trace] == [e.data for e in second.trace]
    assert not torch.equal(first.scores, other.scores)


def test_a_stop_request_raises_job_cancelled() -> None:
    for allowed in (0, 3):
        calls = iter(range(100))
        context = sentiment_context(
            n=8, batch_size=4, should_stop=lambda a=allowed, c=calls: next(c) >= a
        )
        before, hooks = state_of(context.model), hook_count(context.model)
        with pytest.raises(JobCancelled):
            AutoAttention(AutoAttentionConfig(**QUICK)).run(context)
        assert hook_count(context.model) == hooks
        assert all(torch.equal(v, before[k]) for k, v in context.model.state_dict().items())


def test_epochs_replace_steps_and_frozen_weights_return_no_model() -> None:
    context = sentiment_context(n=10, batch_size=4)
    before = state_of(context.model)
    config = AutoAttentionConfig(epochs=2, batch_size=4, train_weights=False, snapshot_every=100)
    result = AutoAttention(config).run(context)
    assert result.info["steps"] == 6  # 2 x ceil(10 / 4)
    assert [e.data["train_step"] for e in gate_events(result)] == [0, 6]
    assert result.model is None
    assert all(torch.equal(v, before[k]) for k, v in context.model.state_dict().items())


def test_inputs_it_cannot_train_on_are_refused_with_a_fix() -> None:
    context = sentiment_context(n=8, batch_size=4)
    context.dataset = dataclasses.replace(context.dataset, train=TextSplit((), ()))
    with pytest.raises(ValueError, match="training split, which is empty; load a dataset"):
        AutoAttention(AutoAttentionConfig(**QUICK)).run(context)
    context = sentiment_context(n=8, batch_size=4)
    for batch in context.batches:
        batch.labels = None
    with pytest.raises(ValueError, match="build their batches with labels"):
        L0Gates(L0GatesConfig(**QUICK)).run(context)
    context = sentiment_context(n=8, batch_size=4)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 2] = False
    context.model = remove_heads(context.model, mask)
    with pytest.raises(ValueError, match="already has 1 of 8 heads removed"):
        AutoAttention(AutoAttentionConfig(**QUICK)).run(context)


def test_registry_and_config_errors() -> None:
    assert get_method("autoattention") is AutoAttention and get_method("l0_gates") is L0Gates
    for method in (AutoAttention, L0Gates):
        assert method.granularity == "head" and "http" in method.paper
        assert "http" in (method.__doc__ or "")
        json.dumps(method.config_class().to_dict())
    assert AutoAttentionConfig(gate_lr=2).gate_lr == 2.0 and isinstance(
        AutoAttentionConfig(gate_lr=2).gate_lr, float
    )
    assert AutoAttentionConfig(ste_gradient="softplus").ste_gradient == "softplus"
    with pytest.raises(ValueError, match="raise the mean above 0.4 or lower the spread"):
        AutoAttentionConfig(init_mean=0.3, init_std=0.2)
    with pytest.raises(ValueError, match="steps must be a whole number"):
        AutoAttentionConfig(steps=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Gate optimizer must be one of sgd, adam"):
        AutoAttentionConfig(gate_optimizer="rmsprop")
    with pytest.raises(ValueError, match="Fixed sparsity must be between 0.0 and 1.0"):
        AutoAttentionConfig(fixed_sparsity=1.5)
    with pytest.raises(ValueError, match=r"Stretch low \(gamma\) must be between"):
        L0GatesConfig(gamma=0.1)
    with pytest.raises(ValueError, match=r"Stretch high \(zeta\) must be between"):
        L0GatesConfig(zeta=0.9)


# The run key hashes ``to_dict()``: the default config's dict from before ``ste_gradient`` existed.
OLD_DEFAULT_DICT = {
    "steps": 300,
    "epochs": None,
    "lr": 3e-05,
    "gate_lr": 5.0,
    "gate_optimizer": "sgd",
    "mu": 0.001,
    "batch_size": 32,
    "snapshot_every": 10,
    "fixed_sparsity": None,
    "min_heads_per_layer": 0,
    "train_weights": True,
    "init_mean": 0.3,
    "init_std": 0.05,
}


def test_the_default_reading_keeps_old_run_keys_and_softplus_is_keyed_apart() -> None:
    assert AutoAttentionConfig().to_dict() == OLD_DEFAULT_DICT
    changed = AutoAttentionConfig(gate_lr=2.0, steps=100).to_dict()
    assert changed == {**OLD_DEFAULT_DICT, "gate_lr": 2.0, "steps": 100}
    literal = AutoAttentionConfig(ste_gradient="softplus")
    assert literal.to_dict() == {**OLD_DEFAULT_DICT, "ste_gradient": "softplus"}
    for config in (AutoAttentionConfig(), literal):
        assert AutoAttentionConfig.from_dict(config.to_dict()) == config
        json.dumps(config.to_dict())
    explicit = AutoAttentionConfig.from_dict({"ste_gradient": "sigmoid"})
    assert explicit.to_dict() == AutoAttentionConfig().to_dict()


# ---------------------------------------------------------------------------------------------
# L0 hard-concrete gates.


def test_l0_test_time_gates_are_deterministic_louizos_estimates() -> None:
    gates = HardConcreteGates(temperature=0.33, gamma=-0.1, zeta=1.1, init_log_alpha=2.5)
    log_alpha = torch.tensor([[-5.0, -2.0, 0.0, 0.5, 2.4, 6.0]])
    first, second = gates.test_gates(log_alpha), gates.test_gates(log_alpha)
    assert torch.equal(first, second)
    expected = [
        min(1.0, max(0.0, 1.2 / (1 + math.exp(-value)) - 0.1)) for value in log_alpha[0].tolist()
    ]
    torch.testing.assert_close(first[0], torch.tensor(expected))
    assert first[0, 0] == 0.0 and first[0, -1] == 1.0
    assert gates.open_mask(log_alpha).tolist() == [[False, False, False, True, True, True]]


def test_l0_penalty_is_equation_12() -> None:
    beta, gamma, zeta = 0.5, -0.2, 1.3
    gates = HardConcreteGates(temperature=beta, gamma=gamma, zeta=zeta, init_log_alpha=0.0)
    log_alpha = torch.tensor([[-3.0, -0.4, 0.0], [0.8, 2.0, 5.0]], dtype=torch.float64)
    expected = sum(
        1 / (1 + math.exp(-(value - beta * math.log(-gamma / zeta))))
        for value in log_alpha.flatten().tolist()
    )
    assert float(gates.penalty(log_alpha)) == pytest.approx(expected, rel=1e-12)
    # It is the probability that a training gate is non-zero: check by sampling.
    generator = torch.Generator().manual_seed(0)
    samples = torch.stack([gates.training_gates(log_alpha, generator) for _ in range(4000)])
    empirical = (samples > 0).double().mean(dim=0)
    torch.testing.assert_close(empirical, gates.open_probability(log_alpha), atol=0.03, rtol=0)


def test_l0_training_gates_are_stochastic_in_the_unit_interval() -> None:
    gates = HardConcreteGates(temperature=0.33, gamma=-0.1, zeta=1.1, init_log_alpha=0.0)
    log_alpha = torch.zeros(2, 8, requires_grad=True)
    generator = torch.Generator().manual_seed(0)
    samples = torch.stack([gates.training_gates(log_alpha, generator) for _ in range(200)])
    assert bool(((samples >= 0) & (samples <= 1)).all())
    assert bool((samples == 0).any()) and bool((samples == 1).any())
    assert bool(((samples > 0) & (samples < 1)).any())
    assert not torch.equal(samples[0], samples[1])
    samples.sum().backward()  # differentiable in log_alpha
    assert log_alpha.grad is not None and bool((log_alpha.grad != 0).any())
    again = gates.training_gates(log_alpha, torch.Generator().manual_seed(0))
    assert torch.equal(again, samples[0])


def test_l0_end_to_end_on_a_tiny_bert() -> None:
    context = sentiment_context(n=12, batch_size=4)
    before = state_of(context.model)
    result = L0Gates(L0GatesConfig(lr=1e-3, gate_lr=0.5, mu=0.05, **QUICK)).run(context)
    events = gate_events(result)
    assert [event.data["train_step"] for event in events] == [0, 2, 4, 6]
    for index, event in enumerate(events):
        data = event.data
        assert data["gate_kind"] == "l0"
        prob = torch.tensor(data["prob"])
        assert prob.shape == (2, 4) and bool(((prob > 0) & (prob < 1)).all())
        assert data["expected_open"] == pytest.approx(float(prob.sum()))
        assert data["penalty"] == pytest.approx(0.05 * float(prob.sum()), rel=1e-5)
        assert (data["train_gate_mean"] is None) == (index == 0)
        assert data["open"] == (torch.tensor(data["w"]) > 0).int().tolist()  # gate > 0.5
    assert events[0].data["w"] == [[2.5] * 4] * 2 and events[0].data["open_gates"] == 8
    assert 0.0 <= events[-1].data["train_gate_mean"] <= 1.0
    assert torch.equal(result.mask, result.scores > 0)
    for key in ("val_metric_gates", "val_metric_mask"):
        assert 0.0 <= result.info[key] <= 1.0
    assert result.info["gate_optimizer"] == "adam" and result.info["gate_kind"] == "l0"
    assert result.model is not None and hook_count(result.model) == 0
    assert all(torch.equal(v, before[k]) for k, v in context.model.state_dict().items())
    json.dumps([event.to_dict() for event in result.trace])
