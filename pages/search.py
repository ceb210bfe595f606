"""A* search: prune heads under a metric budget, watch the search live, replay any stored search.

The search runs as a background job through the same pipeline as every method (so its result is a
stored run like any other); the page draws the latest iteration while it runs and replays a stored
trace iteration by iteration afterwards (Parnami et al.'s Figure 8 panels), next to random pruning
under the same budget (their Figures 9 and 10). A search checkpoints after every iteration: one
cut off by a restart, a killed worker or a cancel is listed with a Resume button that continues it
from its last finished iteration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import streamlit as st

from cache.checkpoints import RunCheckpoints
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
from pages.support.figures import show_chart
from pruning.methods.base import get_method
from pruning.methods.search_core import expected_evaluations
from pruning.pipeline import RunRequest
from viz.search import (
    build_cost_chart,
    build_random_vs_search,
    build_search_mask,
    build_search_progress,
    parse_search_trace,
    search_iterations,
)
from viz.search_figure8 import build_sorted_costs

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
            max_value=100_000,
            value=256,
            step=64,
            help="More texts give steadier costs: at 256 one text is 0.39 accuracy points; the "
            "paper searches on the whole dev split (1,275 texts on the default data, 0.08 "
            "points each: enter 1275 or more). Every candidate costs one evaluation over them: "
            "256 keeps an A* run on the default model to minutes on a laptop CPU, the whole "
            "split to about an hour.",
        )
        cols = st.columns(2)
        min_heads = cols[0].number_input(
            "Minimum heads per layer", min_value=0, max_value=64, value=0, step=1
        )
        trials = cols[1].number_input(
            "Random trials",
            min_value=1,
            max_value=1000,
            value=100,
            step=5,
            help="Only for random pruning: independent seeded trials (the paper runs 100).",
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


def prepared_heads(prepared: Any) -> int:
    """Attention heads of the prepared classifier, from its config.json (0 when unreadable)."""
    try:
        config = json.loads((Path(prepared.path) / "config.json").read_text(encoding="utf-8"))
        layers = config.get("num_hidden_layers") or config.get("n_layers") or 0
        heads = config.get("num_attention_heads") or config.get("n_heads") or 0
        return int(layers) * int(heads)
    except (OSError, ValueError, TypeError):
        return 0


def measured_rate() -> tuple[float, str] | None:
    """Seconds per evaluation per text of the newest stored search, and its key (None: none)."""
    for summary in stored_searches():
        record = run_store().get(summary.key)
        info = record.info.get("method_info", {})
        seconds = record.info.get("method_seconds")
        texts = record.info.get("settings", {}).get("score_examples")
        if seconds and info.get("evaluations") and texts:
            return float(seconds) / int(info["evaluations"]) / int(texts), summary.key
    return None


def expected_time_note(n_heads: int) -> None:
    """How long A* and its baselines take here, before a search starts (from a stored run)."""
    if n_heads < 1:
        return
    rate = measured_rate()
    lines = []
    for budget in (1.0, 2.0, 3.0):
        typical, most = expected_evaluations("astar", n_heads, budget)
        lines.append(f"budget {budget:g}: about {typical:,} evaluations (at most {most:,})")
    where = (
        f"At {rate[0] * 1000:.1f} ms per evaluation per text, measured on this machine by run "
        f"{rate[1][:8]}, 256 texts take about {rate[0] * 256:.1f} s an evaluation and 1,275 "
        f"about {rate[0] * 1275:.1f} s."
        if rate is not None
        else "No search is stored yet to time an evaluation on this machine."
    )
    st.caption(
        f"Expected work for A* on {n_heads} heads (from the paper's Table 3): "
        + "; ".join(lines)
        + f". {where} Local greedy needs up to the 'at most' count; the search states its own "
        "estimate once it has timed its first evaluation."
    )


def unfinished_searches() -> list[tuple[str, RunRequest, dict[str, Any]]]:
    """Searches with a checkpoint and a readable request: (run key, request, progress)."""
    found = []
    checkpoints = RunCheckpoints()
    for key in checkpoints.run_keys():
        state = checkpoints.load(key)
        if state is None:
            continue
        try:
            request = RunRequest.from_dict(checkpoints.meta(key).get("request"))
        except ValueError:
            continue
        if request.method in SEARCH_METHODS and not run_store().exists(key):
            progress = {
                "iterations": len(state.get("iterations", [])),
                "trials": len(state.get("trials", [])),
            }
            found.append((key, request, progress))
    return found


def resume_panel() -> None:
    """Unfinished searches: Resume continues from the last finished iteration, Discard forgets."""
    unfinished = unfinished_searches()
    if not unfinished:
        return
    st.warning(
        "These searches were cut off (restart, killed worker or cancel); their finished "
        "iterations are saved. Resume continues where each stopped, with the same result as an "
        "uninterrupted run."
    )
    for key, request, progress in unfinished:
        done = (
            f"{progress['trials']} trials done"
            if request.method == "random_budget"
            else f"{progress['iterations']} iterations done"
        )
        cols = st.columns([4, 1, 1])
        cols[0].markdown(f"**{request.name or request.method}** · {key[:8]} · {done}")
        if cols[1].button("Resume", key=f"resume-{key}"):
            submit_run(request, prefix="search", session_key=SESSION_JOBS)
            st.rerun()
        if cols[2].button("Discard", key=f"discard-{key}"):
            RunCheckpoints().delete(key)
            st.rerun()


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
            show_chart(
                build_cost_chart(events, latest),
                "search-costs-live",
                width="stretch",
                key=f"live-cost-{job.job_id}",
            )
            show_chart(
                build_search_mask(events, latest),
                "search-mask-live",
                width="stretch",
                key=f"live-mask-{job.job_id}",
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
        show_chart(build_random_vs_search(trials, {}), "random-pruning", width="stretch")
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
    # The paper's Figure 8: (a) the mask, (b) the sorted costs of the pruned and eliminated
    # heads, (c) metric, budget used and heads searched per iteration; then this iteration's
    # candidates.
    left, right = st.columns(2)
    show_chart(
        build_search_mask(record.trace, iteration),
        f"search-mask-iteration-{iteration}",
        container=left,
        width="stretch",
    )
    show_chart(
        build_sorted_costs(record.trace, iteration),
        f"search-sorted-costs-iteration-{iteration}",
        container=right,
        width="stretch",
    )
    show_chart(
        build_search_progress(record.trace, iteration),
        f"search-progress-iteration-{iteration}",
        width="stretch",
    )
    show_chart(
        build_cost_chart(record.trace, iteration),
        f"search-candidates-iteration-{iteration}",
        width="stretch",
    )
    trials = random_trials_for(record)
    heads = int((~record.mask).sum())
    if trials:
        label = SEARCH_METHODS.get(record.method, record.method)
        show_chart(
            build_random_vs_search(trials, {label: heads}), "random-vs-search", width="stretch"
        )
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
    resume_panel()
    settings, live = st.columns([2, 3], gap="large")
    with settings:
        request = settings_form()
        expected_time_note(prepared_heads(prepared))
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
