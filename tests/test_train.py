"""Fine-tuning: learning, determinism, early stopping, partial training and config validation."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import real_tokenizer, sentiment_rows, small_bert
from pruning.data import TextSplit
from pruning.evaluate import evaluate_split
from pruning.models import remove_heads
from pruning.train import TrainConfig, TrainEvent, fine_tune, planned_steps


def sentiment_split(n: int = 64) -> TextSplit:
    rows = sentiment_rows(n)
    return TextSplit(
        tuple(text for text, _ in rows),
        tuple(1 if label == "positive" else 0 for _, label in rows),
    )


def test_loss_decreases_and_the_model_learns_a_separable_task() -> None:
    model = small_bert()
    split = sentiment_split(64)
    config = TrainConfig(epochs=6, lr=3e-3, batch_size=8, warmup_ratio=0.1)
    report = fine_tune(model, real_tokenizer(), split, config)
    assert report.steps == report.total_steps == 48
    assert report.epochs == pytest.approx(6.0)
    first = sum(report.losses[:5]) / 5
    last = sum(report.losses[-5:]) / 5
    assert last < 0.5 * first
    assert report.final_loss is not None and report.final_loss < first
    assert not model.training
    metrics = evaluate_split(model, real_tokenizer(), split)
    assert metrics.accuracy >= 0.95


def test_seeded_runs_give_identical_weights_and_other_seeds_differ() -> None:
    split = sentiment_split(32)
    config = TrainConfig(epochs=2, lr=1e-3, batch_size=8)
    first, second, third = small_bert(), small_bert(), small_bert()
    fine_tune(first, real_tokenizer(), split, config)
    fine_tune(second, real_tokenizer(), split, config)
    fine_tune(third, real_tokenizer(), split, TrainConfig(epochs=2, lr=1e-3, batch_size=8, seed=1))
    a, b, c = first.state_dict(), second.state_dict(), third.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert any(not torch.equal(a[name], c[name]) for name in a)


def test_global_rng_state_is_left_untouched() -> None:
    state = torch.get_rng_state()
    fine_tune(small_bert(), real_tokenizer(), sentiment_split(16), TrainConfig(batch_size=8))
    assert torch.equal(torch.get_rng_state(), state)


def test_should_stop_ends_training_early_and_leaves_eval_mode() -> None:
    model = small_bert()
    events: list[TrainEvent] = []
    report = fine_tune(
        model,
        real_tokenizer(),
        sentiment_split(64),
        TrainConfig(epochs=3, batch_size=8),
        on_event=events.append,
        should_stop=lambda: len(events) >= 3,
    )
    assert report.stopped
    assert report.steps == 3 == len(report.losses)
    assert report.total_steps == 24
    assert [event.step for event in events] == [1, 2, 3]
    assert not model.training


def test_events_follow_the_warmup_and_linear_decay_schedule() -> None:
    events: list[TrainEvent] = []
    config = TrainConfig(epochs=2, lr=1e-3, batch_size=4, warmup_ratio=0.25)
    fine_tune(small_bert(), real_tokenizer(), sentiment_split(32), config, on_event=events.append)
    rates = [event.lr for event in events]
    assert [event.step for event in events] == list(range(1, 17))
    assert {event.total_steps for event in events} == {16}
    assert [event.epoch for event in events] == [0] * 8 + [1] * 8
    warmup = 4
    assert all(rates[i] < rates[i + 1] for i in range(warmup))
    assert rates[warmup] == pytest.approx(1e-3)
    assert all(rates[i] > rates[i + 1] for i in range(warmup, len(rates) - 1))
    assert rates[-1] < 0.1e-3
    assert all(event.eta_s >= 0 and event.elapsed_s > 0 for event in events)
    assert events[-1].eta_s == 0 and events[-1].fraction == 1.0


def test_max_steps_caps_training() -> None:
    split = sentiment_split(64)
    config = TrainConfig(epochs=5, batch_size=8, max_steps=7)
    assert planned_steps(len(split), config) == (8, 7)
    report = fine_tune(small_bert(), real_tokenizer(), split, config)
    assert report.steps == 7 and not report.stopped
    assert report.epochs == pytest.approx(7 / 8)


def test_trainable_limits_updates_and_restores_requires_grad() -> None:
    model = small_bert()
    before = copy.deepcopy(model.state_dict())
    fine_tune(
        model,
        real_tokenizer(),
        sentiment_split(16),
        TrainConfig(batch_size=8, lr=1e-2),
        trainable=model.classifier.parameters(),
    )
    after = model.state_dict()
    changed = {name for name in after if not torch.equal(after[name], before[name])}
    assert changed == {"classifier.weight", "classifier.bias"}
    assert all(p.requires_grad for p in model.parameters())


def test_trainable_parameters_train_even_when_frozen_and_flags_are_restored() -> None:
    model = small_bert()
    for p in model.parameters():
        p.requires_grad_(False)
    before = model.classifier.weight.detach().clone()
    fine_tune(
        model,
        real_tokenizer(),
        sentiment_split(16),
        TrainConfig(batch_size=8, lr=1e-2),
        trainable=[model.classifier.weight],
    )
    assert not torch.equal(before, model.classifier.weight)
    assert not any(p.requires_grad for p in model.parameters())


def test_trainable_from_another_model_is_refused() -> None:
    with pytest.raises(ValueError, match="do not belong to the model"):
        fine_tune(
            small_bert(),
            real_tokenizer(),
            sentiment_split(8),
            TrainConfig(),
            trainable=small_bert().parameters(),
        )


def test_a_model_with_removed_heads_fine_tunes() -> None:
    mask = torch.tensor([[True, False, True, False], [False, False, False, True]])
    model = remove_heads(small_bert(), mask)
    before = model.bert.encoder.layer[1].attention.self.query.weight.clone()
    report = fine_tune(model, real_tokenizer(), sentiment_split(16), TrainConfig(batch_size=8))
    assert report.steps == 2
    assert all(torch.isfinite(torch.tensor(report.losses)))
    assert model.bert.encoder.layer[1].attention.self.query.weight.shape == (8, 32)
    assert not torch.equal(before, model.bert.encoder.layer[1].attention.self.query.weight)


def test_labels_beyond_the_model_outputs_are_refused() -> None:
    split = TextSplit(("a", "b", "c"), (0, 1, 2))
    with pytest.raises(ValueError, match="only 2 outputs"):
        fine_tune(small_bert(), real_tokenizer(), split, TrainConfig())


def test_empty_split_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        fine_tune(small_bert(), real_tokenizer(), TextSplit((), ()), TrainConfig())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, r"epochs must be between 1 and 50"),
        ({"lr": 0.0}, r"lr must be between 1e-07 and 0.01"),
        ({"lr": float("nan")}, r"lr must be between"),
        ({"batch_size": "32"}, r"batch_size must be an integer between 1 and 1024"),
        ({"batch_size": True}, r"batch_size must be an integer"),
        ({"warmup_ratio": 0.7}, r"warmup_ratio must be between 0.0 and 0.5"),
        ({"max_steps": 0}, r"max_steps must be between 1 and"),
        ({"max_length": 4}, r"max_length must be between 8 and 512"),
        ({"grad_clip": -1.0}, r"grad_clip must be between 0.0 and 100.0"),
        ({"seed": 1.5}, r"seed must be an integer"),
    ],
)
def test_train_config_validation_says_the_valid_range(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)  # type: ignore[arg-type]


def test_train_config_round_trips_and_carries_ui_metadata() -> None:
    from dataclasses import fields

    config = TrainConfig(epochs=2, max_steps=10)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="Unknown TrainConfig fields"):
        TrainConfig.from_dict({"epoch": 1})
    for spec in fields(TrainConfig):
        assert {"min", "max", "help"} <= set(spec.metadata)


def test_weight_masks_stay_exactly_zero_while_the_rest_trains() -> None:
    model = small_bert()
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    parameter = dict(model.named_parameters())[name]
    mask = torch.rand(parameter.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    before = parameter.detach().clone()
    fine_tune(
        model,
        real_tokenizer(),
        sentiment_split(16),
        TrainConfig(batch_size=8, lr=1e-3, epochs=2),
        weight_masks={name: mask},
    )
    after = dict(model.named_parameters())[name].detach()
    assert torch.count_nonzero(after[~mask]) == 0
    assert not torch.equal(after[mask], before[mask])


def test_weight_masks_with_unknown_names_or_shapes_are_refused() -> None:
    model = small_bert()
    config = TrainConfig(batch_size=8)
    with pytest.raises(ValueError, match="not a parameter"):
        fine_tune(
            model, real_tokenizer(), sentiment_split(8), config, weight_masks={"x": torch.ones(1)}
        )
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    with pytest.raises(ValueError, match="has shape"):
        fine_tune(
            model,
            real_tokenizer(),
            sentiment_split(8),
            config,
            weight_masks={name: torch.ones(2, 2, dtype=torch.bool)},
        )
