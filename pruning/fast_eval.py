"""Score thousands of head masks on one labelled evaluation set: the engine behind A* search.

Head masks are bool ``(n_layers, n_heads)`` tensors on the model's original grid, **True = keep**;
entries for heads already removed from the model are ignored. A search such as A* evaluates long
runs of candidates that each differ from a current *anchor* mask (the heads pruned so far) in one
head, or in one head index across all layers. :class:`FastMaskEvaluator` exploits that:

1. The evaluation set is tokenised once, sorted by length and dynamically padded (the batches of
   :func:`pruning.data.make_batches` with ``bucket=True``) and kept on the model's device.
2. **Anchor cache.** For every batch it keeps, under the anchor mask, the hidden states entering
   each layer and each layer's ungated per-head attention output (the *context*, which does not
   depend on any mask of that layer). A candidate whose first difference from the anchor is in
   layer ``l`` starts from the cached input of layer ``l``, reuses its cached context (only the
   gating, output projection and feed-forward block of layer ``l`` are recomputed) and runs layers
   ``l + 1 ..`` as usual. A candidate equal to the anchor costs nothing.
3. **Last layer at position 0 only.** Every supported classification head reads position 0 of the
   last hidden state, so the last layer computes keys and values for every position but queries,
   attention, projection, LayerNorms and feed-forward for position 0 only (per family: see
   :mod:`pruning.fast_layers`).
4. **Stacked candidates** (GPU): candidates are sorted by their first differing layer and groups
   of ``masks_per_forward`` share one forward, each copy of the batch gated by its own mask.
5. **Mixed precision** (GPU): bf16 autocast by default on CUDA, off on CPU.

Caching, precisely: the cache is built lazily, by one pass on the first evaluation after
:meth:`FastMaskEvaluator.set_anchor` (or after construction, where the anchor is "keep every
head"). Moving the anchor invalidates only what it changes: if the new anchor first differs from
the old one in layer ``l``, the cached inputs and contexts of layers ``0..l`` stay valid and the
refresh pass starts at layer ``l``. The memory is bounded by ``cache_bytes``: batches are cached in
order while they fit (hidden states first, contexts for as many of them as still fit); a batch
left out is recomputed from its embeddings for every candidate, so results never depend on the
cap, only speed does. Sizes, fp32: ``n_layers x rows x tokens x hidden x 4`` bytes for the states
and about the same again for the contexts; BERT-base on 1,000 texts of 64 tokens needs ~2.4 GB
each. The cache reads the model's weights when it is built: do not modify the model while an
evaluator is in use (or call :meth:`FastMaskEvaluator.clear_cache` after doing so).

:class:`NaiveMaskEvaluator` is the reference implementation with the same interface: one full
forward per candidate through the Hugging Face model, every text padded to ``max_length``, heads
gated with :func:`pruning.heads.apply_mask`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pruning.data import Batch
from pruning.evaluate import compute_metrics, eval_mode, model_device
from pruning.fast_layers import EncoderPieces, encoder_pieces
from pruning.heads import apply_mask, check_mask, head_grid, present_mask
from pruning.mask_eval import auto_masks_per_forward
from pruning.oom import OomHalving

log = logging.getLogger(__name__)

SCORE_METRICS = ("accuracy", "mcc", "f1", "macro_f1")
# Anchor-cache budget when none is given: 2 GiB in host memory, a quarter of a GPU's memory.
DEFAULT_CACHE_BYTES = 2 << 30
GPU_CACHE_SHARE = 0.25


def _check_metric(metric: str) -> str:
    if metric not in SCORE_METRICS:
        raise ValueError(
            f"Unknown metric {metric!r}; use 'accuracy', 'mcc' or 'f1' (macro-F1). Scores are "
            "reported in points (x 100), higher is better."
        )
    return metric


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "mps" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def checked_bool_mask(model: nn.Module, mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Shape and dtype checked, on CPU, with removed heads cleared: bool ``(L, H)``.

    Raises:
        ValueError: a wrong shape or a non-bool dtype (the message says how to fix it).
    """
    checked = check_mask(model, mask, name=name)
    if checked.dtype != torch.bool:
        raise ValueError(
            f"{name} has dtype {checked.dtype}; pass a bool head mask (True = keep), e.g. "
            "mask.bool() for a 0/1 tensor."
        )
    return checked.to("cpu") & present_mask(model)


class _MaskScorer:
    """What both evaluators share: validation, metric in points, counting and callbacks.

    Subclasses set ``self.model``, ``self._labels`` (``(N,)`` in original order) and implement
    :meth:`_logits_many`.
    """

    model: nn.Module
    metric: str
    n_evaluations: int
    n_layer_passes: int
    on_evaluation: Callable[[int], None] | None
    _labels: torch.Tensor

    def _check_mask(self, mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
        return checked_bool_mask(self.model, mask, name)

    def _logits_many(self, masks: list[torch.Tensor]) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(position in masks, logits (N, k) float32 CPU in original order)``."""
        raise NotImplementedError

    def _counted(self, masks: list[torch.Tensor]) -> Iterator[tuple[int, torch.Tensor]]:
        for position, logits in self._logits_many(masks):
            self.n_evaluations += 1
            if self.on_evaluation is not None:
                self.on_evaluation(self.n_evaluations)
            yield position, logits

    def _score(self, logits: torch.Tensor) -> float:
        return 100.0 * compute_metrics(logits, self._labels).get(self.metric)

    def __call__(self, mask: torch.Tensor) -> float:
        """The metric, in points (x 100), with the heads where ``mask`` is False switched off."""
        return self.evaluate_many([mask])[0]

    def evaluate_many(self, masks: Sequence[torch.Tensor]) -> list[float]:
        """The metric in points for each bool ``(n_layers, n_heads)`` mask, in the order given.

        ``on_evaluation`` is called after each mask (in evaluation order, which may differ from
        the order given) with the running count of evaluations.

        Raises:
            ValueError: on a mask of the wrong shape or dtype.
        """
        checked = [self._check_mask(mask, f"masks[{i}]") for i, mask in enumerate(masks)]
        scores = [0.0] * len(checked)
        for position, logits in self._counted(checked):
            scores[position] = self._score(logits)
        return scores

    def logits(self, mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, k)`` float32 on CPU, rows in the evaluation set's original order."""
        checked = [self._check_mask(mask)]
        return next(iter(self._counted(checked)))[1]

    def predictions(self, mask: torch.Tensor) -> torch.Tensor:
        """Predicted class ids, int64 ``(N,)``, rows in the evaluation set's original order."""
        return self.logits(mask).argmax(dim=1)

    def set_anchor(self, mask: torch.Tensor) -> None:
        """Hint that later candidates differ from ``mask`` in a few heads (validated only here)."""
        self._check_mask(mask, "anchor")


class NaiveMaskEvaluator(_MaskScorer):
    """Reference evaluator: a full forward of the Hugging Face model per candidate mask.

    Texts are tokenised once, padded to ``max_length`` and batched in their given order; each
    candidate is applied with :func:`pruning.heads.apply_mask` (gate hooks that are removed
    afterwards). Same interface as :class:`FastMaskEvaluator`; :meth:`set_anchor` only validates.

    Args:
        model: a supported classifier (heads may already be removed; masks use the original grid).
        tokenizer: its Hugging Face tokenizer.
        texts, labels: the evaluation set; labels are class ids ``0..k-1``.
        metric: ``"accuracy"``, ``"mcc"`` or ``"f1"`` (macro-F1).
        max_length: every row is truncated and padded to this many tokens.
        batch_size: rows per forward.
        text_pairs: second texts for sentence-pair tasks, or None.
        on_evaluation: called after each evaluated mask with the running count.

    Attributes:
        n_evaluations: masks evaluated so far.
        n_layer_passes: encoder layers computed, summed over batches and masks.

    Raises:
        ValueError: on empty or mismatched texts / labels, or non-positive sizes.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        texts: Sequence[str],
        labels: Sequence[int],
        *,
        metric: str = "accuracy",
        max_length: int = 128,
        batch_size: int = 32,
        text_pairs: Sequence[str] | None = None,
        on_evaluation: Callable[[int], None] | None = None,
    ) -> None:
        if isinstance(texts, str) or len(texts) == 0:
            raise ValueError("texts must be a non-empty sequence of strings.")
        if len(labels) != len(texts):
            raise ValueError(f"Got {len(texts)} texts but {len(labels)} labels; give one per text.")
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(f"Got {len(texts)} texts but {len(text_pairs)} text pairs.")
        if batch_size < 1 or max_length < 2:
            raise ValueError("batch_size must be >= 1 and max_length >= 2.")
        self.model = model
        self.metric = _check_metric(metric)
        self.on_evaluation = on_evaluation
        self.n_evaluations = 0
        self.n_layer_passes = 0
        self._n_layers = head_grid(model)[0]
        self._labels = torch.as_tensor(list(labels), dtype=torch.long)
        encoded = tokenizer(
            list(texts),
            list(text_pairs) if text_pairs is not None else None,
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        names = ["input_ids", "attention_mask"]
        if "token_type_ids" in encoded and _accepts(model, "token_type_ids"):
            names.append("token_type_ids")
        device = model_device(model)
        self._batches = [
            {name: encoded[name][start : start + batch_size].to(device) for name in names}
            for start in range(0, len(texts), batch_size)
        ]

    def _logits_many(self, masks: list[torch.Tensor]) -> Iterator[tuple[int, torch.Tensor]]:
        for position, mask in enumerate(masks):
            with eval_mode(self.model), torch.inference_mode(), apply_mask(self.model, mask):
                outputs = [self.model(**inputs).logits.float() for inputs in self._batches]
            self.n_layer_passes += len(self._batches) * self._n_layers
            yield position, torch.cat(outputs).cpu()


def _accepts(model: nn.Module, argument: str) -> bool:
    return argument in inspect.signature(model.forward).parameters


@dataclass
class _DeviceBatch:
    """One evaluation batch on the model's device, with its cached anchor states.

    ``states[l]``: ``(B, T, H)`` hidden states entering layer ``l`` under the anchor mask.
    ``contexts[l]``: ``(B, T, h_l * d)`` ungated head outputs of layer ``l`` (for the last layer
    ``(B, 1, h * d)``, position 0 only). ``logits``: ``(B, k)`` under the anchor. Entries are None
    until computed or when the cache budget leaves them out (``keep_states`` / ``keep_contexts``).
    """

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor | None
    key_mask: torch.Tensor | None
    keep_states: bool = False
    keep_contexts: bool = False
    states: list[torch.Tensor | None] = field(default_factory=list)
    contexts: list[torch.Tensor | None] = field(default_factory=list)
    logits: torch.Tensor | None = None
    repeated_masks: dict[int, torch.Tensor | None] = field(default_factory=dict)

    def key_mask_for(self, copies: int) -> torch.Tensor | None:
        """The key mask repeated for ``copies`` stacked copies: bool ``(copies * B, 1, 1, T)``."""
        if self.key_mask is None or copies == 1:
            return self.key_mask
        if copies not in self.repeated_masks:
            self.repeated_masks[copies] = self.key_mask.repeat(copies, 1, 1, 1)
        return self.repeated_masks[copies]


def _first_difference(mask: torch.Tensor, anchor: torch.Tensor) -> int | None:
    """First layer where two bool ``(L, H)`` masks differ, or None when they are equal."""
    differs = (mask != anchor).any(dim=1).nonzero()
    return int(differs[0]) if differs.numel() else None


def _restore_order(batches: Sequence[Batch]) -> torch.Tensor:
    """Permutation putting concatenated batch rows in original order; rows must be 0..N-1."""
    positions = torch.cat([batch.indices.to("cpu", torch.long) for batch in batches])
    if not torch.equal(torch.sort(positions).values, torch.arange(positions.numel())):
        raise ValueError(
            "Batch.indices must cover the evaluation rows 0..N-1 exactly once; build the batches "
            "with one pruning.data.make_batches call and pass every batch once."
        )
    return torch.argsort(positions)


class FastMaskEvaluator(_MaskScorer):
    """Evaluate many head masks against one labelled set, reusing work across similar masks.

    See the module docstring for what is cached, when and for how much memory. Results equal a
    full forward of the model with the mask applied by gating, whatever the anchor, the cache
    budget or the stacking: in fp32 the logits agree to float rounding (~1e-6 relative), so
    predictions and scores agree exactly unless two classes tie to within that rounding.

    Args:
        model: a supported sequence classifier (BERT, RoBERTa, ELECTRA, DistilBERT); heads may
            already be removed (masks still use the original grid). Never modified.
        batches: labelled batches from :func:`pruning.data.make_batches` (``bucket=True`` for
            length-sorted dynamic padding), right-padded; moved to the model's device once.
        metric: ``"accuracy"``, ``"mcc"`` or ``"f1"`` (macro-F1); reported in points (x 100).
        amp: bf16 autocast; None = on for CUDA, off elsewhere.
        masks_per_forward: candidates stacked in one forward; None = 1 on CPU, up to a token
            budget on accelerators; halved (and the group retried) when the device runs out of
            memory (:mod:`pruning.oom`).
        on_evaluation: called after each evaluated mask with the running count (progress,
            cancellation polling).
        cache_bytes: memory budget of the anchor cache on the model's device; None = 2 GiB on
            CPU / MPS, a quarter of the GPU's memory on CUDA; 0 disables caching.

    Attributes:
        n_evaluations: masks evaluated so far (scores, logits and predictions all count).
        n_layer_passes: encoder layers computed, summed over batches and stacked masks (a last
            layer computed at position 0 only counts as one); one full forward of the set is
            ``len(batches) * n_layers``.

    Raises:
        ValueError: on no batches, unlabelled batches, batches whose row 0 is padding, an unknown
            metric or ``masks_per_forward < 1``.
        UnsupportedArchitectureError: for models outside the supported families.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: list[Batch],
        *,
        metric: str = "accuracy",
        amp: bool | None = None,
        masks_per_forward: int | None = None,
        on_evaluation: Callable[[int], None] | None = None,
        cache_bytes: int | None = None,
    ) -> None:
        if len(batches) == 0:
            raise ValueError("No batches to evaluate; build them with pruning.data.make_batches.")
        if any(batch.labels is None for batch in batches):
            raise ValueError("Every batch needs labels; pass labels to make_batches.")
        if masks_per_forward is not None and masks_per_forward < 1:
            raise ValueError(f"masks_per_forward must be >= 1 (got {masks_per_forward}).")
        if cache_bytes is not None and cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0 or None (got {cache_bytes}).")
        for batch in batches:
            if not bool(batch.attention_mask[:, 0].all()):
                raise ValueError(
                    "A batch has padding at position 0, where the classifier reads its input; "
                    "pad on the right (tokenizer.padding_side = 'right')."
                )
        self.model = model
        self.metric = _check_metric(metric)
        self.on_evaluation = on_evaluation
        self.n_evaluations = 0
        self.n_layer_passes = 0
        self._pieces: EncoderPieces = encoder_pieces(model)
        self._device = model_device(model)
        self._amp = self._device.type == "cuda" if amp is None else bool(amp)
        self._source = batches
        self._per_forward = masks_per_forward
        self._budget = cache_bytes
        order = _restore_order(batches)
        self._order = order
        labels = [batch.labels for batch in batches if batch.labels is not None]
        self._labels = torch.cat([label.to("cpu", torch.long) for label in labels])[order]
        self._anchor = present_mask(model)
        self._stale_from: int | None = 0
        self._batches: list[_DeviceBatch] | None = None
        self._halving = OomHalving("evaluating head masks")

    # -------------------------------------------------------------------------------------------
    # public

    @property
    def anchor(self) -> torch.Tensor:
        """The current anchor: bool ``(n_layers, n_heads)``, True = keep (removed heads False)."""
        return self._anchor.clone()

    @property
    def cached_batches(self) -> int:
        """Batches whose anchor hidden states fit the cache budget (the rest are recomputed)."""
        return sum(batch.keep_states for batch in self._device_batches())

    def set_anchor(self, mask: torch.Tensor) -> None:
        """Make ``mask`` the anchor that later candidates differ from.

        Nothing is computed here. Cached states of the layers up to the first layer where the new
        anchor differs from the old one stay valid; the rest is refreshed by one pass on the
        next evaluation.

        Raises:
            ValueError: on a mask of the wrong shape or dtype.
        """
        anchor = self._check_mask(mask, "anchor")
        first = _first_difference(anchor, self._anchor)
        if first is None:
            return
        self._anchor = anchor
        self._stale_from = first if self._stale_from is None else min(first, self._stale_from)

    def clear_cache(self) -> None:
        """Drop every cached state (frees the memory; the next evaluation rebuilds the cache)."""
        for batch in self._batches or ():
            batch.states = [None] * len(self._pieces.layers)
            batch.contexts = [None] * len(self._pieces.layers)
            batch.logits = None
        self._stale_from = 0

    # -------------------------------------------------------------------------------------------
    # engine

    def _device_batches(self) -> list[_DeviceBatch]:
        """The batches on the device, with the cache budget planned (built on first use)."""
        if self._batches is None:
            self._batches = self._prepare()
        return self._batches

    def _prepare(self) -> list[_DeviceBatch]:
        n_layers = len(self._pieces.layers)
        accepts_types = self._pieces.family != "distilbert"
        prepared = []
        for batch in self._source:
            moved = batch.to(self._device)
            padded = not bool(moved.attention_mask.bool().all())
            key_mask = moved.attention_mask.bool()[:, None, None, :] if padded else None
            prepared.append(
                _DeviceBatch(
                    input_ids=moved.input_ids,
                    token_type_ids=moved.token_type_ids if accepts_types else None,
                    key_mask=key_mask,
                    states=[None] * n_layers,
                    contexts=[None] * n_layers,
                )
            )
        self._plan_cache(prepared)
        return prepared

    def _cache_budget(self) -> int:
        if self._budget is not None:
            return self._budget
        if self._device.type == "cuda":
            total = torch.cuda.get_device_properties(self._device).total_memory
            return int(total * GPU_CACHE_SHARE)
        return DEFAULT_CACHE_BYTES

    def _plan_cache(self, prepared: list[_DeviceBatch]) -> None:
        """Choose which batches keep states (first) and contexts (then) within the budget."""
        budget = self._cache_budget()
        hidden = self._pieces.layers[0].output.out_features
        widths = [layer.context_width for layer in self._pieces.layers[:-1]]
        used = 0
        for batch in prepared:
            rows, tokens = batch.input_ids.shape
            size = len(self._pieces.layers) * rows * tokens * hidden * 4
            if used + size <= budget:
                batch.keep_states = True
                used += size
        for batch in prepared:
            rows, tokens = batch.input_ids.shape
            size = sum(widths) * rows * tokens * 4
            if batch.keep_states and used + size <= budget:
                batch.keep_contexts = True
                used += size
        kept = sum(batch.keep_states for batch in prepared)
        if kept < len(prepared):
            log.info(
                "anchor cache: %d of %d batches fit %.2f GB; the rest is recomputed per mask",
                kept,
                len(prepared),
                budget / 1e9,
            )

    def _layer_scales(self, gates: torch.Tensor) -> list[torch.Tensor | None]:
        """Per-layer column gates ``(M, h_l * d)`` on the device.

        ``gates`` is float ``(M, L, H)`` on CPU; a layer where every copy keeps every present
        head gets None (no multiplication). Every layer gets its gates, also those before a
        candidate's first difference: a batch left out of the cache runs from layer 0.
        """
        scales: list[torch.Tensor | None] = []
        for index, layer in enumerate(self._pieces.layers):
            kept = list(layer.kept)
            if not kept or bool(gates[:, index, kept].all()):
                scales.append(None)
                continue
            columns = gates[:, index, kept].repeat_interleave(layer.head_size, dim=1)
            scales.append(columns.to(self._device, non_blocking=True))
        return scales

    def _forward(
        self,
        batch: _DeviceBatch,
        scales: list[torch.Tensor | None],
        copies: int,
        start: int,
        record: bool = False,
    ) -> torch.Tensor:
        """Logits ``(copies * B, k)`` of one batch, running layers ``start..`` from the cache.

        ``start`` is the first layer where the gated copies may differ from the anchor
        (``n_layers`` when none does); it falls back to 0 when the batch's states are not cached.
        With ``record`` (one copy, the anchor's gates) the states, contexts and logits computed
        are stored in the cache.
        """
        layers = self._pieces.layers
        last = len(layers) - 1
        if start > last and batch.logits is not None:
            return batch.logits.repeat(copies, 1)
        start = min(start, last)
        state = batch.states[start] if batch.keep_states else None
        if state is None:
            start = 0
            hidden = self._pieces.embed(batch.input_ids, batch.token_type_ids)
        else:
            hidden = state
        from_cache = state is not None
        if copies > 1:
            hidden = hidden.repeat(copies, 1, 1)
        key_mask = batch.key_mask_for(copies)
        keep = record and batch.keep_states
        for index in range(start, last + 1):
            is_last = index == last
            if keep:
                batch.states[index] = hidden
            context = batch.contexts[index] if (from_cache and index == start) else None
            if context is None:
                context = layers[index].attend(hidden, key_mask, first_only=is_last)
                if keep and (is_last or batch.keep_contexts):
                    batch.contexts[index] = context
            elif copies > 1:
                context = context.repeat(copies, 1, 1)
            residual = hidden[:, :1] if is_last else hidden
            hidden = layers[index].finish(residual, context, scales[index])
            self.n_layer_passes += copies
        logits = self._pieces.classify(hidden)
        if record:
            batch.logits = logits
        return logits

    def _engine_mode(self) -> contextlib.ExitStack:
        """Eval mode, inference mode and (if enabled) autocast, entered together."""
        stack = contextlib.ExitStack()
        stack.enter_context(eval_mode(self.model))
        stack.enter_context(torch.inference_mode())
        stack.enter_context(_autocast(self._device, self._amp))
        return stack

    def _refresh_anchor(self) -> None:
        """Bring the cache up to date with the anchor: one pass from the first stale layer."""
        if self._stale_from is None:
            return
        start = self._stale_from
        scales = self._layer_scales(self._anchor[None].to(torch.float32))
        for batch in self._device_batches():
            batch.logits = None
            if batch.keep_states:
                self._forward(batch, scales, 1, start, record=True)
        self._stale_from = None

    def _group_logits(self, masks: list[torch.Tensor], start: int) -> torch.Tensor:
        """Logits ``(M, N, k)`` float32 on CPU in original row order, ``M`` masks in one forward."""
        scales = self._layer_scales(torch.stack(masks).to(torch.float32))
        copies = len(masks)
        chunks = []
        for batch in self._device_batches():
            logits = self._forward(batch, scales, copies, start).float()
            chunks.append(logits.reshape(copies, -1, logits.shape[-1]))
        return torch.cat(chunks, dim=1).cpu()[:, self._order]

    def _logits_many(self, masks: list[torch.Tensor]) -> Iterator[tuple[int, torch.Tensor]]:
        if not masks:
            return
        with self._engine_mode():
            self._refresh_anchor()
        n_layers = len(self._pieces.layers)
        firsts = [_first_difference(mask, self._anchor) for mask in masks]
        starts = [n_layers if first is None else first for first in firsts]
        # Deepest first difference first, so that stacked groups share their start layer.
        order = sorted(range(len(masks)), key=lambda i: -starts[i])
        per_forward = self._per_forward or auto_masks_per_forward(
            self._device, self._source, len(masks)
        )
        begin = 0
        while begin < len(order):

            def group_logits(size: int, begin: int = begin) -> tuple[list[int], torch.Tensor]:
                group = order[begin : begin + size]
                with self._engine_mode():
                    logits = self._group_logits(
                        [masks[i] for i in group], min(starts[i] for i in group)
                    )
                return group, logits

            # Out of device memory: fewer masks per forward, kept for the later calls.
            group, per_mask = self._halving.run(group_logits, per_forward)
            begin += len(group)
            # A plain tensor for the caller (results of inference mode cannot be edited in place).
            per_mask = per_mask.clone()
            for slot, position in enumerate(group):
                yield position, per_mask[slot]
