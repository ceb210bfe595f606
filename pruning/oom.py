"""Out-of-memory on the accelerator, answered by halving the batch and trying again.

A batch that fits on one GPU may not fit on a smaller one, or next to another program. Every
batched inference path (:func:`pruning.evaluate.predict_logits`,
:func:`pruning.evaluate.evaluate_masks`, :class:`pruning.predictor.BatchedPredictor`,
:class:`pruning.fast_eval.FastMaskEvaluator`) runs its forwards through :class:`OomHalving`: on
``torch.cuda.OutOfMemoryError`` (CUDA, and MPS's "out of memory" ``RuntimeError``) it frees the
allocator's cache, halves the rows (or stacked masks) per forward, logs a warning and runs the
same work again in smaller pieces; the results are the same rows in the same order. The smaller
size is kept for the rest of the object's life, so later batches do not fail again first. At the
minimum size it raises :class:`DeviceOutOfMemoryError`, whose message says what to do.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = [
    "DeviceOutOfMemoryError",
    "OomHalving",
    "free_device_memory",
    "is_out_of_memory",
    "run_halving_on_oom",
    "slice_rows",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class DeviceOutOfMemoryError(RuntimeError):
    """The device ran out of memory even at the smallest batch; the message says what to do."""


def is_out_of_memory(error: BaseException) -> bool:
    """True for an accelerator (or host allocator) out-of-memory error worth retrying smaller.

    CUDA raises ``torch.cuda.OutOfMemoryError``; MPS and older builds raise a ``RuntimeError`` whose
    message says "out of memory". A :class:`DeviceOutOfMemoryError` is final: never retried.
    """
    if isinstance(error, DeviceOutOfMemoryError):
        return False
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def free_device_memory() -> None:
    """Drop unreachable tensors and return cached blocks of the CUDA / MPS allocator."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def slice_rows(inputs: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    """Rows ``start:stop`` of every tensor of a model-input dict (all ``(B, ...)``)."""
    return {name: tensor[start:stop] for name, tensor in inputs.items()}


class OomHalving:
    """Runs work in pieces of at most ``limit`` items, halving the limit after each OOM.

    Args:
        what: what is being computed, for the log and the final error ("predicting", ...).
        min_size: the smallest piece; an OOM at this size raises :class:`DeviceOutOfMemoryError`.
        on_retry: called with the new limit before each retry (e.g. to drop cached copies).

    Attributes:
        limit: the largest piece size known to be worth trying (None until the first OOM).
        retries: how many times a piece was retried smaller.
    """

    def __init__(
        self,
        what: str,
        *,
        min_size: int = 1,
        on_retry: Callable[[int], None] | None = None,
    ) -> None:
        if min_size < 1:
            raise ValueError(f"min_size must be >= 1 (got {min_size}).")
        self.what = what
        self.min_size = min_size
        self.on_retry = on_retry
        self.limit: int | None = None
        self.retries = 0

    def size_for(self, wanted: int) -> int:
        """The piece size to try for ``wanted`` items (never below 1)."""
        size = wanted if self.limit is None else min(wanted, self.limit)
        return max(1, size)

    def run(self, work: Callable[[int], T], wanted: int) -> T:
        """``work(size)`` with ``size`` = :meth:`size_for` ``(wanted)``, smaller after each OOM.

        ``work`` must do the first ``size`` items of what is left and may be called again with a
        smaller size when it ran out of memory; anything else it raises propagates.

        Raises:
            DeviceOutOfMemoryError: out of memory at ``min_size``.
        """
        while True:
            size = self.size_for(wanted)
            try:
                return work(size)
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                if size <= self.min_size:
                    raise DeviceOutOfMemoryError(
                        f"Out of memory while {self.what}, even with {size} per forward "
                        f"({error}). Free memory on the device (close other jobs, notebooks or "
                        "programs using it), use shorter texts (a lower max_length), or run on "
                        "the CPU (device='cpu', --device cpu)."
                    ) from error
                detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            # Retry outside the except block: the traceback holds the failed forward's tensors.
            new = max(self.min_size, size // 2)
            self.limit = new
            self.retries += 1
            log.warning(
                "out of memory while %s with %d per forward (%s); retrying with %d",
                self.what,
                size,
                detail,
                new,
            )
            free_device_memory()
            if self.on_retry is not None:
                self.on_retry(new)

    def map(self, work: Callable[[int, int], T], total: int, size: int | None = None) -> list[T]:
        """``[work(start, stop), ...]`` over consecutive ranges covering ``0..total``.

        Ranges hold at most ``size`` items (default ``total``), fewer after an OOM; a range that
        ran out of memory is redone in smaller ranges, so each item is in exactly one result.
        """
        results: list[T] = []
        start = 0
        while start < total:
            begin = start

            def piece(step: int, begin: int = begin) -> tuple[T, int]:
                stop = min(total, begin + step)
                return work(begin, stop), stop

            result, start = self.run(piece, size or total)
            results.append(result)
        return results

    def forward_rows(
        self,
        forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        inputs: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """``forward(inputs)`` (a ``(B, ...)`` tensor), split into row slices after an OOM.

        Rows are independent in a classifier's forward, so the concatenated slices are the rows
        of the whole batch, in order.
        """
        rows = int(next(iter(inputs.values())).shape[0])
        pieces = self.map(lambda start, stop: forward(slice_rows(inputs, start, stop)), rows)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def run_halving_on_oom(
    work: Callable[[int, int], T],
    total: int,
    batch_size: int,
    *,
    what: str = "running a batch",
    min_batch: int = 1,
    on_retry: Callable[[int], None] | None = None,
) -> list[T]:
    """``work(start, stop)`` over ``0..total`` in batches of ``batch_size``, halved on each OOM.

    See :meth:`OomHalving.map`.

    Raises:
        DeviceOutOfMemoryError: still out of memory with ``min_batch`` items per call.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size}).")
    return OomHalving(what, min_size=min_batch, on_retry=on_retry).map(work, total, batch_size)
