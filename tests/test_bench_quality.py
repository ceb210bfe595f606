"""`headscope bench quality`: plan, settings, claims, markdown, and a tiny end-to-end run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cache.model_store import ModelStore
from cache.run_store import RunStore
from conftest import save_small_bert, sentiment_rows, write_csv
from pruning.bench_quality import (
    FAMILIES,
    FULL,
    QUICK,
    QualityOptions,
    evaluate_claims,
    quality_command,
    quality_markdown,
    quality_plan,
    resolve_settings,
)
from pruning.cli_bench_quality import add_quality_bench, bench_quality, options_from_args
from pruning.compression import bert_base_keep_share
from pruning.data import DataSpec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headscope bench")
    add_quality_bench(parser.add_subparsers(dest="bench"))
    return parser


def _plan(options: QualityOptions) -> list[Any]:
    settings = resolve_settings(options)
    return quality_plan(options, settings, DataSpec(max_rows=settings.max_rows))


def test_full_plan_has_every_family_at_every_setting() -> None:
    plan = _plan(QualityOptions())
    groups = Counter(p.group for p in plan)
    assert groups == {"sweep": 5 * 9 * 2, "astar": 4 * 2, "gates": 3, "mcap": 3, "deepcuts": 16}
    sweep = [p.request for p in plan if p.group == "sweep"]
    pairs = Counter((r.method, r.config["sparsity"], r.recovery_steps) for r in sweep)
    for method in ("random", "hisp", "entropy", "sep", "magnitude"):
        for tenth in range(1, 10):
            assert pairs[(method, round(tenth / 10, 1), 0)] == 1
            assert pairs[(method, round(tenth / 10, 1), 200)] == 1
    budgets = [(p.request.method, p.request.config["budget"]) for p in plan if p.group == "astar"]
    assert budgets == [(m, b) for b in (0.5, 1.0, 2.0, 4.0) for m in ("astar", "random_budget")]
    gates = {p.label: p.request.config for p in plan if p.group == "gates"}
    assert gates == {
        "AutoAttention (natural output)": {"steps": 200},
        "AutoAttention fixed 50%": {"steps": 200, "fixed_sparsity": 0.5},
        "L0 gates (natural output)": {"steps": 200},
    }
    mcap = [p.request for p in plan if p.group == "mcap"]
    assert [r.method for r in mcap] == ["mcap", "random", "entropy"]
    assert {r.protocol for r in mcap} == {"before"} and {r.config["sparsity"] for r in mcap} == {
        0.2
    }
    assert mcap[0].config["max_train_examples"] == 0 and mcap[0].config["episode_size"] == 60
    cuts = [(p.request.config["strategy"], p.request.config["compression_ratio"])
            for p in plan if p.group == "deepcuts"]  # fmt: skip
    assert cuts == [(s, r) for s in FULL.strategies for r in (2.0, 3.0, 3.5, 4.0)]
    assert all(p.request.score_examples == 256 and p.request.eval_examples is None for p in plan)
    assert len({p.label for p in plan}) == len(plan)


def test_quick_plan_is_small_and_keeps_every_family() -> None:
    settings = resolve_settings(QualityOptions(quick=True))
    assert settings == dataclasses.replace(QUICK, search_examples=64)  # None: as examples
    plan = _plan(QualityOptions(quick=True))
    assert Counter(p.group for p in plan) == {
        "sweep": 15, "astar": 2, "gates": 3, "mcap": 3, "deepcuts": 2,
    }  # fmt: skip
    recovered = [p.request for p in plan if p.request.recovery_steps]
    assert {(r.config["sparsity"], r.recovery_steps) for r in recovered} == {(0.5, 10)}
    assert all(p.request.data.max_rows == 2000 for p in plan)
    assert {p.request.score_examples for p in plan} == {64}
    assert {p.request.config.get("steps") for p in plan if p.group == "gates"} == {10}
    mcap = next(p.request for p in plan if p.request.method == "mcap")
    assert (mcap.config["episode_size"], mcap.config["max_train_examples"]) == (30, 120)
    assert [p.label for p in plan if p.group == "deepcuts"] == [
        "DeepCuts layer_mag_weight x3 (bert_base_equivalent)",
        "DeepCuts cam_cut x3 (bert_base_equivalent)",
    ]
    assert settings.methods == FAMILIES


def test_explicit_flags_override_the_quick_preset() -> None:
    argv = ["quality", "--quick", "--sparsities", "0.4,0.2", "--recovery-steps", "5",
            "--max-rows", "0", "--examples", "32", "--methods", "hisp,astar", "--budgets", "1,3",
            "--latency-repeats", "7", "--eval-examples", "100"]  # fmt: skip
    args = _parser().parse_args(argv)
    options = options_from_args(args)
    settings = resolve_settings(options)
    assert settings.sparsities == (0.2, 0.4) and settings.recovery_sparsities == (0.4,)
    assert settings.max_rows is None and settings.examples == 32 and settings.eval_examples == 100
    assert settings.methods == ("hisp", "astar") and settings.latency_repeats == 7
    assert settings.gate_steps == QUICK.gate_steps  # not given: the preset's
    plan = quality_plan(options, settings, DataSpec())
    assert [p.label for p in plan] == [
        "HISP 20%", "HISP 40%", "HISP 40% + 5 recovery steps",
        "A* budget 1", "Random under budget 1 (best of 5)",
        "A* budget 3", "Random under budget 3 (best of 5)",
    ]  # fmt: skip
    assert all(p.request.eval_examples == 100 for p in plan)
    # The command written into the report parses back to the same options.
    command = quality_command(options)
    again = options_from_args(_parser().parse_args(shlex.split(command)[2:]))
    assert again == options


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sparsities": [0.5, 1.5]}, "--sparsities must be shares of heads between 0 and 1"),
        ({"sparsities": "0.5,x"}, "--sparsities must be numbers"),
        ({"recovery_sparsities": [0.7]}, "must be among --sparsities"),
        ({"methods": ["hisp", "nope"]}, "unknown families"),
        ({"budgets": [0.0]}, "--budgets must be accuracy points in (0, 100]"),
        ({"ratios": [1.0]}, "compression ratios above 1"),
        ({"latency_batch": 0}, "--latency-batch must be an integer from 1"),
        ({"gate_steps": 0}, "--gate-steps must be"),
        ({"colour": "red"}, "Unknown bench settings"),
        ({"mcap_episode_size": 4}, "Maps per episode"),
        ({"strategies": ["cam_cut", "best_cut"]}, "best_cut"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        _plan(QualityOptions(quick=True, overrides=overrides))


def test_bad_settings_are_refused_before_any_work(tmp_path: Path) -> None:
    argv = ["quality", "--quick", "--sparsities", "0.5", "--recovery-sparsities", "0.3",
            "--out", str(tmp_path / "q.json")]  # fmt: skip
    args = _parser().parse_args(argv)
    with pytest.raises(ValueError, match="must be among --sparsities"):
        bench_quality(args)
    assert ModelStore().list() == [] and RunStore().list()[0] == []
    assert not (tmp_path / "q.json").exists()
    with pytest.raises(ValueError, match="do not apply with --prepared"):
        bench_quality(_parser().parse_args(["quality", "--prepared", "abc", "--data", "x.csv"]))


# --- claims on synthetic rows -------------------------------------------------------------


def _row(method: str, accuracy: float | None, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "method": method, "accuracy": accuracy, "protocol": "after", "recovered": False,
        "dense_accuracy": 0.838, "test_examples": 1276, "heads_removed": 36, "config": {},
    }  # fmt: skip
    row.update(fields)
    return row


RANDOM_TRIALS = [3] * 10 + [10] * 9 + [21]  # 20 trials, mean 7.05


def _astar_rows(astar_heads: int, astar_accuracy: float) -> list[dict[str, Any]]:
    return [
        _row("astar", astar_accuracy, heads_removed=astar_heads, config={"budget": 1.0}),
        _row("random_budget", 0.83, heads_removed=21, random_heads=RANDOM_TRIALS,
             config={"budget": 1.0, "trials": 20}),
        # another budget without its random row is not compared
        _row("astar", 0.5, heads_removed=1, config={"budget": 4.0}),
    ]  # fmt: skip


def _seeds(method: str, accuracies: tuple[float, ...], **fields: Any) -> list[dict[str, Any]]:
    return [_row(method, a, seed=s, **fields) for s, a in enumerate(accuracies)]


def _gate_rows(gates: tuple[float, ...], *, with_hisp: bool = True) -> list[dict[str, Any]]:
    recovered = {"config": {"sparsity": 0.5}, "recovered": True, "recovery_steps": 200}
    rows = [
        *_seeds("autoattention", gates,
                config={"fixed_sparsity": 0.5, "train_weights": True, "steps": 300}),
        _row("hisp", 0.95, config={"sparsity": 0.5}),  # no recovery: not like with like
        *_seeds("random", (0.814, 0.810, 0.818), **recovered),
    ]  # fmt: skip
    if with_hisp:
        rows += _seeds("hisp", (0.832, 0.830, 0.834), **recovered)
    return rows


def _mcap_rows(mcap: tuple[float, ...]) -> list[dict[str, Any]]:
    before = {"protocol": "before", "recovered": True, "config": {"sparsity": 0.2}}
    return [
        *_seeds("mcap", mcap, **before),
        *_seeds("random", (0.836, 0.834, 0.838), **before),
        *_seeds("entropy", (0.828, 0.826, 0.830), **before),
        _row("random", 0.99, config={"sparsity": 0.2}),  # "after" protocol: not compared
    ]


def _cut(strategy: str, ratio: float, accuracy: float, seed: int = 0) -> dict[str, Any]:
    config = {"strategy": strategy, "compression_ratio": ratio, "refine_steps": 0,
              "ratio_definition": "bert_base_equivalent"}  # fmt: skip
    return _row("deepcuts", accuracy, config=config, seed=seed, bert_base_ratio=ratio,
                label=f"DeepCuts {strategy} x{ratio:g}")  # fmt: skip


def _claims(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    claims = evaluate_claims(rows)
    assert [c["id"] for c in claims] == [
        "astar_vs_random",
        "autoattention_vs_hisp_random",
        "mcap_vs_random_entropy",
        "deepcuts_vs_layer_magnitude",
    ]
    return {c["id"]: c for c in claims}


def test_astar_claim_weighs_a_star_against_the_random_trials_and_the_budget() -> None:
    holds = _claims(_astar_rows(22, 0.830))["astar_vs_random"]
    assert holds["verdict"] == "holds" and holds["holds"] is True
    [comparison] = holds["comparisons"]
    assert comparison["budget"] == 1.0 and comparison["random_heads_mean"] == 7.05
    assert comparison["share_at_least_astar"] == 0.0
    assert comparison["astar_drop_points"] == pytest.approx(0.8)
    assert holds["statement"] == (
        "At a budget of 1 point A* removed 22 heads against 7.0 on average for 20 random trials "
        "(0% of them removed as many or more), with test accuracy 83.0% vs 83.8% dense (a drop "
        "of 0.8 points, within the budget) (on 1,276 test texts): holds."
    )
    unclear = _claims(_astar_rows(12, 0.830))["astar_vs_random"]  # p = 1/20 is not < 0.05
    assert unclear["verdict"] == "not distinguishable" and unclear["holds"] is False
    fewer = _claims(_astar_rows(7, 0.845))["astar_vs_random"]  # p = 10/20
    assert fewer["verdict"] == "does not hold" and fewer["statement"].endswith("does not hold.")
    assert "(a gain of 0.7 points, within the budget)" in fewer["statement"]
    over = _claims(_astar_rows(22, 0.80))["astar_vs_random"]
    assert over["verdict"] == "does not hold" and "over the budget" in over["statement"]
    missing = _claims(_astar_rows(12, 0.83)[::2])["astar_vs_random"]
    assert missing["holds"] is None and missing["verdict"] is None
    assert missing["comparisons"] == [] and missing["statement"].startswith("Not measured:")


def test_autoattention_claim_pairs_seeds_with_the_recovered_baselines() -> None:
    holds = _claims(_gate_rows((0.85, 0.851, 0.853)))["autoattention_vs_hisp_random"]
    assert holds["verdict"] == "holds"
    assert [(c["baseline"], c["seeds"]) for c in holds["comparisons"]] == [
        ("hisp", 3),
        ("random", 3),
    ]
    assert holds["comparisons"][0]["baseline_accuracy"] == pytest.approx(0.832)
    assert "each with 200 recovery steps" in holds["statement"]
    lower = _claims(_gate_rows((0.80, 0.801, 0.799)))["autoattention_vs_hisp_random"]
    assert lower["verdict"] == "does not hold"
    mixed = _claims(_gate_rows((0.84, 0.82, 0.835)))["autoattention_vs_hisp_random"]
    assert mixed["verdict"] == "not distinguishable"  # above random, but not HISP at every seed
    one = _claims(_gate_rows((0.85,)))["autoattention_vs_hisp_random"]
    assert one["verdict"] == "not distinguishable" and "Measured on 1 seed(s)" in one["statement"]
    missing = _claims(_gate_rows((0.85,), with_hisp=False))["autoattention_vs_hisp_random"]
    assert missing["holds"] is None and "Not measured" in missing["statement"]


def test_mcap_claim_pairs_seeds_within_the_before_protocol() -> None:
    claim = _claims(_mcap_rows((0.840, 0.839, 0.842)))["mcap_vs_random_entropy"]
    assert claim["verdict"] == "holds"
    lower = _claims(_mcap_rows((0.830, 0.829, 0.831)))["mcap_vs_random_entropy"]
    assert lower["verdict"] == "does not hold"
    assert "MCAP reached 83.0% test accuracy against random heads 83.6%" in lower["statement"]
    assert _claims(_mcap_rows((0.84,))[:4])["mcap_vs_random_entropy"]["holds"] is None


def test_deepcuts_claim_ties_at_2_and_pairs_every_strategy_with_layer_magnitude_at_3_to_4() -> None:
    rows = [_cut("layer_mag_weight", 2.0, a, s) for s, a in enumerate((0.80, 0.81, 0.80))]
    rows += [_cut("cam_cut", 2.0, a, s) for s, a in enumerate((0.805, 0.80, 0.803))]
    for ratio, base, cam in ((3.0, 0.757, 0.79), (4.0, 0.70, 0.76)):
        rows += [_cut("layer_mag_weight", ratio, base + d, s) for s, d in enumerate((0, 0.01, 0))]
        rows += [_cut("cam_cut", ratio, cam + d, s) for s, d in enumerate((0, 0, 0.01))]
    holds = _claims(rows)["deepcuts_vs_layer_magnitude"]
    assert holds["verdict"] == "holds"
    assert [(c["part"], c.get("method"), c["ratio"]) for c in holds["comparisons"]] == [
        ("tie at 2", None, 2.0),
        ("beat at 3-4", "cam_cut", 3.0),
        ("beat at 3-4", "cam_cut", 4.0),
    ]
    assert "at the paper's ratio 3.00 (bert_base_equivalent) Cam-Cut reached" in holds["statement"]
    rows += [_cut("smooth_cut", 3.0, a, s) for s, a in enumerate((0.58, 0.59, 0.587))]
    mixed = _claims(rows)["deepcuts_vs_layer_magnitude"]
    assert mixed["verdict"] == "does not hold" and len(mixed["comparisons"]) == 4
    assert _claims(rows[:3])["deepcuts_vs_layer_magnitude"]["holds"] is None


def test_markdown_has_both_tables_and_every_claim() -> None:
    rows = [
        {**_row("hisp", 0.82, config={"sparsity": 0.5}), "label": "HISP 50%", "heads": 72,
         "head_sparsity": 0.5, "pruned_accuracy": 0.82, "recovered_accuracy": None, "mcc": 0.6,
         "granularity": "head", "latency_ms": 40.0, "latency_p10_ms": 39.0,
         "latency_p90_ms": 41.0, "speedup": 1.5, "predicted_speedup": 1.6, "seconds": 3.0},
        {**_cut("cam_cut", 3.0, 0.79), "label": "DeepCuts cam_cut x3", "heads": 72,
         "head_sparsity": 0.0, "pruned_accuracy": 0.79, "recovered_accuracy": None,
         "granularity": "weight", "achieved_ratio": 3.0, "seconds": 10.0},
    ]  # fmt: skip
    report = {
        "mode": "quick", "settings": {"examples": 64}, "machine": "x86_64 · 2 cores",
        "date": "2026-01-01 00:00 UTC", "command": "headscope bench quality --quick",
        "prepared": {"key": "abc", "model": "MiniLM", "data": "Rotten Tomatoes"},
        "dense": {"accuracy": 0.838, "n_examples": 200}, "rows": rows,
        "latency": {"repeats": 3, "batch_size": 8, "seq_len": 64, "device": "cpu", "threads": 2},
        "claims": evaluate_claims(rows),
    }  # fmt: skip
    markdown = quality_markdown(report)
    _check_markdown(markdown, head_rows=1, deepcuts_rows=1)
    assert "| HISP 50% | 36/72 (50%) | 82.00% | – | 0.600 | 40.0 (39.0–41.0) | 1.50× |" in markdown


def _check_markdown(markdown: str, *, head_rows: int, deepcuts_rows: int) -> None:
    """Both tables with consistent columns, and the four claims."""
    assert markdown.startswith("# Quality bench")
    sections = re.split(r"^## ", markdown, flags=re.M)
    titles = [s.splitlines()[0] for s in sections[1:]]
    assert titles == ["Head-level runs", "DeepCuts by compression ratio", "Claims"]
    for section, n_rows in zip(sections[1:3], (head_rows, deepcuts_rows), strict=True):
        table = [line for line in section.splitlines() if line.startswith("|")]
        assert len(table) == 2 + n_rows
        assert len({line.count("|") for line in table}) == 1
        assert set(table[1].replace("|", "")) == {"-"}
    claims = [line for line in sections[3].splitlines() if line.startswith("- **")]
    assert len(claims) == 4


# --- end to end on a tiny model -----------------------------------------------------------


def test_bench_quality_end_to_end_on_a_tiny_model_prepares_runs_and_writes_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_small_bert(tmp_path / "tiny-bert")
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(120))
    out, table, figures = tmp_path / "q.json", tmp_path / "q.md", tmp_path / "figures"
    argv = ["quality", "--model", str(model), "--data", str(data), "--examples", "16",
            "--device", "cpu", "--no-progress", "--methods",
            "random,hisp,astar,autoattention,mcap,deepcuts", "--sparsities", "0.5",
            "--recovery-steps", "2", "--budgets", "5", "--random-trials", "2", "--gate-steps",
            "2", "--mcap-episode-size", "8", "--mcap-update-every", "1",
            "--mcap-train-examples", "16", "--strategies", "layer_mag_weight,cam_cut",
            "--ratios", "3", "--grad-batches", "1", "--latency-batch", "2",
            "--latency-seq-len", "16", "--latency-repeats", "2", "--out", str(out),
            "--markdown", str(table), "--figures", str(figures)]  # fmt: skip
    assert bench_quality(_parser().parse_args(argv)) == 0
    printed = capsys.readouterr()
    assert "No classifier is prepared" in printed.err  # the bench prepared one first
    report = json.loads(out.read_text())
    [prepared] = ModelStore().list()
    assert report["prepared"]["key"] == prepared.key and report["prepared"]["prepared_now"]
    labels = [row["label"] for row in report["rows"]]
    assert labels == [p["label"] for p in report["plan"]] and len(labels) == 13
    for row in report["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["key"]
        if row["granularity"] == "head":
            assert row["latency_ms"] > 0 and row["speedup"] > 0
            assert row["predicted_speedup"] >= 1.0
        else:
            # the paper's ratio 3 on BERT-base keeps 14.7% of the prunable weights
            assert row["latency_ms"] is None and row["weight_sparsity"] == pytest.approx(
                1 - bert_base_keep_share(3.0), rel=1e-3
            )
    by_label = {row["label"]: row for row in report["rows"]}
    assert by_label["Random under budget 5 (best of 2)"]["random_heads_mean"] is not None
    recovered = by_label["HISP 50% + 2 recovery steps"]
    assert recovered["recovered"] and recovered["recovered_accuracy"] is not None
    assert recovered["latency_ms"] == by_label["HISP 50%"]["latency_ms"]  # the same mask
    assert [c["holds"] is not None for c in report["claims"]] == [True] * 4
    assert report["settings"]["sparsities"] == [0.5] and report["latency"]["repeats"] == 2
    assert report["command"].startswith("headscope bench quality --model")
    markdown = table.read_text()
    assert markdown == printed.out
    _check_markdown(markdown, head_rows=11, deepcuts_rows=2)
    for name in ("quality_sparsity.html", "quality_latency.html"):
        page = (figures / name).read_text()
        assert "Pareto front" in page and "<script src=" not in page  # plotly.js inlined
        assert len(page) > 1_000_000
    assert report["figures"] == [str(figures / n) for n in
                                 ("quality_sparsity.html", "quality_latency.html")]  # fmt: skip
    stored = len(RunStore().list()[0])
    assert stored == 13
    assert bench_quality(_parser().parse_args(argv)) == 0  # every row comes from the store
    assert len(RunStore().list()[0]) == stored and len(ModelStore().list()) == 1
