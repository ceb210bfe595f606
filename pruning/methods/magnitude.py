"""Head weight magnitude: a data-free structured magnitude criterion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from pruning.adapters import encoder_layers, get_adapter, get_submodule
from pruning.heads import head_dim
from pruning.methods.base import (
    HeadTargetConfig,
    PruneResult,
    PruningContext,
    PruningMethod,
    register,
    select_lowest,
    ui,
)
from pruning.methods.scoring import dense_grid, finish_with_mask, layer_normalize


@dataclass(frozen=True)
class HeadMagnitudeConfig(HeadTargetConfig):
    """Which norm measures a head's weights, and whether layers are normalised."""

    norm: Literal["l2", "l1"] = field(
        default="l2",
        metadata=ui(
            "Norm",
            "l2: square root of the sum of squared weights; l1: sum of absolute weights.",
            choices=("l2", "l1"),
        ),
    )
    normalize_layers: bool = field(
        default=False,
        metadata=ui(
            "Normalise per layer",
            "Divide each layer's scores by their L2 norm so every layer competes on equal terms.",
        ),
    )


def _linear_weight(module: nn.Module) -> torch.Tensor:
    if not isinstance(module, nn.Linear):
        raise TypeError(f"Expected a Linear projection, got {type(module).__name__}.")
    return module.weight


def head_weight_norms(model: nn.Module, norm: str = "l2") -> torch.Tensor:
    """Norm of every head's weights in a dense model.

    A head's weights are its ``head_dim`` rows of the query, key and value projection matrices
    and its ``head_dim`` input columns of the attention output projection; biases are left out
    (they are not multiplied by the head's input, so they do not measure what it computes). The
    four slices count as one group: l2 is the norm of their concatenation, l1 the sum of
    absolute values.

    Returns:
        float32 ``(n_layers, n_heads)`` on the CPU.
    """
    adapter = get_adapter(model)
    size = head_dim(model)
    per_layer = []
    with torch.no_grad():
        for layer in encoder_layers(model):
            attention = get_submodule(layer, adapter.attention)
            rows = [
                _linear_weight(getattr(attention, name))
                for name in (adapter.query, adapter.key, adapter.value)
            ]
            columns = _linear_weight(get_submodule(layer, adapter.output))
            # (heads, head_dim, in) from the projections, (heads, out, head_dim) from the output.
            pieces = [w.reshape(-1, size, w.shape[-1]).flatten(1) for w in rows]
            pieces.append(columns.reshape(columns.shape[0], -1, size).transpose(0, 1).flatten(1))
            grouped = torch.cat(pieces, dim=1).float()
            if norm == "l2":
                per_layer.append(grouped.pow(2).sum(dim=1).sqrt())
            else:
                per_layer.append(grouped.abs().sum(dim=1))
    return torch.stack(per_layer).cpu()


@register("magnitude")
class HeadMagnitude(PruningMethod):
    """Remove the heads whose weights have the smallest norm.

    Reading: the structured (group) form of magnitude pruning. Li, Kadav, Durdanovic, Samet and
    Graf rank whole convolution filters by the norm of their weights; here the group is one
    attention head, i.e. its q/k/v rows and output-projection columns (weights only, biases
    excluded; see :func:`head_weight_norms`). Optionally each layer's scores are divided by their
    L2 norm. Uses no data.

    Reference: Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017,
    https://arxiv.org/abs/1608.08710 (after Han et al., "Learning both Weights and Connections for
    Efficient Neural Networks", NeurIPS 2015, https://arxiv.org/abs/1506.02626).

    Trace kinds: ``"scores"`` (the norms), ``"mask"`` (bool grid, True = keep).
    """

    title = "Head weight magnitude"
    paper = (
        "Li et al., Pruning Filters for Efficient ConvNets, ICLR 2017, "
        "https://arxiv.org/abs/1608.08710"
    )
    config_class = HeadMagnitudeConfig
    config: HeadMagnitudeConfig

    def run(self, context: PruningContext) -> PruneResult:
        n_layers, n_heads = dense_grid(context.model, self.title)
        count = self.config.heads_to_prune(n_layers, n_heads)
        context.check()
        scores = head_weight_norms(context.model, self.config.norm)
        if self.config.normalize_layers:
            scores = layer_normalize(scores)
        mask = select_lowest(scores, count, min_heads_per_layer=self.config.min_heads_per_layer)
        return finish_with_mask(
            context,
            scores,
            mask,
            info={"norm": self.config.norm, "normalize_layers": self.config.normalize_layers},
        )
