"""Background jobs: progress, cancellation, failures, de-duplication."""

from __future__ import annotations

import threading
import time

from pruning.jobs import LocalExecutor, Progress


def test_job_reports_progress_and_result() -> None:
    gate = threading.Event()

    def work(progress: Progress) -> int:
        for step in range(4):
            progress.update((step + 1) / 4, f"step {step + 1}", event={"step": step})
            if step == 1:
                gate.wait(5)
        return 42

    job = LocalExecutor().submit("a", "demo", work)
    deadline = time.monotonic() + 5
    while job.snapshot().fraction < 0.5 and time.monotonic() < deadline:
        time.sleep(0.01)
    running = job.snapshot()
    assert running.status == "running"
    assert running.fraction == 0.5
    assert running.eta_s is not None and running.eta_s >= 0
    gate.set()
    done = job.wait(5)
    assert done.status == "done" and done.result == 42 and done.fraction == 1.0
    assert [e["step"] for e in done.events] == [0, 1, 2, 3]


def test_cancel_stops_work_quickly() -> None:
    def work(progress: Progress) -> None:
        while True:
            progress.check()
            time.sleep(0.01)

    job = LocalExecutor().submit("b", "spin", work)
    time.sleep(0.1)
    started = time.monotonic()
    job.cancel()
    snap = job.wait(2)
    assert snap.status == "cancelled"
    assert time.monotonic() - started < 2


def test_failure_is_reported_not_raised() -> None:
    def work(progress: Progress) -> None:
        raise ValueError("bad input: fix it")

    snap = LocalExecutor().submit("c", "fails", work).wait(5)
    assert snap.status == "failed"
    assert snap.error == "bad input: fix it"


def test_running_job_is_not_started_twice() -> None:
    executor = LocalExecutor()
    gate = threading.Event()
    calls = []

    def work(progress: Progress) -> None:
        calls.append(1)
        gate.wait(5)

    first = executor.submit("same", "x", work)
    second = executor.submit("same", "x", work)
    assert first is second
    gate.set()
    first.wait(5)
    third = executor.submit("same", "x", work)
    third.wait(5)
    assert third is not first and len(calls) == 2
    assert executor.get("same") is third


def test_one_slot_queues_jobs_in_order_and_reports_positions() -> None:
    executor = LocalExecutor(slots=1)
    gates = [threading.Event() for _ in range(3)]
    order: list[int] = []

    def make(index: int):
        def work(progress: Progress) -> int:
            order.append(index)
            gates[index].wait(5)
            return index

        return work

    jobs = [executor.submit(f"j{i}", f"job {i}", make(i)) for i in range(3)]
    deadline = time.monotonic() + 5
    while jobs[0].snapshot().status != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert jobs[1].snapshot().status == "queued" and jobs[1].snapshot().queue_position == 1
    assert jobs[2].snapshot().queue_position == 2
    jobs[2].cancel()
    assert jobs[2].wait(3).status == "cancelled"
    for gate in gates:
        gate.set()
    assert [job.wait(5).result for job in jobs[:2]] == [0, 1]
    assert order == [0, 1]
    assert executor.active() == []
