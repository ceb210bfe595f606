"""Capture what the heads compute: attention probabilities and per-head query / key vectors.

Both work for dense and pruned models and always return the original ``(n_layers, n_heads)``
grid, with removed heads marked by ``present`` (False) and filled with NaN, so visualisations can
draw pruned and dense models side by side (bertviz, for one, needs equal head counts per layer).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from pruning.adapters import encoder_layers, get_adapter, get_submodule, model_config
from pruning.heads import head_dim, head_grid, kept_heads, present_mask


@dataclass(frozen=True)
class SentenceCapture:
    """Attention and query/key vectors of one sentence.

    Attributes:
        tokens: the ``T`` tokens (special tokens included).
        attentions: ``(n_layers, n_heads, T, T)`` attention probabilities; NaN for removed heads.
        queries, keys: ``(n_layers, n_heads, T, d)`` per-head query / key vectors; NaN for removed
            heads. ``None`` when not requested.
        present: bool ``(n_layers, n_heads)``, True where the head exists in the model.
    """

    tokens: tuple[str, ...]
    attentions: torch.Tensor
    queries: torch.Tensor | None
    keys: torch.Tensor | None
    present: torch.Tensor


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily switch a model to eager attention (sdpa returns no attention weights)."""
    previous = getattr(model_config(model), "_attn_implementation", "sdpa")
    if previous == "eager":
        yield model
        return
    switch = getattr(model, "set_attn_implementation")  # noqa: B009 - typed as Tensor by torch
    switch("eager")
    try:
        yield model
    finally:
        switch(previous)


def _scatter_heads(
    values: torch.Tensor, heads: list[int], n_heads: int, fill_shape: tuple[int, ...]
) -> torch.Tensor:
    """Place ``values`` ``(h_kept, ...)`` into a NaN grid ``(n_heads, ...)`` at ``heads``."""
    full = torch.full((n_heads, *fill_shape), float("nan"))
    if heads:
        full[heads] = values.to(torch.float32)
    return full


@torch.no_grad()
def capture_sentences(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    *,
    max_length: int = 128,
    with_qk: bool = True,
) -> list[SentenceCapture]:
    """Run sentences one batch through the model and capture each head's attention and Q/K.

    Args:
        model: a supported classifier, dense or pruned; not modified (hooks are removed after).
        tokenizer: its tokenizer.
        sentences: texts; each is truncated to ``max_length`` tokens.
        with_qk: also capture per-head query and key vectors (for joint Q/K embeddings).

    Raises:
        ValueError: when ``sentences`` is empty or holds an empty text.
    """
    texts = [str(s) for s in sentences]
    if not texts or any(not t.strip() for t in texts):
        raise ValueError("Give at least one non-empty sentence to capture attention for.")
    adapter = get_adapter(model)
    n_layers, n_heads = head_grid(model)
    size = head_dim(model)
    kept = kept_heads(model)
    device = next(model.parameters()).device
    encoded = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    attention_out: dict[int, torch.Tensor] = {}
    projections: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    for index, block in enumerate(encoder_layers(model)):
        if not kept[index]:
            continue
        attention = get_submodule(block, adapter.attention)

        def keep_weights(_m: nn.Module, _i: object, out: object, index: int = index) -> None:
            if isinstance(out, tuple) and len(out) > 1 and out[1] is not None:
                attention_out[index] = out[1].detach().float().cpu()

        handles.append(attention.register_forward_hook(keep_weights))
        if with_qk:
            for kind, name in (("q", adapter.query), ("k", adapter.key)):

                def keep_projection(
                    _m: nn.Module,
                    _i: object,
                    out: torch.Tensor,
                    key: tuple[int, str] = (index, kind),
                ) -> None:
                    projections[key] = out.detach().float().cpu()

                handles.append(getattr(attention, name).register_forward_hook(keep_projection))
    try:
        with eager_attention(model):
            model(**{k: v.to(device) for k, v in encoded.items()})
    finally:
        for handle in handles:
            handle.remove()

    present = present_mask(model)
    results: list[SentenceCapture] = []
    for row in range(len(texts)):
        length = int(encoded["attention_mask"][row].sum())
        ids = encoded["input_ids"][row, :length].tolist()
        tokens = tuple(tokenizer.convert_ids_to_tokens(ids))
        att = torch.stack(
            [
                _scatter_heads(
                    attention_out[layer][row, :, :length, :length]
                    if layer in attention_out
                    else torch.empty(0),
                    kept[layer],
                    n_heads,
                    (length, length),
                )
                for layer in range(n_layers)
            ]
        )
        queries = keys = None
        if with_qk:
            stacked = {}
            for kind in ("q", "k"):
                per_layer = []
                for layer in range(n_layers):
                    raw = projections.get((layer, kind))
                    values = (
                        raw[row, :length].reshape(length, len(kept[layer]), size).transpose(0, 1)
                        if raw is not None
                        else torch.empty(0)
                    )
                    per_layer.append(_scatter_heads(values, kept[layer], n_heads, (length, size)))
                stacked[kind] = torch.stack(per_layer)
            queries, keys = stacked["q"], stacked["k"]
        results.append(
            SentenceCapture(
                tokens=tokens, attentions=att, queries=queries, keys=keys, present=present
            )
        )
    return results
