"""`headscope bench astar-paper`: Table 3 per budget from stored runs, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from pruning.claim_rules import DOES_NOT_HOLD, HOLDS
from pruning.claim_rules import UNCLEAR as NOT_DISTINGUISHABLE
from pruning.cli import main
from pruning.cli_bench_astar import _random_row

pytestmark = pytest.mark.slow


def test_bench_astar_paper_reports_table_3_local_and_random(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    out, table = tmp_path / "astar.json", tmp_path / "astar.md"
    argv = ["bench", "astar-paper", "--model", str(model.path), "--data", str(data.path),
            "--device", "cpu", "--no-progress", "--budgets", "5,20", "--local-budgets", "5",
            "--random-trials", "6", "--out", str(out), "--markdown", str(table)]  # fmt: skip
    assert main([*argv, "--report-only"]) == 0, capsys.readouterr().err
    empty = json.loads(out.read_text())
    assert len(empty["missing"]) == 5 and RunStore().list()[0] == []
    assert "Not stored yet" in table.read_text()
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["missing"] == [] and len(RunStore().list()[0]) == 5
    assert report["validation_examples"] == 12  # the whole validation split of 120 rows
    first, second = report["budgets"]
    assert first["budget"] == 5 and "local" in first and "local" not in second
    for entry in report["budgets"]:
        astar, random = entry["astar"], entry["random"]
        assert astar["budget_used"] <= entry["budget"] + 1e-9
        assert astar["budget_used"] == pytest.approx(
            max(0.0, astar["baseline"] - astar["final_metric"])
        )
        assert 0 <= astar["zero_budget_heads"] <= astar["heads_pruned"] <= 8
        assert random["trials"] == 6 and sum(random["heads_histogram"].values()) == 6
        assert random["verdict"] in (HOLDS, NOT_DISTINGUISHABLE, DOES_NOT_HOLD)
    assert first["local"]["evaluations"] >= first["astar"]["evaluations"]
    assert first["astar_over_local_evaluations"] <= 1.0
    markdown = table.read_text()
    assert "| budget B | used X |" in markdown and "Not stored yet" not in markdown
    assert main([*argv, "--report-only"]) == 0  # everything comes from the store
    assert json.loads(out.read_text())["budgets"] == report["budgets"]


def test_random_verdict_rule() -> None:
    class Record:
        key = "k"

        def __init__(self, counts: list[int]) -> None:
            self.info = {"method_info": {"evaluations": 10}, "total_seconds": 1.0}
            self.trace = [
                {"kind": "random_trial", "data": {"heads_pruned": c, "budget_used": 0.5}}
                for c in counts
            ]

    assert _random_row(Record([1] * 20), 9)["verdict"] == HOLDS  # p = 0
    assert _random_row(Record([1] * 19 + [9]), 9)["verdict"] == NOT_DISTINGUISHABLE  # p = .05
    assert _random_row(Record([9] * 10 + [1] * 10), 9)["verdict"] == DOES_NOT_HOLD  # p = .5
    row = _random_row(Record([2, 4, 4, 6]), 5)
    assert row["share_at_least_astar"] == 0.25 and row["heads_median"] == 4
    assert row["heads_histogram"] == {"2": 1, "4": 2, "6": 1} and row["heads_mean"] == 4.0
