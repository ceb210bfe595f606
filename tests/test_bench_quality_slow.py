"""The CI check of issue #10: `headscope bench quality --quick` on the real default model and data.

Starts from an empty HEADSCOPE_HOME (conftest isolates it), so it prepares the default classifier
on the quick subsample first, then runs every planned row, times the head masks and judges the
claims. It checks that the output is complete and well-formed, not what the numbers are: the
quick mode's test split is too small to judge the papers.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest

from cache.model_store import ModelStore
from cache.run_store import RunStore
from pruning.cli import main

pytestmark = pytest.mark.slow

CLAIMS = [
    "astar_vs_random",
    "autoattention_vs_hisp_random",
    "mcap_vs_random_entropy",
    "deepcuts_vs_layer_magnitude",
]


def test_quick_quality_bench_runs_from_an_empty_home_and_writes_complete_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ModelStore().list() == []
    out, table, figures = tmp_path / "quick.json", tmp_path / "quick.md", tmp_path / "figures"
    argv = ["bench", "quality", "--quick", "--no-progress", "--out", str(out),
            "--markdown", str(table), "--figures", str(figures)]  # fmt: skip
    started = time.monotonic()
    assert main(argv) == 0, capsys.readouterr().err
    wall = time.monotonic() - started
    report = json.loads(out.read_text())
    assert report["mode"] == "quick" and report["prepared"]["prepared_now"] is True
    assert report["command"].startswith("headscope bench quality --quick")
    assert report["settings"]["max_rows"] == 2000 and report["settings"]["sparsities"] == [0.3, 0.5]
    # The classifier prepared on the subsample must have learned something: a one-class model
    # makes every head free to remove, and A* then searches all of them (thousands of forwards).
    assert report["dense"]["mcc"] > 0.3

    plan, rows = report["plan"], report["rows"]
    assert [row["label"] for row in rows] == [p["label"] for p in plan]
    assert {p["group"] for p in plan} == {"sweep", "astar", "gates", "mcap", "deepcuts"}
    assert len(rows) == 25 and len({row["key"] for row in rows}) == 25
    assert len(RunStore().list()[0]) == 25
    for row in rows:
        assert math.isfinite(row["accuracy"]) and 0.0 <= row["accuracy"] <= 1.0, row["label"]
        assert math.isfinite(row["mcc"]) and -1.0 <= row["mcc"] <= 1.0, row["label"]
        if row["granularity"] == "head":
            assert row["latency_ms"] > 0 and row["speedup"] > 0, row["label"]
            assert row["predicted_speedup"] >= 1.0, row["label"]
        else:
            # the paper's ratio 3, read on BERT-base (keeps 14.7% of the prunable weights)
            assert row["bert_base_ratio"] == pytest.approx(3.0, rel=0.01)
    assert report["latency"]["batch_size"] == 8 and report["latency"]["repeats"] == 3

    claims = report["claims"]
    assert [claim["id"] for claim in claims] == CLAIMS
    for claim in claims:
        # every claim has the rows it needs in the quick plan, so each gets a verdict
        assert claim["holds"] in (True, False) and claim["comparisons"], claim["id"]
        assert claim["verdict"] in ("holds", "does not hold", "not distinguishable")
        assert re.search(r"\d", claim["statement"]) and claim["statement"].endswith(".")

    markdown = table.read_text()
    assert markdown == capsys.readouterr().out
    assert "## Head-level runs" in markdown and "## DeepCuts by compression ratio" in markdown
    head_table = [line for line in markdown.split("## DeepCuts")[0].splitlines() if line[:1] == "|"]
    cut_table = [line for line in markdown.split("## DeepCuts")[1].splitlines() if line[:1] == "|"]
    assert len(head_table) == 2 + 23 and len(cut_table) == 2 + 2
    assert markdown.count("\n- **") == 4
    for name in ("quality_sparsity.html", "quality_latency.html"):
        page = (figures / name).read_text()
        assert "Pareto front" in page and "<script src=" not in page
    print(f"\nbench quality --quick: {wall:.0f} s wall, {report['timings']}")
