"""AutoAttention: binary head gates learned with a straight-through estimator (Zhang et al.).

Reference: Shenyu Zhang et al., "AutoAttention: Automatic Attention Head Selection Through
Differentiable Pruning", ACL Rolling Review, January 2022,
https://openreview.net/forum?id=oaA1xSdZD6h.

Our reading. Only the paper's abstract was available to us (the OpenReview page); equations 9
and 10 below are the most faithful reading of the method it describes (binary gates, a
straight-through estimator, weights and gates learned jointly), with the Softplus coarse
gradient named in our issue. Each head ``h`` has one real trainable parameter ``W'_h``:

* forward, the gate is exactly binary: ``G_h = 1 if W'_h > 0 else 0``;
* backward (eq. 10), the step function's zero derivative is replaced by the derivative of its
  smooth surrogate ``Softplus(x) = log(1 + exp(x))``:
  ``dL/dW'_h = dL/dG_h * d Softplus(W'_h)/dW'_h = dL/dG_h * sigmoid(W'_h)``.
  This coarse gradient is positive everywhere, so a closed gate still receives the task's signal
  and can reopen when the head turns out to be needed;
* loss (eq. 9): ``L = CE(model gated by G) + mu * sum_h G_h``; through the estimator the penalty
  pulls every ``W'_h`` down at the rate ``mu * sigmoid(W'_h)``.

The model weights train jointly with AdamW (linear schedule with warm-up, as fine-tuning); the
``W'`` use a separate optimizer. The paper's gate learning rates (swept over 0.1 to 5.0) only make
sense as raw-gradient steps, so the default is plain SGD: with Adam any of them would move every
gate by about that much per step.

Defaults: ``gate_lr = 5.0``, ``mu = 1e-3``, initial ``W' ~ TruncatedNormal(0.3, 0.05)`` on
``[0.2, 0.4]``. Near a fine-tuned optimum the task gradient of an open gate averages about zero
(the gate scales output-projection columns whose own gradient vanishes there), so every ``W'``
drifts down at about ``gate_lr * mu * sigmoid(W') ~ 5 * 1e-3 * 0.57 ~ 2.8e-3`` per step and
reaches 0 after roughly 100-150 of the default 300 steps, plus a random walk from the per-batch
task gradient. Once closed, a head comes back when switching it on lowers the loss by more than
``mu`` per unit of gate; the rest keep sinking. Measured on all-MiniLM-L6-v2 (6 x 12 heads)
lightly fine-tuned on Rotten Tomatoes (80% validation accuracy): per-head gate gradients at
``G = 1`` of median magnitude 2.5e-3 with a per-batch spread of 5.5e-3 (batches of 32); single
head ablations changing the loss by -7e-3 to +1e-2, 65% of them by less than ``mu``; and 60
joint steps (batches of 16) moved the median ``W'`` from 0.30 to 0.18, closed 8 of 72 gates with
6 reopenings and took validation accuracy from 0.805 to 0.820.

Final mask (True = keep): the open gates (``W' > 0``), or, with ``fixed_sparsity``, the top
heads by ``W'``; ``min_heads_per_layer`` keeps each layer's highest-``W'`` heads. Scores are the
final ``W'`` (higher = more important). The trained copy is returned with every head present;
the pipeline removes the masked heads, exactly what the binary gate did during training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pruning.methods.base import PruneResult, PruningContext, PruningMethod, register, ui
from pruning.methods.gate_training import GateStrategy, GateTrainingConfig, train_head_gates

PAPER = (
    "Zhang et al., AutoAttention: Automatic Attention Head Selection Through Differentiable "
    "Pruning, ACL Rolling Review 2022, https://openreview.net/forum?id=oaA1xSdZD6h"
)


class BinaryGateSTE(torch.autograd.Function):
    """Binary gate with the Softplus straight-through estimator (our reading of eq. 10).

    Forward: ``G = 1[W' > 0]`` (float, exactly 0 or 1; ``W' = 0`` gives 0).
    Backward: ``dL/dW' = dL/dG * sigmoid(W')``, the derivative of ``Softplus(W')``.

    Shapes: any; the output has the input's shape and dtype.
    """

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return (weight > 0).to(weight.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (weight,) = ctx.saved_tensors
        return grad_output * torch.sigmoid(weight)


def binary_gates(weight: torch.Tensor) -> torch.Tensor:
    """``BinaryGateSTE`` applied to ``weight`` (any shape): exact 0/1 gates, Softplus gradient."""
    gates: torch.Tensor = BinaryGateSTE.apply(weight)
    return gates


class BinarySTEGates(GateStrategy):
    """AutoAttention's gates: ``G = 1[W' > 0]``, penalty ``sum G`` (eq. 9), Softplus STE.

    Args:
        init_mean, init_std: initial ``W'`` drawn from a normal truncated to two standard
            deviations around the mean (every value positive, so every gate starts open).
    """

    kind = "ste"

    def __init__(self, init_mean: float, init_std: float) -> None:
        self.init_mean = init_mean
        self.init_std = init_std

    def initial(self, n_layers: int, n_heads: int, generator: torch.Generator) -> torch.Tensor:
        weight = torch.full((n_layers, n_heads), float(self.init_mean))
        if self.init_std == 0:
            return weight
        low, high = self.init_mean - 2 * self.init_std, self.init_mean + 2 * self.init_std
        torch.nn.init.trunc_normal_(
            weight, self.init_mean, self.init_std, low, high, generator=generator
        )
        return weight

    def training_gates(self, parameter: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return binary_gates(parameter)

    def penalty(self, parameter: torch.Tensor) -> torch.Tensor:
        return binary_gates(parameter).sum()

    def test_gates(self, parameter: torch.Tensor) -> torch.Tensor:
        return (parameter.detach() > 0).to(torch.float32)


@dataclass(frozen=True)
class AutoAttentionConfig(GateTrainingConfig):
    """Settings of AutoAttention (shared gate-training fields plus the ``W'`` initialisation)."""

    init_mean: float = field(
        default=0.3,
        metadata=ui(
            "Initial W' mean",
            "Mean of the truncated normal the gate parameters start from (all gates open).",
            min=1e-4,
            max=100.0,
        ),
    )
    init_std: float = field(
        default=0.05,
        metadata=ui(
            "Initial W' spread",
            "Standard deviation of that normal; values are cut at two deviations from the mean.",
            min=0.0,
            max=50.0,
        ),
    )

    def validate(self) -> None:
        super().validate()
        if self.init_mean - 2 * self.init_std <= 0:
            raise ValueError(
                f"Initial W' mean {self.init_mean} with spread {self.init_std} can start gates "
                "closed (values reach mean - 2 x spread); raise the mean above "
                f"{2 * self.init_std} or lower the spread below {self.init_mean / 2}."
            )


@register("autoattention")
class AutoAttention(PruningMethod):
    """AutoAttention: jointly train the model and binary STE head gates, keep the open heads.

    See the module docstring for the equations (eq. 9 and 10 of Zhang et al., 2022,
    https://openreview.net/forum?id=oaA1xSdZD6h) and the defaults.

    Trace kinds: ``"gates"`` (snapshots: ``w`` = ``W'``, ``open`` = ``G``, ``gate_kind`` =
    ``"ste"``) and ``"final"``; see :mod:`pruning.methods.gate_training`.
    """

    title = "AutoAttention (STE gates)"
    paper = PAPER
    granularity = "head"
    config_class = AutoAttentionConfig
    config: AutoAttentionConfig

    def run(self, context: PruningContext) -> PruneResult:
        config = self.config
        strategy = BinarySTEGates(config.init_mean, config.init_std)
        return train_head_gates(context, config, strategy, title=self.title)
