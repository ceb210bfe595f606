"""Fine-tuning: preparing the default encoder for a dataset, and recovery after pruning.

* :class:`TrainConfig` holds the hyper-parameters (frozen, validated, UI bounds in field metadata).
* :func:`fine_tune` trains any sequence classifier in place (a dense model or one with heads
  removed): AdamW, a linear schedule with warm-up, length-bucketed shuffled batches.

Turning an encoder and a dataset into a stored, evaluated classifier is
:func:`pruning.prepare.prepare_model`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from pruning.adapters import model_config

if TYPE_CHECKING:
    from pruning.data import TextSplit

__all__ = [
    "TrainConfig",
    "TrainEvent",
    "TrainReport",
    "fine_tune",
]

log = logging.getLogger(__name__)

# Steps averaged into TrainReport.final_loss: one step's loss is too noisy to report.
_FINAL_LOSS_WINDOW = 20


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning hyper-parameters. The defaults reproduce the measured default preparation.

    Attributes:
        epochs: passes over the training split.
        lr: peak learning rate of AdamW (reached after warm-up, then decays linearly to 0).
        batch_size: texts per optimiser step.
        warmup_ratio: share of the planned steps spent warming the rate up from 0.
        weight_decay: AdamW decoupled weight decay (not applied to biases and LayerNorm weights).
        max_length: tokens per text after truncation.
        seed: seeds the batch order (``seed + epoch``), dropout and any fresh classifier head.
        max_steps: optional cap on optimiser steps (training stops after
            ``min(max_steps, epochs * steps_per_epoch)``); the schedule spans the capped length.
        grad_clip: maximum global gradient norm; 0 disables clipping.
    """

    epochs: int = field(
        default=1, metadata={"min": 1, "max": 50, "help": "Passes over the training split."}
    )
    lr: float = field(
        default=1e-4,
        metadata={
            "min": 1e-7,
            "max": 1e-2,
            "help": "Peak learning rate (AdamW). 1e-4 suits small encoders, 2e-5..5e-5 larger.",
        },
    )
    batch_size: int = field(
        default=32, metadata={"min": 1, "max": 1024, "help": "Texts per optimiser step."}
    )
    warmup_ratio: float = field(
        default=0.06,
        metadata={"min": 0.0, "max": 0.5, "help": "Share of steps with a rising learning rate."},
    )
    weight_decay: float = field(
        default=0.01,
        metadata={"min": 0.0, "max": 1.0, "help": "AdamW weight decay (not on biases/norms)."},
    )
    max_length: int = field(
        default=128,
        metadata={"min": 8, "max": 512, "help": "Tokens per text; longer texts are truncated."},
    )
    seed: int = field(
        default=0,
        metadata={"min": 0, "max": 2**31 - 1, "help": "Seed of batch order, dropout and head."},
    )
    max_steps: int | None = field(
        default=None,
        metadata={"min": 1, "max": 1_000_000, "help": "Optional cap on optimiser steps."},
    )
    grad_clip: float = field(
        default=1.0,
        metadata={"min": 0.0, "max": 100.0, "help": "Max gradient norm; 0 turns clipping off."},
    )

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is None and spec.name == "max_steps":
                continue
            low, high = spec.metadata["min"], spec.metadata["max"]
            integer = spec.name in ("epochs", "batch_size", "max_length", "seed", "max_steps")
            kind = (int,) if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind):
                wanted = "an integer" if integer else "a number"
                raise ValueError(
                    f"TrainConfig.{spec.name} must be {wanted} between {low} and {high}, "
                    f"got {value!r}."
                )
            if not math.isfinite(value) or not low <= value <= high:
                raise ValueError(
                    f"TrainConfig.{spec.name} must be between {low} and {high}, got {value!r}."
                )
            if not integer:
                # 1 and 1.0 are the same setting and must give the same store key.
                object.__setattr__(self, spec.name, float(value))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (all fields)."""
        return asdict(self)

    @classmethod
    def for_steps(
        cls, steps: int, n_examples: int, *, lr: float, seed: int, batch_size: int = 32
    ) -> TrainConfig:
        """A config that trains ``steps`` optimiser steps on ``n_examples`` texts: enough passes
        over them (at most 50), capped at ``steps``; the other settings keep their defaults."""
        per_epoch = math.ceil(n_examples / batch_size)
        return cls(
            epochs=min(50, math.ceil(steps / max(1, per_epoch))),
            max_steps=steps,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {spec.name for spec in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Unknown TrainConfig fields {unknown}; valid fields are {sorted(known)}."
            )
        return cls(**data)


@dataclass(frozen=True)
class TrainEvent:
    """Progress after one optimiser step.

    Attributes:
        step: steps done so far (1-based).
        total_steps: planned steps.
        epoch: 0-based epoch of this step.
        loss: training loss of this step's batch.
        lr: learning rate used for this step.
        elapsed_s: seconds since training started (tokenisation included).
        eta_s: estimated seconds left at the average pace so far.
    """

    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    elapsed_s: float
    eta_s: float

    @property
    def fraction(self) -> float:
        """Share of the planned steps done, in [0, 1]."""
        return self.step / self.total_steps if self.total_steps else 1.0


@dataclass(frozen=True)
class TrainReport:
    """What a :func:`fine_tune` call did.

    Attributes:
        steps: optimiser steps taken.
        epochs: passes over the training split, fractional when stopped early or capped.
        final_loss: mean training loss of the last (up to) 20 steps; None when no step ran.
        seconds: wall-clock seconds, tokenisation included.
        losses: the training loss of every step, in order.
        stopped: True when ``should_stop`` ended training before the planned steps.
        total_steps: steps that were planned.
    """

    steps: int
    epochs: float
    final_loss: float | None
    seconds: float
    losses: list[float]
    stopped: bool = False
    total_steps: int = 0

    def to_dict(self, *, with_losses: bool = False) -> dict[str, Any]:
        """JSON-ready dict; the per-step losses only when asked (they can be long)."""
        data = asdict(self)
        if not with_losses:
            data.pop("losses")
        return data


def planned_steps(n_examples: int, config: TrainConfig) -> tuple[int, int]:
    """``(steps_per_epoch, total_steps)`` for ``n_examples`` training texts under ``config``."""
    per_epoch = math.ceil(n_examples / config.batch_size)
    total = per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    return per_epoch, total


def _linear_schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """Learning-rate multiplier: linear warm-up from 0 to 1, then linear decay to 0 at the end."""
    warmup = math.ceil(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _parameter_groups(
    model: nn.Module, trainable: Iterable[nn.Parameter] | None, weight_decay: float
) -> tuple[list[dict[str, Any]], list[nn.Parameter]]:
    """AdamW groups (decay on matrices only) and the parameters to train."""
    if trainable is None:
        chosen = [p for p in model.parameters() if p.requires_grad]
    else:
        owned = {id(p) for p in model.parameters()}
        chosen = list({id(p): p for p in trainable}.values())
        if any(id(p) not in owned for p in chosen):
            raise ValueError(
                "trainable contains parameters that do not belong to the model; pass "
                "parameters of the model being trained (e.g. model.classifier.parameters())."
            )
    if not chosen:
        raise ValueError(
            "There is nothing to train: no parameter requires a gradient. Pass trainable= or "
            "unfreeze some parameters."
        )
    decay = [p for p in chosen if p.ndim >= 2]
    no_decay = [p for p in chosen if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]], chosen


def _check_split(model: nn.Module, split: TextSplit) -> None:
    if len(split.texts) == 0:
        raise ValueError("The training split is empty; load a dataset with some labelled rows.")
    num_labels = int(model_config(model).num_labels or 0)
    highest = max(split.labels)
    if highest >= num_labels:
        raise ValueError(
            f"The training split has class id {highest} but the model has only {num_labels} "
            "outputs; load the model with the dataset's label names "
            "(load_classifier(spec, label_names=dataset.label_names))."
        )


def fine_tune(
    model: nn.Module,
    tokenizer: Any,
    split: TextSplit,
    config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    on_event: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    trainable: Iterable[nn.Parameter] | None = None,
    weight_masks: Mapping[str, torch.Tensor] | None = None,
) -> TrainReport:
    """Fine-tune a sequence classifier on a labelled split, IN PLACE.

    The model's weights change: pass a copy (``copy.deepcopy(model)``) when the original must
    survive, e.g. for recovery fine-tuning of a pruned candidate. Works for dense models and for
    models with removed heads alike. AdamW with a linear schedule and warm-up; batches come from
    :func:`pruning.data.make_batches` with ``shuffle=True, bucket=True``, reshuffled every epoch
    with ``seed + epoch``; dropout is seeded with ``config.seed`` (the global RNG state is restored
    afterwards). bf16 autocast is used on CUDA only. The model is left in eval mode.

    Args:
        model: a Hugging Face sequence classifier whose ``num_labels`` covers the split's labels.
        tokenizer: the model's (fast) tokenizer.
        split: training texts and class ids.
        config: hyper-parameters.
        device: where to train; ``None`` keeps the model where it is, otherwise it is moved.
        on_event: called after every step with a :class:`TrainEvent` (keep it cheap).
        should_stop: polled before every step; returning True ends training early
            (``TrainReport.stopped``).
        trainable: train only these parameters (even frozen ones); the others are frozen for the
            call. Every ``requires_grad`` flag is restored afterwards. Default: all parameters
            that require gradients.
        weight_masks: bool masks by parameter name (``model.named_parameters()``), True = keep:
            masked-out entries are zeroed before training and again after every optimiser step,
            so an unstructured pruning mask stays exact while the rest re-trains.

    Raises:
        ValueError: on an empty split, labels beyond the model's outputs, nothing to train, or a
            loss that is no longer finite (lower ``lr``).
    """
    from pruning.data import make_batches

    _check_split(model, split)
    if device is not None:
        model.to(torch.device(device))
    parameter = next(model.parameters(), None)
    if parameter is None:
        raise ValueError("The model has no parameters to train; pass a sequence classifier.")
    target = parameter.device
    masked = _resolve_weight_masks(model, weight_masks or {}, target)
    _apply_weight_masks(masked)
    groups, chosen = _parameter_groups(model, trainable, config.weight_decay)
    chosen_ids = {id(p) for p in chosen}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    per_epoch, total = planned_steps(len(split.texts), config)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, fused=target.type == "cuda" or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _linear_schedule(total, config.warmup_ratio)
    )
    autocast = target.type == "cuda"
    log.info(
        "fine-tuning on %d texts: %d steps (%d per epoch) on %s",
        len(split.texts),
        total,
        per_epoch,
        target,
    )
    losses: list[float] = []
    stopped = False
    start = time.perf_counter()
    rng_devices = [target] if target.type == "cuda" else []
    for p, _ in flags:
        p.requires_grad_(id(p) in chosen_ids)
    try:
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(config.seed)
            model.train()
            for epoch in range(config.epochs):
                if len(losses) >= total or stopped:
                    break
                batches = make_batches(
                    tokenizer,
                    split.texts,
                    split.labels,
                    batch_size=config.batch_size,
                    max_length=config.max_length,
                    shuffle=True,
                    seed=config.seed + epoch,
                    bucket=True,
                    text_pairs=split.text_pairs,
                )
                for batch in batches:
                    if len(losses) >= total:
                        break
                    if should_stop is not None and should_stop():
                        stopped = True
                        log.info("training stopped after %d of %d steps", len(losses), total)
                        break
                    lr = float(optimizer.param_groups[0]["lr"])
                    loss = _train_step(model, batch.to(target), optimizer, config, autocast)
                    scheduler.step()
                    _apply_weight_masks(masked)
                    losses.append(loss)
                    if on_event is not None:
                        elapsed = time.perf_counter() - start
                        step = len(losses)
                        on_event(
                            TrainEvent(
                                step=step,
                                total_steps=total,
                                epoch=epoch,
                                loss=loss,
                                lr=lr,
                                elapsed_s=elapsed,
                                eta_s=elapsed / step * (total - step),
                            )
                        )
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        optimizer.zero_grad(set_to_none=True)
        model.eval()
    seconds = time.perf_counter() - start
    tail = losses[-_FINAL_LOSS_WINDOW:]
    return TrainReport(
        steps=len(losses),
        epochs=len(losses) / per_epoch,
        final_loss=sum(tail) / len(tail) if tail else None,
        seconds=seconds,
        losses=losses,
        stopped=stopped,
        total_steps=total,
    )


def _resolve_weight_masks(
    model: nn.Module, weight_masks: Mapping[str, torch.Tensor], device: torch.device
) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Pair each masked parameter with its mask on ``device``, checking names and shapes."""
    parameters = dict(model.named_parameters())
    pairs = []
    for name, mask in weight_masks.items():
        if name not in parameters:
            raise ValueError(
                f"weight_masks names {name!r}, which is not a parameter of the model; use names "
                "from model.named_parameters()."
            )
        parameter = parameters[name]
        if tuple(mask.shape) != tuple(parameter.shape):
            raise ValueError(
                f"The mask of {name} has shape {tuple(mask.shape)} but the parameter has "
                f"{tuple(parameter.shape)}."
            )
        pairs.append((parameter, mask.to(device=device, dtype=torch.bool)))
    return pairs


@torch.no_grad()
def _apply_weight_masks(pairs: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    for parameter, mask in pairs:
        parameter.mul_(mask)


def _train_step(
    model: nn.Module,
    batch: Any,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    autocast: bool,
) -> float:
    """One forward/backward/update on a labelled batch; returns the batch loss."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = model(**batch.model_inputs()).logits
    loss = F.cross_entropy(logits.float(), batch.labels)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise ValueError(
            f"The training loss became {value}; lower the learning rate (lr={config.lr}) or "
            "keep gradient clipping on (grad_clip=1.0)."
        )
    loss.backward()
    if config.grad_clip > 0:
        nn.utils.clip_grad_norm_(
            [p for g in optimizer.param_groups for p in g["params"]], config.grad_clip
        )
    optimizer.step()
    return value
