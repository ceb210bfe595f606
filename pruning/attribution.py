"""Word attributions as data: the one word segmentation, :class:`Attribution`, and agreement.

Everything here is plain Python and numpy (no model): :mod:`pruning.explain` computes
attributions, :mod:`pruning.faithfulness` perturbs texts with the same words, and ``viz`` draws
them. All three see a text through :func:`split_words`, and every text that reaches a model
during explanation or faithfulness is a subset of those words joined by single spaces
(:func:`join_words`), so "a word" and "removing a word" mean the same thing everywhere.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

__all__ = [
    "Attribution",
    "agreement",
    "join_words",
    "seed_stability",
    "split_words",
    "top_k_positions",
]

ATTRIBUTION_VERSION = 1
_WORD = re.compile(r"\S+")


def split_words(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the words of ``text``: maximal runs of non-whitespace.

    This is the one segmentation used by LIME, SHAP and the faithfulness metrics:

    * LIME gets it as ``LimeTextExplainer(split_expression=<these words>, bow=False,
      mask_string="")``: each occurrence of a word is its own feature (``bow=False``), and a
      removed word is deleted (``mask_string=""``) instead of replaced by LIME's ``UNKWORDZ``.
    * SHAP gets it as ``shap.maskers.Text(tokenizer=<these words>, mask_token=" ")``: a
      tokenizer that returns these words as tokens with their character offsets, framed by two
      empty marker tokens that play the part of ``[CLS]``/``[SEP]`` (SHAP never masks them, and
      they let the masked word be replaced by a blank instead of ``[MASK]`` or ``...``).
    * Faithfulness removes or keeps these spans (:func:`pruning.faithfulness.remove_words`).

    In all three the text handed to the model is the kept words joined by single spaces (LIME's
    and SHAP's outputs have their whitespace collapsed), so identical word subsets give identical
    model inputs. Punctuation stays attached to its word ("terrible." is one word): a separate
    punctuation feature would be noise, and BERT-style tokenizers split it off again anyway.
    """
    return [match.span() for match in _WORD.finditer(text)]


def join_words(text: str, spans: Sequence[tuple[int, int]], keep: Iterable[int]) -> str:
    """The words at the ``keep`` positions, in text order, joined by single spaces."""
    chosen = sorted(set(keep))
    return " ".join(text[spans[i][0] : spans[i][1]] for i in chosen if 0 <= i < len(spans))


def top_k_positions(values: Sequence[float], k: int) -> list[int]:
    """Positions of the ``k`` largest values (ties: the earlier word first)."""
    order = sorted(range(len(values)), key=lambda i: (-float(values[i]), i))
    return order[: max(0, k)]


@dataclass(frozen=True)
class Attribution:
    """Signed word attributions of one model's prediction on one text.

    Attributes:
        method: ``"lime"`` or ``"shap"``.
        model_label: what the UI shows for the model (``ModelRef.label``).
        model_key: ``ref_fingerprint`` of the model (``"prepared:<key>"`` / ``"run:<key>"``).
        text: the text as typed; ``spans`` index into it.
        words: the words (:func:`split_words`), one per span.
        spans: character spans of the words.
        values: one signed value per word toward ``target``; positive = supports ``target``.
            LIME: the local linear model's weights; SHAP: partition (Owen) values in probability.
        target: the class the values explain.
        label_names: class names in class-id order.
        probabilities: the model's class probabilities for the full text.
        samples: LIME perturbation samples or SHAP ``max_evals``.
        seed: the seed (LIME's ``random_state``; SHAP's tie-breaking draws).
        seconds: wall time of the explanation.
        base_value: LIME's intercept or SHAP's value with every word removed, toward ``target``.
    """

    method: str
    model_label: str
    model_key: str
    text: str
    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    values: tuple[float, ...]
    target: int
    label_names: tuple[str, ...]
    probabilities: tuple[float, ...]
    samples: int
    seed: int
    seconds: float
    base_value: float | None = None

    def __post_init__(self) -> None:
        if not (len(self.words) == len(self.spans) == len(self.values)):
            raise ValueError(
                f"An attribution needs one value and one span per word; got {len(self.words)} "
                f"words, {len(self.spans)} spans and {len(self.values)} values."
            )
        if not 0 <= self.target < max(1, len(self.probabilities)):
            raise ValueError(
                f"target {self.target} is not a class of a model with "
                f"{len(self.probabilities)} classes."
            )

    @property
    def predicted(self) -> int:
        """The class the model predicts for the full text (arg-max of ``probabilities``)."""
        return int(np.argmax(self.probabilities)) if self.probabilities else 0

    @property
    def target_name(self) -> str:
        """The name of ``target`` (``LABEL_<id>`` when no names are known)."""
        if 0 <= self.target < len(self.label_names):
            return self.label_names[self.target]
        return f"LABEL_{self.target}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (round-trips through :meth:`from_dict`)."""
        return {
            "version": ATTRIBUTION_VERSION,
            "method": self.method,
            "model_label": self.model_label,
            "model_key": self.model_key,
            "text": self.text,
            "words": list(self.words),
            "spans": [list(span) for span in self.spans],
            "values": [float(v) for v in self.values],
            "target": self.target,
            "label_names": list(self.label_names),
            "probabilities": [float(p) for p in self.probabilities],
            "samples": self.samples,
            "seed": self.seed,
            "seconds": self.seconds,
            "base_value": self.base_value,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attribution:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a dict from another format version or with inconsistent fields.
        """
        if data.get("version") != ATTRIBUTION_VERSION:
            raise ValueError(f"Attribution format {data.get('version')!r} is not supported.")
        base = data.get("base_value")
        return cls(
            method=str(data["method"]),
            model_label=str(data["model_label"]),
            model_key=str(data["model_key"]),
            text=str(data["text"]),
            words=tuple(str(w) for w in data["words"]),
            spans=tuple((int(a), int(b)) for a, b in data["spans"]),
            values=tuple(float(v) for v in data["values"]),
            target=int(data["target"]),
            label_names=tuple(str(n) for n in data["label_names"]),
            probabilities=tuple(float(p) for p in data["probabilities"]),
            samples=int(data["samples"]),
            seed=int(data["seed"]),
            seconds=float(data["seconds"]),
            base_value=None if base is None else float(base),
        )


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation; NaN when either vector is constant or has < 2 entries."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    try:
        from scipy.stats import spearmanr
    except ImportError:  # scipy comes with lime and shap; keep working without it
        return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y).statistic)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as scipy's ``rankdata``."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(values.size, dtype=np.float64)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _check_same_words(a: Attribution, b: Attribution) -> None:
    if a.words != b.words:
        raise ValueError(
            "Agreement compares attributions of the same text; these explain different texts."
        )


def agreement(a: Attribution, b: Attribution, *, k: int = 5) -> dict[str, float]:
    """How much two attributions of the same text agree (e.g. original vs pruned, LIME vs SHAP).

    Returns:
        ``topk_overlap``: shared word positions among each one's ``k`` most supportive words
        (largest signed value toward its target), divided by ``k`` (``k`` is capped at the number
        of words); ``spearman``: rank correlation of the two value vectors word by word (NaN when
        one of them is constant, e.g. all zero, or the text has one word: ranks say nothing
        then); ``prob_a`` / ``prob_b``: each model's probability of ``a.target`` on the full
        text; ``same_prediction``: 1.0 when both models predict the same class, else 0.0.

    Raises:
        ValueError: the attributions explain different texts, or ``k < 1``.
    """
    _check_same_words(a, b)
    if k < 1:
        raise ValueError(f"k must be at least 1 (got {k}).")
    k_used = min(k, len(a.values))
    top_a = set(top_k_positions(a.values, k_used))
    top_b = set(top_k_positions(b.values, k_used))
    return {
        "topk_overlap": len(top_a & top_b) / k_used if k_used else math.nan,
        "spearman": _spearman(a.values, b.values),
        "prob_a": float(a.probabilities[a.target]),
        "prob_b": float(b.probabilities[a.target]) if a.target < len(b.probabilities) else math.nan,
        "same_prediction": 1.0 if a.predicted == b.predicted else 0.0,
    }


def seed_stability(attributions: Sequence[Attribution], *, k: int = 5) -> dict[str, float]:
    """Agreement between explanations of one model, method and text that differ only in seed.

    Returns:
        ``mean_spearman`` / ``min_spearman`` over all pairs (NaN pairs, from constant vectors,
        are left out; NaN when every pair is), ``mean_topk_overlap``, and ``seeds`` (the count).

    Raises:
        ValueError: fewer than two attributions, or they differ in model, method, text or target.
    """
    if len(attributions) < 2:
        raise ValueError("Seed stability needs at least two attributions (two seeds).")
    first = attributions[0]
    for other in attributions[1:]:
        same = (other.model_key, other.method, other.text, other.target) == (
            first.model_key,
            first.method,
            first.text,
            first.target,
        )
        if not same:
            raise ValueError(
                "Seed stability compares one model, method, text and target over seeds; "
                "these attributions differ in more than the seed."
            )
    pairs = [agreement(a, b, k=k) for a, b in combinations(attributions, 2)]
    rhos = [p["spearman"] for p in pairs if not math.isnan(p["spearman"])]
    return {
        "mean_spearman": float(np.mean(rhos)) if rhos else math.nan,
        "min_spearman": float(np.min(rhos)) if rhos else math.nan,
        "mean_topk_overlap": float(np.mean([p["topk_overlap"] for p in pairs])),
        "seeds": float(len({a.seed for a in attributions})),
    }
