"""Seed groups, tables and the DeepCuts claims of the run benches, on hand-made rows."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from pruning.bench_runs_table import (
    claims_markdown,
    deepcuts_claims,
    markdown_table,
    seed_groups,
)

# Paper-equivalent (BERT-base) ratios of bert_base_equivalent rows at 2 / 3.5 and of the
# prunable ratio 3 (keep a third: the paper's 2.09).
PAPER = {("bert_base_equivalent", 2.0): 2.0, ("bert_base_equivalent", 3.5): 3.5,
         ("prunable", 3.0): 2.09}  # fmt: skip


def row(strategy: str, ratio: float, seed: int, accuracy: float, **extra: Any) -> dict[str, Any]:
    definition = extra.pop("definition", "bert_base_equivalent")
    config = {"strategy": strategy, "compression_ratio": ratio, "refine_steps": 0}
    if definition != "prunable":
        config["ratio_definition"] = definition
    return {
        "label": f"{strategy} x{ratio:g} ({definition})",
        "config": config,
        "seed": seed,
        "accuracy": accuracy,
        "pruned_accuracy": accuracy,
        "recovered_accuracy": None,
        "dense_accuracy": 0.9,
        "achieved_ratio": 1 / 0.1,
        "keep_share": 0.1,
        "whole_model_ratio": 1.5,
        "bert_base_ratio": PAPER[(definition, ratio)],
        "seconds": 10.0 + seed,
        "heads_removed": 0,
        "heads": 48,
        "head_sparsity": 0.0,
        **extra,
    }


def test_seed_groups_give_mean_sample_sd_and_range_per_label() -> None:
    rows = [row("cam_cut", 3.5, s, a) for s, a in enumerate((0.80, 0.84, 0.82))]
    rows.append(row("layer_mag_weight", 3.5, 0, 0.75))
    groups = seed_groups(rows)
    assert [g["label"] for g in groups] == [rows[0]["label"], rows[3]["label"]]
    cam, base = groups
    assert cam["n"] == 3 and cam["seeds"] == [0, 1, 2]
    assert cam["accuracy"] == pytest.approx(0.82)
    assert cam["accuracy_sd"] == pytest.approx(statistics.stdev([0.80, 0.84, 0.82]))
    assert (cam["accuracy_min"], cam["accuracy_max"]) == (0.80, 0.84)
    assert cam["seconds"] == pytest.approx(11.0)
    assert base["n"] == 1 and base["accuracy_sd"] is None and base["recovered_accuracy"] is None


def test_weight_table_has_both_ratio_definitions_and_seed_spread() -> None:
    rows = [row("cam_cut", 3.5, s, a) for s, a in enumerate((0.80, 0.84))]
    table = markdown_table(rows, weight_level=True)
    header, rule, line = table.strip().splitlines()
    for column in ("kept share", "prunable ratio", "whole-model ratio", "BERT-base ratio"):
        assert column in header
    assert rule.count("---") == 10
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:6] == ["cam_cut", "3.5 (bert_base_equivalent)", "10.00%", "10.00", "1.50", "3.50"]
    assert cells[6] == "82.00% ± 2.83 (n=2)" and cells[7] == "80.00%–84.00%"


def test_head_table_groups_seeds_and_keeps_one_line_per_run() -> None:
    rows = [
        {**row("x", 2.0, s, a), "label": "HISP 50%", "heads_removed": 24, "head_sparsity": 0.5}
        for s, a in enumerate((0.7, 0.8))
    ]
    lines = markdown_table(rows).strip().splitlines()
    assert len(lines) == 3
    assert lines[2].startswith("| HISP 50% | 24/48 (50%) | 75.00% ± 7.07 (n=2) | 70.00%–80.00% |")


def seeded(strategy: str, ratio: float, accuracies: tuple[float, ...], **extra: Any) -> list:
    return [row(strategy, ratio, s, a, **dict(extra)) for s, a in enumerate(accuracies)]


def test_claims_hold_when_strategies_tie_at_2_and_cuts_win_at_3_5_at_three_seeds() -> None:
    rows = [
        *seeded("layer_mag_weight", 2.0, (0.850, 0.853, 0.848)),
        *seeded("cam_cut", 2.0, (0.855, 0.849, 0.851)),
        *seeded("smooth_cut", 2.0, (0.852, 0.851, 0.853)),
        *seeded("layer_mag_weight", 3.5, (0.70, 0.71, 0.69)),
        *seeded("cam_cut", 3.5, (0.78, 0.79, 0.78)),
        *seeded("smooth_cut", 3.5, (0.76, 0.77, 0.75)),
    ]
    tie, beat = deepcuts_claims(rows)
    assert tie["id"] == "deepcuts_tie_at_2" and tie["verdict"] == "holds" and tie["holds"] is True
    (bucket,) = tie["comparisons"]
    assert bucket["spread"] == pytest.approx(0.005 / 3) and bucket["paper_ratio"] == 2.0
    assert beat["id"] == "deepcuts_beat_layer_magnitude" and beat["verdict"] == "holds"
    assert [c["method"] for c in beat["comparisons"]] == ["cam_cut", "smooth_cut"]
    assert beat["comparisons"][0]["gap"] == pytest.approx(0.08 + 0.01 / 3)
    assert beat["comparisons"][0]["differences"] == pytest.approx([0.08, 0.08, 0.09])
    text = claims_markdown([tie, beat])
    assert "verdict: holds" in text and "3 seed(s)" in text


def test_one_seed_never_gives_a_verdict_and_clear_losses_do_not_hold() -> None:
    one_seed = [
        row("layer_mag_weight", 2.0, 0, 0.850),
        row("cam_cut", 2.0, 0, 0.851),
        row("layer_mag_weight", 3.5, 0, 0.70),
        row("cam_cut", 3.5, 0, 0.78),
    ]
    tie, beat = deepcuts_claims(one_seed)
    assert tie["verdict"] == beat["verdict"] == "not distinguishable"
    assert tie["holds"] is False and beat["holds"] is False
    assert "needs at least 3" in beat["comparisons"][0]["reason"]
    losing = [
        *seeded("layer_mag_weight", 2.0, (0.85, 0.86, 0.85)),
        *seeded("cam_cut", 2.0, (0.80, 0.80, 0.81)),
        *seeded("layer_mag_weight", 3.5, (0.78, 0.79, 0.78)),
        *seeded("cam_cut", 3.5, (0.76, 0.76, 0.75)),
    ]
    tie, beat = deepcuts_claims(losing)
    assert tie["verdict"] == "does not hold" and beat["verdict"] == "does not hold"
    assert deepcuts_claims(losing, tie_tolerance=0.06)[0]["verdict"] == "not distinguishable"
    # HeadScope's prunable ratio 3 is the paper's 2.09: it tests the tie, never "3 to 4".
    prunable = [
        *seeded("layer_mag_weight", 3.0, (0.85, 0.86, 0.84), definition="prunable"),
        *seeded("cam_cut", 3.0, (0.855, 0.85, 0.852), definition="prunable"),
    ]
    tie, beat = deepcuts_claims(prunable)
    assert tie["verdict"] == "holds" and tie["comparisons"][0]["ratio_definition"] == "prunable"
    assert beat["holds"] is None and beat["statement"].startswith("Not measured")


def test_a_gap_inside_the_seed_spread_is_not_distinguishable() -> None:
    rows = seeded("layer_mag_weight", 3.5, (0.70, 0.80, 0.75))
    rows += seeded("cam_cut", 3.5, (0.74, 0.78, 0.80))
    (comparison,) = deepcuts_claims(rows)[1]["comparisons"]
    assert comparison["gap"] > 0 and comparison["verdict"] == "not distinguishable"
    assert "change sign" in comparison["reason"]
    assert "not distinguishable" in claims_markdown(deepcuts_claims(rows))
