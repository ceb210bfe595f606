"""Architecture adapters: where each supported encoder keeps its attention heads, declared as data.

An adapter names, relative to the model's ``base_model``, the list of layers and, relative to one
layer, the self-attention module with its query / key / value projections and the attention output
projection. Everything in :mod:`pruning.models` (gates, removal, capture) reads models through these
paths, so supporting a new BERT-like encoder is one more entry in :data:`ADAPTERS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PretrainedConfig


class UnsupportedArchitectureError(ValueError):
    """The model's architecture has no adapter, so its heads cannot be gated or removed."""


@dataclass(frozen=True)
class ArchAdapter:
    """Where one encoder family keeps its attention heads.

    Attributes:
        name: human name of the family.
        layers: dotted path from ``model.base_model`` to the ``nn.ModuleList`` of encoder layers.
        attention: dotted path from a layer to the module that owns q/k/v and the head count.
        query, key, value: attribute names of the projections on the attention module.
        output: dotted path from a layer to the attention output projection (``nn.Linear`` whose
            input is the concatenation of the heads' outputs).
        head_count_attr: attribute on the attention module holding its number of heads.
        all_head_size_attr: attribute holding ``heads * head_dim`` (None when the family has none).
        empty_target: dotted path from a layer to the module replaced when every head is removed.
        empty_keeps_output: True when ``empty_target`` also owns the output projection, so the
            replacement must apply it (DistilBERT); False when the layer applies it afterwards.
        config_layers, config_heads: config attribute names for layer and head counts.
    """

    name: str
    layers: str
    attention: str
    query: str
    key: str
    value: str
    output: str
    head_count_attr: str
    all_head_size_attr: str | None
    empty_target: str
    empty_keeps_output: bool
    config_layers: str = "num_hidden_layers"
    config_heads: str = "num_attention_heads"


_BERT_LIKE = {
    "layers": "encoder.layer",
    "attention": "attention.self",
    "query": "query",
    "key": "key",
    "value": "value",
    "output": "attention.output.dense",
    "head_count_attr": "num_attention_heads",
    "all_head_size_attr": "all_head_size",
    "empty_target": "attention.self",
    "empty_keeps_output": False,
}

ADAPTERS: dict[str, ArchAdapter] = {
    "bert": ArchAdapter(name="BERT", **_BERT_LIKE),  # type: ignore[arg-type]
    "roberta": ArchAdapter(name="RoBERTa", **_BERT_LIKE),  # type: ignore[arg-type]
    "electra": ArchAdapter(name="ELECTRA", **_BERT_LIKE),  # type: ignore[arg-type]
    "distilbert": ArchAdapter(
        name="DistilBERT",
        layers="transformer.layer",
        attention="attention",
        query="q_lin",
        key="k_lin",
        value="v_lin",
        output="attention.out_lin",
        head_count_attr="n_heads",
        all_head_size_attr=None,
        empty_target="attention",
        empty_keeps_output=True,
        config_layers="n_layers",
        config_heads="n_heads",
    ),
}


def adapter_for_type(model_type: str) -> ArchAdapter:
    """Return the adapter for a config ``model_type`` such as ``"bert"``.

    Raises:
        UnsupportedArchitectureError: with the list of supported families.
    """
    try:
        return ADAPTERS[model_type]
    except KeyError:
        supported = ", ".join(sorted(ADAPTERS))
        raise UnsupportedArchitectureError(
            f"Model type {model_type!r} is not supported: HeadScope can gate and remove the "
            f"attention heads of {supported} encoders. Pick a model of one of these families "
            f"(for example a BERT, RoBERTa, DistilBERT or ELECTRA checkpoint)."
        ) from None


def model_config(model: nn.Module) -> PretrainedConfig:
    """The Hugging Face config of a model (typed accessor for ``model.config``)."""
    config = getattr(model, "config", None)
    if not isinstance(config, PretrainedConfig):
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} is not a Hugging Face transformer with a config; load a "
            "sequence classifier with pruning.models.load_classifier."
        )
    return config


def get_adapter(model: nn.Module) -> ArchAdapter:
    """Return the adapter for a loaded Hugging Face model (reads ``model.config.model_type``)."""
    return adapter_for_type(str(model_config(model).model_type))


def get_submodule(root: nn.Module, dotted: str) -> nn.Module:
    """Follow a dotted attribute path (``"attention.self"``) from ``root``."""
    module = root
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def set_submodule(root: nn.Module, dotted: str, new: nn.Module) -> None:
    """Replace the module at a dotted path below ``root``."""
    parent_path, _, leaf = dotted.rpartition(".")
    parent = get_submodule(root, parent_path) if parent_path else root
    setattr(parent, leaf, new)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer list of a supported model."""
    adapter = get_adapter(model)
    base = getattr(model, "base_model", model)
    layers = get_submodule(base, adapter.layers)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedArchitectureError(
            f"Expected a layer list at {adapter.layers!r} in {type(model).__name__}."
        )
    return layers
