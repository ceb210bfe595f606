"""Encoder pieces for the fast mask evaluator, read from a loaded classifier's own submodules.

:class:`pruning.fast_eval.FastMaskEvaluator` runs encoder layers one at a time, starts them from
cached hidden states and computes only position 0 in the last layer, so it cannot call the
Hugging Face model as a whole. This module rebuilds the three pieces it needs from the model's own
weights, for every family in :data:`pruning.adapters.ADAPTERS`:

* the embeddings (:meth:`EncoderPieces.embed`): the model's own embedding module, plus ELECTRA's
  ``embeddings_project``;
* one encoder layer (:class:`EncoderLayer`), written out from its submodules. All four families
  share one structure, a post-LayerNorm layer::

      context = heads(hidden)                                     # q/k/v projections + attention
      attended = LN_1(out_proj(context * gates) + hidden)
      output = LN_2(ffn_out(act(ffn_in(attended))) + attended)

  Head gating multiplies each head's slice of ``context`` before the output projection, exactly as
  :mod:`pruning.heads` gates do; a layer whose heads were all removed has a zero-width context,
  so its attention output is the projection's bias (what gating every head to 0 gives too).
  Where the LayerNorms and the feed-forward block sit is declared per family in
  :data:`LAYER_PATHS`; dropout is left out (evaluation only);
* the classification head (:meth:`EncoderPieces.classify`), fed position 0 of the last hidden
  state, the only position every supported head reads: BERT's pooler + classifier, RoBERTa's and
  ELECTRA's classification heads, DistilBERT's ``pre_classifier`` / ReLU / ``classifier``.

The transformers 5 sources these follow: ``models/{bert,roberta,electra,distilbert}/modeling_*.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pruning.adapters import (
    UnsupportedArchitectureError,
    adapter_for_type,
    encoder_layers,
    get_adapter,
    get_submodule,
    model_config,
)
from pruning.heads import head_dim, kept_heads


@dataclass(frozen=True)
class LayerPaths:
    """Where one family keeps the non-attention parts of a layer (dotted paths from a layer).

    Attributes:
        attention_norm: LayerNorm applied to attention output + residual.
        ffn_in, ffn_out: the feed-forward block's two linear maps.
        activation: the feed-forward activation (a module or a function).
        output_norm: LayerNorm applied to feed-forward output + residual.
    """

    attention_norm: str
    ffn_in: str
    activation: str
    ffn_out: str
    output_norm: str


_BERT_LIKE_PATHS = LayerPaths(
    attention_norm="attention.output.LayerNorm",
    ffn_in="intermediate.dense",
    activation="intermediate.intermediate_act_fn",
    ffn_out="output.dense",
    output_norm="output.LayerNorm",
)

LAYER_PATHS: dict[str, LayerPaths] = {
    "bert": _BERT_LIKE_PATHS,
    "roberta": _BERT_LIKE_PATHS,
    "electra": _BERT_LIKE_PATHS,
    "distilbert": LayerPaths(
        attention_norm="sa_layer_norm",
        ffn_in="ffn.lin1",
        activation="ffn.activation",
        ffn_out="ffn.lin2",
        output_norm="output_layer_norm",
    ),
}


def _linear(layer: nn.Module, path: str) -> nn.Linear:
    module = get_submodule(layer, path)
    if not isinstance(module, nn.Linear):
        raise UnsupportedArchitectureError(
            f"Expected a Linear layer at {path!r}, found {type(module).__name__}; the fast mask "
            "evaluator supports the standard BERT, RoBERTa, ELECTRA and DistilBERT layers only."
        )
    return module


def _layer_norm(layer: nn.Module, path: str) -> nn.LayerNorm:
    module = get_submodule(layer, path)
    if not isinstance(module, nn.LayerNorm):
        raise UnsupportedArchitectureError(
            f"Expected a LayerNorm at {path!r}, found {type(module).__name__}; the fast mask "
            "evaluator supports the standard BERT, RoBERTa, ELECTRA and DistilBERT layers only."
        )
    return module


def _apply_linear(module: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    # Functional on purpose: hooks on the model (gates, capture) must not fire here.
    return F.linear(hidden, module.weight, module.bias)


def _apply_norm(module: nn.LayerNorm, hidden: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(hidden, module.normalized_shape, module.weight, module.bias, module.eps)


@dataclass(frozen=True)
class EncoderLayer:
    """One post-LayerNorm encoder layer, split into a mask-independent and a gated half.

    :meth:`attend` (q/k/v projections and attention) does not depend on any head mask: its result,
    the per-head context, can be cached and gated later. :meth:`finish` applies the gates, the
    output projection, both residual LayerNorms and the feed-forward block.

    Attributes:
        query, key, value: the projections of the heads still present (None when all are removed).
        output: attention output projection; its input columns are the present heads' slices.
        kept: original indices of the heads still present, in column order.
        head_size: size of one head's vector.
    """

    query: nn.Linear | None
    key: nn.Linear | None
    value: nn.Linear | None
    output: nn.Linear
    attention_norm: nn.LayerNorm
    ffn_in: nn.Linear
    activation: Callable[[torch.Tensor], torch.Tensor]
    ffn_out: nn.Linear
    output_norm: nn.LayerNorm
    kept: tuple[int, ...]
    head_size: int

    @property
    def context_width(self) -> int:
        """Width of the concatenated head outputs: present heads x head size."""
        return len(self.kept) * self.head_size

    def attend(
        self, hidden: torch.Tensor, key_mask: torch.Tensor | None, *, first_only: bool = False
    ) -> torch.Tensor:
        """Ungated per-head attention outputs (the context), concatenated over heads.

        Args:
            hidden: ``(R, T, H)`` hidden states entering the layer.
            key_mask: bool ``(R, 1, 1, T)``, True for real tokens, or None when nothing is padded.
            first_only: compute the queries (and so the context) for position 0 only; keys and
                values still cover every position.

        Returns:
            ``(R, T, h * d)``, or ``(R, 1, h * d)`` with ``first_only``; ``h * d = 0`` when every
            head of the layer was removed.
        """
        rows = hidden.shape[0]
        queries = hidden[:, :1] if first_only else hidden
        if self.query is None or self.key is None or self.value is None:
            return hidden.new_zeros(rows, queries.shape[1], 0)
        split = (rows, -1, len(self.kept), self.head_size)
        query = _apply_linear(self.query, queries).view(split).transpose(1, 2)
        key = _apply_linear(self.key, hidden).view(split).transpose(1, 2)
        value = _apply_linear(self.value, hidden).view(split).transpose(1, 2)
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=key_mask, scale=self.head_size**-0.5
        )
        return context.transpose(1, 2).reshape(rows, queries.shape[1], self.context_width)

    def finish(
        self, hidden: torch.Tensor, context: torch.Tensor, scale: torch.Tensor | None
    ) -> torch.Tensor:
        """Gate the heads, project, add the residual, normalise and run the feed-forward block.

        Args:
            hidden: ``(M * B, T', H)`` residual input (the layer's input at the same positions).
            context: ``(M * B, T', h * d)`` from :meth:`attend`.
            scale: ``(M, h * d)`` per-column gate of each of the ``M`` stacked copies (row block
                ``m`` is gated by ``scale[m]``), or None to keep every head.

        Returns:
            ``(M * B, T', H)`` the layer's output.
        """
        if scale is not None and context.shape[-1] > 0:
            copies = scale.shape[0]
            stacked = context.reshape(copies, -1, *context.shape[1:])
            gated = stacked * scale.to(context.dtype)[:, None, None, :]
            context = gated.reshape(context.shape)
        attended = _apply_norm(self.attention_norm, _apply_linear(self.output, context) + hidden)
        inner = self.activation(_apply_linear(self.ffn_in, attended))
        return _apply_norm(self.output_norm, _apply_linear(self.ffn_out, inner) + attended)


def _build_layer(
    layer: nn.Module, family: str, heads: list[int], size: int, layer_index: int
) -> EncoderLayer:
    adapter = adapter_for_type(family)
    paths = LAYER_PATHS[family]
    query = key = value = None
    if heads:
        attention = get_submodule(layer, adapter.attention)
        query = _linear(attention, adapter.query)
        key = _linear(attention, adapter.key)
        value = _linear(attention, adapter.value)
        if query.out_features != len(heads) * size:
            raise UnsupportedArchitectureError(
                f"Layer {layer_index}: the query projection has {query.out_features} outputs but "
                f"{len(heads)} heads of size {size} are recorded as present; remove heads only "
                "with pruning.heads.remove_heads."
            )
    activation: Any = layer
    for part in paths.activation.split("."):
        activation = getattr(activation, part)
    if not callable(activation):
        raise UnsupportedArchitectureError(f"{paths.activation!r} is not callable in layer {layer}")
    return EncoderLayer(
        query=query,
        key=key,
        value=value,
        output=_linear(layer, adapter.output),
        attention_norm=_layer_norm(layer, paths.attention_norm),
        ffn_in=_linear(layer, paths.ffn_in),
        activation=activation,
        ffn_out=_linear(layer, paths.ffn_out),
        output_norm=_layer_norm(layer, paths.output_norm),
        kept=tuple(heads),
        head_size=size,
    )


_CLASSIFIERS = {
    "bert": "BertForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "electra": "ElectraForSequenceClassification",
    "distilbert": "DistilBertForSequenceClassification",
}


@dataclass(frozen=True)
class EncoderPieces:
    """Embeddings, layers and classification head of one supported sequence classifier.

    Build with :func:`encoder_pieces`. The pieces hold references to the model's modules (no
    copies): they compute with the model's current weights, and a module replaced on the model
    after building (for example by hand-made surgery) is not seen.

    Attributes:
        family: adapter key (``"bert"``, ``"roberta"``, ``"electra"``, ``"distilbert"``).
        layers: the encoder layers in order.
        embeddings: the model's embedding module; ``embeddings_project`` ELECTRA's projection to
            the hidden size (None elsewhere).
        pooler: BERT's pooler; ``pre_classifier`` DistilBERT's first head layer (None elsewhere).
        dropout: the head's dropout (DistilBERT, BERT; a no-op in eval mode).
        classifier: the final classifier (RoBERTa / ELECTRA: the whole head, reading position 0).
    """

    family: str
    layers: tuple[EncoderLayer, ...]
    embeddings: nn.Module
    embeddings_project: nn.Module | None
    pooler: nn.Module | None
    pre_classifier: nn.Module | None
    dropout: nn.Module | None
    classifier: nn.Module

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """Hidden states entering layer 0: ``(B, T)`` ids -> ``(B, T, H)``."""
        if self.family == "distilbert":
            return self.embeddings(input_ids)  # DistilBERT has no token types
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        if self.embeddings_project is not None:
            hidden = self.embeddings_project(hidden)
        return hidden

    def classify(self, first: torch.Tensor) -> torch.Tensor:
        """Logits from the last layer's output at position 0: ``(R, 1, H)`` -> ``(R, k)``."""
        if self.pooler is not None:  # BERT: dense + tanh on position 0, dropout, classifier
            pooled = self.pooler(first)
        elif self.pre_classifier is not None:  # DistilBERT: dense, ReLU, dropout, classifier
            pooled = torch.relu(self.pre_classifier(first[:, 0]))
        else:  # RoBERTa / ELECTRA: the head reads features[:, 0, :] itself
            return self.classifier(first)
        if self.dropout is not None:
            pooled = self.dropout(pooled)
        return self.classifier(pooled)


def _child(root: nn.Module, name: str) -> nn.Module:
    module = getattr(root, name, None)
    if not isinstance(module, nn.Module):
        raise UnsupportedArchitectureError(
            f"{type(root).__name__} has no module {name!r}; the fast mask evaluator supports the "
            "standard BERT, RoBERTa, ELECTRA and DistilBERT sequence classifiers."
        )
    return module


def encoder_pieces(model: nn.Module) -> EncoderPieces:
    """Read the embeddings, layers and head of a supported sequence classifier.

    Works on models with heads removed by :func:`pruning.heads.remove_heads` (layers keep only the
    present heads' projections; an emptied layer has none).

    Raises:
        UnsupportedArchitectureError: for an unsupported family, a model that is not the family's
            ``...ForSequenceClassification`` class, or a decoder configuration.
    """
    config = model_config(model)
    family = str(config.model_type)
    get_adapter(model)  # raises with the list of supported families
    expected = _CLASSIFIERS[family]
    if type(model).__name__ != expected:
        raise UnsupportedArchitectureError(
            f"The fast mask evaluator needs a {expected}, got {type(model).__name__}; load the "
            "model with pruning.models.load_classifier."
        )
    if getattr(config, "is_decoder", False):
        raise UnsupportedArchitectureError(
            "The model is configured as a decoder (causal attention); the fast mask evaluator "
            "supports bidirectional encoders only. Set config.is_decoder = False."
        )
    size = head_dim(model)
    layers = tuple(
        _build_layer(layer, family, heads, size, index)
        for index, (layer, heads) in enumerate(
            zip(encoder_layers(model), kept_heads(model), strict=True)
        )
    )
    base = _child(model, "base_model")
    project = getattr(base, "embeddings_project", None)
    return EncoderPieces(
        family=family,
        layers=layers,
        embeddings=_child(base, "embeddings"),
        embeddings_project=project if isinstance(project, nn.Module) else None,
        pooler=_child(base, "pooler") if family == "bert" else None,
        pre_classifier=_child(model, "pre_classifier") if family == "distilbert" else None,
        dropout=_child(model, "dropout") if family in ("bert", "distilbert") else None,
        classifier=_child(model, "classifier"),
    )
