"""`bench table1`'s seed statistics and report on hand-made numbers: spread, pairs, verdicts,
ranks, learning-rate choice, the markdown."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from pruning.bench_table1_report import METRICS, UNPRUNED, build_report, report_markdown
from pruning.bench_table1_stats import (
    paired_comparison,
    rank_stability,
    select_learning_rate,
    spearman,
    summarise,
    verdict,
)


def test_summarise_gives_mean_sample_sd_and_range() -> None:
    summary = summarise([0.70, 0.72, 0.74])
    assert summary.n == 3 and summary.mean == pytest.approx(0.72)
    assert summary.sd == pytest.approx(0.02)  # sample sd (n - 1): sqrt(0.0008 / 2)
    assert (summary.low, summary.high) == (0.70, 0.74)
    assert summary.text() == "0.720 ± 0.020" and summary.text("{:.1%}") == "72.0% ± 2.0%"
    one = summarise([0.5])
    assert one.sd is None and one.text() == "0.500"
    with pytest.raises(ValueError, match="at least one seed"):
        summarise([])
    with pytest.raises(ValueError, match="finite"):
        summarise([0.1, float("nan")])


def test_verdict_rule() -> None:
    # mean 0.02, sd 0.005: all positive and mean > 2 sd.
    assert verdict([0.015, 0.02, 0.025])[0] == "holds"
    # all positive but mean 0.02, sd 0.0173 (> mean / 2): within the spread.
    outcome, reason = verdict([0.01, 0.01, 0.04])
    assert outcome == "not distinguishable" and "<= 2 sd" in reason
    # mixed signs never hold, however large the mean.
    outcome, reason = verdict([0.05, 0.06, -0.001])
    assert outcome == "not distinguishable" and "change sign" in reason
    assert verdict([-0.02, -0.021, -0.019])[0] == "does not hold"
    outcome, reason = verdict([0.02, 0.02])
    assert outcome == "not distinguishable" and "at least 3" in reason
    assert verdict([0.0, 0.0, 0.0])[0] == "not distinguishable"
    assert verdict([0.01, 0.01, 0.01])[0] == "holds"  # no spread at all


def test_paired_comparison_pairs_by_seed_and_orients_the_loss() -> None:
    mcap = {0: 0.70, 1: 0.72, 2: 0.71, 3: 0.9}
    base = {0: 0.68, 1: 0.70, 2: 0.685}
    mcc = paired_comparison(mcap, base, metric="mcc", name="Random heads")
    assert mcc.seeds == [0, 1, 2]  # seed 3 has no partner
    assert mcc.differences == pytest.approx([0.02, 0.02, 0.025])
    assert mcc.mean == pytest.approx(0.065 / 3) and mcc.verdict == "holds"
    loss = paired_comparison(
        {0: 0.40, 1: 0.41, 2: 0.39}, {0: 0.45, 1: 0.46, 2: 0.44}, metric="loss", name="IMP"
    )
    assert loss.raw_differences == pytest.approx([-0.05, -0.05, -0.05])
    assert loss.differences == pytest.approx([0.05, 0.05, 0.05]) and loss.verdict == "holds"
    worse = paired_comparison(base, mcap, metric="accuracy", name="x")
    assert worse.verdict == "does not hold"
    assert set(mcc.to_dict()) >= {"baseline", "metric", "differences", "verdict", "reason"}
    with pytest.raises(ValueError, match="share no seed"):
        paired_comparison({0: 1.0}, {1: 1.0}, metric="mcc", name="x")
    with pytest.raises(ValueError, match="Unknown metric"):
        paired_comparison(mcap, base, metric="f1", name="x")


def test_spearman_on_hand_made_scores() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks [1, 2, 3, 4] vs [1, 3, 2, 4]: 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([[0.1, 0.2], [0.3, 0.4]], [[1, 3], [2, 4]]) == pytest.approx(0.8)
    # ties share their mean rank: [1.5, 1.5, 3] vs [1, 2, 3] -> Pearson of ranks = sqrt(3)/2
    assert spearman([5, 5, 7], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="same size"):
        spearman([1, 2], [1, 2, 3])


def test_rank_stability_over_seed_pairs() -> None:
    grid = np.arange(12.0).reshape(3, 4)
    stability = rank_stability({2: grid[::-1], 0: grid, 1: grid * 2})
    assert [p["seeds"] for p in stability["pairs"]] == [[0, 1], [0, 2], [1, 2]]
    rhos = [p["spearman"] for p in stability["pairs"]]
    assert rhos[0] == pytest.approx(1.0) and rhos[1] < 0 and stability["min"] == rhos[1]
    assert stability["mean"] == pytest.approx(sum(rhos) / 3)
    assert rank_stability({0: grid}) == {"pairs": [], "mean": None, "min": None}


def test_select_learning_rate_takes_the_best_mean_validation_accuracy() -> None:
    accuracy = {2e-5: {0: 0.80, 1: 0.82}, 3e-5: {0: 0.82, 1: 0.80}, 5e-5: {0: 0.79, 1: 0.80}}
    assert select_learning_rate(accuracy) == 2e-5  # 0.81 == 0.81: the lower rate
    accuracy[4e-5] = {0: 0.9, 1: 0.7, 2: 0.95}
    assert select_learning_rate(accuracy) == 4e-5
    with pytest.raises(ValueError, match="No validation accuracy"):
        select_learning_rate({1e-5: {}})


def _cell(label: str, rate: float, seed: int, mcc: float, **extra: Any) -> dict[str, Any]:
    cell = {
        "label": label,
        "learning_rate": rate,
        "seed": seed,
        "key": None if label == UNPRUNED else f"{label}-{rate}-{seed}",
        "prepared_key": f"p-{rate}-{seed}",
        "method": {"MCAP": "mcap", UNPRUNED: "none"}.get(label, "random"),
        "granularity": "head",
        "mcc": mcc,
        "accuracy": 0.8 + mcc / 10,
        "loss": 0.5 - mcc / 10,
        "validation_accuracy": None,
        "heads_removed": 0.0 if label == UNPRUNED else 0.2,
        "weights_removed": 0.0 if label == UNPRUNED else 0.03,
        "flops": 2.9e9 if label == UNPRUNED else 2.7e9,
        "params": 22.7e6 if label == UNPRUNED else 22.0e6,
        "scores": None,
        "pattern_cnn": None,
    }
    return cell | extra


def _pattern(accuracy: float, model: float | None) -> dict[str, Any]:
    confusion = [[0] * 5 for _ in range(5)]
    for i in range(5):
        confusion[i][i] = 8
    confusion[0][2] = 1
    return {
        "classes": ["vertical", "diagonal", "vertical+diagonal", "block", "heterogeneous"],
        "accuracy": accuracy,
        "accuracy_by_source": {"generated": 1.0, "model": model},
        "confusion": confusion,
    }


def hand_made_cells() -> list[dict[str, Any]]:
    """Two learning rates x three seeds; MCAP wins at 5e-5 and is chosen there."""
    cells = []
    scores = {0: [[0.1, 0.9], [0.5, 0.7]], 1: [[0.2, 0.8], [0.4, 0.6]], 2: [[0.9, 0.1], [0.5, 0.7]]}
    for rate, bonus in ((2e-5, 0.0), (5e-5, 0.05)):
        for seed in (0, 1, 2):
            cells.append(
                _cell(UNPRUNED, rate, seed, 0.70 + bonus, validation_accuracy=0.85 + bonus)
            )
            cells.append(
                _cell(
                    "MCAP",
                    rate,
                    seed,
                    0.66 + bonus + 0.005 * seed,
                    validation_accuracy=0.84 + bonus,
                    scores=scores[seed],
                    pattern_cnn=_pattern(0.9 + 0.01 * seed, 0.8 if seed else None),
                )
            )
            random_mcc = 0.65 + 0.005 * seed + (0.02 if seed == 1 else 0.0)
            cells.append(
                _cell("Random heads", rate, seed, random_mcc, validation_accuracy=0.84 - bonus)
            )
    return cells


def test_build_report_chooses_rates_summarises_and_pairs_by_seed() -> None:
    report = build_report(hand_made_cells())
    rows = {row["label"]: row for row in report["rows"]}
    assert list(rows) == [UNPRUNED, "MCAP", "Random heads"]
    assert rows["MCAP"]["learning_rate"] == 5e-5 and rows["Random heads"]["learning_rate"] == 2e-5
    assert rows["MCAP"]["validation_accuracy_by_rate"] == pytest.approx(
        {"2e-05": 0.84, "5e-05": 0.89}
    )
    assert rows["MCAP"]["mcc"]["mean"] == pytest.approx(0.715) and rows["MCAP"]["mcc"]["n"] == 3
    assert rows["MCAP"]["keys"] == {0: "MCAP-5e-05-0", 1: "MCAP-5e-05-1", 2: "MCAP-5e-05-2"}
    assert rows["MCAP"]["prepared_keys"][2] == "p-5e-05-2"
    assert rows[UNPRUNED]["mcc"]["sd"] == pytest.approx(0.0)
    assert "cells" not in rows["MCAP"]
    paired = {(p["baseline"], p["metric"]): p for p in report["paired"]}
    assert set(paired) == {(r, m) for r in (UNPRUNED, "Random heads") for m in METRICS}
    random_mcc = paired[("Random heads", "mcc")]
    # MCAP (5e-5) 0.71 / 0.715 / 0.72 vs random (2e-5) 0.65 / 0.675 / 0.66.
    assert random_mcc["differences"] == pytest.approx([0.06, 0.04, 0.06])
    assert random_mcc["verdict"] == "holds"
    assert paired[("Random heads", "loss")]["verdict"] == "holds"  # lower loss, oriented
    unpruned = paired[(UNPRUNED, "mcc")]
    assert unpruned["differences"] == pytest.approx([-0.04, -0.035, -0.03])
    assert unpruned["verdict"] == "does not hold"
    stability = report["rank_stability"]
    assert [p["seeds"] for p in stability["pairs"]] == [[0, 1], [0, 2], [1, 2]]
    assert stability["pairs"][0]["spearman"] == pytest.approx(1.0)
    patterns = report["pattern_cnn"]
    assert patterns["runs"] == 3 and patterns["accuracy"]["mean"] == pytest.approx(0.91)
    assert patterns["accuracy_model_maps"]["n"] == 2 and patterns["confusion"][0][2] == 3
    assert report["rule"].startswith("A claim holds when")


def test_report_refuses_missing_mcap_or_validation() -> None:
    cells = [c for c in hand_made_cells() if c["label"] != "MCAP"]
    with pytest.raises(ValueError, match="needs the MCAP row"):
        build_report(cells)
    cells = hand_made_cells()
    cells[1]["validation_accuracy"] = None
    with pytest.raises(ValueError, match="has no validation accuracy at learning rate"):
        build_report(cells)
    one_rate = [c | {"validation_accuracy": None} for c in hand_made_cells()]
    one_rate = [c for c in one_rate if c["learning_rate"] == 2e-5]
    assert build_report(one_rate)["rows"][1]["validation_accuracy_by_rate"] == {}


def test_report_markdown_has_the_table_the_pairs_and_the_pattern_cnn() -> None:
    report = build_report(hand_made_cells())
    for row, ms in zip(report["rows"], (800.0, 700.0, 710.0), strict=True):
        row |= {"latency_ms": ms, "latency_p10_ms": ms - 10, "latency_p90_ms": ms + 10}
    text = report_markdown(report, latency_shape="batch 32 x 128 tokens")
    lines = text.splitlines()
    assert lines[0].startswith("| method | fine-tuning lr | seeds |")
    assert "latency ms (batch 32 x 128 tokens, p10–p90)" in lines[0]
    assert lines[3] == (
        "| MCAP | 5e-05 | 3 | 20% | 3.0% | 0.715 ± 0.005 | 87.15% ± 0.05% | 0.428 ± 0.001 | "
        "700 (690–710) | 2.70 | 22.00 |"
    )
    assert "| Random heads | mcc | +0.0600, +0.0400, +0.0600 | +0.0533 | 0.0115 | holds |" in text
    assert "seeds 0-1: 1.000" in text and "Rule: A claim holds when" in text
    assert "held-out accuracy over 3 run(s): 91.0% ± 1.0%" in text
    assert "| vertical | 24 | 0 | 3 | 0 | 0 |" in text
