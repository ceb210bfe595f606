"""The pruning pipeline: request -> method -> removal -> evaluation -> (recovery) -> store."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from pruning.heads import head_grid, present_mask, remove_heads
from pruning.jobs import JobCancelled, LocalExecutor
from pruning.methods.base import (
    REGISTRY,
    PruneResult,
    PruningContext,
    PruningMethod,
    load_builtin_methods,
)
from pruning.models import load_pruned
from pruning.pipeline import RunRequest, run_pruning


@pytest.fixture
def tiny(tmp_path: Path):
    return prepared_tiny_setup(tmp_path / "setup")


def test_run_is_stored_with_metrics_and_is_cached(tiny) -> None:
    model, data = tiny
    request = RunRequest(
        method="random", config={"sparsity": 0.5}, model=model, data=data, score_examples=16
    )
    events = []
    record = run_pruning(request, on_event=events.append, should_stop=lambda: False)
    assert int((~record.mask).sum()) == 4  # 2 layers x 4 heads, half removed
    assert set(record.metrics) >= {"dense", "pruned", "cost"}
    assert record.metrics["cost"]["params_pruned"] < record.metrics["cost"]["params_dense"]
    assert record.metrics["cost"]["head_sparsity"] == pytest.approx(0.5)
    assert events[0].kind == "stage" and events[-1].fraction == 1.0
    assert [e.fraction for e in events] == sorted(e.fraction for e in events)
    assert RunStore().get(record.key).metrics == record.metrics
    started = time.monotonic()
    again = run_pruning(request)
    assert again.key == record.key and time.monotonic() - started < 5
    assert len(RunStore().list()[0]) == 1


def test_bad_settings_are_refused_before_any_work(tiny) -> None:
    model, data = tiny
    with pytest.raises(ValueError, match="between"):
        run_pruning(RunRequest(method="random", config={"sparsity": 1.5}, model=model, data=data))
    with pytest.raises(ValueError, match="Unknown pruning method"):
        run_pruning(RunRequest(method="nope", model=model, data=data))
    with pytest.raises(ValueError, match="Prepare one first"):
        run_pruning(RunRequest(method="random", data=data))  # default model: not prepared here
    assert RunStore().list()[0] == []


def test_cancel_stops_within_two_seconds_and_stores_nothing(tiny) -> None:
    model, data = tiny
    request = RunRequest(
        method="hisp",
        config={"sparsity": 0.5},
        model=model,
        data=data,
        score_examples=64,
        recovery_steps=10_000,
    )
    job = LocalExecutor().submit(
        "cancel-me",
        "hisp",
        lambda progress: run_pruning(
            request,
            on_event=lambda e: progress.update(e.fraction, e.message),
            should_stop=progress.should_stop,
        ),
    )
    deadline = time.monotonic() + 60
    while "recovery" not in job.snapshot().message and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "recovery" in job.snapshot().message
    asked = time.monotonic()
    job.cancel()
    snapshot = job.wait(10)
    assert snapshot.status == "cancelled"
    assert time.monotonic() - asked < 2.0
    assert RunStore().list() == ([], [])


def test_direct_call_raises_job_cancelled(tiny) -> None:
    model, data = tiny
    request = RunRequest(method="random", config={"sparsity": 0.25}, model=model, data=data)
    with pytest.raises(JobCancelled):
        run_pruning(request, should_stop=lambda: True)
    assert RunStore().list() == ([], [])


def test_recovered_run_keeps_its_model_and_exports_a_model_that_reloads(tiny, tmp_path) -> None:
    model, data = tiny
    request = RunRequest(
        method="magnitude",
        config={"sparsity": 0.25},
        model=model,
        data=data,
        recovery_steps=3,
        score_examples=16,
    )
    record = run_pruning(request)
    assert record.has_model and "recovered" in record.metrics
    exported = RunStore().export(record.key, tmp_path / "export.zip", as_zip=True)
    imported = RunStore(tmp_path / "other-store").import_run(exported)
    assert imported.key == record.key
    folder = RunStore().export(record.key, tmp_path / "export-folder")
    reloaded = load_pruned(folder / "model")
    stored = RunStore().load_model(record.key, device="cpu")
    batch = reloaded.tokenizer(["a superb film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(reloaded.model(**batch).logits, stored.model(**batch).logits)


def test_exported_unrecovered_run_reloads_with_identical_logits(tiny, tmp_path) -> None:
    model, data = tiny
    record = run_pruning(
        RunRequest(method="random", config={"sparsity": 0.5}, model=model, data=data)
    )
    from cache.model_store import ModelStore

    base = ModelStore().resolve(record.model["prepared_key"]).load(device="cpu")
    folder = RunStore().export(
        record.key, tmp_path / "out", base_model=base.model, tokenizer=base.tokenizer
    )
    reloaded = load_pruned(folder / "model", device="cpu")
    expected = remove_heads(base.model, record.mask)
    batch = base.tokenizer(["a lovely story", "awful plot"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(reloaded.model(**batch).logits, expected(**batch).logits)


def test_killed_worker_leaves_the_store_consistent(tiny, tmp_path) -> None:
    model, data = tiny
    marker = tmp_path / "started"
    script = textwrap.dedent(
        f"""
        import pathlib
        from pruning.data import DataSpec
        from pruning.models import ModelSpec
        from pruning.pipeline import RunRequest, run_pruning
        request = RunRequest(method="hisp", config={{"sparsity": 0.5}},
                             model=ModelSpec.local({str(model.path)!r}),
                             data=DataSpec(name="csv", path={str(data.path)!r}),
                             recovery_steps=100000)
        def on_event(event):
            if "recovery" in event.message:
                pathlib.Path({str(marker)!r}).touch()
        run_pruning(request, on_event=on_event)
        """
    )
    worker = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), "the worker never reached recovery"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)
    summaries, problems = RunStore().list()
    assert summaries == [] and problems == []
    record = run_pruning(
        RunRequest(method="random", config={"sparsity": 0.5}, model=model, data=data)
    )
    assert RunStore().get(record.key).key == record.key


class _ChangesWeights(PruningMethod):
    """Test method: halves the classifier weights in a copy and keeps every head but one."""

    title = "changes weights"

    def run(self, context: PruningContext) -> PruneResult:
        changed = copy.deepcopy(context.model)
        with torch.no_grad():
            changed.classifier.weight.mul_(0.5)
        mask = torch.ones(head_grid(context.model), dtype=torch.bool)
        mask[0, 0] = False
        return PruneResult(mask=mask, scores=None, trace=(), model=changed)


class _MasksWeights(PruningMethod):
    """Test method (weight level): zeroes half of one FFN matrix in a copy."""

    title = "masks weights"
    granularity = "weight"
    name_of_weight = "bert.encoder.layer.0.intermediate.dense.weight"

    def run(self, context: PruningContext) -> PruneResult:
        changed = copy.deepcopy(context.model)
        weight = dict(changed.named_parameters())[self.name_of_weight]
        keep = torch.ones(weight.shape, dtype=torch.bool)
        keep[:, : weight.shape[1] // 2] = False
        with torch.no_grad():
            weight.mul_(keep)
        mask = torch.ones(head_grid(context.model), dtype=torch.bool)
        return PruneResult(
            mask=mask,
            scores=None,
            trace=(),
            weight_masks={self.name_of_weight: keep},
            model=changed,
        )


@pytest.fixture
def test_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    load_builtin_methods()
    for name, cls in (("changes_weights", _ChangesWeights), ("masks_weights", _MasksWeights)):
        monkeypatch.setitem(REGISTRY, name, cls)
        monkeypatch.setattr(cls, "name", name)


def test_a_method_that_changes_weights_has_its_copy_pruned_evaluated_and_stored(
    tiny, test_methods
) -> None:
    model, data = tiny
    record = run_pruning(RunRequest(method="changes_weights", model=model, data=data))
    assert record.has_model and "recovered" not in record.metrics
    stored = RunStore().load_model(record.key, device="cpu").model
    from cache.model_store import ModelStore

    base = ModelStore().resolve(record.model["prepared_key"]).load(device="cpu").model
    assert torch.equal(stored.classifier.weight, 0.5 * base.classifier.weight)
    assert not torch.equal(base.classifier.weight, stored.classifier.weight)
    assert head_grid(stored) == head_grid(base) and int(present_mask(stored).sum()) == 7


def test_a_weight_level_run_keeps_its_zeros_through_recovery(tiny, test_methods) -> None:
    model, data = tiny
    record = run_pruning(
        RunRequest(method="masks_weights", model=model, data=data, recovery_steps=3)
    )
    cost = record.metrics["cost"]
    assert cost["params_nonzero"] < cost["params_dense"]
    assert cost["sparse_bytes"] > 0 and cost["dense_bytes"] == 4 * cost["params_dense"]
    assert set(record.extra_tensors) == {_MasksWeights.name_of_weight}
    stored = RunStore().load_model(record.key, device="cpu").model
    weight = dict(stored.named_parameters())[_MasksWeights.name_of_weight]
    keep = record.extra_tensors[_MasksWeights.name_of_weight]
    assert torch.count_nonzero(weight[~keep]) == 0
    assert int(present_mask(stored).sum()) == 8  # no head removed


def test_before_protocol_with_every_head_kept_retraces_the_preparation(tiny) -> None:
    """Prune-before-fine-tuning keeping all heads = the prepared classifier: same fresh head,
    same training config and seed, so identical metrics (the comparison is fair)."""
    model, data = tiny
    record = run_pruning(
        RunRequest(
            method="random",
            config={"sparsity": 0.0},
            model=model,
            data=data,
            protocol="before",
            score_examples=16,
        )
    )
    assert record.info["settings"]["protocol"] == "before"
    assert record.info["fine_tune"]["config"]["max_steps"] == 2
    assert record.has_model
    for name in ("accuracy", "loss", "mcc"):
        assert record.metrics["pruned"][name] == pytest.approx(record.metrics["dense"][name])
    from cache.model_store import ModelStore

    prepared = ModelStore().resolve(record.model["prepared_key"]).load(device="cpu").model
    stored = RunStore().load_model(record.key, device="cpu").model
    for (name, a), (_, b) in zip(
        prepared.state_dict().items(), stored.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_before_protocol_prunes_the_untrained_encoder_then_fine_tunes(tiny) -> None:
    model, data = tiny
    after = run_pruning(
        RunRequest(method="random", config={"sparsity": 0.5}, model=model, data=data)
    )
    before = run_pruning(
        RunRequest(
            method="random", config={"sparsity": 0.5}, model=model, data=data, protocol="before"
        )
    )
    assert before.key != after.key
    assert "protocol" not in after.info["settings"]  # keys of older runs are unchanged
    assert torch.equal(before.mask, after.mask)  # random heads: same seed, same heads
    stored = RunStore().load_model(before.key, device="cpu").model
    assert int(present_mask(stored).sum()) == 4
    assert before.metrics["cost"]["params_pruned"] == after.metrics["cost"]["params_pruned"]
    # Same mask, but trained after pruning: the weights differ from the pruned classifier's.
    from cache.model_store import ModelStore

    base = ModelStore().resolve(after.model["prepared_key"]).load(device="cpu").model
    pruned_after = remove_heads(base, after.mask)
    assert not torch.equal(stored.classifier.weight, pruned_after.classifier.weight)


def test_before_protocol_refuses_recovery_steps(tiny) -> None:
    model, data = tiny
    with pytest.raises(ValueError, match="Recovery steps apply to the 'after' protocol"):
        RunRequest(method="random", model=model, data=data, protocol="before", recovery_steps=5)
    with pytest.raises(ValueError, match="protocol must be"):
        RunRequest(method="random", model=model, data=data, protocol="sideways")  # type: ignore[arg-type]


def test_before_protocol_keeps_weight_masks_through_fine_tuning(tiny, test_methods) -> None:
    model, data = tiny
    record = run_pruning(
        RunRequest(method="masks_weights", model=model, data=data, protocol="before")
    )
    stored = RunStore().load_model(record.key, device="cpu").model
    weight = dict(stored.named_parameters())[_MasksWeights.name_of_weight]
    keep = record.extra_tensors[_MasksWeights.name_of_weight]
    assert torch.count_nonzero(weight[~keep]) == 0
    assert torch.count_nonzero(weight[keep]) == int(keep.sum())
