"""Out of device memory (simulated): the batch is halved and retried, with the same results.

The fakes raise ``torch.cuda.OutOfMemoryError`` (constructible on a CPU-only build) whenever a
forward gets more rows, or more stacked masks, than they "fit".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from conftest import build_tiny_model, real_tokenizer, small_bert
from pruning.batching import Batch
from pruning.evaluate import evaluate_masks, predict_logits
from pruning.fast_eval import FastMaskEvaluator
from pruning.oom import DeviceOutOfMemoryError, is_out_of_memory, run_halving_on_oom
from pruning.predictor import BatchedPredictor

CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 1.00 GiB free)"


def _oom() -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError(CUDA_OOM)


class RowwiseClassifier(nn.Module):
    """Each row's logits from its own tokens only; "out of memory" above ``max_rows`` rows."""

    def __init__(self, max_rows: int | None = None, error: Callable[[], Exception] = _oom) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 3)
        self.max_rows = max_rows
        self.error = error
        self.calls: list[int] = []

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> SimpleNamespace:
        rows = int(input_ids.shape[0])
        self.calls.append(rows)
        if self.max_rows is not None and rows > self.max_rows:
            raise self.error()
        logits = (self.embed(input_ids) * attention_mask[..., None]).sum(dim=1)
        return SimpleNamespace(logits=logits)


def _batches(sizes: tuple[int, ...], vocab: int = 50, length: int = 7) -> list[Batch]:
    """Length-shuffled labelled batches with right padding; indices cover 0..N-1 out of order."""
    generator = torch.Generator().manual_seed(1)
    total = sum(sizes)
    order = torch.randperm(total, generator=generator)
    batches, start = [], 0
    for size in sizes:
        ids = torch.randint(5, vocab, (size, length), generator=generator)
        mask = torch.ones(size, length, dtype=torch.long)
        for row in range(size):
            cut = 2 + row % (length - 2)
            mask[row, cut:] = 0
            ids[row, cut:] = 0
        labels = torch.randint(0, 2, (size,), generator=generator)
        batches.append(Batch(ids, mask, None, labels, order[start : start + size]))
        start += size
    return batches


def _fits(model: nn.Module, max_rows: int) -> list[int]:
    """Make ``model``'s forward raise CUDA OOM above ``max_rows`` rows; returns the row log."""
    real = model.forward
    calls: list[int] = []

    def forward(*args: Any, **kwargs: Any) -> Any:
        rows = int(kwargs["input_ids"].shape[0])
        calls.append(rows)
        if rows > max_rows:
            raise _oom()
        return real(*args, **kwargs)

    model.forward = forward  # type: ignore[method-assign]
    return calls


def test_predict_logits_halves_the_batch_on_oom_and_returns_the_same_rows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batches = _batches((8, 5))
    expected, labels = predict_logits(RowwiseClassifier(), batches)
    model = RowwiseClassifier(max_rows=3)
    with caplog.at_level(logging.WARNING, logger="pruning.oom"):
        logits, same_labels = predict_logits(model, batches)
    assert torch.equal(logits, expected) and torch.equal(same_labels, labels)
    # 8 fails, 4 fails, then 2 rows per forward, kept for the next batch (no new failures).
    assert model.calls == [8, 4, 2, 2, 2, 2, 2, 2, 1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "out of memory" in warnings[0]
    assert "with 8 per forward" in warnings[0] and "retrying with 4" in warnings[0]


def test_an_mps_style_out_of_memory_is_retried_too() -> None:
    batches = _batches((6,))
    expected, _ = predict_logits(RowwiseClassifier(), batches)
    mps = RowwiseClassifier(max_rows=2, error=lambda: RuntimeError("MPS backend out of memory"))
    assert torch.equal(predict_logits(mps, batches)[0], expected)


def test_other_errors_are_not_retried() -> None:
    model = RowwiseClassifier(max_rows=0, error=lambda: RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch") as caught:
        predict_logits(model, _batches((8,)))
    assert not isinstance(caught.value, DeviceOutOfMemoryError) and model.calls == [8]


def test_oom_at_one_row_raises_a_clear_error() -> None:
    model = RowwiseClassifier(max_rows=0)
    with pytest.raises(DeviceOutOfMemoryError, match="even with 1 per forward") as caught:
        predict_logits(model, _batches((4,)))
    message = str(caught.value)
    assert "Free memory on the device" in message and "--device cpu" in message
    assert isinstance(caught.value.__cause__, torch.cuda.OutOfMemoryError)
    assert model.calls == [4, 2, 1]
    assert not is_out_of_memory(caught.value)  # final: an outer loop does not retry it


def test_run_halving_on_oom_covers_every_item_once_in_order() -> None:
    seen: list[tuple[int, int]] = []
    dropped: list[int] = []

    def work(start: int, stop: int) -> list[int]:
        if stop - start > 3:
            raise _oom()
        seen.append((start, stop))
        return list(range(start, stop))

    pieces = run_halving_on_oom(work, 11, 8, on_retry=dropped.append)
    assert [item for piece in pieces for item in piece] == list(range(11))
    assert seen == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 11)] and dropped == [4, 2]


@pytest.mark.parametrize("fits_rows", [16, 3])
def test_evaluate_masks_halves_masks_then_rows_on_oom(fits_rows: int) -> None:
    model = build_tiny_model("bert")
    batches = _batches((8, 6), vocab=120)
    generator = torch.Generator().manual_seed(2)
    masks = [torch.rand(3, 4, generator=generator) > 0.4 for _ in range(5)]
    expected = evaluate_masks(model, batches, masks, masks_per_forward=1)
    calls = _fits(model, fits_rows)
    got = evaluate_masks(model, batches, masks, masks_per_forward=4)
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.accuracy == theirs.accuracy and mine.mcc == pytest.approx(theirs.mcc)
        assert mine.loss == pytest.approx(theirs.loss, rel=1e-5)
    assert max(calls) == 32 and all(rows <= fits_rows for rows in calls[-3:])


def test_the_explanation_predictor_halves_its_batches_on_oom() -> None:
    model, tokenizer = small_bert(), real_tokenizer()
    texts = [f"a {word} film, really {word}" for word in ("great", "awful", "fine", "dull", "ok")]
    expected = BatchedPredictor(model, tokenizer, batch_size=8)(texts)
    calls = _fits(model, 2)
    predictor = BatchedPredictor(model, tokenizer, batch_size=8)
    got = predictor(texts)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert calls[0] == 5 and max(calls[1:]) <= 2  # 5 rows fail, then 2 + 2 + 1
    calls.clear()
    predictor(["another text", "and one more", "and a third one"])
    assert max(calls) <= 2  # the smaller size is kept for later calls


def test_the_fast_mask_evaluator_halves_its_stacked_masks_on_oom(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = build_tiny_model("bert")
    batches = _batches((8, 6), vocab=120)
    generator = torch.Generator().manual_seed(3)
    masks = [torch.rand(3, 4, generator=generator) > 0.4 for _ in range(6)]
    expected = FastMaskEvaluator(model, batches, masks_per_forward=1).evaluate_many(masks)
    real = FastMaskEvaluator._group_logits
    groups: list[int] = []

    def group_logits(self: FastMaskEvaluator, group: list[torch.Tensor], start: int) -> Any:
        groups.append(len(group))
        if len(group) > 1:
            raise _oom()
        return real(self, group, start)

    monkeypatch.setattr(FastMaskEvaluator, "_group_logits", group_logits)
    evaluator = FastMaskEvaluator(model, batches, masks_per_forward=4)
    assert evaluator.evaluate_many(masks) == pytest.approx(expected)
    assert groups == [4, 2, 1, 1, 1, 1, 1, 1]
