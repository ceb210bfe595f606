"""Preparing the real default encoder: learning on real data, and label names for 3 classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cache.model_store import ModelStore
from conftest import write_csv
from pruning.data import DataSpec, load_dataset, make_batches
from pruning.models import ModelSpec, label_names_of
from pruning.prepare import prepare_model
from pruning.train import TrainConfig, TrainEvent

pytestmark = pytest.mark.slow

NEUTRAL = ("released on a Tuesday", "about ninety minutes long", "shot in Canada")
POSITIVE = ("a joyous delight", "wonderfully acted", "a moving triumph")
NEGATIVE = ("a tedious mess", "painfully dull", "an awful waste")


def test_default_model_learns_rotten_tomatoes_slice() -> None:
    """One epoch of the default config on 2,400 rows (60 steps). Measured on the 2-core CPU:
    0.81 test accuracy (MCC 0.61) in 30 s; other seeds / batch sizes gave 0.75-0.76."""
    data = DataSpec(max_rows=2400)
    events: list[TrainEvent] = []
    entry = prepare_model(ModelSpec(), data, TrainConfig(), on_event=events.append)
    assert len(events) == 60
    losses = [event.loss for event in events]
    assert sum(losses[-10:]) < sum(losses[:10])
    test = entry.metrics["test"]
    assert test["n_examples"] == 240
    assert test["accuracy"] >= 0.68, test
    assert test["mcc"] >= 0.3, test
    assert entry.label_names == ("fresh", "rotten")


def _three_class_rows(per_class: int) -> list[tuple[str, str]]:
    rows = []
    for i in range(per_class):
        for label, phrases in (("positive", POSITIVE), ("negative", NEGATIVE)):
            rows.append((f"Film {i} is {phrases[i % 3]}.", label))
        rows.append((f"Film {i} was {NEUTRAL[i % 3]}.", "neutral"))
    return rows


def test_three_class_csv_labels_flow_through_to_the_stored_model(tmp_path: Path) -> None:
    data = DataSpec(name="csv", path=str(write_csv(tmp_path / "three.csv", _three_class_rows(30))))
    dataset = load_dataset(data)
    entry = prepare_model(ModelSpec(), data, TrainConfig(max_steps=6, batch_size=16, lr=2e-4))
    expected = ("negative", "neutral", "positive")
    assert dataset.label_names == expected
    assert entry.label_names == expected and entry.num_labels == 3
    assert ModelStore().get(entry.key) == entry
    loaded = entry.load(device="cpu")
    assert loaded.label_names == expected
    assert label_names_of(loaded.model) == expected
    assert loaded.model.config.num_labels == 3
    batch = make_batches(loaded.tokenizer, dataset.test.texts, batch_size=64)[0]
    with torch.no_grad():
        logits = loaded.model(**batch.model_inputs()).logits
    assert logits.shape == (len(dataset.test), 3)
    assert entry.metrics["test"]["n_examples"] == len(dataset.test)
