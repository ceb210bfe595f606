"""Random head pruning: the baseline every informed method has to beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pruning.methods.base import (
    HeadTargetConfig,
    PruneResult,
    PruningContext,
    PruningMethod,
    register,
    select_lowest,
)
from pruning.methods.scoring import dense_grid, finish_with_mask


@dataclass(frozen=True)
class RandomHeadsConfig(HeadTargetConfig):
    """How many heads to remove at random (the run's seed picks them)."""


@register("random")
class RandomHeads(PruningMethod):
    """Remove heads chosen uniformly at random.

    Reading: every head gets a score drawn from U(0, 1) with a generator seeded by the run's seed
    (``context.seed``); the lowest scores are removed, subject to ``min_heads_per_layer``. The
    same seed gives the same mask on any machine, a new seed a new draw. Uses no data.

    Reference: random pruning as the sanity baseline recommended by Blalock, Gonzalez Ortiz,
    Frankle and Guttag, "What is the State of Neural Network Pruning?", MLSys 2020,
    https://arxiv.org/abs/2003.03033.

    Trace kinds: ``"scores"`` (the random draw), ``"mask"`` (bool grid, True = keep).
    """

    title = "Random heads"
    paper = (
        "Baseline: Blalock et al., What is the State of Neural Network Pruning?, MLSys 2020, "
        "https://arxiv.org/abs/2003.03033"
    )
    config_class = RandomHeadsConfig
    config: RandomHeadsConfig

    def run(self, context: PruningContext) -> PruneResult:
        n_layers, n_heads = dense_grid(context.model, self.title)
        count = self.config.heads_to_prune(n_layers, n_heads)
        context.check()
        scores = torch.rand(n_layers, n_heads, generator=context.generator())
        mask = select_lowest(scores, count, min_heads_per_layer=self.config.min_heads_per_layer)
        return finish_with_mask(context, scores, mask, info={"seed": context.seed})
