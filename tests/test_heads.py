"""Property tests: soft gates and hard removal agree for every mask, on every architecture."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification, GPT2Config

from conftest import build_tiny_model, random_inputs
from pruning.adapters import (
    UnsupportedArchitectureError,
    encoder_layers,
    get_adapter,
    get_submodule,
)
from pruning.heads import (
    apply_mask,
    head_gates,
    head_grid,
    head_sparsity,
    heads_per_layer,
    kept_heads,
    present_mask,
    remove_heads,
)

N_MASKS = 50


def random_masks(n_layers: int, n_heads: int, count: int, seed: int) -> list[torch.Tensor]:
    """Random masks that always include empty layers and layers with exactly one head left."""
    generator = torch.Generator().manual_seed(seed)
    masks = []
    for index in range(count):
        mask = torch.rand(n_layers, n_heads, generator=generator) < 0.5
        special = index % 4
        layer = int(torch.randint(n_layers, (1,), generator=generator))
        if special == 0:
            mask[layer] = False
        elif special == 1:
            mask[layer] = False
            mask[layer, int(torch.randint(n_heads, (1,), generator=generator))] = True
        elif special == 2:
            mask[:] = False
            mask[layer, 0] = True
        masks.append(mask)
    masks.append(torch.zeros(n_layers, n_heads, dtype=torch.bool))
    return masks


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_gated_equals_removed_for_random_masks(arch: str, attn: str) -> None:
    model = build_tiny_model(arch, attn=attn, seed=1)
    inputs = random_inputs(seed=2)
    masks = random_masks(*head_grid(model), N_MASKS, seed=3)
    assert any(not m[i].any() for m in masks for i in range(m.shape[0]))
    assert any(int(m[i].sum()) == 1 for m in masks for i in range(m.shape[0]))
    worst = 0.0
    with torch.no_grad():
        for mask in masks:
            with apply_mask(model, mask):
                gated = model(**inputs).logits
            removed = remove_heads(model, mask)(**inputs).logits
            worst = max(worst, float((gated - removed).abs().max()))
    assert worst <= 1e-5


def test_all_keep_gates_reproduce_original_and_hooks_go_away(arch: str) -> None:
    model = build_tiny_model(arch)
    inputs = random_inputs()
    with torch.no_grad():
        original = model(**inputs).logits
        with apply_mask(model, torch.ones(head_grid(model), dtype=torch.bool)):
            kept = model(**inputs).logits
        with apply_mask(model, torch.zeros(head_grid(model), dtype=torch.bool)):
            silenced = model(**inputs).logits
        after = model(**inputs).logits
    assert torch.equal(original, kept)
    assert torch.equal(original, after)
    assert not torch.allclose(original, silenced)


def test_removal_does_not_touch_the_given_model(arch: str) -> None:
    model = build_tiny_model(arch)
    before = copy.deepcopy(model.state_dict())
    mask = torch.ones(head_grid(model), dtype=torch.bool)
    mask[0, :2] = False
    mask[1] = False
    pruned = remove_heads(model, mask)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert heads_per_layer(model) == [4, 4, 4]
    assert heads_per_layer(pruned) == [2, 0, 4]
    assert kept_heads(pruned) == [[2, 3], [], [0, 1, 2, 3]]
    assert torch.equal(present_mask(pruned), mask)
    assert head_sparsity(pruned) == pytest.approx(6 / 12)


def test_removing_from_a_pruned_model_composes(arch: str) -> None:
    model = build_tiny_model(arch, seed=4)
    inputs = random_inputs(seed=5)
    first = torch.ones(head_grid(model), dtype=torch.bool)
    first[0, 1] = False
    first[2, :3] = False
    second = first.clone()
    second[1, 0] = False
    second[2, 3] = False
    once = remove_heads(model, second)
    twice = remove_heads(remove_heads(model, first), second)
    with torch.no_grad():
        assert torch.allclose(once(**inputs).logits, twice(**inputs).logits, atol=1e-6)
        # Gates on a pruned model use the original grid; entries of removed heads are ignored.
        with apply_mask(model, second):
            gated = model(**inputs).logits
        pruned_first = remove_heads(model, first)
        with apply_mask(pruned_first, second):
            gated_on_pruned = pruned_first(**inputs).logits
    assert torch.allclose(gated, gated_on_pruned, atol=1e-5)
    assert kept_heads(twice) == kept_heads(once)


def test_gates_are_differentiable(arch: str) -> None:
    model = build_tiny_model(arch)
    gates = torch.full(head_grid(model), 0.7, requires_grad=True)
    with head_gates(model, gates):
        loss = model(**random_inputs()).logits.sum()
    loss.backward()
    assert gates.grad is not None
    assert gates.grad.shape == gates.shape
    assert float(gates.grad.abs().sum()) > 0


def test_fractional_gates_scale_a_head_linearly_in_its_output(arch: str) -> None:
    """Gate 0.5 on one head equals halving that head's slice: checked against removal + mixing."""
    model = build_tiny_model(arch, seed=7)
    inputs = random_inputs()
    gates = torch.ones(head_grid(model))
    gates[1, 2] = 0.5
    on = torch.ones(head_grid(model))
    off = on.clone()
    off[1, 2] = 0.0
    layer_outputs = {}
    projection = get_submodule(encoder_layers(model)[1], get_adapter(model).output)

    def keep(_m, _i, out, key):
        layer_outputs[key] = out.detach()

    for key, g in (("half", gates), ("on", on), ("off", off)):
        handle = projection.register_forward_hook(lambda m, i, o, key=key: keep(m, i, o, key))
        with torch.no_grad(), head_gates(model, g):
            model(**inputs)
        handle.remove()
    expected = 0.5 * (layer_outputs["on"] + layer_outputs["off"])
    assert torch.allclose(layer_outputs["half"], expected, atol=1e-6)


def test_mask_shape_is_checked(arch: str) -> None:
    model = build_tiny_model(arch)
    with pytest.raises(ValueError, match="3 layers x 4 heads"):
        remove_heads(model, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        head_gates(model, torch.ones(3, 5))


def test_unsupported_architecture_is_refused_clearly() -> None:
    config = GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=32)
    model = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(UnsupportedArchitectureError, match="gpt2.*not supported"):
        remove_heads(model, torch.ones(2, 2, dtype=torch.bool))


def test_removing_heads_while_gates_are_attached_gives_a_clean_copy(arch: str) -> None:
    model = build_tiny_model(arch)
    inputs = random_inputs()
    mask = torch.ones(head_grid(model), dtype=torch.bool)
    mask[1, :3] = False
    with torch.no_grad(), head_gates(model, torch.full(head_grid(model), 0.3)):
        pruned = remove_heads(model, mask)
    with torch.no_grad(), apply_mask(model, mask):
        expected = model(**inputs).logits
    with torch.no_grad():
        assert torch.allclose(pruned(**inputs).logits, expected, atol=1e-5)
