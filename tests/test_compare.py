"""Mask IoU matrix and heatmap, the masked-vs-removed check (all four families) and its cache,
the latency cache and `headscope compare`."""

from __future__ import annotations

import argparse
import html
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

import pruning.heads as heads
from cache.model_store import ModelStore
from cache.run_format import RunRecord
from cache.run_store import RunStore
from conftest import build_tiny_model, prepared_tiny_setup
from pruning.cli_compare import add_compare_command, cmd_compare
from pruning.consistency import (
    ConsistencyResult,
    cached_result,
    check_masked_vs_removed,
    check_run,
    consistency_dir,
)
from pruning.latency_cache import cached_latencies, entry_key, latency_path, measure_runs
from pruning.models import LoadedClassifier, ModelSpec
from pruning.weight_masks import head_parts
from pruning.weight_scores import apply_weight_masks, prunable_weights
from viz.compare_matrix import build_iou_heatmap, mask_iou_matrix

TEXTS = ["w5 w6 w7 w8 w9", "w10 w11", "w12 w13 w14 w15 w16 w17 w18", "w19"]


def _mask(removed: list[tuple[int, int]], shape: tuple[int, int] = (3, 4)) -> np.ndarray:
    mask = np.ones(shape, dtype=bool)
    for layer, head in removed:
        mask[layer, head] = False
    return mask


# ---------------------------------------------------------------------------------------------
# IoU matrix and heatmap


def test_iou_matrix_of_removed_sets_with_known_values() -> None:
    a = _mask([(0, 0), (0, 1), (1, 2)])
    b = _mask([(0, 1), (1, 2), (2, 3)])
    c = _mask([(2, 0)])
    matrix = mask_iou_matrix([a, b, c])
    assert matrix.shape == (3, 3) and matrix.dtype == np.float64
    assert matrix[0, 1] == pytest.approx(2 / 4) and matrix[1, 0] == matrix[0, 1]
    assert matrix[0, 2] == 0.0 and matrix[1, 2] == 0.0
    assert np.all(np.diag(matrix) == 1.0)


def test_iou_of_empty_removed_sets() -> None:
    none, also_none, some = _mask([]), _mask([]), _mask([(1, 1)])
    matrix = mask_iou_matrix([none, also_none, some])
    assert matrix[0, 1] == 1.0  # both remove nothing: the same (empty) set
    assert matrix[0, 2] == 0.0 and matrix[2, 1] == 0.0
    assert mask_iou_matrix([none]).tolist() == [[1.0]]


def test_iou_accepts_tensors_and_rejects_bad_input() -> None:
    tensor = torch.from_numpy(_mask([(0, 0)]))
    assert mask_iou_matrix([tensor, _mask([(0, 0), (0, 1)])])[0, 1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same \\(n_layers, n_heads\\) shape"):
        mask_iou_matrix([_mask([]), _mask([], (2, 4))])
    with pytest.raises(ValueError, match="boolean"):
        mask_iou_matrix([np.ones((3, 4), dtype=int)])
    with pytest.raises(ValueError, match="at least one mask"):
        mask_iou_matrix([])
    with pytest.raises(ValueError, match="sequence of masks"):
        mask_iou_matrix(_mask([]))  # type: ignore[arg-type]  # one mask, not a sequence


def test_heatmap_escapes_names_and_annotates_cells() -> None:
    masks = [_mask([(0, 0)]), _mask([(0, 0), (1, 1)]), _mask([])]
    names = ["<b>bold</b> · 1a2b3c", "x" * 60, "plain"]
    fig = build_iou_heatmap(mask_iou_matrix(masks), names)
    trace = fig.data[0]
    assert trace.zmin == 0.0 and trace.zmax == 1.0
    assert trace.text[0][1] == "0.50" and trace.text[2][2] == "1.00"
    ticks = list(fig.layout.xaxis.ticktext)
    assert ticks[0] == html.escape(names[0], quote=False) and len(ticks[1]) <= 28
    assert trace.customdata[1][0][0] == "x" * 60  # the full name on hover
    spec = fig.to_json()
    assert "<b>bold</b>" not in spec and "&lt;b&gt;bold" in spec


@pytest.mark.parametrize("n_runs", [2, 30])
def test_heatmap_stays_readable_from_two_to_thirty_runs(n_runs: int) -> None:
    rng = np.random.default_rng(n_runs)
    masks = [rng.random((6, 8)) > 0.4 for _ in range(n_runs)]
    fig = build_iou_heatmap(mask_iou_matrix(masks), [f"run {i}" for i in range(n_runs)])
    assert 300 <= fig.layout.width <= 1200 and 300 <= fig.layout.height <= 1200
    assert fig.data[0].textfont.size >= 7


def test_heatmap_rejects_bad_matrices_and_names() -> None:
    with pytest.raises(ValueError, match="square"):
        build_iou_heatmap(np.ones((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build_iou_heatmap(np.full((2, 2), 1.5), ["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        build_iou_heatmap(np.eye(2), ["a", "a"])
    with pytest.raises(ValueError, match="one name per run"):
        build_iou_heatmap(np.eye(2), ["a"])


# ---------------------------------------------------------------------------------------------
# The masked-vs-removed check on tiny models of every family


def word_tokenizer(arch: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over w4..w119 for the tiny configs (vocabulary 120, pad id 0)."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3} | {f"w{i}": i for i in range(4, 120)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    inputs = ["input_ids", "attention_mask"]
    if arch in ("bert", "electra"):
        inputs.insert(1, "token_type_ids")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_input_names=inputs,
    )


def tiny_classifier(arch: str, seed: int = 0) -> LoadedClassifier:
    """A tiny classifier whose matrices are drawn with std 0.15 (not 0.02), so that every head
    moves the logits by far more than the 1e-4 tolerance (as in a trained model)."""
    model = build_tiny_model(arch, seed=seed).cpu()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.15)
    return LoadedClassifier(model, word_tokenizer(arch), ModelSpec(), ("neg", "pos"))


def make_record(
    mask: np.ndarray | torch.Tensor,
    *,
    prepared_key: str = "ab" * 8,
    method: str = "random",
    has_model: bool = False,
    weight_masks: dict[str, torch.Tensor] | None = None,
    name: str = "run",
) -> RunRecord:
    config = {"name": name}
    key = RunStore.key_for(
        model_fingerprint=f"prepared:{prepared_key}",
        data_fingerprint="data",
        method=method,
        config=config,
        seed=0,
    )
    return RunRecord(
        key=key,
        method=method,
        config=config,
        seed=0,
        model={"fingerprint": f"prepared:{prepared_key}", "prepared_key": prepared_key},
        data={"fingerprint": "data", "label_names": ["neg", "pos"]},
        metrics={"dense": {"accuracy": 0.8}, "pruned": {"accuracy": 0.7}},
        trace=[],
        info={"name": name, "granularity": "weight" if weight_masks else "head"},
        mask=torch.as_tensor(mask, dtype=torch.bool),
        extra_tensors=dict(weight_masks or {}),
        has_model=has_model,
    )


# Two heads of layer 0, one of layer 1 and all of layer 2: partial and emptied layers.
REMOVED = [(0, 1), (0, 3), (1, 0), (2, 0), (2, 1), (2, 2), (2, 3)]


def test_gated_and_removed_logits_match(arch: str) -> None:
    prepared = tiny_classifier(arch)
    before = {k: v.clone() for k, v in prepared.model.state_dict().items()}
    result = check_masked_vs_removed(make_record(_mask(REMOVED)), prepared, TEXTS)
    assert result.status == "match", result.reason
    assert result.compared == "heads" and result.n_texts == len(TEXTS)
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-5
    after = prepared.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the classifier is unchanged
    assert not any(m._forward_pre_hooks for m in prepared.model.modules())


def test_a_removal_that_keeps_a_wrong_head_is_a_mismatch(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = heads.remove_heads

    def keeps_the_wrong_head(model: torch.nn.Module, mask: torch.Tensor) -> torch.nn.Module:
        wrong = mask.clone()
        wrong[0, 1], wrong[0, 0] = True, False  # keeps head (0, 1) instead of head (0, 0)
        return original(model, wrong)

    monkeypatch.setattr(heads, "remove_heads", keeps_the_wrong_head)
    result = check_masked_vs_removed(make_record(_mask(REMOVED)), tiny_classifier(arch), TEXTS)
    assert result.status == "mismatch"
    assert result.max_abs_diff is not None and result.max_abs_diff > 1e-4
    assert "differ by up to" in result.reason


def _weight_run(arch: str, store: RunStore, *, zero: bool = True) -> tuple[RunRecord, Any]:
    """A weight-level run: half of layer 1's q/k/v/output weights and all of head (0, 2) pruned."""
    prepared = tiny_classifier(arch)
    generator = torch.Generator().manual_seed(1)
    masks = {
        name: torch.rand(weight.shape, generator=generator) > 0.5
        for name, weight in prunable_weights(prepared.model).items()
    }
    size = heads.head_dim(prepared.model)
    for name, dim, start in head_parts(prepared.model)[0][2]:
        masks[name].narrow(dim, start, size).fill_(False)
    stored = apply_weight_masks(prepared.model, masks) if zero else prepared.model
    mask = _mask([(0, 2)])
    record = make_record(mask, method="unstructured", has_model=True, weight_masks=masks)
    store.save(record, model=stored, tokenizer=prepared.tokenizer)
    return store.get(record.key), prepared


def test_weight_level_run_zeroed_weights_match_the_masks(arch: str) -> None:
    store = RunStore()
    record, prepared = _weight_run(arch, store)
    result = check_masked_vs_removed(record, prepared, TEXTS, run_store=store)
    assert result.status == "match", result.reason
    assert result.compared == "weights" and result.max_abs_diff is not None


def test_weight_level_run_whose_stored_weights_ignore_the_mask_is_a_mismatch() -> None:
    store = RunStore()
    record, prepared = _weight_run("bert", store, zero=False)
    result = check_masked_vs_removed(record, prepared, TEXTS, run_store=store)
    assert result.status == "mismatch" and result.compared == "weights"


def test_runs_the_check_does_not_apply_to_say_why() -> None:
    prepared = tiny_classifier("bert")
    cases = {
        "removes no head": make_record(_mask([])),
        "keeps its own fine-tuned model": make_record(_mask(REMOVED), has_model=True),
        "another prepared classifier": make_record(_mask(REMOVED), prepared_key="cd" * 8),
        "stores no weight masks": make_record(_mask(REMOVED), method="deepcuts", name="w"),
    }
    cases["stores no weight masks"].info["granularity"] = "weight"
    for phrase, record in cases.items():
        result = check_masked_vs_removed(record, prepared, TEXTS, prepared_key="ab" * 8)
        assert result.status == "not_applicable" and phrase in result.reason
        assert result.max_abs_diff is None and result.n_texts == 0
    wrong_grid = make_record(_mask([(0, 0)], (2, 4)))
    result = check_masked_vs_removed(wrong_grid, prepared, TEXTS)
    assert result.status == "not_applicable" and "another model" in result.reason


def test_bad_texts_and_tolerance_are_refused() -> None:
    prepared, record = tiny_classifier("bert"), make_record(_mask(REMOVED))
    with pytest.raises(ValueError, match="at least one text"):
        check_masked_vs_removed(record, prepared, [])
    with pytest.raises(ValueError, match="not one string"):
        check_masked_vs_removed(record, prepared, "w5 w6")
    with pytest.raises(ValueError, match="tolerance"):
        check_masked_vs_removed(record, prepared, TEXTS, tolerance=-1.0)


def test_result_round_trips_and_rejects_damage() -> None:
    result = ConsistencyResult("match", 2e-7, 32, "ok", 1e-4, "heads")
    assert ConsistencyResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert result.summary == "match: max |Δlogit| 2.00e-07 over 32 texts"
    with pytest.raises(ValueError, match="lacks the field"):
        ConsistencyResult.from_dict({"status": "match"})
    with pytest.raises(ValueError, match="status must be one of"):
        ConsistencyResult.from_dict(result.to_dict() | {"status": "fine"})
    with pytest.raises(ValueError, match="wrong type"):
        ConsistencyResult.from_dict(result.to_dict() | {"n_texts": "32"})


# ---------------------------------------------------------------------------------------------
# The cache


def test_check_run_caches_per_run_and_prepared_classifier() -> None:
    record = make_record(_mask(REMOVED))
    loads: list[int] = []

    def load() -> LoadedClassifier:
        loads.append(1)
        return tiny_classifier("bert")

    first = check_run(record, "ab" * 8, load, TEXTS)
    path = consistency_dir() / f"{record.key}.json"
    assert first.status == "match" and path.is_file() and loads == [1]
    document = json.loads(path.read_text())
    assert set(document["entries"]) == {"ab" * 8}
    again = check_run(record, "ab" * 8, load, TEXTS)
    assert again == first and loads == [1]  # from the cache: no model loaded
    assert cached_result(record, "ab" * 8, TEXTS[:2]) is None  # other texts: not cached
    check_run(record, "ab" * 8, load, TEXTS, refresh=True)
    assert loads == [1, 1]
    # Another prepared classifier is n/a without loading anything, and kept beside the first.
    other = check_run(record, "cd" * 8, load, TEXTS)
    assert other.status == "not_applicable" and loads == [1, 1]
    assert set(json.loads(path.read_text())["entries"]) == {"ab" * 8, "cd" * 8}
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize(
    "damage",
    [b"{not json", b"\xff\xfe", b"[]", b'{"format": "headscope-consistency", "run_key": "x"}'],
)
def test_a_damaged_cache_file_is_ignored_and_replaced(damage: bytes) -> None:
    record = make_record(_mask(REMOVED))
    path = consistency_dir() / f"{record.key}.json"
    path.write_bytes(damage)
    assert cached_result(record, "ab" * 8, TEXTS) is None
    result = check_run(record, "ab" * 8, lambda: tiny_classifier("bert"), TEXTS)
    assert result.status == "match"
    assert json.loads(path.read_text())["entries"]["ab" * 8]["result"]["status"] == "match"


def test_a_damaged_entry_is_recomputed() -> None:
    record = make_record(_mask(REMOVED))
    check_run(record, "ab" * 8, lambda: tiny_classifier("bert"), TEXTS)
    path = consistency_dir() / f"{record.key}.json"
    document = json.loads(path.read_text())
    document["entries"]["ab" * 8]["result"]["max_abs_diff"] = "tiny"
    path.write_text(json.dumps(document))
    assert cached_result(record, "ab" * 8, TEXTS) is None
    assert check_run(record, "ab" * 8, lambda: tiny_classifier("bert"), TEXTS).status == "match"


# ---------------------------------------------------------------------------------------------
# Latency cache and CLI on a prepared tiny classifier with stored runs


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A prepared tiny BERT with two random runs, in its own HEADSCOPE_HOME."""
    from pruning.pipeline import RunRequest, run_pruning

    home = tmp_path_factory.mktemp("compare_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(home))
    model, data = prepared_tiny_setup(home / "setup")
    runs = [
        run_pruning(
            RunRequest(
                method="random",
                config={"sparsity": share},
                model=model,
                data=data,
                seed=seed,
                score_examples=8,
                eval_examples=16,
                device="cpu",
                name=name,
            )
        )
        for share, seed, name in ((0.5, 0, "half"), (0.25, 1, "quarter"))
    ]
    yield {"home": home, "runs": runs, "prepared": ModelStore().list()[0]}
    patch.undo()


@pytest.fixture
def tiny(tiny_home: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("HEADSCOPE_HOME", str(tiny_home["home"]))
    return tiny_home


def test_measure_runs_stores_per_machine_and_shape(tiny: dict[str, Any]) -> None:
    keys = [run.key for run in tiny["runs"]]
    seen: list[float] = []
    results = measure_runs(
        [*keys, keys[0], "0" * 16],
        batch_size=2,
        seq_len=8,
        repeats=2,
        warmup=0,
        device="cpu",
        on_progress=lambda fraction, _message: seen.append(fraction),
    )
    assert set(results) == {*keys, "0" * 16} and "error" in results["0" * 16]
    for key, run in zip(keys, tiny["runs"], strict=True):
        entry = results[key]
        assert entry["latency_ms"] > 0 and entry["dense_ms"] > 0 and entry["repeats"] == 2
        assert entry["speedup"] == pytest.approx(entry["dense_ms"] / entry["latency_ms"])
        assert entry["predicted_speedup"] > 1.0  # heads removed: fewer FLOPs
        assert entry["device"] == "cpu" and entry["prepared_key"] == run.model["prepared_key"]
    assert seen == sorted(seen) and seen[-1] == 1.0
    path = latency_path()
    assert path.parent.name == "latency" and path.is_file()
    stored = json.loads(path.read_text())["entries"]
    assert set(stored) == {entry_key(k, 2, 8, "cpu") for k in keys}
    assert cached_latencies(keys, batch_size=2, seq_len=8, device="cpu") == {
        k: results[k] for k in keys
    }
    assert cached_latencies(keys, batch_size=4, seq_len=8, device="cpu") == {}
    path.write_text("{broken")
    assert cached_latencies(keys, batch_size=2, seq_len=8, device="cpu") == {}
    measure_runs(keys[:1], batch_size=2, seq_len=8, repeats=1, warmup=0, device="cpu")
    assert list(cached_latencies(keys, batch_size=2, seq_len=8, device="cpu")) == keys[:1]
    with pytest.raises(ValueError, match="repeats"):
        measure_runs(keys, batch_size=2, seq_len=8, repeats=0, device="cpu")


def _compare(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_compare_command(parser.add_subparsers(dest="command"))
    return cmd_compare(parser.parse_args(["compare", *argv]))


def test_cli_compare_prints_runs_iou_and_checks(
    tiny: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    half, quarter = tiny["runs"]
    assert _compare(half.key[:6], quarter.key, "--check", "--texts", "8") == 0
    out = capsys.readouterr().out
    assert "IoU of the removed heads" in out and "half" in out and "quarter" in out
    assert out.count("match: max |Δlogit|") == 2
    expected = mask_iou_matrix([half.mask.numpy(), quarter.mask.numpy()])[0, 1]
    assert f"{expected:6.2f}" in out
    assert _compare(half.key, quarter.key, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert [row["key"] for row in data["runs"]] == [half.key, quarter.key]
    assert data["iou"]["matrix"][0][1] == pytest.approx(expected, abs=1e-6)
    cost = half.metrics["cost"]
    speedup = cost["flops_dense"] / cost["flops_pruned"]
    assert data["runs"][0]["predicted_speedup"] == pytest.approx(speedup)
    assert "consistency" not in data["runs"][0]


def test_cli_compare_exits_1_on_a_mismatch_and_refuses_unknown_keys(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = heads.remove_heads

    def keeps_everything(model: torch.nn.Module, mask: torch.Tensor) -> torch.nn.Module:
        return original(model, torch.ones_like(mask))

    # The tiny classifier is barely trained: its heads move the logits by ~1e-4, so the check
    # runs with a tolerance that a correct removal (float rounding only) still meets.
    key = tiny["runs"][0].key
    check = ("--check", "--refresh", "--texts", "8", "--tolerance", "1e-6", "--json")
    assert _compare(key, *check) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["consistency"]["status"] == "match"
    monkeypatch.setattr(heads, "remove_heads", keeps_everything)
    assert _compare(key, *check) == 1
    row = json.loads(capsys.readouterr().out)["runs"][0]
    assert row["consistency"]["status"] == "mismatch"
    with pytest.raises(ValueError, match="No stored run matches"):
        _compare("ffffffff")


def test_check_texts_come_from_the_test_split(tiny: dict[str, Any]) -> None:
    from pruning.consistency import consistency_texts
    from pruning.data import DataSpec, load_dataset

    dataset = load_dataset(DataSpec(**tiny["prepared"].info["data_spec"]))
    texts = consistency_texts(dataset, 8)
    assert len(texts) == 8 and set(texts) <= set(dataset.test.texts)
    assert consistency_texts(dataset, 8) == texts
    assert Path(consistency_dir()).parent == Path(tiny["home"])
