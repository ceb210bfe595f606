"""The ``headscope`` command line on a tiny local model and a tiny CSV."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

from conftest import prepared_tiny_setup, save_small_bert, sentiment_rows, write_csv
from pruning.cli import main
from pruning.cli_common import (
    build_parser,
    fraction_bar,
    is_table_path,
    parse_data_arg,
    parse_model_arg,
    show_fraction,
    train_config_from_args,
)
from pruning.models import ModelSpec
from pruning.train import TrainConfig

QUICK = ["--max-steps", "2", "--batch-size", "8", "--no-progress", "--device", "cpu"]


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    """(model folder, CSV file) with matching classes negative/positive."""
    folder = save_small_bert(tmp_path / "tiny_model")
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(60))
    return folder, data


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("headscope ") and "error:" in lines[0]
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_info_reports_versions_and_storage(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["headscope_home"] == os.environ["HEADSCOPE_HOME"]
    assert data["prepared_models"] == 0
    assert set(data["versions"]) >= {"torch", "transformers"}
    assert data["default_model"].endswith("model")
    code, out, _ = run(capsys, "info")
    assert code == 0 and "headscope_home:" in out and "torch" in out


def test_prepare_then_models_evaluate_and_latency(
    tiny: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, data = tiny
    code, out, _ = run(capsys, "models")
    assert code == 0 and "No prepared models" in out

    code, out, _ = run(
        capsys, "prepare", "--model", str(folder), "--data", str(data), *QUICK, "--json"
    )
    assert code == 0
    prepared = json.loads(out)
    assert prepared["cached"] is False
    assert prepared["label_names"] == ["negative", "positive"]
    assert prepared["train"]["steps"] == 2
    assert 0.0 <= prepared["metrics"]["test"]["accuracy"] <= 1.0
    key = prepared["key"]

    code, out, _ = run(capsys, "prepare", "--model", str(folder), "--data", str(data), *QUICK)
    assert code == 0
    assert "found in the store" in out and key in out and "test:" in out

    code, out, _ = run(capsys, "models", "--json")
    assert code == 0 and [entry["key"] for entry in json.loads(out)] == [key]
    code, out, _ = run(capsys, "models")
    assert code == 0 and key in out and "[negative, positive]" in out

    code, out, _ = run(capsys, "evaluate", "--prepared", key[:8], "--json", "--device", "cpu")
    assert code == 0
    evaluated = json.loads(out)
    assert evaluated["key"] == key and evaluated["split"] == "test"
    assert evaluated["metrics"] == pytest.approx(prepared["metrics"]["test"])

    code, out, _ = run(
        capsys,
        "evaluate",
        "--prepared",
        key,
        "--data",
        str(data),
        "--split",
        "validation",
        "--limit",
        "3",
        "--json",
    )
    assert code == 0 and json.loads(out)["metrics"]["n_examples"] == 3

    code, out, _ = run(capsys, "evaluate", "--model", str(folder), "--data", str(data))
    assert code == 0 and "accuracy" in out and "MCC" in out

    code, out, _ = run(
        capsys, "latency", "--prepared", key, "--seq-len", "16", "--repeats", "2", "--json"
    )
    assert code == 0
    timed = json.loads(out)
    assert timed["latency"]["repeats"] == 2 and timed["latency"]["seq_len"] == 16
    assert timed["parameters"] > 0 and timed["flops_per_example"] > 0
    code, out, _ = run(
        capsys, "latency", "--model", str(folder), "--seq-len", "8", "--repeats", "1"
    )
    assert code == 0 and "GFLOPs" in out


def test_evaluate_refuses_mismatched_classes(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = tiny
    rows = [(text, "good" if label == "positive" else "bad") for text, label in sentiment_rows(40)]
    other = write_csv(tmp_path / "other.csv", rows)
    code, out, err = run(capsys, "evaluate", "--model", str(folder), "--data", str(other))
    assert_one_line_error(code, out, err, "do not match", "headscope prepare --data")


def test_missing_model_path_is_a_one_line_error(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, data = tiny
    code, out, err = run(
        capsys, "prepare", "--model", str(tmp_path / "nowhere"), "--data", str(data), *QUICK
    )
    assert_one_line_error(code, out, err, "not found", "hub:ID")


def test_bad_csv_is_a_one_line_error(
    tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = tiny
    bad = write_csv(tmp_path / "bad.csv", sentiment_rows(20), header=("review", "label"))
    code, out, err = run(capsys, "prepare", "--model", str(folder), "--data", str(bad), *QUICK)
    assert_one_line_error(code, out, err, "text")
    missing = tmp_path / "missing.csv"
    code, out, err = run(capsys, "evaluate", "--model", str(folder), "--data", str(missing))
    assert_one_line_error(code, out, err, "does not exist")


def test_unknown_prepared_key_and_bad_options_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "evaluate", "--prepared", "abcdef12")
    assert_one_line_error(code, out, err, "No prepared model")
    code, out, err = run(capsys, "prepare", "--epochs", "0", "--no-progress")
    assert_one_line_error(code, out, err, "epochs must be between 1 and 50")
    assert main(["frobnicate"]) == 2
    assert main([]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()


def test_model_and_data_arguments_are_parsed(tmp_path: Path) -> None:
    assert parse_model_arg("default") == ModelSpec()
    assert parse_model_arg("hub:bert-base-uncased") == ModelSpec.hub("bert-base-uncased")
    assert parse_model_arg("hub:org/model@v1") == ModelSpec.hub("org/model", revision="v1")
    assert parse_model_arg(str(tmp_path)) == ModelSpec.local(tmp_path)
    with pytest.raises(FileNotFoundError):
        parse_model_arg(str(tmp_path / "absent"))
    assert parse_data_arg("rotten_tomatoes", max_rows=100).max_rows == 100
    assert parse_data_arg("glue/sst2").name == "glue/sst2"
    table = write_csv(tmp_path / "t.tsv", [("a", "x")])
    spec = parse_data_arg(str(table), text_column="review", label_column="stars")
    assert (spec.name, spec.path, spec.text_column, spec.label_column) == (
        "csv",
        str(table),
        "review",
        "stars",
    )
    assert is_table_path("x.csv.bz2") and is_table_path("X.TSV") and not is_table_path("imdb")


def test_prepare_flags_default_to_the_train_config() -> None:
    args = build_parser().parse_args(["prepare"])
    assert train_config_from_args(args) == TrainConfig()
    args = build_parser().parse_args(["prepare", "--lr", "5e-5", "--max-steps", "9"])
    assert train_config_from_args(args) == TrainConfig(lr=5e-5, max_steps=9)


def test_fraction_bar_shows_percent_elapsed_and_time_left_but_no_rate() -> None:
    stream = io.StringIO()
    bar = fraction_bar("pruning", file=stream)
    show_fraction(bar, 0.25, "layer 1 of 4")
    show_fraction(bar, 1.7, "done")  # clipped to the whole
    bar.close()
    frames = [frame for frame in re.split(r"[\r\n]+", stream.getvalue()) if frame]
    assert re.fullmatch(r"pruning:  25%\|[^|]*\| \[\d\d:\d\d<[\d:?]+, layer 1 of 4\]", frames[1])
    assert re.fullmatch(r"pruning: 100%\|[^|]*\| \[\d\d:\d\d<\d\d:\d\d, done\]", frames[-1])
    for rate in ("‰", "/s", "it"):
        assert rate not in stream.getvalue()
    quiet = io.StringIO()
    silent = fraction_bar("pruning", enabled=False, file=quiet)
    show_fraction(silent, 0.5, "half")
    silent.close()
    assert quiet.getvalue() == ""


def test_prune_progress_is_a_percentage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    code, _, err = run(
        capsys, "prune", "--method", "random", "--sparsity", "0.5", "--model", str(model.path),
        "--data", str(data.path), "--eval-examples", "16", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert re.search(r"random: 100%\|", err), err
    assert "‰" not in err and "/s" not in err


def test_prune_prints_a_search_expected_time_in_full(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    code, _, err = run(
        capsys, "prune", "--method", "astar", "--set", "budget=5", "--model", str(model.path),
        "--data", str(data.path), "--score-examples", "16", "--eval-examples", "16",
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    lines = [line for line in re.split(r"[\r\n]+", err) if "expect about" in line]
    assert any(
        re.fullmatch(
            r"expect about \d+ evaluations \(at most 37\) at [\d.]+ s each: about \d+ s "
            r"\(at most \d+ s\)",
            line.strip(),
        )
        for line in lines
    ), err
