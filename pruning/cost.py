"""Cost of a classifier: parameters, analytic FLOPs and honest wall-clock latency.

* :func:`count_parameters` counts parameters exactly (shared tensors once, embeddings optional).
* :func:`flops_breakdown` / :func:`flops_per_example` / :func:`encoder_flops_per_example` give
  analytic forward FLOPs that follow removed heads (a removed head costs nothing).
* :func:`measure_latency` / :func:`compare_latency` time forwards on fixed random tokens:
  warm-up discarded, device-synchronised, repeated, interleaved for comparisons, spread reported.

Quality metrics and prediction live in :mod:`pruning.evaluate`.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pruning.adapters import model_config
from pruning.evaluate import eval_mode, model_device, resolve_device
from pruning.heads import head_dim, heads_per_layer


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


def nonzero_parameters(model: nn.Module) -> dict[str, int]:
    """Honest size of an unstructured-sparse model.

    Returns:
        ``params_nonzero`` (parameters that are not exactly zero, shared tensors once),
        ``dense_bytes`` (fp32, as stored dense) and ``sparse_bytes``: each matrix stored the
        cheaper way, dense or CSR (fp32 values plus int32 column indices and row pointers, so CSR
        only pays below half density); vectors stay dense.
    """
    seen: set[int] = set()
    nonzero = dense_bytes = sparse_bytes = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        data = parameter.detach()
        count = int(torch.count_nonzero(data))
        nonzero += count
        dense_bytes += 4 * data.numel()
        if data.ndim == 2:
            sparse_bytes += min(8 * count + 4 * (data.shape[0] + 1), 4 * data.numel())
        else:
            sparse_bytes += 4 * data.numel()
    return {"params_nonzero": nonzero, "dense_bytes": dense_bytes, "sparse_bytes": sparse_bytes}


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
    times_ms: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (``times_ms`` as a list)."""
        data = asdict(self)
        data["times_ms"] = list(self.times_ms)
        return data


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
        times_ms=tuple(float(t) for t in times_ms),
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
    target = resolve_device(model, device)
    with _num_threads(threads), eval_mode(model):
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
    dense_result, pruned_result = interleaved_latency(
        [dense, pruned],
        batch_size=batch_size,
        seq_len=seq_len,
        repeats=repeats,
        warmup=warmup,
        device=device,
        threads=threads,
        seed=seed,
    )
    ratios = [d / p for d, p in zip(dense_result.times_ms, pruned_result.times_ms, strict=True)]
    return {
        "dense": dense_result,
        "pruned": pruned_result,
        "speedup": dense_result.median_ms / pruned_result.median_ms,
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "pair_speedups": ratios,
    }


def interleaved_latency(
    models: Sequence[nn.Module],
    *,
    batch_size: int = 1,
    seq_len: int = 128,
    repeats: int = 20,
    warmup: int = 3,
    device: str | torch.device | None = None,
    threads: int | None = None,
    seed: int = 0,
    on_round: Callable[[int, int], None] | None = None,
) -> list[LatencyResult]:
    """Time several models in interleaved rounds so that machine drift hits all of them alike.

    Each round runs every model once; the order rotates every round (ABC, BCA, CAB, ...) so no
    model always runs first or last. All models see the same random tokens. Arguments as
    :func:`measure_latency`; ``LatencyResult.times_ms`` keeps the per-round times in round order.
    ``on_round(done, repeats)`` is called after every round (progress; it may raise to cancel).

    Raises:
        ValueError: as :func:`measure_latency`, no models, or models on different devices.
    """
    if not models:
        raise ValueError("Give at least one model to time.")
    _check_latency_args(models, batch_size, seq_len, repeats, warmup, threads)
    target = resolve_device(models[0], device)
    for model in models[1:]:
        if model_device(model) != target:
            raise ValueError(
                f"The first model is on {target} but another on {model_device(model)}; "
                "put all models on the same device to compare them."
            )
    with contextlib.ExitStack() as stack:
        stack.enter_context(_num_threads(threads))
        for model in models:
            stack.enter_context(eval_mode(model))
        runs = [_timed_forward(model, batch_size, seq_len, target, seed) for model in models]
        for _ in range(warmup):
            for run in runs:
                run()
        times: list[list[float]] = [[] for _ in models]
        for round_index in range(repeats):
            shift = round_index % len(models)
            for index in [*range(shift, len(models)), *range(shift)]:
                times[index].append(runs[index]())
            if on_round is not None:
                on_round(round_index + 1, repeats)
        return [
            _latency_result(ms, model, batch_size, seq_len, target)
            for ms, model in zip(times, models, strict=True)
        ]
