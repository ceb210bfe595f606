"""AutoAttention: binary head gates learned with a straight-through estimator (Zhang et al.).

Reference: Shenyu Zhang et al., "AutoAttention: Automatic Attention Head Selection Through
Differentiable Pruning", ACL Rolling Review, January 2022,
https://openreview.net/forum?id=oaA1xSdZD6h. Section, equation and figure numbers below are
those of that submission's text.

The method (Sec. 3.1). Each head has one binary gate ``G`` (eq. 5) and the objective penalises
the open gates, ``min_{W,G} F(W, G) + mu * sum G`` (eq. 7). The gate is a step function of one
real auxiliary parameter per head, ``G = g(W') = 0 if W' <= 0, 1 if W' > 0`` (eq. 8), so the
loss is ``L = F(W, W') + mu * sum g(W')`` (eq. 9; here ``F`` is the cross-entropy of the gated
model). The weights follow back-propagation; ``W'`` follows eq. 10, printed as::

    W'_{k+1} = W'_k - l'_r * dL/dW'
             = W'_k - l'_r * dL/dG * dG/dW'
             = W'_k - l'_r * dL/dG * Softplus(W')                                  (10)

after "We use Softplus STE" and the family it is chosen from: "Linear STEs", "ReLU or clipped
ReLU STEs" (Yin et al., 2019) and "Softplus STEs ... recommended in (Xiao et al., 2019) due to
the smoothness of their gradients, where the curse of non-recoverability in network pruning
caused by zero gradients is also discussed". The forward gate is exactly binary in both readings
below; ``dL/dG`` is the gradient of the whole ``L``, task and penalty, so the penalty goes
through the same estimator and pulls every ``W'`` down at the rate ``mu * dG/dW'``.

Two readings of eq. 10's last line (config field ``ste_gradient``):

* ``"sigmoid"`` (default), the coarse-gradient STE reading: the backward pass replaces the step
  function's zero derivative by the derivative of its smooth surrogate ``Softplus(x) =
  log(1 + exp(x))``: ``dG/dW' := d Softplus(W')/dW' = sigmoid(W')``, so
  ``dL/dW' = dL/dG * sigmoid(W')``. "Softplus(W')" in eq. 10 then names the estimator, not the
  factor.
* ``"softplus"``, the literal reading: ``dG/dW' := Softplus(W')`` itself, so
  ``dL/dW' = dL/dG * log(1 + exp(W'))``. Implemented exactly (``torch.nn.functional.softplus``,
  which returns ``x`` itself above 20, where ``log(1 + exp(x))`` and ``x`` agree to 2e-9).

Both factors are positive everywhere, so a closed gate still gets the task's signal and can
reopen (the recoverability of Sec. 5.3), and both fall like ``exp(W')`` far below zero. They
part above zero: ``sigmoid`` is at most 1 (``0.5`` at 0, ``0.57`` at the initial 0.3, ``0.88``
at 2), ``Softplus`` grows like ``W'`` (``0.69``, ``0.85``, ``2.13``), so under the literal
reading a gate moves faster the further it is from the threshold: a head whose task gradient
keeps pointing up grows geometrically (by about ``1 + l'_r * |dL/dG|`` per step) and one far
above zero sinks fast under the penalty.

Why ``"sigmoid"`` is the default: in the STE family the paper cites, an estimator is named after
the surrogate whose derivative replaces the zero derivative (the linear STE passes 1, the ReLU
STE of Yin et al. passes ``1[x > 0]``), so a "Softplus STE" passes ``sigmoid``. The reason
given for choosing it (smooth gradients, no zero gradients to make pruning non-recoverable)
holds for both factors and decides nothing. Eq. 10 read to the letter sets
``dG/dW' = Softplus(W')``, a usable coarse gradient too, but the paper gives no code and its text
does not support that reading more clearly than the STE convention, so the default stays the
reading HeadScope has always run and ``"softplus"`` is the option; its runs are keyed apart
(``AutoAttentionConfig.to_dict``).

Training schedule, paper against defaults (HeadScope runs on CPU, often 2 cores):

* weights ``W``: "the default initial learning rate (3e-5)" (Sec. 6) in Huggingface's
  fine-tuning (Sec. 4); default ``lr = 3e-5``, AdamW with 6% warm-up and linear decay as
  :func:`pruning.train.fine_tune`.
* gates ``W'``: their own optimizer (Sec. 3.1, 6, 7), whose update eq. 10 writes as a plain
  gradient step; "initial learning rate" swept from 0.1 to 5.0, 5.0 giving the most sparsity
  (53% to 79% on CoLA at an MCC cost of 0.03, Sec. 6, Fig. 6). Default ``gate_optimizer =
  "sgd"`` (no momentum) at a constant ``gate_lr = 5.0``, the top of the sweep: with Adam every
  one of those rates would move each gate by about that much per step. Whether the gate rate
  decays is not stated; it stays constant here.
* ``mu``: swept from 1e-5 to 1e-2, then fixed at 1e-3 (Sec. 6, Fig. 7); default 1e-3.
* initial ``W'``: "truncated normal distribution with all values greater than 0" (Sec. 5.3,
  Fig. 5a), parameters not given; default ``TruncatedNormal(0.3, 0.05)`` cut at two deviations,
  ``[0.2, 0.4]``.
* length: not stated for the pruning run; the baselines are fine-tuned for 4 epochs with
  Huggingface's default steps (Sec. 4) and the gates move "after epochs of training" (Sec. 5.3);
  batch size not stated. Default ``steps = 300`` of ``batch_size = 32`` texts, 0.94 epoch of the
  default Rotten Tomatoes training split (10,201 texts). Four epochs (``epochs = 4``, 1,276
  steps) is the paper's reference, too long for the default: on a 2-core CPU shared with other
  work, 8 joint steps of 32 texts on all-MiniLM-L6-v2 (6 x 12 heads) with 5 snapshots on 256
  validation texts took 85 s, so the 300 default steps take about half an hour there and four
  epochs over two hours. Set ``epochs = 4`` where a GPU is at hand.

Defaults in motion. Near a fine-tuned optimum the task gradient of an open gate averages about
zero (the gate scales output-projection columns whose own gradient vanishes there), so every
``W'`` drifts down at about ``gate_lr * mu * sigmoid(W') ~ 5 * 1e-3 * 0.57 ~ 2.8e-3`` per step
and reaches 0 after roughly 100-150 of the default 300 steps (``Softplus``: ``4.3e-3`` per step,
about 70-100 steps), plus a random walk from the per-batch task gradient. Once closed, a head
comes back when switching it on lowers the loss by more than ``mu`` per unit of gate; the rest
keep sinking. Measured on all-MiniLM-L6-v2 (6 x 12 heads) lightly fine-tuned on Rotten Tomatoes
(80% validation accuracy), sigmoid reading: per-head gate gradients at ``G = 1`` of median
magnitude 2.5e-3 with a per-batch spread of 5.5e-3 (batches of 32); single head ablations
changing the loss by -7e-3 to +1e-2, 65% of them by less than ``mu``; and 60 joint steps
(batches of 16) moved the median ``W'`` from 0.30 to 0.18, closed 8 of 72 gates with 6
reopenings and took validation accuracy from 0.805 to 0.820.

The two readings measured on the test suite's tiny models. Tiny random BERT (2 x 4 heads, 64
sentiment texts, batches of 8, weight rate 1e-3, the other settings default, 300 steps, seeds
0, 1, 2), sigmoid against softplus: first gate closed at step 155-160 against 130-135; open gates
at the end 8, 6, 7 against 8, 4, 8; reopenings 5-8 against 8-13; final task loss 0.007 for all
but one softplus seed (0.017); largest final ``W'`` 0.8-1.9 against 0.7-9.2. The toy heads of
``tests/test_autoattention.py`` (frozen weights, every head useful, default rates, 50 steps): no
gate closed under either reading, but the useful heads' ``W'`` reached 4-25 against 17 to 2.5e8,
and with one useful head the softplus reading overflowed float32 within 150 steps (the run
then stops and says so). The literal reading closes gates sooner and makes them swing more.

Final mask (True = keep): the open gates (``W' > 0``), or, with ``fixed_sparsity``, the top
heads by ``W'``; ``min_heads_per_layer`` keeps each layer's highest-``W'`` heads. Scores are the
final ``W'`` (higher = more important). The trained copy is returned with every head present;
the pipeline removes the masked heads, exactly what the binary gate did during training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from pruning.methods.base import PruneResult, PruningContext, PruningMethod, register, ui
from pruning.methods.gate_training import GateStrategy, GateTrainingConfig, train_head_gates

PAPER = (
    "Zhang et al., AutoAttention: Automatic Attention Head Selection Through Differentiable "
    "Pruning, ACL Rolling Review 2022, https://openreview.net/forum?id=oaA1xSdZD6h"
)
# The two readings of eq. 10 (module docstring); the first is the default.
STE_GRADIENTS = ("sigmoid", "softplus")
DEFAULT_STE_GRADIENT = "sigmoid"


def checked_ste_gradient(ste_gradient: str) -> str:
    """``ste_gradient`` when it names a reading of eq. 10.

    Raises:
        ValueError: for anything but ``"sigmoid"`` or ``"softplus"``.
    """
    if ste_gradient not in STE_GRADIENTS:
        raise ValueError(
            f"Unknown eq. 10 gradient {ste_gradient!r}; use 'sigmoid' (d Softplus(W')/dW', the "
            "default) or 'softplus' (Softplus(W') as printed)."
        )
    return ste_gradient


def coarse_derivative(weight: torch.Tensor, ste_gradient: str) -> torch.Tensor:
    """What stands for ``dG/dW'`` in eq. 10: ``sigmoid(W')`` or, read literally, ``Softplus(W')``.

    Shapes: any; the output has the input's shape and dtype.

    Raises:
        ValueError: for a reading other than ``"sigmoid"`` or ``"softplus"``.
    """
    if checked_ste_gradient(ste_gradient) == "sigmoid":
        return torch.sigmoid(weight)
    return F.softplus(weight)


class BinaryGateSTE(torch.autograd.Function):
    """Binary gate with the Softplus straight-through estimator (eq. 8 forward, eq. 10 backward).

    Forward: ``G = 1[W' > 0]`` (float, exactly 0 or 1; ``W' = 0`` gives 0, eq. 8).
    Backward: ``dL/dW' = dL/dG * coarse_derivative(W', ste_gradient)``: ``sigmoid(W')`` (the
    derivative of ``Softplus``, default) or ``Softplus(W')`` (eq. 10 as printed).

    Shapes: any; the output has the input's shape and dtype.
    """

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, ste_gradient: str) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.ste_gradient = ste_gradient
        return (weight > 0).to(weight.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (weight,) = ctx.saved_tensors
        return grad_output * coarse_derivative(weight, ctx.ste_gradient), None


def binary_gates(weight: torch.Tensor, ste_gradient: str = DEFAULT_STE_GRADIENT) -> torch.Tensor:
    """``BinaryGateSTE`` on ``weight`` (any shape): exact 0/1 gates, the chosen eq. 10 gradient.

    Raises:
        ValueError: for a reading other than ``"sigmoid"`` or ``"softplus"``.
    """
    gates: torch.Tensor = BinaryGateSTE.apply(weight, checked_ste_gradient(ste_gradient))
    return gates


class BinarySTEGates(GateStrategy):
    """AutoAttention's gates: ``G = 1[W' > 0]``, penalty ``sum G`` (eq. 9), Softplus STE (eq. 10).

    Args:
        init_mean, init_std: initial ``W'`` drawn from a normal truncated to two standard
            deviations around the mean (every value positive, so every gate starts open;
            Sec. 5.3).
        ste_gradient: the reading of eq. 10, ``"sigmoid"`` or ``"softplus"`` (module docstring).
    """

    kind = "ste"

    def __init__(
        self, init_mean: float, init_std: float, ste_gradient: str = DEFAULT_STE_GRADIENT
    ) -> None:
        self.init_mean = init_mean
        self.init_std = init_std
        self.ste_gradient = checked_ste_gradient(ste_gradient)

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
        return binary_gates(parameter, self.ste_gradient)

    def penalty(self, parameter: torch.Tensor) -> torch.Tensor:
        return binary_gates(parameter, self.ste_gradient).sum()

    def test_gates(self, parameter: torch.Tensor) -> torch.Tensor:
        return (parameter.detach() > 0).to(torch.float32)

    def snapshot_data(
        self, parameter: torch.Tensor, last_gates: torch.Tensor | None
    ) -> dict[str, Any]:
        return {"ste_gradient": self.ste_gradient}

    def info(self) -> dict[str, Any]:
        return {"ste_gradient": self.ste_gradient}

    def divergence_fix(self) -> str:
        if self.ste_gradient == "softplus":
            return (
                "lower gate_lr, or use ste_gradient='sigmoid' (the literal Softplus gradient "
                "grows with W', so a head the task keeps needing grows geometrically)"
            )
        return super().divergence_fix()


@dataclass(frozen=True)
class AutoAttentionConfig(GateTrainingConfig):
    """Settings of AutoAttention: the shared gate-training fields, the ``W'`` initialisation and
    the reading of eq. 10 (defaults and the paper's values: module docstring)."""

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
    ste_gradient: str = field(
        default=DEFAULT_STE_GRADIENT,
        metadata=ui(
            "Eq. 10 gradient",
            "What the backward pass uses for dG/dW': sigmoid = d Softplus(W')/dW', the "
            "coarse-gradient STE reading (default); softplus = Softplus(W') itself, eq. 10 as "
            "printed. Softplus moves gates far from 0 faster.",
            choices=STE_GRADIENTS,
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

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON dict, ``ste_gradient`` left out at its default ``"sigmoid"``.

        Every run made before the option existed used the sigmoid reading, so leaving the
        default out keeps their run keys (the key hashes this dict); ``from_dict`` fills it back
        in. A ``"softplus"`` run is keyed apart.
        """
        data = super().to_dict()
        if data["ste_gradient"] == DEFAULT_STE_GRADIENT:
            del data["ste_gradient"]
        return data


@register("autoattention")
class AutoAttention(PruningMethod):
    """AutoAttention: jointly train the model and binary STE head gates, keep the open heads.

    See the module docstring for the equations (eq. 8 to 10 of Zhang et al., 2022,
    https://openreview.net/forum?id=oaA1xSdZD6h), the two readings of eq. 10 and the paper's
    schedule against the defaults.

    Trace kinds: ``"gates"`` (snapshots: ``w`` = ``W'``, ``open`` = ``G``, ``gate_kind`` =
    ``"ste"``, ``ste_gradient`` = the eq. 10 reading) and ``"final"``; see
    :mod:`pruning.methods.gate_training`. ``info`` adds ``ste_gradient`` to the training budget
    (``steps``, ``batch_size``, ``train_texts``, ``lr``) and the gate facts.
    """

    title = "AutoAttention (STE gates)"
    paper = PAPER
    granularity = "head"
    config_class = AutoAttentionConfig
    config: AutoAttentionConfig

    def run(self, context: PruningContext) -> PruneResult:
        config = self.config
        strategy = BinarySTEGates(config.init_mean, config.init_std, config.ste_gradient)
        return train_head_gates(context, config, strategy, title=self.title)
