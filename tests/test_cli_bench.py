"""`headscope bench astar` on a tiny prepared model: both engines, identical sets, a report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import prepared_tiny_setup, save_small_bert
from pruning.cli import main


def test_bench_astar_compares_engines_on_the_same_texts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    out = tmp_path / "result.json"
    code = main(
        [
            "bench", "astar", "--model", str(model.path), "--data", str(data.path),
            "--examples", "24", "--budget", "10", "--random-trials", "3", "--device", "cpu",
            "--out", str(out), "--json",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert json.loads(out.read_text()) == report
    assert report["identical_pruned_set"] is True
    fast, naive = report["fast"], report["naive"]
    assert fast["pruned"] == naive["pruned"]
    assert fast["evaluations"] == naive["evaluations"] > 8
    assert fast["final_metric"] == naive["final_metric"]
    assert fast["baseline"] - fast["final_metric"] <= fast["budget_used"] + 1e-9 <= 10 + 1e-9
    assert report["speedup"] > 0
    assert report["random"]["trials"] == 3
    assert report["examples"] == 12  # the validation split of the 120-row CSV holds 12 texts
    assert set(report["test"]) == {"dense", "pruned", "texts"}

    code = main(["bench", "astar", "--model", str(model.path), "--data", str(data.path),
                 "--examples", "24", "--budget", "10", "--random-trials", "0", "--skip-naive",
                 "--device", "cpu"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    assert "fast  engine:" in text and "naive" not in text


def test_bench_astar_needs_a_prepared_classifier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_small_bert(tmp_path / "fresh")
    _, data = prepared_tiny_setup(tmp_path / "setup")
    code = main(["bench", "astar", "--model", str(folder), "--data", str(data.path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "No classifier is prepared" in err and "headscope prepare" in err
    code = main(["bench", "astar", "--budget", "-1"])
    assert code == 2
    assert "--budget" in capsys.readouterr().err


def test_bench_astar_times_both_engines_on_the_same_search_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    out = tmp_path / "prefix.json"
    code = main(
        [
            "bench", "astar", "--model", str(model.path), "--data", str(data.path),
            "--examples", "0", "--budget", "10", "--prefix-evaluations", "5", "--device", "cpu",
            "--out", str(out),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(out.read_text())
    assert report["examples"] == 12 and report["prefix_evaluations"] == 5
    fast, naive = report["fast"], report["naive"]
    assert fast["evaluations"] == naive["evaluations"] == 5
    assert report["identical_prefix"] is True and fast["metrics"] == naive["metrics"]
    assert fast["evaluations_per_second"] > 0 and report["speedup"] > 0
    assert "random" not in report and "test" not in report
    assert "fast engine is" in captured.out and "metrics are identical" in captured.out
