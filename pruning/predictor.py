"""A batched ``texts -> class probabilities`` function for explainers (LIME, SHAP, faithfulness).

Explainers call a model on hundreds of perturbed copies of one text. :class:`BatchedPredictor`
tokenises them in one call, sorts them by length and pads each batch only to its own longest row
(:func:`pruning.batching.make_batches`), runs the forwards in inference mode and computes each
distinct text once per call. On the 2-core CPU this is 6.4x faster than one forward per text for a
LIME-sized job (docs/FACTS: 4.5 s vs 28.9 s); ``one_at_a_time=True`` is that baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pruning.batching import make_batches
from pruning.evaluate import eval_mode, resolve_device
from pruning.oom import OomHalving

__all__ = ["BatchedPredictor", "model_max_length"]

# RoBERTa-style models number positions from padding_idx + 1, so that many are unusable.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert")
_DEFAULT_MAX_LENGTH = 512


def model_max_length(model: nn.Module, tokenizer: Any) -> int:
    """The longest input (in tokens, special tokens included) the model and tokenizer accept."""
    limits = []
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 1 < declared < 100_000:
        limits.append(declared)
    config = getattr(model, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 1:
        if getattr(config, "model_type", "") in _OFFSET_POSITIONS:
            positions -= int(getattr(config, "pad_token_id", 1) or 0) + 1
        limits.append(positions)
    return max(2, min(limits)) if limits else _DEFAULT_MAX_LENGTH


class BatchedPredictor:
    """Class probabilities of a classifier for many texts, computed in length-sorted batches.

    Args:
        model: a sequence classifier (``model(**inputs).logits``); its train/eval mode is
            switched to eval for each call and restored afterwards. It is never moved.
        tokenizer: its (fast) tokenizer.
        device: where to run; ``None`` = the model's device (a different device raises).
        batch_size: texts per forward (halved, and the batch retried, when the device runs out
            of memory; see :mod:`pruning.oom`).
        max_length: truncation length in tokens; ``None`` = the model's maximum
            (:func:`model_max_length`).
        one_at_a_time: one text per forward, no padding (the benchmark baseline).

    Attributes:
        calls: number of calls so far.
        texts_seen: texts received over all calls (duplicates included).
        texts_computed: distinct texts actually run through the model over all calls.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        one_at_a_time: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.one_at_a_time = one_at_a_time
        self.calls = 0
        self.texts_seen = 0
        self.texts_computed = 0
        # Out of device memory, fewer texts per forward, for this call and the later ones.
        self._halving = OomHalving("computing class probabilities of texts")

    def __call__(
        self,
        texts: Sequence[str],
        *,
        on_batch: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Softmax probabilities, float64 ``(len(texts), n_classes)``, rows in input order.

        Args:
            texts: the texts (an empty string is fine: the model sees only special tokens).
            on_batch: called as ``on_batch(done, total)`` with distinct texts after each batch.
            should_stop: checked before each batch; when it returns True the call raises
                :class:`pruning.jobs.JobCancelled`.

        Raises:
            ValueError: ``texts`` is one string instead of a sequence of strings.
        """
        if isinstance(texts, str):
            raise ValueError("Pass a list of texts, not one string; wrap it in a list.")
        rows = [str(text) for text in texts]
        self.calls += 1
        self.texts_seen += len(rows)
        unique = list(dict.fromkeys(rows))
        if not unique:
            return np.zeros((0, 0), dtype=np.float64)
        position = {text: i for i, text in enumerate(unique)}
        max_length = self.max_length or model_max_length(self.model, self.tokenizer)
        target = resolve_device(self.model, self.device)
        batches = make_batches(
            self.tokenizer,
            unique,
            batch_size=1 if self.one_at_a_time else self.batch_size,
            max_length=max_length,
            bucket=not self.one_at_a_time,
        )
        probabilities: np.ndarray | None = None
        done = 0
        with eval_mode(self.model), torch.inference_mode():
            for batch in batches:
                if should_stop is not None and should_stop():
                    from pruning.jobs import JobCancelled

                    raise JobCancelled()
                logits = self._halving.forward_rows(
                    lambda rows: self.model(**rows).logits, batch.to(target).model_inputs()
                )
                chunk = torch.softmax(logits.double(), dim=-1).cpu().numpy()
                if probabilities is None:
                    probabilities = np.empty((len(unique), chunk.shape[1]), dtype=np.float64)
                probabilities[batch.indices.numpy()] = chunk
                done += len(batch)
                if on_batch is not None:
                    on_batch(done, len(unique))
        self.texts_computed += len(unique)
        assert probabilities is not None  # unique is non-empty, so there was a batch
        return probabilities[[position[text] for text in rows]]
