"""Widgets and cached resources shared by the pages (not a page itself).

Cross-page state lives in ``st.session_state`` under non-widget keys: ``model_spec`` and
``data_spec`` (what the Model & data page chose), ``last_run`` (key of the run to show).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import threading
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import streamlit as st

from cache.model_store import ModelStore, PreparedModel
from cache.run_store import RunStore
from pruning.data import DataSpec, LabelledDataset, load_dataset
from pruning.executors import (
    INSTALL_HINT,
    LOCAL,
    ExecutorSettings,
    ray_installed,
    settings_from_env,
)
from pruning.job_journal import JobJournal, JournalEntry
from pruning.jobs import Job, JobSnapshot, LocalExecutor, Progress
from pruning.methods.base import MethodConfig, TraceEvent
from pruning.models import ModelSpec
from pruning.pipeline import RunRequest, run_pruning
from pruning.prepare import prepare_model
from pruning.train import TrainConfig, TrainEvent

_ROUTE = threading.local()


@contextmanager
def routed_by_app() -> Iterator[None]:
    """Mark the current script run as routed by app.py's ``st.navigation`` (app.py uses this)."""
    _ROUTE.active = True
    try:
        yield
    finally:
        _ROUTE.active = False


def ensure_app_navigation() -> None:
    """Make a first visit straight to a page URL go through app.py's navigation.

    Streamlit treats a folder named ``pages/`` beside the entry script as a legacy multipage app
    until the entry script has called ``st.navigation`` once in this server process. A first
    request for ``/prune`` on a fresh server would run ``pages/prune.py`` alone: no navigation,
    no shared sidebar, auto-generated page names. When a page finds it was not routed by app.py,
    it switches that mode off and reruns, so Streamlit runs ``app.py``, which routes to the page.
    """
    if getattr(_ROUTE, "active", False):
        return
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False
    st.rerun()


@st.cache_resource
def executor() -> LocalExecutor:
    """The one executor of this server: jobs survive page reloads and are shared by sessions.

    Unfinished jobs are journalled under ``$HEADSCOPE_HOME/jobs`` so that, after a restart,
    :func:`interrupted_jobs_notice` can say which ones were cut off.
    """
    return LocalExecutor(slots=1, journal=JobJournal())


_ISO_MINUTE = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})")


def _utc(iso: str) -> str:
    """'2026-05-01 14:03 UTC' from an ISO 8601 UTC time (the text, escaped, when it is not one)."""
    match = _ISO_MINUTE.match(iso)
    return f"{match[1]} {match[2]} UTC" if match else _plain(iso)


# Job id prefixes whose panels (tracked_jobs, prepare_panel) list their own interrupted jobs.
JOB_PANEL_PREFIXES = ("prune", "search", "gates", "mcap", "deepcuts", "prepare", "claims")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def _plain(text: str) -> str:
    """``text`` shown literally inside Markdown (job titles and messages carry user input)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def interrupted_jobs_notice(prefix: str = "", *, exclude: Sequence[str] = ()) -> list[JournalEntry]:
    """Warn about jobs that were cut off when the app last stopped; Dismiss forgets them.

    Args:
        prefix: only jobs whose id starts with ``<prefix>-`` (a panel's own kind); "" = all.
        exclude: leave out jobs with these prefixes (e.g. :data:`JOB_PANEL_PREFIXES` for an
            app-wide notice next to the panels' own).

    Returns:
        The interrupted jobs shown (empty when there are none).
    """
    try:
        entries = [
            entry
            for entry in JobJournal().interrupted()
            if (not prefix or entry.job_id.startswith(f"{prefix}-"))
            and not any(entry.job_id.startswith(f"{other}-") for other in exclude)
        ]
    except OSError:
        return []
    if not entries:
        return []
    lines = "\n".join(
        f"- **{_plain(entry.title)}**: started {_utc(entry.started)}, last update "
        f"{_utc(entry.updated)} at {entry.fraction:.0%}: {_plain(entry.message or entry.status)}"
        for entry in entries
    )
    st.warning(
        "The app stopped (restarted, killed or out of memory) while these jobs were running; "
        "they did not finish and nothing half-done was stored. Start them again to get their "
        f"results.\n\n{lines}"
    )
    if st.button("Dismiss", key=f"dismiss-interrupted-{prefix or 'all'}"):
        JobJournal().dismiss(entry.job_id for entry in entries)
        st.rerun()
    return entries


def run_store() -> RunStore:
    return RunStore()


def model_store() -> ModelStore:
    return ModelStore()


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=8)
def cached_dataset(spec: DataSpec) -> LabelledDataset:
    return load_dataset(spec)


def current_specs() -> tuple[ModelSpec, DataSpec]:
    """The model and dataset chosen on the Model & data page (defaults otherwise)."""
    model = st.session_state.get("model_spec") or ModelSpec()
    data = st.session_state.get("data_spec") or DataSpec()
    return model, data


def prepared_for(model: ModelSpec, data: DataSpec) -> PreparedModel | None:
    """The newest classifier prepared for this model and dataset (or the same data's content)."""
    try:
        fingerprint: str | None = cached_dataset(data).fingerprint
    except (OSError, ValueError):
        fingerprint = None
    matches = model_store().find(model, data, fingerprint)
    return matches[0] if matches else None


def require_prepared() -> PreparedModel | None:
    """The classifier prepared for the chosen model and dataset, or None with a warning."""
    model_spec, data_spec = current_specs()
    prepared = prepared_for(model_spec, data_spec)
    if prepared is None:
        st.warning(
            f"No classifier is prepared for {model_spec.label} on this dataset yet. "
            "Prepare it on the Overview page (or with `headscope prepare`) first."
        )
    return prepared


def format_eta(snap: JobSnapshot) -> str:
    """' · about 2 min 05 s left' once the estimate means something, else ''."""
    if snap.eta_s is None or snap.fraction < 0.02:
        return ""
    minutes, seconds = divmod(int(snap.eta_s), 60)
    return f" · about {minutes} min {seconds:02d} s left" if minutes else f" · {seconds} s left"


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _default_step(kind: type, default: Any) -> float:
    """1 for ints; for floats one unit of the default's leading digit (1e-3 for 3e-3)."""
    if kind is int:
        return 1
    if isinstance(default, int | float) and default > 0:
        return float(10 ** math.floor(math.log10(default)))
    return 0.01


def config_form(config_class: type[MethodConfig], key: str) -> dict[str, Any]:
    """Draw one widget per config field from its ``ui()`` metadata; return the values.

    Floats get number inputs with the field's bounds and step, ints integer inputs, bools
    checkboxes, fields with ``choices`` select boxes; optional numbers may be left empty.
    Validation happens when the config is built (errors reach the user as messages).
    """
    hints = typing.get_type_hints(config_class)
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(config_class):
        meta = spec.metadata
        label = meta.get("label", spec.name)
        help_text = meta.get("help")
        default = spec.default if spec.default is not dataclasses.MISSING else None
        kind, optional = _unwrap_optional(hints[spec.name])
        widget_key = f"{key}:{spec.name}"
        if "choices" in meta:
            choices = list(meta["choices"])
            index = choices.index(default) if default in choices else 0
            values[spec.name] = st.selectbox(
                label, choices, index=index, help=help_text, key=widget_key
            )
        elif kind is bool:
            values[spec.name] = st.checkbox(
                label, value=bool(default), help=help_text, key=widget_key
            )
        elif kind in (int, float):
            cast = int if kind is int else float
            low = meta.get("min")
            high = meta.get("max")
            step = meta.get("step") or _default_step(kind, default)
            values[spec.name] = st.number_input(
                label,
                min_value=None if low is None else cast(low),
                max_value=None if high is None else cast(high),
                value=None if default is None else cast(default),
                step=cast(step),
                help=help_text,
                key=widget_key,
                placeholder="not set" if optional else None,
                # %g: learning rates such as 3e-5 would read 0.00 under the default %0.2f.
                format="%d" if kind is int else "%g",
            )
        else:
            values[spec.name] = st.text_input(
                label, value="" if default is None else str(default), help=help_text, key=widget_key
            )
    return values


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The run settings every pruning form asks for (besides the method's own)."""

    seed: int
    examples: int
    eval_split: typing.Literal["validation", "test"]
    recovery_steps: int


def run_settings_ui(examples_label: str, examples_help: str) -> RunSettings:
    """Seed, scoring/validation texts, evaluation split and recovery steps (inside a form)."""
    st.markdown("**Run settings**")
    cols = st.columns(2)
    seed = cols[0].number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1)
    examples = cols[1].number_input(
        examples_label, min_value=8, max_value=20_000, value=256, step=32, help=examples_help
    )
    cols = st.columns(2)
    eval_split = (
        "validation"
        if cols[0].selectbox("Evaluate on", ["test", "validation"]) == ("validation")
        else "test"
    )
    recovery_steps = cols[1].number_input(
        "Recovery fine-tuning steps",
        min_value=0,
        max_value=10_000,
        value=0,
        step=10,
        help="Fine-tune the pruned model for this many steps afterwards (0 = none).",
    )
    return RunSettings(int(seed), int(examples), eval_split, int(recovery_steps))


def prepare_work(model: ModelSpec, data: DataSpec) -> Callable[[Progress], str]:
    """Background work that fine-tunes and stores a classifier; returns its store key."""

    def work(progress: Progress) -> str:
        def on_event(event: TrainEvent) -> None:
            progress.update(
                event.fraction, f"step {event.step}/{event.total_steps} · loss {event.loss:.3f}"
            )

        progress.update(0.0, "loading model and data")
        prepared = prepare_model(
            model, data, TrainConfig(), on_event=on_event, should_stop=progress.should_stop
        )
        return prepared.key

    return work


@st.fragment(run_every=1.0)
def prepare_panel(job_id: str, title: str) -> None:
    """Progress, ETA and Cancel of a preparation job; reruns the page once when it is done.

    Preparations cut off by an earlier stop of the app are listed first.
    """
    interrupted_jobs_notice("prepare")
    job = executor().get(job_id)
    if job is None:
        return
    snap = job.snapshot()
    if snap.status == "queued":
        st.info(f"{title}: queued, position {snap.queue_position} (one job runs at a time).")
    elif snap.status == "running":
        st.progress(snap.fraction, text=f"{title}: {snap.message}{format_eta(snap)}")
        if st.button("Cancel preparation", key=f"cancel-{job_id}"):
            job.cancel()
    elif snap.status == "done":
        handled = st.session_state.setdefault("handled_jobs", set())
        st.success("Classifier prepared and stored.")
        if job_id not in handled:
            handled.add(job_id)
            st.rerun(scope="app")
    elif snap.status == "failed":
        st.error(
            f"Preparing the classifier failed: {snap.error}. Check the model and the dataset, "
            "then press Prepare again; the store was left unchanged."
        )
    elif snap.status == "cancelled":
        st.warning("Preparation was cancelled; nothing was stored.")


def request_job_id(request: RunRequest, prefix: str = "prune") -> str:
    """A job id per distinct request, so submitting the same request twice reattaches."""
    payload = json.dumps(
        {
            "method": request.method,
            "config": request.config,
            "model": repr(request.model),
            "data": repr(request.data),
            "seed": request.seed,
            "settings": request.run_settings(),
        },
        sort_keys=True,
        default=str,
    )
    return f"{prefix}-" + hashlib.sha256(payload.encode()).hexdigest()[:12]


EXECUTOR_KEY = "executor_settings"


def current_executor() -> ExecutorSettings:
    """The executor this session chose in the sidebar (else the environment's, else local)."""
    chosen = st.session_state.get(EXECUTOR_KEY)
    if isinstance(chosen, ExecutorSettings):
        return chosen
    try:
        return settings_from_env()
    except ValueError:
        return LOCAL


def executor_settings_ui() -> ExecutorSettings:
    """The sidebar's Executor box: local, or a Ray cluster for sweeps and A* evaluations.

    A bad address or a missing Ray install is said here and the session keeps the local
    executor, so no run fails later for it.
    """
    default = current_executor()
    # A fixed label: an expander whose label changes is a new element and closes on every rerun.
    with st.expander("Executor", expanded=False, key="executor-box"):
        use_ray = st.toggle(
            "Run sweeps and A* evaluations on Ray",
            value=default.is_ray,
            key="executor-ray",
            help="On Ray, a request of several runs becomes one Ray task per run and A* spreads "
            "its candidate evaluations over Ray actors; the results are the same.",
        )
        settings = LOCAL
        if use_ray:
            address = st.text_input(
                "Ray address",
                value=default.address,
                key="executor-address",
                help="auto: a cluster started with `ray start --head` on this machine; local: "
                "a private instance; or host:port of a remote cluster.",
            )
            workers = st.number_input(
                "A* actors (0 = one per CPU or GPU)",
                min_value=0,
                max_value=4096,
                value=default.workers or 0,
                key="executor-workers",
            )
            if not ray_installed():
                st.warning(f"Ray is not installed, so runs stay local. {INSTALL_HINT}")
            else:
                try:
                    settings = ExecutorSettings("ray", address, int(workers) or None)
                except ValueError as error:
                    st.error(f"{error} Runs stay local until this is fixed.")
    st.caption(f"Sweeps and A* evaluations run: {settings.describe()}.")
    st.session_state[EXECUTOR_KEY] = settings
    return settings


def pruning_work(
    request: RunRequest, executor: ExecutorSettings = LOCAL
) -> Callable[[Progress], str]:
    """Background work that runs (or fetches) one pruning run; returns its run key.

    Every trace event reaches the job's snapshot, so pages can draw the method's live state.
    With a Ray executor the run stays in this process and A* spreads its evaluations on Ray.
    """

    def work(progress: Progress) -> str:
        def on_event(event: TraceEvent) -> None:
            progress.update(event.fraction, event.message or event.kind, event=event.to_dict())

        record = run_pruning(
            request, on_event=on_event, should_stop=progress.should_stop, executor=executor
        )
        return record.key

    return work


def sweep_work(
    requests: Sequence[RunRequest], executor: ExecutorSettings = LOCAL
) -> Callable[[Progress], str]:
    """Background work that runs (or fetches) several runs; returns the last run's key.

    Local: one after the other. Ray: one task per run, stored here as each finishes. Progress is
    the mean of the runs' progress; cancelling cancels every unfinished Ray task.
    """
    from pruning.ray_sweep import run_requests

    def work(progress: Progress) -> str:
        fractions = [0.0] * len(requests)
        done: set[int] = set()

        def on_event(index: int, event: TraceEvent) -> None:
            fractions[index] = max(fractions[index], event.fraction)
            progress.update(
                sum(fractions) / len(fractions),
                f"{len(done)}/{len(requests)} runs stored · run {index + 1}: "
                f"{event.message or event.kind}",
            )

        def on_record(index: int, record: Any) -> None:
            done.add(index)
            fractions[index] = 1.0

        records = run_requests(
            requests,
            executor=executor,
            on_event=on_event,
            should_stop=progress.should_stop,
            on_record=on_record,
        )
        return records[-1].key

    return work


def submit_run(request: RunRequest, *, prefix: str, session_key: str) -> str:
    """Queue a pruning run in the server's executor and remember it in this session."""
    return submit_runs([request], prefix=prefix, session_key=session_key)


def submit_runs(requests: Sequence[RunRequest], *, prefix: str, session_key: str) -> str:
    """Queue one job for ``requests`` (one run, or a sweep) and remember it in this session."""
    if not requests:
        raise ValueError("Nothing to run: the request list is empty.")
    first = requests[0]
    ids = [request_job_id(request, prefix) for request in requests]
    job_id = (
        ids[0]
        if len(ids) == 1
        else f"{prefix}-" + hashlib.sha256(" ".join(ids).encode()).hexdigest()[:12]
    )
    chosen = current_executor()
    title = first.name or first.method
    if len(requests) > 1:
        title = f"{title} ×{len(requests)}" + (" on Ray" if chosen.is_ray else "")
    work = pruning_work(first, chosen) if len(requests) == 1 else sweep_work(requests, chosen)
    executor().submit(job_id, first.method, work, meta={"title": title})
    mine = st.session_state.setdefault(session_key, [])
    if job_id not in mine:
        mine.append(job_id)
    return job_id


def job_status(job: Job[Any], snap: JobSnapshot) -> None:
    """One job's state: queue position, progress with ETA and Cancel, or how it ended."""
    title = snap.meta.get("title", snap.name)
    if snap.status in ("queued", "running"):
        if snap.status == "queued":
            st.info(f"{title}: queued, position {snap.queue_position} (one job runs at a time)")
        else:
            st.progress(snap.fraction, text=f"{title}: {snap.message}{format_eta(snap)}")
        if st.button("Cancel", key=f"cancel-{job.job_id}"):
            job.cancel()
    elif snap.status == "failed":
        st.error(f"{title} failed: {snap.error}")
    elif snap.status == "cancelled":
        st.warning(f"{title} was cancelled; nothing was stored.")


def tracked_jobs(prefix: str, session_key: str) -> list[tuple[Job[Any], JobSnapshot]]:
    """This session's jobs with ``prefix`` plus anyone's unfinished ones (shared machine).

    A job that finished is reported once: its run key goes to ``st.session_state["last_run"]``
    (and ``last_run_<session_key>``), it leaves the session's list and the page reruns. Jobs
    with ``prefix`` cut off by an earlier stop of the app are listed first.
    """
    interrupted_jobs_notice(prefix)
    mine = st.session_state.get(session_key, [])
    shown = []
    for job in executor().jobs():
        if not job.job_id.startswith(f"{prefix}-"):
            continue
        snap = job.snapshot()
        if snap.finished and job.job_id not in mine:
            continue
        if snap.status == "done":
            st.session_state["last_run"] = snap.result
            st.session_state[f"last_run_{session_key}"] = snap.result
            st.session_state[session_key] = [j for j in mine if j != job.job_id]
            st.rerun()
        shown.append((job, snap))
    return shown
