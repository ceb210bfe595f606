"""The head editor's logic: the undoable edit state, the "manual" method and the slice evaluator."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cache.run_store import RunStore
from conftest import prepared_tiny_setup, real_tokenizer, sentiment_rows, small_bert
from pruning.batching import make_batches
from pruning.capture import capture_sentences
from pruning.cli_runs import method_config_from_args
from pruning.data import TextSplit
from pruning.evaluate import evaluate_masks
from pruning.head_editor import (
    EditorState,
    SliceEvaluator,
    manual_config,
    time_edit_cycles,
)
from pruning.heads import remove_heads
from pruning.methods.base import PruningContext, get_method
from pruning.methods.manual import ManualConfig, format_heads, parse_heads
from pruning.pipeline import RunRequest, run_pruning
from pruning.predictor import BatchedPredictor

# --------------------------------------------------------------------------------------------
# EditorState


def test_toggle_undo_redo_and_reset() -> None:
    state = EditorState(torch.ones(2, 3, dtype=torch.bool))
    assert not state.can_undo and not state.can_redo and not state.edited
    state.toggle(0, 1)
    mask = state.toggle(1, 2)
    assert mask.tolist() == [[True, False, True], [True, True, False]]
    assert state.switched_off() == [(0, 1), (1, 2)] and state.removed() == [(0, 1), (1, 2)]
    assert state.undo().tolist() == [[True, False, True], [True, True, True]]
    assert state.can_redo
    assert state.redo().tolist() == mask.tolist()
    state.toggle(1, 2)  # back on: a new edit clears the redo stack
    assert state.mask.tolist() == [[True, False, True], [True, True, True]]
    state.undo()
    state.toggle(0, 0)
    assert not state.can_redo
    assert state.reset().all() and not state.edited
    assert state.undo().tolist() == [[False, False, True], [True, True, False]]  # reset undoes
    returned = state.mask
    returned[0, 2] = False  # the returned mask is a copy
    assert state.mask[0, 2]


def test_nothing_to_undo_or_redo_and_no_op_edits_add_no_history() -> None:
    state = EditorState(torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="Nothing to undo"):
        state.undo()
    with pytest.raises(ValueError, match="Nothing to redo"):
        state.redo()
    state.reset()
    state.apply_mask(torch.ones(2, 2, dtype=torch.bool))
    assert not state.can_undo


def test_history_is_bounded() -> None:
    state = EditorState(torch.ones(1, 4, dtype=torch.bool), max_history=2)
    for head in range(4):
        state.toggle(0, head)
    state.undo()
    state.undo()
    assert state.mask.tolist() == [[False, False, True, True]]
    assert not state.can_undo


def test_toggle_and_shape_errors_say_what_to_do() -> None:
    present = torch.tensor([[True, False], [True, True]])
    state = EditorState(present)
    assert state.mask.tolist() == present.tolist()
    with pytest.raises(ValueError, match="not in this model"):
        state.toggle(0, 1)
    with pytest.raises(ValueError, match="outside the grid"):
        state.toggle(2, 0)
    with pytest.raises(ValueError, match="outside the grid"):
        state.toggle(0, -1)
    with pytest.raises(ValueError, match="whole number"):
        state.toggle(0.5, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(3, 2\).*2 layers x 2 heads"):
        state.apply_mask(torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool head mask"):
        state.apply_mask(torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"scores have shape \(2, 3\)"):
        state.keep_top_k(torch.zeros(2, 3), 1)
    with pytest.raises(ValueError, match="from 0 to 3"):
        state.keep_top_k(torch.zeros(2, 2), 4)
    with pytest.raises(ValueError, match="present must be"):
        EditorState(torch.ones(4, dtype=torch.bool))
    assert not state.can_undo  # nothing failed half-way


def test_apply_mask_keeps_absent_heads_off() -> None:
    state = EditorState(torch.tensor([[True, False], [True, True]]))
    mask = state.apply_mask(np.array([[False, True], [True, True]]))
    assert mask.tolist() == [[False, False], [True, True]]
    assert state.switched_off() == [(0, 0)] and state.removed() == [(0, 0), (0, 1)]


def test_keep_top_k_keeps_the_highest_scores_of_present_heads() -> None:
    present = torch.tensor([[True, True, True], [True, False, True]])
    state = EditorState(present)
    scores = torch.tensor([[0.5, 0.1, float("nan")], [0.9, 5.0, 0.5]])
    # (1, 1) has the top score but is absent; NaN ranks lowest; the 0.5 tie keeps the later one.
    assert state.keep_top_k(scores, 2).tolist() == [[False, False, False], [True, False, True]]
    assert state.keep_top_k(scores, 5).tolist() == present.tolist()
    assert not state.keep_top_k(scores, 0).any()
    state.undo()
    state.undo()
    assert state.mask.tolist() == [[False, False, False], [True, False, True]]


# --------------------------------------------------------------------------------------------
# the "manual" method


def test_manual_config_is_validated_and_canonical() -> None:
    config = ManualConfig(removed=" 2:5, 0:3 ,0:10")
    assert config.removed == "0:3,0:10,2:5"
    assert config.heads() == [(0, 3), (0, 10), (2, 5)]
    assert ManualConfig().removed == "" and ManualConfig(removed="  ").heads() == []
    assert ManualConfig.from_dict({"removed": "1:1"}).to_dict() == {"removed": "1:1"}
    assert (
        parse_heads("3:1,0:0") == [(3, 1), (0, 0)] and format_heads([(3, 1), (0, 0)]) == "0:0,3:1"
    )
    for bad, message in (
        ("0:3,0:3", "twice"),
        ("0-3", "not a layer:head pair"),
        ("-1:3", "not a layer:head pair"),
        ("0:3,,1:1", "empty entry"),
        ("0:3,", "empty entry"),
        ("a:b", "not a layer:head pair"),
    ):
        with pytest.raises(ValueError, match=message):
            ManualConfig(removed=bad)
    with pytest.raises(ValueError, match="must be text"):
        ManualConfig(removed=3)  # type: ignore[arg-type]
    assert ManualConfig(removed="1:2").heads_to_prune(2, 4) == 1
    with pytest.raises(ValueError, match="outside this model's grid of 2 layers x 4 heads"):
        ManualConfig(removed="1:4").heads_to_prune(2, 4)


def test_manual_method_returns_exactly_the_configured_mask() -> None:
    method = get_method("manual")
    assert method.title == "Manual (head editor)" and method.granularity == "head"
    assert "http" in method.paper and "http" in (method.__doc__ or "")
    model = small_bert()
    context = PruningContext(
        model=model,
        tokenizer=real_tokenizer(),
        dataset=None,  # type: ignore[arg-type]  # the method reads no data
        score_split=TextSplit((), ()),
        batches=[],
        device=torch.device("cpu"),
    )
    result = method(ManualConfig(removed="1:3,0:0")).run(context)
    assert result.mask.tolist() == [[False, True, True, True], [True, True, True, False]]
    assert result.scores is None
    assert result.trace[-1].kind == "mask" and result.trace[-1].fraction == 1.0
    assert result.trace[-1].data["mask"] == result.mask.tolist()
    with pytest.raises(ValueError, match="outside this model's grid"):
        method(ManualConfig(removed="2:0")).run(context)


def test_cli_set_reaches_the_manual_config() -> None:
    args = argparse.Namespace(method="manual", sparsity=None, set=["removed=1:2,0:3"])
    assert method_config_from_args(args) == {"removed": "1:2,0:3"}
    assert RunRequest(method="manual", config={"removed": "1:2,0:3"}).method_config().to_dict() == {
        "removed": "0:3,1:2"
    }


def test_pipeline_stores_exactly_the_manual_mask_and_dedupes(tmp_path: Path) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    common: dict[str, Any] = {"model": model, "data": data, "eval_examples": 16, "device": "cpu"}
    record = run_pruning(RunRequest(method="manual", config={"removed": "1:3,0:1"}, **common))
    expected = [[True, False, True, True], [True, True, True, False]]
    assert record.mask.tolist() == expected
    stored = RunStore().get(record.key)
    assert stored.mask.tolist() == expected and stored.scores is None
    assert stored.metrics["cost"]["head_sparsity"] == pytest.approx(0.25)
    assert stored.info["method_title"] == "Manual (head editor)"
    again = run_pruning(RunRequest(method="manual", config={"removed": "0:1, 1:3"}, **common))
    assert again.key == record.key and len(RunStore().list()[0]) == 1
    with pytest.raises(ValueError, match="outside this model's grid"):
        run_pruning(RunRequest(method="manual", config={"removed": "0:4"}, **common))
    assert len(RunStore().list()[0]) == 1
    assert manual_config(torch.tensor(expected)) == {"removed": "0:1,1:3"}


# --------------------------------------------------------------------------------------------
# SliceEvaluator


def _slice(n: int = 13) -> TextSplit:
    rows = sentiment_rows(n, seed=3)
    return TextSplit(tuple(t for t, _ in rows), tuple(int(lab == "positive") for _, lab in rows))


def _reference_metrics(model: torch.nn.Module, split: TextSplit, masks: list[torch.Tensor]):
    batches = make_batches(real_tokenizer(), split.texts, split.labels, batch_size=64)
    return evaluate_masks(model, batches, masks)


def _random_masks(shape: tuple[int, int], count: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(shape, generator=generator) > 0.4 for _ in range(count)]


@pytest.mark.parametrize("chunk_rows", [256, 5])
def test_slice_evaluator_equals_evaluate_masks_on_the_gated_model(chunk_rows: int) -> None:
    model, split = small_bert(seed=1), _slice()
    evaluator = SliceEvaluator(model, real_tokenizer(), split, chunk_rows=chunk_rows)
    assert evaluator.n_chunks == (1 if chunk_rows == 256 else 3)
    masks = [torch.ones(2, 4, dtype=torch.bool), *_random_masks((2, 4), 6)]
    expected = _reference_metrics(model, split, masks)
    progress: list[tuple[int, int]] = []
    for mask, want in zip(masks, expected, strict=True):
        got = evaluator.evaluate(mask, on_progress=lambda d, t: progress.append((d, t)))
        assert got.accuracy == want.accuracy and got.mcc == pytest.approx(want.mcc, abs=1e-9)
        assert got.loss == pytest.approx(want.loss, rel=1e-5)
        assert got.n_examples == 13
    assert progress[: evaluator.n_chunks][-1] == (13, 13)
    assert [done for done, _ in progress[: evaluator.n_chunks]] == sorted(
        done for done, _ in progress[: evaluator.n_chunks]
    )
    assert evaluator.reference() == expected[0]


def test_reference_is_computed_once_and_edits_reuse_lower_layers() -> None:
    model = small_bert(seed=2)
    evaluator = SliceEvaluator(model, real_tokenizer(), _slice())
    engine = evaluator._chunks[0]
    first = evaluator.reference()
    passes = engine.n_layer_passes
    assert evaluator.reference() is first and engine.n_layer_passes == passes
    assert evaluator.evaluate(None) is first and evaluator.remembers(None)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 2] = False
    assert not evaluator.remembers(mask)
    evaluator.evaluate(mask)
    assert evaluator.remembers(mask)
    # Only the last layer was recomputed (batches x 1 layer), not the whole model.
    batches = len(engine._source)
    assert engine.n_layer_passes - passes == batches
    with pytest.raises(ValueError, match="bool head mask"):
        evaluator.evaluate(torch.ones(2, 4))


def test_slice_evaluator_on_a_pruned_run_model_ignores_absent_heads() -> None:
    dense = small_bert(seed=3)
    run_mask = torch.tensor([[True, False, True, True], [False, True, True, True]])
    pruned = remove_heads(dense, run_mask)
    split = _slice()
    evaluator = SliceEvaluator(pruned, real_tokenizer(), split)
    assert evaluator.present.tolist() == run_mask.tolist()
    edit = run_mask.clone()
    edit[0, 3] = False
    want = _reference_metrics(dense, split, [run_mask, edit])
    assert evaluator.reference().accuracy == want[0].accuracy
    got = evaluator.evaluate(torch.tensor([[True, True, True, False], [True, True, True, True]]))
    assert got.loss == pytest.approx(want[1].loss, rel=1e-5)


def test_predictions_and_attention_follow_the_mask() -> None:
    model = small_bert(seed=4)
    tokenizer = real_tokenizer()
    evaluator = SliceEvaluator(model, tokenizer, _slice(6))
    sentences = ["a great film, really lovely", "an awful plot"]
    mask = torch.tensor([[False, True, True, False], [True, True, False, True]])
    removed = remove_heads(model, mask)
    got = evaluator.predict(sentences, mask)
    assert got.shape == (2, 2) and np.allclose(got.sum(axis=1), 1.0)
    assert np.allclose(got, BatchedPredictor(removed, tokenizer)(sentences), atol=1e-5)
    assert np.allclose(
        evaluator.predict(sentences), BatchedPredictor(model, tokenizer)(sentences), atol=1e-6
    )
    # A random tiny model barely reacts to heads, but far more than float rounding (~1e-8).
    assert np.abs(got - evaluator.predict(sentences)).max() > 1e-6
    (want,) = capture_sentences(removed, tokenizer, [sentences[0]], with_qk=False)
    kept = evaluator.head_attention(sentences[0], 1, 3, mask)
    assert kept.status == "kept" and kept.tokens == want.tokens
    assert kept.matrix is not None
    assert np.allclose(kept.matrix, want.attentions[1, 3].numpy(), atol=1e-5)
    assert evaluator.head_attention(sentences[0], 0, 0, mask).status == "switched_off"
    assert evaluator.head_attention(sentences[0], 0, 0).status == "kept"
    with pytest.raises(ValueError, match="outside the grid"):
        evaluator.head_attention(sentences[0], 2, 0)
    assert all(not hooks for m in model.modules() for hooks in [m._forward_pre_hooks])
    pruned = SliceEvaluator(removed, tokenizer, _slice(6))
    assert pruned.head_attention(sentences[0], 0, 0).status == "absent"
    copy = evaluator.model_copy(mask)
    assert copy is not model
    assert np.allclose(BatchedPredictor(copy, tokenizer)(sentences), got, atol=1e-6)


def test_time_edit_cycles_times_fresh_masks() -> None:
    evaluator = SliceEvaluator(small_bert(seed=5), real_tokenizer(), _slice(8))
    times = time_edit_cycles(evaluator, toggles=12, seed=1, sentences=["a lovely film"])
    assert len(times.metrics_seconds) == len(times.update_seconds) == len(times.layers) == 12
    assert all(u >= m > 0 for m, u in zip(times.metrics_seconds, times.update_seconds, strict=True))
    assert min(times.metrics_seconds) <= times.median_metrics <= times.p90_metrics
    assert times.p90_metrics <= max(times.metrics_seconds) and times.reference_seconds > 0
    assert set(times.layers) <= {0, 1} and times.to_dict()["n_examples"] == 8
    with pytest.raises(ValueError, match="at least 1"):
        time_edit_cycles(evaluator, toggles=0)
