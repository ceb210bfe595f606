"""Tokenised, dynamically padded batches.

:func:`make_batches` tokenises texts in one fast-tokenizer call and pads each batch only to its
own longest row; rows are grouped by length, and ``Batch.indices`` lets callers restore the
original order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Rows per shuffled length bucket, in batches: large enough to randomise batch composition,
# small enough that sorting inside a bucket still keeps padding close to the fully sorted case.
_BUCKET_BATCHES = 50


@dataclass
class Batch:
    """One padded batch of tokenised rows.

    Attributes:
        input_ids: ``(B, T)`` long, padded to the batch's longest row.
        attention_mask: ``(B, T)`` long, 1 for tokens and 0 for padding.
        token_type_ids: ``(B, T)`` long, or None when the tokenizer does not use them.
        labels: ``(B,)`` long class ids, or None.
        indices: ``(B,)`` long positions of the rows in the texts given to :func:`make_batches`.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    labels: torch.Tensor | None
    indices: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: str | torch.device) -> Batch:
        """A copy with every tensor on ``device``."""

        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device)

        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            move(self.token_type_ids),
            move(self.labels),
            self.indices.to(device),
        )

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for a model forward: ids, mask and token types if any (no labels)."""
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            inputs["token_type_ids"] = self.token_type_ids
        return inputs


def make_batches(
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int] | None = None,
    *,
    batch_size: int = 32,
    max_length: int = 128,
    shuffle: bool = False,
    seed: int = 0,
    bucket: bool = True,
    text_pairs: Sequence[str] | None = None,
) -> list[Batch]:
    """Tokenise ``texts`` in one call and cut them into dynamically padded batches.

    Each batch is padded only to its own longest row (after truncation to ``max_length``).
    Row order across batches:

    * ``bucket`` and not ``shuffle``: sorted by token length, longest first (ties in input order),
      which keeps padding minimal for evaluation.
    * ``bucket`` and ``shuffle``: rows are shuffled, cut into buckets of 50 batches, sorted by
      length inside each bucket and batched; then the batch order is shuffled. Seeded.
    * not ``bucket``: input order, or a seeded shuffle.

    ``Batch.indices`` holds each row's position in ``texts`` so callers can restore the order.

    Args:
        tokenizer: a Hugging Face (fast) tokenizer.
        texts: the texts; ``text_pairs`` optional second texts (sentence pairs).
        labels: class ids, one per text, or None.

    Raises:
        ValueError: on mismatched lengths or non-positive sizes.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}.")
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"Got {len(texts)} texts but {len(labels)} labels; give one per text.")
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise ValueError(f"Got {len(texts)} texts but {len(text_pairs)} text pairs.")
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, not one string; wrap it in a list.")
    if len(texts) == 0:
        return []
    use_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    encoded = tokenizer(
        list(texts),
        list(text_pairs) if text_pairs is not None else None,
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=use_types,
    )
    ids: list[list[int]] = encoded["input_ids"]
    types: list[list[int]] | None = encoded["token_type_ids"] if use_types else None
    label_tensor = None if labels is None else torch.as_tensor(list(labels), dtype=torch.long)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pad_type = getattr(tokenizer, "pad_token_type_id", 0)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    batches = []
    for rows in _batch_order([len(row) for row in ids], batch_size, shuffle, seed, bucket):
        width = max(len(ids[i]) for i in rows)
        index = torch.tensor(rows, dtype=torch.long)
        batches.append(
            Batch(
                input_ids=_pad([ids[i] for i in rows], width, pad_id, left),
                attention_mask=_pad([[1] * len(ids[i]) for i in rows], width, 0, left),
                token_type_ids=None
                if types is None
                else _pad([types[i] for i in rows], width, pad_type, left),
                labels=None if label_tensor is None else label_tensor[index],
                indices=index,
            )
        )
    return batches


def _pad(rows: Sequence[Sequence[int]], width: int, value: int, left: bool) -> torch.Tensor:
    """Rows padded with ``value`` to ``width`` (on the left if ``left``): ``(len(rows), width)``."""
    if left:
        return torch.tensor([[value] * (width - len(row)) + list(row) for row in rows])
    return torch.tensor([list(row) + [value] * (width - len(row)) for row in rows])


def _batch_order(
    lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int, bucket: bool
) -> list[list[int]]:
    """Row positions of each batch (see :func:`make_batches` for the ordering rules)."""
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
    if not bucket:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if not shuffle:
        order.sort(key=lambda i: -lengths[i])
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    span = batch_size * _BUCKET_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
