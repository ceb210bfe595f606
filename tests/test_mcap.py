"""MCAP: the objective's pieces, the Gumbel gates, the episode loop, the pattern CNN's place in
Algorithm 1 and the method contract."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from transformers import BertTokenizer

from conftest import build_tiny_model
from pruning.datasets_base import LabelledDataset, TextSplit
from pruning.heads import head_gates, remove_heads
from pruning.jobs import JobCancelled
from pruning.methods import mcap as mcap_module
from pruning.methods.base import PruningContext, get_method, select_lowest
from pruning.methods.mcap import MCAP, MCAPConfig, _Trainer, plan_episodes
from pruning.methods.mcap_nets import (
    AttentionMapCNN,
    MetaController,
    PatternCNN,
    cosine_distances,
    gumbel_keep_sample,
    pattern_cnn_loss,
    relative_distance_distribution,
    relative_distance_kl,
    resize_attention_maps,
)
from pruning.methods.mcap_patterns import PATTERNS, VERTICAL
from test_methods import hook_count

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"w{i}" for i in range(100)]  # ids 5..104, inside the tiny models' vocabulary of 120
EPISODE_KEYS = [
    "episode",
    "total_episodes",
    "pass",
    "instances_seen",
    "total_instances",
    "kl",
    "cnn_loss",
    "budget_loss",
    "objective",
    "update",
    "updates",
    "keep_prob",
    "cnn_score",
    "sampled_keep",
]
FINAL_KEYS = ["scores", "mask", "n_pruned", "episodes", "updates"]
PATTERN_KEYS = [
    "classes",
    "accuracy",
    "confusion",
    "accuracy_by_source",
    "train_counts",
    "test_counts",
    "losses",
    "epochs",
    "texts",
    "model_maps",
    "labelled_model_maps",
    "examples",
    "head_patterns",
    "head_delta",
]
# A small pattern CNN (4 generated maps per pattern, one epoch): these tests are about the loop.
QUICK = {
    "episode_size": 10,
    "maps_per_episode": 2,
    "map_size": 8,
    "pattern_maps": 4,
    "pattern_texts": 4,
    "pattern_epochs": 1,
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: handing ops to a second thread costs more than the work (on shared cores
    two threads ran these tests 50x slower), so run them on one and restore the setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def word_tokenizer() -> BertTokenizer:
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(SPECIAL + WORDS)})
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # DistilBERT has no token types
    return tokenizer


def word_texts(n: int, seed: int = 0) -> tuple[str, ...]:
    """``n`` random texts of 2-12 words."""
    generator = torch.Generator().manual_seed(seed)
    texts = []
    for _ in range(n):
        length = int(torch.randint(2, 13, (1,), generator=generator))
        picks = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
        texts.append(" ".join(WORDS[i] for i in picks))
    return tuple(texts)


def mcap_context(
    model: torch.nn.Module,
    n: int = 30,
    *,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> PruningContext:
    """A context whose training split holds ``n`` random word texts (no score batches needed)."""
    texts = word_texts(n)
    split = TextSplit(texts, tuple(i % 2 for i in range(n)))
    dataset = LabelledDataset("words", ("a", "b"), split, split, split, "fp", "words")
    return PruningContext(
        model=model,
        tokenizer=word_tokenizer(),
        dataset=dataset,
        score_split=split,
        batches=[],
        device=next(model.parameters()).device,
        seed=seed,
        should_stop=should_stop,
    )


def run_mcap(context: PruningContext, **config: Any) -> Any:
    return MCAP(MCAPConfig(**{**QUICK, **config})).run(context)


def episodes_of(result: Any) -> list[Any]:
    return [event for event in result.trace if event.kind == "episode"]


# ---------------------------------------------------------------------------------------------
# The objective's pieces.


def test_relative_distance_distribution_sums_to_one_and_excludes_the_instance() -> None:
    reps = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    p = relative_distance_distribution(reps)
    distances = cosine_distances(reps)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(6))
    assert torch.equal(p.diagonal(), torch.zeros(6))
    assert bool((p[~torch.eye(6, dtype=torch.bool)] > 0).all())
    for i in range(6):  # eq. 11: proportional to d(i, j) over j != i
        others = [j for j in range(6) if j != i]
        expected = distances[i, others] / distances[i, others].sum()
        torch.testing.assert_close(p[i, others], expected, rtol=1e-5, atol=1e-7)
    # eq. 10: (1 - cos) / 2 is 0 for the same direction and 1 for the opposite one.
    pair = torch.tensor([[1.0, 2.0], [2.0, 4.0], [-1.0, -2.0]])
    torch.testing.assert_close(
        cosine_distances(pair), torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    )
    # Identical representations: every distance is 0, the epsilon makes the rows uniform.
    same = relative_distance_distribution(torch.ones(4, 3))
    expected_uniform = (1 - torch.eye(4)) / 3
    torch.testing.assert_close(same, expected_uniform)


def test_kl_is_zero_for_the_same_representations_and_positive_otherwise() -> None:
    generator = torch.Generator().manual_seed(1)
    reps = torch.randn(8, 4, generator=generator)
    assert float(relative_distance_kl(reps, reps.clone())) == 0.0
    moved = reps + 0.5 * torch.randn(8, 4, generator=generator)
    kl = relative_distance_kl(reps, moved)
    p, q = relative_distance_distribution(reps), relative_distance_distribution(moved)
    off = ~torch.eye(8, dtype=torch.bool)
    expected = sum(
        float((p[i][off[i]] * (p[i][off[i]] / q[i][off[i]]).log()).sum()) for i in range(8)
    )
    assert float(kl) == pytest.approx(expected / 8, rel=1e-5) and float(kl) > 1e-3


def test_kl_under_the_model_is_zero_when_every_head_is_kept(arch: str) -> None:
    model = build_tiny_model(arch).cpu()
    with torch.no_grad():  # larger weights, so one head visibly moves the representations
        for parameter in model.parameters():
            parameter.mul_(3.0)
    context = mcap_context(model, n=12)
    trainer = _Trainer(context, MCAPConfig(**QUICK), n_remove=2)
    batch = trainer.batch(tuple(range(12)))
    with trainer.attached(), torch.no_grad():
        original, maps = trainer.original(batch)
        kept, no_maps = trainer.masked(batch, torch.ones(3, 4))
        one_off = torch.ones(3, 4)
        one_off[1, 2] = 0.0
        dropped, pruned_maps = trainer.masked(batch, one_off, with_maps=True)
    assert no_maps is None and pruned_maps is not None and pruned_maps.shape == (2, 12, 8, 8)
    assert maps.shape == (2, 12, 8, 8)
    assert float(relative_distance_kl(original, kept)) <= 1e-7
    assert float(relative_distance_kl(original, dropped)) > 1e-5
    assert hook_count(model) == 0


def test_attention_maps_are_resized_from_the_valid_block_only() -> None:
    probs = torch.zeros(2, 1, 6, 6)
    probs[0, 0, :4, :4] = torch.arange(16.0).reshape(4, 4)
    probs[0, 0, 4:, :] = 99.0  # padding rows and columns must not leak into the map
    probs[0, 0, :, 4:] = 99.0
    probs[1, 0] = 1.0
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    maps = resize_attention_maps(probs, mask, 2)
    expected = torch.tensor([[2.5, 4.5], [10.5, 12.5]])  # 2x2 means of the 4x4 block
    torch.testing.assert_close(maps[0, 0], expected)
    torch.testing.assert_close(maps[1, 0], torch.ones(2, 2))
    assert resize_attention_maps(probs, mask, 8).shape == (2, 1, 8, 8)  # shorter: repeated up


def test_networks_shapes_ranges_and_initial_keep() -> None:
    torch.manual_seed(0)
    scores = AttentionMapCNN()(torch.rand(3, 12, 16, 16))
    assert scores.shape == (3, 12) and bool(((scores > 0) & (scores < 1)).all())
    controller = MetaController(12, 32, initial_keep=0.75)
    keep = torch.sigmoid(controller(torch.randn(32), scores.mean(dim=0))).detach()
    assert keep.shape == (12,) and float((keep - 0.75).abs().max()) < 0.05
    without = MetaController(12, 0, initial_keep=0.5)
    assert without(None, scores.mean(dim=0)).shape == (12,)
    with pytest.raises(ValueError, match="task representation; pass one"):
        controller(None, scores.mean(dim=0))


# ---------------------------------------------------------------------------------------------
# Gumbel-softmax gates.


def test_gumbel_hard_samples_are_binary_with_the_soft_gradient() -> None:
    logits = torch.tensor([-3.0, -0.5, 0.0, 0.4, 2.0, 5.0], dtype=torch.float64, requires_grad=True)
    sample = gumbel_keep_sample(logits, 0.7, torch.Generator().manual_seed(0))
    assert set(sample.hard.tolist()) <= {0.0, 1.0}
    assert torch.equal(sample.hard, (sample.soft > 0.5).to(torch.float64))
    upstream = torch.tensor([0.3, -1.2, 2.0, 0.5, -0.7, 1.1], dtype=torch.float64)
    (hard_grad,) = torch.autograd.grad((sample.hard * upstream).sum(), logits, retain_graph=True)
    (soft_grad,) = torch.autograd.grad((sample.soft * upstream).sum(), logits)
    assert torch.equal(hard_grad, soft_grad) and bool((hard_grad != 0).all())
    # Seeded: the same generator state gives the same draw.
    again = gumbel_keep_sample(logits, 0.7, torch.Generator().manual_seed(0))
    assert torch.equal(again.soft, sample.soft)


def test_gumbel_keep_frequency_is_the_sigmoid_of_the_logit() -> None:
    logits = torch.tensor([-2.0, 0.0, 1.5])
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([gumbel_keep_sample(logits, 1.0, generator).hard for _ in range(4000)])
    torch.testing.assert_close(draws.mean(dim=0), torch.sigmoid(logits), atol=0.03, rtol=0)


# ---------------------------------------------------------------------------------------------
# The episode loop.


def test_plan_covers_every_instance_once_per_pass_and_drops_tiny_remainders() -> None:
    episodes, dropped = plan_episodes(130, 20, 2, torch.Generator().manual_seed(0))
    assert dropped == 0 and len(episodes) == 14
    assert [len(e.instances) for e in episodes[:7]] == [20] * 6 + [10]
    for pass_index in (0, 1):
        seen = [i for e in episodes if e.pass_index == pass_index for i in e.instances]
        assert sorted(seen) == list(range(130))
    assert episodes[0].instances != episodes[7].instances  # reshuffled each pass
    assert [e.index for e in episodes] == list(range(14))
    episodes, dropped = plan_episodes(42, 20, 1, torch.Generator().manual_seed(0))
    assert dropped == 2 and [len(e.instances) for e in episodes] == [20, 20]


def test_episode_size_and_update_cadence(monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[int] = []
    original_step = torch.optim.SGD.step

    def counting_step(self: torch.optim.SGD, *args: Any, **kwargs: Any) -> Any:
        steps.append(1)
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", counting_step)
    context = mcap_context(build_tiny_model("bert"), n=130)
    result = run_mcap(context, episode_size=20, update_every=3, maps_per_episode=2, optimizer="sgd")
    events = episodes_of(result)
    assert len(steps) == 3 and result.info["updates"] == 3
    assert len(events) == 7 and result.info["episodes"] == 7
    assert [e.data["instances_seen"] for e in events] == [20, 40, 60, 80, 100, 120, 130]
    assert [e.data["update"] for e in events] == [False, False, True, False, False, True, True]
    assert [e.data["updates"] for e in events] == [0, 0, 1, 1, 1, 2, 3]
    assert all(e.data["total_instances"] == 130 and e.data["pass"] == 0 for e in events)
    assert result.info["dropped_instances"] == 0 and result.info["instances"] == 130

    steps.clear()
    context = mcap_context(build_tiny_model("bert"), n=42)
    result = run_mcap(
        context,
        episode_size=20,
        update_every=1,
        passes=2,
        max_train_examples=41,
        optimizer="sgd",
    )
    events = episodes_of(result)
    assert len(steps) == 4 and [e.data["pass"] for e in events] == [0, 0, 1, 1]
    assert result.info["instances"] == 41 and result.info["dropped_instances"] == 2
    assert events[-1].data["instances_seen"] == events[-1].data["total_instances"] == 80


def test_the_given_model_is_unchanged() -> None:
    model = build_tiny_model("roberta")
    frozen_name = "classifier.dense.weight"
    model.get_parameter(frozen_name).requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    state = {key: value.clone() for key, value in model.state_dict().items()}
    hooks, attn = hook_count(model), model.config._attn_implementation
    model.train()
    result = run_mcap(mcap_context(model, n=25))
    assert result.model is None
    assert model.training and all(module.training for module in model.modules())
    assert hook_count(model) == hooks and model.config._attn_implementation == attn == "sdpa"
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert not flags[frozen_name] and all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_a_stop_request_raises_job_cancelled_and_cleans_up() -> None:
    model = build_tiny_model("bert")
    flags = [p.requires_grad for p in model.parameters()]
    for allowed in (0, 2, 4):
        calls = iter(range(100))
        context = mcap_context(model, n=40, should_stop=lambda a=allowed, c=calls: next(c) >= a)
        with pytest.raises(JobCancelled):
            run_mcap(context)
        # The pattern CNN checks twice (before training, at its event), then each episode twice.
        assert [e.kind for e in context.trace][:1] == (["patterns"] if allowed else [])
        assert len(episodes_of(context)) == max(0, allowed - 2) // 2
        assert hook_count(model) == 0 and not model.training
        assert model.config._attn_implementation == "sdpa"
        assert [p.requires_grad for p in model.parameters()] == flags


def test_same_seed_same_result_and_another_seed_differs() -> None:
    def run(seed: int) -> Any:
        return run_mcap(mcap_context(build_tiny_model("bert"), n=30, seed=seed), update_every=1)

    first, second, other = run(0), run(0), run(1)
    assert torch.equal(first.scores, second.scores) and torch.equal(first.mask, second.mask)
    assert [e.data for e in first.trace] == [e.data for e in second.trace]
    assert not torch.equal(first.scores, other.scores)


def test_exact_head_count_and_minimum_per_layer() -> None:
    model = build_tiny_model("bert")
    result = run_mcap(mcap_context(model), n_prune=9, min_heads_per_layer=1)
    assert int((~result.mask).sum()) == 9 and result.mask.sum(dim=1).tolist() == [1, 1, 1]
    assert torch.equal(result.mask, select_lowest(result.scores, 9, min_heads_per_layer=1))
    for config, removed in (({}, 2), ({"sparsity": 0.5}, 6), ({"n_prune": 0}, 0)):
        result = run_mcap(mcap_context(model), **config)
        assert int((~result.mask).sum()) == removed
        assert torch.equal(result.mask, select_lowest(result.scores, removed))


def test_trace_contract() -> None:
    model = build_tiny_model("distilbert")
    context = mcap_context(model, n=23)
    result = run_mcap(context, update_every=2)
    trace = result.trace
    assert trace == tuple(context.trace) and [e.step for e in trace] == list(range(len(trace)))
    assert [e.kind for e in trace] == ["patterns"] + ["episode"] * 3 + ["final"]
    fractions = [e.fraction for e in trace]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] > 0
    patterns = trace[0].data
    assert list(patterns) == PATTERN_KEYS and patterns["classes"] == list(PATTERNS)
    assert torch.tensor(patterns["confusion"]).shape == (5, 5)
    assert torch.tensor(patterns["examples"]).shape == (5, 8, 8)
    assert torch.tensor(patterns["head_patterns"]).shape == (3, 4)
    assert trace[0].message.startswith("pattern CNN: held-out accuracy")
    for index, event in enumerate(trace[1:-1]):
        data = event.data
        assert list(data) == EPISODE_KEYS
        assert data["episode"] == index and data["total_episodes"] == 3
        assert event.message.startswith(f"episode {index + 1}/3 · KL ")
        keep = torch.tensor(data["keep_prob"])
        assert keep.shape == (3, 4) and bool(((keep > 0) & (keep < 1)).all())
        assert torch.tensor(data["cnn_score"]).shape == (3, 4)
        assert 0 <= data["sampled_keep"] <= 12 and isinstance(data["sampled_keep"], int)
        expected = data["kl"] + data["cnn_loss"] + data["budget_loss"]  # both weights 1
        assert data["objective"] == pytest.approx(expected, rel=1e-5, abs=1e-9)
        assert data["kl"] >= 0 and data["cnn_loss"] > 0 and data["budget_loss"] >= 0
    final = trace[-1].data
    assert list(final) == FINAL_KEYS
    assert final["scores"] == result.scores.tolist() and final["mask"] == result.mask.tolist()
    assert final["n_pruned"] == 2 and final["episodes"] == 3 and final["updates"] == 2
    assert set(result.info) == {
        "episodes",
        "updates",
        "instances",
        "dropped_instances",
        "episode_size",
        "update_every",
        "cnn_target",
        "pattern_cnn",
        "seconds",
    }
    assert result.info["cnn_target"] == "patterns"
    pattern_info = {k: v for k, v in patterns.items() if k in result.info["pattern_cnn"]}
    assert pattern_info == result.info["pattern_cnn"]
    json.dumps([event.to_dict() for event in trace])
    json.dumps(result.info)


def test_cnn_target_none_has_no_cnn_loss() -> None:
    result = run_mcap(mcap_context(build_tiny_model("bert"), n=20), cnn_target="none")
    assert all(event.data["cnn_loss"] == 0.0 for event in episodes_of(result))
    result = run_mcap(
        mcap_context(build_tiny_model("bert"), n=20),
        task_representation="none",
        representation="cls",
    )
    assert len(episodes_of(result)) == 2


def test_works_on_every_architecture(arch: str) -> None:
    model = build_tiny_model(arch)
    result = run_mcap(mcap_context(model, n=20), sparsity=0.25)
    assert result.mask.dtype == torch.bool and result.mask.shape == (3, 4)
    assert int((~result.mask).sum()) == 3
    assert result.scores is not None and result.scores.dtype == torch.float32
    assert bool(((result.scores > 0) & (result.scores < 1)).all())
    assert [e.kind for e in result.trace] == ["patterns", "episode", "episode", "final"]
    assert hook_count(model) == 0


# ---------------------------------------------------------------------------------------------
# Registry, configuration and refusals.


def test_registry_and_config_errors() -> None:
    assert get_method("mcap") is MCAP and MCAP.granularity == "head" and MCAP.title == "MCAP"
    assert "http" in MCAP.paper and "http" in (MCAP.__doc__ or "")
    config = MCAPConfig()
    assert config.sparsity == 0.2 and config.episode_size == 60 and config.update_every == 8
    json.dumps(config.to_dict())
    assert MCAPConfig.from_dict(config.to_dict()) == config
    assert isinstance(MCAPConfig(lr=1).lr, float) and MCAPConfig(lr=1) == MCAPConfig(lr=1.0)
    with pytest.raises(ValueError, match=r"Maps per episode \(9\) exceeds the episode size \(5\)"):
        MCAPConfig(episode_size=5, maps_per_episode=9)
    with pytest.raises(ValueError, match="use 0 for every training instance or at least 3"):
        MCAPConfig(max_train_examples=2)
    with pytest.raises(ValueError, match=r"Episode size \(k\) must be between 3 and"):
        MCAPConfig(episode_size=2)
    with pytest.raises(ValueError, match="episode_size must be a whole number"):
        MCAPConfig(episode_size=10.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CNN target must be one of patterns, controller, none"):
        MCAPConfig(cnn_target="labels")
    with pytest.raises(ValueError, match="Task representation must be one of mean_embedding"):
        MCAPConfig(task_representation="cls")
    with pytest.raises(ValueError, match="Sentence representation must be one of mean_pool, cls"):
        MCAPConfig(representation="max")
    with pytest.raises(ValueError, match="Optimizer must be one of sgd, adam"):
        MCAPConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"Gumbel temperature \(tau\) must be between"):
        MCAPConfig(temperature=0.0)


def test_inputs_it_cannot_run_on_are_refused_with_a_fix() -> None:
    model = build_tiny_model("bert")
    with pytest.raises(ValueError, match="at least 3 training rows"):
        run_mcap(mcap_context(model, n=2))
    with pytest.raises(ValueError, match="at most 9 can go. Lower the sparsity"):
        run_mcap(mcap_context(model), n_prune=10, min_heads_per_layer=1)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 0] = False
    with pytest.raises(ValueError, match="already has 1 of 12 heads removed"):
        run_mcap(mcap_context(remove_heads(model, mask)))
    context = mcap_context(model)
    context.device = torch.device("meta")
    with pytest.raises(ValueError, match="move the model there first"):
        run_mcap(context)


# ---------------------------------------------------------------------------------------------
# Behaviour: heads that change nothing are the ones removed.


def test_heads_that_change_nothing_are_pruned() -> None:
    """Three heads whose output-projection columns are zero: dropping them leaves the KL at 0,
    so the controller learns to keep every other head first (Adam: the KL gradients of a tiny
    model are ~1e-4, too small for SGD at any stable rate); 8 of 8 seeds found all three.
    Random choice: 1 in 220."""
    model = build_tiny_model("bert", seed=0)
    irrelevant = [(0, 1), (1, 3), (2, 0)]
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3.0)
        for layer, head in irrelevant:
            output = model.bert.encoder.layer[layer].attention.output.dense
            output.weight[:, head * 8 : (head + 1) * 8] = 0.0
    inputs = {"input_ids": torch.randint(5, 100, (2, 7), generator=torch.Generator())}
    gates = torch.ones(3, 4)
    for layer, head in irrelevant:
        gates[layer, head] = 0.0
    with torch.no_grad():  # sanity: gating those heads leaves the output exactly as it was
        dense = model(**inputs).logits
        with head_gates(model, gates):
            assert torch.equal(model(**inputs).logits, dense)
    # KL only (no CNN loss): the pattern CNN's delta is still the controller's input.
    config = {"n_prune": 3, "update_every": 1, "passes": 3, "optimizer": "adam", "lr": 0.01}
    config |= {"cnn_weight": 0.0}
    result = run_mcap(mcap_context(model, n=100), **config)
    removed = {(layer, head) for layer, head in (~result.mask).nonzero().tolist()}
    assert removed == set(irrelevant), result.scores


# ---------------------------------------------------------------------------------------------
# The pattern CNN in Algorithm 1 (Section II-D, eq. 6, Algorithm 1 lines 7-9).


def test_pattern_cnn_loss_rewards_keeping_informative_heads_only() -> None:
    delta = torch.tensor([0.9, 0.1, 0.8, 0.2])
    right = torch.tensor([1.0, 0.0, 1.0, 0.0])  # keeps exactly the informative heads
    wrong = 1 - right
    assert float(pattern_cnn_loss(right, delta)) == pytest.approx((0.1 + 0.1 + 0.2 + 0.2) / 4)
    assert float(pattern_cnn_loss(wrong, delta)) == pytest.approx((0.9 + 0.9 + 0.8 + 0.8) / 4)
    gates = right.clone().requires_grad_(True)
    pattern_cnn_loss(gates, delta.requires_grad_(True)).backward()
    # d/dg_i = (1 - 2 delta_i) / N: negative (keep more) exactly where delta > 0.5.
    torch.testing.assert_close(gates.grad, (1 - 2 * delta.detach()) / 4)


def test_pattern_cnn_delta_is_one_minus_the_vertical_probability() -> None:
    torch.manual_seed(0)
    cnn = PatternCNN(vertical_index=VERTICAL)
    maps = torch.rand(3, 2, 8, 8)
    logits = cnn(maps.reshape(6, 8, 8))
    assert logits.shape == (6, len(PATTERNS))
    expected = 1 - torch.softmax(logits, dim=1)[:, VERTICAL]
    torch.testing.assert_close(cnn.informative(maps), expected.reshape(3, 2))


def test_the_pattern_cnn_is_the_default_and_only_the_controller_learns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Default config: the pattern CNN is trained once before the episodes, never the legacy
    scorer; it stays frozen while the controller trains; delta feeds the controller."""
    assert MCAPConfig().cnn_target == "patterns" and MCAP.revision == 2
    trained: list[PatternCNN] = []
    original_train = mcap_module.train_pattern_cnn

    def spy(*args: Any, **kwargs: Any) -> Any:
        cnn, report = original_train(*args, **kwargs)
        trained.append(cnn)
        return cnn, report

    def no_scorer(self: AttentionMapCNN) -> None:
        raise AssertionError("the legacy (circular) CNN scorer must not be built by default")

    monkeypatch.setattr(mcap_module, "train_pattern_cnn", spy)
    monkeypatch.setattr(AttentionMapCNN, "__init__", no_scorer)
    context = mcap_context(build_tiny_model("bert"), n=30)
    config = MCAPConfig(**QUICK)
    trainer = _Trainer(context, config, n_remove=2)
    with trainer.attached():
        trainer.learn_patterns(list(range(30)))
    assert len(trained) == 1 and trainer.pattern_cnn is trained[0] and trainer.scorer is None
    before = {k: v.clone() for k, v in trained[0].state_dict().items()}
    controller = {k: v.clone() for k, v in trainer.controller.state_dict().items()}
    assert all(not p.requires_grad for p in trained[0].parameters())
    with trainer.attached():
        trainer.train(plan_episodes(30, 10, 1, torch.Generator().manual_seed(0))[0])
    assert all(torch.equal(v, trained[0].state_dict()[k]) for k, v in before.items())
    assert any(
        not torch.equal(v, trainer.controller.state_dict()[k]) for k, v in controller.items()
    )
    # The controller's input is delta = 1 - P(vertical) of the pattern CNN (eq. 6).
    batch = trainer.batch(tuple(range(10)))
    with trainer.attached():
        _, maps = trainer.original(batch)
        delta = trainer.delta(maps)
    expected = trained[0].informative(mcap_module.pattern_input(maps)).mean(dim=0)
    torch.testing.assert_close(delta, expected)
    result = run_mcap(mcap_context(build_tiny_model("bert"), n=30))
    assert result.trace[0].kind == "patterns" and result.info["cnn_target"] == "patterns"
    for event in episodes_of(result):  # the CNN loss is Algorithm 1's, in [0, 1]
        assert 0.0 < event.data["cnn_loss"] < 1.0


def test_the_legacy_circular_target_stays_available() -> None:
    result = run_mcap(mcap_context(build_tiny_model("bert"), n=20), cnn_target="controller")
    assert [e.kind for e in result.trace] == ["episode", "episode", "final"]
    assert "pattern_cnn" not in result.info and result.info["cnn_target"] == "controller"
    assert all(e.data["cnn_loss"] > 0 for e in episodes_of(result))
