"""Compare: the stored runs of the current classifier on Pareto plots, their mask overlap (IoU) and
a masked-vs-removed consistency badge per run.

Only runs made from the prepared classifier of the chosen model and dataset are listed: runs of
different models are never mixed. Figures come from :mod:`viz.pareto` and
:mod:`viz.compare_matrix`; the badge from :mod:`pruning.consistency` (cached on disk; runs without
a cached verdict are checked in a background job the page follows, ⏳ until then); measured latency
from :mod:`pruning.latency_cache` (measured in a background job on request). Head masks are bool
``(n_layers, n_heads)``, True = keep.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from cache.model_store import PreparedModel
from cache.run_format import RunRecord
from pages.support.common import (
    cached_dataset,
    current_specs,
    ensure_app_navigation,
    executor,
    job_status,
    require_prepared,
    run_store,
)
from pages.support.figures import show_chart
from pruning.consistency import (
    ConsistencyResult,
    cached_result,
    check_run,
    check_stored_runs,
    consistency_texts,
    not_applicable_reason,
)
from pruning.jobs import Progress
from pruning.latency_cache import cached_latencies, measure_runs
from pruning.models import LoadedClassifier
from pruning.run_models import run_ref
from pruning.weight_scores import count_kept
from viz.compare_matrix import build_iou_heatmap, mask_iou_matrix
from viz.pareto import ParetoPoint, build_pareto_figure

MAX_RUNS = 40
MAX_IOU_RUNS = 30
# Job id prefixes that are not pruning prefixes: tracked_jobs must not take them for runs.
LATENCY_PREFIX, CHECK_PREFIX = "cmplatency", "cmpcheck"
LATENCY_JOB = "compare_latency_job"
SPEED_KEY = "compare-speed"
SWITCH_TO_MEASURED = "compare_show_measured"  # set when a measurement ends (not a widget key)
PENDING = "⏳ checking"
BADGES = {"match": "✅ match", "mismatch": "❌ mismatch", "not_applicable": "➖ n/a"}
INTRO = (
    "Every stored run of this classifier on one page: accuracy against sparsity and speed-up "
    "(Pareto fronts), how much the runs agree on which heads to remove, and whether each run's "
    "model with the heads physically removed computes what its mask says."
)


@dataclass(frozen=True)
class RunView:
    """What the page shows of one run (mask bool ``(n_layers, n_heads)``, True = keep)."""

    key: str
    label: str
    method: str
    weight_level: bool
    head_sparsity: float
    weight_sparsity: float | None
    accuracy: float | None
    mcc: float | None
    dense: dict[str, Any]
    evaluated_on: str
    recovered: bool
    predicted_speedup: float | None
    mask: np.ndarray


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def evaluated_on(record: RunRecord) -> str:
    """Which texts the run was evaluated on, e.g. "200 test texts" (runs on other texts are not
    strictly comparable)."""
    split = str((record.info.get("settings") or {}).get("eval_split", "test"))
    count = _number((record.metrics.get("dense") or {}).get("n_examples"))
    return f"{int(count)} {split} texts" if count is not None else f"the {split} split"


def run_view(record: RunRecord) -> RunView:
    """The page's view of a stored run: final metrics (after recovery when it had it)."""
    recovered = bool(record.metrics.get("recovered"))
    final = record.metrics.get("recovered" if recovered else "pruned") or {}
    cost = record.metrics.get("cost") or {}
    flops_dense, flops_pruned = _number(cost.get("flops_dense")), _number(cost.get("flops_pruned"))
    weight_level = record.info.get("granularity") == "weight" or bool(record.extra_tensors)
    weight_sparsity = None
    if record.extra_tensors:
        kept, total = count_kept(record.extra_tensors)
        weight_sparsity = 1.0 - kept / total if total else None
    return RunView(
        key=record.key,
        label=run_ref(record.key, record.name).label,
        method=record.method,
        weight_level=weight_level,
        head_sparsity=record.head_sparsity,
        weight_sparsity=weight_sparsity,
        accuracy=_number(final.get("accuracy")),
        mcc=_number(final.get("mcc")),
        dense=dict(record.metrics.get("dense") or {}),
        evaluated_on=evaluated_on(record),
        recovered=recovered,
        predicted_speedup=flops_dense / flops_pruned if flops_dense and flops_pruned else None,
        mask=record.mask.numpy().astype(bool),
    )


def select_runs(prepared: PreparedModel) -> list[RunRecord]:
    """Method filter and run multiselect over this classifier's runs; the chosen records."""
    store = run_store()
    summaries, problems = store.list(model_fingerprint=f"prepared:{prepared.key}")
    for problem in problems:
        st.warning(f"Run store: {problem}")
    others = len(store.list()[0]) - len(summaries)
    if others:
        st.caption(
            f"{others} stored run(s) of other classifiers are not listed: runs of different "
            "models are never mixed. Choose their model and dataset on Model & data to see them."
        )
    if not summaries:
        st.info(
            "No runs of this classifier are stored yet. Prune it on the Prune, A* search, Gates, "
            "MCAP or DeepCuts page (or with `headscope prune`), then come back."
        )
        return []
    methods = sorted({s.method for s in summaries})
    cols = st.columns([1, 3])
    chosen = cols[0].multiselect("Methods", methods, default=methods, key="compare-methods")
    listed = [s for s in summaries if s.method in chosen]
    labels = {s.key: run_ref(s.key, s.name).label for s in listed}
    digest = hashlib.sha256(json.dumps([prepared.key, chosen]).encode()).hexdigest()[:8]
    keys = cols[1].multiselect(
        f"Runs (newest first; at most {MAX_RUNS})",
        list(labels),
        default=list(labels)[:MAX_RUNS],
        format_func=labels.__getitem__,
        max_selections=MAX_RUNS,
        key=f"compare-runs-{digest}",
    )
    if not keys:
        st.info("Select at least one run (and a method that has runs) to compare.")
        return []
    records = []
    for key in keys:
        try:
            records.append(store.get(key))
        except ValueError as error:
            st.warning(f"Run {key[:8]} cannot be read and is left out: {error}")
    return records


def dense_value(views: list[RunView], metric: str) -> float | None:
    """The unpruned classifier's value on the texts most runs were evaluated on (None when the
    runs disagree about it); says so when the runs were evaluated on different texts."""
    groups = Counter(view.evaluated_on for view in views)
    main = groups.most_common(1)[0][0]
    if len(groups) > 1:
        listed = "; ".join(f"{texts}: {count} run(s)" for texts, count in groups.most_common())
        st.caption(
            f"The runs were evaluated on different texts ({listed}), so their scores are not "
            f"strictly comparable; the dashed line is the unpruned classifier on {main}."
        )
    values = {
        round(value, 9)
        for view in views
        if view.evaluated_on == main and (value := _number(view.dense.get(metric))) is not None
    }
    return values.pop() if len(values) == 1 else None


def pareto_plots(views: list[RunView], measured: Mapping[str, Mapping[str, Any]]) -> None:
    """Accuracy (or MCC) vs head sparsity and vs speed-up; weight-level runs vs weight sparsity."""
    cols = st.columns(2)
    metric = cols[0].radio(
        "Quality",
        ["accuracy", "mcc"],
        horizontal=True,
        key="compare-metric",
        format_func={"accuracy": "Accuracy", "mcc": "MCC"}.__getitem__,
    )
    if st.session_state.pop(SWITCH_TO_MEASURED, False):
        st.session_state[SPEED_KEY] = "measured"
    speed_options = ["predicted", "measured"]
    speed = cols[1].radio(
        "Speed-up",
        speed_options,
        index=1 if measured else 0,
        horizontal=True,
        format_func={"predicted": "FLOPs-predicted", "measured": "measured here"}.__getitem__,
        key=SPEED_KEY,
        help="Measure latency below to plot measured speed-ups.",
    )
    points = {
        view.key: ParetoPoint(
            label=view.label,
            method=view.method,
            key=view.key,
            head_sparsity=view.head_sparsity,
            accuracy=view.accuracy,
            mcc=view.mcc,
            recovered=view.recovered,
            latency_ms=_number((measured.get(view.key) or {}).get("latency_ms")),
            speedup=(
                _number((measured.get(view.key) or {}).get("speedup"))
                if speed == "measured"
                else view.predicted_speedup
            ),
            weight_sparsity=view.weight_sparsity,
        )
        for view in views
    }
    heads = [points[v.key] for v in views if not v.weight_level]
    weights = [points[v.key] for v in views if v.weight_level]
    dense = dense_value(views, metric)
    name = "accuracy" if metric == "accuracy" else "MCC"
    if heads:
        cols = st.columns(2)
        sparsity = build_pareto_figure(
            heads, x="head_sparsity", y=metric, dense=dense, title=f"{name} vs heads removed"
        )
        show_chart(
            sparsity,
            "pareto-sparsity",
            container=cols[0],
            width="stretch",
            key="compare-pareto-sparsity",
        )
        speed_title = f"{name} vs speed-up ({'measured' if speed == 'measured' else 'FLOPs'})"
        speedup = build_pareto_figure(heads, x="speedup", y=metric, dense=dense, title=speed_title)
        if speed == "predicted":
            speedup.update_xaxes(title="speed-up (×, FLOPs-predicted: dense FLOPs / pruned FLOPs)")
        show_chart(
            speedup,
            "pareto-speedup",
            container=cols[1],
            width="stretch",
            key="compare-pareto-speed",
        )
    if weights:
        figure = build_pareto_figure(
            weights,
            x="weight_sparsity",
            y=metric,
            dense=dense,
            title=f"{name} vs weights removed (weight-level runs)",
        )
        show_chart(figure, "pareto-weights", width="stretch", key="compare-pareto-weights")
        st.caption(
            "Weight-level runs (DeepCuts, unstructured) zero weights inside the heads; the dense "
            "kernels still multiply the zeros, so they are not faster and stay off the speed plot."
        )


def latency_work(
    keys: list[str], batch_size: int, seq_len: int, repeats: int
) -> Callable[[Progress], dict[str, Any]]:
    """Background work: time every run against its dense classifier (stored per machine)."""

    def work(progress: Progress) -> dict[str, Any]:
        def on_progress(fraction: float, message: str) -> None:
            progress.update(fraction, message)
            progress.check()

        return measure_runs(
            keys, batch_size=batch_size, seq_len=seq_len, repeats=repeats, on_progress=on_progress
        )

    return work


@st.fragment(run_every=1.0)
def job_panel(job_id: str, done_flag: str = "") -> None:
    """Progress of one of this page's background jobs; reruns the page once when it is done.

    ``done_flag``: a session-state key set to True when the job ends (read by the next run).
    """
    job = executor().get(job_id)
    if job is None:
        return
    snap = job.snapshot()
    if snap.status != "done":
        job_status(job, snap)
        return
    handled = st.session_state.setdefault("handled_jobs", set())
    run = f"{job_id}:{id(job)}"  # a repeated job reuses its id in a new Job
    if run not in handled:
        handled.add(run)
        if done_flag:
            st.session_state[done_flag] = True
        st.rerun(scope="app")


def latency_ui(keys: list[str]) -> tuple[int, int]:
    """Shape inputs and the measure button; returns the (batch, length) the page reads."""
    st.markdown("**Measured latency**")
    cols = st.columns([1, 1, 1, 2], vertical_alignment="bottom")
    batch = int(cols[0].number_input("Batch size", 1, 512, 32, key="compare-lat-batch"))
    seq_len = int(cols[1].number_input("Sequence length", 8, 512, 128, 8, key="compare-lat-seq"))
    repeats = int(cols[2].number_input("Rounds", 3, 200, 10, key="compare-lat-repeats"))
    if cols[3].button("Measure latency of the selected runs", disabled=not keys):
        payload = json.dumps([sorted(keys), batch, seq_len, repeats])
        job_id = f"{LATENCY_PREFIX}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"
        work = latency_work(keys, batch, seq_len, repeats)
        executor().submit(job_id, "latency", work, meta={"title": "Latency of the compared runs"})
        st.session_state[LATENCY_JOB] = job_id
    current = st.session_state.get(LATENCY_JOB)
    if current is not None:
        job_panel(str(current), SWITCH_TO_MEASURED)
        job = executor().get(str(current))
        snap = None if job is None else job.snapshot()
        if snap is not None and snap.status == "done":
            for key, entry in (snap.result or {}).items():
                if "error" in entry:
                    st.warning(f"Run {key[:8]} was not timed: {entry['error']}")
    return batch, seq_len


def check_work(
    prepared_key: str, keys: list[str], texts: list[str]
) -> Callable[[Progress], dict[str, str]]:
    """Background work: check the runs (verdicts go to the disk cache); returns the errors."""

    def work(progress: Progress) -> dict[str, str]:
        def on_progress(fraction: float, message: str) -> None:
            progress.update(fraction, message)
            progress.check()

        return check_stored_runs(keys, prepared_key, texts, on_progress=on_progress)[1]

    return work


def checks_ui(prepared_key: str, missing: list[str], texts: list[str]) -> None:
    """Start (once) and follow the background check of the runs without a cached verdict."""
    payload = json.dumps([prepared_key, sorted(missing)])
    job_id = f"{CHECK_PREFIX}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"
    title = f"Masked-vs-removed check of {len(missing)} run(s)"
    job = executor().get(job_id)
    work = check_work(prepared_key, missing, texts)
    if job is None:
        job = executor().submit(job_id, "consistency", work, meta={"title": title})
    snap = job.snapshot()
    if not snap.finished:
        job_panel(job_id)
        return
    if snap.status == "done":
        for key, error in (snap.result or {}).items():
            st.warning(f"Run {key[:8]} could not be checked: {error}")
    else:
        job_status(job, snap)
    if st.button("Check the unchecked runs again", key="compare-recheck"):
        executor().submit(job_id, "consistency", work, meta={"title": title})
        st.rerun()


def consistency(records: list[RunRecord], prepared: PreparedModel) -> dict[str, ConsistencyResult]:
    """The cached masked-vs-removed verdicts; the missing ones are checked in the background."""
    try:
        texts = consistency_texts(cached_dataset(current_specs()[1]))
    except (OSError, ValueError) as error:
        st.warning(f"The masked-vs-removed check needs the dataset's texts: {error}")
        return {}

    def never() -> LoadedClassifier:
        raise ValueError("a check that does not apply needs no model")

    verdicts: dict[str, ConsistencyResult] = {}
    missing = []
    for record in records:
        found = cached_result(record, prepared.key, texts)
        if found is not None:
            verdicts[record.key] = found
        elif not_applicable_reason(record, prepared_key=prepared.key) is not None:
            verdicts[record.key] = check_run(record, prepared.key, never, texts)
        else:
            missing.append(record.key)
    if missing:
        checks_ui(prepared.key, missing, texts)
    return verdicts


def runs_table(
    views: list[RunView],
    measured: Mapping[str, Mapping[str, Any]],
    verdicts: Mapping[str, ConsistencyResult],
) -> None:
    rows = []
    for view in views:
        timing = measured.get(view.key) or {}
        verdict = verdicts.get(view.key)
        badge = PENDING if verdict is None else BADGES[verdict.status]
        if verdict is not None and verdict.max_abs_diff is not None:
            badge += f" ({verdict.max_abs_diff:.1e})"
        rows.append(
            {
                "run": view.label,
                "method": view.method,
                "masked vs removed": badge,
                "heads removed": view.head_sparsity,
                "weights removed": view.weight_sparsity,
                "accuracy": view.accuracy,
                "MCC": view.mcc,
                "recovered": view.recovered,
                "predicted ×": view.predicted_speedup,
                "measured ×": _number(timing.get("speedup")),
                "latency ms": _number(timing.get("latency_ms")),
                "check details": "checking in the background"
                if verdict is None
                else verdict.reason,
            }
        )
    percent = st.column_config.NumberColumn(format="percent")
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            "heads removed": percent,
            "weights removed": percent,
            "accuracy": st.column_config.NumberColumn(format="%.4f"),
            "MCC": st.column_config.NumberColumn(format="%.4f"),
            "predicted ×": st.column_config.NumberColumn(format="%.2f×"),
            "measured ×": st.column_config.NumberColumn(format="%.2f×"),
            "latency ms": st.column_config.NumberColumn(format="%.1f"),
            "masked vs removed": st.column_config.TextColumn(
                help="Largest |Δlogit| between the gated and the physically removed model on "
                "32 test texts (✅ within 1e-4); ➖ when the check does not apply (see details)."
            ),
        },
    )
    counts = {status: 0 for status in BADGES}
    for verdict in verdicts.values():
        counts[verdict.status] += 1
    st.caption(
        f"Masked vs removed: {counts['match']} ✅ match · {counts['mismatch']} ❌ mismatch · "
        f"{counts['not_applicable']} ➖ not applicable (the reason is in 'check details'). "
        "Accuracy and MCC are after recovery fine-tuning where the run had it."
    )
    if counts["mismatch"]:
        st.error(
            "A run's model with the heads removed does not reproduce its gated model: its stored "
            "metrics and latency may not describe what the mask says. Re-run it, and report the "
            "run (`headscope compare KEY --check --json`) if it persists."
        )


def iou_view(views: list[RunView]) -> None:
    """The IoU matrix of the heads removed by the selected head-level runs."""
    st.subheader("Mask overlap")
    heads = [view for view in views if not view.weight_level]
    if len(heads) < 2:
        st.info("Select at least two head-level runs to compare which heads they remove.")
        return
    if len(heads) > MAX_IOU_RUNS:
        st.caption(f"Showing the first {MAX_IOU_RUNS} of {len(heads)} head-level runs.")
        heads = heads[:MAX_IOU_RUNS]
    matrix = mask_iou_matrix([view.mask for view in heads])
    figure = build_iou_heatmap(matrix, [view.label for view in heads])
    show_chart(figure, "head-mask-iou", key="compare-iou")
    st.caption(
        "IoU = heads removed by both / heads removed by either (1 when both remove none). "
        "Weight-level runs are left out: they zero weights, not heads."
    )


def main() -> None:
    st.title("Compare")
    st.caption(INTRO)
    prepared = require_prepared()
    if prepared is None:
        return
    records = select_runs(prepared)
    if not records:
        return
    views = [run_view(record) for record in records]
    keys = [view.key for view in views]
    batch, seq_len = (
        st.session_state.get("compare-lat-batch", 32),
        st.session_state.get("compare-lat-seq", 128),
    )
    measured = cached_latencies(keys, batch_size=int(batch), seq_len=int(seq_len))
    pareto_plots(views, measured)
    latency_ui(keys)
    st.subheader("Runs")
    runs_table(views, measured, consistency(records, prepared))
    iou_view(views)


ensure_app_navigation()
main()
