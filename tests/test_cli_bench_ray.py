"""``headscope bench ray --quick`` on a tiny prepared model: a complete JSON and markdown report."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from conftest import prepared_tiny_setup
from pruning.cli_bench_ray import add_arguments, markdown_report, run, scaling_note
from pruning.executors import ExecutorSettings


def parse(*argv: str) -> argparse.Namespace:
    """The flags as the ``headscope bench`` parser passes them (``bench="ray"``)."""
    parser = argparse.ArgumentParser(prog="headscope")
    kinds = parser.add_subparsers(dest="bench")
    add_arguments(kinds.add_parser("ray"))
    return parser.parse_args(["ray", *argv])


def test_quick_bench_writes_a_complete_report(
    tmp_path: Path, ray_cluster: ExecutorSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    assert data.path is not None and model.path is not None
    out, markdown = tmp_path / "out" / "ray.json", tmp_path / "out" / "ray.md"
    args = parse(
        "--quick",
        "--model",
        model.path,
        "--data",
        data.path,
        "--methods",
        "magnitude,entropy",
        "--out",
        str(out),
        "--markdown",
        str(markdown),
        "--no-progress",
    )
    assert run(args) == 0
    report = json.loads(out.read_text())
    assert report["bench"] == "ray" and report["date"] and report["versions"]
    assert report["plan"]["runs"] == 2 and report["plan"]["workers"] == 2
    assert report["environment"]["ray_cpu_slots"] == 2  # the test's private instance
    assert report["environment"]["local_torch_threads"] == 2  # the same cores as Ray

    sweep = report["sweep"]
    assert [(r["method"], r["seed"]) for r in sweep["runs"]] == [("magnitude", 0), ("entropy", 0)]
    assert all(r["heads_pruned"] == 4 for r in sweep["runs"])  # 50% of 2 x 4 heads
    assert sweep["same_keys"] and sweep["same_masks"]
    assert sweep["local_seconds"] > 0 and sweep["ray_seconds"] > 0
    assert sweep["speedup"] == pytest.approx(sweep["local_seconds"] / sweep["ray_seconds"])

    astar = report["astar"]
    assert astar["evaluations"] == 1 + 8 and astar["examples"] == 12  # the whole split
    assert astar["identical_scores"]
    assert astar["ray"]["actors"] == 2 and astar["ray"]["start_seconds"] > 0
    for engine in ("local", "ray"):
        run_ = astar[engine]
        assert run_["evaluations_per_second"] == pytest.approx(9 / run_["seconds"])
    assert astar["local"]["torch_threads"] == 2

    scaling = report["scaling"]
    cost, ratio = astar["seconds_per_evaluation_one_worker"], scaling["astar"]["r_flops_ratio"]
    assert ratio > 100  # BERT-base against a hidden-32 two-layer model
    hours = scaling["astar"]["hours"]
    assert hours["5000"]["1"] == pytest.approx(5000 * cost * ratio / 3600)
    assert hours["7500"]["4"] == pytest.approx(hours["7500"]["1"] / 4)
    t = scaling["sweep"]["t_seconds_per_run"]
    assert t == pytest.approx(sweep["ray_seconds"] / 1)  # 2 runs on 2 slots: one round
    assert scaling["sweep"]["minutes"]["36"]["8"] == pytest.approx(math.ceil(36 / 8) * t / 60)
    assert scaling["formulas"] and scaling["assumptions"]

    text = markdown.read_text()
    assert text == markdown_report(report)
    for needle in ("## Scale-out", "| local (one process, 2", "Ray actors", "Scaling note"):
        assert needle in text
    assert "identical" in text and "DIFFERENT" not in text
    assert text in capsys.readouterr().out


def test_scaling_note_without_astar_has_no_bert_base_projection() -> None:
    sweep = {"runs": [{}] * 3, "ray_seconds": 120.0}
    note = scaling_note(sweep, None, slots=2)
    assert "astar" not in note and "bert_base_minutes" not in note["sweep"]
    assert note["sweep"]["t_seconds_per_run"] == 60.0  # 3 runs on 2 slots: two rounds
    assert note["sweep"]["minutes"]["3"] == {"1": 3.0, "2": 2.0, "4": 1.0, "8": 1.0, "16": 1.0}


def test_bad_flags_say_how_to_fix() -> None:
    with pytest.raises(ValueError, match="leave nothing to measure"):
        run(parse("--skip-sweep", "--skip-astar", "--no-progress"))
    with pytest.raises(ValueError, match="at least one method"):
        run(parse("--methods", ",", "--no-progress"))
