"""The stacked-gates engine behind :func:`pruning.evaluate.evaluate_masks`.

Many candidate head masks (bool ``(n_layers, n_heads)``, True = keep) are evaluated over the same
batches by gating heads with hooks on the attention output projection (the mechanism of
:func:`pruning.heads.apply_mask`). On a GPU several masks share one forward: the batch is repeated
``M`` times along the rows and copy ``m`` is gated by mask ``m``. This module holds the pieces:
the hooks (:class:`StackedGates`), mask validation (:func:`stack_masks`), the group size
(:func:`auto_masks_per_forward`) and row repetition (:func:`repeat_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pruning.adapters import encoder_layers, get_adapter, get_submodule
from pruning.data import Batch
from pruning.heads import check_mask, head_dim, head_grid, kept_heads

# Rows x tokens per forward that the mask-stacking engine aims for on a GPU: large enough to keep
# an H100 busy with small encoders, small enough for BERT-base activations to fit comfortably.
STACK_TOKEN_BUDGET = 1 << 18


class StackedGates:
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

    def __enter__(self) -> StackedGates:
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


def stack_masks(model: nn.Module, masks: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Validate masks against the model's grid; returns float ``(M, n_layers, n_heads)``.

    Raises:
        ValueError: on a single 2-D mask, a tensor that is not ``(M, n_layers, n_heads)``, or a
            mask of the wrong shape (see :func:`pruning.heads.check_mask`).
    """
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


def auto_masks_per_forward(device: torch.device, batches: Sequence[Batch], count: int) -> int:
    """1 on CPU (compute-bound); on accelerators as many masks as fit the token budget."""
    if device.type == "cpu":
        return 1
    largest = max(int(batch.input_ids.numel()) for batch in batches)
    return max(1, min(count, STACK_TOKEN_BUDGET // max(largest, 1)))


def repeat_rows(inputs: dict[str, torch.Tensor], copies: int) -> dict[str, torch.Tensor]:
    """Stack ``copies`` copies of a batch along the rows: ``(B, T)`` -> ``(copies * B, T)``."""
    if copies == 1:
        return inputs
    return {name: t.repeat(copies, *([1] * (t.ndim - 1))) for name, t in inputs.items()}
