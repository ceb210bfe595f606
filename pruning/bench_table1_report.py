"""The report of `headscope bench table1`: Table I over seeds and learning rates, as JSON and text.

The bench (:mod:`pruning.cli_bench_mcap`) turns every stored run into a *cell*: one row of the
paper's Table I (Rajapaksha and Crespi, "Explainable Attention Pruning", IEEE TAI 2024, Section
III-C) at one fine-tuning learning rate and one seed. A cell is a dict with ``label``,
``learning_rate`` (None when the classifier was given with ``--prepared``), ``seed``, ``key``
(None for the unpruned row), ``method``, ``granularity``, test ``mcc`` / ``accuracy`` / ``loss``,
``validation_accuracy`` (None when not measured), ``heads_removed``, ``weights_removed``,
``flops``, ``params`` and, for MCAP, ``scores`` (its head scores) and ``pattern_cnn`` (its pattern
CNN's report). :func:`build_report` picks each row's learning rate, summarises it over seeds,
pairs MCAP with every other row seed by seed, measures the stability of MCAP's head ranking and
summarises its pattern CNN (:mod:`pruning.bench_table1_stats` has the rules);
:func:`report_markdown` prints it.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from pruning.bench_table1_stats import (
    HIGHER_IS_BETTER,
    VERDICT_RULE,
    paired_comparison,
    rank_stability,
    select_learning_rate,
    summarise,
)

__all__ = ["MCAP_LABEL", "UNPRUNED", "build_report", "choose_rows", "report_markdown"]

UNPRUNED = "Unpruned (fine-tuned)"
MCAP_LABEL = "MCAP"
METRICS = tuple(HIGHER_IS_BETTER)
_COST = ("heads_removed", "weights_removed", "flops", "params")


def _grouped(cells: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for cell in cells:
        groups.setdefault(str(cell["label"]), []).append(cell)
    return groups


def _chosen_rate(cells: Sequence[Mapping[str, Any]]) -> tuple[Any, dict[str, float]]:
    """The row's learning rate and the mean validation accuracy of each rate."""
    rates = sorted({c["learning_rate"] for c in cells}, key=lambda r: (r is None, r or 0.0))
    if len(rates) == 1:
        return rates[0], {}
    accuracy: dict[float, dict[int, float]] = {}
    for cell in cells:
        value = cell.get("validation_accuracy")
        if value is None:
            raise ValueError(
                f"{cell['label']} has no validation accuracy at learning rate "
                f"{cell['learning_rate']}; it is needed to choose among {rates}."
            )
        accuracy.setdefault(float(cell["learning_rate"]), {})[int(cell["seed"])] = float(value)
    means = {f"{lr:g}": statistics.fmean(by_seed.values()) for lr, by_seed in accuracy.items()}
    return select_learning_rate(accuracy), means


def choose_rows(cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per label (first-seen order) at its chosen learning rate, summarised over seeds.

    Returns:
        rows with ``label``, ``method``, ``granularity``, ``learning_rate``,
        ``validation_accuracy_by_rate`` (mean over seeds, by rate; empty with one rate),
        ``seeds``, ``keys`` / ``prepared_keys`` (run / classifier key by seed), ``per_seed``
        (``{seed: {mcc, accuracy, loss}}``), one summary per metric
        (:class:`~pruning.bench_table1_stats.SeedSummary` as a dict), the cost columns (means
        over seeds) and the chosen ``cells``.

    Raises:
        ValueError: when several learning rates were run but a cell lacks its validation
            accuracy.
    """
    rows = []
    for label, group in _grouped(cells).items():
        rate, by_rate = _chosen_rate(group)
        chosen = sorted((c for c in group if c["learning_rate"] == rate), key=lambda c: c["seed"])
        row: dict[str, Any] = {
            "label": label,
            "method": chosen[0].get("method"),
            "granularity": chosen[0].get("granularity"),
            "learning_rate": rate,
            "validation_accuracy_by_rate": by_rate,
            "seeds": [int(c["seed"]) for c in chosen],
            "keys": {int(c["seed"]): c.get("key") for c in chosen},
            "prepared_keys": {int(c["seed"]): c.get("prepared_key") for c in chosen},
            "per_seed": {int(c["seed"]): {m: float(c[m]) for m in METRICS} for c in chosen},
        }
        for metric in METRICS:
            row[metric] = summarise([float(c[metric]) for c in chosen]).to_dict()
        for name in _COST:
            row[name] = statistics.fmean(float(c[name]) for c in chosen)
        row["cells"] = list(chosen)
        rows.append(row)
    return rows


def _pattern_summary(cells: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """MCAP's pattern CNN over seeds: accuracy (all, on the model's maps), summed confusion."""
    reports = [c["pattern_cnn"] for c in cells if c.get("pattern_cnn")]
    if not reports:
        return None
    size = len(reports[0]["confusion"])
    confusion = [[sum(int(r["confusion"][i][j]) for r in reports) for j in range(size)]
                 for i in range(size)]  # fmt: skip
    model = [
        r["accuracy_by_source"]["model"]
        for r in reports
        if (r.get("accuracy_by_source") or {}).get("model") is not None
    ]
    return {
        "classes": reports[0].get("classes"),
        "runs": len(reports),
        "accuracy": summarise([float(r["accuracy"]) for r in reports]).to_dict(),
        "accuracy_model_maps": summarise(model).to_dict() if model else None,
        "confusion": confusion,
    }


def build_report(cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Rows, paired comparisons with MCAP, MCAP's rank stability and pattern CNN, the rule.

    Raises:
        ValueError: without an MCAP row, or as :func:`choose_rows`.
    """
    rows = choose_rows(cells)
    mcap = next((row for row in rows if row["label"] == MCAP_LABEL), None)
    if mcap is None:
        raise ValueError("Table I needs the MCAP row; do not --skip it.")
    paired = []
    for row in rows:
        if row is mcap:
            continue
        for metric in METRICS:
            mine = {s: v[metric] for s, v in mcap["per_seed"].items()}
            theirs = {s: v[metric] for s, v in row["per_seed"].items()}
            paired.append(
                paired_comparison(mine, theirs, metric=metric, name=row["label"]).to_dict()
            )
    scores = {int(c["seed"]): c["scores"] for c in mcap["cells"] if c.get("scores") is not None}
    return {
        "rows": [{k: v for k, v in row.items() if k != "cells"} for row in rows],
        "paired": paired,
        "rank_stability": rank_stability(scores),
        "pattern_cnn": _pattern_summary(mcap["cells"]),
        "rule": VERDICT_RULE,
    }


def _latency_text(row: Mapping[str, Any]) -> str:
    if "latency_ms" not in row:
        return "–"
    return f"{row['latency_ms']:.0f} ({row['latency_p10_ms']:.0f}–{row['latency_p90_ms']:.0f})"


def _summary_text(summary: Mapping[str, Any], pattern: str) -> str:
    text = pattern.format(summary["mean"])
    return text if summary.get("sd") is None else f"{text} ± {pattern.format(summary['sd'])}"


def report_markdown(report: Mapping[str, Any], *, latency_shape: str = "") -> str:
    """Table I (mean ± sample sd over seeds), MCAP's paired differences with their verdicts,
    the stability of its head ranking and its pattern CNN's held-out accuracy and confusion."""
    rows = report["rows"]
    where = f" ({latency_shape}, p10–p90)" if latency_shape else " (p10–p90)"
    lines = [
        f"| method | fine-tuning lr | seeds | heads removed | weights removed | MCC | accuracy | "
        f"loss | latency ms{where} | GFLOPs / example | parameters (M) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rate = "given" if r["learning_rate"] is None else f"{r['learning_rate']:g}"
        lines.append(
            f"| {r['label']} | {rate} | {len(r['seeds'])} | {r['heads_removed']:.0%} | "
            f"{r['weights_removed']:.1%} | {_summary_text(r['mcc'], '{:.3f}')} | "
            f"{_summary_text(r['accuracy'], '{:.2%}')} | {_summary_text(r['loss'], '{:.3f}')} | "
            f"{_latency_text(r)} | {r['flops'] / 1e9:.2f} | {r['params'] / 1e6:.2f} |"
        )
    lines += [
        "",
        "MCAP minus each row, seed by seed (positive = MCAP better; for the loss, lower is "
        "better).",
        f"Rule: {report['rule']}",
        "",
        "| against | metric | differences by seed | mean | sd | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for p in report["paired"]:
        diffs = ", ".join(f"{d:+.4f}" for d in p["differences"])
        sd = "–" if p["sd"] is None else f"{p['sd']:.4f}"
        lines.append(
            f"| {p['baseline']} | {p['metric']} | {diffs} | {p['mean']:+.4f} | {sd} | "
            f"{p['verdict']} |"
        )
    stability = report["rank_stability"]
    pairs = ", ".join(
        f"seeds {a}-{b}: {p['spearman']:.3f}" for p in stability["pairs"] for a, b in [p["seeds"]]
    )
    lines += [
        "",
        "Stability of MCAP's head ranking (Spearman correlation of its head scores between "
        f"seeds): {pairs or 'one seed only'}"
        + ("" if stability["mean"] is None else f"; mean {stability['mean']:.3f}."),
    ]
    patterns = report.get("pattern_cnn")
    if patterns:
        model = patterns.get("accuracy_model_maps")
        lines += [
            "",
            f"MCAP's pattern CNN, held-out accuracy over {patterns['runs']} run(s): "
            f"{_summary_text(patterns['accuracy'], '{:.1%}')}"
            + (
                ""
                if model is None
                else f" (the model's own maps, unseen heads: {_summary_text(model, '{:.1%}')})"
            )
            + ". Confusion matrix, summed over the runs (rows = label, columns = prediction):",
            "",
            "| label | " + " | ".join(patterns["classes"]) + " |",
            "|---|" + "---|" * len(patterns["classes"]),
        ]
        for name, counts in zip(patterns["classes"], patterns["confusion"], strict=True):
            lines.append(f"| {name} | " + " | ".join(str(c) for c in counts) + " |")
    return "\n".join(lines) + "\n"
