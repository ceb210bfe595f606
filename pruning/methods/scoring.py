"""Shared steps of the methods: score-then-select for head methods (random, HISP, entropy, SEP,
magnitude), and fine-tuning inside a run with trace events (DeepCuts, unstructured baselines).

Each of those methods computes one float score per head (higher = more important, kept first),
removes the lowest-scoring heads with :func:`pruning.methods.base.select_lowest`, and ends its
trace with a ``"scores"`` event (the full grid) and a ``"mask"`` event (True = keep).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from pruning.heads import head_grid, heads_per_layer
from pruning.methods.base import PruneResult, PruningContext
from pruning.train import TrainConfig, TrainEvent, TrainReport, fine_tune


def dense_grid(model: nn.Module, title: str) -> tuple[int, int]:
    """``(n_layers, n_heads)`` of a model that still has every head.

    Raises:
        ValueError: when heads were already removed; scoring methods rank the heads of the
            dense fine-tuned model, so the mask they return is relative to all of them.
    """
    n_layers, n_heads = head_grid(model)
    present = heads_per_layer(model)
    if any(count != n_heads for count in present):
        raise ValueError(
            f"{title} scores the heads of a dense model, but this one already has "
            f"{n_layers * n_heads - sum(present)} of {n_layers * n_heads} heads removed. "
            "Run it on the fine-tuned model before removing heads."
        )
    return n_layers, n_heads


def layer_normalize(scores: torch.Tensor) -> torch.Tensor:
    """Divide each layer's scores by their L2 norm (a layer of zeros stays zero).

    Shapes: ``scores`` ``(n_layers, n_heads)`` -> same.
    """
    norms = scores.norm(p=2, dim=-1, keepdim=True)
    return scores / torch.where(norms > 0, norms, torch.ones_like(norms))


def finish_with_mask(
    context: PruningContext,
    scores: torch.Tensor,
    mask: torch.Tensor,
    *,
    info: dict[str, Any],
) -> PruneResult:
    """Emit the ``"scores"`` and final ``"mask"`` events and build the result.

    Args:
        scores: float ``(n_layers, n_heads)``, higher = more important.
        mask: bool ``(n_layers, n_heads)``, True = keep.
        info: JSON-ready facts about the run.

    Raises:
        ValueError: when a score is NaN or infinite (for example a diverged loss).
    """
    scores = scores.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(
            "Some head scores are NaN or infinite, so the heads cannot be ranked; check that "
            "the model gives finite logits on the score texts."
        )
    removed = int((~mask).sum())
    context.emit("scores", 0.99, "head scores", scores=scores.tolist())
    context.emit(
        "mask",
        1.0,
        f"removed {removed} of {mask.numel()} heads",
        mask=mask.tolist(),
        n_removed=removed,
    )
    return PruneResult(mask=mask, scores=scores, trace=tuple(context.trace), info=info)


def fine_tune_in_context(
    context: PruningContext,
    model: nn.Module,
    config: TrainConfig,
    *,
    kind: str,
    fraction: Callable[[TrainEvent], float],
    label: str = "",
    weight_masks: Mapping[str, torch.Tensor] | None = None,
    **data: Any,
) -> TrainReport:
    """Fine-tune ``model`` IN PLACE on the context's training split, one trace event per step.

    Every step emits a ``kind`` event at ``fraction(event)`` with ``step``, ``total_steps``,
    ``loss`` and ``data``; ``weight_masks`` stay applied (pruned weights stay zero); the run's
    cancellation reaches the training loop.

    Raises:
        pruning.jobs.JobCancelled: when the run was asked to stop.
    """

    def on_event(event: TrainEvent) -> None:
        context.emit(
            kind,
            fraction(event),
            f"{label}step {event.step}/{event.total_steps} · loss {event.loss:.3f}",
            **data,
            step=event.step,
            total_steps=event.total_steps,
            loss=event.loss,
        )

    report = fine_tune(
        model,
        context.tokenizer,
        context.dataset.train,
        config,
        device=context.device,
        on_event=on_event,
        should_stop=context.should_stop,
        weight_masks=weight_masks,
    )
    context.check()
    return report
