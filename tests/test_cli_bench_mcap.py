"""`headscope bench table1`: MCAP and its baselines pruned before fine-tuning, over seeds and
fine-tuning learning rates (tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from pruning.cli import main

pytestmark = pytest.mark.slow

ROWS = ["Unpruned (fine-tuned)", "MCAP", "Random heads", "Random weights"]
SKIP = "Attention entropy,Attention to [SEP],IMP,L1 unstructured"
QUICK_MCAP = ["--episode-size", "10", "--update-every", "2", "--max-train-examples", "30",
              "--mcap-set", "pattern_maps=8", "--mcap-set", "map_size=8",
              "--mcap-set", "pattern_epochs=2", "--mcap-set", "pattern_texts=4",
              "--mcap-set", "maps_per_episode=2"]  # fmt: skip


@pytest.fixture
def tiny(tmp_path: Path) -> list[str]:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    return ["--model", str(model.path), "--data", str(data.path), "--examples", "16",
            "--device", "cpu", "--no-progress"]  # fmt: skip


def test_bench_table1_runs_every_row_at_every_seed_and_rate_and_compares_them(
    tiny: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, table = tmp_path / "table1.json", tmp_path / "table1.md"
    argv = ["bench", "table1", *tiny, "--sparsity", "0.25", *QUICK_MCAP, "--skip", SKIP,
            "--seeds", "0,1,2", "--learning-rates", "1e-3,2e-3", "--epochs", "1",
            "--max-steps", "2", "--train-batch-size", "16", "--latency-batch", "2",
            "--latency-seq-len", "16", "--latency-repeats", "3",
            "--out", str(out), "--markdown", str(table)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    rows = {row["label"]: row for row in report["rows"]}
    assert list(rows) == ROWS
    assert report["command"].startswith("headscope bench table1")
    protocol = report["protocol"]
    assert protocol["seeds"] == [0, 1, 2] and protocol["learning_rates"] == [1e-3, 2e-3]
    assert protocol["epochs"] == 1 and len(set(protocol["classifiers"].values())) == 6
    store = RunStore()
    for label in ROWS:
        row = rows[label]
        assert row["seeds"] == [0, 1, 2] and row["learning_rate"] in (1e-3, 2e-3)
        assert set(row["validation_accuracy_by_rate"]) == {"0.001", "0.002"}
        assert row["mcc"]["n"] == 3 and row["mcc"]["sd"] is not None
        assert row["latency_ms"] > 0 and len(row["latency"]["times_ms"]) == 3
        if label == ROWS[0]:
            continue
        for seed, key in row["keys"].items():  # JSON turned the seeds into strings
            record = store.get(key)
            assert record.seed == int(seed) and record.has_model and "fine_tune" in record.info
            assert record.info["settings"]["protocol"] == "before"
            assert record.model["prepared_key"] == row["prepared_keys"][seed]
            train = record.info["fine_tune"]["config"]
            assert train["seed"] == int(seed) and train["lr"] == row["learning_rate"]
    assert rows["MCAP"]["heads_removed"] == pytest.approx(0.25)
    assert rows["Random heads"]["heads_removed"] == pytest.approx(0.25)
    weights = rows["Random weights"]
    assert weights["heads_removed"] == 0.0 and 0.0 < weights["weights_removed"] < 0.25
    paired = {(p["baseline"], p["metric"]) for p in report["paired"]}
    assert paired == {(r, m) for r in ROWS if r != "MCAP" for m in ("mcc", "accuracy", "loss")}
    assert {p["verdict"] for p in report["paired"]} <= {
        "holds",
        "does not hold",
        "not distinguishable",
    }
    assert [p["seeds"] for p in report["rank_stability"]["pairs"]] == [[0, 1], [0, 2], [1, 2]]
    patterns = report["pattern_cnn"]
    assert patterns["runs"] == 3 and 0.0 <= patterns["accuracy"]["mean"] <= 1.0
    assert len(patterns["confusion"]) == 5
    markdown = table.read_text()
    assert markdown == capsys.readouterr().out
    assert "| MCAP |" in markdown and "Stability of MCAP's head ranking" in markdown
    assert "Confusion matrix" in markdown
    stored = len(store.list()[0])
    assert stored == 3 * 2 * 3  # three rows run, two rates, three seeds
    assert main(argv) == 0  # every classifier and run comes back from the stores
    assert len(store.list()[0]) == stored


def test_bench_table1_refuses_bad_settings_before_any_work(
    tiny: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "table1", *tiny, "--sparsity", "1.5"]) == 2
    assert "--sparsity must be between 0 and 1" in capsys.readouterr().err
    assert main(["bench", "table1", *tiny, "--skip", "Nope"]) == 2
    assert "unknown rows" in capsys.readouterr().err
    assert main(["bench", "table1", *tiny, "--skip", "MCAP"]) == 2
    assert "cannot leave out MCAP" in capsys.readouterr().err
    assert main(["bench", "table1", *tiny, "--epochs", "0"]) == 2
    assert "--epochs must be between 1 and 50" in capsys.readouterr().err
    assert main(["bench", "table1", *tiny, "--mcap-set", "cnn_target=labels"]) == 2
    assert "CNN target must be one of patterns" in capsys.readouterr().err
    assert main(["bench", "table1", *tiny, "--seeds", "0,0"]) == 2
    assert "distinct seeds" in capsys.readouterr().err
    assert main(["bench", "table1", *tiny, "--learning-rates", "0.5"]) == 2
    assert "learning rates in (0, 0.01]" in capsys.readouterr().err
    assert RunStore().list()[0] == []


def test_prune_cli_runs_mcap_before_fine_tuning(
    tiny: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["prune", "--method", "mcap", "--protocol", "before", "--set", "episode_size=10",
            "--set", "max_train_examples=20", "--set", "sparsity=0.25", *tiny[:4],
            "--set", "pattern_maps=20", "--set", "map_size=8",
            "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    [summary] = RunStore().list()[0]
    record = RunStore().get(summary.key)
    assert record.method == "mcap" and record.info["settings"]["protocol"] == "before"
    assert int((~record.mask).sum()) == 2
    kinds = [e["kind"] for e in record.trace]
    assert kinds[0] == "patterns" and kinds[-1] == "final"  # the pattern CNN by default
    assert record.info["method_info"]["pattern_cnn"]["test_counts"]["generated"] == [4] * 5
    bad = ["prune", "--method", "mcap", "--protocol", "before", "--recovery-steps", "5", *tiny[:4]]
    assert main(bad) == 2
    assert "Recovery steps apply to the 'after' protocol" in capsys.readouterr().err
