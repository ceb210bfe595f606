"""Unstructured weight-pruning baselines of MCAP's Table I: IMP, L1 unstructured, random weights."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import Any

import pytest
import torch
from test_deepcuts import assert_same_weights, deepcuts_context, snapshot
from torch import nn
from torch.nn.utils import prune

from conftest import build_tiny_model
from pruning.jobs import JobCancelled
from pruning.methods import unstructured as unstructured_module
from pruning.methods.base import PruneResult, PruningContext, get_method
from pruning.methods.unstructured import (
    CRITERIA,
    TABLE1_PRESETS,
    UnstructuredConfig,
    UnstructuredPruning,
    criterion_scores,
    ratio_for_sparsity,
    round_sparsities,
)
from pruning.weight_masks import head_density
from pruning.weight_scores import keep_count, prunable_weights

Masks = dict[str, torch.Tensor]


def run(context: PruningContext, **config: Any) -> PruneResult:
    settings = {"batch_size": 4, **config}
    return UnstructuredPruning(UnstructuredConfig(**settings)).run(context)


def record_round_masks(monkeypatch: pytest.MonkeyPatch) -> list[Masks]:
    """Capture the masks every round computes (the result only carries the final ones)."""
    rounds: list[Masks] = []
    original = unstructured_module.masks_for_ratio

    def recording(*args: Any, **kwargs: Any) -> Masks:
        masks = original(*args, **kwargs)
        rounds.append({name: mask.clone() for name, mask in masks.items()})
        return masks

    monkeypatch.setattr(unstructured_module, "masks_for_ratio", recording)
    return rounds


def expected_keep(numel: int, sparsity: float) -> int:
    return keep_count(numel, 1.0 / (1.0 - sparsity))


def kept_total(masks: Masks) -> tuple[int, int]:
    return sum(int(m.sum()) for m in masks.values()), sum(m.numel() for m in masks.values())


def same_masks(a: Masks, b: Masks) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def top_k_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[scores.flatten().topk(keep).indices] = True
    return mask.reshape(scores.shape)


# --- config, registry, presets ------------------------------------------------------------------


def test_registered_as_a_weight_level_method_with_its_paper() -> None:
    method = get_method("unstructured")
    assert method is UnstructuredPruning and method.granularity == "weight"
    assert method.title == "Unstructured weights" and "http" in method.paper
    doc = " ".join((method.__doc__ or "").split())
    assert "2HXUDneIMH" in doc and "random unstructured pruning" in doc and "extra training" in doc
    assert UnstructuredConfig.from_dict(UnstructuredConfig().to_dict()) == UnstructuredConfig()
    assert type(UnstructuredConfig(sparsity=0).to_dict()["sparsity"]) is float
    specs = {spec.name: spec for spec in dataclasses.fields(UnstructuredConfig)}
    assert specs["criterion"].metadata["choices"] == CRITERIA == ("l1", "random")
    assert specs["scope"].metadata["choices"] == ("layer", "global")
    assert all("label" in spec.metadata and "help" in spec.metadata for spec in specs.values())
    defaults = UnstructuredConfig()
    assert (defaults.sparsity, defaults.rounds, defaults.round_steps) == (0.2, 1, 50)


def test_table1_presets_are_valid_configs_with_the_stated_settings() -> None:
    assert list(TABLE1_PRESETS) == ["IMP", "L1 unstructured", "Random weights"]
    configs = {name: UnstructuredConfig(**preset) for name, preset in TABLE1_PRESETS.items()}
    settings = {
        name: (c.sparsity, c.criterion, c.scope, c.rounds, c.trains_between_rounds)
        for name, c in configs.items()
    }
    assert settings == {
        "IMP": (0.2, "l1", "global", 4, True),
        "L1 unstructured": (0.2, "l1", "layer", 1, False),
        "Random weights": (0.2, "random", "layer", 1, False),
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sparsity": 1.0}, "Weight sparsity must be between 0.0 and 0.99"),
        ({"sparsity": -0.1}, "Weight sparsity must be between"),
        ({"sparsity": "0.2"}, "sparsity must be a number"),
        ({"criterion": "snip"}, "Criterion must be one of l1, random"),
        ({"scope": "heads"}, "Scope must be one of layer, global"),
        ({"rounds": 0}, "Rounds must be between 1 and 100"),
        ({"rounds": 2.5}, "rounds must be a whole number"),
        ({"round_steps": -1}, "Steps between rounds must be between 0"),
        ({"batch_size": True}, "batch_size must be a whole number"),
        ({"round_lr": 0.0}, "Learning rate between rounds must be between"),
    ],
)
def test_config_errors_say_how_to_fix(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UnstructuredConfig(**settings)


def test_unknown_settings_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known:"):
        UnstructuredConfig.from_dict({"sparsity": 0.2, "amount": 0.2})


def test_round_sparsities_remove_the_same_share_of_what_remains() -> None:
    targets = round_sparsities(0.2, 4)
    assert len(targets) == 4 and targets[-1] == 0.2
    densities = [1.0] + [1.0 - s for s in targets]
    shares = [after / before for before, after in itertools.pairwise(densities)]
    assert shares == pytest.approx([0.8**0.25] * 4)
    assert round_sparsities(0.5, 1) == (0.5,)
    assert round_sparsities(0.0, 3) == pytest.approx((0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="at least one round"):
        round_sparsities(0.2, 0)


def test_criterion_scores_are_magnitudes_or_priorities_and_minus_inf_when_pruned() -> None:
    weights = {"a": torch.tensor([[0.5, -2.0], [0.1, -0.3]])}
    kept = {"a": torch.tensor([[True, False], [True, True]])}
    l1 = criterion_scores(weights, "l1", kept=kept)["a"]
    expected = torch.tensor([[0.5, float("-inf")], [0.1, 0.3]])
    assert l1.dtype == torch.float32 and torch.equal(l1, expected)
    priorities = {"a": torch.tensor([[0.9, 0.8], [0.7, 0.6]])}
    drawn = criterion_scores(weights, "random", priorities=priorities)["a"]
    assert torch.equal(drawn, priorities["a"])
    with pytest.raises(ValueError, match="priorities"):
        criterion_scores(weights, "random")


# --- one shot -------------------------------------------------------------------------------------


def test_one_shot_contract_on_every_architecture(arch: str) -> None:
    context = deepcuts_context(arch, n_train=0)
    before = snapshot(context.model)
    result = run(context, sparsity=0.2)
    assert_same_weights(context.model, before)
    weights = prunable_weights(context.model)
    assert list(result.weight_masks) == list(weights)
    for name, mask in result.weight_masks.items():
        assert mask.dtype == torch.bool and mask.shape == weights[name].shape
        assert int(mask.sum()) == expected_keep(mask.numel(), 0.2), name
    assert result.mask.dtype == torch.bool and result.mask.shape == (3, 4)
    assert result.scores is not None and result.scores.dtype == torch.float32
    torch.testing.assert_close(result.scores, head_density(context.model, result.weight_masks))
    assert torch.equal(result.mask, result.scores > 0)
    assert result.model is not None and result.model is not context.model
    masked = dict(result.model.named_parameters())
    for name, mask in result.weight_masks.items():
        assert bool((masked[name][~mask] == 0).all())
        assert torch.equal(masked[name][mask], weights[name][mask])
    kept, total = kept_total(result.weight_masks)
    assert [event.kind for event in result.trace] == ["round", "final"]
    assert [event.step for event in result.trace] == [0, 1]
    assert [event.fraction for event in result.trace] == [1.0, 1.0]
    assert result.trace[0].data == {
        "round": 1,
        "rounds": 1,
        "sparsity": 0.2,
        "kept": kept,
        "total": total,
        "train_loss": None,
    }
    assert result.trace[1].data == {"sparsity": 1.0 - kept / total, "kept": kept, "total": total}
    assert result.info["train_steps"] == 0 and result.info["train_losses"] == [None]


def test_l1_layer_equals_manual_top_k_and_torch_l1_unstructured() -> None:
    context = deepcuts_context(n_train=0)
    result = run(context, sparsity=0.3, criterion="l1", scope="layer")
    modules = {
        name: module
        for name, module in copy.deepcopy(context.model).named_modules()
        if isinstance(module, nn.Linear)
    }
    for name, weight in prunable_weights(context.model).items():
        keep = expected_keep(weight.numel(), 0.3)
        assert torch.equal(result.weight_masks[name], top_k_mask(weight.detach().abs(), keep))
        module = modules[name.removesuffix(".weight")]
        prune.l1_unstructured(module, "weight", amount=0.3)
        assert torch.equal(result.weight_masks[name], module.weight_mask.bool()), name


def test_global_scope_keeps_an_exact_count_over_all_matrices_by_one_threshold() -> None:
    context = deepcuts_context(n_train=0)
    result = run(context, sparsity=0.35, criterion="l1", scope="global")
    weights = prunable_weights(context.model)
    kept, total = kept_total(result.weight_masks)
    assert kept == expected_keep(total, 0.35)
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    expected = top_k_mask(flat, kept)
    got = torch.cat([result.weight_masks[name].flatten() for name in weights])
    assert torch.equal(got, expected)
    densities = {round(float(m.float().mean()), 4) for m in result.weight_masks.values()}
    assert len(densities) > 1  # not the same share per matrix: one ranking over all of them


def test_random_weights_are_seeded_exact_and_unlike_magnitude() -> None:
    def masks(seed: int, criterion: str = "random") -> Masks:
        context = deepcuts_context(seed=seed, n_train=0)
        return run(context, sparsity=0.2, criterion=criterion).weight_masks

    first, again, other, l1 = masks(3), masks(3), masks(4), masks(3, "l1")
    assert same_masks(first, again)
    assert not same_masks(first, other) and not same_masks(first, l1)
    generator = torch.Generator().manual_seed(3)
    for name, weight in prunable_weights(build_tiny_model("bert")).items():
        draw = torch.rand(tuple(weight.shape), generator=generator)
        assert torch.equal(first[name], top_k_mask(draw, expected_keep(weight.numel(), 0.2)))


def test_zero_sparsity_keeps_every_weight_and_head() -> None:
    context = deepcuts_context(n_train=0)
    result = run(context, sparsity=0.0)
    assert all(bool(mask.all()) for mask in result.weight_masks.values())
    assert bool(result.mask.all()) and result.scores is not None
    assert bool((result.scores == 1.0).all())


# --- iterative --------------------------------------------------------------------------------


@pytest.mark.parametrize(("criterion", "scope"), [("l1", "global"), ("random", "layer")])
def test_iterative_rounds_are_nested_and_exact(
    monkeypatch: pytest.MonkeyPatch, criterion: str, scope: str
) -> None:
    rounds = record_round_masks(monkeypatch)
    context = deepcuts_context()
    result = run(
        context,
        sparsity=0.5,
        criterion=criterion,
        scope=scope,
        rounds=3,
        round_steps=2,
        round_lr=1e-3,
    )
    targets = round_sparsities(0.5, 3)
    assert len(rounds) == 3 and same_masks(rounds[-1], result.weight_masks)
    events = [event for event in result.trace if event.kind == "round"]
    for index, (masks, target, event) in enumerate(zip(rounds, targets, events, strict=True)):
        kept, total = kept_total(masks)
        if scope == "global":
            assert kept == expected_keep(total, target)
        else:
            assert all(int(m.sum()) == expected_keep(m.numel(), target) for m in masks.values())
        assert (event.data["round"], event.data["sparsity"]) == (index + 1, target)
        assert (event.data["kept"], event.data["total"]) == (kept, total)
        if index:
            earlier = rounds[index - 1]
            assert all(bool((~earlier[name] & masks[name]).sum() == 0) for name in masks)
    if criterion == "random":
        # The priorities are drawn once: the nested rounds select the one-shot set.
        one_shot = run(deepcuts_context(), sparsity=0.5, criterion="random", scope=scope)
        assert same_masks(result.weight_masks, one_shot.weight_masks)


def test_iterative_l1_without_training_equals_one_shot() -> None:
    one_shot = run(deepcuts_context(n_train=0), sparsity=0.6, scope="global")
    rounds = run(deepcuts_context(n_train=0), sparsity=0.6, scope="global", rounds=4, round_steps=0)
    assert same_masks(rounds.weight_masks, one_shot.weight_masks)
    assert [event.kind for event in rounds.trace] == ["round"] * 4 + ["final"]
    assert [event.fraction for event in rounds.trace] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert rounds.trace[-1].data == one_shot.trace[-1].data


def test_training_between_rounds_moves_kept_weights_and_keeps_zeros_exact() -> None:
    context = deepcuts_context()
    before = snapshot(context.model)
    settings = {"sparsity": 0.4, "scope": "global", "rounds": 2, "round_lr": 1e-3}
    trained = run(context, round_steps=3, **settings)
    assert_same_weights(context.model, before)
    untrained = run(deepcuts_context(), round_steps=0, **settings)
    assert trained.model is not None and untrained.model is not None
    after = dict(trained.model.named_parameters())
    original = prunable_weights(context.model)
    for name, mask in trained.weight_masks.items():
        assert bool((after[name][~mask] == 0).all()), name
    assert all(
        not torch.equal(after[name][mask], original[name][mask])
        for name, mask in trained.weight_masks.items()
    )
    # Round 2 ranks the trained magnitudes, so its choice differs from ranking the original ones.
    assert not same_masks(trained.weight_masks, untrained.weight_masks)
    kinds = [event.kind for event in trained.trace]
    assert kinds == ["train"] * 3 + ["round", "round", "final"]
    losses = [event.data["loss"] for event in trained.trace[:3]]
    assert [event.data["step"] for event in trained.trace[:3]] == [1, 2, 3]
    assert all(event.data["round"] == 1 for event in trained.trace[:3])
    assert trained.trace[3].data["train_loss"] == pytest.approx(sum(losses) / 3)
    assert trained.trace[4].data["train_loss"] is None
    fractions = [event.fraction for event in trained.trace]
    assert fractions == sorted(fractions) and fractions[0] > 0 and fractions[-1] == 1.0
    assert trained.info["train_steps"] == 3
    assert trained.info["train_losses"][0] == pytest.approx(sum(losses) / 3)


def test_training_between_rounds_needs_a_training_split() -> None:
    with pytest.raises(ValueError, match="set the steps between rounds to 0"):
        run(deepcuts_context(n_train=0), rounds=2, round_steps=2)


def test_stop_request_raises_job_cancelled_and_leaves_the_model_alone() -> None:
    context = deepcuts_context(should_stop=lambda: True)
    before = snapshot(context.model)
    with pytest.raises(JobCancelled):
        run(context, rounds=2, round_steps=2)
    assert_same_weights(context.model, before)
    assert context.trace == []


def test_stop_during_training_between_rounds_cancels() -> None:
    calls = {"n": 0}

    def stop_after_a_few() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    context = deepcuts_context(should_stop=stop_after_a_few)
    with pytest.raises(JobCancelled):
        run(context, rounds=2, round_steps=20)
    assert all(event.kind != "final" for event in context.trace)


def test_ratio_for_sparsity_matches_keep_count() -> None:
    assert keep_count(1024, ratio_for_sparsity(0.2)) == 819
    assert keep_count(2048, ratio_for_sparsity(0.99)) == 20
    assert keep_count(10, ratio_for_sparsity(0.0)) == 10


def test_info_reports_both_compression_ratio_definitions() -> None:
    from pruning.compression import bert_base_equivalent_ratio, headscope_counts

    context = deepcuts_context(n_train=0)
    result = run(context, sparsity=0.75)
    kept, total = kept_total(result.weight_masks)
    counts = headscope_counts(context.model)
    assert counts.prunable == total
    info = result.info
    assert info["achieved_ratio"] == pytest.approx(total / kept) == pytest.approx(4.0, rel=0.01)
    assert info["keep_share"] == kept / total
    # The paper's definition: all parameters over those that remain (embeddings count).
    assert info["whole_model_ratio"] == pytest.approx(counts.total / (counts.total - total + kept))
    assert 1.0 < info["whole_model_ratio"] < info["achieved_ratio"]
    assert info["bert_base_ratio"] == pytest.approx(bert_base_equivalent_ratio(kept / total))
    assert info["params_total"] == counts.total
