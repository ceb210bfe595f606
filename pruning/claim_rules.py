"""One set of rules that turns measured numbers into a verdict on a paper's claim.

Every bench that checks a published claim (``bench quality``, ``bench table1``, ``bench
deepcuts``, ``bench astar-paper``) and the pages that show those verdicts use these rules, so a
claim gets the same verdict wherever it is read. A verdict is one of:

* :data:`HOLDS`: the measured difference favours the paper's method beyond the noise;
* :data:`DOES_NOT_HOLD`: it favours the other side beyond the noise;
* :data:`UNCLEAR` ("not distinguishable"): the difference is within the noise, changes sign, or
  there are too few seeds to tell;
* ``None``: not measured (a row the rule needs is missing).

The rules:

* :func:`paired_verdict` (seed-paired comparisons: MCAP vs a baseline in Table I, AutoAttention
  vs HISP, Cam-Cut vs LayerMagWeight): with ``n >= 3`` paired differences ``d_s`` (the method
  minus the baseline at the same seed, signed so that positive = the method is better), mean
  ``m`` and sample standard deviation ``sd``, it holds when every ``d_s > 0`` and ``m > 2 sd``;
  it does not hold when every ``d_s < 0`` and ``-m > 2 sd``; otherwise the two are not
  distinguishable. With ``n = 3``, ``m > 2 sd`` is a paired t of at least ``2 sqrt(3) = 3.46``
  (two-sided p < 0.08), and the sign requirement comes on top. Fewer than 3 seeds never give a
  verdict other than "not distinguishable".
* :func:`trials_verdict` (A* vs random pruning under the same budget, Parnami et al. Figures
  9-10): with ``p`` the share of random trials that prune at least as many heads as A*, it holds
  when ``p < 0.05``, does not hold when ``p >= 0.5`` (A* is no better than a typical random
  order), and is not distinguishable in between.
* :func:`tie_verdict` (DeepCuts: "at compression ratio 2 ... the performance is very similar
  irrespective of the pruning method"): it holds when the strategies' mean accuracies lie within
  ``tolerance`` of each other and no pair is told apart by :func:`paired_verdict`; it does not
  hold when they spread beyond the tolerance and some pair is told apart; otherwise (including
  fewer than 3 seeds) not distinguishable.
* :func:`combine`: a claim made of several comparisons holds when all of them hold, does not
  hold when any does not hold, and is not distinguishable otherwise.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "DOES_NOT_HOLD",
    "HOLDS",
    "MIN_SEEDS",
    "PAIRED_RULE",
    "SPREAD_FACTOR",
    "TIE_RULE",
    "TRIALS_RULE",
    "UNCLEAR",
    "accuracy_by_seed",
    "combine",
    "holds_flag",
    "paired",
    "paired_verdict",
    "tie_verdict",
    "trials_verdict",
]

HOLDS, DOES_NOT_HOLD, UNCLEAR = "holds", "does not hold", "not distinguishable"
MIN_SEEDS = 3
SPREAD_FACTOR = 2.0
TRIALS_HOLD_BELOW = 0.05
TRIALS_FAIL_FROM = 0.5
PAIRED_RULE = (
    "over at least 3 seeds, every paired difference (the method minus the baseline at the same "
    "seed, positive = the method better) is positive and their mean exceeds 2 x their sample "
    "standard deviation (holds); all negative and -mean > 2 sd (does not hold); otherwise not "
    "distinguishable"
)
TRIALS_RULE = (
    "p = share of random trials that prune at least as many heads as A*: holds when p < 0.05, "
    "does not hold when p >= 0.5, otherwise not distinguishable"
)
TIE_RULE = (
    "the strategies' mean accuracies lie within the tolerance of each other and no pair is told "
    "apart by the paired rule (holds); beyond the tolerance with some pair told apart (does not "
    "hold); otherwise not distinguishable"
)


def accuracy_by_seed(rows: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """Test accuracy by seed of bench rows (a row without a seed is seed 0; rows without an
    accuracy are left out)."""
    return {
        int(r.get("seed") or 0): float(r["accuracy"]) for r in rows if r.get("accuracy") is not None
    }


def paired_verdict(differences: Sequence[float]) -> tuple[str, str]:
    """``(verdict, reason)`` of paired differences signed so that positive = the method better."""
    d = [float(x) for x in differences]
    if len(d) < MIN_SEEDS:
        return UNCLEAR, f"{len(d)} seed(s): the rule needs at least {MIN_SEEDS}"
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    spread = f"mean {mean:+.4f}, sd {sd:.4f}"
    if all(x > 0 for x in d) and mean > SPREAD_FACTOR * sd:
        return HOLDS, f"all {len(d)} differences > 0 and {spread}: mean > 2 sd"
    if all(x < 0 for x in d) and -mean > SPREAD_FACTOR * sd:
        return DOES_NOT_HOLD, f"all {len(d)} differences < 0 and {spread}: -mean > 2 sd"
    if not (all(x > 0 for x in d) or all(x < 0 for x in d)):
        return UNCLEAR, f"the differences change sign ({spread})"
    return UNCLEAR, f"{spread}: |mean| <= 2 sd"


def paired(
    values: Mapping[int, float], baseline: Mapping[int, float], *, higher_is_better: bool = True
) -> dict[str, Any]:
    """The method's and a baseline's values paired seed by seed (the seeds both have), judged.

    Returns:
        ``seeds``, ``differences`` (signed: positive = the method better), ``mean`` and ``sd``
        (None below 2 seeds) of the differences, ``verdict`` and ``reason``. With no shared seed
        the differences are empty and the verdict is "not distinguishable".
    """
    seeds = sorted(set(values) & set(baseline))
    sign = 1.0 if higher_is_better else -1.0
    d = [sign * (float(values[s]) - float(baseline[s])) for s in seeds]
    outcome, reason = paired_verdict(d)
    if not seeds:
        reason = "no seed in common: run both at the same seeds"
    return {
        "seeds": seeds,
        "differences": d,
        "mean": statistics.fmean(d) if d else None,
        "sd": statistics.stdev(d) if len(d) >= 2 else None,
        "verdict": outcome,
        "reason": reason,
    }


def trials_verdict(heads: float, trials: Sequence[float]) -> tuple[str, float]:
    """``(verdict, p)``: A*'s heads against the heads of random trials under the same budget."""
    if not trials:
        raise ValueError("The random baseline has no trials; run it before judging A*.")
    share = sum(float(t) >= float(heads) for t in trials) / len(trials)
    if share < TRIALS_HOLD_BELOW:
        return HOLDS, share
    if share >= TRIALS_FAIL_FROM:
        return DOES_NOT_HOLD, share
    return UNCLEAR, share


def tie_verdict(
    by_strategy: Mapping[str, Mapping[int, float]], tolerance: float
) -> tuple[str, float, str]:
    """``(verdict, spread of the means, reason)`` of "every strategy performs similarly".

    Args:
        by_strategy: accuracy by seed, per strategy (at least two strategies).
        tolerance: the largest spread of the means that counts as similar.
    """
    if len(by_strategy) < 2:
        raise ValueError("A tie needs at least two strategies.")
    means = {name: statistics.fmean(v.values()) for name, v in by_strategy.items() if v}
    spread = max(means.values()) - min(means.values())
    apart = [
        f"{a} vs {b}"
        for a, b in itertools.combinations(sorted(by_strategy), 2)
        if paired(by_strategy[a], by_strategy[b])["verdict"] != UNCLEAR
    ]
    seeds = min(len(v) for v in by_strategy.values())
    within = spread <= tolerance
    if within and not apart and seeds >= MIN_SEEDS:
        return HOLDS, spread, f"spread {spread:.4f} <= {tolerance:g}, no pair told apart"
    if not within and apart:
        return DOES_NOT_HOLD, spread, f"spread {spread:.4f} > {tolerance:g}; {', '.join(apart)}"
    if seeds < MIN_SEEDS:
        return UNCLEAR, spread, f"{seeds} seed(s): the rule needs at least {MIN_SEEDS}"
    why = f"{', '.join(apart)} told apart" if apart else "no pair told apart"
    return UNCLEAR, spread, f"spread {spread:.4f} vs tolerance {tolerance:g}; {why}"


def combine(verdicts: Iterable[str]) -> str | None:
    """A claim's verdict from its comparisons' (None when there is none)."""
    found = list(verdicts)
    if not found:
        return None
    if any(v == DOES_NOT_HOLD for v in found):
        return DOES_NOT_HOLD
    if all(v == HOLDS for v in found):
        return HOLDS
    return UNCLEAR


def holds_flag(verdict: str | None) -> bool | None:
    """``True`` for holds, ``False`` for does not hold or not distinguishable, None unmeasured."""
    return None if verdict is None else verdict == HOLDS
