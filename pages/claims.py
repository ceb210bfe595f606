"""Paper claims: does each paper's headline result hold on the current prepared classifier?

One card per claim (A* vs random, AutoAttention vs HISP and random, MCAP vs random and entropy,
DeepCuts vs LayerMagWeight, HISP vs random): the paper's words and source, the protocol, our
numbers over the seeds, the verdict of the shared rules (:mod:`pruning.claim_rules`), a small
figure (:mod:`viz.claims`) and links to the runs. The rows come from the run store
(:mod:`pruning.claims_live`); the missing ones are listed with an estimated time and queued as one
job. Run keys are content-based, so a cancelled or interrupted job resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pandas as pd
import streamlit as st

from cache.model_store import PreparedModel
from pages.support.common import (
    cached_dataset,
    ensure_app_navigation,
    job_status,
    model_store,
    require_prepared,
    run_store,
    submit_runs,
    tracked_jobs,
)
from pages.support.figures import show_chart
from pruning.bench_quality import PlannedRun
from pruning.claim_rules import DOES_NOT_HOLD, HOLDS, UNCLEAR
from pruning.claims_estimate import ROUGH, estimate_seconds, stored_timings
from pruning.claims_live import SCALES, claim_plan, live_claims, prepared_specs, stored_rows
from pruning.report import build_report
from viz.claims import build_claim_figure

PREFIX = "claims"
SESSION_JOBS = "claims_jobs"
MAX_COMPARE = 40  # the Compare page's own limit
SCALE_LABELS = {
    "paper": "Paper scale (the papers' settings; can take hours on a CPU)",
    "quick": "Quick scale (minutes; too small to judge any paper)",
}
BADGES: dict[str | None, tuple[str, str, str]] = {
    HOLDS: ("holds", "green", ":material/check_circle:"),
    UNCLEAR: ("not distinguishable", "gray", ":material/help:"),
    DOES_NOT_HOLD: ("does not hold", "red", ":material/cancel:"),
    None: ("not measured", "blue", ":material/hourglass_empty:"),
}
# Model labels and data descriptions come from the user (paths, hub ids): shown literally.
MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")
INTRO = (
    "Does a published pruning result hold on **your** classifier and data? Each card reruns one "
    "paper's headline comparison on the prepared classifier of the chosen model and dataset, "
    "under one protocol for every method, and judges it with the same rules as `headscope bench "
    "quality`: paired by seed over 3 seeds (A*: against 100 random pruning orders). Rows already "
    "in the run store are reused; the missing ones are listed below with an estimated time."
)


def plain(text: str) -> str:
    """``text`` shown literally inside Markdown (no links, images or emphasis)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 05 min'."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def stored_signature(prepared: PreparedModel) -> tuple[str, ...]:
    """The keys of this classifier's stored runs: part of the cache keys below, so a new run
    (or a deleted one) refreshes the rows and the estimates."""
    summaries, _ = run_store().list(model_fingerprint=f"prepared:{prepared.key}")
    return tuple(sorted(s.key for s in summaries))


@st.cache_data(max_entries=16, show_spinner="Looking for the claims' rows in the run store…")
def claim_rows(
    prepared_key: str, scale: str, stored: tuple[str, ...]
) -> tuple[list[PlannedRun], list[dict[str, Any]], list[PlannedRun]]:
    """``(plan, stored rows, missing rows)`` of ``scale`` (``stored`` only keys the cache)."""
    prepared = model_store().resolve(prepared_key)
    plan = claim_plan(prepared, scale=scale)
    _, data = prepared_specs(prepared)
    rows, missing = stored_rows(plan, run_store(), dataset=cached_dataset(data))
    return plan, rows, missing


@st.cache_data(max_entries=16, show_spinner=False)
def estimates(
    prepared_key: str, missing: list[PlannedRun], stored: tuple[str, ...]
) -> list[tuple[float, str]]:
    """``(seconds, how)`` of every missing row (``stored`` only keys the cache)."""
    prepared = model_store().resolve(prepared_key)
    timings = stored_timings(run_store(), prepared_key)
    return [estimate_seconds(p, run_store(), timings=timings, prepared=prepared) for p in missing]


def badge(verdict: str | None) -> None:
    label, colour, icon = BADGES.get(verdict, BADGES[None])
    st.badge(label, color=colour, icon=icon)


def run_links(claim: dict[str, Any], labels: dict[str, str], prepared: PreparedModel) -> None:
    """Open one of the claim's runs in Runs, or all of them (up to 40) in Compare."""
    keys = claim["run_keys"]
    if not keys:
        st.caption("No run of this claim is stored yet.")
        return
    cols = st.columns([3, 1, 1], vertical_alignment="bottom")
    chosen = cols[0].selectbox(
        f"Runs used ({len(keys)})",
        keys,
        format_func=lambda key: f"{labels.get(key, key)} · {key[:8]}",
        key=f"claims-run-{claim['id']}",
    )
    if cols[1].button("Open in Runs", key=f"claims-open-{claim['id']}"):
        st.session_state["runs-filter"] = chosen
        st.switch_page("pages/runs.py")
    if cols[2].button("Open in Compare", key=f"claims-compare-{claim['id']}"):
        methods = sorted(claim["methods"])
        # The Compare page's own widget keys: its method filter and its run selection.
        digest = hashlib.sha256(json.dumps([prepared.key, methods]).encode()).hexdigest()[:8]
        st.session_state["compare-methods"] = methods
        st.session_state[f"compare-runs-{digest}"] = keys[:MAX_COMPARE]
        st.switch_page("pages/compare.py")


def claim_card(claim: dict[str, Any], labels: dict[str, str], prepared: PreparedModel) -> None:
    with st.container(border=True):
        head = st.columns([5, 2], vertical_alignment="center")
        head[0].subheader(claim["title"])
        with head[1]:
            badge(claim["verdict"])
        text, figure = st.columns([3, 2], gap="medium")
        with text:
            st.markdown(f"**The paper:** {claim['claim']}")
            st.caption(f"Source: {claim['reference']}")
            st.markdown(f"**Protocol:** {plain(claim['protocol'])}")
            if claim["fewer_than_paper"]:
                st.caption("Smaller than the paper: " + "; ".join(claim["fewer_than_paper"]) + ".")
            st.markdown(f"**Our numbers:** {claim['statement']}")
            if claim["numbers"]:
                table = pd.DataFrame(
                    {
                        "series": [n["series"] for n in claim["numbers"]],
                        "mean": [n["mean"] for n in claim["numbers"]],
                        "min": [n["min"] for n in claim["numbers"]],
                        "max": [n["max"] for n in claim["numbers"]],
                        "seeds": [", ".join(map(str, n["seeds"])) for n in claim["numbers"]],
                    }
                )
                st.dataframe(
                    table,
                    hide_index=True,
                    column_config={
                        c: st.column_config.NumberColumn(format="percent")
                        for c in ("mean", "min", "max")
                    },
                    key=f"claims-numbers-{claim['id']}",
                )
            st.caption(f"Rule: {claim['rule']}")
        show_chart(
            build_claim_figure(claim),
            f"claim-{claim['id']}",
            container=figure,
            width="stretch",
            key=f"claims-chart-{claim['id']}",
        )
        run_links(claim, labels, prepared)


@st.fragment(run_every=1.0)
def jobs_panel() -> None:
    """The claims job: progress, ETA, Cancel; the page reruns once it has stored everything."""
    for job, snap in tracked_jobs(PREFIX, SESSION_JOBS):
        st.caption(f"Job `{job.job_id}` · the missing rows of the Paper claims page")
        job_status(job, snap)


def missing_panel(
    prepared: PreparedModel, missing: list[PlannedRun], stored: tuple[str, ...]
) -> None:
    """The missing rows with their estimates, the total and the button that queues them all."""
    st.subheader("Rows not stored yet")
    if not missing:
        st.success("Every row of this scale is stored: the verdicts above use all of them.")
        jobs_panel()
        return
    found = estimates(prepared.key, missing, stored)
    rough = sum(how.startswith(ROUGH) for _, how in found)
    st.dataframe(
        pd.DataFrame(
            {
                "row": [p.label for p in missing],
                "method": [p.request.method for p in missing],
                "seed": [p.request.seed for p in missing],
                "estimated time": [duration(seconds) for seconds, _ in found],
                "how it was estimated": [how for _, how in found],
            }
        ),
        hide_index=True,
        width="stretch",
        key="claims-missing",
    )
    total = sum(seconds for seconds, _ in found)
    st.markdown(
        f"**Total estimate: about {duration(total)}** for {len(missing)} runs, one at a time."
    )
    if rough:
        st.caption(
            f"{rough} of these are rough estimates (no stored run of that method on this "
            "classifier yet), priced at the speed of the classifier's own fine-tuning; they "
            "improve as runs are stored."
        )
    if st.button(f"Run the {len(missing)} missing rows", type="primary", key="claims-queue"):
        job_id = submit_runs([p.request for p in missing], prefix=PREFIX, session_key=SESSION_JOBS)
        st.toast(f"Queued job {job_id}: stored rows are never recomputed.")
    st.caption(
        "One job runs the rows in the order listed, storing each as it finishes; cancel it any "
        "time and press the button again later to go on from where it stopped."
    )
    jobs_panel()


def main() -> None:
    st.title("Paper claims")
    st.caption(INTRO)
    prepared = require_prepared()
    if prepared is None:
        return
    scale = st.radio(
        "Scale", list(SCALES), format_func=SCALE_LABELS.__getitem__, key="claims-scale"
    )
    chosen = SCALES[scale]
    if chosen.too_small:
        st.warning(
            f"Quick scale: {chosen.score_examples} score texts, {chosen.eval_examples} test "
            f"texts, {chosen.random_trials} random orders and a few training steps. It shows the "
            "whole page working; its verdicts are too noisy to judge any paper. Use the paper "
            "scale for that."
        )
    stored = stored_signature(prepared)
    try:
        plan, rows, missing = claim_rows(prepared.key, scale, stored)
    except (ValueError, OSError) as error:
        st.error(
            f"The claims cannot be planned on this classifier: {error} Choose another model and "
            "dataset on Model & data, or prepare this one again on the Overview page."
        )
        return
    st.caption(f"{len(rows)} of the {len(plan)} rows of this scale are stored.")
    claims = live_claims(rows, plan=plan, prepared=prepared)
    labels = {str(r["key"]): str(r["label"]) for r in rows}
    methods = {str(r["key"]): str(r["method"]) for r in rows}
    for claim in claims:
        claim["methods"] = sorted({methods[k] for k in claim["run_keys"] if k in methods})
        claim_card(claim, labels, prepared)
    st.download_button(
        "Download the claims (HTML report)",
        data=lambda: build_report(
            [], claims=claims, title=f"HeadScope paper claims ({prepared.key}, {scale} scale)"
        ),
        file_name=f"headscope-claims-{prepared.key}-{scale}.html",
        mime="text/html",
        on_click="ignore",
        key="claims-report",
        help="One HTML file with every card (verdict, numbers, protocol, figure, run keys); it "
        "opens offline in any browser.",
    )
    missing_panel(prepared, missing, stored)


ensure_app_navigation()
main()
