"""Bad input at the library level: typed texts, CSV tables and uploads, model folders, settings.

Each test names the protection it checks; removing that protection makes the test fail. The
dashboard's CSV upload cannot be driven by Streamlit's AppTest (it has no file uploads), so the
upload path is tested here through :func:`pruning.data.store_upload`, the one function the Model &
data page hands an upload to: it must refuse a bad table with a message and keep nothing.
"""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path

import pytest
from transformers import GPT2Config, GPT2ForSequenceClassification

import pruning.data
import pruning.tables
from conftest import save_small_bert, sentiment_rows, write_csv
from pruning.data import (
    MAX_CLASSES,
    MAX_TEXT_CHARS,
    DataSpec,
    check_text,
    load_dataset,
    store_upload,
)
from pruning.methods.base import get_method
from pruning.models import (
    ModelSpec,
    UnsupportedArchitectureError,
    check_architecture,
    config_head_grid,
    input_limit,
)

LONG_TEXT = ("The film was wonderful and the acting superb. " * 250)[:10_000]
MIXED = "Ein großartiger Film 🎬🍿 — 素晴らしい映画！ فيلم رائع 👍🏽 Привет"
HTML_TEXT = '<script>alert("x")</script><img src=x onerror=alert(1)> good film'


def csv_bytes(rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")) -> bytes:
    lines = [",".join(header), *(f'"{text}",{label}' for text, label in rows)]
    return ("\n".join(lines) + "\n").encode("utf-8")


# Each bad table: (file name, bytes, a fragment of the message that says what to fix).
ROWS = sentiment_rows(40)
BAD_TABLES = {
    "missing column": (
        "reviews.csv",
        csv_bytes(ROWS, header=("review", "label")),
        "Column(s) 'text' not found; available columns: 'review', 'label'",
    ),
    "utf-16": (
        "reviews.csv",
        csv_bytes(ROWS).decode().encode("utf-16"),
        "is not UTF-8 text",
    ),
    "latin-1": (
        "reviews.csv",
        csv_bytes([(f"café {t}", label) for t, label in ROWS]).decode().encode("latin-1"),
        "Re-save it as UTF-8",
    ),
    "missing labels": (
        "reviews.csv",
        csv_bytes([(t, "" if i in (3, 7) else label) for i, (t, label) in enumerate(ROWS)]),
        "empty or missing labels in column 'label' at data rows 4, 8",
    ),
    "empty texts": (
        "reviews.csv",
        csv_bytes([("   " if i == 5 else t, label) for i, (t, label) in enumerate(ROWS)]),
        "empty or missing texts in column 'text' at data row 6",
    ),
    "single row": ("reviews.csv", csv_bytes(ROWS[:1]), "needs at least 2 classes"),
    "one row per class": ("reviews.csv", csv_bytes(ROWS[:2]), "needs at least 2 rows"),
    "header only": ("reviews.csv", b"text,label\n", "has a header but no data rows"),
    "empty file": ("reviews.csv", b"", "is empty"),
    "too many classes": (
        "reviews.csv",
        csv_bytes([(f"text {i}", f"class {i // 2}") for i in range(2 * (MAX_CLASSES + 1))]),
        f"at most {MAX_CLASSES} classes are supported",
    ),
}


# Typed texts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_or_whitespace_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="The text is empty; type a sentence to explain"):
        check_text(text)


def test_text_over_the_limit_is_refused_and_the_limit_is_documented() -> None:
    assert MAX_TEXT_CHARS == 20_000
    check_text("a" * MAX_TEXT_CHARS)
    with pytest.raises(ValueError, match=r"20,001 characters; at most 20,000 are accepted"):
        check_text("a" * (MAX_TEXT_CHARS + 1))


@pytest.mark.parametrize("text", [LONG_TEXT, MIXED, HTML_TEXT])
def test_long_mixed_script_and_html_texts_pass_unchanged(text: str) -> None:
    assert check_text(text) is text


def test_input_limit_reports_the_truncation_of_a_10k_character_text(tmp_path: Path) -> None:
    folder = save_small_bert(tmp_path / "tiny")
    tokenizer, limit = input_limit(folder)
    assert limit == 128  # the tiny model's position limit, below the tokenizer's 512
    assert len(tokenizer(LONG_TEXT, truncation=False, verbose=False)["input_ids"]) > limit


# CSV tables ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_bad_csv_files_are_refused_with_what_to_fix(case: str, tmp_path: Path) -> None:
    name, data, message = BAD_TABLES[case]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_dataset(DataSpec(name="csv", path=str(path)))


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_a_bad_upload_is_refused_and_nothing_is_kept(case: str, tmp_path: Path) -> None:
    name, data, message = BAD_TABLES[case]
    folder = tmp_path / "uploads"
    with pytest.raises(ValueError) as caught:
        store_upload(data, name, folder)
    assert message in str(caught.value)
    assert not folder.exists() or not any(folder.iterdir())


def test_an_upload_with_the_wrong_columns_picked_is_refused_and_nothing_is_kept(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "uploads"
    with pytest.raises(ValueError, match="columns must differ"):
        store_upload(csv_bytes(ROWS), "r.csv", folder, text_column="text", label_column="text")
    with pytest.raises(ValueError, match="'review' not found"):
        store_upload(csv_bytes(ROWS), "r.csv", folder, text_column="review")
    assert not folder.exists()


def test_a_good_upload_is_kept_once_under_its_content_hash(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    spec, dataset = store_upload(csv_bytes(ROWS), "reviews.csv", folder)
    again, _ = store_upload(csv_bytes(ROWS), "other-name.csv", folder)
    assert [p.name for p in folder.iterdir()] == [Path(str(spec.path)).name]
    assert again.path == spec.path
    assert load_dataset(spec).fingerprint == dataset.fingerprint
    assert dataset.label_names == ("negative", "positive")


@pytest.mark.parametrize(
    ("file_name", "suffix"),
    [("../../evil.csv", ".csv"), ("a." + "x" * 300 + ".tsv", ".tsv"), ("r.CSV.gz", ".csv.gz")],
)
def test_an_upload_is_kept_under_its_hash_whatever_its_name(
    tmp_path: Path, file_name: str, suffix: str
) -> None:
    data = csv_bytes(ROWS)
    if suffix == ".tsv":
        data = data.replace(b",", b"\t")
    if suffix.endswith(".gz"):
        data = gzip.compress(data)
    spec, _ = store_upload(data, file_name, tmp_path / "uploads")
    (kept,) = (tmp_path / "uploads").iterdir()
    assert kept == Path(str(spec.path)) and len(kept.name) == 16 + len(suffix)
    assert kept.name.endswith(suffix)


def test_three_classes_are_supported(tmp_path: Path) -> None:
    rows = [(text, ("bad", "fine", "great")[i % 3]) for i, (text, _) in enumerate(ROWS)]
    dataset = load_dataset(DataSpec(name="csv", path=str(write_csv(tmp_path / "3.csv", rows))))
    assert dataset.label_names == ("bad", "fine", "great") and dataset.num_labels == 3


def test_a_csv_over_the_byte_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv(tmp_path / "big.csv", ROWS)
    monkeypatch.setattr(pruning.tables, "MAX_CSV_BYTES", path.stat().st_size - 1)
    with pytest.raises(ValueError, match="big.csv is larger than"):
        load_dataset(DataSpec(name="csv", path=str(path)))
    with pytest.raises(ValueError, match="larger than"):
        store_upload(path.read_bytes(), "big.csv", tmp_path / "uploads")
    assert not (tmp_path / "uploads").exists()


def test_a_csv_over_the_row_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pruning.data.MAX_CSV_ROWS == 1_000_000
    path = write_csv(tmp_path / "long.csv", ROWS)
    monkeypatch.setattr(pruning.data, "MAX_CSV_ROWS", len(ROWS) - 1)
    message = f"long.csv has {len(ROWS)} data rows; HeadScope reads at most {len(ROWS) - 1}"
    with pytest.raises(ValueError, match=message):
        load_dataset(DataSpec(name="csv", path=str(path)))
    with pytest.raises(ValueError, match=message):
        store_upload(path.read_bytes(), "long.csv", tmp_path / "uploads")
    assert not (tmp_path / "uploads").exists()


def test_html_and_mixed_scripts_in_a_csv_are_kept_as_text(tmp_path: Path) -> None:
    rows = [(f"{(HTML_TEXT, MIXED)[i % 2]} #{i}", label) for i, (_, label) in enumerate(ROWS)]
    path = write_csv(tmp_path / "x.csv", rows)
    _, dataset = store_upload(path.read_bytes(), "x.csv", tmp_path / "uploads")
    texts = dataset.train.texts + dataset.validation.texts + dataset.test.texts
    assert sorted(texts) == sorted(text for text, _ in rows)


# Model folders -------------------------------------------------------------------------------


def tiny_gpt2(folder: Path) -> Path:
    """A 2-layer GPT-2 classifier saved from a config in code (no download)."""
    config = GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=100, n_positions=32)
    config.bos_token_id = config.eos_token_id = 99
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_an_unsupported_architecture_is_refused_from_its_config(tmp_path: Path) -> None:
    folder = tiny_gpt2(tmp_path / "gpt2")
    with pytest.raises(UnsupportedArchitectureError, match="Model type 'gpt2' is not supported"):
        check_architecture(ModelSpec.local(folder))
    with pytest.raises(UnsupportedArchitectureError, match="gpt2"):
        config_head_grid(folder)


def test_missing_or_empty_model_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_architecture(ModelSpec.local(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        check_architecture(ModelSpec.local(tmp_path / "empty"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        check_architecture(ModelSpec.local(tmp_path / "broken"))


def test_a_supported_folder_passes_the_check(tmp_path: Path) -> None:
    folder = save_small_bert(tmp_path / "tiny")
    assert check_architecture(ModelSpec.local(folder)) == "BERT"
    assert config_head_grid(folder) == (2, 4)


# Method settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "settings", "message"),
    [
        ("astar", {"budget": -1.0}, "Budget (metric points) must be between 0.0 and 100.0"),
        ("astar", {"budget": 100.5}, "must be between 0.0 and 100.0"),
        ("astar", {"budget": math.inf}, "must be a finite number"),
        ("astar", {"budget": None}, "Budget (metric points): budget must be set"),
        ("astar", {"budget": "abc"}, "must be a number such as 0.5"),
        ("astar", {"engine": None}, "Evaluation engine: engine must be set"),
        ("astar", {"metric": "bogus"}, "Metric must be one of accuracy, mcc, f1"),
        ("random", {"sparsity": 1.5}, "Head sparsity must be between 0.0 and 1.0"),
        ("random", {"sparsity": -0.1}, "Head sparsity must be between 0.0 and 1.0"),
        ("random", {"sparsity": math.nan}, "Head sparsity must be a finite number"),
        ("random", {"sparsity": "0.5"}, "Head sparsity: sparsity must be a number"),
        ("random", {"n_prune": 2.5}, "Heads to remove: n_prune must be a whole number"),
        ("random", {"n_prune": -1}, "Heads to remove must be between 0 and"),
        ("random", {"min_heads_per_layer": True}, "must be a whole number"),
        ("hisp", {"iterative": "yes"}, "Iterative: iterative must be true or false"),
        ("random", {"bogus": 1}, "Unknown setting(s) ['bogus']"),
    ],
)
def test_out_of_range_or_mistyped_settings_are_refused(
    method: str, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        get_method(method).config_class.from_dict(settings)
    assert message in str(caught.value)


def test_a_whole_float_for_an_int_setting_becomes_an_int_and_optional_none_stays() -> None:
    config = get_method("random").config_class.from_dict({"n_prune": 2.0})
    assert config.n_prune == 2 and isinstance(config.n_prune, int)  # type: ignore[attr-defined]
    assert get_method("random").config_class.from_dict({"n_prune": None}).n_prune is None  # type: ignore[attr-defined]


def test_more_heads_than_the_model_has_are_refused() -> None:
    config = get_method("random").config_class.from_dict({"n_prune": 99})
    with pytest.raises(ValueError, match="Cannot remove 99 heads: the model has 8"):
        config.heads_to_prune(2, 4)  # type: ignore[attr-defined]
