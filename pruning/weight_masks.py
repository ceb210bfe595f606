"""Reading unstructured weight masks per head and comparing masks (DeepCuts analysis).

Masks are bool tensors by ``model.named_parameters()`` name, **True = keep** (as returned by
:func:`pruning.weight_scores.masks_for_ratio`). A weight without a mask counts as kept.

A head's weights are its ``head_dim`` rows of the query, key and value matrices (the rows that
produce its slice of q, k and v) and its ``head_dim`` input columns of the attention output
projection (the columns its context vector multiplies): ``4 * head_dim * hidden`` weights, biases
excluded. The same slices are removed by :func:`pruning.heads.remove_heads`.

The IoU comparisons follow the mask analysis of Grover, Gawri and Manku, "DeepCuts:
Single-Shot Interpretability based Pruning for BERT", arXiv 2212.13392 (2022),
https://arxiv.org/abs/2212.13392, Section 4.4 and Figures 9-12: per layer (Figures 10-12) and the
mean and minimum across layers for every pair of strategies (Figure 9, ``over="layers"`` in
:func:`iou_matrices`; ``over="heads"`` summarises per head instead). Two empty sets have IoU 1.0.

Kept or pruned set (``which``). The paper compares "the weights which are selected after
pruning", which can be read either way; every function offers both, default ``"kept"``. The
PRUNED-set IoU is the one that matches the paper's figures: at its ratios 3 and 3.5 BERT-base
keeps 14.7% and 8.7% of the prunable weights, where two unrelated masks already reach a
pruned-set IoU of 0.74 and 0.84 but a kept-set IoU of only 0.08 and 0.05
(:func:`random_iou`). The paper reports 82-86% per layer for LayerMagWeight against Cam-Cut or
Smooth-Cut, which it calls "low", and about 95% between Cam-Cut and Smooth-Cut: values near and
above the pruned-set chance level; as kept-set IoUs they would say that magnitude and gradient
rankings nearly agree at 9-15% density. The authors' ``mask_IOU.py`` agrees: ``calculateIOU``
intersects the positions where the masks are 0 (it reads only each layer's ``intermediate.dense``
weights, where HeadScope pools the layer's six matrices).
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
Over = Literal["heads", "layers"]
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


def random_iou(keep_share: float, *, which: Which = "kept") -> float:
    """Expected IoU of two independent random masks that each keep ``keep_share`` of the weights.

    ``s / (2 - s)`` for the kept sets, ``(1 - s) / (1 + s)`` for the pruned sets (the chance
    level to read an IoU against; 1.0 where both sets are empty).

    Raises:
        ValueError: for a share outside [0, 1] or an unknown ``which``.
    """
    if not 0.0 <= keep_share <= 1.0:
        raise ValueError(f"keep_share must lie in [0, 1], got {keep_share!r}.")
    if which not in ("kept", "pruned"):
        raise ValueError(f"which must be 'kept' or 'pruned', got {which!r}.")
    share = keep_share if which == "kept" else 1.0 - keep_share
    return 1.0 if share == 0.0 else share / (2.0 - share)


def iou_matrices(
    model: nn.Module,
    masks_by_strategy: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    which: Which = "kept",
    over: Over = "heads",
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Pairwise overlap of several strategies' masks: the paper's Figure 9.

    Args:
        which: IoU of the kept or of the pruned sets (the paper's figures: ``"pruned"``).
        over: ``"layers"``: mean and minimum of :func:`layer_iou` across the encoder layers (the
            paper's Figure 9); ``"heads"``: of :func:`head_iou` across all heads.

    Returns:
        ``(names, mean_iou, min_iou)``: the strategy names in the given order and two float32
        ``(S, S)`` symmetric matrices (diagonal 1.0).
    """
    if over not in ("heads", "layers"):
        raise ValueError(f"over must be 'heads' or 'layers', got {over!r}.")
    per_pair = head_iou if over == "heads" else layer_iou
    names = list(masks_by_strategy)
    count = len(names)
    mean = torch.ones(count, count)
    low = torch.ones(count, count)
    for i in range(count):
        for j in range(i + 1, count):
            values = per_pair(
                model, masks_by_strategy[names[i]], masks_by_strategy[names[j]], which=which
            )
            mean[i, j] = mean[j, i] = values.mean()
            low[i, j] = low[j, i] = values.min()
    return names, mean, low
