"""Background work with progress and cancellation, behind a small executor interface.

Long work (fine-tuning, pruning runs) never runs in the Streamlit script thread: it is submitted to
an executor, which returns a :class:`Job` that pages poll with :meth:`Job.snapshot`. The work
function receives a :class:`Progress` to report to and to ask whether it should stop. The local
executor runs jobs in daemon threads; a distributed executor can implement the same interface.

Given a :class:`pruning.job_journal.JobJournal`, the local executor records every unfinished job
on disk (at submission, at each status change and, throttled, at progress reports), so that a
restarted app can list the jobs its predecessor was running when it died as interrupted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from pruning.job_journal import JobJournal

log = logging.getLogger(__name__)

T = TypeVar("T")
Status = Literal["queued", "running", "done", "failed", "cancelled"]


class JobCancelled(Exception):
    """Raised inside a job's work function when the job was asked to stop."""


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent copy of a job's state for display.

    Attributes:
        fraction: share of the work done, in [0, 1].
        eta_s: estimated seconds left, or None before the first progress report.
        events: the events reported so far (most recent last), capped at ``max_events``.
    """

    job_id: str
    name: str
    status: Status
    fraction: float
    message: str
    eta_s: float | None
    elapsed_s: float
    error: str | None
    result: Any
    events: tuple[Any, ...] = ()
    queue_position: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")


@dataclass
class Progress:
    """Handed to a work function: report progress, check for cancellation."""

    _job: Job[Any]

    def update(self, fraction: float, message: str = "", event: Any = None) -> None:
        """Report progress; ``fraction`` is clamped to [0, 1]; ``event`` is kept for replay."""
        self._job._update(fraction, message, event)

    def should_stop(self) -> bool:
        """True once :meth:`Job.cancel` was called; work functions check it between steps."""
        return self._job._cancel.is_set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` when the job was cancelled."""
        if self.should_stop():
            raise JobCancelled()


@dataclass
class Job(Generic[T]):
    """One unit of background work. Create through an executor, not directly."""

    job_id: str
    name: str
    work: Callable[[Progress], T]
    max_events: int = 1000
    _status: Status = "queued"
    _fraction: float = 0.0
    _message: str = "queued"
    _error: str | None = None
    _result: T | None = None
    _events: list[Any] = field(default_factory=list)
    _started: float | None = None
    _finished: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _slots: JobSlots | None = None
    _journal: JobJournal | None = None
    _submitted: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    meta: dict[str, Any] = field(default_factory=dict)

    def start(self) -> Job[T]:
        """Start the work in a daemon thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return self
            self._thread = threading.Thread(
                target=self._run, name=f"job-{self.job_id}", daemon=True
            )
        self._thread.start()
        return self

    def _run(self) -> None:
        if self._slots is not None and not self._slots.acquire(self):
            self._finish("cancelled", "cancelled while queued", None)
            return
        try:
            self._run_now()
        finally:
            if self._slots is not None:
                self._slots.release(self)

    def _run_now(self) -> None:
        with self._lock:
            self._status = "running"
            self._message = "starting"
            self._started = time.monotonic()
        self._journal_write(throttle=False)
        try:
            result = self.work(Progress(self))
        except JobCancelled:
            self._finish("cancelled", "cancelled", None)
        except Exception as error:
            log.exception("job %s failed", self.name)
            self._finish("failed", f"failed: {error}", None, error=str(error))
        else:
            status: Status = "cancelled" if self._cancel.is_set() else "done"
            self._finish(status, status, result)

    def _finish(
        self, status: Status, message: str, result: T | None, error: str | None = None
    ) -> None:
        with self._lock:
            self._status = status
            self._message = message
            self._result = result
            self._error = error
            if status == "done":
                self._fraction = 1.0
            self._finished = time.monotonic()
        if self._journal is not None:
            self._journal.remove(self.job_id)

    def _update(self, fraction: float, message: str, event: Any) -> None:
        with self._lock:
            self._fraction = min(1.0, max(0.0, float(fraction)))
            if message:
                self._message = message
            if event is not None:
                self._events.append(event)
                if len(self._events) > self.max_events:
                    del self._events[: len(self._events) - self.max_events]
        self._journal_write(throttle=True)

    def _journal_write(self, *, throttle: bool) -> None:
        """Record the job's state in the journal (if any) while it is queued or running."""
        if self._journal is None:
            return
        with self._lock:
            status, message, fraction = self._status, self._message, self._fraction
            if status not in ("queued", "running"):
                return
            # Under the job's lock, so that a late progress write cannot follow the removal
            # of a finished job's entry.
            self._journal.record(
                self.job_id,
                name=self.name,
                status=status,
                started=self._submitted,
                message=message,
                fraction=fraction,
                meta=self.meta,
                throttle=throttle,
            )

    def cancel(self) -> None:
        """Ask the work to stop; it stops at its next progress check (or leaves the queue)."""
        self._cancel.set()
        if self._slots is not None:
            self._slots.wake()

    @property
    def queue_position(self) -> int | None:
        """1-based place in the queue while waiting for a slot, else None."""
        return self._slots.position(self) if self._slots is not None else None

    def wait(self, timeout: float | None = None) -> JobSnapshot:
        """Block until the job ends (or ``timeout`` seconds) and return its snapshot."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.snapshot()

    def snapshot(self) -> JobSnapshot:
        """A consistent copy of the job's state."""
        with self._lock:
            now = self._finished or time.monotonic()
            elapsed = now - self._started if self._started is not None else 0.0
            eta = None
            if self._status == "running" and 0.0 < self._fraction < 1.0 and elapsed > 0:
                eta = elapsed * (1.0 - self._fraction) / self._fraction
            return JobSnapshot(
                job_id=self.job_id,
                name=self.name,
                status=self._status,
                fraction=self._fraction,
                message=self._message,
                eta_s=eta,
                elapsed_s=elapsed,
                error=self._error,
                result=self._result,
                events=tuple(self._events),
                queue_position=self.queue_position if self._status == "queued" else None,
                meta=dict(self.meta),
            )


class JobSlots:
    """At most ``size`` jobs run at once; the others wait in submission order (FIFO)."""

    def __init__(self, size: int = 1) -> None:
        if size < 1:
            raise ValueError("An executor needs at least one slot.")
        self.size = size
        self._running: set[str] = set()
        self._waiting: list[Job[Any]] = []
        self._condition = threading.Condition()

    def enqueue(self, job: Job[Any]) -> None:
        with self._condition:
            self._waiting.append(job)

    def acquire(self, job: Job[Any]) -> bool:
        """Block until ``job`` is first in line and a slot is free; False if it was cancelled."""
        with self._condition:
            while True:
                if job._cancel.is_set():
                    self._waiting.remove(job)
                    self._condition.notify_all()
                    return False
                if self._waiting and self._waiting[0] is job and len(self._running) < self.size:
                    self._waiting.pop(0)
                    self._running.add(job.job_id)
                    return True
                self._condition.wait(0.5)

    def release(self, job: Job[Any]) -> None:
        with self._condition:
            self._running.discard(job.job_id)
            self._condition.notify_all()

    def wake(self) -> None:
        with self._condition:
            self._condition.notify_all()

    def position(self, job: Job[Any]) -> int | None:
        with self._condition:
            return self._waiting.index(job) + 1 if job in self._waiting else None


class LocalExecutor:
    """Runs jobs in background threads of this process.

    At most ``slots`` jobs run at once (one by default: a single GPU, or the CPU, is shared by
    all sessions of the dashboard); later jobs queue and report their position. A job id that is
    still queued or running is not started twice: submitting it again returns the same job, so a
    page that reloads reattaches to its work.

    Args:
        slots: jobs that may run at once.
        journal: where to record unfinished jobs so that a restarted app finds the ones this
            process was running when it died (None: no journal).
    """

    def __init__(self, slots: int = 1, *, journal: JobJournal | None = None) -> None:
        self._jobs: dict[str, Job[Any]] = {}
        self._lock = threading.Lock()
        self._slots = JobSlots(slots)
        self.journal = journal

    def submit(
        self,
        job_id: str,
        name: str,
        work: Callable[[Progress], T],
        meta: dict[str, Any] | None = None,
    ) -> Job[T]:
        """Queue ``work`` unless a job with this id is still queued or running."""
        with self._lock:
            existing = self._jobs.get(job_id)
            if existing is not None and not existing.snapshot().finished:
                return existing
            job: Job[T] = Job(job_id=job_id, name=name, work=work, meta=dict(meta or {}))
            job._slots = self._slots
            job._journal = self.journal
            job._journal_write(throttle=False)
            self._slots.enqueue(job)
            self._jobs[job_id] = job
        return job.start()

    def get(self, job_id: str) -> Job[Any] | None:
        """The job with this id, queued, running or finished, if any."""
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job[Any]]:
        """Every job this executor knows, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def active(self) -> list[Job[Any]]:
        """Jobs still queued or running, oldest first."""
        return [job for job in self.jobs() if not job.snapshot().finished]
