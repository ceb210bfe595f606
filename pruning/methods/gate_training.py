"""Joint training of per-head gates and model weights, shared by the learned-gate head methods.

AutoAttention (binary STE gates, :mod:`pruning.methods.autoattention`) and the L0 hard-concrete
baseline of Voita et al. (:mod:`pruning.methods.l0_gates`) run the same loop and differ only in a
small :class:`GateStrategy`: how the gate parameter turns into the gates of a training forward,
the sparsity penalty, and the deterministic test-time gates.

The loop (:func:`train_head_gates`) trains a deep copy of the context's model on the training
split: one gate parameter per head, gates applied with :class:`pruning.heads.HeadGates`, loss =
cross-entropy + ``mu * penalty``, AdamW with warm-up and linear decay on the weights (as
:func:`pruning.train.fine_tune`) and a separate optimizer (``gate_optimizer``, constant
``gate_lr``) on the gate parameter. Snapshots of the gates and the validation accuracy of the
gated model (on the score batches) form the trace.

Trace kinds:

* ``"gates"``: ``{"train_step", "total_steps", "w", "open", "task_loss", "penalty",
  "open_gates", "val_metric", "val_metric_name", "gate_kind"}`` plus the strategy's own fields.
  ``w`` is the gate parameter and ``open`` its 0/1 test-time state, both ``(n_layers, n_heads)``
  nested lists; ``task_loss`` is the mean task loss since the previous snapshot (None at step 0);
  ``penalty`` is ``mu * penalty`` at this step.
* ``"final"``: ``{"mask", "w", "open", "fixed_sparsity", "reopened"}``; ``reopened`` lists
  ``{"layer", "head", "closed_at", "reopened_at"}`` (training steps) for every head whose gate was
  closed at one snapshot and open at a later one (one entry per closing).

Mask convention: bool ``(n_layers, n_heads)``, **True = keep**.
"""

from __future__ import annotations

import copy
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from pruning.batching import Batch, make_batches
from pruning.evaluate import evaluate_model
from pruning.heads import HeadGates, drop_gate_hooks, head_grid
from pruning.methods.base import (
    HeadTargetConfig,
    MethodConfig,
    PruneResult,
    PruningContext,
    min_heads_field,
    select_lowest,
    ui,
)
from pruning.methods.scoring import dense_grid
from pruning.train import _linear_schedule, _parameter_groups

# Same settings as pruning.train.TrainConfig's defaults, so joint training matches fine-tuning.
WARMUP_RATIO = 0.06
WEIGHT_DECAY = 0.01
GRAD_CLIP = 1.0
MAX_LENGTH = 128
# Share of the method's progress spent in training; the final selection takes the rest.
_TRAIN_SHARE = 0.95

_INTEGER_FIELDS = ("steps", "epochs", "batch_size", "snapshot_every", "min_heads_per_layer")


@dataclass(frozen=True)
class GateTrainingConfig(MethodConfig):
    """Settings shared by the learned-gate head methods (AutoAttention, L0 gates)."""

    steps: int = field(
        default=300,
        metadata=ui("Training steps", "Joint training steps (batches).", min=1, max=1_000_000),
    )
    epochs: int | None = field(
        default=None,
        metadata=ui(
            "Epochs", "When set, passes over the training split instead of steps.", min=1, max=100
        ),
    )
    lr: float = field(
        default=3e-5,
        metadata=ui("Weight learning rate", "Peak AdamW rate of the weights.", min=1e-7, max=1e-2),
    )
    gate_lr: float = field(
        default=5.0,
        metadata=ui(
            "Gate learning rate",
            "Constant rate of the gate parameters (sgd: scales the raw gradient; adam: about the "
            "step size). Higher closes gates sooner.",
            min=1e-6,
            max=100.0,
        ),
    )
    gate_optimizer: str = field(
        default="sgd",
        metadata=ui("Gate optimizer", "Optimizer of the gate parameters.", choices=("sgd", "adam")),
    )
    mu: float = field(
        default=1e-3,
        metadata=ui("Penalty weight (mu)", "Larger closes more gates.", min=0.0, max=100.0),
    )
    batch_size: int = field(
        default=32, metadata=ui("Batch size", "Training texts per step.", min=1, max=1024)
    )
    snapshot_every: int = field(
        default=10,
        metadata=ui("Snapshot every", "Steps between gate snapshots.", min=1, max=100_000),
    )
    fixed_sparsity: float | None = field(
        default=None,
        metadata=ui(
            "Fixed sparsity",
            "When set, remove exactly this share of all heads, those with the lowest gate "
            "parameter, instead of the heads whose gate closed.",
            min=0.0,
            max=1.0,
            step=0.05,
        ),
    )
    min_heads_per_layer: int = min_heads_field()
    train_weights: bool = field(
        default=True,
        metadata=ui("Train weights", "Off: train the gates only, weights frozen."),
    )

    def validate(self) -> None:
        for name in _INTEGER_FIELDS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be a whole number (got {value!r}).")
        for spec in self.__dataclass_fields__.values():
            value = getattr(self, spec.name)
            if spec.type in ("float", "float | None") and isinstance(value, int | float):
                # 1 and 1.0 are the same setting and must give the same store key.
                object.__setattr__(self, spec.name, float(value))

    def heads_to_remove(self, n_layers: int, n_heads: int) -> int | None:
        """Heads removed under ``fixed_sparsity`` (None when unset), checked before training.

        Raises:
            ValueError: when ``min_heads_per_layer`` exceeds the heads per layer or leaves too few
                removable heads for ``fixed_sparsity``.
        """
        target = HeadTargetConfig(
            sparsity=self.fixed_sparsity or 0.0, min_heads_per_layer=self.min_heads_per_layer
        )
        count = target.heads_to_prune(n_layers, n_heads)
        return None if self.fixed_sparsity is None else count


class GateStrategy(ABC):
    """How one family of learned gates turns its parameter into gates and a penalty.

    The parameter is a float tensor ``(n_layers, n_heads)``; higher = more important.
    """

    kind: ClassVar[str] = ""

    @abstractmethod
    def initial(self, n_layers: int, n_heads: int, generator: torch.Generator) -> torch.Tensor:
        """Initial gate parameter ``(n_layers, n_heads)`` (float32, CPU)."""

    @abstractmethod
    def training_gates(self, parameter: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Differentiable gates of one training forward, ``(n_layers, n_heads)``.

        ``generator`` (CPU) draws any noise, so runs are reproducible.
        """

    @abstractmethod
    def penalty(self, parameter: torch.Tensor) -> torch.Tensor:
        """Differentiable sparsity penalty (a scalar, before the ``mu`` weight)."""

    @abstractmethod
    def test_gates(self, parameter: torch.Tensor) -> torch.Tensor:
        """Deterministic gates for evaluation, ``(n_layers, n_heads)`` in [0, 1], no gradient."""

    def open_mask(self, parameter: torch.Tensor) -> torch.Tensor:
        """Bool ``(n_layers, n_heads)``: True where the test-time gate is above 0.5."""
        return self.test_gates(parameter) > 0.5

    def snapshot_data(
        self, parameter: torch.Tensor, last_gates: torch.Tensor | None
    ) -> dict[str, Any]:
        """Extra JSON-ready fields of a ``"gates"`` event (``last_gates``: the last step's)."""
        return {}

    def info(self) -> dict[str, Any]:
        """Extra JSON-ready facts for the result's ``info`` (e.g. which estimator ran)."""
        return {}

    def divergence_fix(self) -> str:
        """What to change when the gate parameter stops being finite (ends a sentence)."""
        return "lower gate_lr"


def make_gate_optimizer(parameter: torch.Tensor, kind: str, lr: float) -> torch.optim.Optimizer:
    """Plain SGD (no momentum) when ``kind`` is ``"sgd"``, else Adam; constant rate ``lr``."""
    optimizer = torch.optim.SGD if kind == "sgd" else torch.optim.Adam
    return optimizer([parameter], lr=lr)


def planned_gate_steps(n_examples: int, config: GateTrainingConfig) -> int:
    """Training steps: ``epochs`` passes over ``n_examples`` texts when set, else ``steps``."""
    if config.epochs is None:
        return config.steps
    return math.ceil(n_examples / config.batch_size) * config.epochs


def _training_batches(context: PruningContext, batch_size: int) -> Iterator[Batch]:
    """Length-bucketed shuffled batches of the training split, reshuffled every epoch, forever."""
    split = context.dataset.train
    epoch = 0
    while True:
        yield from make_batches(
            context.tokenizer,
            split.texts,
            split.labels,
            batch_size=batch_size,
            max_length=MAX_LENGTH,
            shuffle=True,
            seed=context.seed + epoch,
            bucket=True,
            text_pairs=split.text_pairs,
        )
        epoch += 1


def _nested(tensor: torch.Tensor) -> list[list[Any]]:
    values: list[list[Any]] = tensor.detach().cpu().tolist()
    return values


@dataclass
class _Reopenings:
    """Which heads closed at a snapshot and were open at a later one."""

    closed_since: dict[tuple[int, int], int] = field(default_factory=dict)
    events: list[dict[str, int]] = field(default_factory=list)

    def update(self, open_mask: torch.Tensor, step: int) -> None:
        for (layer, head), is_open in _cells(open_mask):
            if not is_open:
                self.closed_since.setdefault((layer, head), step)
            elif (layer, head) in self.closed_since:
                closed_at = self.closed_since.pop((layer, head))
                self.events.append(
                    {"layer": layer, "head": head, "closed_at": closed_at, "reopened_at": step}
                )


def _cells(grid: torch.Tensor) -> Iterator[tuple[tuple[int, int], Any]]:
    """``((layer, head), value)`` for every cell of a ``(n_layers, n_heads)`` tensor."""
    for layer, row in enumerate(grid.tolist()):
        for head, value in enumerate(row):
            yield (layer, head), value


def final_mask(
    scores: torch.Tensor, open_mask: torch.Tensor, n_remove: int | None, min_heads_per_layer: int
) -> torch.Tensor:
    """The kept heads: top-k by score under fixed sparsity, else the open gates.

    Without a fixed count, a layer left with fewer than ``min_heads_per_layer`` open gates keeps
    its highest-scoring heads instead.

    Shapes: ``scores`` float and ``open_mask`` bool ``(n_layers, n_heads)``; returns bool
    ``(n_layers, n_heads)``, True = keep.
    """
    if n_remove is not None:
        return select_lowest(scores, n_remove, min_heads_per_layer=min_heads_per_layer)
    mask = open_mask.clone().bool()
    for layer in range(mask.shape[0]):
        if int(mask[layer].sum()) < min_heads_per_layer:
            top = torch.argsort(-scores[layer], stable=True)[:min_heads_per_layer]
            mask[layer, top] = True
    return mask


class _GateTrainer:
    """One run of :func:`train_head_gates`: the trained copy, its hooks, the gate parameter."""

    def __init__(
        self, context: PruningContext, config: GateTrainingConfig, strategy: GateStrategy
    ) -> None:
        self.context, self.config, self.strategy = context, config, strategy
        n_layers, n_heads = head_grid(context.model)
        self.generator = context.generator()
        device = context.device
        self.parameter = (
            strategy.initial(n_layers, n_heads, self.generator).to(device).requires_grad_(True)
        )
        self.model = copy.deepcopy(context.model).to(device)
        drop_gate_hooks(self.model)
        self.hooks = HeadGates(self.model, strategy.test_gates(self.parameter))
        self.total = planned_gate_steps(len(context.dataset.train.texts), config)
        self.autocast = device.type == "cuda"
        self.reopenings = _Reopenings()
        self.losses: list[float] = []
        self.since_snapshot: list[float] = []
        self.last_gates: torch.Tensor | None = None

    def accuracy(self, gates: torch.Tensor) -> float:
        """Accuracy on the score batches with ``gates`` ``(n_layers, n_heads)`` in the hooks."""
        self.hooks.gates = gates.detach()
        with torch.no_grad():
            metrics = evaluate_model(self.model, self.context.batches, autocast=self.autocast)
        return metrics.accuracy

    def snapshot(self, step: int) -> None:
        """Emit a ``"gates"`` event for the state after ``step`` training steps."""
        strategy, parameter = self.strategy, self.parameter
        with torch.no_grad():
            penalty = self.config.mu * float(strategy.penalty(parameter))
            open_mask = strategy.open_mask(parameter).cpu()
        self.reopenings.update(open_mask, step)
        accuracy = self.accuracy(strategy.test_gates(parameter))
        losses = self.since_snapshot
        task_loss = sum(losses) / len(losses) if losses else None
        losses.clear()
        n_open = int(open_mask.sum())
        self.context.emit(
            "gates",
            _TRAIN_SHARE * step / max(self.total, 1),
            f"step {step}/{self.total}: {n_open}/{open_mask.numel()} gates open, "
            f"validation accuracy {accuracy:.3f}",
            train_step=step,
            total_steps=self.total,
            w=_nested(parameter),
            open=_nested(open_mask.int()),
            task_loss=task_loss,
            penalty=penalty,
            open_gates=n_open,
            val_metric=accuracy,
            val_metric_name="accuracy",
            gate_kind=strategy.kind,
            **strategy.snapshot_data(parameter, self.last_gates),
        )

    def train(self) -> None:
        """Run every training step with a snapshot every ``snapshot_every`` steps."""
        config, model, parameter = self.config, self.model, self.parameter
        gate_optimizer = make_gate_optimizer(parameter, config.gate_optimizer, config.gate_lr)
        weight_optimizer, scheduler = self._weight_optimizer()
        batches = _training_batches(self.context, config.batch_size)
        self.snapshot(0)
        model.train()
        for step in range(1, self.total + 1):
            self.context.check()
            batch = next(batches).to(self.context.device)
            gates = self.strategy.training_gates(parameter, self.generator)
            self.hooks.gates = gates
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                logits = model(**batch.model_inputs()).logits
            # make_batches was given the labels, so every training batch carries them.
            task = F.cross_entropy(logits.float(), cast(torch.Tensor, batch.labels))
            loss = task + config.mu * self.strategy.penalty(parameter)
            value = float(task.detach())
            if not math.isfinite(value) or not math.isfinite(float(loss.detach())):
                raise ValueError(
                    f"The training loss became {value} at step {step}; lower the learning "
                    f"rates (lr={config.lr}, gate_lr={config.gate_lr})."
                )
            gate_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if weight_optimizer is not None and scheduler is not None:
                weights = [p for g in weight_optimizer.param_groups for p in g["params"]]
                nn.utils.clip_grad_norm_(weights, GRAD_CLIP)
                weight_optimizer.step()
                scheduler.step()
                weight_optimizer.zero_grad(set_to_none=True)
            gate_optimizer.step()
            self.losses.append(value)
            self.since_snapshot.append(value)
            self.last_gates = gates.detach()
            if step % config.snapshot_every == 0 or step == self.total:
                self.snapshot(step)
        model.eval()

    def _weight_optimizer(
        self,
    ) -> tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LRScheduler | None]:
        """AdamW with warm-up and linear decay on the weights (as fine-tuning), or none."""
        if not self.config.train_weights:
            return None, None
        groups, _ = _parameter_groups(self.model, None, WEIGHT_DECAY)
        fused = self.context.device.type == "cuda" or None
        optimizer = torch.optim.AdamW(groups, lr=self.config.lr, fused=fused)
        schedule = _linear_schedule(self.total, WARMUP_RATIO)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def finish(self, n_remove: int | None, seconds: float) -> PruneResult:
        """Select the heads, measure the final mask, emit ``"final"`` and build the result."""
        config, strategy, context = self.config, self.strategy, self.context
        scores = self.parameter.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(scores).all()):
            raise ValueError(
                f"Some gate parameters became NaN or infinite; {strategy.divergence_fix()}."
            )
        open_mask = strategy.open_mask(scores)
        mask = final_mask(scores, open_mask, n_remove, config.min_heads_per_layer)
        with self.hooks:
            gates_metric = self.accuracy(strategy.test_gates(self.parameter))
            mask_metric = self.accuracy(mask.to(context.device, torch.float32))
        removed = int((~mask).sum())
        context.emit(
            "final",
            1.0,
            f"removed {removed} of {mask.numel()} heads",
            mask=mask.tolist(),
            w=_nested(scores),
            open=_nested(open_mask.int()),
            fixed_sparsity=config.fixed_sparsity,
            reopened=list(self.reopenings.events),
        )
        tail = self.losses[-20:]
        per_epoch = math.ceil(len(context.dataset.train.texts) / config.batch_size)
        info = {
            "steps": len(self.losses),
            "epochs": len(self.losses) / per_epoch,
            "batch_size": config.batch_size,
            "train_texts": len(self.losses) * config.batch_size,
            "lr": config.lr,
            "seconds": seconds,
            "open_gates": int(open_mask.sum()),
            "removed": removed,
            "reopened_count": len(self.reopenings.events),
            "gate_kind": strategy.kind,
            "gate_lr": config.gate_lr,
            "gate_optimizer": config.gate_optimizer,
            "mu": config.mu,
            "train_weights": config.train_weights,
            "final_task_loss": sum(tail) / len(tail) if tail else None,
            "val_metric_name": "accuracy",
            "val_metric_gates": gates_metric,
            "val_metric_mask": mask_metric,
            **strategy.info(),
        }
        model = self.model if config.train_weights else None
        return PruneResult(mask, scores, tuple(context.trace), info, model=model)


def train_head_gates(
    context: PruningContext, config: GateTrainingConfig, strategy: GateStrategy, *, title: str
) -> PruneResult:
    """Train gates (and weights) on ``context.dataset.train`` and select heads; see the module doc.

    Returns:
        mask bool ``(n_layers, n_heads)`` (True = keep), scores = the final gate parameter, the
        trace, ``info`` (the training budget: ``steps``, ``epochs``, ``batch_size``,
        ``train_texts`` = steps x batch size and the weight rate ``lr``, which a baseline needs
        to get the same fine-tuning; seconds, open gates, removed, reopenings, validation
        accuracy with the test-time gates and with the mask, plus the strategy's own facts) and
        the trained copy (None when ``train_weights`` is off), every head present and no hook
        attached.

    Raises:
        ValueError: on a model with heads already removed, an impossible fixed sparsity, an empty
            training split, score batches without labels, or a loss that is no longer finite.
        JobCancelled: when the run is asked to stop (checked every step).
    """
    n_layers, n_heads = dense_grid(context.model, title)
    n_remove = config.heads_to_remove(n_layers, n_heads)
    if not context.batches or any(batch.labels is None for batch in context.batches):
        raise ValueError(
            f"{title} reports validation accuracy on the score texts; build their batches with "
            "labels."
        )
    if len(context.dataset.train.texts) == 0:
        raise ValueError(
            f"{title} trains on the training split, which is empty; load a dataset "
            "with labelled training rows."
        )
    trainer = _GateTrainer(context, config, strategy)
    flags = [(p, p.requires_grad) for p in trainer.model.parameters()]
    started = time.perf_counter()
    device = context.device
    try:
        trainer.hooks.attach()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(context.seed)  # dropout
            if not config.train_weights:
                for p, _ in flags:
                    p.requires_grad_(False)
            trainer.train()
    finally:
        trainer.hooks.remove()
        trainer.model.eval()
        for p, flag in flags:
            p.requires_grad_(flag)
            p.grad = None
    return trainer.finish(n_remove, time.perf_counter() - started)
