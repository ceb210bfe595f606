"""The app restarted while a job runs: the job is marked interrupted, the store stays consistent.

Jobs run in threads of the server process; the job journal (``$HEADSCOPE_HOME/jobs``) is what a
new server process reads to find the jobs its predecessor was running when it died.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cache.run_store import RunStore
from pruning.job_journal import JobJournal, JournalEntry, owner_alive, process_marker
from pruning.jobs import LocalExecutor, Progress

REPO = Path(__file__).resolve().parents[2]

_SERVER = textwrap.dedent(
    """
    import sys, threading, time
    import torch
    import cache.run_format as run_format
    from cache.run_store import RunRecord, RunStore
    from pruning.job_journal import JobJournal
    from pruning.jobs import LocalExecutor

    real_write = run_format.write_text_durably

    def slow_write(path, text):  # saves take a while, so the kill is likely to land in one
        time.sleep(0.05)
        real_write(path, text)

    run_format.write_text_durably = slow_write
    store = RunStore()

    def work(progress):
        for seed in range(10_000):
            key = RunStore.key_for(
                model_fingerprint="m", data_fingerprint="d", method="magnitude", config={},
                seed=seed,
            )
            store.save(RunRecord(
                key=key, method="magnitude", config={}, seed=seed, model={}, data={},
                metrics={}, trace=[], info={"name": f"run {seed}"},
                mask=torch.ones(3, 4, dtype=torch.bool),
            ))
            progress.update(seed / 10_000, f"stored run {seed}")
        return "done"

    executor = LocalExecutor(slots=1, journal=JobJournal(progress_interval_s=0.05))
    executor.submit("prune-long", "magnitude", work, meta={"title": "A long sweep"})
    executor.submit("prune-next", "random", work, meta={"title": "The next one"})
    threading.Event().wait()
    """
)


def _wait_for(condition, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the server process")
        time.sleep(0.05)


def test_a_killed_server_leaves_its_jobs_interrupted_and_the_store_consistent() -> None:
    journal = JobJournal()
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def progressed() -> bool:
            assert server.poll() is None, server.communicate()[1]
            running = [e for e in journal.entries() if e.status == "running"]
            return bool(running) and running[0].fraction > 0 and running[0].message != "starting"

        _wait_for(progressed)
        # While the server lives, its jobs are its own: nothing is interrupted.
        assert journal.interrupted() == []
        assert {e.job_id: e.status for e in journal.entries()} == {
            "prune-long": "running",
            "prune-next": "queued",
        }
        time.sleep(0.3)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(30)
    assert server.returncode == -signal.SIGKILL

    # A new process (this one) finds both jobs cut off.
    interrupted = {entry.job_id: entry for entry in JobJournal().interrupted()}
    assert set(interrupted) == {"prune-long", "prune-next"}
    long = interrupted["prune-long"]
    assert long.status == "interrupted" and long.title == "A long sweep"
    assert long.pid == server.pid and long.message.startswith("stored run ")
    assert interrupted["prune-next"].title == "The next one"
    saved = json.loads(journal.path_for("prune-long").read_text())
    assert saved["status"] == "interrupted"  # the mark is on disk: the next process sees it too

    # The run store is consistent: every listed run reads back whole, nothing is reported.
    runs, problems = RunStore().list()
    assert problems == [] and len(runs) >= 1
    for run in runs:
        assert RunStore().get(run.key).name == run.name

    assert JobJournal().dismiss(["prune-long", "prune-next"]) == 2
    assert JobJournal().interrupted() == [] and journal.entries() == []


def _entry(job_id: str, pid: int, owner: str, status: str = "running") -> JournalEntry:
    return JournalEntry(
        job_id=job_id,
        name="magnitude",
        status=status,
        pid=pid,
        owner=owner,
        started="2026-01-02T03:04:05+00:00",
        updated="2026-01-02T03:05:00+00:00",
        message="scoring heads",
        fraction=0.25,
        meta={"title": f"job {job_id}"},
    )


def test_only_jobs_of_dead_owners_are_interrupted_and_a_reused_pid_does_not_fool_it() -> None:
    journal = JobJournal()
    me, marker = os.getpid(), process_marker()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead_pid = int(gone.stdout)
    entries = [_entry("mine", me, marker), _entry("dead", dead_pid, "")]
    if marker:  # Linux: the pids are alive, but belong to other processes than the recorded
        boot = marker.split(":")[0]
        parent = os.getppid()
        entries.append(_entry("reused", me, f"{boot}:1"))
        entries.append(_entry("reused-by-another", parent, f"{boot}:1"))
        entries.append(_entry("parent", parent, process_marker(parent), status="queued"))
    for entry in entries:
        journal._write(entry)
    expected = {"dead", "reused", "reused-by-another"} if marker else {"dead"}
    assert {entry.job_id for entry in journal.interrupted()} == expected
    assert not owner_alive(dead_pid, "") and owner_alive(me, marker)
    still = {entry.job_id: entry.status for entry in journal.entries()}
    assert still["mine"] == "running" and still.get("parent", "queued") == "queued"


def test_the_journal_follows_a_job_and_forgets_it_when_it_ends() -> None:
    journal = JobJournal(progress_interval_s=60.0)
    release = threading.Event()

    def work(progress: Progress) -> str:
        progress.update(0.5, "first report")  # both within the interval of the "running" write
        progress.update(0.6, "second report")
        release.wait(10)
        return "ok"

    executor = LocalExecutor(journal=journal)
    job = executor.submit("prune-a", "magnitude", work, meta={"title": "A", "shape": (2, 3)})
    _wait_for(lambda: job.snapshot().message == "second report", timeout=10)
    [entry] = journal.entries()
    assert entry.status == "running" and entry.pid == os.getpid() and entry.meta["title"] == "A"
    assert entry.message == "starting"  # progress reports within the interval are not written
    release.set()
    assert job.wait(10).status == "done"
    assert journal.entries() == []

    def fail(progress: Progress) -> str:
        raise RuntimeError("boom")

    assert executor.submit("prune-b", "x", fail).wait(10).status == "failed"
    assert journal.entries() == [] and journal.interrupted() == []


def test_an_unreadable_journal_file_is_dropped_not_fatal() -> None:
    journal = JobJournal()
    journal._write(_entry("dead", 2**22 + 12345, ""))
    (journal.root / "garbage-0123456789ab.json").write_text('{"format": 1, "job_id": ')
    (journal.root / "other-0123456789ab.json").write_text(json.dumps(_entry("x", 1, "").to_dict()))
    assert [entry.job_id for entry in journal.interrupted()] == ["dead"]
    assert sorted(path.name for path in journal.root.iterdir()) == [journal.path_for("dead").name]


def _notice_page() -> None:
    from pages.support.common import interrupted_jobs_notice

    interrupted_jobs_notice("prune")


@pytest.mark.parametrize("prefix_matches", [True, False])
def test_the_app_shows_interrupted_jobs_until_dismissed(prefix_matches: bool) -> None:
    journal = JobJournal()
    job_id = "prune-0a1b2c" if prefix_matches else "prepare-default"
    journal._write(_entry(job_id, 2**22 + 12345, ""))
    if prefix_matches:
        sweep = _entry("prune-sweep", 2**22 + 12345, "")
        sweep.meta["title"] = "Sweep *3* [link](http://example.com)"
        journal._write(sweep)
    app = AppTest.from_function(_notice_page, default_timeout=60).run()
    assert not app.exception
    if not prefix_matches:  # another panel's job: not shown here
        assert len(app.warning) == 0 and len(app.button) == 0
        return
    [warning] = app.warning
    assert "job prune\\-0a1b2c" in warning.value  # titles are shown literally, not as Markdown
    assert "Sweep \\*3\\* \\[link\\]\\(http://example\\.com\\)" in warning.value
    assert "2026-01-02 03:04 UTC" in warning.value and "2026-01-02 03:05 UTC" in warning.value
    assert "scoring heads" in warning.value and "25%" in warning.value
    app.button[0].click().run()
    assert not app.exception and len(app.warning) == 0
    assert journal.entries() == []


def _app_wide_notice_page() -> None:
    from pages.support.common import JOB_PANEL_PREFIXES, interrupted_jobs_notice

    interrupted_jobs_notice(exclude=JOB_PANEL_PREFIXES)


def test_an_app_wide_notice_leaves_the_panels_jobs_to_the_panels() -> None:
    journal = JobJournal()
    for job_id in ("prune-0a1b2c", "prepare-default", "explain-lime-42"):
        journal._write(_entry(job_id, 2**22 + 12345, ""))
    app = AppTest.from_function(_app_wide_notice_page, default_timeout=60).run()
    [warning] = app.warning
    assert "explain\\-lime\\-42" in warning.value and "prune" not in warning.value
    app.button[0].click().run()
    assert sorted(entry.job_id for entry in journal.entries()) == [
        "prepare-default",
        "prune-0a1b2c",
    ]
