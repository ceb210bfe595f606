"""Joint query/key point sets per head, AttentionViz-style (Yeh et al., "AttentionViz: A Global
View of Transformer Attention", IEEE VIS 2023, https://arxiv.org/abs/2305.03210).

For a set of sentences, every token has one query and one key vector per head. The tokens are
sampled once for the whole model (seeded, at most ``max_points // 2`` tokens), and each sampled
token keeps **both** its query and its key, so every head's point set holds ``2 * M`` points:
the ``M`` queries first, then the ``M`` keys of the same tokens in the same order. The same
tokens are used for every head and, since pruning does not change tokenisation, for the original
and a pruned model alike: their views are comparable point for point.

Removed heads (bool ``present`` ``(n_layers, n_heads)`` False; the capture's NaN) have no points.
Projections live in :mod:`pruning.projections`, the disk cache in :mod:`pruning.embedding_cache`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

    from pruning.capture import SentenceCapture

__all__ = [
    "DEFAULT_MAX_POINTS",
    "JointPoints",
    "TokenSample",
    "capture_points",
    "collect_points",
    "normalise_qk",
    "sample_tokens",
]

DEFAULT_MAX_POINTS = 1000
QUERY, KEY = "q", "k"


@dataclass(frozen=True)
class TokenSample:
    """The tokens whose query and key vectors are drawn, shared by every head.

    Attributes:
        sentence: int ``(M,)``, the index of each token's sentence.
        position: int ``(M,)``, its position in the tokenised sentence (0 = the first special
            token).
        tokens: the ``M`` token texts (word pieces, special tokens included).
        total_tokens: tokens in all sentences before the cap.
        n_sentences: how many sentences the tokens came from.
    """

    sentence: np.ndarray
    position: np.ndarray
    tokens: tuple[str, ...]
    total_tokens: int
    n_sentences: int

    @property
    def n_tokens(self) -> int:
        """``M``: the sampled tokens."""
        return len(self.tokens)

    @property
    def n_points(self) -> int:
        """``2 * M``: each sampled token gives a query point and a key point."""
        return 2 * len(self.tokens)

    def point_kinds(self) -> np.ndarray:
        """``(2M,)`` strings: ``"q"`` for the first ``M`` points, ``"k"`` for the rest."""
        return np.array([QUERY] * self.n_tokens + [KEY] * self.n_tokens)

    def point_sentences(self) -> np.ndarray:
        """``(2M,)`` sentence index of each point."""
        return np.concatenate([self.sentence, self.sentence])

    def point_positions(self) -> np.ndarray:
        """``(2M,)`` token position of each point."""
        return np.concatenate([self.position, self.position])

    def point_tokens(self) -> np.ndarray:
        """``(2M,)`` token text of each point."""
        return np.array(list(self.tokens) * 2, dtype=object)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (inverse of :meth:`from_dict`)."""
        return {
            "sentence": [int(s) for s in self.sentence],
            "position": [int(p) for p in self.position],
            "tokens": list(self.tokens),
            "total_tokens": int(self.total_tokens),
            "n_sentences": int(self.n_sentences),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenSample:
        """Rebuild from :meth:`to_dict`.

        Raises:
            ValueError: the lists differ in length (a damaged file).
        """
        sentence = np.asarray(data["sentence"], dtype=np.int64)
        position = np.asarray(data["position"], dtype=np.int64)
        tokens = tuple(str(t) for t in data["tokens"])
        if not len(sentence) == len(position) == len(tokens):
            raise ValueError("A token sample needs one sentence and position per token.")
        return cls(sentence, position, tokens, int(data["total_tokens"]), int(data["n_sentences"]))


@dataclass(frozen=True)
class JointPoints:
    """Per-head query and key vectors of the sampled tokens.

    Attributes:
        sample: which tokens (shared by all heads).
        queries, keys: float32 ``(n_layers, n_heads, M, d)``; NaN for removed heads.
        present: bool ``(n_layers, n_heads)``, True where the head exists in the model.
    """

    sample: TokenSample
    queries: np.ndarray
    keys: np.ndarray
    present: np.ndarray

    @property
    def grid(self) -> tuple[int, int]:
        """``(n_layers, n_heads)``."""
        n_layers, n_heads = self.present.shape
        return int(n_layers), int(n_heads)

    def head_points(self, layer: int, head: int, *, normalise: bool = True) -> np.ndarray | None:
        """The joint set of one head: float32 ``(2M, d)``, queries then keys; None if removed.

        Args:
            normalise: align the keys to the queries first (see :func:`normalise_qk`).
        """
        if not self.present[layer, head]:
            return None
        queries, keys = self.queries[layer, head], self.keys[layer, head]
        if normalise:
            queries, keys = normalise_qk(queries, keys)
        return np.concatenate([queries, keys]).astype(np.float32)


def normalise_qk(queries: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AttentionViz's normalisation of one head: shared centroid, equal mean norms.

    The keys are translated so that their centroid is the queries' centroid, then the queries
    are scaled by ``c`` and the keys by ``1 / c`` so that both have the same mean norm. Neither
    step changes the head's attention: a translation ``k + v`` adds ``q . v`` to every logit of
    one query (softmax ignores it), and ``c q . k / c = q . k``. Without it, queries and keys
    often form two far-apart clouds and the joint projection shows little else.

    Shapes: ``queries`` and ``keys`` float ``(M, d)``; returns two float64 ``(M, d)`` arrays.
    """
    q = np.asarray(queries, dtype=np.float64)
    k = np.asarray(keys, dtype=np.float64)
    if q.size == 0:
        return q, k
    k = k - k.mean(axis=0) + q.mean(axis=0)
    q_norm = float(np.linalg.norm(q, axis=1).mean())
    k_norm = float(np.linalg.norm(k, axis=1).mean())
    if q_norm > 0 and k_norm > 0:
        scale = np.sqrt(k_norm / q_norm)
        q, k = q * scale, k / scale
    return q, k


def sample_tokens(
    tokens: Sequence[Sequence[str]], *, max_points: int = DEFAULT_MAX_POINTS, seed: int = 0
) -> TokenSample:
    """Pick at most ``max_points // 2`` tokens over all sentences, uniformly, seeded.

    Args:
        tokens: the tokens of each sentence (special tokens included).
        max_points: the cap on points per head; each token gives two (its query and its key).
        seed: the sampling seed; the same seed and sentences give the same sample.

    Raises:
        ValueError: ``max_points`` below 2, or no tokens at all.
    """
    if max_points < 2:
        raise ValueError(
            f"max_points is {max_points}; use at least 2 (each token gives a query and a key)."
        )
    lengths = [len(t) for t in tokens]
    sentence = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    position = np.concatenate([np.zeros(0, dtype=np.int64)] + [np.arange(n) for n in lengths])
    flat = [str(token) for sentence_tokens in tokens for token in sentence_tokens]
    if not flat:
        raise ValueError("The sentences have no tokens; give at least one non-empty sentence.")
    keep = min(len(flat), max_points // 2)
    rows = np.arange(len(flat))
    if keep < len(flat):
        rows = np.sort(np.random.default_rng(seed).choice(len(flat), size=keep, replace=False))
    return TokenSample(
        sentence=sentence[rows],
        position=position[rows],
        tokens=tuple(flat[i] for i in rows),
        total_tokens=len(flat),
        n_sentences=len(tokens),
    )


def collect_points(
    captures: Sequence[SentenceCapture], *, max_points: int = DEFAULT_MAX_POINTS, seed: int = 0
) -> JointPoints:
    """The joint query/key point sets of every head from per-sentence captures.

    Args:
        captures: :func:`pruning.capture.capture_sentences` results made with ``with_qk=True``.
        max_points: cap on points per head (queries + keys), see :func:`sample_tokens`.
        seed: the token sampling seed.

    Raises:
        ValueError: no captures, or captures without query/key vectors.
    """
    if not captures:
        raise ValueError("No captures given; capture at least one sentence first.")
    sample = sample_tokens([c.tokens for c in captures], max_points=max_points, seed=seed)
    queries, keys = [], []
    for index, capture in enumerate(captures):
        if capture.queries is None or capture.keys is None:
            raise ValueError("The captures hold no query/key vectors; capture with with_qk=True.")
        positions = sample.position[sample.sentence == index]
        if positions.size:
            queries.append(capture.queries[:, :, positions].numpy())
            keys.append(capture.keys[:, :, positions].numpy())
    return JointPoints(
        sample=sample,
        queries=np.concatenate(queries, axis=2).astype(np.float32),
        keys=np.concatenate(keys, axis=2).astype(np.float32),
        present=captures[0].present.numpy().astype(bool),
    )


def capture_points(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    *,
    max_length: int = 128,
    max_points: int = DEFAULT_MAX_POINTS,
    seed: int = 0,
    batch_size: int = 16,
) -> JointPoints:
    """Capture query/key vectors of ``sentences`` in batches and collect the joint point sets.

    Args:
        model: a supported classifier, dense or pruned; not modified.
        tokenizer: its tokenizer.
        sentences: non-empty texts, each truncated to ``max_length`` tokens.
        max_points, seed: the cap on points per head and its sampling seed.
        batch_size: sentences per forward pass (memory grows with it).

    Raises:
        ValueError: no sentences, an empty one, or a batch size below 1.
    """
    from pruning.capture import capture_sentences

    texts = [str(s) for s in sentences]
    if not texts or any(not t.strip() for t in texts):
        raise ValueError("Give at least one sentence, and no empty ones, to embed.")
    if batch_size < 1:
        raise ValueError(f"batch_size is {batch_size}; use at least 1.")
    captures = []
    for start in range(0, len(texts), batch_size):
        batch = capture_sentences(
            model, tokenizer, texts[start : start + batch_size], max_length=max_length
        )
        # Attention maps are not needed here: drop them so 50 sentences stay small in memory.
        captures += [dataclasses.replace(c, attentions=c.attentions.new_empty(0)) for c in batch]
    return collect_points(captures, max_points=max_points, seed=seed)
