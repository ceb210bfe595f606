"""Tables and claims of the run benches (`headscope bench gates` / `bench deepcuts`) over seeds.

Every row of a run bench is one stored run; rows that differ only in their seed share a
``label``. :func:`seed_groups` folds them into one group per label (first-seen order) with the
mean and the spread of the accuracy, :func:`markdown_table` prints one line per group, and
:func:`deepcuts_claims` checks the two claims of Grover, Gawri and Manku, "DeepCuts: Single-Shot
Interpretability based Pruning for BERT", arXiv 2212.13392 (2022),
https://arxiv.org/abs/2212.13392, seed by seed with the rules every claim bench shares
(:mod:`pruning.claim_rules`):

* ``deepcuts_tie_at_2``: "Even at compression ratio 2 across all datasets the performance is
  very similar irrespective of the pruning method used" (Section 4.3; Section 2.2.1 "till the
  compression ratio of 2, all methods performed similarly").
* ``deepcuts_beat_layer_magnitude``: Cam-Cut and Smooth-Cut outperform the LayerMagWeight
  baseline at ratios 3 to 4 (Sections 4.3-4.4, Figures 6-8).

The paper's ratios are whole-model ratios of BERT-base (:mod:`pruning.compression`), so a row's
place in a claim is its ``bert_base_ratio``: the paper's ratio that keeps the same share of
BERT-base's prunable weights as the run kept of its own (HeadScope's prunable ratio 3 is the
paper's 2.09, so it belongs to the "ratio 2" claim, not to "3 to 4").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from pruning.claim_rules import (
    DOES_NOT_HOLD,
    HOLDS,
    PAIRED_RULE,
    TIE_RULE,
    accuracy_by_seed,
    combine,
    holds_flag,
    paired,
    tie_verdict,
)

# How close a row's paper-equivalent ratio must be to the claim's ratios to count.
RATIO_2_WINDOW = (1.9, 2.1)
RATIO_3_TO_4_WINDOW = (2.95, 4.05)
DEFAULT_TIE_TOLERANCE = 0.01
BEATERS = ("cam_cut", "smooth_cut")
BASELINE = "layer_mag_weight"


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def seed_groups(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One group per ``label`` (first-seen order): its rows and their accuracy over seeds.

    Returns:
        dicts with ``label``, ``rows`` (the rows, in order), ``seeds``, ``n``, ``accuracy`` (mean
        of the rows' final accuracies), ``accuracy_sd`` (sample standard deviation, None for one
        seed), ``accuracy_min``, ``accuracy_max``, ``pruned_accuracy`` and
        ``recovered_accuracy`` (means, None when no row has one) and ``seconds`` (mean).
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["label"]), []).append(row)
    result = []
    for label, members in groups.items():
        accuracies = [float(r["accuracy"]) for r in members if r.get("accuracy") is not None]

        def mean_of(key: str, members: Sequence[Mapping[str, Any]] = members) -> float | None:
            return _mean([float(r[key]) for r in members if r.get(key) is not None])

        result.append(
            {
                "label": label,
                "rows": list(members),
                "seeds": [r.get("seed") for r in members],
                "n": len(accuracies),
                "accuracy": _mean(accuracies),
                "accuracy_sd": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
                "accuracy_min": min(accuracies) if accuracies else None,
                "accuracy_max": max(accuracies) if accuracies else None,
                "pruned_accuracy": mean_of("pruned_accuracy"),
                "recovered_accuracy": mean_of("recovered_accuracy"),
                "seconds": mean_of("seconds"),
            }
        )
    return result


def _num(value: Any, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def _accuracy_cell(group: Mapping[str, Any]) -> str:
    """``mean ± sd (n)`` in %, or the single value."""
    if group["accuracy"] is None:
        return "–"
    if group["n"] < 2:
        return f"{group['accuracy']:.2%}"
    return f"{group['accuracy']:.2%} ± {100 * group['accuracy_sd']:.2f} (n={group['n']})"


def _range_cell(group: Mapping[str, Any]) -> str:
    if group["n"] < 2:
        return "–"
    return f"{group['accuracy_min']:.2%}–{group['accuracy_max']:.2%}"


def _first_value(group: Mapping[str, Any], key: str) -> Any:
    return next((r.get(key) for r in group["rows"] if r.get(key) is not None), None)


def markdown_table(rows: Sequence[Mapping[str, Any]], *, weight_level: bool = False) -> str:
    """The rows as a markdown table, one line per label: mean ± sd over seeds and the range.

    ``weight_level`` (DeepCuts) adds both compression-ratio definitions: the requested ratio and
    its definition, the share of prunable weights kept, HeadScope's prunable ratio (prunable /
    kept), the whole-model ratio of the model (all / remaining parameters) and the paper's
    BERT-base-equivalent ratio.
    """
    dense = next((r["dense_accuracy"] for r in rows if r.get("dense_accuracy") is not None), None)
    title = f"dense {dense:.2%}" if dense is not None else "dense n/a"
    groups = seed_groups(rows)
    if weight_level:
        lines = [
            f"| strategy | ratio (definition) | kept share | prunable ratio | whole-model ratio "
            f"| BERT-base ratio | accuracy ({title}) | range over seeds | recovered | seconds |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for group in groups:
            config = group["rows"][0]["config"]
            definition = config.get("ratio_definition", "prunable")
            lines.append(
                f"| {config.get('strategy')} | {config.get('compression_ratio'):g} "
                f"({definition}) | {_num(_first_value(group, 'keep_share'), '{:.2%}')} | "
                f"{_num(_first_value(group, 'achieved_ratio'), '{:.2f}')} | "
                f"{_num(_first_value(group, 'whole_model_ratio'), '{:.2f}')} | "
                f"{_num(_first_value(group, 'bert_base_ratio'), '{:.2f}')} | "
                f"{_accuracy_cell(group)} | {_range_cell(group)} | "
                f"{_num(group['recovered_accuracy'], '{:.2%}')} | "
                f"{_num(group['seconds'], '{:.0f}')} |"
            )
        return "\n".join(lines) + "\n"
    lines = [
        f"| run | heads removed | accuracy ({title}) | range over seeds | before recovery | "
        "reopened | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for group in groups:
        first = group["rows"][0]
        before = group["pruned_accuracy"] if group["recovered_accuracy"] is not None else None
        removed = _mean([float(r["heads_removed"]) for r in group["rows"]]) or 0.0
        sparsity = _mean([float(r["head_sparsity"]) for r in group["rows"]]) or 0.0
        lines.append(
            f"| {group['label']} | {removed:g}/{first['heads']} ({sparsity:.0%}) | "
            f"{_accuracy_cell(group)} | {_range_cell(group)} | {_num(before, '{:.2%}')} | "
            f"{_num(first.get('reopened'), '{}')} | {_num(group['seconds'], '{:.0f}')} |"
        )
    return "\n".join(lines) + "\n"


def _buckets(
    groups: Sequence[Mapping[str, Any]], window: tuple[float, float]
) -> dict[tuple[Any, ...], dict[str, Mapping[str, Any]]]:
    """Groups whose paper-equivalent ratio lies in ``window``, by (definition, ratio, refine)."""
    buckets: dict[tuple[Any, ...], dict[str, Mapping[str, Any]]] = {}
    for group in groups:
        config = group["rows"][0]["config"]
        paper = _first_value(group, "bert_base_ratio")
        if paper is None or group["accuracy"] is None or not window[0] <= paper <= window[1]:
            continue
        key = (
            config.get("ratio_definition", "prunable"),
            float(config.get("compression_ratio", math.nan)),
            config.get("refine_steps", 0),
        )
        buckets.setdefault(key, {}).setdefault(str(config.get("strategy")), group)
    return buckets


def _paper_ratio(group: Mapping[str, Any]) -> float:
    return float(_first_value(group, "bert_base_ratio"))


def _claim(
    claim_id: str, claim: str, rule: str, comparisons: list[dict[str, Any]], missing: str
) -> dict[str, Any]:
    verdict = combine(c["verdict"] for c in comparisons)
    if verdict is None:
        statement = f"Not measured: {missing}"
    else:
        counts = {v: sum(c["verdict"] == v for c in comparisons) for v in (HOLDS, DOES_NOT_HOLD)}
        statement = (
            f"{len(comparisons)} comparison(s): {counts[HOLDS]} hold, {counts[DOES_NOT_HOLD]} "
            f"do not hold, the rest are not distinguishable; verdict: {verdict}."
        )
    return {
        "id": claim_id,
        "claim": claim,
        "rule": rule,
        "verdict": verdict,
        "holds": holds_flag(verdict),
        "comparisons": comparisons,
        "statement": statement,
    }


def deepcuts_claims(
    rows: Sequence[Mapping[str, Any]], *, tie_tolerance: float = DEFAULT_TIE_TOLERANCE
) -> list[dict[str, Any]]:
    """The paper's two claims, checked with the shared rules of :mod:`pruning.claim_rules`.

    * ``deepcuts_tie_at_2``: among the rows whose BERT-base-equivalent ratio is within
      :data:`RATIO_2_WINDOW` (per definition, ratio and refine steps, at least two strategies):
      :func:`~pruning.claim_rules.tie_verdict` with ``tie_tolerance`` on the strategies' test
      accuracy by seed.
    * ``deepcuts_beat_layer_magnitude``: among the rows whose BERT-base-equivalent ratio is within
      :data:`RATIO_3_TO_4_WINDOW`, each Cam-Cut and Smooth-Cut against LayerMagWeight at the same
      definition, ratio and refine steps: :func:`~pruning.claim_rules.paired` over the seeds both
      ran (3 seeds or more are needed for a verdict other than "not distinguishable").

    Returns:
        two dicts (``id``, ``claim``, ``rule``, ``verdict``: holds / does not hold / not
        distinguishable / None when not measured, ``holds``: True only when it holds, None when
        not measured, ``comparisons``, ``statement``).
    """
    groups = seed_groups(rows)
    ties = []
    for (definition, ratio, refine), by_strategy in _buckets(groups, RATIO_2_WINDOW).items():
        if len(by_strategy) < 2:
            continue
        seeds = {name: accuracy_by_seed(group["rows"]) for name, group in by_strategy.items()}
        verdict, spread, reason = tie_verdict(seeds, tie_tolerance)
        ties.append(
            {
                "ratio": ratio,
                "ratio_definition": definition,
                "paper_ratio": _paper_ratio(next(iter(by_strategy.values()))),
                "refine_steps": refine,
                "accuracies": {name: float(g["accuracy"]) for name, g in by_strategy.items()},
                "seeds": min(len(v) for v in seeds.values()),
                "spread": spread,
                "tolerance": tie_tolerance,
                "verdict": verdict,
                "reason": reason,
                "holds": verdict == HOLDS,
            }
        )
    wins = []
    for (definition, ratio, refine), by_strategy in _buckets(groups, RATIO_3_TO_4_WINDOW).items():
        base = by_strategy.get(BASELINE)
        if base is None:
            continue
        for name in BEATERS:
            other = by_strategy.get(name)
            if other is None:
                continue
            comparison = paired(accuracy_by_seed(other["rows"]), accuracy_by_seed(base["rows"]))
            wins.append(
                {
                    "method": name,
                    "accuracy": other["accuracy"],
                    "baseline": BASELINE,
                    "baseline_accuracy": base["accuracy"],
                    "gap": float(other["accuracy"]) - float(base["accuracy"]),
                    "seeds": len(comparison["seeds"]),
                    "differences": comparison["differences"],
                    "sd": comparison["sd"],
                    "ratio": ratio,
                    "ratio_definition": definition,
                    "paper_ratio": _paper_ratio(other),
                    "refine_steps": refine,
                    "verdict": comparison["verdict"],
                    "reason": comparison["reason"],
                    "holds": comparison["verdict"] == HOLDS,
                }
            )
    return [
        _claim(
            "deepcuts_tie_at_2",
            "At compression ratio 2 all strategies perform similarly (Grover et al. 2022, "
            "Sections 2.2.1 and 4.3).",
            f"At every ratio whose BERT-base equivalent lies in {RATIO_2_WINDOW}: {TIE_RULE} "
            f"(tolerance {tie_tolerance:.1%}).",
            ties,
            "the bench needs two strategies at a ratio that is the paper's 2 (e.g. "
            "--ratio-definition bert_base_equivalent --ratios 2, or prunable ratio 3).",
        ),
        _claim(
            "deepcuts_beat_layer_magnitude",
            "Cam-Cut and Smooth-Cut keep more accuracy than LayerMagWeight at compression ratios "
            "3 to 4 (Grover et al. 2022, Sections 4.3-4.4).",
            f"At every ratio whose BERT-base equivalent lies in {RATIO_3_TO_4_WINDOW}, each "
            f"Cam-Cut and Smooth-Cut against LayerMagWeight in test accuracy: {PAIRED_RULE}.",
            wins,
            "the bench needs LayerMagWeight and Cam-Cut or Smooth-Cut at a ratio that is the "
            "paper's 3 to 4: --ratio-definition bert_base_equivalent --ratios 3,3.5,4 (HeadScope's "
            "prunable ratios 2-4 are the paper's 1.6-2.4).",
        ),
    ]


def claims_markdown(claims: Sequence[Mapping[str, Any]]) -> str:
    """The claims as a markdown list: claim, rule and verdict."""
    lines = ["", "Claims (Grover, Gawri & Manku 2022):", ""]
    for claim in claims:
        lines.append(f"- **{claim['claim']}** Rule: {claim['rule']} {claim['statement']}")
        for c in claim["comparisons"]:
            where = (
                f"{c['ratio']:g} ({c['ratio_definition']}, paper {c['paper_ratio']:.2f}), "
                f"refine {c['refine_steps']}"
            )
            if "spread" in c:
                listed = ", ".join(f"{k} {v:.2%}" for k, v in c["accuracies"].items())
                lines.append(
                    f"  - {where}: {listed}; spread {100 * c['spread']:.2f} pp over "
                    f"{c['seeds']} seed(s): {c['verdict']} ({c['reason']})"
                )
            else:
                lines.append(
                    f"  - {where}: {c['method']} {c['accuracy']:.2%} vs {c['baseline']} "
                    f"{c['baseline_accuracy']:.2%} ({100 * c['gap']:+.2f} pp, {c['seeds']} "
                    f"seed(s)): {c['verdict']} ({c['reason']})"
                )
    return "\n".join(lines) + "\n"
