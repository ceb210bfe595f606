"""`headscope bench table1`: MCAP and its six baselines pruned before fine-tuning (tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from pruning.cli import main

pytestmark = pytest.mark.slow

ROWS = [
    "Unpruned (fine-tuned)",
    "MCAP",
    "Random heads",
    "Attention entropy",
    "Attention to [SEP]",
    "MCAP (seed 1)",
    "Random heads (seed 1)",
    "IMP",
    "L1 unstructured",
    "Random weights",
]


@pytest.fixture
def tiny(tmp_path: Path) -> list[str]:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    return ["--model", str(model.path), "--data", str(data.path), "--examples", "16",
            "--device", "cpu", "--no-progress"]  # fmt: skip


def test_bench_table1_runs_every_row_before_fine_tuning_and_times_them(
    tiny: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, table = tmp_path / "table1.json", tmp_path / "table1.md"
    argv = ["bench", "table1", *tiny, "--sparsity", "0.25", "--episode-size", "10",
            "--update-every", "2", "--max-train-examples", "30", "--latency-batch", "2",
            "--latency-seq-len", "16", "--latency-repeats", "3", "--extra-seeds", "1",
            "--out", str(out), "--markdown", str(table)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    rows = {row["label"]: row for row in report["rows"]}
    assert list(rows) == ROWS
    assert report["command"].startswith("headscope bench table1")
    store = RunStore()
    for label in ROWS[1:]:
        record = store.get(rows[label]["key"])
        assert record.info["settings"]["protocol"] == "before" and record.has_model
        assert "fine_tune" in record.info
    assert store.get(rows["Random heads (seed 1)"]["key"]).seed == 1
    assert store.get(rows["MCAP (seed 1)"]["key"]).seed == 1
    for label in ROWS[1:7]:  # head level: 25% of 2 x 4 heads
        assert rows[label]["heads_removed"] == pytest.approx(0.25)
        assert rows[label]["params"] < rows["Unpruned (fine-tuned)"]["params"]
    for label in ROWS[7:]:  # weight level: no head goes, 20% of encoder weights are zeros
        assert rows[label]["heads_removed"] == 0.0
        assert 0.0 < rows[label]["weights_removed"] < 0.25
    for row in rows.values():
        assert -1.0 <= row["mcc"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
        assert row["latency_ms"] > 0 and len(row["latency"]["times_ms"]) == 3
    markdown = table.read_text()
    assert markdown == capsys.readouterr().out
    assert len(markdown.strip().splitlines()) == 2 + len(ROWS)
    assert len(store.list()[0]) == len(ROWS) - 1
    assert main(argv) == 0  # every run comes back from the store: nothing new is stored
    assert len(store.list()[0]) == len(ROWS) - 1


def test_bench_table1_refuses_bad_shares_and_unknown_rows(
    tiny: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "table1", *tiny, "--sparsity", "1.5"]) == 2
    assert "--sparsity must be between 0 and 1" in capsys.readouterr().err
    assert main(["bench", "table1", *tiny, "--skip", "Nope"]) == 2
    assert "unknown rows" in capsys.readouterr().err
    assert RunStore().list()[0] == []


def test_prune_cli_runs_mcap_before_fine_tuning(
    tiny: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["prune", "--method", "mcap", "--protocol", "before", "--set", "episode_size=10",
            "--set", "max_train_examples=20", "--set", "sparsity=0.25", *tiny[:4],
            "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    [summary] = RunStore().list()[0]
    record = RunStore().get(summary.key)
    assert record.method == "mcap" and record.info["settings"]["protocol"] == "before"
    assert int((~record.mask).sum()) == 2
    assert [e["kind"] for e in record.trace][-1] == "final"
    bad = ["prune", "--method", "mcap", "--protocol", "before", "--recovery-steps", "5", *tiny[:4]]
    assert main(bad) == 2
    assert "Recovery steps apply to the 'after' protocol" in capsys.readouterr().err
