"""The five attention-map patterns MCAP's CNN learns: a seeded generator and a rule labeller.

Rajapaksha and Crespi ("Explainable Attention Pruning: A Meta-learning-based Approach", IEEE
Transactions on Artificial Intelligence, 2024, https://openreview.net/forum?id=2HXUDneIMH,
Section II-D) train their 5-convolution CNN on 1,000 labelled attention-map images of "five
frequently occurring patterns of self-attention maps: vertical, diagonal, vertical+diagonal,
block and heterogeneous [31]" (400 images from Kovaleva et al. [31], 600 from Prasanna et al.
[14]), noting that "except for vertical attention maps, all other attention maps help to
interpret linguistic information". Those images cannot be downloaded here, so HeadScope builds
the closest offline reading from two sources:

1. :func:`generate_pattern_map` draws each pattern as Kovaleva et al. ("Revealing the Dark Secrets
   of BERT", EMNLP 2019, Section 4.1 and Figure 1) describe it, on a token sequence
   ``[CLS] ... [SEP]`` (or a pair ``[CLS] A [SEP] B [SEP]``) of 16-64 tokens, with noise:

   * **vertical**: every query attends to the special tokens ``[CLS]`` / ``[SEP]`` (the same
     columns in every row; Kovaleva: "mainly corresponds to attention to special BERT tokens");
   * **diagonal**: attention to the previous / the same / the following token (a dominant offset
     per map; Kovaleva: "attention to the previous/following tokens");
   * **vertical+diagonal**: both at once, 40-60% of the structured mass each;
   * **block**: a sentence pair in which each token attends (near uniformly) within its own
     sentence (Kovaleva: "intra-sentence attention for the tasks with two distinct sentences");
   * **heterogeneous**: no shared structure: every row has its own random peaks (Kovaleva:
     "highly variable depending on the specific input and cannot be characterized by a
     distinctive structure").

   A share of 5-25% of each row is noise (random positive weights); rows sum to 1.
2. :func:`label_maps` labels the model's own attention maps by rules on their measured structure
   (:func:`map_structure`): the shares of attention to ``[CLS]`` / ``[SEP]``, to the token itself
   and its neighbours (the statistics of :func:`pruning.head_roles.head_roles`), the share on the
   two most-attended key columns, and the block structure: the share each query keeps inside its
   own sentence versus the other sentence of a pair (a single sentence: the two parts of its most
   block-like cut). Maps that fit no rule, or are shorter than :data:`MIN_LENGTH` tokens, stay
   unlabelled.

The rules (shares are means over the query rows; ``v = cls + sep``, ``d = self + previous +
next``; thresholds in :data:`RULES`), checked in this order:

* vertical: ``v >= 0.6`` and ``d < 0.2``;
* diagonal: ``d >= 0.6`` and ``v < 0.2``;
* vertical+diagonal: ``v >= 0.25``, ``d >= 0.25`` and ``v + d >= 0.7``;
* block: ``own >= 0.6`` of each sentence (part) token's attention inside its own sentence (part),
  ``cross <= 0.3`` (at most 30% of what a uniform row would put in the other ones), ``v < 0.25``
  and ``d < 0.3``;
* heterogeneous: ``v < 0.25``, ``d < 0.25``, the two strongest columns hold ``< 0.5``, and
  ``cross >= 0.5`` where it is defined (no preference for the own part that a block would show).

Maps: float ``(T, T)`` (or ``(..., T, T)``), rows = queries, each row sums to 1.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pruning.head_roles import SEP_TOKENS, head_roles

__all__ = [
    "MIN_LENGTH",
    "PATTERNS",
    "RULES",
    "VERTICAL",
    "GeneratedMap",
    "generate_pattern_map",
    "generate_pattern_set",
    "label_maps",
    "map_structure",
    "pattern_input",
]

PATTERNS: tuple[str, ...] = ("vertical", "diagonal", "vertical+diagonal", "block", "heterogeneous")
VERTICAL = PATTERNS.index("vertical")
MIN_LENGTH = 16  # shorter maps: a uniform row already puts 3/T on the diagonal band
MAX_LENGTH = 64
MIN_BLOCK_SENTENCE = 12  # block maps: each sentence long enough that its band stays small
MIN_BLOCK_PART = 6  # a single sentence is cut in two parts of at least this many tokens
CLS_TOKEN, SEP_TOKEN, WORD_TOKEN = "[CLS]", "[SEP]", "tok"
RULES: dict[str, float] = {
    "vertical_min": 0.6,
    "diagonal_min": 0.6,
    "pure_other_max": 0.2,
    "mixed_each_min": 0.25,
    "mixed_sum_min": 0.7,
    "block_own_min": 0.6,
    "block_cross_max": 0.3,
    "block_diagonal_max": 0.3,
    "flat_max": 0.25,
    "columns_max": 0.5,
    "heterogeneous_cross_min": 0.5,
}
_NOISE = (0.05, 0.25)


@dataclass(frozen=True)
class GeneratedMap:
    """One generated map: ``attention`` float32 ``(T, T)`` (rows sum to 1), its tokens
    (``[CLS]``, ``[SEP]`` and ``tok``) and its pattern index into :data:`PATTERNS`."""

    attention: torch.Tensor
    tokens: tuple[str, ...]
    pattern: int


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _integer(generator: torch.Generator, low: int, high: int) -> int:
    """A whole number in ``[low, high]``."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _normalised(rows: torch.Tensor) -> torch.Tensor:
    return rows / rows.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def _tokens(length: int, seps: Sequence[int]) -> tuple[str, ...]:
    tokens = [WORD_TOKEN] * length
    tokens[0] = CLS_TOKEN
    for position in seps:
        tokens[position] = SEP_TOKEN
    return tuple(tokens)


def _vertical(length: int, seps: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Every row on ``[CLS]`` and the ``[SEP]`` columns, one random split per map."""
    columns = [0, *seps]
    weights = torch.rand(len(columns), generator=generator) ** 2 + 0.05
    jitter = 1.0 + 0.2 * torch.rand(length, len(columns), generator=generator)
    rows = torch.zeros(length, length)
    rows[:, columns] = weights * jitter
    return _normalised(rows)


def _diagonal(length: int, generator: torch.Generator) -> torch.Tensor:
    """Offsets -1, 0, +1 (previous, self, next) with a dominant one per map."""
    weights = 0.1 * torch.rand(3, generator=generator)
    weights[_integer(generator, 0, 2)] += 1.0
    rows = torch.zeros(length, length)
    index = torch.arange(length)
    for offset, weight in zip((-1, 0, 1), weights.tolist(), strict=True):
        keys = index + offset
        inside = (keys >= 0) & (keys < length)
        rows[index[inside], keys[inside]] = weight
    return _normalised(rows)


def _block(length: int, seps: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Each sentence token attends inside its own sentence; special rows stay empty."""
    rows = torch.zeros(length, length)
    start = 1
    for end in seps:
        span = slice(start, end)
        size = end - start
        rows[span, span] = 0.5 + torch.rand(size, size, generator=generator)
        start = end + 1
    return rows


def _heterogeneous(length: int, generator: torch.Generator) -> torch.Tensor:
    """Rows with their own random peaks (higher powers: fewer, sharper peaks)."""
    power = _uniform(generator, 1.0, 8.0)
    return _normalised(torch.rand(length, length, generator=generator) ** power)


def generate_pattern_map(
    pattern: str, generator: torch.Generator, *, length: int | None = None, pair: bool | None = None
) -> GeneratedMap:
    """One seeded attention map of ``pattern`` (see the module docstring for each pattern).

    Args:
        pattern: one of :data:`PATTERNS`.
        generator: the source of every random choice (length, pair, weights, noise).
        length: tokens ``T`` (default: drawn in 16..64; block maps need at least 27).
        pair: a sentence pair with a middle ``[SEP]`` (default: drawn; block maps are pairs).

    Returns:
        the map (float32 ``(T, T)``, rows sum to 1), its tokens and its pattern index.

    Raises:
        ValueError: for an unknown pattern or a length the pattern cannot have.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"Unknown pattern {pattern!r}; use one of {', '.join(PATTERNS)}.")
    is_block = pattern == "block"
    shortest = 2 * MIN_BLOCK_SENTENCE + 3 if is_block else MIN_LENGTH
    if length is None:
        length = _integer(generator, max(shortest, MIN_LENGTH), MAX_LENGTH)
    if length < shortest:
        raise ValueError(f"A {pattern} map needs at least {shortest} tokens (got {length}).")
    coin = bool(torch.rand((), generator=generator) < 0.5)
    is_pair = True if is_block else (coin if pair is None else pair)
    if is_pair:
        low = MIN_BLOCK_SENTENCE + 1 if is_block else 3
        middle = _integer(generator, low, length - 1 - (low - 1) - 1)
        seps: list[int] = [middle, length - 1]
    else:
        seps = [length - 1]
    if pattern == "vertical":
        structured = _vertical(length, seps, generator)
    elif pattern == "diagonal":
        structured = _diagonal(length, generator)
    elif pattern == "vertical+diagonal":
        share = _uniform(generator, 0.4, 0.6)
        diagonal = _diagonal(length, generator)
        structured = share * _vertical(length, seps, generator) + (1 - share) * diagonal
    elif is_block:
        structured = _block(length, seps, generator)
    else:
        structured = _heterogeneous(length, generator)
    noise_share = _uniform(generator, *_NOISE)
    noise = _normalised(torch.rand(length, length, generator=generator) ** 3 + 1e-3)
    has_structure = structured.sum(dim=-1, keepdim=True) > 0
    structured = _normalised(structured)
    attention = torch.where(
        has_structure, (1 - noise_share) * structured + noise_share * noise, noise
    )
    index = PATTERNS.index(pattern)
    return GeneratedMap(_normalised(attention).float(), _tokens(length, seps), index)


def pattern_input(maps: torch.Tensor) -> torch.Tensor:
    """The CNN's view of resized maps: each row rescaled to sum to ``S`` (mean value 1).

    Pooling a ``T x T`` map to ``S x S`` leaves values near ``1 / T``; rescaling the rows makes
    maps of every length look alike to the CNN. Shapes: ``(..., S, S) -> (..., S, S)``.
    """
    size = maps.shape[-1]
    return maps / maps.sum(dim=-1, keepdim=True).clamp_min(1e-12) * size


def generate_pattern_set(
    per_pattern: int, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, list[GeneratedMap]]:
    """``per_pattern`` generated maps of each pattern, resized for the CNN.

    Returns:
        CNN inputs float32 ``(5 * per_pattern, S, S)`` (:func:`pattern_input` of the maps
        resized by adaptive average pooling), labels int64 ``(5 * per_pattern,)`` (pattern by
        pattern, in :data:`PATTERNS` order) and the generated maps themselves.
    """
    generated = [
        generate_pattern_map(pattern, generator) for pattern in PATTERNS for _ in range(per_pattern)
    ]
    resized = [F.adaptive_avg_pool2d(item.attention[None], size)[0] for item in generated]
    maps = pattern_input(torch.stack(resized)) if resized else torch.zeros(0, size, size)
    labels = torch.tensor([item.pattern for item in generated], dtype=torch.long)
    return maps, labels, generated


@dataclass(frozen=True)
class _Capture:
    """A single text's attention in the shape :func:`pruning.head_roles.head_roles` reads."""

    tokens: tuple[str, ...]
    attentions: np.ndarray
    present: np.ndarray


def _segments(tokens: Sequence[str], sep_tokens: Collection[str]) -> list[np.ndarray]:
    """Positions of each sentence: the runs of tokens between ``[CLS]`` (first) and separators."""
    runs: list[np.ndarray] = []
    current: list[int] = []
    for position, token in enumerate(tokens):
        if position == 0 or token in sep_tokens:
            if current:
                runs.append(np.asarray(current))
            current = []
        else:
            current.append(position)
    if current:
        runs.append(np.asarray(current))
    return runs


def _best_split(
    values: np.ndarray, words: np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """``own`` and ``cross`` of one sentence cut in two at its most block-like point.

    The cut (each part at least :data:`MIN_BLOCK_PART` tokens) minimises the cross-part share
    relative to a uniform row's; NaN for a sentence too short to cut. Prefix sums give every
    cut's cross share at once: ``(..., T, T) -> (...), (...)``.
    """
    lead = values.shape[:-2]
    count = len(words)
    if count < 2 * MIN_BLOCK_PART:
        return np.full(lead, np.nan), np.full(lead, np.nan)
    inner = values[..., words[:, None], words[None, :]]
    prefix = np.zeros((*lead, count + 1, count + 1))
    prefix[..., 1:, 1:] = inner.cumsum(axis=-2).cumsum(axis=-1)
    cuts = np.arange(MIN_BLOCK_PART, count - MIN_BLOCK_PART + 1)
    corner = prefix[..., cuts, cuts]
    cross = (prefix[..., cuts, count] - corner) + (prefix[..., count, cuts] - corner)
    ratio = cross / (2 * cuts * (count - cuts) / length)
    best = ratio.argmin(axis=-1)[..., None]
    own = (prefix[..., count, count] - np.take_along_axis(cross, best, axis=-1)[..., 0]) / count
    return own, np.take_along_axis(ratio, best, axis=-1)[..., 0]


def map_structure(
    attentions: Any, tokens: Sequence[str], *, sep_tokens: Collection[str] = SEP_TOKENS
) -> dict[str, np.ndarray]:
    """The measured structure of a text's attention maps, one value per map.

    Args:
        attentions: float ``(..., T, T)`` (e.g. ``(n_layers, n_heads, T, T)``; a single ``(T,
            T)`` map works too), rows = queries summing to 1.
        tokens: the ``T`` token texts; the first is ``[CLS]`` / ``<s>``.
        sep_tokens: separator texts (``[SEP]``, ``</s>`` by default).

    Returns:
        float64 arrays of the leading shape: ``cls``, ``sep``, ``self``, ``previous``, ``next``
        (from :func:`pruning.head_roles.head_roles`), ``vertical`` (``cls + sep``),
        ``diagonal`` (``self + previous + next``), ``columns`` (mean share on the two
        most-attended keys), ``own`` (mean share of a sentence token's attention inside its own
        sentence), ``cross`` (the share in the other sentences divided by the share a uniform row
        would put there: 1 = no preference for its own sentence, 0 = none across) and
        ``sentences`` (their number, the same everywhere). A single sentence is cut in two
        contiguous parts at its most block-like point (each part at least 6 tokens); ``own`` and
        ``cross`` are NaN when it is too short to cut.
    """
    values = np.asarray(
        attentions.detach().cpu().numpy() if hasattr(attentions, "detach") else attentions,
        dtype=np.float64,
    )
    lead = values.shape[:-2]
    grid = values.reshape(-1, 1, *values.shape[-2:]) if values.ndim != 4 else values
    present = np.ones(grid.shape[:2], dtype=bool)
    roles = head_roles([_Capture(tuple(tokens), grid, present)], sep_tokens=sep_tokens)
    out = {name: roles[name].reshape(lead) for name in ("cls", "sep", "self", "previous", "next")}
    out["vertical"] = out["cls"] + out["sep"]
    out["diagonal"] = out["self"] + out["previous"] + out["next"]
    column_mass = np.sort(values.mean(axis=-2), axis=-1)
    out["columns"] = column_mass[..., -2:].sum(axis=-1)
    sentences = _segments(tokens, sep_tokens)
    if len(sentences) >= 2:
        words = np.concatenate(sentences)
        own = sum(values[..., s[:, None], s[None, :]].sum(axis=(-2, -1)) for s in sentences)
        inside = values[..., words[:, None], words[None, :]].sum(axis=(-2, -1))
        uniform_cross = sum(len(s) * (len(words) - len(s)) for s in sentences) / len(tokens)
        out["own"] = own / len(words)
        out["cross"] = (inside - own) / uniform_cross
    elif sentences:
        out["own"], out["cross"] = _best_split(values, sentences[0], len(tokens))
    else:
        out["own"] = np.full(lead, np.nan)
        out["cross"] = np.full(lead, np.nan)
    out["sentences"] = np.full(lead, float(len(sentences)))
    return out


def label_maps(structure: dict[str, np.ndarray], length: int) -> np.ndarray:
    """Pattern indices (into :data:`PATTERNS`) of maps measured by :func:`map_structure`.

    Args:
        structure: :func:`map_structure`'s output.
        length: tokens ``T`` of the maps; below :data:`MIN_LENGTH` nothing is labelled.

    Returns:
        int64 array of the maps' leading shape; -1 where no rule fits (unlabelled).
    """
    r = RULES
    v, d = structure["vertical"], structure["diagonal"]
    labels = np.full(v.shape, -1, dtype=np.int64)
    if length < MIN_LENGTH:
        return labels
    pair = np.isfinite(structure["cross"])
    own = np.nan_to_num(structure["own"], nan=0.0)
    cross = np.nan_to_num(structure["cross"], nan=1.0)
    rules = [
        ("vertical", (v >= r["vertical_min"]) & (d < r["pure_other_max"])),
        ("diagonal", (d >= r["diagonal_min"]) & (v < r["pure_other_max"])),
        (
            "vertical+diagonal",
            (v >= r["mixed_each_min"]) & (d >= r["mixed_each_min"]) & (v + d >= r["mixed_sum_min"]),
        ),
        (
            "block",
            pair
            & (own >= r["block_own_min"])
            & (cross <= r["block_cross_max"])
            & (v < r["flat_max"])
            & (d < r["block_diagonal_max"]),
        ),
        (
            "heterogeneous",
            (v < r["flat_max"])
            & (d < r["flat_max"])
            & (structure["columns"] < r["columns_max"])
            & (~pair | (cross >= r["heterogeneous_cross_min"])),
        ),
    ]
    for name, fits in rules:
        labels = np.where((labels < 0) & fits, PATTERNS.index(name), labels)
    return labels
