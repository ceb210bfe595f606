"""Attention heads: layout, soft gates (hooks) and hard removal (surgery).

Mask convention used everywhere in HeadScope: a head mask is a bool tensor of shape
``(n_layers, n_heads)`` with **True = keep**. Gates are the float, differentiable counterpart of the
same shape (1.0 = fully on, 0.0 = off).

Two mechanisms, kept separate on purpose:

* :func:`head_gates` installs forward pre-hooks on each layer's attention output projection that
  scale every head's slice of its input. Nothing in the model changes; removing the hooks restores
  it. Gates are differentiable, so methods can learn them.
* :func:`remove_heads` returns a new, smaller model whose q/k/v projections lose the rows of the
  removed heads and whose output projection loses the matching input columns
  (``prune_linear_layer``). A layer that loses every head keeps only the output projection's bias
  (the exact value the gated model produces for it).

For every mask the gated and the removed model give the same logits (tests check <= 1e-5).
Removed heads are recorded on the model (``model.config.headscope_kept_heads``) so a pruned model
keeps the original ``(n_layers, n_heads)`` coordinate system: gates and masks for a pruned model
are still given on the original grid and entries for heads that are already gone are ignored.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from pruning.adapters import (
    encoder_layers,
    get_adapter,
    get_submodule,
    model_config,
    set_submodule,
)

KEPT_HEADS_KEY = "headscope_kept_heads"
ORIGINAL_HEADS_KEY = "headscope_original_heads"


def original_head_count(model: nn.Module) -> int:
    """Heads per layer of the unpruned architecture."""
    adapter = get_adapter(model)
    recorded = getattr(model_config(model), ORIGINAL_HEADS_KEY, None)
    return int(
        recorded if recorded is not None else getattr(model_config(model), adapter.config_heads)
    )


def head_grid(model: nn.Module) -> tuple[int, int]:
    """``(n_layers, n_heads)`` of the model's original head grid."""
    return len(encoder_layers(model)), original_head_count(model)


def kept_heads(model: nn.Module) -> list[list[int]]:
    """For each layer, the original indices of the heads still present (sorted)."""
    recorded = getattr(model_config(model), KEPT_HEADS_KEY, None)
    if recorded is not None:
        return [list(map(int, layer)) for layer in recorded]
    n_layers, n_heads = head_grid(model)
    return [list(range(n_heads)) for _ in range(n_layers)]


def heads_per_layer(model: nn.Module) -> list[int]:
    """Number of heads present in each layer (after any removal)."""
    return [len(layer) for layer in kept_heads(model)]


def present_mask(model: nn.Module) -> torch.Tensor:
    """Bool ``(n_layers, n_heads)``: True where the head is still physically present."""
    n_layers, n_heads = head_grid(model)
    mask = torch.zeros(n_layers, n_heads, dtype=torch.bool)
    for layer, heads in enumerate(kept_heads(model)):
        mask[layer, heads] = True
    return mask


def head_dim(model: nn.Module) -> int:
    """Size of one head's query/key/value vector."""
    adapter = get_adapter(model)
    attention = get_submodule(encoder_layers(model)[0], adapter.attention)
    size = getattr(attention, "attention_head_size", None)
    if size is None:
        size = int(model_config(model).hidden_size) // original_head_count(model)
    return int(size)


def check_mask(model: nn.Module, mask: torch.Tensor, *, name: str = "mask") -> torch.Tensor:
    """Validate a head mask or gate tensor against the model's grid and return it on CPU.

    Raises:
        ValueError: when the shape differs from ``(n_layers, n_heads)``.
    """
    expected = head_grid(model)
    if not isinstance(mask, torch.Tensor):
        mask = torch.as_tensor(mask)
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)} but the model has {expected[0]} layers x "
            f"{expected[1]} heads; pass a tensor of shape {expected} (True/1.0 = keep)."
        )
    return mask


class HeadGates:
    """Removable hooks that scale each head's output by a gate value.

    Args:
        model: a supported classifier (possibly with heads already removed).
        gates: float tensor ``(n_layers, n_heads)`` on the original grid; may require grad. The
            tensor is read at every forward, so changing it in place (or assigning
            :attr:`gates`) takes effect on the next forward.
    """

    def __init__(self, model: nn.Module, gates: torch.Tensor) -> None:
        self.model = model
        self.gates = check_mask(model, gates, name="gates")
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def attach(self) -> HeadGates:
        """Install the hooks (idempotent)."""
        if self._handles:
            return self
        adapter = get_adapter(self.model)
        size = head_dim(self.model)
        for layer_index, (layer, heads) in enumerate(
            zip(encoder_layers(self.model), kept_heads(self.model), strict=True)
        ):
            if not heads:
                continue
            projection = get_submodule(layer, adapter.output)
            hook = self._make_hook(layer_index, torch.tensor(heads), size)
            self._handles.append(projection.register_forward_pre_hook(hook))
        return self

    def _make_hook(self, layer_index: int, heads: torch.Tensor, size: int):
        # Column index of every kept channel, cached per device: no host-to-device copy per call.
        per_device: dict[torch.device, torch.Tensor] = {}

        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            hidden = args[0]
            index = per_device.get(hidden.device)
            if index is None:
                index = per_device.setdefault(hidden.device, heads.to(hidden.device))
            gates = self.gates[layer_index].to(device=hidden.device, dtype=hidden.dtype)
            scale = gates[index].repeat_interleave(size)
            return (hidden * scale, *args[1:])

        hook._headscope_gate = True  # type: ignore[attr-defined]
        return hook

    def remove(self) -> None:
        """Remove the hooks; the model is exactly as before."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> HeadGates:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.remove()


def head_gates(model: nn.Module, gates: torch.Tensor) -> HeadGates:
    """Gate heads with float values; use as ``with head_gates(model, g): model(**batch)``.

    Shapes: ``gates`` is ``(n_layers, n_heads)``, 1.0 keeps a head unchanged, 0.0 silences it.
    """
    return HeadGates(model, gates)


@contextmanager
def apply_mask(model: nn.Module, mask: torch.Tensor) -> Iterator[HeadGates]:
    """Temporarily switch heads off: bool ``mask`` ``(n_layers, n_heads)``, True = keep."""
    mask = check_mask(model, mask)
    with head_gates(model, mask.to(torch.float32)) as gates:
        yield gates


class EmptyAttention(nn.Module):
    """Stand-in for an attention module whose heads were all removed.

    For BERT-like layers the output projection is applied afterwards by the layer, so this returns a
    zero-width context ``(B, T, 0)``; the projection then yields its bias alone. For DistilBERT the
    attention module owns the output projection (``out_lin``, kept here with zero input columns),
    so this returns the projection of the zero-width context, i.e. the bias.
    """

    def __init__(self, output: nn.Linear | None = None, output_name: str = "out_lin") -> None:
        super().__init__()
        self.output_name = output_name if output is not None else None
        if output is not None:
            setattr(self, output_name, output)

    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object):
        empty = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        if self.output_name is not None:
            empty = getattr(self, self.output_name)(empty)
        return empty, None


def drop_gate_hooks(model: nn.Module) -> None:
    """A deep copy carries the original's gate hooks, sized for its heads: drop them."""
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if getattr(hook, "_headscope_gate", False):
                del module._forward_pre_hooks[key]


def remove_heads(model: nn.Module, mask: torch.Tensor) -> nn.Module:
    """Return a deep copy of ``model`` with the heads where ``mask`` is False physically removed.

    Args:
        model: a supported classifier; never modified. May already have heads removed.
        mask: bool ``(n_layers, n_heads)`` on the original grid, True = keep. Heads already gone
            stay gone whatever the mask says.

    Returns:
        A new model with smaller q/k/v and output projections. ``config.headscope_kept_heads``
        records, per layer, the original indices of the heads that remain.
    """
    mask = check_mask(model, mask).to(torch.bool)
    adapter = get_adapter(model)
    pruned = copy.deepcopy(model)
    drop_gate_hooks(pruned)
    size = head_dim(model)
    new_kept: list[list[int]] = []
    for layer_index, (layer, heads) in enumerate(
        zip(encoder_layers(pruned), kept_heads(model), strict=True)
    ):
        keep_positions = [pos for pos, head in enumerate(heads) if bool(mask[layer_index, head])]
        new_kept.append([heads[pos] for pos in keep_positions])
        if len(keep_positions) == len(heads):
            continue
        rows = (
            torch.cat([torch.arange(pos * size, (pos + 1) * size) for pos in keep_positions])
            if keep_positions
            else torch.zeros(0, dtype=torch.long)
        )
        attention = get_submodule(layer, adapter.attention)
        output_path = adapter.output
        output = get_submodule(layer, output_path)
        if not isinstance(output, nn.Linear):
            raise TypeError(f"{output_path} of {adapter.name} is not a Linear layer")
        device = output.weight.device
        rows = rows.to(device)
        with warnings.catch_warnings():
            # Emptying a layer creates zero-element weights; their no-op init warning is noise.
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            new_output = prune_linear_layer(output, rows, dim=1)  # type: ignore[arg-type]
        set_submodule(layer, output_path, new_output)
        if not keep_positions:
            if adapter.empty_keeps_output:
                leaf = output_path.rpartition(".")[2]
                set_submodule(layer, adapter.empty_target, EmptyAttention(new_output, leaf))
            else:
                set_submodule(layer, adapter.empty_target, EmptyAttention())
            continue
        for name in (adapter.query, adapter.key, adapter.value):
            pruned_linear = prune_linear_layer(getattr(attention, name), rows, dim=0)  # type: ignore[arg-type]
            setattr(attention, name, pruned_linear)
        setattr(attention, adapter.head_count_attr, len(keep_positions))
        if adapter.all_head_size_attr is not None:
            setattr(attention, adapter.all_head_size_attr, len(keep_positions) * size)
    setattr(model_config(pruned), KEPT_HEADS_KEY, new_kept)
    setattr(model_config(pruned), ORIGINAL_HEADS_KEY, original_head_count(model))
    return pruned


def head_sparsity(model: nn.Module) -> float:
    """Share of the original heads that have been removed, in [0, 1]."""
    n_layers, n_heads = head_grid(model)
    return 1.0 - sum(heads_per_layer(model)) / float(n_layers * n_heads)
