"""Explanations: which words each model relies on, before and after pruning (LIME / SHAP).

The page explains up to five sentences on the original classifier and chosen pruning runs, toward
one shared target class (the original's prediction), and compares the models word by word. All
computation runs as background jobs (the work functions of :mod:`pages.support.explain_work`);
results are kept in ``st.session_state`` as JSON dicts, and explanations are cached on disk, so
switching views or reopening a request is instant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from cache.model_store import PreparedModel
from pages.support.common import (
    cached_dataset,
    current_specs,
    ensure_app_navigation,
    executor,
    job_status,
    require_prepared,
    run_store,
)
from pages.support.explain_work import (
    api,
    attributions_of,
    dataset_work,
    explain_work,
    faithfulness_api,
    faithfulness_work,
    request_id,
    stability_work,
)
from pages.support.figures import show_chart
from pruning.data import MAX_TEXT_CHARS, check_text
from pruning.figure_export import export_available, figure_bytes
from pruning.jobs import Progress
from pruning.models import input_limit
from viz.explain import (
    agreement_frame,
    build_faithfulness_chart,
    build_top_words_chart,
    build_word_model_heatmap,
    explanation_report_html,
    side_by_side_html,
    table23_frame,
)

MAX_SENTENCES = 5
METHOD_NAMES = {"lime": "LIME", "shap": "SHAP"}
PENDING = "explain_pending"  # job id -> result slot, for jobs this session waits on
RESULTS = "explain_results"  # result slot -> JSON-ready result of a finished job
CAPTIONS = {
    "comprehensiveness": "**Comprehensiveness**: how much the probability of the target drops when "
    "the explanation's top words are removed (averaged over several k). Higher = the words it "
    "ranks first really drive the prediction = more faithful.",
    "sufficiency": "**Sufficiency**: how much the probability drops when only the top words are "
    "kept. Lower = those words alone nearly reproduce the prediction = more faithful.",
    "random": "**Random baseline** (black dashes): the same measures for a random word order; a "
    "faithful explanation beats it (higher comprehensiveness, lower sufficiency).",
}


def start_job(
    kind: str, payload: dict[str, Any], work: Callable[[Progress], Any], slot: str
) -> None:
    """Submit a job keyed by its request (the same request reattaches) and wait for it here."""
    job_id = request_id(kind, payload)
    job = executor().get(job_id)
    if job is None or job.snapshot().status in ("failed", "cancelled"):
        executor().submit(job_id, kind, work, meta={"title": slot.split(":")[0].capitalize()})
    st.session_state.setdefault(PENDING, {})[job_id] = slot


def collect_finished() -> None:
    """Move the results of this session's finished jobs into ``RESULTS``."""
    pending: dict[str, str] = st.session_state.setdefault(PENDING, {})
    results = st.session_state.setdefault(RESULTS, {})
    for job_id, slot in list(pending.items()):
        job = executor().get(job_id)
        snap = None if job is None else job.snapshot()
        if snap is not None and snap.status == "done":
            results[slot] = snap.result
            del pending[job_id]


@st.fragment(run_every=1.0)
def jobs_panel() -> None:
    """Progress and Cancel of this session's jobs; reruns the page when one has finished."""
    for job_id in list(st.session_state.get(PENDING, {})):
        job = executor().get(job_id)
        if job is None:
            continue
        snap = job.snapshot()
        if snap.status == "done":
            st.rerun(scope="app")
        job_status(job, snap)
        if snap.status == "failed":
            st.caption("Check the models and settings, then press the button again.")


def sentences_ui(prepared: PreparedModel) -> list[str] | None:
    """The sentences typed or picked from the test split (None when the split is unreadable)."""
    source = st.radio("Sentences", ["Type them", "Pick from the test split"], horizontal=True)
    if source == "Type them":
        typed = st.text_area(
            f"One sentence per line (up to {MAX_SENTENCES})",
            placeholder="The plot was thin but the acting was wonderful.",
            help=f"Up to {MAX_TEXT_CHARS:,} characters a sentence; the model reads only its first "
            "tokens (a note says where it cuts).",
        )
        return [line.strip() for line in typed.splitlines() if line.strip()]
    try:
        split = cached_dataset(current_specs()[1]).split("test")
    except (OSError, ValueError) as error:
        st.error(f"The test split cannot be read ({error}); type sentences instead.")
        return None
    names = prepared.label_names
    picked = st.multiselect(
        f"Test texts (up to {MAX_SENTENCES}; the label is the dataset's)",
        range(min(len(split), 500)),
        default=[0] if len(split) else [],
        max_selections=MAX_SENTENCES,
        format_func=lambda i: f"[{names[split.labels[i]]}] {split.texts[i][:110]}",
    )
    return [split.texts[i] for i in picked]


def request_form(prepared: PreparedModel, refs: list[Any]) -> dict[str, Any] | None:
    """Sentences, models, methods and settings; the request when Explain is pressed."""
    sentences = sentences_ui(prepared)
    with st.form("explain-form"):
        default = [0, 1] if len(refs) > 1 else [0]
        chosen = st.multiselect(
            "Models", range(len(refs)), default=default, format_func=lambda i: refs[i].label
        )
        methods = st.multiselect(
            "Methods",
            list(METHOD_NAMES),
            default=["lime"],
            format_func=lambda m: METHOD_NAMES.get(m, m),
        )
        cols = st.columns(3)
        lime = cols[0].number_input("LIME samples", 10, 20_000, 1000, 100)
        shap = cols[1].number_input("SHAP max evaluations", 10, 20_000, 500, 100)
        seed = cols[2].number_input("Seed", 0, 2**31 - 1, 0, 1)
        st.caption(
            "On a 2-core CPU LIME with 1,000 samples and SHAP with 500 evaluations take about 4 s "
            "each per model and sentence; the server's first SHAP explanation adds about 10 s "
            "once (its numba code compiles). Results are cached: asking again is instant."
        )
        pressed = st.form_submit_button("Explain", type="primary")
    if not pressed or sentences is None:
        return None
    if not sentences:
        st.warning("Type at least one sentence (or pick a test text), then press Explain again.")
        return None
    if not chosen or not methods:
        st.warning("Pick at least one model and one method, then press Explain again.")
        return None
    for number, sentence in enumerate(sentences[:MAX_SENTENCES], start=1):
        try:
            check_text(sentence)
        except ValueError as error:
            st.error(f"Sentence {number}: {error} Nothing was started.")
            return None
    if len(sentences) > MAX_SENTENCES:
        st.info(f"Only the first {MAX_SENTENCES} of {len(sentences)} sentences are explained.")
    truncation_notes(prepared, sentences[:MAX_SENTENCES])
    return {
        "refs": [[refs[i].kind, refs[i].key, refs[i].label] for i in chosen],
        "texts": sentences[:MAX_SENTENCES],
        "methods": methods,
        "samples": {"lime": int(lime), "shap": int(shap)},
        "seed": int(seed),
    }


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_input_limit(folder: str) -> tuple[Any, int]:
    """The prepared model's tokenizer and the most tokens it reads (loaded once per server)."""
    return input_limit(folder)


def truncation_notes(prepared: PreparedModel, sentences: list[str], first: int = 1) -> None:
    """An info line for each sentence longer than the model reads (it is truncated); sentences
    are numbered from ``first``."""
    try:
        tokenizer, limit = cached_input_limit(str(prepared.path))
    except (OSError, ValueError):
        return  # the explanation job reports an unreadable model itself
    for number, sentence in enumerate(sentences, start=first):
        count = len(tokenizer(sentence, truncation=False, verbose=False)["input_ids"])
        if count > limit:
            st.info(
                f"Sentence {number} has {count:,} tokens but the model reads at most {limit}: it "
                "is truncated there, so words past that point get no attribution."
            )


def stability_view(group: list[Any], request: dict[str, Any], number: int) -> None:
    """Three seeds of one model and method on this sentence, and how much they agree."""
    first = group[0]
    with st.expander("Stability across seeds"):
        labels = {a.model_label: a for a in group}
        cols = st.columns(2)
        label = cols[0].selectbox("Model", list(labels), key=f"seed-model-{number}")
        method = cols[1].selectbox(
            "Method",
            request["methods"],
            format_func=lambda m: METHOD_NAMES.get(m, m),
            key=f"seed-method-{number}",
        )
        ref = next(r for r in request["refs"] if r[2] == label)
        payload = {
            "refs": [ref],
            "text": first.text,
            "method": method,
            "samples": request["samples"][method],
            "seed": request["seed"],
            "target": first.target,
        }
        slot = f"stability:{request_id('s', payload)}"
        if st.button("Run 3 seeds", key=f"seeds-{number}"):
            start_job("explainseeds", payload, stability_work(payload), slot)
        result = st.session_state.get(RESULTS, {}).get(slot)
        if result is None:
            st.caption("Explains this sentence with seeds s, s+1, s+2 and compares the values.")
            return
        stats = result["stats"]
        metrics = st.columns(3)
        shown = {k: "n/a" if v != v else f"{v:.3f}" for k, v in stats.items()}  # NaN: constant
        metrics[0].metric("Mean Spearman", shown["mean_spearman"])
        metrics[1].metric("Min Spearman", shown["min_spearman"])
        metrics[2].metric("Mean top-5 overlap", f"{stats['mean_topk_overlap']:.0%}")
        seeds = [
            dataclasses.replace(a, model_label=f"seed {a.seed}")
            for a in attributions_of(result["attributions"])
        ]
        show_chart(
            build_word_model_heatmap(seeds),
            f"explanation-seeds-{slot}",
            width="stretch",
            key=f"seed-{slot}",
        )


def faithfulness_view(group: list[Any], request: dict[str, Any], number: int) -> list[Any]:
    """The per-sentence faithfulness button and its chart; returns the rows (or [])."""
    st.markdown("**Faithfulness of these explanations**")
    if faithfulness_api() is None:
        st.info("Faithfulness needs pruning.faithfulness, which this installation lacks.")
        return []
    payload = {"refs": request["refs"], "attributions": [a.to_dict() for a in group]}
    slot = f"faithfulness:{request_id('f', payload)}"
    if st.button("Measure faithfulness", key=f"faith-{number}"):
        start_job("explainfaith", payload, faithfulness_work(payload), slot)
    rows: list[Any] = st.session_state.get(RESULTS, {}).get(slot) or []
    if rows:
        show_chart(
            build_faithfulness_chart(rows),
            f"faithfulness-{slot}",
            width="stretch",
            key=f"faith-{slot}",
        )
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        for text in CAPTIONS.values():
            st.caption(text)
        st.caption(
            "Here every model is scored on the shared target class of the explanations; the "
            "dataset average below scores each model on the class it predicts itself."
        )
    return rows


def results_view(result: dict[str, Any], prepared: PreparedModel) -> None:
    """Per sentence: highlighted text, charts, Table II/III, agreement, stability, faithfulness."""
    request = result["request"]
    order = {f"{kind}:{key}": i for i, (kind, key, _) in enumerate(request["refs"])}
    methods = request["methods"]
    attributions = sorted(
        attributions_of(result["attributions"]),
        key=lambda a: (order.get(a.model_key, len(order)), methods.index(a.method)),
    )
    by_text: dict[str, list[Any]] = {}
    for attribution in attributions:
        by_text.setdefault(attribution.text, []).append(attribution)
    texts = list(by_text)
    number = 0
    if len(texts) > 1:
        number = st.radio(
            "Sentence", range(len(texts)), format_func=lambda i: f"{i + 1}: {texts[i][:60]}"
        )
    group = by_text[texts[number]]
    truncation_notes(prepared, [texts[number]], first=number + 1)
    st.html(side_by_side_html(group))
    tabs = st.tabs(["Top words", "Word × model", "Table II/III", "Agreement"])
    show_chart(
        build_top_words_chart(group),
        f"top-words-sentence-{number + 1}",
        container=tabs[0],
        width="stretch",
        key=f"top-{number}",
    )
    show_chart(
        build_word_model_heatmap(group),
        f"word-x-model-sentence-{number + 1}",
        container=tabs[1],
        width="stretch",
        key=f"map-{number}",
    )
    tabs[2].dataframe(table23_frame(group), hide_index=True)
    tabs[2].caption("The MCAP paper's Table II/III layout: signed contribution per word and model.")
    agreement = agreement_frame(group)
    if agreement.empty:
        tabs[3].info("Agreement compares two models explained by one method: pick two models.")
    else:
        tabs[3].dataframe(agreement, hide_index=True)
        tabs[3].caption(
            "Top-5 overlap: share of each model's 5 most supportive words they share. Spearman: "
            "rank correlation of the values word by word (empty when one side is constant)."
        )
    stability_view(group, request, number)
    rows = faithfulness_view(group, request, number)
    export_view(attributions, group, rows)


def export_view(attributions: list[Any], group: list[Any], rows: list[Any]) -> None:
    """Download buttons: the standalone HTML report, and a PNG of the top-words chart.

    The PNG is rendered on click, offline (pruning.figure_export); every chart's own "Save
    figure" menu also offers PNG and SVG.
    """
    cols = st.columns(2)
    cols[0].download_button(
        "Download the report (HTML)",
        lambda: explanation_report_html(
            attributions,
            pd.concat([agreement_frame(g) for g in _groups(attributions)], ignore_index=True),
            rows + st.session_state.get(RESULTS, {}).get("dataset", []),
            "HeadScope explanations",
        ),
        file_name="headscope-explanations.html",
        mime="text/html",
        on_click="ignore",
    )
    ok, why = export_available()
    if not ok:
        cols[1].caption(f"{why} The HTML report opens offline.")
        return
    cols[1].download_button(
        "Download top words (PNG)",
        lambda: figure_bytes(build_top_words_chart(group), "png"),
        file_name="headscope-top-words.png",
        mime="image/png",
        on_click="ignore",
    )


def _groups(attributions: list[Any]) -> list[list[Any]]:
    by_text: dict[str, list[Any]] = {}
    for attribution in attributions:
        by_text.setdefault(attribution.text, []).append(attribution)
    return list(by_text.values())


def dataset_view(request: dict[str, Any] | None) -> None:
    """Faithfulness averaged over test texts, with the last request's models and methods."""
    st.subheader("Dataset average")
    if faithfulness_api() is None:
        st.info("Faithfulness needs pruning.faithfulness, which this installation lacks.")
        return
    if request is None:
        st.info("Explain a sentence first: the average uses the same models, methods and samples.")
        return
    count = st.number_input("Test texts", 2, 500, 20, 5, help="The first texts of the test split.")
    if st.button("Measure over the test split"):
        try:
            texts = list(cached_dataset(current_specs()[1]).split("test").texts[: int(count)])
        except (OSError, ValueError) as error:
            st.error(f"The test split cannot be read ({error}); check the dataset page.")
            return
        payload = {key: request[key] for key in ("refs", "methods", "samples", "seed")}
        payload["texts"] = texts
        start_job("explaindata", payload, dataset_work(payload), "dataset")
    rows = st.session_state.get(RESULTS, {}).get("dataset")
    if rows:
        show_chart(
            build_faithfulness_chart(rows),
            "faithfulness-dataset",
            width="stretch",
            key="faith-dataset",
        )
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        for text in CAPTIONS.values():
            st.caption(text)


def main() -> None:
    st.title("Explanations")
    st.caption(
        "LIME and SHAP word attributions of the original classifier and its pruned runs, toward "
        "one class (the original's prediction): which words each model relies on, and whether "
        "pruning changed that."
    )
    prepared = require_prepared()
    if prepared is None:
        return
    try:
        run_models = api()[1]
    except ImportError as error:
        st.error(
            f"Explanations need {error.name}, which this installation lacks. Update HeadScope."
        )
        return
    refs = run_models.model_refs(prepared, run_store())
    collect_finished()
    left, right = st.columns([3, 2], gap="large")
    with left:
        request = request_form(prepared, refs)
    if request is not None:
        start_job("explain", request, explain_work(request), "explanations")
    with right:
        jobs_panel()
    result = st.session_state.get(RESULTS, {}).get("explanations")
    if result:
        results_view(result, prepared)
    elif not st.session_state.get(PENDING):
        st.info("Type or pick sentences, choose models and methods, and press Explain.")
    dataset_view(result["request"] if result else None)


ensure_app_navigation()
main()
