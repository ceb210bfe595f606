"""The head editor's logic, without any UI: an undoable edit state and a fast slice evaluator.

* :class:`EditorState` holds the current head mask (bool ``(n_layers, n_heads)``, **True =
  keep**) of one model with undo and redo stacks: toggle a head, apply a stored run's mask, keep
  the top-k heads by some scores, reset. Heads that are not in the model at all (a pruned run
  opened in the editor) stay off.
* :class:`SliceEvaluator` holds a classifier and a tokenised evaluation slice once and answers,
  for any mask: accuracy / MCC / macro-F1 / loss on the slice (through
  :class:`pruning.fast_eval.FastMaskEvaluator`, which reuses the layers below the first edited
  one), class probabilities for a few sentences and one head's attention on a sentence (gates
  from :func:`pruning.heads.apply_mask`). The unedited model's metrics are computed once.
* :func:`explain_edit` explains a sentence with LIME or SHAP on the unedited and the edited model
  toward one class (slower: the page runs it as a background job on request).
* :func:`time_edit_cycles` measures the time from an edit to updated metrics over random
  toggles (median and 90th percentile): the number ``headscope bench editor`` reports.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from pruning.batching import make_batches
from pruning.capture import SentenceCapture, capture_sentences
from pruning.data import LabelledDataset, TextSplit
from pruning.evaluate import Metrics, compute_metrics
from pruning.fast_eval import FastMaskEvaluator
from pruning.heads import apply_mask, head_grid, present_mask, remove_heads
from pruning.methods.base import select_lowest
from pruning.methods.manual import format_heads
from pruning.predictor import BatchedPredictor, model_max_length

if TYPE_CHECKING:
    from pruning.attribution import Attribution
    from pruning.explain import ExplainMethod, ExplanationCache
    from pruning.run_models import ModelRef

__all__ = [
    "DEFAULT_SENTENCES",
    "DEFAULT_SLICE",
    "DEFAULT_SPLIT",
    "EditCycleTimes",
    "EditorState",
    "HeadAttention",
    "SliceEvaluator",
    "editor_slice",
    "explain_edit",
    "manual_config",
    "time_edit_cycles",
]

# Evaluation texts of the default slice: on the default model (6 x 12 heads) one edit takes a
# median 0.6 s with 2 threads and 1.0 s with 1 (layer-0 edits: 1.5 s / 2.3 s), see the README.
DEFAULT_SLICE = 256
DEFAULT_SPLIT: Literal["validation", "test"] = "validation"
# The sentences the page shows first and the bench predicts after each edit.
DEFAULT_SENTENCES = (
    "The plot was thin, but the acting was wonderful.",
    "A dull, lifeless film that never finds its story.",
)
MAX_HISTORY = 200
# Rows per FastMaskEvaluator: the unit of progress for larger slices.
CHUNK_ROWS = 256
# Anchor-cache budget of one slice evaluator (all chunks together), in bytes.
CACHE_BYTES = 1 << 30
_MEMO_MASKS = 128
_MEMO_CAPTURES = 16
_MEMO_PREDICTIONS = 512

HeadStatus = Literal["kept", "switched_off", "absent"]


def editor_slice(
    dataset: LabelledDataset,
    split: Literal["validation", "test"] = DEFAULT_SPLIT,
    examples: int | None = DEFAULT_SLICE,
) -> TextSplit:
    """The evaluation slice of the editor: a stratified, seeded sample of ``examples`` texts of
    ``split`` (None = the whole split), the same one on the page and in the bench.

    Raises:
        ValueError: an unknown split, or ``examples < 1``.
    """
    if split not in ("validation", "test"):
        raise ValueError(f"split must be 'validation' or 'test' (got {split!r}).")
    rows = dataset.split(split)
    if examples is None:
        return rows
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise ValueError(f"examples must be a whole number of texts >= 1 (got {examples!r}).")
    return rows.subset(examples, seed=0)


def _as_mask(mask: Any, shape: tuple[int, int], name: str = "mask") -> torch.Tensor:
    """``mask`` as a bool CPU tensor of ``shape``; a ValueError that says how to fix it."""
    tensor = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
    if tuple(tensor.shape) != shape:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)} but the model has {shape[0]} layers x "
            f"{shape[1]} heads; pass a bool tensor of shape {shape} (True = keep)."
        )
    if tensor.dtype != torch.bool:
        raise ValueError(
            f"{name} has dtype {tensor.dtype}; pass a bool head mask (True = keep), e.g. "
            "mask.bool() for a 0/1 tensor."
        )
    return tensor.detach().to("cpu").clone()


_MODEL_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _model_lock(model: nn.Module) -> threading.RLock:
    """One lock per model object, shared by every evaluator of it: gate hooks that one call
    installs for a moment must never reach another call's forward."""
    with _LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.RLock()
        return lock


def _pairs(selected: torch.Tensor) -> list[tuple[int, int]]:
    """``(layer, head)`` of the True entries of a bool ``(n_layers, n_heads)`` grid, sorted."""
    return [(int(layer), int(head)) for layer, head in selected.nonzero().tolist()]


class EditorState:
    """The head mask being edited, with undo and redo.

    Args:
        present: bool ``(n_layers, n_heads)``, True where the head exists in the model being
            edited (all True for an unpruned classifier). It is the starting mask and the one
            :meth:`reset` returns to; heads False here can never be switched on.
        max_history: edits kept for undo (the oldest are dropped beyond it).

    Every edit returns the new mask (bool ``(n_layers, n_heads)``, True = keep). An edit that
    leaves the mask unchanged adds nothing to the history; any other edit clears the redo stack.

    Raises:
        ValueError: ``present`` is not a 2-D bool mask, or ``max_history < 1``.
    """

    def __init__(self, present: torch.Tensor, *, max_history: int = MAX_HISTORY) -> None:
        if not isinstance(present, torch.Tensor) or present.ndim != 2:
            raise ValueError(
                "present must be a bool tensor of shape (n_layers, n_heads), True where the "
                "head exists; pruning.heads.present_mask(model) gives it."
            )
        if max_history < 1:
            raise ValueError(f"max_history must be at least 1 (got {max_history}).")
        self._present = _as_mask(present, (present.shape[0], present.shape[1]), "present")
        self._mask = self._present.clone()
        self._undo: list[torch.Tensor] = []
        self._redo: list[torch.Tensor] = []
        self._max_history = max_history

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_layers, n_heads)``."""
        return int(self._present.shape[0]), int(self._present.shape[1])

    @property
    def present(self) -> torch.Tensor:
        """Bool ``(n_layers, n_heads)``: the heads that exist (the unedited mask)."""
        return self._present.clone()

    @property
    def mask(self) -> torch.Tensor:
        """The current mask: bool ``(n_layers, n_heads)``, True = keep."""
        return self._mask.clone()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def edited(self) -> bool:
        """True when the mask differs from the unedited one."""
        return not torch.equal(self._mask, self._present)

    def switched_off(self) -> list[tuple[int, int]]:
        """Heads of the model that the edit switched off, ``(layer, head)`` sorted."""
        return _pairs(self._present & ~self._mask)

    def removed(self) -> list[tuple[int, int]]:
        """Every head off in the mask (switched off or absent), ``(layer, head)`` sorted."""
        return _pairs(~self._mask)

    def _commit(self, mask: torch.Tensor) -> torch.Tensor:
        mask = mask & self._present
        if not torch.equal(mask, self._mask):
            self._undo.append(self._mask)
            del self._undo[: -self._max_history]
            self._redo.clear()
            self._mask = mask
        return self.mask

    def toggle(self, layer: int, head: int) -> torch.Tensor:
        """Switch one head off (or back on).

        Raises:
            ValueError: indices outside the grid, or a head that is not in the model.
        """
        n_layers, n_heads = self.shape
        for name, value, size in (("layer", layer, n_layers), ("head", head, n_heads)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be a whole number (got {value!r}).")
            if not 0 <= int(value) < size:
                raise ValueError(
                    f"{name} {value} is outside the grid of {n_layers} layers x {n_heads} heads "
                    f"(0-based: 0..{size - 1})."
                )
        layer, head = int(layer), int(head)
        if not self._present[layer, head]:
            raise ValueError(
                f"Head L{layer} H{head} is not in this model (its run removed it), so it cannot "
                "be switched on; open the original classifier and apply the run's mask to edit "
                "it."
            )
        mask = self._mask.clone()
        mask[layer, head] = not bool(mask[layer, head])
        return self._commit(mask)

    def apply_mask(self, mask: Any) -> torch.Tensor:
        """Replace the mask (e.g. by a stored run's); heads not in the model stay off.

        Raises:
            ValueError: a mask of another shape or not bool.
        """
        return self._commit(_as_mask(mask, self.shape))

    def keep_top_k(self, scores: Any, k: int) -> torch.Tensor:
        """Keep only the ``k`` highest-scoring heads of the model, switch off the rest.

        Ties are broken by position (lower layer, then lower head, is removed first, as in
        :func:`pruning.methods.base.select_lowest`); NaN scores rank lowest.

        Args:
            scores: float ``(n_layers, n_heads)``, higher = more important.
            k: heads to keep, ``0..`` the number of heads in the model.

        Raises:
            ValueError: scores of another shape, or ``k`` out of range.
        """
        tensor = scores if isinstance(scores, torch.Tensor) else torch.as_tensor(np.asarray(scores))
        if tuple(tensor.shape) != self.shape:
            raise ValueError(
                f"scores have shape {tuple(tensor.shape)} but the model has {self.shape[0]} "
                f"layers x {self.shape[1]} heads; use scores of a run of this model."
            )
        if tensor.dtype == torch.bool or not torch.is_floating_point(tensor.float()):
            raise ValueError("scores must be numbers, higher = more important.")
        available = int(self._present.sum())
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k <= available:
            raise ValueError(
                f"k must be a whole number from 0 to {available} (the heads in this model); "
                f"got {k!r}."
            )
        values = tensor.detach().to("cpu", torch.float64)
        values = torch.where(torch.isnan(values), torch.full_like(values, -torch.inf), values)
        total = self.shape[0] * self.shape[1]
        mask = select_lowest(values, total - int(k), already_removed=~self._present)
        return self._commit(mask)

    def reset(self) -> torch.Tensor:
        """Back to the unedited mask (undoable)."""
        return self._commit(self._present.clone())

    def undo(self) -> torch.Tensor:
        """Go back one edit.

        Raises:
            ValueError: when there is nothing to undo.
        """
        if not self._undo:
            raise ValueError("Nothing to undo: no edit was made yet.")
        self._redo.append(self._mask)
        self._mask = self._undo.pop()
        return self.mask

    def redo(self) -> torch.Tensor:
        """Repeat the edit last undone.

        Raises:
            ValueError: when there is nothing to redo.
        """
        if not self._redo:
            raise ValueError("Nothing to redo: undo an edit first.")
        self._undo.append(self._mask)
        self._mask = self._redo.pop()
        return self.mask


def manual_config(mask: torch.Tensor) -> dict[str, str]:
    """The ``"manual"`` method config that removes the heads where ``mask`` is False.

    ``mask`` is bool ``(n_layers, n_heads)`` on the original grid, True = keep.
    """
    return {"removed": format_heads(_pairs(~mask.bool()))}


@dataclass(frozen=True)
class HeadAttention:
    """One head's attention on one sentence under a mask.

    Attributes:
        tokens: the ``T`` tokens (special tokens included).
        matrix: float ``(T, T)``, rows = query tokens; None unless ``status`` is ``"kept"``.
        status: ``"kept"``, ``"switched_off"`` (the mask removes it: its output is zeroed, so
            what it attends to no longer matters) or ``"absent"`` (not in the model).
    """

    tokens: tuple[str, ...]
    matrix: np.ndarray | None
    status: HeadStatus


class SliceEvaluator:
    """A classifier and a tokenised evaluation slice, evaluated under any head mask quickly.

    Masks are bool ``(n_layers, n_heads)`` on the model's original grid, True = keep; heads the
    model lacks are ignored. The slice is cut into chunks of ``chunk_rows`` texts, each sorted by
    length with dynamic padding (:func:`pruning.batching.make_batches`) and served by its own
    :class:`pruning.fast_eval.FastMaskEvaluator`, whose anchor follows the last evaluated mask:
    an edit in layer ``l`` recomputes layers ``l..`` only. Results equal
    :func:`pruning.evaluate.evaluate_masks` on the same texts (``max_length`` truncation) to
    float rounding. Every call holds the model's lock (shared by all evaluators of the same model
    object), so evaluators can serve several sessions; the model is never modified outside a
    call (gates are hooks, removed afterwards).

    Args:
        model: a supported sequence classifier (heads may already be removed).
        tokenizer: its tokenizer.
        split: the labelled evaluation slice.
        batch_size, max_length: batching of the slice (the pipeline evaluates with 64, 128).
        chunk_rows: texts per chunk; progress is reported per chunk.
        cache_bytes: anchor-cache budget over all chunks (never changes results, only speed).

    Raises:
        ValueError: an empty slice or non-positive sizes.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        split: TextSplit,
        *,
        batch_size: int = 64,
        max_length: int = 128,
        chunk_rows: int = CHUNK_ROWS,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        if len(split) == 0:
            raise ValueError("The evaluation slice is empty; choose a split with labelled texts.")
        if chunk_rows < 1 or cache_bytes < 0:
            raise ValueError("chunk_rows must be at least 1 and cache_bytes at least 0.")
        self.model = model
        self.tokenizer = tokenizer
        self.split = split
        self.n_examples = len(split)
        self.shape = head_grid(model)
        self.present = present_mask(model)
        self._labels = torch.tensor(split.labels, dtype=torch.long)
        starts = list(range(0, len(split), chunk_rows))
        self._chunks = []
        for start in starts:
            rows = split.take(range(start, min(start + chunk_rows, len(split))))
            batches = make_batches(
                tokenizer,
                rows.texts,
                rows.labels,
                batch_size=batch_size,
                max_length=max_length,
                text_pairs=rows.text_pairs,
            )
            self._chunks.append(
                FastMaskEvaluator(model, batches, cache_bytes=cache_bytes // len(starts))
            )
        self._lock = _model_lock(model)
        self._reference: Metrics | None = None
        self._metrics: OrderedDict[bytes, Metrics] = OrderedDict()
        self._captures: OrderedDict[tuple[str, bytes], SentenceCapture] = OrderedDict()
        self._predictions: OrderedDict[tuple[str, bytes], np.ndarray] = OrderedDict()

    @property
    def n_chunks(self) -> int:
        return len(self._chunks)

    def _mask(self, mask: Any | None) -> torch.Tensor:
        if mask is None:
            return self.present.clone()
        return _as_mask(mask, self.shape) & self.present

    def _gated(self, mask: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
        """Gate hooks for ``mask`` (checked) while the block runs; none for the unedited model."""
        if torch.equal(mask, self.present):
            return contextlib.nullcontext()
        return apply_mask(self.model, mask)

    def reference(self, *, on_progress: Callable[[int, int], None] | None = None) -> Metrics:
        """Metrics of the unedited model on the slice (computed on the first call only).

        Args:
            on_progress: as for :meth:`evaluate`.
        """
        with self._lock:
            if self._reference is None:
                self._reference = self.evaluate(None, on_progress=on_progress)
            elif on_progress is not None:
                on_progress(self.n_examples, self.n_examples)
            return self._reference

    def remembers(self, mask: Any | None) -> bool:
        """Whether :meth:`evaluate` answers ``mask`` from memory (no forward)."""
        key = self._mask(mask).numpy().tobytes()
        with self._lock:
            return key in self._metrics

    def evaluate(
        self, mask: Any | None, *, on_progress: Callable[[int, int], None] | None = None
    ) -> Metrics:
        """Accuracy, MCC, macro-F1 and loss on the slice with the heads where ``mask`` is False
        switched off (None = the unedited model).

        Args:
            on_progress: ``on_progress(done, total)`` in texts, after each chunk.

        Raises:
            ValueError: a mask of another shape or not bool.
        """
        checked = self._mask(mask)
        key = checked.numpy().tobytes()
        with self._lock:
            if key in self._metrics:
                self._metrics.move_to_end(key)
                if on_progress is not None:
                    on_progress(self.n_examples, self.n_examples)
                return self._metrics[key]
            parts = []
            done = 0
            for chunk in self._chunks:
                # The next edits differ from this mask in a head or two: make it the anchor.
                chunk.set_anchor(checked)
                logits = chunk.logits(checked)
                parts.append(logits)
                done += logits.shape[0]
                if on_progress is not None:
                    on_progress(done, self.n_examples)
            metrics = compute_metrics(torch.cat(parts), self._labels)
            self._metrics[key] = metrics
            if len(self._metrics) > _MEMO_MASKS:
                self._metrics.popitem(last=False)
            return metrics

    def predict(self, sentences: Sequence[str], mask: Any | None = None) -> np.ndarray:
        """Class probabilities, float64 ``(len(sentences), n_classes)``, under ``mask``.

        Sentences are truncated to the model's maximum input length. Recent answers are
        remembered per sentence and mask, so the unedited model's and an undone edit's come back
        without a forward.

        Raises:
            ValueError: no sentences, or a bad mask.
        """
        texts = [str(s) for s in sentences]
        if not texts:
            raise ValueError("Give at least one sentence to predict.")
        checked = self._mask(mask)
        code = checked.numpy().tobytes()
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if (t, code) not in self._predictions))
            if missing:
                with self._gated(checked):
                    computed = BatchedPredictor(self.model, self.tokenizer)(missing)
                for text, row in zip(missing, computed, strict=True):
                    self._predictions[(text, code)] = row
            rows = []
            for text in texts:
                self._predictions.move_to_end((text, code))
                rows.append(self._predictions[(text, code)])
            while len(self._predictions) > _MEMO_PREDICTIONS:
                self._predictions.popitem(last=False)
            return np.stack(rows)

    def capture(self, text: str, mask: Any | None = None) -> SentenceCapture:
        """Every head's attention on ``text`` under ``mask`` (removed heads are still captured
        when present in the model; absent heads are NaN). Recent captures are remembered."""
        checked = self._mask(mask)
        key = (text, checked.numpy().tobytes())
        with self._lock:
            if key in self._captures:
                self._captures.move_to_end(key)
                return self._captures[key]
            max_length = model_max_length(self.model, self.tokenizer)
            with self._gated(checked):
                (captured,) = capture_sentences(
                    self.model, self.tokenizer, [text], max_length=max_length, with_qk=False
                )
            self._captures[key] = captured
            if len(self._captures) > _MEMO_CAPTURES:
                self._captures.popitem(last=False)
            return captured

    def head_attention(
        self, text: str, layer: int, head: int, mask: Any | None = None
    ) -> HeadAttention:
        """Head ``(layer, head)``'s attention on ``text`` under ``mask`` (None = unedited).

        Raises:
            ValueError: an empty text, indices outside the grid or a bad mask.
        """
        n_layers, n_heads = self.shape
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ValueError(
                f"Head L{layer} H{head} is outside the grid of {n_layers} layers x {n_heads} heads."
            )
        checked = self._mask(mask)
        captured = self.capture(text, checked)
        if not self.present[layer, head]:
            return HeadAttention(captured.tokens, None, "absent")
        if not checked[layer, head]:
            return HeadAttention(captured.tokens, None, "switched_off")
        matrix = captured.attentions[layer, head].numpy().astype(np.float64)
        return HeadAttention(captured.tokens, matrix, "kept")

    def model_copy(self, mask: Any | None = None) -> nn.Module:
        """A separate copy of the model with the heads off in ``mask`` removed for real (for
        work in another thread, such as LIME / SHAP, that must not see this evaluator's hooks).
        """
        checked = self._mask(mask)
        with self._lock:
            return remove_heads(self.model, checked)

    def forget(self) -> None:
        """Drop the remembered metrics, predictions and captures (not the reference metrics)."""
        with self._lock:
            self._metrics.clear()
            self._captures.clear()
            self._predictions.clear()


def edited_label(mask: torch.Tensor, present: torch.Tensor) -> str:
    """How the UI names an edited model, e.g. ``"edited (3 heads off)"``."""
    count = int((present & ~mask).sum())
    return f"edited ({count} head{'' if count == 1 else 's'} off)"


def explain_edit(
    evaluator: SliceEvaluator,
    ref: ModelRef,
    text: str,
    mask: Any,
    *,
    method: ExplainMethod,
    samples: int,
    seed: int = 0,
    label_names: tuple[str, ...] = (),
    cache: ExplanationCache | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Attribution]:
    """LIME or SHAP word values of ``text`` on the unedited model (``ref``) and the edited one.

    Both explain the class the unedited model predicts, so their values compare word by word.
    The unedited model's attribution is looked up in and stored to ``cache`` under the same keys
    :func:`pruning.explain.explain_models` uses (the Explanations page finds it too); the edited
    model is no stored model, so its attribution is computed each time (the page keeps it for
    the session). Each model is a separate copy with the heads removed for real
    (:meth:`SliceEvaluator.model_copy`), so the work can run in a background thread while the
    page keeps evaluating.

    Returns:
        ``[unedited, edited]``.

    Raises:
        ValueError: an empty text, bad settings or a bad mask.
        pruning.jobs.JobCancelled: when ``should_stop`` fired.
    """
    from pruning.explain import explain, explanation_key
    from pruning.run_models import ref_fingerprint

    checked = evaluator._mask(mask)

    def report(share: float, offset: float) -> Callable[[float, str], None]:
        def inner(fraction: float, message: str) -> None:
            if on_progress is not None:
                on_progress(offset + share * fraction, message)

        return inner

    settings: dict[str, Any] = {
        "method": method,
        "samples": samples,
        "seed": seed,
        "label_names": label_names,
        "should_stop": should_stop,
    }
    own = explanation_key(ref, text, method, samples, seed, None)
    unedited = None if cache is None else cache.get(own)
    if unedited is None:
        predictor = BatchedPredictor(evaluator.model_copy(None), evaluator.tokenizer)
        unedited = explain(
            predictor,
            text,
            model_label=ref.label,
            model_key=ref_fingerprint(ref),
            on_progress=report(0.5, 0.0),
            **settings,
        )
        if cache is not None:
            cache.put(own, unedited)
            cache.put(explanation_key(ref, text, method, samples, seed, unedited.target), unedited)
    edited_key = f"{ref_fingerprint(ref)}+off:{format_heads(_pairs(evaluator.present & ~checked))}"
    edited = explain(
        BatchedPredictor(evaluator.model_copy(checked), evaluator.tokenizer),
        text,
        target=unedited.target,
        model_label=edited_label(checked, evaluator.present),
        model_key=edited_key,
        on_progress=report(0.5, 0.5),
        **settings,
    )
    return [unedited, edited]


@dataclass(frozen=True)
class EditCycleTimes:
    """How long an edit takes to show, over random toggles of one evaluator.

    Attributes:
        n_examples: texts in the slice.
        reference_seconds: the first (unedited) evaluation, building the caches.
        metrics_seconds: per toggle, edit to updated metrics on the slice.
        update_seconds: per toggle, edit to updated metrics, sentence predictions and head
            attention (equal to ``metrics_seconds`` when no sentence was given).
        layers: the layer of each toggled head (lower layers recompute more).
    """

    n_examples: int
    reference_seconds: float
    metrics_seconds: list[float]
    update_seconds: list[float]
    layers: list[int]
    median_metrics: float = field(init=False)
    p90_metrics: float = field(init=False)
    median_update: float = field(init=False)
    p90_update: float = field(init=False)

    def __post_init__(self) -> None:
        for name, values in (("metrics", self.metrics_seconds), ("update", self.update_seconds)):
            object.__setattr__(self, f"median_{name}", statistics.median(values))
            object.__setattr__(self, f"p90_{name}", percentile(values, 90))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (linear interpolation between closest ranks)."""
    if not values:
        raise ValueError("No values to take a percentile of.")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _toggled(mask: torch.Tensor, pair: tuple[int, int]) -> bytes:
    """The bytes of ``mask`` with head ``pair`` flipped (a memo key)."""
    flipped = mask.clone()
    flipped[pair] = not bool(flipped[pair])
    return flipped.numpy().tobytes()


def time_edit_cycles(
    evaluator: SliceEvaluator,
    *,
    toggles: int = 20,
    seed: int = 0,
    sentences: Sequence[str] = (),
    head: tuple[int, int] = (0, 0),
) -> EditCycleTimes:
    """Time ``toggles`` edits of a random walk over the head grid, as the editor makes them.

    Each step switches one random head of the model (on or off) such that the new mask was
    never evaluated before (so no remembered result is reused), then evaluates the slice; with
    ``sentences`` it also predicts them and captures ``head``'s attention on the first one, as
    the page does after each edit. The evaluator's remembered results are dropped first.

    Raises:
        ValueError: ``toggles < 1``.
    """
    if toggles < 1:
        raise ValueError(f"toggles must be at least 1 (got {toggles}).")
    heads = _pairs(evaluator.present)
    if not heads:
        raise ValueError("The model has no attention heads left to toggle.")
    evaluator.forget()
    rng = random.Random(seed)
    state = EditorState(evaluator.present)
    seen = {state.mask.numpy().tobytes()}
    started = time.perf_counter()
    evaluator.reference()
    reference_seconds = time.perf_counter() - started
    texts = [str(s) for s in sentences]
    metrics_times: list[float] = []
    update_times: list[float] = []
    layers: list[int] = []
    for _ in range(toggles):
        fresh = [pair for pair in heads if _toggled(state.mask, pair) not in seen]
        if not fresh:  # every neighbour was evaluated (tiny grids only): start remembering anew
            evaluator.forget()
            seen = {state.mask.numpy().tobytes()}
            fresh = heads
        layer, index = rng.choice(fresh)
        started = time.perf_counter()
        mask = state.toggle(layer, index)
        evaluator.evaluate(mask)
        metrics_done = time.perf_counter()
        if texts:
            evaluator.predict(texts, mask)
            evaluator.head_attention(texts[0], head[0], head[1], mask)
        finished = time.perf_counter()
        seen.add(mask.numpy().tobytes())
        metrics_times.append(metrics_done - started)
        update_times.append(finished - started)
        layers.append(layer)
    return EditCycleTimes(
        n_examples=evaluator.n_examples,
        reference_seconds=reference_seconds,
        metrics_seconds=metrics_times,
        update_seconds=update_times,
        layers=layers,
    )
