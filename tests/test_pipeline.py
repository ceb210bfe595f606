"""The pruning pipeline: request -> method -> removal -> evaluation -> (recovery) -> store."""

from __future__ import annotations

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
from pruning.heads import remove_heads
from pruning.jobs import JobCancelled, LocalExecutor
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
