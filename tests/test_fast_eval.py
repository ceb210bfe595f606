"""The fast mask evaluator (anchor cache, position-0 last layer) against the naive reference."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import BertModel, BertTokenizer

from conftest import TEST_DEVICE, build_tiny_model, real_tokenizer, sentiment_rows, small_bert
from pruning.adapters import (
    UnsupportedArchitectureError,
    encoder_layers,
    get_adapter,
    get_submodule,
)
from pruning.data import Batch, make_batches
from pruning.evaluate import evaluate_masks, predict_logits
from pruning.fast_eval import FastMaskEvaluator, NaiveMaskEvaluator
from pruning.heads import apply_mask, head_grid, remove_heads

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"w{i}" for i in range(100)]  # ids 5..104, inside the tiny models' vocabulary of 120
MAX_LENGTH = 32
BATCH = 4


def word_tokenizer() -> BertTokenizer:
    return BertTokenizer(vocab={word: i for i, word in enumerate(SPECIAL + WORDS)})


def random_texts(count: int, seed: int, longest: int = 24) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    texts = []
    for _ in range(count):
        length = int(torch.randint(1, longest + 1, (1,), generator=generator))
        picks = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
        texts.append(" ".join(WORDS[i] for i in picks))
    return texts


def sensitive_model(arch: str, seed: int = 0, **kwargs: object) -> torch.nn.Module:
    """A tiny 3-class classifier with large weights, so that every head visibly moves the logits."""
    model = build_tiny_model(arch, num_labels=3, seed=seed, **kwargs).cpu()  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, 0.3, generator=generator)
            elif isinstance(module, torch.nn.Embedding):
                module.weight.normal_(0.0, 1.0, generator=generator)
    return model.to(TEST_DEVICE)


class Setup:
    """A model, an evaluation set, its bucketed batches and both evaluators over them."""

    def __init__(
        self,
        model: torch.nn.Module,
        count: int = 30,
        seed: int = 1,
        pairs: bool = False,
        **fast_kwargs: object,
    ) -> None:
        tokenizer = word_tokenizer()
        self.model = model
        self.texts = random_texts(count, seed)
        self.pairs = random_texts(count, seed + 100, longest=10) if pairs else None
        self.labels = [(i * 7 + seed) % 3 for i in range(count)]
        self.batches = make_batches(
            tokenizer,
            self.texts,
            self.labels,
            batch_size=BATCH,
            max_length=MAX_LENGTH,
            bucket=True,
            text_pairs=self.pairs,
        )
        fast_kwargs.setdefault("amp", False)
        self.fast = FastMaskEvaluator(model, self.batches, **fast_kwargs)  # type: ignore[arg-type]
        self.naive = NaiveMaskEvaluator(
            model,
            tokenizer,
            self.texts,
            self.labels,
            max_length=MAX_LENGTH,
            batch_size=7,
            text_pairs=self.pairs,
        )

    def assert_same(self, mask: torch.Tensor) -> None:
        """Same predictions and score as the naive evaluator; logits as close as padding allows.

        Padding every row to ``MAX_LENGTH`` alone moves these large-weight logits by up to ~1e-5
        (the naive evaluator against the model on the dynamically padded batches), so logits are
        compared tightly with a gated forward of the model on the same batches.
        """
        fast = self.fast.logits(mask)
        naive = self.naive.logits(mask)
        assert torch.equal(fast.argmax(1), naive.argmax(1))
        torch.testing.assert_close(fast, naive, rtol=1e-5, atol=5e-5)
        with apply_mask(self.model, mask):
            dynamic, _ = predict_logits(self.model, self.batches)
        torch.testing.assert_close(fast, dynamic, rtol=1e-5, atol=1e-5)
        assert self.fast(mask) == self.naive(mask)


def masks_around(anchor: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Candidates that differ from ``anchor`` in layer 0, a middle layer, the last layer, one head
    index across all layers, several layers at random, everything and one whole layer; plus the
    anchor itself."""
    n_layers, n_heads = anchor.shape
    generator = torch.Generator().manual_seed(seed)
    masks = [anchor.clone()]
    for layer in (0, n_layers // 2, n_layers - 1):
        head = int(torch.randint(0, n_heads, (1,), generator=generator))
        mask = anchor.clone()
        mask[layer, head] = ~mask[layer, head]
        masks.append(mask)
    across = anchor.clone()
    across[:, 1] = False
    masks.append(across)
    flips = torch.rand(n_layers, n_heads, generator=generator) < 0.3
    masks.append(anchor ^ flips)
    masks.append(torch.zeros(n_layers, n_heads, dtype=torch.bool))
    emptied = anchor.clone()
    emptied[n_layers // 2] = False
    masks.append(emptied)
    return masks


def random_mask(shape: tuple[int, int], seed: int, keep: float = 0.6) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < keep


# ---------------------------------------------------------------------------------------------
# exactness against the naive evaluator


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_fast_equals_naive_for_every_kind_of_candidate_with_moving_anchors(
    arch: str, attn: str
) -> None:
    setup = Setup(sensitive_model(arch, seed=3, attn=attn))
    grid = head_grid(setup.model)
    anchors = [torch.ones(grid, dtype=torch.bool), random_mask(grid, 4), random_mask(grid, 5, 0.4)]
    anchors[2][0] = False  # an anchor with a whole layer switched off
    for step, anchor in enumerate(anchors):
        setup.fast.set_anchor(anchor)
        for mask in masks_around(anchor, seed=step):
            setup.assert_same(mask)
    logits = [setup.naive.logits(mask) for mask in masks_around(anchors[-1], seed=2)]
    spread = torch.stack([row.argmax(1) for row in logits])
    assert bool((spread != spread[0]).any())  # masks change predictions: a wrong gating would show


def test_fast_equals_naive_on_models_with_removed_heads(arch: str) -> None:
    model = sensitive_model(arch, seed=6)
    removed = torch.ones(head_grid(model), dtype=torch.bool)
    removed[0, :2] = False
    removed[2] = False  # the last layer loses every head: an empty attention module
    setup = Setup(remove_heads(model, removed), seed=7)
    grid = head_grid(setup.model)
    assert grid == (3, 4)
    for anchor in (torch.ones(grid, dtype=torch.bool), random_mask(grid, 8)):
        setup.fast.set_anchor(anchor)
        for mask in [*masks_around(anchor, seed=9), random_mask(grid, 10)]:
            setup.assert_same(mask)
    # entries for heads already removed are ignored
    only_present = removed.clone()
    assert setup.fast(only_present) == setup.fast(torch.ones(grid, dtype=torch.bool))


def test_fast_equals_naive_with_sentence_pairs_and_token_types() -> None:
    setup = Setup(sensitive_model("bert", seed=11), pairs=True, seed=12)
    assert setup.batches[0].token_type_ids is not None
    assert bool((setup.batches[0].token_type_ids == 1).any())
    grid = head_grid(setup.model)
    setup.fast.set_anchor(random_mask(grid, 13))
    for mask in masks_around(random_mask(grid, 13), seed=14):
        setup.assert_same(mask)


def test_fast_equals_naive_with_the_real_tokenizer() -> None:
    tokenizer = real_tokenizer()
    rows = sentiment_rows(24, seed=3)
    texts = [text for text, _ in rows]
    labels = [int(label == "positive") for _, label in rows]
    model = small_bert().to(TEST_DEVICE)
    batches = make_batches(tokenizer, texts, labels, batch_size=5, max_length=40)
    fast = FastMaskEvaluator(model, batches, metric="mcc", amp=False)
    naive = NaiveMaskEvaluator(model, tokenizer, texts, labels, metric="mcc", max_length=40)
    grid = head_grid(model)
    fast.set_anchor(random_mask(grid, 15))
    masks = masks_around(random_mask(grid, 15), seed=16)
    assert fast.evaluate_many(masks) == naive.evaluate_many(masks)
    for mask in masks:
        assert torch.equal(fast.predictions(mask), naive.predictions(mask))
        torch.testing.assert_close(fast.logits(mask), naive.logits(mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["accuracy", "mcc", "f1"])
def test_scores_equal_evaluate_masks_in_points(metric: str) -> None:
    setup = Setup(sensitive_model("roberta", seed=17), metric=metric)
    grid = head_grid(setup.model)
    anchor = random_mask(grid, 18)
    setup.fast.set_anchor(anchor)
    masks = masks_around(anchor, seed=19)
    expected = [
        100.0 * result.get(metric) for result in evaluate_masks(setup.model, setup.batches, masks)
    ]
    assert setup.fast.evaluate_many(masks) == expected
    assert [setup.fast(mask) for mask in masks] == expected
    assert len(set(expected)) > 1


def test_stacked_candidates_equal_one_at_a_time(arch: str) -> None:
    setup = Setup(sensitive_model(arch, seed=20), masks_per_forward=3)
    one = FastMaskEvaluator(setup.model, setup.batches, masks_per_forward=1, amp=False)
    grid = head_grid(setup.model)
    anchor = random_mask(grid, 21)
    setup.fast.set_anchor(anchor)
    one.set_anchor(anchor)
    masks = [*masks_around(anchor, seed=22), random_mask(grid, 23)]
    passes_before = setup.fast.n_layer_passes
    stacked = setup.fast.evaluate_many(masks)
    assert stacked == one.evaluate_many(masks)
    assert setup.fast.n_layer_passes > passes_before
    for mask in masks[:3]:
        torch.testing.assert_close(setup.fast.logits(mask), one.logits(mask), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the cache is really used


def test_candidates_recompute_only_the_layers_from_their_first_difference() -> None:
    setup = Setup(sensitive_model("bert", seed=24, layers=4))
    fast, n_batches = setup.fast, len(setup.batches)
    grid = head_grid(setup.model)
    full = n_batches * grid[0]
    anchor = random_mask(grid, 25)
    fast.set_anchor(anchor)
    assert fast.cached_batches == n_batches
    fast(anchor)  # builds the cache with one full pass; the anchor itself is then free
    assert fast.n_layer_passes == full
    for layer in range(grid[0]):
        mask = anchor.clone()
        mask[layer, 0] = ~mask[layer, 0]
        before = fast.n_layer_passes
        setup.assert_same(mask)  # logits + score: the candidate is evaluated twice
        assert fast.n_layer_passes - before == 2 * n_batches * (grid[0] - layer)
    before = fast.n_layer_passes
    fast(anchor)
    assert fast.n_layer_passes == before
    # moving the anchor within layer 2 refreshes layers 2.. only, in one pass
    moved = anchor.clone()
    moved[2, 1] = ~moved[2, 1]
    fast.set_anchor(moved)
    before = fast.n_layer_passes
    setup.assert_same(moved)
    assert fast.n_layer_passes - before == n_batches * (grid[0] - 2)
    naive_batches = -(-len(setup.texts) // 7)
    assert setup.naive.n_layer_passes == setup.naive.n_evaluations * naive_batches * grid[0]


def test_cached_layers_are_not_recomputed_black_box() -> None:
    """Once the cache holds an anchor, layers before a candidate's first difference are never
    run again: breaking layer 0's feed-forward weights changes nothing for later candidates."""
    setup = Setup(sensitive_model("electra", seed=26))
    grid = head_grid(setup.model)
    anchor = random_mask(grid, 27)
    setup.fast.set_anchor(anchor)
    later = anchor.clone()
    later[1, 2] = ~later[1, 2]
    first = anchor.clone()
    first[0, 3] = ~first[0, 3]
    expected = setup.naive.logits(later)
    setup.fast(anchor)
    ffn_in = get_submodule(encoder_layers(setup.model)[0], "intermediate.dense")
    with torch.no_grad():
        ffn_in.weight.fill_(float("nan"))
    torch.testing.assert_close(setup.fast.logits(later), expected, rtol=1e-5, atol=5e-5)
    assert bool(setup.fast.logits(first).isnan().all())  # a layer-0 candidate does run layer 0


def test_cache_budget_limits_cached_batches_without_changing_results() -> None:
    model = sensitive_model("distilbert", seed=28)
    grid = head_grid(model)
    anchor = random_mask(grid, 29)
    masks = masks_around(anchor, seed=30)
    reference = Setup(model, seed=31)
    reference.fast.set_anchor(anchor)
    expected = reference.fast.evaluate_many(masks)
    assert expected == reference.naive.evaluate_many(masks)
    nothing = FastMaskEvaluator(model, reference.batches, cache_bytes=0, amp=False)
    nothing.set_anchor(anchor)
    assert nothing.evaluate_many(masks) == expected
    assert nothing.cached_batches == 0
    assert nothing.n_layer_passes == len(masks) * len(reference.batches) * grid[0]
    first = reference.batches[0]
    one_batch = len(first) * first.input_ids.shape[1] * 32 * grid[0] * 4  # states of batch 0
    partial = FastMaskEvaluator(model, reference.batches, cache_bytes=one_batch, amp=False)
    partial.set_anchor(anchor)
    assert partial.evaluate_many(masks) == expected
    assert partial.cached_batches == 1
    partial.clear_cache()
    assert partial.evaluate_many(masks) == expected


# ---------------------------------------------------------------------------------------------
# interface


def test_predictions_counts_callbacks_and_original_order() -> None:
    seen: list[int] = []
    setup = Setup(sensitive_model("bert", seed=32), on_evaluation=seen.append)
    grid = head_grid(setup.model)
    keep_all = torch.ones(grid, dtype=torch.bool)
    predictions = setup.fast.predictions(keep_all)
    logits, _ = predict_logits(setup.model, setup.batches)
    assert predictions.dtype == torch.int64
    assert predictions.shape == (len(setup.texts),)
    assert torch.equal(predictions, logits.argmax(1))
    assert [int(i) for b in setup.batches for i in b.indices] != list(range(len(setup.texts)))
    scores = setup.fast.evaluate_many([random_mask(grid, s) for s in range(5)])
    assert len(scores) == 5
    assert all(0.0 <= score <= 100.0 for score in scores)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert setup.fast.n_evaluations == 6
    assert setup.fast.evaluate_many([]) == []


def test_model_is_left_unchanged() -> None:
    setup = Setup(sensitive_model("roberta", seed=33))
    model = setup.model
    before, _ = predict_logits(model, setup.batches)
    model.train()
    grid = head_grid(model)
    setup.fast.set_anchor(random_mask(grid, 34))
    setup.fast.evaluate_many(masks_around(random_mask(grid, 34), seed=35))
    setup.naive(random_mask(grid, 36))
    assert model.training
    model.eval()
    adapter = get_adapter(model)
    for layer in encoder_layers(model):
        assert not get_submodule(layer, adapter.output)._forward_pre_hooks
    after, _ = predict_logits(model, setup.batches)
    assert torch.equal(before, after)


def test_invalid_input_is_rejected_with_clear_messages() -> None:
    setup = Setup(build_tiny_model("bert"), count=8)
    fast, naive = setup.fast, setup.naive
    for evaluator in (fast, naive):
        with pytest.raises(ValueError, match=r"shape \(3, 4\)"):
            evaluator(torch.ones(4, 3, dtype=torch.bool))
        with pytest.raises(ValueError, match="bool head mask"):
            evaluator(torch.ones(3, 4))
        with pytest.raises(ValueError, match="masks\\[1\\]"):
            evaluator.evaluate_many([torch.ones(3, 4, dtype=torch.bool), torch.ones(2, 4)])
        with pytest.raises(ValueError, match="anchor"):
            evaluator.set_anchor(torch.ones(3, 5, dtype=torch.bool))
    model, batches = setup.model, setup.batches
    with pytest.raises(ValueError, match="Unknown metric"):
        FastMaskEvaluator(model, batches, metric="loss")
    with pytest.raises(ValueError, match="No batches"):
        FastMaskEvaluator(model, [])
    with pytest.raises(ValueError, match="masks_per_forward"):
        FastMaskEvaluator(model, batches, masks_per_forward=0)
    unlabelled = [Batch(b.input_ids, b.attention_mask, None, None, b.indices) for b in batches]
    with pytest.raises(ValueError, match="labels"):
        FastMaskEvaluator(model, unlabelled)
    left = [
        Batch(b.input_ids.flip(1), b.attention_mask.flip(1), None, b.labels, b.indices)
        for b in batches
    ]
    with pytest.raises(ValueError, match="position 0"):
        FastMaskEvaluator(model, left)
    with pytest.raises(UnsupportedArchitectureError, match="BertForSequenceClassification"):
        FastMaskEvaluator(BertModel(model.config), batches)
    with pytest.raises(ValueError, match="labels"):
        NaiveMaskEvaluator(model, word_tokenizer(), ["w1 w2"], [0, 1])


# ---------------------------------------------------------------------------------------------
# precision and speed


def test_bf16_autocast_path_agrees_with_fp32_on_most_rows() -> None:
    setup = Setup(build_tiny_model("distilbert", num_labels=3, seed=37), count=40, amp=True)
    grid = head_grid(setup.model)
    anchor = random_mask(grid, 38, 0.8)
    setup.fast.set_anchor(anchor)
    for mask in masks_around(anchor, seed=39)[:4]:
        agree = (setup.fast.predictions(mask) == setup.naive.predictions(mask)).float().mean()
        assert float(agree) >= 0.8


@pytest.mark.skipif(TEST_DEVICE.type != "cuda", reason="needs HEADSCOPE_TEST_DEVICE=cuda")
def test_cuda_defaults_stack_candidates_under_bf16() -> None:
    model = sensitive_model("bert", seed=40)
    setup = Setup(model, amp=None)
    assert setup.fast._amp
    grid = head_grid(model)
    anchor = random_mask(grid, 41)
    setup.fast.set_anchor(anchor)
    masks = masks_around(anchor, seed=42)
    before = setup.fast.n_layer_passes
    fast_scores = setup.fast.evaluate_many(masks)
    assert setup.fast.n_layer_passes > before
    naive_scores = setup.naive.evaluate_many(masks)
    assert max(abs(a - b) for a, b in zip(fast_scores, naive_scores, strict=True)) <= 20.0
    exact = FastMaskEvaluator(model, setup.batches, amp=False)
    exact.set_anchor(anchor)
    for mask in masks:
        assert torch.equal(exact.predictions(mask), setup.naive.predictions(mask))


def test_fast_is_faster_than_naive_on_single_head_candidates() -> None:
    """Loose: the real benchmark is ``headscope bench astar``; this only catches a regression
    to full padded forwards."""
    model = sensitive_model("bert", seed=43, layers=4)
    setup = Setup(model, count=48)
    grid = head_grid(model)
    anchor = torch.ones(grid, dtype=torch.bool)
    masks = []
    for layer in range(grid[0]):
        for head in range(grid[1]):
            mask = anchor.clone()
            mask[layer, head] = False
            masks.append(mask)
    setup.fast.set_anchor(anchor)
    setup.fast.evaluate_many(masks[:1])
    fast_times, naive_times = [], []
    for _ in range(2):
        start = time.perf_counter()
        fast_scores = setup.fast.evaluate_many(masks)
        fast_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        naive_scores = setup.naive.evaluate_many(masks)
        naive_times.append(time.perf_counter() - start)
    assert fast_scores == naive_scores
    assert min(fast_times) < min(naive_times)
