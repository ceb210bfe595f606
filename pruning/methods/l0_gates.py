"""L0 hard-concrete head gates (Voita et al., 2019; Louizos et al., 2018): the stochastic baseline.

References: Voita, Talbot, Moiseev, Sennrich and Titov, "Analyzing Multi-Head Self-Attention:
Specialized Heads Do the Heavy Lifting, the Rest Can Be Pruned", ACL 2019,
https://arxiv.org/abs/1905.09418 (code: https://github.com/lena-voita/the-story-of-heads);
Louizos, Welling and Kingma, "Learning Sparse Neural Networks through L0 Regularization",
ICLR 2018, https://arxiv.org/abs/1712.01312.

Each head has a parameter ``log_alpha``. With temperature ``beta`` and stretch ``(gamma, zeta)``:

* training gate (stochastic, one noise draw per step shared by the batch, as Voita's code):
  ``u ~ U(0, 1)``, ``s = sigmoid((log u - log(1 - u) + log_alpha) / beta)``,
  ``g = clamp(s * (zeta - gamma) + gamma, 0, 1)``; exact 0 and 1 occur with positive
  probability;
* penalty, the expected number of non-zero gates (the relaxed L0 norm of Louizos et al.; eq. 12
  of the AutoAttention paper as our issue numbers it, the paper's text was not available to us):
  ``sum_h sigmoid(log_alpha_h - beta * log(-gamma / zeta))``; the loss is ``CE + mu * penalty``;
* test-time gate (deterministic, Louizos' estimator as in Voita's code):
  ``clamp(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)``, soft in [0, 1].

Defaults follow Voita's code: ``beta = 0.33`` (Louizos et al. use 2/3), ``gamma = -0.1``,
``zeta = 1.1``. ``init_log_alpha = 2.5`` starts every deterministic gate at exactly 1 (it needs
``sigmoid(log_alpha) >= 11/12``, ``log_alpha >= 2.4``) and samples a closed training gate
rarely (3.6%), so training starts from the fine-tuned model. Voita trains ``log_alpha`` jointly
with the model's own Adam; here it has its own Adam at ``gate_lr = 0.1`` so that a short run
moves it. ``mu = 1e-2`` (ten times AutoAttention's): the relaxed penalty's slope,
``sigmoid'(.)``, is far smaller than the STE penalty's ``sigmoid(W')`` while the gate is nearly
always open, and with Adam only its ratio to the noisy task gradient drives the gates. Measured
on all-MiniLM-L6-v2 (6 x 12 heads) lightly fine-tuned on Rotten Tomatoes, 60 joint steps of 16
texts: with ``mu = 1e-3, gate_lr = 0.05`` no gate closed (the median ``log_alpha`` stalled near
2.2); with ``mu = 1e-2, gate_lr = 0.1`` 28 of 72 closed, validation accuracy 0.805 with the soft
gates and 0.789 with the hard mask.

Final mask (True = keep): heads whose deterministic gate exceeds 0.5 (with the default symmetric
stretch: ``log_alpha > 0``), or the top heads by ``log_alpha`` under ``fixed_sparsity``. Voita's
code instead keeps every head whose test gate is non-zero; 0.5 is the rounding that turns the
soft test gates into the hard removal the pipeline applies. That removal differs from the soft
gates the model was trained and validated with (the train/test discrepancy AutoAttention
points at): ``info`` reports the validation accuracy with the soft deterministic gates
(``val_metric_gates``) and with the hard mask (``val_metric_mask``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from pruning.methods.base import PruneResult, PruningContext, PruningMethod, register, ui
from pruning.methods.gate_training import GateStrategy, GateTrainingConfig, train_head_gates

PAPER = (
    "Voita, Talbot, Moiseev, Sennrich & Titov, Analyzing Multi-Head Self-Attention: Specialized "
    "Heads Do the Heavy Lifting, the Rest Can Be Pruned, ACL 2019, "
    "https://arxiv.org/abs/1905.09418"
)
# Keeps log(u) and log(1 - u) finite (Voita's code draws u from [eps, 1 - eps] too).
NOISE_EPS = 1e-6


class HardConcreteGates(GateStrategy):
    """Stretched, clamped concrete gates with the relaxed L0 penalty (formulas in the module doc).

    Args:
        temperature: ``beta`` of the concrete distribution, in (0, 1].
        gamma, zeta: stretch limits, ``gamma < 0`` and ``zeta > 1``.
        init_log_alpha: initial ``log_alpha`` of every head.
    """

    kind = "l0"

    def __init__(
        self, temperature: float, gamma: float, zeta: float, init_log_alpha: float
    ) -> None:
        self.temperature = temperature
        self.gamma = gamma
        self.zeta = zeta
        self.init_log_alpha = init_log_alpha

    def initial(self, n_layers: int, n_heads: int, generator: torch.Generator) -> torch.Tensor:
        return torch.full((n_layers, n_heads), float(self.init_log_alpha))

    def _stretch(self, s: torch.Tensor) -> torch.Tensor:
        return torch.clamp(s * (self.zeta - self.gamma) + self.gamma, 0.0, 1.0)

    def training_gates(self, parameter: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.rand(parameter.shape, generator=generator)
        u = noise.clamp(NOISE_EPS, 1.0 - NOISE_EPS).to(parameter.device)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + parameter) / self.temperature)
        return self._stretch(s)

    def open_probability(self, parameter: torch.Tensor) -> torch.Tensor:
        """``P(gate != 0)`` per head: ``sigmoid(log_alpha - beta * log(-gamma / zeta))``."""
        shift = self.temperature * math.log(-self.gamma / self.zeta)
        return torch.sigmoid(parameter - shift)

    def penalty(self, parameter: torch.Tensor) -> torch.Tensor:
        return self.open_probability(parameter).sum()

    def test_gates(self, parameter: torch.Tensor) -> torch.Tensor:
        return self._stretch(torch.sigmoid(parameter.detach())).to(torch.float32)

    def snapshot_data(
        self, parameter: torch.Tensor, last_gates: torch.Tensor | None
    ) -> dict[str, Any]:
        with torch.no_grad():
            prob = self.open_probability(parameter.detach()).cpu()
        return {
            "prob": prob.tolist(),
            "expected_open": float(prob.sum()),
            "train_gate_mean": None if last_gates is None else float(last_gates.mean()),
        }


@dataclass(frozen=True)
class L0GatesConfig(GateTrainingConfig):
    """Settings of the L0 hard-concrete gates (shared gate-training fields plus the gate's own)."""

    gate_lr: float = field(
        default=0.1,
        metadata=ui(
            "Gate learning rate",
            "Learning rate of log_alpha (Adam by default: about the step size per update).",
            min=1e-6,
            max=100.0,
        ),
    )
    gate_optimizer: str = field(
        default="adam",
        metadata=ui(
            "Gate optimizer",
            "adam: per-gate normalised steps (the gate lr is about the step size). sgd: plain "
            "gradient steps.",
            choices=("sgd", "adam"),
        ),
    )
    mu: float = field(
        default=1e-2,
        metadata=ui(
            "Penalty weight (mu)",
            "Weight of the expected number of open gates: a head stays when it lowers the loss "
            "by more than this. Larger closes more gates.",
            min=0.0,
            max=100.0,
        ),
    )
    temperature: float = field(
        default=0.33,
        metadata=ui(
            "Temperature (beta)",
            "Concrete temperature: lower is closer to binary gates. Voita et al. use 0.33, "
            "Louizos et al. 2/3.",
            min=0.01,
            max=1.0,
        ),
    )
    gamma: float = field(
        default=-0.1,
        metadata=ui(
            "Stretch low (gamma)",
            "Lower stretch limit; below 0 so that gates can be exactly 0.",
            min=-1.0,
            max=-1e-3,
        ),
    )
    zeta: float = field(
        default=1.1,
        metadata=ui(
            "Stretch high (zeta)",
            "Upper stretch limit; above 1 so that gates can be exactly 1.",
            min=1.001,
            max=2.0,
        ),
    )
    init_log_alpha: float = field(
        default=2.5,
        metadata=ui(
            "Initial log alpha",
            "Starting log_alpha of every head; 2.4 or more starts every test-time gate at 1.",
            min=-10.0,
            max=10.0,
        ),
    )


@register("l0_gates")
class L0Gates(PruningMethod):
    """Voita et al.'s L0 hard-concrete head gates, trained jointly with the model.

    See the module docstring for the formulas (Louizos et al., 2018; eq. 12 of AutoAttention) and
    the final mask rule. Reference: https://arxiv.org/abs/1905.09418.

    Trace kinds: ``"gates"`` (``w`` = ``log_alpha``, ``open`` = test-time gate > 0.5, plus
    ``prob``, ``expected_open``, ``train_gate_mean``; ``gate_kind`` = ``"l0"``) and ``"final"``;
    see :mod:`pruning.methods.gate_training`.
    """

    title = "L0 hard-concrete gates (Voita et al.)"
    paper = PAPER
    granularity = "head"
    config_class = L0GatesConfig
    config: L0GatesConfig

    def run(self, context: PruningContext) -> PruneResult:
        config = self.config
        strategy = HardConcreteGates(
            config.temperature, config.gamma, config.zeta, config.init_log_alpha
        )
        return train_head_gates(context, config, strategy, title=self.title)
