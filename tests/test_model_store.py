"""The model store: keys, cache hits, damaged entries, deletion and the class-mismatch rule."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest
import torch

from cache.model_store import ENTRY_FILE, ModelStore, PreparedModel, check_label_compatibility
from cache.paths import models_dir
from conftest import save_small_bert, sentiment_rows, write_csv
from pruning.data import DataSpec, load_dataset, make_batches
from pruning.models import ModelSpec
from pruning.prepare import prepare_model
from pruning.train import TrainConfig, TrainEvent

QUICK = TrainConfig(batch_size=8, max_steps=3, lr=1e-3)


@pytest.fixture
def tiny_inputs(tmp_path: Path) -> tuple[ModelSpec, DataSpec]:
    folder = save_small_bert(tmp_path / "tiny_model")
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(60))
    return ModelSpec.local(folder), DataSpec(name="csv", path=str(data))


def _prepare(
    model: ModelSpec, data: DataSpec, store: ModelStore, **kwargs: object
) -> tuple[PreparedModel, list[TrainEvent]]:
    events: list[TrainEvent] = []
    entry = prepare_model(model, data, QUICK, store=store, on_event=events.append, **kwargs)  # type: ignore[arg-type]
    return entry, events


def test_same_inputs_give_the_same_key_and_any_change_a_new_one() -> None:
    labels = ("fresh", "rotten")
    key = ModelStore.key_for("base", "data", TrainConfig(), labels)
    assert key == ModelStore.key_for("base", "data", TrainConfig().to_dict(), list(labels))
    assert len(key) == 16 and all(c in "0123456789abcdef" for c in key)
    others = {
        ModelStore.key_for("base2", "data", TrainConfig(), labels),
        ModelStore.key_for("base", "data2", TrainConfig(), labels),
        ModelStore.key_for("base", "data", TrainConfig(lr=5e-5), labels),
        ModelStore.key_for("base", "data", TrainConfig(seed=1), labels),
        ModelStore.key_for("base", "data", TrainConfig(), ("rotten", "fresh")),
    }
    assert key not in others and len(others) == 5


def test_prepare_stores_an_entry_and_the_second_call_is_a_cache_hit(
    tiny_inputs: tuple[ModelSpec, DataSpec],
) -> None:
    model, data = tiny_inputs
    store = ModelStore()
    assert store.root == models_dir()
    entry, events = _prepare(model, data, store)
    assert len(events) == 3
    assert entry.path == store.root / entry.key
    assert (entry.path / ENTRY_FILE).is_file()
    assert entry.label_names == ("negative", "positive")
    assert set(entry.metrics) == {"validation", "test"}
    dataset = load_dataset(data)
    assert entry.metrics["test"]["n_examples"] == len(dataset.test)
    assert entry.info["train"]["steps"] == 3
    assert entry.info["train_config"] == QUICK.to_dict()
    assert entry.info["data_fingerprint"] == dataset.fingerprint
    assert set(entry.info["versions"]) == {"python", "torch", "transformers", "headscope", "lock"}

    started = time.perf_counter()
    again, events_again = _prepare(model, data, store)
    assert events_again == []
    assert again == entry
    assert time.perf_counter() - started < 5.0

    forced, forced_events = _prepare(model, data, store, force=True)
    assert len(forced_events) == 3 and forced.key == entry.key
    assert store.list() == [forced]


def test_stored_model_reloads_with_the_same_logits(
    tiny_inputs: tuple[ModelSpec, DataSpec],
) -> None:
    model, data = tiny_inputs
    store = ModelStore()
    entry, _ = _prepare(model, data, store)
    loaded = entry.load(device="cpu")
    assert loaded.label_names == entry.label_names
    dataset = load_dataset(data)
    batch = make_batches(loaded.tokenizer, dataset.test.texts, batch_size=64)[0]
    with torch.no_grad():
        logits = loaded.model(**batch.model_inputs()).logits
    assert logits.shape == (len(dataset.test), 2)
    again = ModelSpec.local(entry.path)
    from pruning.models import load_classifier

    other = load_classifier(again, device="cpu")
    with torch.no_grad():
        assert torch.equal(other.model(**batch.model_inputs()).logits, logits)


def test_different_config_or_data_makes_a_separate_entry(
    tiny_inputs: tuple[ModelSpec, DataSpec], tmp_path: Path
) -> None:
    model, data = tiny_inputs
    store = ModelStore(tmp_path / "store")
    first, _ = _prepare(model, data, store)
    other_data = DataSpec(name="csv", path=data.path, seed=1)
    second = prepare_model(model, other_data, QUICK, store=store)
    third = prepare_model(model, data, TrainConfig(batch_size=8, max_steps=2), store=store)
    assert len({first.key, second.key, third.key}) == 3
    assert {e.key for e in store.list()} == {first.key, second.key, third.key}
    assert {e.key for e in store.find(model, data)} == {first.key, third.key}
    assert [e.key for e in store.find(model, other_data)] == [second.key]
    assert store.find(ModelSpec(), data) == []


def test_the_same_content_under_another_path_finds_the_entry(
    tiny_inputs: tuple[ModelSpec, DataSpec], tmp_path: Path
) -> None:
    """An upload of the same CSV (stored under a new name) reuses the classifier prepared on it."""
    model, data = tiny_inputs
    store = ModelStore(tmp_path / "store")
    entry, _ = _prepare(model, data, store)
    copy = tmp_path / "uploads" / "copy.csv"
    copy.parent.mkdir()
    shutil.copy(str(data.path), copy)
    moved = DataSpec(name="csv", path=str(copy))
    assert store.find(model, moved) == []
    same = load_dataset(moved).fingerprint
    assert [e.key for e in store.find(model, moved, same)] == [entry.key]
    changed = write_csv(tmp_path / "changed.csv", sentiment_rows(61))
    other = load_dataset(DataSpec(name="csv", path=str(changed))).fingerprint
    assert other != same
    assert store.find(model, DataSpec(name="csv", path=str(changed)), other) == []


def test_incomplete_and_damaged_entries_are_skipped(
    tiny_inputs: tuple[ModelSpec, DataSpec], caplog: pytest.LogCaptureFixture
) -> None:
    model, data = tiny_inputs
    store = ModelStore()
    entry, _ = _prepare(model, data, store)
    incomplete = store.root / "00000000000000aa"
    shutil.copytree(entry.path, incomplete)
    (incomplete / ENTRY_FILE).unlink()
    damaged = store.root / "00000000000000bb"
    shutil.copytree(entry.path, damaged)
    (damaged / ENTRY_FILE).write_text('{"key": "00000000000000bb", "label_na')
    wrong_key = store.root / "00000000000000cc"
    shutil.copytree(entry.path, wrong_key)
    (store.root / ".00000000000000dd.tmp").mkdir()
    (store.root / "notes.txt").write_text("not an entry")
    with caplog.at_level(logging.WARNING, logger="cache.model_store"):
        listed = store.list()
    assert listed == [entry]
    assert store.get("00000000000000aa") is None
    assert store.get("00000000000000bb") is None
    assert store.get("00000000000000cc") is None
    assert "00000000000000bb" in caplog.text and "00000000000000cc" in caplog.text


def test_delete_removes_an_entry(tiny_inputs: tuple[ModelSpec, DataSpec]) -> None:
    model, data = tiny_inputs
    store = ModelStore()
    entry, _ = _prepare(model, data, store)
    assert store.delete(entry.key)
    assert not entry.path.exists()
    assert store.get(entry.key) is None and store.list() == []
    assert not store.delete(entry.key)


def test_resolve_accepts_a_unique_prefix_and_explains_failures(
    tiny_inputs: tuple[ModelSpec, DataSpec],
) -> None:
    model, data = tiny_inputs
    store = ModelStore()
    entry, _ = _prepare(model, data, store)
    assert store.resolve(entry.key) == entry
    assert store.resolve(entry.key[:6].upper()) == entry
    with pytest.raises(ValueError, match=f"No prepared model.*{entry.key}"):
        store.resolve("ffffffffffff0000" if not entry.key.startswith("f") else "0000")
    with pytest.raises(ValueError, match="not a model key"):
        store.path_for("../escape")


def test_label_mismatch_is_refused_with_a_helpful_message() -> None:
    check_label_compatibility(("fresh", "rotten"), ["fresh", "rotten"])
    with pytest.raises(ValueError, match=r"headscope prepare --data") as info:
        check_label_compatibility(("LABEL_0", "LABEL_1"), ("fresh", "rotten"))
    assert "['LABEL_0', 'LABEL_1']" in str(info.value) and "['fresh', 'rotten']" in str(info.value)
    assert "different class names" in str(info.value)
    with pytest.raises(ValueError, match="different order"):
        check_label_compatibility(("rotten", "fresh"), ("fresh", "rotten"))
    with pytest.raises(ValueError, match="2 vs 3 classes"):
        check_label_compatibility(("a", "b"), ("a", "b", "c"))


def test_prepare_refuses_a_stored_model_with_other_classes(
    tiny_inputs: tuple[ModelSpec, DataSpec], tmp_path: Path
) -> None:
    model, _ = tiny_inputs
    rows = [(text, "good" if label == "positive" else "bad") for text, label in sentiment_rows(40)]
    data = DataSpec(name="csv", path=str(write_csv(tmp_path / "other.csv", rows)))
    with pytest.raises(ValueError, match="prepare a model for this dataset"):
        prepare_model(model, data, QUICK)
