"""Attention-statistics baselines: attention entropy and attention to separator tokens.

Both read each head's attention probabilities on the score texts in one pass over
``context.batches`` (eager attention, forward hooks on each layer's attention module, one batch
in memory at a time) and average a per-query statistic over every non-padding query token of
every example (a token-weighted mean, as the BERTology entropy code of Michel et al. does).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from pruning.adapters import encoder_layers, get_adapter, get_submodule
from pruning.batching import Batch
from pruning.capture import eager_attention
from pruning.evaluate import eval_mode
from pruning.methods.base import (
    HeadTargetConfig,
    PruneResult,
    PruningContext,
    PruningMethod,
    register,
    select_lowest,
    ui,
)
from pruning.methods.scoring import dense_grid, finish_with_mask

# Per query statistic: (attention probs (B, H, T, T), batch) -> (B, H, T).
QueryStatistic = Callable[[torch.Tensor, Batch], torch.Tensor]

_PRUNE_HELP = {
    "entropy": "high: remove the heads with the most diffuse attention first; low: the most "
    "focused first.",
    "sep": "high: remove the heads that attend most to separator tokens first; low: least first.",
}


def attention_entropy(probs: torch.Tensor, _batch: Batch) -> torch.Tensor:
    """Entropy in nats of each query's attention distribution: ``(B, H, T, T) -> (B, H, T)``."""
    safe = torch.where(probs > 0, probs, torch.ones_like(probs))
    return -(probs * safe.log()).sum(dim=-1)


def separator_mass(separator_id: int) -> QueryStatistic:
    """Statistic: attention mass each query puts on separator tokens, ``(B, H, T)``."""

    def mass(probs: torch.Tensor, batch: Batch) -> torch.Tensor:
        is_separator = (batch.input_ids == separator_id).to(probs.dtype)
        return (probs * is_separator[:, None, None, :]).sum(dim=-1)

    return mass


@torch.no_grad()
def mean_attention_statistic(
    model: nn.Module,
    batches: Sequence[Batch],
    statistic: QueryStatistic,
    *,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """Average ``statistic`` over all non-padding query tokens, per head.

    Args:
        model: a dense supported classifier; not modified (eager attention and hooks are
            switched back, the training flag restored).
        batches: padded batches on the model's device; only their tokens are used.
        statistic: maps a layer's attention probabilities ``(B, H, T, T)`` and the batch to one
            value per query ``(B, H, T)``.
        on_batch: called after each batch with ``(batches done, batches in all)``.

    Returns:
        float32 ``(n_layers, n_heads)`` means on the CPU, and the number of query tokens.
    """
    adapter = get_adapter(model)
    layers = encoder_layers(model)
    totals: list[torch.Tensor | None] = [None] * len(layers)
    current: dict[str, Batch] = {}

    def make_hook(index: int) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if not isinstance(output, tuple) or len(output) < 2 or output[1] is None:
                raise RuntimeError(
                    f"The attention module of layer {index} returned no attention weights; "
                    "this architecture cannot be scored by attention statistics."
                )
            batch = current["batch"]
            values = statistic(output[1].float(), batch)
            queries = batch.attention_mask.to(values.dtype)[:, None, :]
            summed = (values * queries).sum(dim=(0, 2))
            previous = totals[index]
            totals[index] = summed if previous is None else previous + summed

        return hook

    handles = [
        get_submodule(layer, adapter.attention).register_forward_hook(make_hook(index))
        for index, layer in enumerate(layers)
    ]
    n_tokens = 0
    try:
        with eval_mode(model), eager_attention(model):
            for done, batch in enumerate(batches, start=1):
                current["batch"] = batch
                model(**batch.model_inputs())
                n_tokens += int(batch.attention_mask.sum())
                if on_batch is not None:
                    on_batch(done, len(batches))
    finally:
        for handle in handles:
            handle.remove()
    if n_tokens == 0 or any(total is None for total in totals):
        raise ValueError("No score texts to compute attention statistics on; give some texts.")
    stacked = torch.stack([total for total in totals if total is not None])
    return (stacked / n_tokens).cpu(), n_tokens


@dataclass(frozen=True)
class AttentionEntropyConfig(HeadTargetConfig):
    """Which end of the entropy ranking is removed first."""

    prune: Literal["high", "low"] = field(
        default="high",
        metadata=ui("Remove first", _PRUNE_HELP["entropy"], choices=("high", "low")),
    )


@dataclass(frozen=True)
class SeparatorAttentionConfig(HeadTargetConfig):
    """Which end of the attention-to-separator ranking is removed first."""

    prune: Literal["high", "low"] = field(
        default="high",
        metadata=ui("Remove first", _PRUNE_HELP["sep"], choices=("high", "low")),
    )


class _AttentionStatisticMethod(PruningMethod):
    """Score heads by a mean attention statistic; ``prune`` says which end goes first."""

    config: AttentionEntropyConfig | SeparatorAttentionConfig
    statistic_name = ""

    @abstractmethod
    def statistic(self, context: PruningContext) -> QueryStatistic:
        """The per-query statistic to average (may read the tokenizer)."""

    def run(self, context: PruningContext) -> PruneResult:
        n_layers, n_heads = dense_grid(context.model, self.title)
        count = self.config.heads_to_prune(n_layers, n_heads)
        statistic = self.statistic(context)
        context.check()

        def on_batch(done: int, total: int) -> None:
            context.emit("progress", 0.95 * done / total, f"batch {done}/{total}")

        means, n_tokens = mean_attention_statistic(
            context.model, context.batches, statistic, on_batch=on_batch
        )
        # select_lowest removes the lowest scores, so "high" negates the statistic.
        scores = -means if self.config.prune == "high" else means
        mask = select_lowest(scores, count, min_heads_per_layer=self.config.min_heads_per_layer)
        info = {self.statistic_name: means.tolist(), "n_tokens": n_tokens}
        return finish_with_mask(context, scores, mask, info={**info, "prune": self.config.prune})


@register("entropy")
class AttentionEntropy(_AttentionStatisticMethod):
    """Remove the heads whose attention is most diffuse (highest mean entropy) first.

    Reading: for every head, the entropy (nats) of each non-padding query token's attention
    distribution over the keys, averaged over all such tokens of all score texts. With
    ``prune="high"`` (default) the score is ``-entropy``: broad, near-uniform heads, which Clark
    et al. found to behave like bag-of-vectors averages, go first; ``"low"`` removes the most
    focused heads first. Used as a baseline by MCAP.

    References: Rajapaksha and Crespi, "Explainable Attention Pruning: A Meta-learning-based
    Approach", IEEE Transactions on Artificial Intelligence, 2024,
    https://openreview.net/forum?id=2HXUDneIMH (baselines); Clark, Khandelwal, Levy and Manning,
    "What Does BERT Look At? An Analysis of BERT's Attention", BlackboxNLP 2019,
    https://arxiv.org/abs/1906.04341 (attention entropy, Section 3.3).

    Trace kinds: ``"progress"`` (per batch), ``"scores"``, ``"mask"`` (True = keep).
    """

    title = "Attention entropy"
    paper = (
        "Baseline of Rajapaksha & Crespi, Explainable Attention Pruning, IEEE TAI 2024; "
        "entropy after Clark et al. 2019, https://arxiv.org/abs/1906.04341"
    )
    config_class = AttentionEntropyConfig
    statistic_name = "entropy"

    def statistic(self, context: PruningContext) -> QueryStatistic:
        return attention_entropy


@register("sep")
class SeparatorAttention(_AttentionStatisticMethod):
    """Remove the heads that put the most attention on separator tokens first.

    Reading: for every head, the attention mass each non-padding query token puts on separator
    tokens (``tokenizer.sep_token_id``: ``[SEP]`` for BERT, ``</s>`` for RoBERTa; every
    occurrence counts), averaged over all such tokens of all score texts. Clark et al. read
    attention to ``[SEP]`` as a head's "no-op", so with ``prune="high"`` (default) the score is
    ``-mass`` and those heads go first; ``"low"`` reverses the order. Used as a baseline by MCAP.

    References: Rajapaksha and Crespi, "Explainable Attention Pruning: A Meta-learning-based
    Approach", IEEE Transactions on Artificial Intelligence, 2024,
    https://openreview.net/forum?id=2HXUDneIMH (baselines); Clark et al., "What Does BERT Look
    At? An Analysis of BERT's Attention", BlackboxNLP 2019, https://arxiv.org/abs/1906.04341
    (Section 3.2, attention to [SEP]).

    Trace kinds: ``"progress"`` (per batch), ``"scores"``, ``"mask"`` (True = keep).
    """

    title = "Attention to [SEP]"
    paper = (
        "Baseline of Rajapaksha & Crespi, Explainable Attention Pruning, IEEE TAI 2024; "
        "[SEP] attention after Clark et al. 2019, https://arxiv.org/abs/1906.04341"
    )
    config_class = SeparatorAttentionConfig
    statistic_name = "separator_mass"

    def statistic(self, context: PruningContext) -> QueryStatistic:
        separator_id = getattr(context.tokenizer, "sep_token_id", None)
        if separator_id is None:
            raise ValueError(
                "The tokenizer has no separator token, so attention to [SEP] is undefined; "
                "use a BERT-family tokenizer ([SEP] or </s>) or another method."
            )
        return separator_mass(int(separator_id))
