"""Sweeps as Ray tasks: same stored results as the local executor, the driver alone stores.

Every test shares one tiny prepared classifier (a model store outside the tests' homes) and the
results of the same sweep on the local executor; each Ray sweep stores into its test's own
``HEADSCOPE_HOME``. The Ray instance (2 CPUs, no dashboard) lives for the whole session.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from cache.model_store import ModelStore
from cache.paths import HOME_ENV
from cache.run_format import RunRecord
from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from pruning import ray_sweep
from pruning.executors import ExecutorSettings
from pruning.jobs import JobCancelled
from pruning.methods.base import TraceEvent
from pruning.pipeline import RunRequest, planned_key
from pruning.ray_sweep import WORKER_EVENT, run_requests

RECOVERY_STEPS = 24


@dataclass
class Shared:
    """The prepared classifier, the sweep's requests and their local results."""

    models: ModelStore
    requests: list[RunRequest]
    local: list[RunRecord]
    local_store: RunStore
    events: dict[int, list[TraceEvent]]
    recorded: list[int]
    slow_request: RunRequest


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Shared:
    root = tmp_path_factory.mktemp("ray_sweep_shared")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOME_ENV, str(root / "home"))
        model, data = prepared_tiny_setup(root / "setup")
        models = ModelStore(root / "home" / "models")
        common: dict[str, Any] = {"model": model, "data": data, "score_examples": 16}
        requests = [
            RunRequest(method="random", config={"sparsity": 0.5}, seed=0, **common),
            RunRequest(method="random", config={"sparsity": 0.5}, seed=1, **common),
            RunRequest(method="hisp", config={"sparsity": 0.25}, **common),
            RunRequest(
                method="hisp",
                config={"sparsity": 0.5},
                recovery_steps=RECOVERY_STEPS,
                name="HISP + recovery",
                **common,
            ),
        ]
        events: dict[int, list[TraceEvent]] = defaultdict(list)
        recorded: list[int] = []
        local_store = RunStore(root / "local-runs")
        local = run_requests(
            requests,
            store=local_store,
            model_store=models,
            on_event=lambda index, event: events[index].append(event),
            on_record=lambda index, record: recorded.append(index),
        )
    slow = RunRequest(
        method="hisp", config={"sparsity": 0.5}, recovery_steps=100_000, name="slow", **common
    )
    return Shared(models, requests, local, local_store, dict(events), recorded, slow)


def _assert_close(actual: Any, expected: Any, where: str = "metrics") -> None:
    """Equal, except floats within 1e-5 (accuracy exactly)."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for name in expected:
            _assert_close(actual[name], expected[name], f"{where}.{name}")
    elif isinstance(expected, float) and not where.endswith(".accuracy"):
        assert math.isclose(actual, expected, rel_tol=1e-5, abs_tol=1e-5), where
    else:
        assert actual == expected, where


def _assert_same_run(actual: RunRecord, expected: RunRecord) -> None:
    assert actual.key == expected.key
    assert torch.equal(actual.mask, expected.mask)
    if expected.scores is None:
        assert actual.scores is None
    else:
        assert actual.scores is not None
        assert torch.allclose(actual.scores, expected.scores, atol=1e-5)
    _assert_close(actual.metrics, expected.metrics)
    assert [(e["kind"], e["step"]) for e in actual.trace] == [
        (e["kind"], e["step"]) for e in expected.trace
    ]
    assert actual.has_model == expected.has_model
    assert actual.info["settings"] == expected.info["settings"]


def _assert_store_holds_exactly(store: RunStore, expected: list[RunRecord]) -> None:
    """The index and the run folders hold one run per expected key, equal to it."""
    summaries, problems = store.list()
    assert problems == []
    keys = sorted({record.key for record in expected})
    assert sorted(summary.key for summary in summaries) == keys
    folders = sorted(path.name for path in store.root.iterdir() if path.is_dir())
    assert folders == keys  # no staging, replaced or trash folders left either
    for record in expected:
        _assert_same_run(store.get(record.key), record)


def _milestones(events: list[TraceEvent]) -> list[tuple[str, int, str]]:
    """The events a sweep must reproduce: all but throttled progress and worker notices."""
    return [(e.kind, e.step, e.message) for e in events if e.kind not in ("progress", WORKER_EVENT)]


class _Recorder:
    def __init__(self) -> None:
        self.events: dict[int, list[TraceEvent]] = defaultdict(list)
        self.records: list[tuple[int, str]] = []

    def on_event(self, index: int, event: TraceEvent) -> None:
        self.events[index].append(event)

    def on_record(self, index: int, record: RunRecord) -> None:
        self.records.append((index, record.key))

    def workers(self, index: int) -> list[dict[str, Any]]:
        return [e.data for e in self.events[index] if e.kind == WORKER_EVENT]


@pytest.fixture
def submissions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of the Ray tasks submitted (through ``ray_sweep._submit``)."""
    submitted: list[str] = []
    original = ray_sweep._submit

    def counting(task: Any, options: dict[str, Any], *args: Any) -> Any:
        submitted.append(args[1])
        return original(task, options, *args)

    monkeypatch.setattr(ray_sweep, "_submit", counting)
    return submitted


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def test_local_sweep_reports_every_run(shared: Shared) -> None:
    assert shared.recorded == [0, 1, 2, 3]
    assert len({record.key for record in shared.local}) == 4
    assert shared.local[3].has_model and "recovered" in shared.local[3].metrics
    for index in range(4):
        assert shared.events[index][0].kind == "stage"
        assert shared.events[index][-1].message == "stored"


def test_ray_sweep_stores_the_same_runs_as_the_local_executor(
    ray_cluster: ExecutorSettings, shared: Shared, submissions: list[str]
) -> None:
    recorder = _Recorder()
    records = run_requests(
        shared.requests,
        executor=ray_cluster,
        model_store=shared.models,
        on_event=recorder.on_event,
        on_record=recorder.on_record,
    )
    assert len(submissions) == 4
    assert sorted(recorder.records) == [(i, r.key) for i, r in enumerate(shared.local)]
    for index, (record, expected) in enumerate(zip(records, shared.local, strict=True)):
        _assert_same_run(record, expected)
        assert _milestones(recorder.events[index]) == _milestones(shared.events[index])
        (worker,) = recorder.workers(index)
        assert worker["pid"] != os.getpid() and worker["attempt_number"] == 1
    _assert_store_holds_exactly(RunStore(), shared.local)
    # The stored recovered model is the one the local executor stored.
    key = shared.local[3].key
    ray_model = RunStore().load_model(key, device="cpu").model.state_dict()
    local_model = shared.local_store.load_model(key, device="cpu").model.state_dict()
    for name, tensor in local_model.items():
        assert torch.allclose(ray_model[name], tensor, atol=1e-5), name


def test_stored_runs_are_fetched_and_duplicates_computed_once(
    ray_cluster: ExecutorSettings, shared: Shared, submissions: list[str]
) -> None:
    first, second = shared.requests[0], shared.requests[1]
    run_requests([first], model_store=shared.models)  # stored beforehand, locally
    recorder = _Recorder()
    records = run_requests(
        [first, second, second],
        executor=ray_cluster,
        model_store=shared.models,
        on_event=recorder.on_event,
        on_record=recorder.on_record,
    )
    assert submissions == [shared.local[1].key]
    assert [e.message for e in recorder.events[0]] == [
        "loading data and the prepared classifier",
        "found in the run store",
    ]
    assert recorder.workers(0) == []
    assert recorder.workers(1) == recorder.workers(2) and len(recorder.workers(1)) == 1
    assert recorder.events[1][-1].message == recorder.events[2][-1].message == "stored"
    assert sorted(recorder.records) == [
        (0, shared.local[0].key),
        (1, shared.local[1].key),
        (2, shared.local[1].key),
    ]
    assert records[1] == records[2]
    _assert_store_holds_exactly(RunStore(), shared.local[:2])


def test_bad_requests_fail_clearly_and_store_nothing_for_them(
    ray_cluster: ExecutorSettings, shared: Shared, submissions: list[str]
) -> None:
    good = shared.requests[0]
    unreachable = ExecutorSettings(kind="ray", address="127.0.0.1:1")
    bad_config = RunRequest(method="random", config={"sparsity": 1.5}, model=good.model)
    with pytest.raises(ValueError, match=r"Run 2 of 2 \(random\): .*between"):
        run_requests([good, bad_config], executor=unreachable)  # refused before connecting
    with pytest.raises(ValueError, match=r"Run 1 of 1 \(random\): .*0000000000000000"):
        run_requests(
            [RunRequest(**{**good.__dict__, "prepared_key": "0000000000000000"})],
            executor=ray_cluster,
            model_store=shared.models,
        )
    assert submissions == []
    # Settings that only fail on the model: the worker's ValueError fails the sweep.
    outside = RunRequest(
        **{**good.__dict__, "method": "manual", "config": {"removed": "0:4"}, "name": "outside"}
    )
    with pytest.raises(ValueError, match=r"Run 2 of 2 \(outside\) failed on a Ray worker: .*grid"):
        run_requests([good, outside], executor=ray_cluster, model_store=shared.models)
    assert not RunStore().exists(planned_key(outside, model_store=shared.models))
    stored = [shared.local[0]] if RunStore().exists(shared.local[0].key) else []
    _assert_store_holds_exactly(RunStore(), stored)


def test_a_worker_killed_mid_run_is_retried_and_stored_once(
    ray_cluster: ExecutorSettings, shared: Shared
) -> None:
    recorder = _Recorder()
    killed: list[int] = []

    def on_event(index: int, event: TraceEvent) -> None:
        recorder.on_event(index, event)
        if index == 3 and not killed and event.message.startswith("recovery step"):
            pid = recorder.workers(3)[0]["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    records = run_requests(
        shared.requests,
        executor=ray_cluster,
        model_store=shared.models,
        on_event=on_event,
        on_record=recorder.on_record,
    )
    assert killed, "the slow run never reached its recovery steps"
    attempts = recorder.workers(3)
    assert [w["attempt_number"] for w in attempts] == [1, 2]
    assert attempts[1]["pid"] != killed[0]
    assert [index for index, _ in recorder.records].count(3) == 1
    for record, expected in zip(records, shared.local, strict=True):
        _assert_same_run(record, expected)
    _assert_store_holds_exactly(RunStore(), shared.local)


def test_cancelling_kills_the_unfinished_tasks_and_keeps_finished_runs(
    ray_cluster: ExecutorSettings, shared: Shared
) -> None:
    import ray

    quick = shared.requests[0]
    slow = [shared.slow_request, RunRequest(**{**shared.slow_request.__dict__, "seed": 1})]
    recorder = _Recorder()
    deadline = time.monotonic() + 90

    def should_stop() -> bool:
        recovering = any(
            e.message.startswith("recovery step") for i in (1, 2) for e in recorder.events[i]
        )
        finished = any(index == 0 for index, _ in recorder.records)
        return (recovering and finished) or time.monotonic() > deadline

    with pytest.raises(JobCancelled):
        run_requests(
            [quick, *slow],
            executor=ray_cluster,
            model_store=shared.models,
            on_event=recorder.on_event,
            on_record=recorder.on_record,
            should_stop=should_stop,
        )
    assert time.monotonic() < deadline, "the slow runs never reached their recovery steps"
    pids = [worker["pid"] for index in (1, 2) for worker in recorder.workers(index)]
    assert pids
    waited = time.monotonic() + 20
    while time.monotonic() < waited and (
        any(_alive(pid) for pid in pids) or ray.available_resources().get("CPU", 0) < 2
    ):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids), "a cancelled task's worker still runs"
    assert ray.available_resources().get("CPU", 0) == 2, "a cancelled task still holds a CPU"
    _assert_store_holds_exactly(RunStore(), [shared.local[0]])
