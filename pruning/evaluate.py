"""Evaluation: classification metrics, batched prediction, many-mask evaluation, cost and latency.

* :func:`compute_metrics` turns logits and labels into :class:`Metrics` (accuracy, MCC, macro-F1,
  cross-entropy loss).
* :func:`predict_logits` / :func:`evaluate_model` / :func:`evaluate_split` run a classifier over
  pre-tokenised, length-sorted batches (:func:`pruning.data.make_batches`) and put the rows back in
  their original order.
* :func:`evaluate_masks` is the one call that evaluates many candidate head masks (bool
  ``(n_layers, n_heads)``, True = keep) over the same batches. It gates heads with hooks on the
  attention output projection (the mechanism of :func:`pruning.heads.apply_mask`) and, on a GPU,
  stacks several masks into one forward, each copy of the batch gated by its own mask.
* :func:`count_parameters`, :func:`flops_per_example` and :func:`measure_latency` /
  :func:`compare_latency` describe what pruning bought: exact parameter counts, analytic FLOPs that
  follow removed heads, and honest wall-clock timings (interleaved, repeated, spread reported).
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pruning.adapters import encoder_layers, get_adapter, get_submodule, model_config
from pruning.data import Batch, TextSplit, make_batches
from pruning.heads import check_mask, head_dim, head_grid, heads_per_layer, kept_heads

log = logging.getLogger(__name__)

METRIC_NAMES = ("accuracy", "mcc", "macro_f1", "loss")
_METRIC_ALIASES = {"f1": "macro_f1"}
# Rows x tokens per forward that the mask-stacking engine aims for on a GPU: large enough to keep
# an H100 busy with small encoders, small enough for BERT-base activations to fit comfortably.
_STACK_TOKEN_BUDGET = 1 << 18


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


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The model's own device; a requested ``device`` must agree with it (models are not moved)."""
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
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Switch off dropout for the duration, then restore the caller's training flag."""
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
    target = _resolve_device(model, device)
    labels = _batch_labels(batches)
    order = _restore_order([batch.indices for batch in batches])
    # Copy every batch first and fetch the logits once: a host<->device copy per batch would
    # stall the GPU queue between batches.
    inputs = [batch.to(target).model_inputs() for batch in batches]
    outputs: list[torch.Tensor] = []
    with _eval_mode(model):
        for batch_inputs in inputs:
            with _autocast(target, autocast):
                outputs.append(model(**batch_inputs).logits.float())
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


class _StackedGates:
    """Hooks that gate ``M`` stacked copies of a batch, copy ``m`` by head mask ``m``.

    The input of each layer's attention output projection is ``(M * B, T, h_l * d)``; rows
    ``m * B .. (m + 1) * B - 1`` are scaled per head by ``gates[m, layer, head]``. With ``M = 1``
    this is exactly :class:`pruning.heads.HeadGates`. Heads already removed from the model are
    skipped (gates are given on the original grid). Per-layer scales are built once per group of
    masks in :meth:`set_gates`, so a forward adds one multiplication per layer.
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device
        self._scales: dict[int, torch.Tensor] = {}
        self._kept: list[tuple[int, torch.Tensor]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> _StackedGates:
        adapter = get_adapter(self.model)
        layers = encoder_layers(self.model)
        for index, (layer, heads) in enumerate(zip(layers, kept_heads(self.model), strict=True)):
            if heads:
                self._kept.append((index, torch.tensor(heads, device=self.device)))
                projection = get_submodule(layer, adapter.output)
                self._handles.append(projection.register_forward_pre_hook(self._make_hook(index)))
        return self

    def set_gates(self, gates: torch.Tensor) -> None:
        """Gates for the next forwards: float ``(M, n_layers, n_heads)`` on the device."""
        size = head_dim(self.model)
        for index, heads in self._kept:
            self._scales[index] = gates[:, index, heads].repeat_interleave(size, dim=1)

    def _make_hook(
        self, layer: int
    ) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            hidden = args[0]
            scale = self._scales[layer].to(hidden.dtype)  # (M, h_l * d)
            copies = scale.shape[0]
            stacked = hidden.reshape(copies, -1, *hidden.shape[1:])
            view = (copies,) + (1,) * (stacked.ndim - 2) + (scale.shape[1],)
            return ((stacked * scale.reshape(view)).reshape(hidden.shape), *args[1:])

        return hook

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._kept.clear()
        self._scales.clear()


def _stack_masks(model: nn.Module, masks: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Validate masks against the model's grid; returns float ``(M, n_layers, n_heads)``."""
    grid = head_grid(model)
    if isinstance(masks, torch.Tensor):
        if masks.ndim == 2:
            raise ValueError(
                f"Got a single mask of shape {tuple(masks.shape)}; pass a list of masks or a "
                f"tensor of shape (M, {grid[0]}, {grid[1]})."
            )
        if masks.ndim != 3:
            raise ValueError(
                f"masks has shape {tuple(masks.shape)}; pass (M, {grid[0]}, {grid[1]})."
            )
        masks = list(masks)
    checked = [check_mask(model, mask, name=f"masks[{i}]") for i, mask in enumerate(masks)]
    if not checked:
        return torch.zeros(0, *grid)
    return torch.stack([mask.to("cpu", torch.float32) for mask in checked])


def _auto_masks_per_forward(device: torch.device, batches: Sequence[Batch], count: int) -> int:
    """1 on CPU (compute-bound); on accelerators as many masks as fit the token budget."""
    if device.type == "cpu":
        return 1
    largest = max(int(batch.input_ids.numel()) for batch in batches)
    return max(1, min(count, _STACK_TOKEN_BUDGET // max(largest, 1)))


def _repeat_rows(inputs: dict[str, torch.Tensor], copies: int) -> dict[str, torch.Tensor]:
    """Stack ``copies`` copies of a batch along the rows: ``(B, T)`` -> ``(copies * B, T)``."""
    if copies == 1:
        return inputs
    return {name: t.repeat(copies, *([1] * (t.ndim - 1))) for name, t in inputs.items()}


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
            token budget on a GPU.

    Returns:
        One :class:`Metrics` per mask, in the order given.

    Raises:
        ValueError: on a mask of the wrong shape, unlabelled batches or ``masks_per_forward < 1``.
    """
    _check_batches(batches)
    stacked = _stack_masks(model, masks)
    total = stacked.shape[0]
    if total == 0:
        return []
    if masks_per_forward is not None and masks_per_forward < 1:
        raise ValueError(f"masks_per_forward must be >= 1 (got {masks_per_forward}).")
    batch_labels = _batch_labels(batches)
    if batch_labels is None:
        raise ValueError("The batches carry no labels; pass labels to make_batches to evaluate.")
    target = _resolve_device(model, device)
    per_forward = masks_per_forward or _auto_masks_per_forward(target, batches, total)
    order = _restore_order([batch.indices for batch in batches])
    labels = batch_labels[order]
    inputs = [batch.to(target).model_inputs() for batch in batches]
    gates = stacked.to(target)
    log.debug("evaluating %d masks, %d per forward, on %s", total, per_forward, target)
    results: list[Metrics] = []
    repeated: dict[int, list[dict[str, torch.Tensor]]] = {}
    with _eval_mode(model), torch.inference_mode(), _StackedGates(model, target) as hooks:
        for start in range(0, total, per_forward):
            group = gates[start : start + per_forward]
            hooks.set_gates(group)
            copies = group.shape[0]
            if copies not in repeated:
                repeated[copies] = [_repeat_rows(batch_inputs, copies) for batch_inputs in inputs]
            chunks: list[torch.Tensor] = []
            for batch_inputs in repeated[copies]:
                with _autocast(target, autocast):
                    logits = model(**batch_inputs).logits
                chunks.append(logits.float().reshape(copies, -1, logits.shape[-1]))
            per_mask = torch.cat(chunks, dim=1).cpu()[:, order]
            results.extend(compute_metrics(per_mask[i], labels) for i in range(copies))
            if on_progress is not None:
                on_progress(len(results), total)
    return results


def count_parameters(model: nn.Module, *, include_embeddings: bool = True) -> int:
    """Number of parameters (shared tensors counted once).

    With ``include_embeddings=False`` the token / position / type embedding tables and the
    embedding layer norm (``base_model.embeddings``) are left out; an embedding projection such as
    ELECTRA's ``embeddings_project`` is a dense layer and still counts.
    """
    excluded: set[int] = set()
    if not include_embeddings:
        embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
        if isinstance(embeddings, nn.Module):
            excluded = {id(p) for p in embeddings.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in excluded)


def _linear_flops(module: nn.Module | None, rows: int) -> int:
    """2 * in * out FLOPs per row for every ``nn.Linear`` below ``module``."""
    if module is None:
        return 0
    return sum(
        2 * rows * m.in_features * m.out_features
        for m in module.modules()
        if isinstance(m, nn.Linear)
    )


def _intermediate_size(model: nn.Module) -> int:
    config = model_config(model)
    size = getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim", None)
    if size is None:
        raise ValueError(
            f"{type(model).__name__}'s config has no intermediate_size / hidden_dim, so its "
            "feed-forward cost is unknown; use a BERT, RoBERTa, DistilBERT or ELECTRA classifier."
        )
    return int(size)


def flops_breakdown(model: nn.Module, seq_len: int) -> dict[str, int]:
    """Analytic forward FLOPs of one example of ``seq_len`` tokens, by part (see
    :func:`flops_per_example` for what is counted).

    Returns:
        ``attention_projections`` (q/k/v and output projection), ``attention_scores`` (QK^T and
        attention x V), ``feed_forward``, ``embedding_projection`` (ELECTRA), ``pooler`` and
        ``classifier``.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1 (got {seq_len}).")
    tokens = int(seq_len)
    hidden = int(model_config(model).hidden_size)
    intermediate = _intermediate_size(model)
    size = head_dim(model)
    projections = scores = feed_forward = 0
    for heads in heads_per_layer(model):
        width = heads * size
        projections += 3 * 2 * tokens * hidden * width + 2 * tokens * width * hidden
        scores += 2 * tokens * tokens * width * 2
        feed_forward += 2 * tokens * hidden * intermediate * 2
    base = getattr(model, "base_model", model)
    base_modules = {id(m) for m in base.modules()}
    classifier = sum(
        2 * m.in_features * m.out_features
        for m in model.modules()
        if isinstance(m, nn.Linear) and id(m) not in base_modules
    )
    return {
        "attention_projections": projections,
        "attention_scores": scores,
        "feed_forward": feed_forward,
        "embedding_projection": _linear_flops(getattr(base, "embeddings_project", None), tokens),
        "pooler": _linear_flops(getattr(base, "pooler", None), 1),
        "classifier": classifier,
    }


def encoder_flops_per_example(model: nn.Module, seq_len: int) -> int:
    """FLOPs of the encoder layers alone (attention and feed-forward) for ``seq_len`` tokens."""
    parts = flops_breakdown(model, seq_len)
    return parts["attention_projections"] + parts["attention_scores"] + parts["feed_forward"]


def flops_per_example(model: nn.Module, seq_len: int) -> int:
    """Analytic forward FLOPs of one example of ``seq_len`` tokens (2 FLOPs per multiply-add).

    Counted, per encoder layer ``l`` with ``h_l`` heads present (removed heads cost nothing), head
    size ``d``, hidden ``H``, feed-forward width ``I`` and ``T`` tokens: q/k/v projections
    ``3 * 2*T*H*(h_l*d)``, attention scores ``2*T*T*(h_l*d)``, attention x values
    ``2*T*T*(h_l*d)``, output projection ``2*T*(h_l*d)*H``, feed-forward ``2 * 2*T*H*I``. Plus, once
    per example, the pooler (BERT, ``2*H*H`` on the first token), the classification head (every
    ``nn.Linear`` outside the base model, on one token) and ELECTRA's embedding projection
    (``2*T*E*H``). Not counted: embedding lookups, bias additions, layer norms, softmax,
    activations, dropout and the attention mask.

    Raises:
        ValueError: when ``seq_len < 1``.
    """
    return sum(flops_breakdown(model, seq_len).values())


def max_sequence_length(model: nn.Module) -> int:
    """Longest input the model's position embeddings allow (RoBERTa reserves ``pad_id + 1``)."""
    config = model_config(model)
    limit = int(config.max_position_embeddings)
    if config.model_type == "roberta":
        limit -= int(config.pad_token_id or 0) + 1
    return limit


@dataclass(frozen=True)
class LatencyResult:
    """Wall-clock time of one forward of a ``batch_size x seq_len`` input, over ``repeats`` runs."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    repeats: int
    batch_size: int
    seq_len: int
    device: str
    threads: int
    dtype: str

    def to_dict(self) -> dict[str, float | int | str]:
        """Plain JSON-ready dict."""
        return asdict(self)


def _latency_result(
    times_ms: list[float], model: nn.Module, batch_size: int, seq_len: int, device: torch.device
) -> LatencyResult:
    p10, p90 = np.percentile(np.asarray(times_ms), [10, 90])
    parameter = next(model.parameters(), None)
    dtype = str(parameter.dtype).removeprefix("torch.") if parameter is not None else "float32"
    return LatencyResult(
        median_ms=float(statistics.median(times_ms)),
        p10_ms=float(p10),
        p90_ms=float(p90),
        mean_ms=float(statistics.fmean(times_ms)),
        repeats=len(times_ms),
        batch_size=batch_size,
        seq_len=seq_len,
        device=str(device),
        threads=torch.get_num_threads(),
        dtype=dtype,
    )


@contextlib.contextmanager
def _num_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for the duration (no-op for ``None``)."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _check_latency_args(
    models: Sequence[nn.Module],
    batch_size: int,
    seq_len: int,
    repeats: int,
    warmup: int,
    threads: int | None,
) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size}).")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1 (got {repeats}); 20 or more gives stable medians.")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0 (got {warmup}).")
    if threads is not None and threads < 1:
        raise ValueError(
            f"threads must be >= 1 or None for torch's current setting (got {threads})."
        )
    for model in models:
        limit = max_sequence_length(model)
        if not 1 <= seq_len <= limit:
            raise ValueError(
                f"seq_len must be between 1 and {limit} (the model's position limit); "
                f"got {seq_len}."
            )


def _timed_forward(
    model: nn.Module, batch_size: int, seq_len: int, device: torch.device, seed: int
) -> Callable[[], float]:
    """A function that runs one forward on fixed random tokens and returns its milliseconds.

    Tokens are drawn uniformly from the vocabulary (never the pad id), exactly ``seq_len`` per row
    with a full attention mask, so every run and every model does the same work.
    """
    config = model_config(model)
    vocab = int(config.vocab_size)
    pad = int(config.pad_token_id) if config.pad_token_id is not None else -1
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab, (batch_size, seq_len), generator=generator)
    input_ids[input_ids == pad] = (pad + 1) % vocab
    inputs = {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long, device=device),
    }

    def run() -> float:
        with torch.inference_mode():
            _synchronize(device)
            start = time.perf_counter()
            model(**inputs)
            _synchronize(device)
            return (time.perf_counter() - start) * 1000.0

    return run


def measure_latency(
    model: nn.Module,
    *,
    batch_size: int = 1,
    seq_len: int = 128,
    repeats: int = 20,
    warmup: int = 3,
    device: str | torch.device | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> LatencyResult:
    """Median wall-clock time of one forward of a ``batch_size x seq_len`` random input.

    The model runs in eval mode under ``torch.inference_mode``; ``warmup`` runs are discarded;
    each timed run is bracketed by device synchronisation (CUDA/MPS) and timed with
    ``time.perf_counter``. ``threads`` sets torch's CPU thread count for the measurement and
    restores it afterwards; the count in effect is reported.

    Raises:
        ValueError: when ``batch_size < 1``, ``repeats < 1``, ``warmup < 0``, ``threads < 1`` or
            ``seq_len`` is outside ``1..max_sequence_length(model)``.
    """
    _check_latency_args([model], batch_size, seq_len, repeats, warmup, threads)
    target = _resolve_device(model, device)
    with _num_threads(threads), _eval_mode(model):
        run = _timed_forward(model, batch_size, seq_len, target, seed)
        for _ in range(warmup):
            run()
        times = [run() for _ in range(repeats)]
        return _latency_result(times, model, batch_size, seq_len, target)


def compare_latency(
    dense: nn.Module,
    pruned: nn.Module,
    *,
    batch_size: int = 1,
    seq_len: int = 128,
    repeats: int = 20,
    warmup: int = 3,
    device: str | torch.device | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time a dense and a pruned model in interleaved runs so that drift hits both alike.

    Runs alternate dense/pruned, with the order flipped every pair (AB, BA, AB, ...) so neither
    model always runs second. Both see the same random tokens. Arguments as :func:`measure_latency`.

    Returns:
        ``{"dense": LatencyResult, "pruned": LatencyResult, "speedup": median_dense /
        median_pruned, "speedup_min": ..., "speedup_max": ...}`` where min/max are over the
        per-pair ratios ``dense_i / pruned_i``, plus ``"pair_speedups"`` (list of the ratios).

    Raises:
        ValueError: as :func:`measure_latency`, or when the two models sit on different devices.
    """
    _check_latency_args([dense, pruned], batch_size, seq_len, repeats, warmup, threads)
    target = _resolve_device(dense, device)
    if model_device(pruned) != target:
        raise ValueError(
            f"The dense model is on {target} but the pruned one on {model_device(pruned)}; "
            "put both on the same device to compare them."
        )
    with _num_threads(threads), _eval_mode(dense), _eval_mode(pruned):
        run_dense = _timed_forward(dense, batch_size, seq_len, target, seed)
        run_pruned = _timed_forward(pruned, batch_size, seq_len, target, seed)
        for _ in range(warmup):
            run_dense()
            run_pruned()
        dense_ms: list[float] = []
        pruned_ms: list[float] = []
        for index in range(repeats):
            if index % 2 == 0:
                dense_ms.append(run_dense())
                pruned_ms.append(run_pruned())
            else:
                pruned_ms.append(run_pruned())
                dense_ms.append(run_dense())
        dense_result = _latency_result(dense_ms, dense, batch_size, seq_len, target)
        pruned_result = _latency_result(pruned_ms, pruned, batch_size, seq_len, target)
    ratios = [d / p for d, p in zip(dense_ms, pruned_ms, strict=True)]
    return {
        "dense": dense_result,
        "pruned": pruned_result,
        "speedup": dense_result.median_ms / pruned_result.median_ms,
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "pair_speedups": ratios,
    }
