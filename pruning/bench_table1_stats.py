"""Seed statistics of `headscope bench table1`: spreads, paired differences, verdicts, ranks.

Every row of the MCAP paper's Table I (Rajapaksha and Crespi, "Explainable Attention Pruning: A
Meta-learning-based Approach", IEEE TAI 2024, https://openreview.net/forum?id=2HXUDneIMH, Section
III-C) is run at several seeds; seed ``s`` fixes the prepared classifier's fine-tuning seed and
the method's seed, so runs of two rows at the same seed share everything but the method. Here:

* :func:`summarise`: mean, sample standard deviation (``n - 1``), lowest and highest value of a
  row's metric over its seeds;
* :func:`paired_comparison`: the per-seed differences MCAP minus a baseline (signed so that
  positive means MCAP is better: higher MCC or accuracy, lower loss) and the verdict;
* :func:`verdict` — **the rule**, shared by every claim bench
  (:func:`pruning.claim_rules.paired_verdict`): with ``n >= 3`` paired differences ``d_s``, mean
  ``m`` and sample standard deviation ``sd``, the claim "MCAP is better" **holds** when every
  ``d_s > 0`` and ``m > 2 sd``; it **does not hold** when every ``d_s < 0`` and ``-m > 2 sd``;
  otherwise (mixed signs, a mean within two standard deviations of the differences, or fewer
  than 3 seeds) the two are **not distinguishable**. With ``n = 3``, ``m > 2 sd`` is a paired t
  of at least ``2 sqrt(3) = 3.46`` (two-sided p < 0.08), and all-same-sign adds a sign
  requirement;
* :func:`spearman` / :func:`rank_stability`: Spearman's rank correlation of MCAP's head scores
  between every pair of seeds (average ranks for ties), with the mean and the lowest pair;
* :func:`select_learning_rate`: the paper "tr[ies] four learning rates ... The best evaluation
  accuracies are averaged and the most suitable hyperparameters for each pruned model" are kept:
  per row, the rate whose mean validation accuracy over the seeds is highest (ties: the lower
  rate).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pruning.claim_rules import (
    MIN_SEEDS,
    PAIRED_RULE,
    SPREAD_FACTOR,
)
from pruning.claim_rules import paired_verdict as verdict

__all__ = [
    "HIGHER_IS_BETTER",
    "MIN_SEEDS",
    "SPREAD_FACTOR",
    "VERDICT_RULE",
    "PairedComparison",
    "SeedSummary",
    "paired_comparison",
    "rank_stability",
    "select_learning_rate",
    "spearman",
    "summarise",
    "verdict",
]

HIGHER_IS_BETTER = {"mcc": True, "accuracy": True, "loss": False}
VERDICT_RULE = (
    f"A claim holds when MCAP passes the shared paired rule against the baseline: {PAIRED_RULE}."
)


@dataclass(frozen=True)
class SeedSummary:
    """A metric over seeds: ``n``, mean, sample sd (None below 2 seeds), lowest and highest."""

    n: int
    mean: float
    sd: float | None
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, pattern: str = "{:.3f}") -> str:
        """``"0.712 ± 0.015"`` (``"0.712"`` with one seed)."""
        if self.sd is None:
            return pattern.format(self.mean)
        return f"{pattern.format(self.mean)} ± {pattern.format(self.sd)}"


def summarise(values: Sequence[float]) -> SeedSummary:
    """Mean, sample standard deviation, lowest and highest of ``values``.

    Raises:
        ValueError: without values or with a value that is not finite.
    """
    numbers = [float(v) for v in values]
    if not numbers:
        raise ValueError("No values to summarise; run at least one seed.")
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"Values must be finite numbers (got {numbers}).")
    sd = statistics.stdev(numbers) if len(numbers) >= 2 else None
    return SeedSummary(len(numbers), statistics.fmean(numbers), sd, min(numbers), max(numbers))


@dataclass(frozen=True)
class PairedComparison:
    """MCAP against one baseline on one metric, seed by seed.

    Attributes:
        differences: by seed, MCAP minus the baseline, signed so that positive = MCAP better.
        raw_differences: by seed, MCAP minus the baseline as measured (loss: negative = better).
    """

    baseline: str
    metric: str
    seeds: list[int]
    differences: list[float]
    raw_differences: list[float]
    mean: float
    sd: float | None
    verdict: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_comparison(
    mcap: Mapping[int, float], baseline: Mapping[int, float], *, metric: str, name: str
) -> PairedComparison:
    """Pair MCAP's and a baseline's values seed by seed (the seeds both have) and judge them.

    Args:
        mcap, baseline: metric value by seed.
        metric: ``"mcc"``, ``"accuracy"`` or ``"loss"`` (lower loss is better).
        name: the baseline's row label.

    Raises:
        ValueError: for an unknown metric or no shared seed.
    """
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"Unknown metric {metric!r}; use one of {', '.join(HIGHER_IS_BETTER)}.")
    seeds = sorted(set(mcap) & set(baseline))
    if not seeds:
        raise ValueError(f"MCAP and {name} share no seed; run both at the same seeds.")
    raw = [float(mcap[s]) - float(baseline[s]) for s in seeds]
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    signed = [sign * d for d in raw]
    outcome, reason = verdict(signed)
    sd = statistics.stdev(signed) if len(signed) >= 2 else None
    return PairedComparison(
        name, metric, seeds, signed, raw, statistics.fmean(signed), sd, outcome, reason
    )


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(first: Any, second: Any) -> float:
    """Spearman's rank correlation of two score grids (flattened; average ranks for ties).

    Returns:
        a value in [-1, 1]; NaN when either grid is constant.

    Raises:
        ValueError: for grids of different sizes or fewer than 2 values.
    """
    a = np.asarray(first, dtype=np.float64).reshape(-1)
    b = np.asarray(second, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"Need two score grids of the same size >= 2 (got {a.size}, {b.size}).")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / norm) if norm > 0 else float("nan")


def rank_stability(scores_by_seed: Mapping[int, Any]) -> dict[str, Any]:
    """Spearman correlation of the head scores for every pair of seeds.

    Returns:
        ``{"pairs": [{"seeds": [a, b], "spearman": rho}, ...], "mean", "min"}`` (mean and min
        None with fewer than two seeds).
    """
    seeds = sorted(scores_by_seed)
    rhos = {
        (a, b): spearman(scores_by_seed[a], scores_by_seed[b])
        for a, b in itertools.combinations(seeds, 2)
    }
    pairs = [{"seeds": [a, b], "spearman": rho} for (a, b), rho in rhos.items()]
    values = [rho for rho in rhos.values() if math.isfinite(rho)]
    return {
        "pairs": pairs,
        "mean": statistics.fmean(values) if values else None,
        "min": min(values) if values else None,
    }


def select_learning_rate(accuracy: Mapping[float, Mapping[int, float]]) -> float:
    """The learning rate with the highest mean validation accuracy over seeds (ties: lower).

    Args:
        accuracy: validation accuracy by learning rate, then by seed.

    Raises:
        ValueError: when no learning rate has a value.
    """
    means = {lr: statistics.fmean(by_seed.values()) for lr, by_seed in accuracy.items() if by_seed}
    if not means:
        raise ValueError("No validation accuracy to choose a learning rate from.")
    return min(means, key=lambda lr: (-means[lr], lr))
