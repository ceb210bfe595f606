"""Evaluation: classification metrics, batched prediction and many-mask evaluation.

* :func:`compute_metrics` turns logits and labels into :class:`Metrics` (accuracy, MCC, macro-F1,
  cross-entropy loss).
* :func:`predict_logits` / :func:`evaluate_model` / :func:`evaluate_split` run a classifier over
  pre-tokenised, length-sorted batches (:func:`pruning.data.make_batches`) and put the rows back in
  their original order.
* :func:`evaluate_masks` is the one call that evaluates many candidate head masks (bool
  ``(n_layers, n_heads)``, True = keep) over the same batches. It gates heads with hooks on the
  attention output projection (the mechanism of :func:`pruning.heads.apply_mask`) and, on a GPU,
  stacks several masks into one forward, each copy of the batch gated by its own mask (the engine
  is in :mod:`pruning.mask_eval`).

What pruning bought in parameters, FLOPs and latency is measured by :mod:`pruning.cost`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pruning.data import Batch, TextSplit, make_batches
from pruning.mask_eval import StackedGates, auto_masks_per_forward, repeat_rows, stack_masks
from pruning.oom import OomHalving

log = logging.getLogger(__name__)

METRIC_NAMES = ("accuracy", "mcc", "macro_f1", "loss")
_METRIC_ALIASES = {"f1": "macro_f1"}


@dataclass(frozen=True)
class Metrics:
    """Classification quality on one evaluation set.

    Attributes:
        accuracy: share of rows whose arg-max class is the label, in [0, 1].
        mcc: Matthews correlation coefficient (multi-class form), in [-1, 1]; 0 when undefined.
        macro_f1: unweighted mean F1 over the classes that occur in the labels or predictions.
        loss: mean cross-entropy of the logits.
        n_examples: number of rows evaluated.
    """

    accuracy: float
    mcc: float
    macro_f1: float
    loss: float
    n_examples: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        """Inverse of :meth:`to_dict`."""
        return cls(
            accuracy=float(data["accuracy"]),
            mcc=float(data["mcc"]),
            macro_f1=float(data["macro_f1"]),
            loss=float(data["loss"]),
            n_examples=int(data["n_examples"]),
        )

    def get(self, name: str) -> float:
        """One metric by name: ``"accuracy"``, ``"mcc"``, ``"f1"`` / ``"macro_f1"`` or ``"loss"``.

        Raises:
            ValueError: for any other name.
        """
        key = _METRIC_ALIASES.get(name, name)
        if key not in METRIC_NAMES:
            raise ValueError(
                f"Unknown metric {name!r}; use one of {', '.join(METRIC_NAMES)} (or 'f1')."
            )
        return float(getattr(self, key))


def compute_metrics(logits: torch.Tensor, labels: torch.Tensor) -> Metrics:
    """Accuracy, MCC, macro-F1 and mean cross-entropy of ``logits`` against ``labels``.

    Shapes: ``logits`` ``(N, k)`` (any float dtype, any device), ``labels`` ``(N,)`` class ids in
    ``0..k-1``.

    MCC is the multi-class generalisation (Gorodkin's R_K, as in scikit-learn) and is defined as 0
    when a prediction or label column is constant. Macro-F1 averages per-class F1 over the classes
    present in ``labels`` or in the predictions (scikit-learn's ``average="macro"``).

    Raises:
        ValueError: on empty input, mismatched shapes or labels outside ``0..k-1``.
    """
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"logits must be (N, k) and labels (N,); got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}. Pass one row of logits per label."
        )
    n, k = logits.shape
    if n == 0:
        raise ValueError("Cannot compute metrics on zero examples; pass a non-empty split.")
    logits = logits.detach().to("cpu", torch.float32)
    labels = labels.detach().to("cpu", torch.long)
    if int(labels.min()) < 0 or int(labels.max()) >= k:
        raise ValueError(
            f"labels must be class ids in 0..{k - 1} for {k} logits per row; found "
            f"{int(labels.min())}..{int(labels.max())}. Check that the model's num_labels "
            "matches the dataset."
        )
    preds = logits.argmax(dim=1)
    loss = float(F.cross_entropy(logits, labels))
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (labels.numpy(), preds.numpy()), 1.0)
    correct = float(np.trace(confusion))
    true_counts = confusion.sum(axis=1)
    pred_counts = confusion.sum(axis=0)
    numerator = correct * n - float(true_counts @ pred_counts)
    denominator = math.sqrt(
        (n * n - float(pred_counts @ pred_counts)) * (n * n - float(true_counts @ true_counts))
    )
    mcc = numerator / denominator if denominator > 0 else 0.0
    true_pos = np.diag(confusion)
    f1_denominator = true_counts + pred_counts  # 2TP + FP + FN
    present = f1_denominator > 0
    macro_f1 = float(np.mean(2.0 * true_pos[present] / f1_denominator[present]))
    return Metrics(accuracy=correct / n, mcc=mcc, macro_f1=macro_f1, loss=loss, n_examples=n)


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's parameters (CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The model's own device; a requested ``device`` must agree with it (models are not moved).

    Raises:
        ValueError: when ``device`` names another device type or index than the model's.
    """
    own = model_device(model)
    if device is None:
        return own
    wanted = torch.device(device)
    same_index = wanted.index is None or own.index is None or wanted.index == own.index
    if wanted.type != own.type or not same_index:
        raise ValueError(
            f"The model is on {own} but device={wanted} was requested; move the model first "
            f"(model.to({str(wanted)!r})) or pass device=None to use the model's device."
        )
    return own


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Switch off dropout for the duration, then restore the caller's training flag.

    Shared by prediction here and by the latency timers of :mod:`pruning.cost`.
    """
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA/CPU (fp16 on MPS) when enabled, else a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "mps" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _restore_order(indices: list[torch.Tensor]) -> torch.Tensor:
    """Permutation that puts concatenated batch rows back in original order.

    Shapes: each ``indices`` entry ``(B_i,)``; returns ``(N,)`` positions into the concatenation.

    Raises:
        ValueError: when two rows claim the same original position.
    """
    positions = torch.cat([index.to("cpu", torch.long) for index in indices])
    if torch.unique(positions).numel() != positions.numel():
        raise ValueError(
            "Batches repeat an original row index; build them once with make_batches and pass "
            "each batch exactly once."
        )
    return torch.argsort(positions)


def _check_batches(batches: Sequence[Batch]) -> None:
    if len(batches) == 0:
        raise ValueError("No batches to evaluate; build them with pruning.data.make_batches.")


def _batch_labels(batches: Sequence[Batch]) -> torch.Tensor | None:
    """Labels of all batches concatenated in batch order, ``(N,)`` long on CPU, or None.

    Raises:
        ValueError: when some batches carry labels and others do not.
    """
    labels = [batch.labels for batch in batches if batch.labels is not None]
    if not labels:
        return None
    if len(labels) != len(batches):
        raise ValueError("Some batches carry labels and some do not; tokenise labels for all.")
    return torch.cat([label.to("cpu", torch.long) for label in labels])


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    device: str | torch.device | None = None,
    autocast: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the classifier over ``batches`` and return rows in their original order.

    A batch that runs out of device memory is split in halves (and those again) and retried; the
    rows come back the same (:mod:`pruning.oom`).

    Args:
        model: a sequence classifier; put in eval mode for the call and restored afterwards.
        batches: pre-tokenised batches (possibly length-sorted); ``batch.indices`` gives each row's
            position in the original split.
        device: where to run; ``None`` = the model's device. Models are never moved.
        autocast: run under bf16 autocast (fp16 on MPS); logits are returned as float32.

    Returns:
        ``(logits, labels)``: logits ``(N, k)`` float32 on CPU, labels ``(N,)`` long on CPU, or
        ``None`` when the batches carry no labels.
    """
    _check_batches(batches)
    target = resolve_device(model, device)
    labels = _batch_labels(batches)
    order = _restore_order([batch.indices for batch in batches])
    # Copy every batch first and fetch the logits once: a host<->device copy per batch would
    # stall the GPU queue between batches.
    inputs = [batch.to(target).model_inputs() for batch in batches]
    outputs: list[torch.Tensor] = []
    halving = OomHalving(f"predicting on {target}")

    def forward(rows: dict[str, torch.Tensor]) -> torch.Tensor:
        with _autocast(target, autocast):
            return model(**rows).logits.float()

    with eval_mode(model):
        for batch_inputs in inputs:
            outputs.append(halving.forward_rows(forward, batch_inputs))
    logits = torch.cat(outputs).cpu()[order]
    return logits, None if labels is None else labels[order]


def evaluate_model(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    device: str | torch.device | None = None,
    autocast: bool = False,
) -> Metrics:
    """Metrics of ``model`` on labelled ``batches`` (see :func:`predict_logits`).

    Raises:
        ValueError: when the batches carry no labels.
    """
    logits, labels = predict_logits(model, batches, device=device, autocast=autocast)
    if labels is None:
        raise ValueError("The batches carry no labels; pass labels to make_batches to evaluate.")
    return compute_metrics(logits, labels)


def evaluate_split(
    model: nn.Module,
    tokenizer: Any,
    split: TextSplit,
    *,
    batch_size: int = 64,
    max_length: int = 128,
    device: str | torch.device | None = None,
) -> Metrics:
    """Tokenise a labelled split with length-sorted dynamic padding and evaluate the model on it.

    Raises:
        ValueError: on an empty split.
    """
    if len(split.texts) == 0:
        raise ValueError("The split is empty; load or sample some labelled texts first.")
    batches = make_batches(
        tokenizer,
        split.texts,
        split.labels,
        batch_size=batch_size,
        max_length=max_length,
        bucket=True,
        text_pairs=split.text_pairs,
    )
    return evaluate_model(model, batches, device=device)


def evaluate_masks(
    model: nn.Module,
    batches: Sequence[Batch],
    masks: Sequence[torch.Tensor] | torch.Tensor,
    *,
    device: str | torch.device | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    autocast: bool = False,
    masks_per_forward: int | None = None,
) -> list[Metrics]:
    """Metrics of the model with each candidate head mask applied, over the same batches.

    Batches are moved to the device once and reused for every mask; heads are gated (never
    removed), so the model is unchanged afterwards. On accelerators several masks share one
    forward: the batch is repeated ``masks_per_forward`` times and each copy gated by its own mask.

    Args:
        model: a supported classifier (heads may already be removed; masks use the original grid).
        batches: labelled, pre-tokenised batches.
        masks: bool ``(n_layers, n_heads)`` masks, True = keep, as a sequence or an ``(M, L, H)``
            tensor.
        device: ``None`` = the model's device.
        on_progress: called as ``on_progress(done, total)`` after each group of masks.
        autocast: bf16 autocast (fp16 on MPS).
        masks_per_forward: masks stacked in one forward; ``None`` chooses 1 on CPU and up to a
            token budget on a GPU. Out of device memory, it is halved (down to one mask, then
            fewer rows per forward) and the work retried (:mod:`pruning.oom`).

    Returns:
        One :class:`Metrics` per mask, in the order given.

    Raises:
        ValueError: on a mask of the wrong shape, unlabelled batches or ``masks_per_forward < 1``.
    """
    _check_batches(batches)
    stacked = stack_masks(model, masks)
    total = stacked.shape[0]
    if total == 0:
        return []
    if masks_per_forward is not None and masks_per_forward < 1:
        raise ValueError(f"masks_per_forward must be >= 1 (got {masks_per_forward}).")
    batch_labels = _batch_labels(batches)
    if batch_labels is None:
        raise ValueError("The batches carry no labels; pass labels to make_batches to evaluate.")
    target = resolve_device(model, device)
    per_forward = masks_per_forward or auto_masks_per_forward(target, batches, total)
    order = _restore_order([batch.indices for batch in batches])
    labels = batch_labels[order]
    inputs = [batch.to(target).model_inputs() for batch in batches]
    gates = stacked.to(target)
    log.debug("evaluating %d masks, %d per forward, on %s", total, per_forward, target)
    results: list[Metrics] = []
    repeated: dict[int, list[dict[str, torch.Tensor]]] = {}
    # Out of memory: first fewer masks per forward (dropping the repeated copies), then, at one
    # mask per forward, fewer rows per forward.
    groups = OomHalving(f"evaluating head masks on {target}", on_retry=lambda _: repeated.clear())
    rows = OomHalving(f"evaluating a head mask on {target}")

    def forward(batch_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with _autocast(target, autocast):
            return model(**batch_inputs).logits.float()

    with eval_mode(model), torch.inference_mode(), StackedGates(model, target) as hooks:

        def evaluate_group(start: int, stop: int) -> None:
            group = gates[start:stop]
            hooks.set_gates(group)
            copies = group.shape[0]
            chunks: list[torch.Tensor] = []
            if copies == 1:
                chunks = [rows.forward_rows(forward, batch_inputs)[None] for batch_inputs in inputs]
            else:
                if copies not in repeated:
                    repeated[copies] = [repeat_rows(batch, copies) for batch in inputs]
                for batch_inputs in repeated[copies]:
                    logits = forward(batch_inputs)
                    chunks.append(logits.reshape(copies, -1, logits.shape[-1]))
            per_mask = torch.cat(chunks, dim=1).cpu()[:, order]
            results.extend(compute_metrics(per_mask[i], labels) for i in range(copies))
            if on_progress is not None:
                on_progress(len(results), total)

        groups.map(evaluate_group, total, per_forward)
    return results
