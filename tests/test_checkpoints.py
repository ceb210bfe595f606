"""Checkpoints of unfinished runs: atomic JSON files, used once by the same run, then deleted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from cache.checkpoints import RunCheckpoints
from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from pruning.jobs import JobCancelled
from pruning.pipeline import RunRequest, plan_run, run_pruning

KEY = "0123456789abcdef"


def test_save_load_delete_round_trip(tmp_path: Path) -> None:
    store = RunCheckpoints(tmp_path)
    assert store.load(KEY) is None and store.run_keys() == []
    store.save(KEY, {"algorithm": "astar", "iterations": [{"iteration": 1}]})
    assert store.load(KEY) == {"algorithm": "astar", "iterations": [{"iteration": 1}]}
    store.save(KEY, {"algorithm": "astar", "iterations": []})
    assert store.load(KEY) == {"algorithm": "astar", "iterations": []}
    assert store.run_keys() == [KEY]
    assert [p.name for p in store.folder.iterdir()] == [f"{KEY}.json"]  # no temporaries left
    store.delete(KEY)
    store.delete(KEY)
    assert store.load(KEY) is None


def test_damaged_or_foreign_files_are_ignored_and_bad_keys_refused(tmp_path: Path) -> None:
    store = RunCheckpoints(tmp_path)
    path = store.path_for(KEY)
    path.write_text("{not json")
    assert store.load(KEY) is None
    path.write_text(json.dumps({"format": 1, "key": "f" * 16, "state": {}}))
    assert store.load(KEY) is None  # another run's file under this name
    path.write_text(json.dumps([1, 2]))
    assert store.load(KEY) is None
    with pytest.raises(ValueError, match="not a run key"):
        store.path_for("../escape")
    with pytest.raises(ValueError):
        store.save(KEY, {"value": float("nan")})
    assert json.loads(path.read_text()) == [1, 2]  # a failed save leaves the old file


def test_an_interrupted_astar_run_resumes_through_the_pipeline(tmp_path: Path) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    request = RunRequest(
        method="astar", config={"budget": 40.0}, model=model, data=data, score_examples=16
    )
    key = plan_run(request).key
    iterations = {"seen": 0}

    def on_event(event: Any) -> None:
        if event.kind == "search_iteration":
            iterations["seen"] += 1

    with pytest.raises(JobCancelled):
        run_pruning(request, on_event=on_event, should_stop=lambda: iterations["seen"] >= 2)
    saved = RunCheckpoints().load(key)
    assert saved is not None and saved["algorithm"] == "astar"
    assert len(saved["iterations"]) == 2 and RunStore().list()[0] == []
    assert RunRequest.from_dict(RunCheckpoints().meta(key)["request"]) == request
    resumed_events: list[Any] = []
    record = run_pruning(request, on_event=resumed_events.append)
    assert RunCheckpoints().load(key) is None  # stored, so forgotten
    replayed = [e for e in resumed_events if e.kind == "search_iteration"]
    assert [e.data for e in replayed[:2]] == saved["iterations"]
    # The same result as a run that was never interrupted.
    RunStore().delete(key)
    fresh = run_pruning(request)
    assert torch.equal(fresh.mask, record.mask)
    assert fresh.info["method_info"] == record.info["method_info"]
    assert [e["data"] for e in fresh.trace if e["kind"] == "search_iteration"] == [
        e["data"] for e in record.trace if e["kind"] == "search_iteration"
    ]


def test_requests_round_trip_and_checkpoints_say_which_run_they_belong_to(
    tmp_path: Path,
) -> None:
    from pruning.data import DataSpec
    from pruning.models import ModelSpec

    request = RunRequest(
        method="astar",
        config={"budget": 1.5, "metric": "mcc"},
        model=ModelSpec.local(str(tmp_path)),
        data=DataSpec(name="csv", path=str(tmp_path / "x.csv"), max_rows=50),
        seed=3,
        score_examples=1275,
        name="paper",
    )
    data = request.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert RunRequest.from_dict(data) == request
    with pytest.raises(ValueError, match="Unknown run request fields: nope"):
        RunRequest.from_dict({**data, "nope": 1})
    with pytest.raises(ValueError, match="score_examples"):
        RunRequest.from_dict({**data, "score_examples": 0})
    with pytest.raises(ValueError, match="Not a run request"):
        RunRequest.from_dict({**data, "model": {"where": "x"}})
    with pytest.raises(ValueError, match="JSON object"):
        RunRequest.from_dict([1])
    store = RunCheckpoints(tmp_path)
    assert store.meta(KEY) == {}
    store.save(KEY, {"algorithm": "astar"}, meta={"request": data})
    assert store.meta(KEY) == {"request": data} and store.load(KEY) == {"algorithm": "astar"}
