"""`headscope bench gates` / `bench deepcuts`: tables of stored runs on a tiny prepared model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from pruning.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny(tmp_path: Path) -> list[str]:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    return ["--model", str(model.path), "--data", str(data.path), "--examples", "16",
            "--device", "cpu", "--no-progress"]  # fmt: skip


def test_bench_gates_sweeps_gate_rates_and_compares_at_a_fixed_sparsity(
    tiny: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, table = tmp_path / "gates.json", tmp_path / "gates.md"
    argv = ["bench", "gates", *tiny, "--gate-lrs", "5,50", "--steps", "4", "--sparsity", "0.25",
            "--out", str(out), "--markdown", str(table)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    rows = {row["label"]: row for row in report["rows"]}
    assert list(rows) == [
        "AutoAttention, gate lr 5",
        "AutoAttention, gate lr 50",
        "AutoAttention, gate lr 50, fixed 25%",
        "L0 hard-concrete (Voita et al.)",
        "HISP 25% + 4 recovery steps",
        "Random heads 25% + 4 recovery steps",
    ]
    assert [row["method"] for row in report["rows"]] == [
        "autoattention", "autoattention", "autoattention", "l0_gates", "hisp", "random",
    ]  # fmt: skip
    assert rows["AutoAttention, gate lr 50, fixed 25%"]["heads_removed"] == 2  # 25% of 2 x 4
    for label in ("HISP 25% + 4 recovery steps", "Random heads 25% + 4 recovery steps"):
        assert rows[label]["heads_removed"] == 2
        assert rows[label]["recovered_accuracy"] is not None
        assert rows[label]["accuracy"] == rows[label]["recovered_accuracy"]
    for row in report["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["dense_accuracy"] is not None
    markdown = table.read_text()
    assert markdown == capsys.readouterr().out
    assert len(markdown.strip().splitlines()) == 2 + len(rows)
    assert len(RunStore().list()[0]) == len(rows)
    started = time.monotonic()
    assert main(argv) == 0  # every row comes back from the store
    assert time.monotonic() - started < 20
    assert len(RunStore().list()[0]) == len(rows)


def test_bench_deepcuts_tabulates_every_strategy_at_every_ratio(
    tiny: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "deepcuts", *tiny, "--strategies", "layer_mag_weight,cam_cut",
            "--ratios", "2,4", "--grad-batches", "1", "--json"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    pairs = [
        (row["config"]["strategy"], row["config"]["compression_ratio"]) for row in report["rows"]
    ]
    assert pairs == [("layer_mag_weight", 2.0), ("layer_mag_weight", 4.0),
                     ("cam_cut", 2.0), ("cam_cut", 4.0)]  # fmt: skip
    for row, (_, ratio) in zip(report["rows"], pairs, strict=True):
        assert row["achieved_ratio"] == pytest.approx(ratio, rel=0.02)
        assert row["params_nonzero"] > 0 and row["heads_removed"] == 0


def test_bad_bench_settings_are_refused_before_any_run(
    tiny: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "deepcuts", *tiny, "--strategies", "nope"]) == 2
    assert "Strategy must be one of" in capsys.readouterr().err
    assert main(["bench", "gates", *tiny, "--gate-lrs", "fast"]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err
    assert main(["bench", "gates", *tiny, "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert RunStore().list()[0] == []


def test_bench_deepcuts_runs_every_row_at_every_seed_with_both_ratio_definitions(
    tiny: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pruning.compression import bert_base_keep_share

    table = tmp_path / "deepcuts.md"
    argv = ["bench", "deepcuts", *tiny, "--strategies", "layer_mag_weight,cam_cut",
            "--ratios", "2,3.5", "--ratio-definition", "bert_base_equivalent",
            "--seeds", "0,1", "--grad-batches", "1", "--markdown", str(table),
            "--json"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    rows = report["rows"]
    assert [
        (r["config"]["strategy"], r["config"]["compression_ratio"], r["seed"]) for r in rows
    ] == [
        (strategy, ratio, seed)
        for strategy in ("layer_mag_weight", "cam_cut")
        for ratio in (2.0, 3.5)
        for seed in (0, 1)
    ]
    for r in rows:
        ratio = r["config"]["compression_ratio"]
        assert r["config"]["ratio_definition"] == "bert_base_equivalent"
        assert r["keep_share"] == pytest.approx(bert_base_keep_share(ratio), abs=0.01)
        assert r["bert_base_ratio"] == pytest.approx(ratio, rel=0.03)
        assert r["achieved_ratio"] == pytest.approx(1 / r["keep_share"])
        assert 1.0 < r["whole_model_ratio"] < r["achieved_ratio"]
    # Magnitudes do not depend on the seed; the two seeds are two stored runs all the same.
    assert rows[0]["key"] != rows[1]["key"] and rows[0]["accuracy"] == rows[1]["accuracy"]
    assert [claim["id"] for claim in report["claims"]] == [
        "deepcuts_tie_at_2", "deepcuts_beat_layer_magnitude",
    ]  # fmt: skip
    assert report["claims"][0]["comparisons"][0]["paper_ratio"] == pytest.approx(2.0, rel=0.03)
    assert {c["method"] for c in report["claims"][1]["comparisons"]} == {"cam_cut"}
    markdown = table.read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 4  # header + one line per (strategy, ratio)
    assert all("(n=2)" in line for line in lines[1:])
    assert "BERT-base ratio" in lines[0] and "Claims (Grover" in markdown


def test_bench_gates_plans_every_row_at_every_seed(tiny: list[str]) -> None:
    from pruning.cli_bench_runs import gates_plan
    from pruning.cli_common import build_parser

    args = build_parser().parse_args(["bench", "gates", *tiny, "--seeds", "0,2", "--skip-l0"])
    plan = gates_plan(args)
    labels = [label for label, _ in plan]
    assert [request.seed for _, request in plan] == [0, 2] * 6
    assert labels[0] == labels[1] == "AutoAttention, gate lr 2"
    assert len(set(labels)) == 6
    single = gates_plan(build_parser().parse_args(["bench", "gates", *tiny, "--skip-l0"]))
    assert [request.seed for _, request in single] == [0] * 6
    fixed = gates_plan(
        build_parser().parse_args(["bench", "gates", *tiny, "--skip-l0", "--fixed-only"])
    )
    assert [label for label, _ in fixed] == [
        "AutoAttention, gate lr 5, fixed 50%",
        "HISP 50% + 300 recovery steps",
        "Random heads 50% + 300 recovery steps",
    ]
    assert {request.recovery_steps for _, request in fixed[1:]} == {300}


def test_bad_seed_settings_are_refused(tiny: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "gates", *tiny, "--seeds", "0,1", "--seed", "3"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["bench", "deepcuts", *tiny, "--seeds", "0,0"]) == 2
    assert "different seeds" in capsys.readouterr().err
    assert main(["bench", "deepcuts", *tiny, "--ratio-definition", "bert_base_equivalent",
                 "--ratios", "5"]) == 2  # fmt: skip
    assert "below 4.586" in capsys.readouterr().err
    assert RunStore().list()[0] == []
