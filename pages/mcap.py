"""MCAP: train the meta-learning controller that picks the heads to keep, watch its episodes,
replay stored runs and compare them with the paper's Table I baselines.

Runs go through the same pipeline as every method (a background job, a stored run). With the
paper's protocol the heads are pruned before fine-tuning: the pruned model is then fine-tuned
with the prepared classifier's training config and compared with that (unpruned) classifier.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, Literal

import streamlit as st

from cache.model_store import PreparedModel
from cache.run_store import RunRecord
from pages.support.common import (
    RunSettings,
    config_form,
    current_specs,
    ensure_app_navigation,
    executor,
    job_status,
    model_store,
    require_prepared,
    run_settings_ui,
    run_store,
    submit_run,
    tracked_jobs,
)
from pages.support.figures import show_chart
from pruning.cost import interleaved_latency
from pruning.jobs import Progress
from pruning.methods.base import PruningMethod, get_method
from pruning.models import pick_device
from pruning.pipeline import RunRequest
from viz.mcap import (
    build_episode_curves,
    build_final_importance,
    build_head_patterns,
    build_importance_heatmap,
    build_keep_map,
    build_pattern_confusion,
    build_pattern_examples,
    build_table1_chart,
    episode_rows,
    final_event,
    pattern_event,
    table1_frame,
    table1_rows,
)

Protocol = Literal["before", "after"]
SESSION_JOBS = "mcap_jobs"
LATENCY_PREFIX = "mcaplatency"  # not "mcap-": tracked_jobs would take it for a pruning run
LATENCY_KEY = "mcap_latency"  # session state: measured latencies by prepared classifier
PROTOCOLS = {"before": "before fine-tuning (paper)", "after": "after fine-tuning"}
HEAD_BASELINES = {
    "random": "Random heads",
    "entropy": "Attention entropy",
    "sep": "[SEP] attention",
}
VALUES = {"keep_prob": "controller keep probability", "cnn_score": "CNN score (delta)"}
INTRO = (
    "**MCAP** (Rajapaksha and Crespi, *Explainable Attention Pruning: A Meta-learning-based "
    "Approach*, IEEE TAI 2024) first trains a CNN to recognise five attention patterns (vertical, "
    "diagonal, vertical+diagonal, block, heterogeneous) and then a meta-controller that samples "
    "which heads to keep, episode by episode, under a budget; the CNN scores each head (delta = "
    "1 − P(vertical)) for the controller and scores the pruned model in its loss. The paper "
    "prunes the pre-trained encoder **before** fine-tuning and reports in Table I that, with 20% "
    "of the heads removed, MCAP keeps the MCC of the unpruned fine-tuned model better than "
    "head-level (random, entropy, [SEP]) and weight-level (IMP, L1, random) baselines at the "
    "same share."
)


def make_request(
    method: str, config: dict[str, Any], settings: RunSettings, protocol: Protocol, name: str
) -> RunRequest:
    """A validated request (raises ValueError with what to fix)."""
    model_spec, data_spec = current_specs()
    request = RunRequest(
        method=method,
        config=config,
        model=model_spec,
        data=data_spec,
        seed=settings.seed,
        score_examples=settings.examples,
        eval_split=settings.eval_split,
        recovery_steps=settings.recovery_steps,
        protocol=protocol,
        name=name,
    )
    request.method_config()
    return request


def heads_text(config: dict[str, Any]) -> str:
    """The head target of a config as a run name says it: "20% heads" or "14 heads"."""
    if config.get("n_prune") is not None:
        return f"{config['n_prune']} heads"
    return f"{float(config.get('sparsity') or 0.0):.0%} heads"


def baseline_requests(
    config: dict[str, Any], settings: RunSettings, protocol: Protocol
) -> list[RunRequest]:
    """The six Table I baselines at MCAP's share: three head-level, three weight-level."""
    share = float(config.get("sparsity") or 0.0)
    targets = ("sparsity", "n_prune", "min_heads_per_layer")
    head_target = {k: config[k] for k in targets if k in config}
    planned: list[tuple[str, dict[str, Any], str]] = [
        (name, head_target, f"{title} · {heads_text(config)}")
        for name, title in HEAD_BASELINES.items()
    ]
    try:
        from pruning.methods.unstructured import TABLE1_PRESETS
    except ImportError:
        st.warning("The weight-level baselines (IMP, L1, random weights) are not installed.")
    else:
        planned += [
            ("unstructured", {**preset, "sparsity": share}, f"{title} · {share:.0%} weights")
            for title, preset in TABLE1_PRESETS.items()
        ]
    requests = []
    for method, method_config, name in planned:
        try:
            requests.append(make_request(method, method_config, settings, protocol, name))
        except ValueError as error:
            st.warning(f"{name} is left out: {error}")
    return requests


def settings_form(method: type[PruningMethod], protocol: Protocol) -> list[RunRequest]:
    """The MCAP settings; the requests of the button pressed (else [])."""
    with st.form("mcap-form"):
        with st.expander("MCAP settings", expanded=True):
            config = config_form(method.config_class, key="mcap-config")
        settings = run_settings_ui(
            "Scoring texts",
            "Texts the head-level baselines score heads on (MCAP trains on the "
            "training split: see Training instances).",
        )
        st.caption(
            "The baselines remove the same share as MCAP: heads for random, entropy and [SEP]; "
            "prunable weights for IMP, L1 and random weights (the head sparsity). "
            + ("Recovery steps apply to 'after fine-tuning' only." if protocol == "before" else "")
        )
        label = st.text_input("Run name", value="", placeholder="optional label").strip()
        cols = st.columns(2)
        run_mcap = cols[0].form_submit_button("Run MCAP", type="primary")
        run_baselines = cols[1].form_submit_button("Run the Table I baselines")
    if not (run_mcap or run_baselines):
        return []
    if protocol == "before" and settings.recovery_steps:
        st.error(
            "Set Recovery fine-tuning steps to 0: before fine-tuning, the pruned model is "
            "fine-tuned on the whole task anyway. Or pick 'after fine-tuning'."
        )
        return []
    if run_baselines:
        return baseline_requests(config, settings, protocol)
    name = label or f"MCAP · {heads_text(config)}"
    try:
        return [make_request("mcap", config, settings, protocol, name)]
    except ValueError as error:
        st.error(f"MCAP: {error}")
        return []


@st.fragment(run_every=1.0)
def live_panel() -> None:
    """Queued and running jobs; while MCAP trains, its curves and keep probabilities."""
    jobs = tracked_jobs("mcap", SESSION_JOBS)
    if not jobs:
        st.info(
            "Press Run MCAP: the losses of every episode and the controller's keep probability "
            "per head appear here while it trains; stored runs replay below."
        )
    for job, snap in jobs:
        job_status(job, snap)
        if snap.status != "running":
            continue
        try:
            events = [e for e in snap.events if isinstance(e, dict)]
            if not episode_rows(events):
                continue  # loading, or the first episode still runs
            show_chart(
                build_episode_curves(events),
                "mcap-episodes-live",
                width="stretch",
                key=f"live-curves-{job.job_id}",
            )
            show_chart(
                build_keep_map(events),
                "mcap-keep-map-live",
                width="stretch",
                key=f"live-keep-{job.job_id}",
            )
        except ValueError as error:
            st.warning(f"The live view cannot draw this job's events ({error}).")


def replay(record: RunRecord) -> None:
    """One stored MCAP run: numbers, curves, importance over episodes, replay, final map."""
    try:
        rows = episode_rows(record.trace)
        final = final_event(record.trace) or {}
    except ValueError as error:
        st.error(f"This run's trace cannot be replayed: {error} Run MCAP again.")
        return
    if not rows:
        st.error("This run recorded no episodes, so there is nothing to replay; run MCAP again.")
        return
    cols = st.columns(4)
    cols[0].metric("Heads removed", f"{int((~record.mask).sum())} / {record.mask.numel()}")
    cols[1].metric("Episodes", f"{len(rows)}")
    cols[2].metric("Controller updates", f"{int(rows[-1].get('updates', 0))}")
    split = record.info.get("settings", {}).get("eval_split", "test")
    pruned = record.metrics.get("pruned", {}).get("mcc")
    dense = record.metrics.get("dense", {}).get("mcc")
    if pruned is not None:
        delta = None if dense is None else f"{pruned - dense:+.4f} vs unpruned {dense:.4f}"
        cols[3].metric(f"{split.title()} MCC", f"{pruned:.4f}", delta)
    show_chart(build_episode_curves(record.trace), "mcap-episodes", width="stretch")
    episodes = [int(r["episode"]) for r in rows]
    episode = episodes[-1]
    if len(episodes) > 1:
        episode = st.select_slider(
            "Episode", options=episodes, value=episodes[-1], key=f"mcap-episode-{record.key}"
        )
    value = st.radio(
        "Colour", list(VALUES), format_func=VALUES.__getitem__, horizontal=True, key="mcap-value"
    )
    show_chart(
        build_importance_heatmap(record.trace, value=value, episode=episode),
        f"mcap-{value}-episode-{episode}",
        width="stretch",
    )
    left, right = st.columns(2)
    show_chart(
        build_keep_map(record.trace, episode, value=value),
        f"mcap-keep-map-episode-{episode}",
        container=left,
        width="stretch",
    )
    scores = final.get("scores", None if record.scores is None else record.scores.tolist())
    mask = final.get("mask", record.mask.tolist())
    show_chart(
        build_final_importance(scores, mask),
        "mcap-final-importance",
        container=right,
        width="stretch",
    )
    patterns_panel(record)


def patterns_panel(record: RunRecord) -> None:
    """The pattern CNN of a run: held-out accuracy, confusion matrix, examples, head patterns."""
    try:
        patterns = pattern_event(record.trace)
    except ValueError:
        patterns = None
    if patterns is None:
        st.caption(
            "This run has no pattern CNN (an older run, or the legacy CNN target): nothing to "
            "show about the five attention patterns."
        )
        return
    st.markdown("**Pattern CNN** (trained before the episodes, then frozen)")
    classes = patterns.get("classes")
    by_source = patterns.get("accuracy_by_source") or {}
    cols = st.columns(3)
    cols[0].metric("Pattern CNN accuracy (held out)", f"{float(patterns.get('accuracy', 0)):.1%}")
    sources = (("generated", "generated maps"), ("model", "model's maps (unseen heads)"))
    for col, (source, label) in zip(cols[1:], sources, strict=True):
        value = by_source.get(source)
        col.metric(f"… on {label}", "—" if value is None else f"{float(value):.1%}")
    st.caption(
        f"Labelled maps: {sum(map(sum, (patterns.get('train_counts') or {}).values()))} trained "
        f"on, {sum(map(sum, patterns.get('confusion') or []))} held out; "
        f"{patterns.get('labelled_model_maps', 0)} of the model's {patterns.get('model_maps', 0)} "
        f"maps on {patterns.get('texts', 0)} texts fit a labelling rule."
    )
    try:
        left, right = st.columns(2)
        show_chart(
            build_pattern_confusion(patterns.get("confusion"), classes),
            "pattern-cnn-confusion",
            container=left,
            width="stretch",
        )
        show_chart(
            build_head_patterns(
                patterns.get("head_patterns"), classes or [], patterns.get("head_delta")
            ),
            "head-patterns",
            container=right,
            width="stretch",
        )
        show_chart(
            build_pattern_examples(patterns.get("examples"), classes),
            "pattern-examples",
            width="stretch",
        )
    except ValueError as error:
        st.warning(f"The pattern CNN's figures cannot be drawn ({error}).")


@st.cache_data(max_entries=256, show_spinner=False)
def table_entry(key: str) -> dict[str, Any]:
    """What Table I needs of a stored run (its key fixes its content); no trace, no tensors."""
    record = run_store().get(key)
    fields = ("key", "method", "config", "seed", "metrics", "info", "has_model")
    return {name: getattr(record, name) for name in fields}


def table_runs(summaries: list[Any]) -> list[SimpleNamespace]:
    """The "before" runs, newest first, the newest of each method, config and seed (several
    seeds of one method show its spread)."""
    entries, seen = [], set()
    for summary in summaries:
        try:
            entry = SimpleNamespace(**table_entry(summary.key))
        except (OSError, ValueError):
            continue  # unreadable runs are reported on the Runs page
        identity = (
            entry.method,
            json.dumps(entry.config, sort_keys=True, default=str),
            entry.seed,
        )
        if entry.info.get("settings", {}).get("protocol") != "before" or identity in seen:
            continue
        seen.add(identity)
        entries.append(entry)
    return entries


def table_order(run: SimpleNamespace) -> tuple[bool, bool, str, int]:
    """Table I's row order, as in the paper: MCAP, the head baselines, the weight baselines;
    then by name and seed (the store lists newest first, which would reorder rows per run)."""
    weights = run.info.get("settings", {}).get("granularity", "head") == "weight" or (
        run.method in ("unstructured", "deepcuts")
    )
    return (run.method != "mcap", weights, str(run.info.get("name", "")), int(run.seed))


def latency_work(
    prepared_key: str, keys: list[str], batch_size: int, seq_len: int, repeats: int
) -> Callable[[Progress], dict[str, Any]]:
    """Background work: time the unpruned classifier and every run's model, interleaved."""

    def work(progress: Progress) -> dict[str, Any]:
        device = pick_device()
        progress.update(0.0, "loading the unpruned classifier")
        models = {"dense": model_store().resolve(prepared_key).load(device=device).model}
        skipped = {}
        for number, key in enumerate(keys, start=1):
            progress.check()
            try:
                models[key] = run_store().load_model(key, device=device).model
            except (ValueError, OSError) as error:
                skipped[key] = str(error)
            progress.update(0.2 * number / len(keys), f"loaded {number} of {len(keys)} models")
        shape = {"batch_size": batch_size, "seq_len": seq_len}

        def on_round(done: int, total: int) -> None:
            progress.update(0.2 + 0.8 * done / total, f"round {done} of {total}")
            progress.check()

        results = interleaved_latency(
            list(models.values()), **shape, repeats=repeats, warmup=2, on_round=on_round
        )
        summary = {
            name: {"median_ms": r.median_ms, "p10_ms": r.p10_ms, "p90_ms": r.p90_ms}
            for name, r in zip(models, results, strict=True)
        }
        dense = summary.pop("dense")
        return {"dense": dense, "runs": summary, "skipped": skipped, "device": str(device)} | shape

    return work


@st.fragment(run_every=1.0)
def latency_panel(job_id: str, prepared_key: str) -> None:
    """Progress of a latency job; keeps its result in the session and reruns once when done."""
    job = executor().get(job_id)
    if job is None:
        return
    snap = job.snapshot()
    if snap.status != "done":
        job_status(job, snap)
        return
    results = st.session_state.setdefault(LATENCY_KEY, {})
    run = f"{job_id}:{id(job)}"  # a repeated measurement reuses the id in a new Job
    if results.get(prepared_key, {}).get("job") != run:
        results[prepared_key] = {**snap.result, "job": run}
        st.rerun(scope="app")


def latency_ui(prepared: PreparedModel, keys: list[str]) -> None:
    cols = st.columns([1, 1, 1, 2], vertical_alignment="bottom")
    batch = cols[0].number_input("Batch size", 1, 512, 32, key="mcap-lat-batch")
    seq_len = cols[1].number_input("Sequence length", 8, 512, 128, step=8, key="mcap-lat-seq")
    repeats = cols[2].number_input("Rounds", 3, 200, 20, key="mcap-lat-repeats")
    if cols[3].button("Measure latency", disabled=not keys):
        payload = json.dumps([prepared.key, keys, batch, seq_len, repeats])
        job_id = f"{LATENCY_PREFIX}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"
        work = latency_work(prepared.key, keys, int(batch), int(seq_len), int(repeats))
        executor().submit(job_id, "latency", work, meta={"title": "Latency of the Table I models"})
        st.session_state["mcap_latency_job"] = job_id
    job_id = st.session_state.get("mcap_latency_job")
    if job_id is not None:
        latency_panel(job_id, prepared.key)


def table1(prepared: PreparedModel, summaries: list[Any]) -> None:
    """Table I from the stored runs pruned before fine-tuning, with the unpruned row first."""
    st.subheader("Table I: pruned before fine-tuning, against the unpruned classifier")
    runs = table_runs(summaries)
    if not runs:
        st.info(
            "No run pruned before fine-tuning is stored for this classifier yet: run MCAP and "
            "the Table I baselines above with 'before fine-tuning (paper)'."
        )
        return
    shares = sorted({float(r.config.get("sparsity", 0.0)) for r in runs})
    cols = st.columns(2)
    share = cols[0].selectbox(
        "Target share", [None, *shares], format_func=lambda s: "all" if s is None else f"{s:.0%}"
    )
    splits = sorted({r.info.get("settings", {}).get("eval_split", "test") for r in runs})
    split = cols[1].selectbox("Evaluated on", splits) if len(splits) > 1 else splits[0]
    runs = [
        r
        for r in runs
        if (share is None or float(r.config.get("sparsity", 0.0)) == share)
        and r.info.get("settings", {}).get("eval_split", "test") == split
    ]
    newest = runs[0]
    measured = st.session_state.get(LATENCY_KEY, {}).get(prepared.key, {})
    stored = next((r.metrics["latency"] for r in runs if r.metrics.get("latency")), None)
    dense_latency = measured.get("dense") or (stored or {}).get("dense_ms")
    try:
        rows = table1_rows(
            sorted(runs, key=table_order),
            newest.metrics.get("dense") or prepared.metrics.get(split, {}),
            newest.metrics.get("cost", {}),
            dense_latency,
            latencies=measured.get("runs"),
        )
    except (TypeError, ValueError, KeyError) as error:
        st.error(f"These runs cannot be tabulated ({error}); run them again.")
        return
    st.dataframe(table1_frame(rows), hide_index=True, width="stretch")
    show_chart(build_table1_chart(rows), "mcap-table1", width="stretch")
    if measured:
        st.caption(
            f"Latency: median of {measured.get('device', '')} forwards of a batch of "
            f"{measured.get('batch_size')} × {measured.get('seq_len')} tokens, models interleaved "
            "round by round; p10–p90 in brackets."
        )
        for key, reason in measured.get("skipped", {}).items():
            st.warning(f"Run {key[:8]} was not timed: {reason}")
    latency_ui(prepared, [r.key for r in runs])


def main() -> None:
    st.title("MCAP")
    st.caption(INTRO)
    prepared = require_prepared()
    if prepared is None:
        return
    settings, live = st.columns([2, 3], gap="large")
    with settings:
        try:
            method = get_method("mcap")
        except ValueError:
            st.error(
                "The MCAP method is not installed (no method is registered as 'mcap'). Update "
                "HeadScope; stored runs still replay below."
            )
        else:
            protocol = st.radio(
                "Prune", list(PROTOCOLS), format_func=PROTOCOLS.__getitem__, key="mcap-protocol"
            )
            for request in settings_form(method, protocol):
                submit_run(request, prefix="mcap", session_key=SESSION_JOBS)
    with live:
        live_panel()

    summaries, _ = run_store().list(model_fingerprint=f"prepared:{prepared.key}")
    st.subheader("Replay a stored MCAP run")
    runs = [s for s in summaries if s.method == "mcap"]
    if not runs:
        st.info("No MCAP run of this classifier is stored yet: run one above.")
    else:
        keys = [s.key for s in runs]
        labels = {s.key: f"{s.name} · {s.key[:8]} · {s.created}" for s in runs}
        last = st.session_state.get(f"last_run_{SESSION_JOBS}")
        index = keys.index(last) if last in keys else 0
        chosen = st.selectbox("MCAP run", keys, index=index, format_func=labels.get)
        try:
            replay(run_store().get(chosen))
        except ValueError as error:
            st.error(f"This run cannot be read: {error} Delete it on the Runs page and rerun.")
    table1(prepared, summaries)


ensure_app_navigation()
main()
