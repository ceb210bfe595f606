"""Reading unstructured weight masks per head and comparing masks (DeepCuts analysis).

Masks are bool tensors by ``model.named_parameters()`` name, **True = keep** (as returned by
:func:`pruning.weight_scores.masks_for_ratio`). A weight without a mask counts as kept.

A head's weights are its ``head_dim`` rows of the query, key and value matrices (the rows that
produce its slice of q, k and v) and its ``head_dim`` input columns of the attention output
projection (the columns its context vector multiplies): ``4 * head_dim * hidden`` weights, biases
excluded. The same slices are removed by :func:`pruning.heads.remove_heads`.

The IoU comparisons follow the mask analysis of Grover, Gawri and Manku, "DeepCuts:
Single-Shot Interpretability based Pruning for BERT", arXiv 2212.13392 (2022),
https://arxiv.org/abs/2212.13392, Figures 9-12 (mean and minimum overlap between the masks of two
strategies). IoU is taken over the KEPT sets by default; ``which="pruned"`` compares the pruned
sets instead, as the authors' ``mask_IOU.py`` does. Two empty sets have IoU 1.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

from pruning.adapters import encoder_layers, get_adapter, get_submodule
from pruning.heads import head_dim, head_grid, heads_per_layer
from pruning.weight_scores import check_weight_masks, weights_by_layer

Which = Literal["kept", "pruned"]
# (parameter name, dimension, start) of one slice of ``head_dim`` along ``dimension``.
HeadPart = tuple[str, int, int]


def head_parts(model: nn.Module) -> list[list[list[HeadPart]]]:
    """For every layer and head, the slices of q/k/v rows and output-projection columns.

    Returns:
        ``parts[layer][head]``: ``(name, dim, start)`` four times (query, key, value rows along
        dim 0; output projection columns along dim 1), each ``head_dim`` long from ``start``.

    Raises:
        ValueError: when heads were already removed (the slices then no longer line up).
    """
    _, n_heads = head_grid(model)
    if any(count != n_heads for count in heads_per_layer(model)):
        raise ValueError(
            "Weight masks are read per head on a dense model, but this one has heads removed; "
            "use the fine-tuned model the masks were made for."
        )
    adapter = get_adapter(model)
    size = head_dim(model)
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    parts = []
    for layer in encoder_layers(model):
        attention = get_submodule(layer, adapter.attention)
        rows = [
            names[id(getattr(attention, attr).weight)]
            for attr in (adapter.query, adapter.key, adapter.value)
        ]
        columns = names[id(get_submodule(layer, adapter.output).weight)]
        parts.append(
            [
                [(name, 0, head * size) for name in rows] + [(columns, 1, head * size)]
                for head in range(n_heads)
            ]
        )
    return parts


def head_density(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Share of each head's weights kept (see the module docstring for a head's weights).

    Returns:
        float32 ``(n_layers, n_heads)`` in [0, 1] on the CPU; 1.0 where nothing is masked.
    """
    check_weight_masks(model, masks)
    size = head_dim(model)
    parameters = dict(model.named_parameters())
    rows = []
    for layer in head_parts(model):
        values = []
        for parts in layer:
            kept = total = 0
            for name, dim, start in parts:
                count = parameters[name].shape[1 - dim] * size
                total += count
                mask = masks.get(name)
                kept += count if mask is None else int(mask.narrow(dim, start, size).sum())
            values.append(kept / total)
        rows.append(values)
    return torch.tensor(rows, dtype=torch.float32)


def _iou(a: torch.Tensor, b: torch.Tensor, which: Which) -> tuple[int, int]:
    """``(intersection, union)`` of the kept (or pruned) entries of two bool masks."""
    if which not in ("kept", "pruned"):
        raise ValueError(f"which must be 'kept' or 'pruned', got {which!r}.")
    a, b = a.to("cpu", torch.bool), b.to("cpu", torch.bool)
    if which == "pruned":
        a, b = ~a, ~b
    return int((a & b).sum()), int((a | b).sum())


def _ratio(intersection: int, union: int) -> float:
    return 1.0 if union == 0 else intersection / union


def _check_pair(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ValueError(
            f"The two mask sets cover different weights ({only[:3]}...); compare masks made "
            "for the same model and weights."
        )
    for name in a:
        if a[name].shape != b[name].shape:
            raise ValueError(f"The masks of {name} have different shapes; compare like masks.")


def mask_iou(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], *, which: Which = "kept"
) -> float:
    """IoU of two mask sets over all their weights: ``|A & B| / |A | B|`` (1.0 when both empty).

    Raises:
        ValueError: when the two sets name different weights or shapes differ.
    """
    _check_pair(a, b)
    intersection = union = 0
    for name in a:
        inter, uni = _iou(a[name], b[name], which)
        intersection, union = intersection + inter, union + uni
    return _ratio(intersection, union)


def layer_iou(
    model: nn.Module,
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    *,
    which: Which = "kept",
) -> torch.Tensor:
    """IoU per encoder layer over the layer's masked weights: float32 ``(n_layers,)``.

    A layer with no masked weight gets 1.0.
    """
    _check_pair(a, b)
    check_weight_masks(model, a)
    values = []
    for layer in weights_by_layer(model):
        intersection = union = 0
        for name in layer:
            if name in a:
                inter, uni = _iou(a[name], b[name], which)
                intersection, union = intersection + inter, union + uni
        values.append(_ratio(intersection, union))
    return torch.tensor(values, dtype=torch.float32)


def head_iou(
    model: nn.Module,
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    *,
    which: Which = "kept",
) -> torch.Tensor:
    """IoU per head over its q/k/v rows and output columns: float32 ``(n_layers, n_heads)``.

    Unmasked weights count as kept in both sets.
    """
    _check_pair(a, b)
    check_weight_masks(model, a)
    size = head_dim(model)
    parameters = dict(model.named_parameters())
    rows = []
    for layer in head_parts(model):
        values = []
        for parts in layer:
            intersection = union = 0
            for name, dim, start in parts:
                if name in a:
                    inter, uni = _iou(
                        a[name].narrow(dim, start, size), b[name].narrow(dim, start, size), which
                    )
                else:
                    full = parameters[name].shape[1 - dim] * size
                    inter, uni = (full, full) if which == "kept" else (0, 0)
                intersection, union = intersection + inter, union + uni
            values.append(_ratio(intersection, union))
        rows.append(values)
    return torch.tensor(rows, dtype=torch.float32)


def iou_matrices(
    model: nn.Module,
    masks_by_strategy: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    which: Which = "kept",
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Pairwise head-level overlap of several strategies' masks (the paper's Figures 9-12 style).

    Returns:
        ``(names, mean_iou, min_iou)``: the strategy names in the given order and two float32
        ``(S, S)`` symmetric matrices, the mean and the minimum over all heads of
        :func:`head_iou` (diagonal 1.0).
    """
    names = list(masks_by_strategy)
    count = len(names)
    mean = torch.ones(count, count)
    low = torch.ones(count, count)
    for i in range(count):
        for j in range(i + 1, count):
            per_head = head_iou(
                model, masks_by_strategy[names[i]], masks_by_strategy[names[j]], which=which
            )
            mean[i, j] = mean[j, i] = per_head.mean()
            low[i, j] = low[j, i] = per_head.min()
    return names, mean, low
