"""Head importance by gate gradients (Michel, Levy and Neubig, 2019)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pruning.adapters import encoder_layers, get_adapter, get_submodule
from pruning.batching import Batch
from pruning.evaluate import eval_mode
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
class HeadImportanceConfig(HeadTargetConfig):
    """Settings of gradient head importance (HISP)."""

    per_example: bool = field(
        default=True,
        metadata=ui(
            "Per-example gradients",
            "On: average |dL(x)/dgate| over examples, the paper's formula. Off: |gradient of "
            "each batch's loss|, as the authors' code does; same cost, depends on batching.",
        ),
    )
    normalize_layers: bool = field(
        default=True,
        metadata=ui(
            "Normalise per layer",
            "Divide each layer's importances by their L2 norm, as the paper recommends.",
        ),
    )
    iterative: bool = field(
        default=False,
        metadata=ui(
            "Iterative",
            "Remove heads in several steps, re-scoring the rest with the removed heads off.",
        ),
    )
    steps: int = field(
        default=5,
        metadata=ui(
            "Steps", "Number of prune-and-rescore steps in iterative mode.", min=1, max=100
        ),
    )
    max_examples: int = field(
        default=1024,
        metadata=ui(
            "Examples",
            "Score on at most this many of the score texts (the first ones of the score split).",
            min=1,
            max=100_000,
        ),
    )


@contextmanager
def per_example_gates(model: nn.Module, holder: dict[str, torch.Tensor]) -> Iterator[None]:
    """Give every example in a batch its own copy of the head gates.

    Installs forward pre-hooks on each layer's attention output projection that scale head
    ``h`` of example ``b`` by ``holder["gates"][b, layer, h]``; the tensor ``(B, n_layers,
    n_heads)`` is read at each forward. Examples do not interact in an eval-mode forward, so the
    gradient of the *summed* per-example losses with respect to row ``b`` is exactly
    ``dL(x_b)/dgate``: per-example gradients from one backward pass. The hooks are removed on
    exit. Dense models only (see :func:`pruning.methods.scoring.dense_grid`).
    """
    adapter = get_adapter(model)
    size = head_dim(model)

    def make_hook(index: int) -> Callable[..., tuple[object, ...]]:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[object, ...]:
            hidden = args[0]
            scale = holder["gates"][:, index].to(hidden.dtype).repeat_interleave(size, dim=-1)
            return (hidden * scale.unsqueeze(1), *args[1:])

        return hook

    handles = [
        get_submodule(layer, adapter.output).register_forward_pre_hook(make_hook(index))
        for index, layer in enumerate(encoder_layers(model))
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _rows_within(batch: Batch, max_examples: int) -> Batch | None:
    """The rows of ``batch`` whose position in the score split is below ``max_examples``."""
    keep = batch.indices < max_examples
    if bool(keep.all()):
        return batch
    if not bool(keep.any()):
        return None
    types = batch.token_type_ids
    return Batch(
        input_ids=batch.input_ids[keep],
        attention_mask=batch.attention_mask[keep],
        token_type_ids=None if types is None else types[keep],
        labels=None if batch.labels is None else batch.labels[keep],
        indices=batch.indices[keep],
    )


def head_importance(
    model: nn.Module,
    batches: Sequence[Batch],
    gates: torch.Tensor,
    *,
    per_example: bool = True,
    max_examples: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """Raw head importance ``I_h`` (not layer-normalised) on labelled batches.

    With ``per_example`` (the paper's formula): ``I_h = 1/N sum_x |dL(x)/dxi_h|``. Without:
    ``I_h = 1/N sum_batches |sum_{x in batch} dL(x)/dxi_h|``, the absolute gradient of each
    batch's loss (the authors' code; equal to the former for batches of one). ``L`` is the
    cross-entropy, ``xi`` the head gates, evaluated at ``gates``. Gradients are taken with
    respect to the gates only: no parameter gets a ``.grad`` and the model is not modified.

    Args:
        model: a dense supported classifier; run in eval mode, its training flag restored.
        batches: labelled batches on the model's device.
        gates: float ``(n_layers, n_heads)``: 1.0 for present heads, 0.0 for heads switched off.
        max_examples: use only rows whose ``Batch.indices`` is below this (None = all).
        on_batch: called after each batch with ``(examples done, examples in all)``.

    Returns:
        float32 ``(n_layers, n_heads)`` on the CPU, and the number of examples ``N``.

    Raises:
        ValueError: when a batch has no labels or no example is left.
    """
    limit = max_examples if max_examples is not None else torch.iinfo(torch.int64).max
    total = sum(int((batch.indices < limit).sum()) for batch in batches)
    if total == 0:
        raise ValueError("HISP needs at least one labelled score text; give some texts.")
    base = gates.detach().to(batches[0].input_ids.device, torch.float32)
    importance = torch.zeros_like(base)
    holder: dict[str, torch.Tensor] = {}
    done = 0
    with eval_mode(model), per_example_gates(model, holder), torch.enable_grad():
        for batch in batches:
            rows = _rows_within(batch, limit)
            if rows is None:
                continue
            if rows.labels is None:
                raise ValueError(
                    "HISP needs labelled score texts (the loss uses the labels); build the "
                    "batches with labels."
                )
            holder["gates"] = base.expand(len(rows), *base.shape).clone().requires_grad_(True)
            logits = model(**rows.model_inputs()).logits
            losses = F.cross_entropy(logits.float(), rows.labels, reduction="none")
            (grads,) = torch.autograd.grad(losses.sum(), holder["gates"])
            importance += grads.abs().sum(dim=0) if per_example else grads.sum(dim=0).abs()
            done += len(rows)
            if on_batch is not None:
                on_batch(done, total)
    holder.clear()
    return (importance / done).cpu(), done


@register("hisp")
class HeadImportance(PruningMethod):
    """Remove the heads with the smallest gradient importance (HISP).

    Reading (Michel et al., Section 4.1): every head's output is multiplied by a gate
    ``xi_h = 1``; the importance is ``I_h = E_x |dL(x)/dxi_h|`` with ``L`` the cross-entropy of
    the fine-tuned classifier on the labelled score texts. The expectation is taken over
    examples of the absolute *per-example* gradient (``per_example=True``, computed exactly by
    giving each example its own gate copy, one backward pass per batch); ``per_example=False``
    takes the absolute gradient of each batch's summed loss instead, as the authors' code and
    HF's run_bertology.py do. Scores are then divided by their per-layer L2 norm
    (``normalize_layers``; the paper finds this important). Only the first ``max_examples`` rows of
    the score split (by position, ``Batch.indices``) are used, whatever the batch order.

    Iterative mode (as run_bertology.py's ``mask_heads``): ``steps`` rounds; round ``k`` removes
    heads up to ``floor(n * k / steps)`` in all, re-scoring with the already removed heads gated
    to 0 (their own importance is then the gradient at gate 0; the layer norm covers all heads,
    as there). The returned scores are those of the last round.

    Reference: Michel, Levy and Neubig, "Are Sixteen Heads Really Better than One?",
    NeurIPS 2019, https://arxiv.org/abs/1905.10650.

    Trace kinds: ``"progress"`` (per batch; ``fraction`` of the scoring work), ``"iteration"``
    (iterative mode, one per step: mask so far, scores, heads removed), ``"scores"``, ``"mask"``.
    """

    title = "Head importance (HISP)"
    paper = (
        "Michel, Levy & Neubig, Are Sixteen Heads Really Better than One?, NeurIPS 2019, "
        "https://arxiv.org/abs/1905.10650"
    )
    config_class = HeadImportanceConfig
    config: HeadImportanceConfig

    def run(self, context: PruningContext) -> PruneResult:
        config = self.config
        n_layers, n_heads = dense_grid(context.model, self.title)
        count = config.heads_to_prune(n_layers, n_heads)
        rounds = config.steps if config.iterative else 1
        removed = torch.zeros(n_layers, n_heads, dtype=torch.bool)
        scores = torch.zeros(n_layers, n_heads)
        n_examples = 0
        context.check()
        for round_index in range(rounds):

            def on_batch(done: int, total: int, start: int = round_index) -> None:
                share = 0.95 * (start + done / total) / rounds
                context.emit("progress", share, f"scored {done}/{total} examples")

            gates = (~removed).to(context.device, torch.float32)
            raw, n_examples = head_importance(
                context.model,
                context.batches,
                gates,
                per_example=config.per_example,
                max_examples=config.max_examples,
                on_batch=on_batch,
            )
            scores = layer_normalize(raw) if config.normalize_layers else raw
            target = count * (round_index + 1) // rounds
            mask = select_lowest(
                scores,
                target,
                min_heads_per_layer=config.min_heads_per_layer,
                already_removed=removed,
            )
            removed = ~mask
            if config.iterative:
                context.emit(
                    "iteration",
                    0.95 * (round_index + 1) / rounds,
                    f"step {round_index + 1}/{rounds}: {target} heads removed",
                    iteration=round_index + 1,
                    n_removed=target,
                    scores=scores.tolist(),
                    mask=mask.tolist(),
                )
        info = {
            "n_examples": n_examples,
            "per_example": config.per_example,
            "normalize_layers": config.normalize_layers,
            "iterations": rounds,
        }
        return finish_with_mask(context, scores, ~removed, info=info)
