"""Bad input on the command line: one line on stderr that says what to fix, exit status 2, and
nothing added to the model store, the run store, the explanation cache or the uploads.

Long, mixed-script and HTML texts are not bad input: they work, with a truncation note where the
model cuts the text, and come back as data (JSON strings), never as markup.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from transformers import GPT2Config, GPT2ForSequenceClassification

from cache.model_store import ModelStore
from cache.paths import headscope_home
from cache.run_store import RunStore
from conftest import prepared_tiny_setup, real_tokenizer, sentiment_rows, small_bert, write_csv
from pruning.cli import main
from pruning.data import MAX_CLASSES, MAX_TEXT_CHARS

LONG_TEXT = ("The film was wonderful and the acting superb. " * 250)[:10_000]
MIXED = "Ein großartiger Film 🎬🍿 — 素晴らしい映画！ فيلم رائع 👍🏽 Привет"
HTML_TEXT = '<script>alert("x")</script><img src=x onerror=alert(1)> good film'
QUICK = ["--max-steps", "2", "--batch-size", "8", "--no-progress", "--device", "cpu"]


def _bad_tables(folder: Path) -> dict[str, Path]:
    rows = sentiment_rows(40)
    folder.mkdir()
    plain = "\n".join(["text,label", *(f"{t},{label}" for t, label in rows)]) + "\n"
    (folder / "utf16.csv").write_bytes(plain.encode("utf-16"))
    (folder / "latin1.csv").write_bytes(plain.replace("a ", "café ").encode("latin-1"))
    return {
        "missing_column": write_csv(folder / "nocol.csv", rows, header=("review", "label")),
        "utf16": folder / "utf16.csv",
        "latin1": folder / "latin1.csv",
        "missing_labels": write_csv(
            folder / "nolabels.csv",
            [(t, "" if i in (3, 7) else label) for i, (t, label) in enumerate(rows)],
        ),
        "single_row": write_csv(folder / "one.csv", rows[:1]),
        "header_only": write_csv(folder / "header.csv", []),
        "too_many_classes": write_csv(
            folder / "classes.csv", [(f"text {i}", f"c{i // 2}") for i in range(44)]
        ),
        "three_classes": write_csv(
            folder / "three.csv",
            [(t, ("bad", "fine", "great")[i % 3]) for i, (t, _) in enumerate(rows)],
        ),
    }


def _gpt2(folder: Path) -> Path:
    """A 2-layer GPT-2 classifier saved from a config in code (no download)."""
    config = GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=100, n_positions=32)
    config.bos_token_id = config.eos_token_id = 99
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A prepared tiny BERT, a plain tiny encoder, a GPT-2 and bad tables, in one home."""
    home = tmp_path_factory.mktemp("cli_bad_input_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(home))
    model, data = prepared_tiny_setup(home / "setup")
    encoder = home / "encoder"  # a plain Hugging Face folder: no head, no headscope.json
    small_bert().bert.save_pretrained(encoder)
    real_tokenizer().save_pretrained(encoder)
    (home / "no_config").mkdir()
    yield {
        "model": str(model.path),
        "data": str(data.path),
        "encoder": str(encoder),
        "gpt2": str(_gpt2(home / "gpt2")),
        "no_config": str(home / "no_config"),
        "missing": str(home / "nowhere"),
        "tables": {k: str(v) for k, v in _bad_tables(home / "tables").items()},
        "home": home,
    }
    patch.undo()


@pytest.fixture
def tiny(setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("HEADSCOPE_HOME", str(setup["home"]))
    return setup


def _where(tiny: dict[str, Any]) -> list[str]:
    return ["--model", tiny["model"], "--data", tiny["data"], "--device", "cpu"]


def _prune(*extra: str) -> Callable[[dict[str, Any]], list[str]]:
    return lambda t: ["prune", *_where(t), "--no-progress", "--score-examples", "8", *extra]


def _prepare_on(table: str) -> Callable[[dict[str, Any]], list[str]]:
    return lambda t: ["prepare", "--model", t["model"], "--data", t["tables"][table], *QUICK]


def _prepare_model(which: str) -> Callable[[dict[str, Any]], list[str]]:
    return lambda t: ["prepare", "--model", t[which], "--data", t["data"], *QUICK]


TOO_LONG = "x" * (MAX_TEXT_CHARS + 1)
# name: (command line from the setup, a fragment of the one-line message)
BAD_INPUT: dict[str, tuple[Callable[[dict[str, Any]], list[str]], str]] = {
    "explain_empty": (lambda t: ["explain", "", *_where(t)], "type a sentence to explain"),
    "explain_whitespace": (
        lambda t: ["explain", " \n\t ", *_where(t)],
        "The text is empty; type a sentence to explain",
    ),
    "attention_empty": (
        lambda t: ["attention", "   ", *_where(t), "--roles"],
        "The text is empty; type a sentence to show attention for",
    ),
    "explain_too_long": (
        lambda t: ["explain", TOO_LONG, *_where(t), "--no-progress"],
        "20,001 characters; at most 20,000 are accepted. Shorten it",
    ),
    "attention_too_long": (
        lambda t: ["attention", TOO_LONG, *_where(t), "--roles"],
        "at most 20,000 are accepted",
    ),
    "csv_missing_column": (
        _prepare_on("missing_column"),
        "Column(s) 'text' not found; available columns: 'review', 'label'",
    ),
    "csv_utf16": (_prepare_on("utf16"), "utf16.csv is not UTF-8 text"),
    "csv_latin1": (_prepare_on("latin1"), "latin1.csv is not UTF-8 text (byte"),
    "csv_missing_labels": (
        _prepare_on("missing_labels"),
        "empty or missing labels in column 'label' at data rows 4, 8 (2 rows)",
    ),
    "csv_single_row": (_prepare_on("single_row"), "a classifier needs at least 2 classes"),
    "csv_header_only": (_prepare_on("header_only"), "has a header but no data rows"),
    "csv_too_many_classes": (
        _prepare_on("too_many_classes"),
        f"22 distinct labels ('c0', 'c1', 'c10', 'c11', 'c12', ...); at most {MAX_CLASSES}",
    ),
    "csv_missing_file": (
        lambda t: ["prepare", "--model", t["model"], "--data", t["missing"] + ".csv", *QUICK],
        "does not exist",
    ),
    "model_missing": (_prepare_model("missing"), "not found: give 'default', the path of a"),
    "model_without_config": (_prepare_model("no_config"), "has no config.json"),
    "model_gpt2_prepare": (_prepare_model("gpt2"), "Model type 'gpt2' is not supported"),
    "model_gpt2_evaluate": (
        lambda t: ["evaluate", "--model", t["gpt2"], "--data", t["data"], "--device", "cpu"],
        "Model type 'gpt2' is not supported",
    ),
    "astar_negative_budget": (
        _prune("--method", "astar", "--set", "budget=-1"),
        "Budget (metric points) must be between 0.0 and 100.0 (got -1.0)",
    ),
    "astar_budget_unset": (
        _prune("--method", "astar", "--set", "budget=none"),
        "Budget (metric points): budget must be set",
    ),
    "astar_engine_unset": (
        _prune("--method", "astar", "--set", "engine="),
        "Evaluation engine: engine must be set",
    ),
    "sparsity_above_1": (
        _prune("--method", "random", "--sparsity", "1.5"),
        "Head sparsity must be between 0.0 and 1.0 (got 1.5)",
    ),
    "sparsity_below_0": (
        _prune("--method", "hisp", "--sparsity", "-0.1"),
        "Head sparsity must be between 0.0 and 1.0 (got -0.1)",
    ),
    "sparsity_nan": (_prune("--method", "random", "--sparsity", "nan"), "must be a finite number"),
    "sparsity_unset": (_prune("--method", "random", "--set", "sparsity="), "must be set"),
    "sparsity_text_flag": (
        _prune("--method", "random", "--sparsity", "abc"),
        "--sparsity 'abc': give numbers separated by commas.",
    ),
    "sparsity_text_set": (
        _prune("--method", "random", "--set", "sparsity=abc"),
        "'abc' is not a number; give one such as 0.5",
    ),
    "n_prune_fraction": (
        _prune("--method", "random", "--set", "n_prune=2.5"),
        "'2.5' is not a whole number; give one such as 3",
    ),
    "n_prune_too_many": (
        _prune("--method", "random", "--set", "n_prune=99"),
        "Cannot remove 99 heads: the model has 8. Lower the number.",
    ),
    "unknown_setting": (
        _prune("--method", "random", "--set", "bogus=1"),
        "use NAME=VALUE with NAME one of: min_heads_per_layer, n_prune, sparsity",
    ),
    "unknown_method": (_prune("--method", "nope"), "Unknown pruning method 'nope'"),
    "score_examples_zero": (
        _prune("--method", "random", "--score-examples", "0"),
        "score_examples must be between 1 and 100,000",
    ),
    "explain_few_samples": (
        lambda t: ["explain", "a film", *_where(t), "--samples", "5"],
        "--samples must be at least 10",
    ),
    "prepare_max_rows": (
        lambda t: ["prepare", *_where(t), "--max-rows", "2", *QUICK[:-2]],
        "max_rows must be None (all rows) or an integer >= 4",
    ),
}


def stored() -> tuple[list[str], list[str], list[str]]:
    """Prepared models, runs, and files of the explanation cache and the uploads."""
    home = headscope_home()
    files = [
        str(path.relative_to(home))
        for folder in ("explanations", "uploads")
        for path in sorted((home / folder).rglob("*"))
        if path.is_file()
    ]
    models = sorted(entry.key for entry in ModelStore().list())
    return models, sorted(s.key for s in RunStore().list()[0]), files


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_with_status_2_and_stores_nothing(
    case: str, tiny: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    command, fragment = BAD_INPUT[case]
    before = stored()
    code = main(command(tiny))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "", err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("headscope ") and ": error: " in lines[0]
    assert fragment in lines[0]
    assert stored() == before


def test_three_classes_are_supported(tiny: dict[str, Any], capsys: Any) -> None:
    argv = ["prepare", "--model", tiny["encoder"], "--data", tiny["tables"]["three_classes"]]
    assert main([*argv, *QUICK, "--json"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["label_names"] == ["bad", "fine", "great"]


def test_a_10k_character_text_is_truncated_with_a_note(
    tiny: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["attention", LONG_TEXT, *_where(tiny), "--roles", "cls"]) == 0
    _, err = capsys.readouterr()
    assert "note: original reads the first 128 of 1960 tokens" in err

    assert main(["attention", LONG_TEXT, *_where(tiny), "--roles", "cls", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["models"][0]
    assert report["truncated"] and report["n_tokens"] == 1960 and len(report["tokens"]) == 128

    argv = ["explain", LONG_TEXT, *_where(tiny), "--method", "lime", "--samples", "10"]
    assert main([*argv, "--no-progress"]) == 0
    _, err = capsys.readouterr()
    note = "note: the models read the first 128 of 1960 tokens; words past that point get no"
    assert note in err
    assert main([*argv, "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["truncated"] and (report["n_tokens"], report["max_length"]) == (1960, 128)
    assert report["text"] == LONG_TEXT


def test_mixed_scripts_and_emoji_work_and_show_their_tokens(
    tiny: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["attention", MIXED, *_where(tiny), "--roles", "cls", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    tokens = report["models"][0]["tokens"]
    assert report["text"] == MIXED and not report["models"][0]["truncated"]
    assert tokens[:3] == ["[CLS]", "ein", "gr"] and "[UNK]" in tokens and "film" in tokens

    argv = ["explain", MIXED, *_where(tiny), "--method", "lime", "--samples", "10", "--json"]
    assert main([*argv, "--no-progress"]) == 0
    words = json.loads(capsys.readouterr().out)["attributions"][0]["words"]
    assert words == MIXED.split()


def test_html_in_a_text_or_a_run_name_comes_back_as_data(
    tiny: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["attention", HTML_TEXT, *_where(tiny), "--roles", "cls", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["text"] == HTML_TEXT
    assert report["models"][0]["tokens"][1:4] == ["<", "script", ">"]

    argv = ["explain", HTML_TEXT, *_where(tiny), "--method", "lime", "--samples", "10"]
    assert main([*argv, "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(repr(HTML_TEXT))  # quoted, as a Python string
    texts = [
        json.loads(path.read_text(encoding="utf-8"))["attribution"]["text"]
        for path in (headscope_home() / "explanations").glob("*.json")
    ]
    assert HTML_TEXT in texts  # stored verbatim, as a JSON string

    prune = _prune("--method", "random", "--sparsity", "0.25", "--eval-examples", "8")(tiny)
    assert main([*prune, "--name", HTML_TEXT, "--json"]) == 0, capsys.readouterr().err
    key = json.loads(capsys.readouterr().out)["key"]
    assert RunStore().get(key).info["name"] == HTML_TEXT
    assert main(["runs", "--json"]) == 0
    names = [run["name"] for run in json.loads(capsys.readouterr().out)["runs"]]
    assert HTML_TEXT in names
