"""A* search: prune heads under a metric budget, watch the search live, replay any stored search.

The search runs as a background job through the same pipeline as every method (so its result is a
stored run like any other); the page draws the latest iteration while it runs and replays a stored
trace iteration by iteration afterwards (Parnami et al.'s Figure 8 panels), next to random pruning
under the same budget (their Figures 9 and 10).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from cache.run_store import RunRecord
from pages.support.common import (
    current_specs,
    ensure_app_navigation,
    job_status,
    require_prepared,
    run_store,
    submit_run,
    tracked_jobs,
)
from pruning.methods.base import get_method
from pruning.pipeline import RunRequest
from viz.search import (
    build_cost_chart,
    build_random_vs_search,
    build_search_mask,
    build_search_progress,
    parse_search_trace,
    search_iterations,
)

SEARCH_METHODS = {
    "astar": "A* search",
    "local_greedy": "Local greedy (baseline)",
    "global_heads": "Global head index (baseline)",
    "random_budget": "Random under the budget (baseline)",
}
METRICS = {"accuracy": "Accuracy", "mcc": "MCC", "f1": "Macro-F1"}
SESSION_JOBS = "search_jobs"


def settings_form() -> RunRequest | None:
    """The search settings; returns a request when Run is pressed (None otherwise or on error)."""
    model_spec, data_spec = current_specs()
    with st.form("search-form"):
        method = st.selectbox(
            "Algorithm", list(SEARCH_METHODS), format_func=SEARCH_METHODS.__getitem__
        )
        cols = st.columns(2)
        budget = cols[0].number_input(
            "Budget (metric points)",
            min_value=0.0,
            max_value=100.0,
            value=1.0,
            step=0.25,
            help="How much of the metric the pruned model may lose, in points (1.0 = one "
            "accuracy point on the evaluation texts).",
        )
        metric = cols[1].selectbox("Metric", list(METRICS), format_func=METRICS.__getitem__)
        cols = st.columns(2)
        split = cols[0].selectbox(
            "Search on",
            ["validation", "train"],
            help="The split whose texts the search evaluates every candidate mask on; the "
            "stored run is then evaluated on the test split.",
        )
        examples = cols[1].number_input(
            "Evaluation texts",
            min_value=16,
            max_value=20_000,
            value=256,
            step=64,
            help="More texts give steadier costs; every candidate costs one evaluation over "
            "them. 256 keeps an A* run on the default model to minutes on a laptop CPU.",
        )
        cols = st.columns(2)
        min_heads = cols[0].number_input(
            "Minimum heads per layer", min_value=0, max_value=64, value=0, step=1
        )
        trials = cols[1].number_input(
            "Random trials",
            min_value=1,
            max_value=1000,
            value=20,
            step=5,
            help="Only for random pruning: independent seeded trials.",
        )
        seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1)
        name = st.text_input("Run name", value="", placeholder="optional label")
        submitted = st.form_submit_button("Run search", type="primary")
    if not submitted:
        return None
    config: dict[str, Any] = {
        "budget": float(budget),
        "metric": metric,
        "min_heads_per_layer": int(min_heads),
    }
    if method == "random_budget":
        config["trials"] = int(trials)
    try:
        request = RunRequest(
            method=method,
            config=config,
            model=model_spec,
            data=data_spec,
            seed=int(seed),
            score_split=split,
            score_examples=int(examples),
            name=name.strip() or f"{SEARCH_METHODS[method]} · budget {budget:g}",
        )
        request.method_config()
    except ValueError as error:
        st.error(str(error))
        return None
    return request


@st.fragment(run_every=1.0)
def live_panel() -> None:
    """Progress of search jobs and, while one runs, its latest iteration."""
    jobs = tracked_jobs("search", SESSION_JOBS)
    if not jobs:
        st.info(
            "Set the budget and press Run search: progress, the costs of the current iteration "
            "and the mask appear here while it runs; the stored search replays below."
        )
    for job, snap in jobs:
        job_status(job, snap)
        if snap.status != "running":
            continue
        events = [e for e in snap.events if isinstance(e, dict)]
        try:
            trace = parse_search_trace(events)
        except ValueError:
            continue
        if trace.iterations:
            latest = trace.iterations[-1]["iteration"]
            st.plotly_chart(
                build_cost_chart(events, latest), width="stretch", key=f"live-cost-{job.job_id}"
            )
            st.plotly_chart(
                build_search_mask(events, latest), width="stretch", key=f"live-mask-{job.job_id}"
            )


def stored_searches() -> list[Any]:
    summaries, _ = run_store().list()
    return [s for s in summaries if s.method in SEARCH_METHODS]


def random_trials_for(record: RunRecord) -> list[dict[str, Any]]:
    """Trials of stored random-under-budget runs on the same classifier, budget and metric."""
    trials: list[dict[str, Any]] = []
    summaries, _ = run_store().list(method="random_budget")
    for summary in summaries:
        if summary.model_fingerprint != record.model.get("fingerprint"):
            continue
        other = run_store().get(summary.key)
        same = all(
            other.config.get(k) == record.config.get(k) for k in ("budget", "metric")
        ) and other.info.get("settings", {}).get("score_examples") == record.info.get(
            "settings", {}
        ).get("score_examples")
        if same:
            done = parse_search_trace(other.trace).done or {}
            trials.extend(done.get("trials", []))
    return trials


def replay(record: RunRecord) -> None:
    """Replay a stored search: iteration slider, mask, costs, progress, random comparison."""
    try:
        trace = parse_search_trace(record.trace)
    except ValueError as error:
        st.error(f"This run has no search trace to replay: {error}")
        return
    info = record.info.get("method_info", {})
    cols = st.columns(5)
    cols[0].metric("Heads pruned", f"{int((~record.mask).sum())} / {record.mask.numel()}")
    cols[1].metric("Evaluations", f"{info.get('evaluations', '–')}")
    baseline, final = info.get("baseline"), info.get("final_metric")
    if baseline is not None and final is not None:
        cols[2].metric("Search metric", f"{final:.2f}", f"{final - baseline:+.2f} points")
    if info.get("budget_used") is not None:
        cols[3].metric("Budget used", f"{info['budget_used']:.2f} / {record.config['budget']:g}")
    pruned = record.metrics.get("pruned", {})
    dense = record.metrics.get("dense", {})
    if "accuracy" in pruned and "accuracy" in dense:
        cols[4].metric(
            "Test accuracy",
            f"{pruned['accuracy']:.4f}",
            f"{pruned['accuracy'] - dense['accuracy']:+.4f}",
        )
    if record.method == "random_budget":
        trials = (trace.done or {}).get("trials", [])
        st.plotly_chart(build_random_vs_search(trials, {}), width="stretch")
        return
    iterations = search_iterations(record.trace)
    if not iterations:
        st.info("The search stopped before its first iteration: nothing to replay.")
        return
    if len(iterations) > 1:
        iteration = st.select_slider(
            "Iteration", options=iterations, value=iterations[-1], key=f"replay-{record.key}"
        )
    else:
        iteration = iterations[0]
    left, right = st.columns(2)
    left.plotly_chart(build_search_mask(record.trace, iteration), width="stretch")
    right.plotly_chart(build_cost_chart(record.trace, iteration), width="stretch")
    st.plotly_chart(build_search_progress(record.trace, iteration), width="stretch")
    trials = random_trials_for(record)
    heads = int((~record.mask).sum())
    if trials:
        label = SEARCH_METHODS.get(record.method, record.method)
        st.plotly_chart(build_random_vs_search(trials, {label: heads}), width="stretch")
    else:
        st.caption(
            "Run 'Random under the budget' with the same budget, metric and evaluation texts to "
            "see where random pruning lands next to this search."
        )


def main() -> None:
    st.title("A* search")
    method = get_method("astar")
    st.caption(
        f"{method.paper} · prunes the cheapest head while its metric cost fits the budget and "
        "drops from the search the heads whose estimated cost no longer fits."
    )
    prepared = require_prepared()
    if prepared is None:
        return
    settings, live = st.columns([2, 3], gap="large")
    with settings:
        request = settings_form()
    if request is not None:
        submit_run(request, prefix="search", session_key=SESSION_JOBS)
    with live:
        live_panel()

    st.subheader("Replay a stored search")
    searches = stored_searches()
    if not searches:
        st.info("No search stored yet: run one above.")
        return
    keys = [s.key for s in searches]
    labels = {s.key: f"{s.name} · {s.key[:8]} · {s.created}" for s in searches}
    last = st.session_state.get(f"last_run_{SESSION_JOBS}")
    searches_first = [s.key for s in searches if s.method != "random_budget"] or keys
    default = last if last in keys else searches_first[0]
    chosen = st.selectbox("Search run", keys, index=keys.index(default), format_func=labels.get)
    try:
        record = run_store().get(chosen)
    except ValueError as error:
        st.error(f"This run cannot be read: {error}")
        return
    replay(record)
    if st.button("Open in Runs"):
        st.session_state["runs-filter"] = record.key
        st.switch_page("pages/runs.py")


ensure_app_navigation()
main()
