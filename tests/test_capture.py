"""capture_sentences against the model itself: eager attention, and Q/K from the weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import build_tiny_model, real_tokenizer
from pruning.adapters import encoder_layers, get_adapter, get_submodule
from pruning.capture import capture_sentences
from pruning.heads import head_dim, kept_heads, remove_heads

SENTENCES = ["the film is a quiet delight", "no", "a dull , clumsy plot with a fine cast"]


def _tiny(arch: str, seed: int = 5) -> nn.Module:
    """A tiny random classifier whose embeddings fit the real (BERT) tokenizer."""
    model = build_tiny_model(arch, seed=seed)
    model.resize_token_embeddings(len(real_tokenizer()))
    return model


def _encode(model: nn.Module, text: str) -> dict[str, torch.Tensor]:
    encoded = real_tokenizer()(text, return_tensors="pt")
    if get_adapter(model).name == "DistilBERT":
        encoded.pop("token_type_ids", None)
    return dict(encoded)


@torch.no_grad()
def _eager_attentions(model: nn.Module, text: str) -> torch.Tensor:
    """``(n_layers, n_heads, T, T)`` from the model's own ``output_attentions`` (eager)."""
    reference = copy.deepcopy(model)
    reference.set_attn_implementation("eager")
    output = reference(**_encode(reference, text), output_attentions=True)
    return torch.stack([layer[0] for layer in output.attentions]).float()


@torch.no_grad()
def _layer_inputs(model: nn.Module, text: str) -> list[torch.Tensor]:
    """Each encoder layer's input hidden states ``(T, hidden)`` (a forward pre-hook)."""
    inputs: list[torch.Tensor] = []

    def keep(_m: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        assert isinstance(hidden, torch.Tensor)
        inputs.append(hidden[0].detach().float())

    handles = [
        layer.register_forward_pre_hook(keep, with_kwargs=True) for layer in encoder_layers(model)
    ]
    try:
        model(**_encode(model, text))
    finally:
        for handle in handles:
            handle.remove()
    return inputs


def _manual(model: nn.Module, layer: int, x: torch.Tensor, kind: str) -> torch.Tensor:
    """``x @ W.T + b`` of the layer's query or key projection, as ``(h_kept, T, d)``."""
    adapter = get_adapter(model)
    attention = get_submodule(encoder_layers(model)[layer], adapter.attention)
    linear = getattr(attention, adapter.query if kind == "q" else adapter.key)
    projected = x @ linear.weight.detach().float().T + linear.bias.detach().float()
    return projected.reshape(x.shape[0], -1, head_dim(model)).transpose(0, 1)


def test_rows_sum_to_one_and_equal_the_models_eager_attention(arch: str) -> None:
    model = _tiny(arch)
    captures = capture_sentences(model, real_tokenizer(), SENTENCES, with_qk=False)
    for text, capture in zip(SENTENCES, captures, strict=True):
        n = len(capture.tokens)
        assert capture.tokens[0] == "[CLS]" and capture.tokens[-1] == "[SEP]"
        assert capture.attentions.shape == (3, 4, n, n) and capture.present.all()
        torch.testing.assert_close(capture.attentions.sum(-1), torch.ones(3, 4, n))
        # The capture ran all sentences as one padded batch; the reference runs each alone.
        expected = _eager_attentions(model, text)
        torch.testing.assert_close(capture.attentions, expected, atol=1e-6, rtol=1e-5)
    assert captures[0].queries is None and captures[0].keys is None
    assert model.config._attn_implementation == "sdpa"  # switched back after the capture


def test_queries_and_keys_equal_a_manual_projection_of_the_layer_input(arch: str) -> None:
    model = _tiny(arch)
    text = SENTENCES[0]
    (capture,) = capture_sentences(model, real_tokenizer(), [text])
    assert capture.queries is not None and capture.keys is not None
    assert capture.queries.shape == (3, 4, len(capture.tokens), 8)
    for layer, x in enumerate(_layer_inputs(model, text)):
        for kind, captured in (("q", capture.queries), ("k", capture.keys)):
            expected = _manual(model, layer, x, kind)
            torch.testing.assert_close(captured[layer], expected, atol=1e-5, rtol=1e-5)


def test_pruned_model_keeps_its_heads_q_k_and_nan_for_removed_ones(arch: str) -> None:
    dense = _tiny(arch)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, [1, 3]] = False
    mask[1, 0] = False
    mask[2] = False  # an empty layer: no heads left at all
    pruned = remove_heads(dense, mask)
    text = SENTENCES[2]
    (capture,) = capture_sentences(pruned, real_tokenizer(), [text])
    (reference,) = capture_sentences(dense, real_tokenizer(), [text])
    assert capture.queries is not None and capture.keys is not None
    assert reference.queries is not None and reference.keys is not None
    assert torch.equal(capture.present, mask)
    for values in (capture.attentions, capture.queries, capture.keys):
        assert torch.isnan(values[~mask]).all() and not torch.isnan(values[mask]).any()
    torch.testing.assert_close(capture.attentions[mask].sum(-1), torch.ones(5, len(capture.tokens)))
    # Layer 0 sees the dense model's input, so its kept heads match the dense model exactly.
    for values, dense_values in ((capture.queries, reference.queries),
                                 (capture.keys, reference.keys),
                                 (capture.attentions, reference.attentions)):  # fmt: skip
        torch.testing.assert_close(values[0, mask[0]], dense_values[0, mask[0]], atol=1e-6,
                                   rtol=1e-5)  # fmt: skip
    # Later layers see a changed input; their kept heads still project it with the dense weights.
    inputs = _layer_inputs(pruned, text)
    for layer, heads in enumerate(kept_heads(pruned)):
        for kind, captured in (("q", capture.queries), ("k", capture.keys)):
            full = _manual(dense, layer, inputs[layer], kind)
            if heads:
                torch.testing.assert_close(captured[layer, heads], full[heads], atol=1e-5,
                                           rtol=1e-5)  # fmt: skip
                own = _manual(pruned, layer, inputs[layer], kind)
                torch.testing.assert_close(captured[layer, heads], own, atol=1e-5, rtol=1e-5)
    assert kept_heads(pruned)[2] == []


def test_empty_text_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty sentence"):
        capture_sentences(_tiny("bert"), real_tokenizer(), ["one", "  "])
