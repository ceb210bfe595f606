"""Sweeps (several pruning runs) on the local executor or as Ray tasks; only the driver stores.

:func:`run_requests` runs a list of :class:`~pruning.pipeline.RunRequest` and returns one stored
:class:`~cache.run_format.RunRecord` per request, in request order.

**What runs where** (executor ``ray``):

* *driver* (this process): validates every request's config, computes every run key
  (:func:`~pruning.pipeline.planned_key`: it loads the dataset and resolves the prepared
  classifier, no model), fetches the runs already stored, submits one Ray task per remaining
  distinct key, relays the tasks' progress to ``on_event``, and **alone writes the run store**:
  each result is saved (atomically, :meth:`RunStore.save`) as it arrives.
* *worker* (one Ray task per run, ``num_cpus=1``, plus ``num_gpus=1`` when the run would use
  CUDA: device ``cuda``, or ``auto`` on a cluster with GPUs): runs
  :func:`~pruning.pipeline.compute_run` with the local executor (no nested Ray) and
  ``torch.set_num_threads(1)`` (it holds one CPU), reading the prepared classifier from the
  driver's model store and the dataset from the request's paths, and returns the computed run
  (record, pruned model on the CPU, tokenizer) to the driver. It never writes the run store.

**Guarantees.** A run is never recorded twice: duplicate keys in one sweep are computed once, a
key already stored is fetched instead of computed, and a result whose key was stored meanwhile
(by another sweep) is dropped in favour of the stored run. A worker that dies mid-task (killed,
out of memory, node lost) is retried by Ray (``max_retries=3``); the retry recomputes the run
from the start, and since the driver stores only finished results, nothing half-done is stored.
``should_stop`` is polled at least every 0.5 s; when it fires every unfinished task is cancelled
(``ray.cancel(force=True)``, which kills its worker process) and :class:`~pruning.jobs.JobCancelled`
is raised; runs stored before stay stored. A task that raises (bad data, settings that only fail
on the model) cancels the rest and fails the sweep with its message: a ``ValueError`` stays a
``ValueError``; runs finished before stay stored.

**Progress.** Each task sends its events (the method's trace events and the pipeline's stage
events, exactly those the local pipeline emits, plus a first ``"worker"`` event saying which
process and node run it and which attempt this is) to a mailbox, a ``ray.util.queue.Queue``
actor (no CPU reserved, never imports torch): every non-``"progress"`` event, and of consecutive
``"progress"`` events only the newest, at most four batches a second per task (the last batch is
in the mailbox before the task returns). The driver drains the mailbox while it waits and calls
``on_event(index, event)`` for every request index with that key, so tqdm bars and the dashboard
see every task's progress.

**Remote clusters.** Workers read the prepared classifier (``$HEADSCOPE_HOME/models``, or the
given model store's folder) and CSV datasets from the **same paths** as the driver: on a cluster
of several machines, ``HEADSCOPE_HOME`` and the data must sit on a shared file system mounted at
the same path on every node (README "Scale-out"). A worker that sees a different classifier
computes a different key; the driver refuses such a result with a message that says so. Results
travel back through Ray's object store (Ray serialises our own :class:`ComputedRun` objects;
nothing user-supplied is ever deserialised).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from cache.checkpoints import RunCheckpoints
from cache.model_store import ModelStore
from cache.paths import HOME_ENV, headscope_home
from cache.run_format import RunRecord
from cache.run_store import RunStore
from pruning.executors import LOCAL, ExecutorSettings, connect
from pruning.jobs import JobCancelled
from pruning.methods.base import TraceEvent
from pruning.pipeline import (
    FOUND_MESSAGE,
    LOADING_MESSAGE,
    STORED_MESSAGE,
    ComputedRun,
    RunRequest,
    compute_run,
    planned_key,
    run_pruning,
    stage_event,
)

__all__ = ["MAX_RETRIES", "WORKER_EVENT", "run_requests"]

log = logging.getLogger(__name__)

MAX_RETRIES = 3
WORKER_EVENT = "worker"
# The driver waits this long for a result before it polls should_stop and the mailbox again.
_POLL_S = 0.25
# A worker sends at most this many event batches a second.
_FLUSHES_PER_S = 4.0
# How long the driver waits for cancelled tasks to end before it raises.
_CANCEL_WAIT_S = 5.0

EventCallback = Callable[[int, TraceEvent], None]
RecordCallback = Callable[[int, RunRecord], None]


def run_requests(
    requests: Sequence[RunRequest],
    *,
    executor: ExecutorSettings = LOCAL,
    store: RunStore | None = None,
    model_store: ModelStore | None = None,
    on_event: EventCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_record: RecordCallback | None = None,
) -> list[RunRecord]:
    """Run (or fetch from the store) every request; one stored record per request, in order.

    Args:
        requests: the runs of the sweep; duplicates are allowed (computed once with Ray).
        executor: ``local`` runs them one after the other in this process; ``ray`` runs them
            as Ray tasks (see the module docstring).
        store: the run store the driver writes (default ``$HEADSCOPE_HOME/runs``).
        model_store: where the prepared classifiers are (default ``$HEADSCOPE_HOME/models``).
        on_event: ``(index in requests, event)`` for every progress event of every run.
        should_stop: polled between steps (local) or at least every 0.5 s (Ray).
        on_record: ``(index in requests, record)`` as each run is stored or fetched.

    Raises:
        ValueError: bad settings of any request (before any work), no prepared classifier, a
            run that failed (the message names it), an unreachable Ray cluster.
        pruning.jobs.JobCancelled: ``should_stop`` fired; finished runs stay stored.
    """
    requests = list(requests)
    for index, request in enumerate(requests):
        try:
            request.method_config()
        except ValueError as error:
            raise ValueError(f"{_describe(index, requests)}: {error}") from None
    store = store or RunStore()
    if not executor.is_ray:
        return _run_locally(
            requests,
            store=store,
            model_store=model_store,
            on_event=on_event,
            should_stop=should_stop,
            on_record=on_record,
        )
    return _RaySweep(
        requests,
        executor=executor,
        store=store,
        model_store=model_store or ModelStore(),
        on_event=on_event,
        should_stop=should_stop,
        on_record=on_record,
    ).run()


def _describe(index: int, requests: Sequence[RunRequest]) -> str:
    request = requests[index]
    return f"Run {index + 1} of {len(requests)} ({request.name or request.method})"


def _run_locally(
    requests: list[RunRequest],
    *,
    store: RunStore,
    model_store: ModelStore | None,
    on_event: EventCallback | None,
    should_stop: Callable[[], bool] | None,
    on_record: RecordCallback | None,
) -> list[RunRecord]:
    """The local executor: :func:`run_pruning` for each request, one after the other."""
    records: list[RunRecord] = []
    for index, request in enumerate(requests):
        if should_stop is not None and should_stop():
            raise JobCancelled()

        def forward(event: TraceEvent, index: int = index) -> None:
            if on_event is not None:
                on_event(index, event)

        record = run_pruning(
            request,
            store=store,
            model_store=model_store,
            on_event=forward,
            should_stop=should_stop,
        )
        records.append(record)
        if on_record is not None:
            on_record(index, record)
    return records


# ---------------------------------------------------------------------------------------------
# Worker side


class _EventRelay:
    """Sends a task's events to the mailbox: every non-``progress`` event, and of consecutive
    ``progress`` events only the newest, in at most ``_FLUSHES_PER_S`` batches a second.

    Progress is best effort: a mailbox that cannot be reached never fails the run.
    """

    def __init__(self, mailbox: Any, key: str, attempt: str) -> None:
        self._mailbox, self._key, self._attempt = mailbox, key, attempt
        self._buffer: list[TraceEvent] = []
        self._lock = threading.Lock()
        self._last_flush = 0.0
        self._timer: threading.Timer | None = None

    def __call__(self, event: TraceEvent) -> None:
        with self._lock:
            if event.kind == "progress" and self._buffer and self._buffer[-1].kind == "progress":
                self._buffer[-1] = event
            else:
                self._buffer.append(event)
            wait = self._last_flush + 1.0 / _FLUSHES_PER_S - time.monotonic()
            if wait <= 0:
                self._flush_locked()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._flush_from_timer)
                self._timer.daemon = True
                self._timer.start()

    def _flush_from_timer(self) -> None:
        with self._lock:
            self._timer = None
            self._flush_locked()

    def close(self) -> None:
        """Send what is left and wait until the mailbox has it (before the result returns)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        batch = [event.to_dict() for event in self._buffer]
        self._buffer = []
        try:
            self._mailbox.put_nowait((self._key, self._attempt, batch))
        except Exception as error:
            log.warning("could not send progress of run %s: %s", self._key, error)


def _compute_on_worker(
    request: RunRequest, key: str, home: str, models_root: str, mailbox: Any
) -> ComputedRun:
    """The body of a sweep task: compute one run on this worker and return it (no storing).

    Args:
        request: the run.
        key: the key the driver planned (events are addressed with it).
        home: the driver's ``HEADSCOPE_HOME``; set for the task (workers outlive a driver's
            setting, e.g. tests that switch homes while the Ray workers live on).
        models_root: the driver's model store folder.
        mailbox: the ``ray.util.queue.Queue`` (an actor) for progress events.
    """
    import torch

    attempt = uuid.uuid4().hex[:12]
    relay = _EventRelay(mailbox, key, attempt)
    relay(
        TraceEvent(
            kind=WORKER_EVENT,
            step=-1,
            fraction=0.0,
            message=f"running on Ray worker {os.getpid()} on {socket.gethostname()}",
            data={"pid": os.getpid(), "node": socket.gethostname(), "attempt": attempt},
        )
    )
    previous_home = os.environ.get(HOME_ENV)
    previous_threads = torch.get_num_threads()
    os.environ[HOME_ENV] = home
    # The task holds one CPU; more threads would oversubscribe the node.
    torch.set_num_threads(1)
    try:
        computed = compute_run(request, model_store=ModelStore(models_root), on_event=relay)
        if computed.model is not None:
            computed.model.to("cpu")  # the driver may have no GPU
        return computed
    finally:
        relay.close()
        torch.set_num_threads(previous_threads)
        if previous_home is None:
            os.environ.pop(HOME_ENV, None)
        else:
            os.environ[HOME_ENV] = previous_home


# ---------------------------------------------------------------------------------------------
# Driver side


def _wants_gpu(request: RunRequest, cluster_has_gpu: bool) -> bool:
    device = request.device.strip().lower()
    return device.startswith("cuda") or (device == "auto" and cluster_has_gpu)


def _submit(task: Any, options: dict[str, Any], *args: Any) -> Any:
    """Submit one sweep task (a seam for tests that count submissions)."""
    return task.options(**options).remote(*args)


class _RaySweep:
    """One sweep on a Ray cluster: plan on the driver, compute on workers, store here."""

    def __init__(
        self,
        requests: list[RunRequest],
        *,
        executor: ExecutorSettings,
        store: RunStore,
        model_store: ModelStore,
        on_event: EventCallback | None,
        should_stop: Callable[[], bool] | None,
        on_record: RecordCallback | None,
    ) -> None:
        self.requests = requests
        self.executor = executor
        self.store = store
        self.model_store = model_store
        self.on_event = on_event
        self.should_stop = should_stop
        self.on_record = on_record
        self.records: dict[str, RunRecord] = {}
        self.indices: dict[str, list[int]] = {}
        self.attempts: dict[str, list[str]] = {}

    def run(self) -> list[RunRecord]:
        ray = connect(self.executor)
        keys = []
        for index, request in enumerate(self.requests):
            self._check_stop()
            try:
                key = planned_key(request, model_store=self.model_store)
            except ValueError as error:
                raise ValueError(f"{_describe(index, self.requests)}: {error}") from None
            keys.append(key)
            self.indices.setdefault(key, []).append(index)
        cluster_has_gpu = float(ray.cluster_resources().get("GPU", 0)) > 0
        for index, request in enumerate(self.requests):
            if _wants_gpu(request, cluster_has_gpu) and not cluster_has_gpu:
                raise ValueError(
                    f"{_describe(index, self.requests)} asks for device {request.device!r} but "
                    "the Ray cluster has no GPU; choose device 'auto' or 'cpu', or add GPU nodes."
                )
        to_compute = []
        for key, indices in self.indices.items():
            if self.store.exists(key):
                record = self.store.get(key)
                for index in indices:
                    self._emit(index, stage_event(LOADING_MESSAGE, 0.0))
                    self._emit(index, stage_event(FOUND_MESSAGE, 1.0, cached=True))
                self._record(key, record)
            else:
                to_compute.append(key)
        if to_compute:
            self._compute(ray, to_compute, cluster_has_gpu)
        return [self.records[key] for key in keys]

    def _compute(self, ray: Any, keys: list[str], cluster_has_gpu: bool) -> None:
        from ray.util.queue import Queue

        task = ray.remote(_compute_on_worker)
        # Ray's own queue actor: a light process (it never imports torch), no CPU reserved.
        mailbox = Queue(actor_options={"num_cpus": 0})
        home = str(headscope_home())
        models_root = str(self.model_store.root)
        pending: dict[Any, str] = {}
        try:
            for key in keys:
                request = self.requests[self.indices[key][0]]
                options = {
                    "num_cpus": 1,
                    "num_gpus": 1 if _wants_gpu(request, cluster_has_gpu) else 0,
                    "max_retries": MAX_RETRIES,
                    "retry_exceptions": False,
                    "name": f"headscope-run-{key}",
                }
                ref = _submit(task, options, request, key, home, models_root, mailbox)
                pending[ref] = key
            log.info("sweep: %d Ray tasks submitted", len(pending))
            while pending:
                self._check_stop()
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL_S)
                # A finished task flushed its last events before returning: relay them first.
                self._relay(mailbox)
                for ref in ready:
                    key = pending.pop(ref)
                    self._finish(ray, key, ref)
        except BaseException:
            self._cancel(ray, pending)
            raise
        finally:
            try:
                mailbox.shutdown()
            except Exception as error:  # the mailbox died with its node: nothing to free
                log.debug("mailbox shutdown: %s", error)

    def _check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise JobCancelled()

    def _cancel(self, ray: Any, pending: dict[Any, str]) -> None:
        if not pending:
            return
        refs = list(pending)
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception as error:  # already finished or its worker is gone
                log.debug("cancel %s: %s", pending[ref], error)
        ray.wait(refs, num_returns=len(refs), timeout=_CANCEL_WAIT_S)
        log.info("sweep: %d unfinished Ray tasks cancelled", len(refs))

    def _relay(self, mailbox: Any) -> None:
        """Pass the event batches the tasks sent so far to ``on_event`` (best effort: a lost
        mailbox loses progress, never results)."""
        try:
            waiting = mailbox.size()
            batches = mailbox.get_nowait_batch(waiting) if waiting else []
        except Exception as error:
            log.warning("sweep progress unavailable: %s", error)
            return
        for key, attempt, events in batches:
            if key in self.records:  # a late batch of a run already stored
                continue
            attempts = self.attempts.setdefault(key, [])
            if attempt not in attempts:
                attempts.append(attempt)
            number = attempts.index(attempt) + 1
            for data in events:
                event = TraceEvent.from_dict(data)
                if event.kind == WORKER_EVENT:
                    event.data["attempt_number"] = number
                    if number > 1:
                        event = TraceEvent(
                            kind=event.kind,
                            step=event.step,
                            fraction=event.fraction,
                            message=f"{event.message} (attempt {number}: Ray retried the run "
                            "after its worker died)",
                            data=event.data,
                        )
                for index in self.indices[key]:
                    self._emit(index, event)

    def _finish(self, ray: Any, key: str, ref: Any) -> None:
        """Store the result of ``key``'s task (unless stored meanwhile) and report it."""
        index = self.indices[key][0]
        try:
            computed: ComputedRun = ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None) or error
            message = f"{_describe(index, self.requests)} failed on a Ray worker: {cause}"
            if isinstance(cause, ValueError):
                raise ValueError(message) from None
            raise RuntimeError(message) from None
        except ray.exceptions.TaskCancelledError:
            raise JobCancelled() from None
        except ray.exceptions.RayError as error:
            raise RuntimeError(
                f"{_describe(index, self.requests)} could not finish on the Ray cluster (a "
                f"worker that dies is retried {MAX_RETRIES} times): {error}"
            ) from None
        if computed.record.key != key:
            raise ValueError(
                f"{_describe(index, self.requests)}: the worker computed run "
                f"{computed.record.key} but the driver planned {key}, so the worker sees another "
                "prepared classifier or dataset. On a cluster of several machines HEADSCOPE_HOME "
                "and the data must be on a shared file system at the same path on every node."
            )
        if self.store.exists(key):
            record = self.store.get(key)
            event = stage_event(FOUND_MESSAGE, 1.0, cached=True)
        else:
            record = self.store.save(
                computed.record, model=computed.model, tokenizer=computed.tokenizer
            )
            RunCheckpoints().delete(key)
            event = stage_event(STORED_MESSAGE, 1.0, key=key)
        for i in self.indices[key]:
            self._emit(i, event)
        self._record(key, record)

    def _record(self, key: str, record: RunRecord) -> None:
        self.records[key] = record
        if self.on_record is not None:
            for index in self.indices[key]:
                self.on_record(index, record)

    def _emit(self, index: int, event: TraceEvent) -> None:
        if self.on_event is not None:
            self.on_event(index, event)
