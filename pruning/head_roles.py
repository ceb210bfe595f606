"""What each attention head tends to look at: entropy and where its attention mass goes.

:func:`head_roles` turns captured attention (:class:`pruning.capture.SentenceCapture`, or anything
with the same ``tokens`` / ``attentions`` / ``present`` fields) into one ``(n_layers, n_heads)``
map per role, so the layer x head grid can be coloured by it (:mod:`viz.attention`). Every value
is a mean over all query tokens of all sentences, each query token weighing the same:

* ``entropy``: Shannon entropy of the query's attention row, in **bits**, not normalised (a row
  spread evenly over ``T`` tokens has ``log2(T)`` bits, one focused on a single token 0), so it
  grows with sentence length; compare heads on the same sentences.
* ``cls``: share of attention on the first token, the ``[CLS]`` (``<s>`` for RoBERTa) that every
  supported tokenizer puts first.
* ``sep``: share on the separator / end tokens, found by their text (``[SEP]``, ``</s>``: see
  :data:`SEP_TOKENS`); a sentence pair's separators all count.
* ``self``: share on the query token itself (the diagonal).
* ``previous`` / ``next``: share on the token just before / after the query; the first (last)
  query token has no such neighbour and is left out of that mean.

Shares overlap (a ``[SEP]`` query attending to itself counts for ``self`` and ``sep``), so they
need not sum to 1. Heads absent from the model (``present`` False) are NaN in every map.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

import numpy as np

__all__ = ["HEAD_ROLES", "ROLE_HELP", "SEP_TOKENS", "CaptureLike", "head_roles", "sep_positions"]

# Name -> short label (plot titles, colour bars, CLI tables), in display order.
HEAD_ROLES: dict[str, str] = {
    "entropy": "entropy (bits)",
    "cls": "share to [CLS]",
    "sep": "share to [SEP]",
    "self": "share to itself",
    "previous": "share to previous",
    "next": "share to next",
}

ROLE_HELP: dict[str, str] = {
    "entropy": "How spread out each head's attention is, in bits (0 = on a single token, "
    "log2(T) = evenly over all T tokens).",
    "cls": "Share of attention on the first token ([CLS] or <s>), a common 'no-op' target.",
    "sep": "Share of attention on separator / end tokens ([SEP] or </s>), another no-op target.",
    "self": "Share of attention each token pays to itself.",
    "previous": "Share of attention on the token just before (positional, 'previous-token' heads).",
    "next": "Share of attention on the token just after ('next-token' heads).",
}

SEP_TOKENS: frozenset[str] = frozenset({"[SEP]", "</s>"})


class CaptureLike(Protocol):
    """The fields of :class:`pruning.capture.SentenceCapture` that roles need."""

    @property
    def tokens(self) -> tuple[str, ...]: ...

    @property
    def attentions(self) -> Any: ...

    @property
    def present(self) -> Any: ...


def sep_positions(tokens: Sequence[str], sep_tokens: Collection[str] = SEP_TOKENS) -> list[int]:
    """Indices of the separator / end tokens in ``tokens`` (``[SEP]``, ``</s>`` by default)."""
    return [i for i, token in enumerate(tokens) if token in sep_tokens]


def _as_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _checked(capture: CaptureLike, index: int) -> tuple[np.ndarray, np.ndarray]:
    """``(attentions (L, H, T, T) float64, present (L, H) bool)`` of one capture, validated."""
    attentions = _as_numpy(capture.attentions)
    present = np.asarray(
        capture.present.cpu() if hasattr(capture.present, "cpu") else capture.present
    )
    length = len(capture.tokens)
    if attentions.ndim != 4 or attentions.shape[2] != attentions.shape[3]:
        raise ValueError(
            f"Sentence {index}: attentions must have shape (n_layers, n_heads, T, T); got "
            f"{attentions.shape}. Pass SentenceCapture.attentions from pruning.capture."
        )
    if attentions.shape[2] != length or length == 0:
        raise ValueError(
            f"Sentence {index} has {length} tokens but its attention covers "
            f"{attentions.shape[2]}; pass the tokens the attention was captured for."
        )
    if present.dtype != np.bool_ or present.shape != attentions.shape[:2]:
        raise ValueError(
            f"Sentence {index}: present must be bool of shape {attentions.shape[:2]} (True where "
            f"the head exists); got {present.dtype} {present.shape}."
        )
    return attentions, present


def head_roles(
    captures: Sequence[CaptureLike], *, sep_tokens: Collection[str] = SEP_TOKENS
) -> dict[str, np.ndarray]:
    """Per-head role scores, averaged over every query token of every sentence.

    Args:
        captures: one or more captures of the same model (same ``present`` grid); each has
            ``tokens`` (``T``), ``attentions`` ``(n_layers, n_heads, T, T)`` (rows = queries,
            NaN for removed heads) and ``present`` bool ``(n_layers, n_heads)``.
        sep_tokens: token texts counted as separators for the ``sep`` role; pass the tokenizer's
            ``sep_token`` / ``eos_token`` for a tokenizer whose separator is not in
            :data:`SEP_TOKENS`.

    Returns:
        ``{role: float64 (n_layers, n_heads)}`` for each name of :data:`HEAD_ROLES`, in that
        order; NaN for heads absent from the model (and for ``previous`` / ``next`` when no
        sentence has two tokens).

    Raises:
        ValueError: no captures, or shapes that do not fit together (the message says which).
    """
    if not captures:
        raise ValueError("Give at least one captured sentence (pruning.capture.capture_sentences).")
    checked = [_checked(capture, index) for index, capture in enumerate(captures)]
    present = checked[0][1]
    sums = {name: np.zeros(present.shape) for name in HEAD_ROLES}
    counts = {"all": 0, "neighbour": 0}
    for index, (capture, (attentions, grid)) in enumerate(zip(captures, checked, strict=True)):
        if not np.array_equal(present, grid):
            raise ValueError(
                f"Sentence {index} comes from another head grid than sentence 0; compute roles "
                "per model (one call per model's captures)."
            )
        length = attentions.shape[-1]
        logs = np.log2(attentions, out=np.zeros_like(attentions), where=attentions > 0)
        sums["entropy"] -= (attentions * logs).sum(axis=(-2, -1))
        sums["cls"] += attentions[..., 0].sum(axis=-1)
        seps = sep_positions(capture.tokens, sep_tokens)
        sums["sep"] += attentions[..., seps].sum(axis=(-2, -1))
        sums["self"] += attentions.diagonal(axis1=-2, axis2=-1).sum(axis=-1)
        # diagonal(-1) holds A[i + 1, i]: each query's previous token; diagonal(1) its next one.
        sums["previous"] += attentions.diagonal(-1, axis1=-2, axis2=-1).sum(axis=-1)
        sums["next"] += attentions.diagonal(1, axis1=-2, axis2=-1).sum(axis=-1)
        counts["all"] += length
        counts["neighbour"] += length - 1
    roles: dict[str, np.ndarray] = {}
    for name, total in sums.items():
        count = counts["neighbour"] if name in ("previous", "next") else counts["all"]
        values = total / count if count else np.full(present.shape, np.nan)
        values[~present] = np.nan
        roles[name] = values
    return roles
