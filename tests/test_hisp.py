"""HISP (Michel et al. 2019) against a direct gradient computation through the head gates."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from conftest import build_tiny_model
from pruning.heads import head_gates
from pruning.methods.base import PruningContext, select_lowest
from test_methods import run_method, sentiment_context, tiny_context


def direct_importance(
    context: PruningContext,
    *,
    per_example: bool,
    normalize: bool = True,
    mask: torch.Tensor | None = None,
    max_examples: int | None = None,
) -> torch.Tensor:
    """Importance by autograd on the official gates: one example (unpadded) or batch at a time."""
    model = context.model
    gates = (mask.float() if mask is not None else torch.ones(2, 4)).requires_grad_(True)
    total, count = torch.zeros(2, 4), 0
    for batch in context.batches:
        rows = [
            row
            for row in range(len(batch))
            if max_examples is None or int(batch.indices[row]) < max_examples
        ]
        inputs = batch.model_inputs()
        if per_example:
            for row in rows:
                length = int(batch.attention_mask[row].sum())
                one = {key: value[row : row + 1, :length] for key, value in inputs.items()}
                with head_gates(model, gates):
                    logits = model(**one).logits
                loss = F.cross_entropy(logits, batch.labels[row : row + 1])
                (grad,) = torch.autograd.grad(loss, gates)
                total += grad.abs()
        else:
            assert max_examples is None
            with head_gates(model, gates):
                logits = model(**inputs).logits
            loss = F.cross_entropy(logits, batch.labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, gates)
            total += grad.abs()
        count += len(rows)
    raw = total / count
    return raw / raw.norm(dim=1, keepdim=True) if normalize else raw


@pytest.mark.parametrize("per_example", [True, False])
def test_hisp_equals_direct_gradient_computation(per_example: bool) -> None:
    context = sentiment_context(n=12, batch_size=5)
    expected = direct_importance(context, per_example=per_example)
    result = run_method("hisp", context, n_prune=3, per_example=per_example)
    torch.testing.assert_close(result.scores, expected, rtol=1e-5, atol=1e-8)
    assert torch.equal(result.mask, select_lowest(expected, 3))
    assert result.info["n_examples"] == 12
    progress = [event for event in result.trace if event.kind == "progress"]
    assert len(progress) == len(context.batches)
    assert progress[-1].message == "scored 12/12 examples"


def test_per_example_and_batch_readings_differ() -> None:
    def scores(per_example: bool, normalize: bool) -> torch.Tensor:
        context = sentiment_context(n=12, batch_size=6)
        result = run_method("hisp", context, per_example=per_example, normalize_layers=normalize)
        return result.scores

    assert not torch.allclose(scores(True, True), scores(False, True), atol=1e-3)
    # |sum of gradients| <= sum of |gradients|: the batch reading is never the larger one.
    assert bool((scores(False, False) <= scores(True, False) * (1 + 1e-5)).all())


def test_unnormalised_scores_and_example_cap() -> None:
    context = sentiment_context(n=12, batch_size=5)
    expected = direct_importance(context, per_example=True, normalize=False, max_examples=7)
    result = run_method("hisp", context, normalize_layers=False, max_examples=7)
    torch.testing.assert_close(result.scores, expected, rtol=1e-5, atol=1e-10)
    assert result.info["n_examples"] == 7


def test_iterative_hisp_reaches_the_target_and_rescores_with_removed_heads_off() -> None:
    context = sentiment_context(n=12, batch_size=5)
    result = run_method("hisp", context, n_prune=5, iterative=True, steps=3)
    iterations = [event for event in result.trace if event.kind == "iteration"]
    assert [event.data["iteration"] for event in iterations] == [1, 2, 3]
    assert [event.data["n_removed"] for event in iterations] == [1, 3, 5]
    for event in iterations:
        assert int((~torch.tensor(event.data["mask"])).sum()) == event.data["n_removed"]
    assert int((~result.mask).sum()) == 5
    assert iterations[-1].data["mask"] == result.mask.tolist() == result.trace[-1].data["mask"]

    first_mask = torch.tensor(iterations[0].data["mask"])
    torch.testing.assert_close(
        torch.tensor(iterations[0].data["scores"]),
        direct_importance(context, per_example=True),
        rtol=1e-5,
        atol=1e-8,
    )
    torch.testing.assert_close(
        torch.tensor(iterations[1].data["scores"]),
        direct_importance(context, per_example=True, mask=first_mask),
        rtol=1e-5,
        atol=1e-8,
    )
    kinds = [event.kind for event in result.trace]
    assert kinds[-2:] == ["scores", "mask"] and kinds.count("iteration") == 3
    # Removed heads stay removed: every step's mask is contained in the previous one.
    masks = [torch.tensor(event.data["mask"]) for event in iterations]
    assert all(bool((later <= earlier).all()) for earlier, later in itertools.pairwise(masks))


def test_iterative_respects_the_minimum_per_layer() -> None:
    context = sentiment_context(n=8, batch_size=4)
    result = run_method("hisp", context, n_prune=6, iterative=True, steps=4, min_heads_per_layer=1)
    assert result.mask.sum(dim=1).tolist() == [1, 1]


def test_hisp_needs_labels() -> None:
    context = tiny_context(build_tiny_model("bert"))
    for batch in context.batches:
        batch.labels = None
    with pytest.raises(ValueError, match="needs labelled score texts"):
        run_method("hisp", context)
