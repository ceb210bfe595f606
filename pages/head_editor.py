"""Head editor: switch attention heads off by hand and see at once what that does.

The layer x head grid of the chosen model (the original classifier or a stored run of it) toggles
a head on each click; buttons apply a stored run's mask, keep the top-k heads by a run's scores,
reset, undo and redo. After every change the page shows, next to the unedited model: accuracy,
MCC and loss on an evaluation slice, the prediction and class probabilities for the user's
sentences and one head's attention; LIME / SHAP attributions on request (a background job). The
edited mask can be saved as a run (method ``"manual"``) that the Runs page lists like any other.

State: one :class:`pruning.head_editor.EditorState` per model in ``st.session_state``; the model
and its :class:`pruning.head_editor.SliceEvaluator` are loaded once per server
(``st.cache_resource``), and the evaluator computes the unedited model's numbers once.
"""

from __future__ import annotations

import hashlib
import html
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages.support.common import (
    cached_dataset,
    current_specs,
    ensure_app_navigation,
    executor,
    job_status,
    require_prepared,
    run_store,
    submit_run,
    tracked_jobs,
)
from pages.support.figures import show_chart
from pruning.data import check_text
from pruning.head_editor import (
    DEFAULT_SENTENCES,
    DEFAULT_SLICE,
    EditorState,
    SliceEvaluator,
    editor_slice,
    explain_edit,
    manual_config,
)
from pruning.jobs import Progress
from pruning.pipeline import RunRequest
from pruning.run_models import ModelRef, load_ref, model_refs, ref_fingerprint
from viz.attention import build_attention_heatmap, shared_range
from viz.grid import EARLIER_COLOUR, KEPT_COLOUR, MARK_COLOUR

if TYPE_CHECKING:
    from cache.model_store import PreparedModel
    from pruning.data import LabelledDataset
    from pruning.evaluate import Metrics
    from pruning.models import LoadedClassifier

STATES = "head_editor_states"  # model fingerprint -> EditorState
NOTE = "head_editor_note"  # a message for the next rerun (e.g. a refused toggle)
EDITS = "head_editor_edits"  # edits made in this session (a counter)
UPDATE_NOTE = "head_editor_update_note"  # (edit count, "updated in … s") of the last edit
GRID_ROUND = "head_editor_grid_round"  # bumped after each click: a fresh, unselected chart
LAYER_KEY, HEAD_KEY = "editor-layer", "editor-head"
SAVE_PREFIX, SAVE_SESSION = "editor", "editor_jobs"
EXPLAIN_PENDING, EXPLAIN_RESULTS = "editor_explain_pending", "editor_explain_results"
SLICE_SIZES: tuple[int | None, ...] = (DEFAULT_SLICE, 512, 1024, None)
MAX_SENTENCES = 5
HALF_PAGE_PX = 560  # a heatmap wider than this would be shrunk in half of the wide layout
ABSENT_NOTES = {"switched_off": "is switched off in the edit", "absent": "is not in this model"}
OFF_COLOUR = "#e45756"  # switched off in this edit: clearly not the grey of earlier removals
METHOD_NAMES = {"lime": "LIME", "shap": "SHAP"}


@st.cache_resource(show_spinner=False, max_entries=3)
def cached_model(fingerprint: str, _ref: ModelRef) -> LoadedClassifier:
    """The classifier a reference names, loaded once per server."""
    return load_ref(_ref)


@st.cache_resource(show_spinner=False, max_entries=3)
def cached_evaluator(
    fingerprint: str,
    data_key: str,
    split: str,
    examples: int | None,
    _loaded: LoadedClassifier,
    _dataset: LabelledDataset,
) -> SliceEvaluator:
    """The model and its tokenised evaluation slice, kept once per server, model and slice
    (``data_key`` is the dataset's content fingerprint)."""
    rows = editor_slice(_dataset, "test" if split == "test" else "validation", examples)
    return SliceEvaluator(_loaded.model, _loaded.tokenizer, rows)


@st.cache_data(show_spinner=False, max_entries=128)
def cached_run(key: str) -> dict[str, Any]:
    """A stored run's mask, scores and whether it changed weights (fixed by the run's key)."""
    record = run_store().get(key)
    return {
        "mask": record.mask.numpy(),
        "scores": None if record.scores is None else record.scores.numpy(),
        "has_model": bool(record.has_model),
    }


def editor_state(fingerprint: str, evaluator: SliceEvaluator) -> EditorState:
    states: dict[str, EditorState] = st.session_state.setdefault(STATES, {})
    if fingerprint not in states:
        states[fingerprint] = EditorState(evaluator.present)
    return states[fingerprint]


def edit(state: EditorState, action: str, *args: Any) -> None:
    """Run one edit from a widget callback; a refused edit becomes a note for the page."""
    try:
        getattr(state, action)(*args)
    except ValueError as error:
        st.session_state[NOTE] = str(error)
    st.session_state[EDITS] = st.session_state.get(EDITS, 0) + 1


def update_note(state: EditorState, remembered: bool, started: float) -> str:
    """How long the last edit took to show: measured on the run right after it, then kept
    (later reruns, e.g. a finished job's, compute nothing new)."""
    count = st.session_state.get(EDITS, 0)
    last = st.session_state.get(UPDATE_NOTE)
    if last is None or last[0] != count:
        seconds = time.perf_counter() - started
        note = " · shown from memory" if remembered else f" · updated in {seconds:.2f} s"
        last = st.session_state[UPDATE_NOTE] = (count, note)
    return str(last[1]) if state.edited else ""


# --------------------------------------------------------------------------------------------
# the grid


def build_editor_grid(mask: np.ndarray, present: np.ndarray, title: str) -> go.Figure:
    """Layer x head squares: kept (teal), switched off here (red ×), not in the model (grey –).

    One scatter point per head (``customdata = [layer, head]``), so a click selects a head.
    """
    n_layers, n_heads = mask.shape
    cell = int(np.clip(round(560 / max(n_layers, n_heads)), 22, 40))
    layers, heads = np.meshgrid(range(n_layers), range(n_heads), indexing="ij")
    status = np.where(~present, 2, np.where(mask, 0, 1)).ravel()
    colours = np.array([KEPT_COLOUR, OFF_COLOUR, EARLIER_COLOUR])[status]
    marks = np.array(["", "×", "–"])[status]
    verbs = np.array(
        ["kept · click to switch off", "switched off · click to switch on", "not in this model"]
    )[status]
    hover = [
        f"L{layer} H{head}: {verb}"
        for layer, head, verb in zip(layers.ravel(), heads.ravel(), verbs, strict=True)
    ]
    fig = go.Figure(
        go.Scatter(
            x=heads.ravel().tolist(),
            y=layers.ravel().tolist(),
            customdata=np.stack([layers.ravel(), heads.ravel()], axis=1).tolist(),
            mode="markers+text",
            marker={
                "symbol": "square",
                "size": cell - 4,
                "color": colours.tolist(),
                "line": {"color": "#ffffff", "width": 1},
            },
            text=marks.tolist(),
            textfont={"color": MARK_COLOUR, "size": max(9, cell // 2)},
            hovertext=hover,
            hoverinfo="text",
            selected={"marker": {"opacity": 1.0}},
            unselected={"marker": {"opacity": 1.0}},
            showlegend=False,
            name="heads",
        )
    )
    for name, colour in (("kept", KEPT_COLOUR), ("switched off ×", OFF_COLOUR)) + (
        (("not in this model –", EARLIER_COLOUR),) if (~present).any() else ()
    ):
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=name,
                hoverinfo="skip",
                marker={
                    "symbol": "square",
                    "size": 13,
                    "color": colour,
                    "line": {"color": "#999999", "width": 1},
                },
            )
        )
    axis: dict[str, Any] = {"showgrid": False, "zeroline": False, "ticks": "", "fixedrange": True}
    fig.update_xaxes(
        range=[-0.5, n_heads - 0.5],
        tickvals=list(range(n_heads)),
        ticktext=[f"H{h}" for h in range(n_heads)],
        side="top",
        **axis,
    )
    fig.update_yaxes(
        range=[n_layers - 0.5, -0.5],
        tickvals=list(range(n_layers)),
        ticktext=[f"L{layer}" for layer in range(n_layers)],
        **axis,
    )
    off = int((present & ~mask).sum())
    summary = f"{int(mask.sum())} of {int(present.sum())} heads kept · {off} switched off here"
    fig.update_layout(
        title={"text": f"{html.escape(title, quote=False)}<br><sup>{summary}</sup>", "x": 0.0},
        width=60 + n_heads * cell + 20,
        height=n_layers * cell + 150,
        margin={"t": 95, "b": 45, "l": 50, "r": 20},
        plot_bgcolor="#ffffff",
        clickmode="event+select",
        dragmode=False,
        legend={"orientation": "h", "x": 0.0, "y": -0.02, "yanchor": "top", "font": {"size": 11}},
    )
    return fig


def grid_key() -> str:
    """The widget key of the grid chart drawn now; it changes after every handled click."""
    return f"editor-grid-{st.session_state.get(GRID_ROUND, 0)}"


def on_grid_click(state: EditorState, chart_key: str) -> None:
    """Toggle the clicked head, then draw a fresh chart (its selection would linger)."""
    if chart_key != grid_key():
        return  # a late event of a chart already replaced (a fragment rerun resends it)
    event = st.session_state.get(chart_key) or {}
    points = (event.get("selection") or {}).get("points") or []
    if points:
        point = points[0]
        layer, head = point.get("customdata") or (point.get("y"), point.get("x"))
        edit(state, "toggle", int(layer), int(head))
    st.session_state[GRID_ROUND] = st.session_state.get(GRID_ROUND, 0) + 1


def toggle_chosen(state: EditorState) -> None:
    """The Toggle button: the head the Layer and Head boxes show now (read at click time)."""
    edit(state, "toggle", int(st.session_state[LAYER_KEY]), int(st.session_state[HEAD_KEY]))


def grid_ui(state: EditorState, title: str) -> None:
    chart_key = grid_key()
    show_chart(
        build_editor_grid(state.mask.numpy(), state.present.numpy(), title),
        "head-editor-grid",
        width="content",
        key=chart_key,
        on_select=lambda: on_grid_click(state, chart_key),
        selection_mode="points",
        config={"displayModeBar": False},
    )
    n_layers, n_heads = state.shape
    cols = st.columns([1, 1, 1.2])
    layer = cols[0].selectbox(
        "Layer", range(n_layers), format_func=lambda i: f"L{i}", key=LAYER_KEY
    )
    head = cols[1].selectbox("Head", range(n_heads), format_func=lambda i: f"H{i}", key=HEAD_KEY)
    cols[2].button(
        f"Toggle L{layer} H{head}",
        on_click=toggle_chosen,
        args=(state,),
        help="The same as clicking the head's square in the grid.",
        width="stretch",
        key="editor-toggle",
    )
    history = st.columns(3)
    for slot, (label, enabled) in zip(
        history, (("Undo", state.can_undo), ("Redo", state.can_redo)), strict=False
    ):
        slot.button(
            label,
            on_click=edit,
            args=(state, label.lower()),
            disabled=not enabled,
            width="stretch",
            key=f"editor-{label.lower()}",
        )
    history[2].button(
        "Reset",
        on_click=edit,
        args=(state, "reset"),
        disabled=not state.edited,
        width="stretch",
        help="Back to the unedited model (undoable).",
        key="editor-reset",
    )


def runs_ui(state: EditorState, refs: list[ModelRef]) -> None:
    """Apply a stored run's mask; keep the top-k heads by a run's scores."""
    runs = [ref for ref in refs if ref.kind == "run"]
    if not runs:
        st.caption(
            "Store a pruning run (Prune page) to apply its mask or rank heads by its scores."
        )
        return
    with st.expander("From a stored run: its mask, or the top-k heads by its scores"):
        pick = st.selectbox("Run", runs, format_func=lambda r: r.label, key="editor-run")
        data = cached_run(pick.key)
        st.button(
            "Apply its mask",
            on_click=edit,
            args=(state, "apply_mask", np.asarray(data["mask"], dtype=bool)),
            key="editor-apply",
        )
        scored = [ref for ref in runs if cached_run(ref.key)["scores"] is not None]
        if not scored:
            st.caption(
                "No stored run of this model has per-head scores (A* and manual runs store none)."
            )
            return
        cols = st.columns([2, 1])
        ranked = cols[0].selectbox(
            "Scores of", scored, format_func=lambda r: r.label, key="editor-scores"
        )
        k = cols[1].number_input(
            "k", 0, int(state.present.sum()), int(state.present.sum()) // 2, key="editor-k"
        )
        st.button(
            f"Keep the top {int(k)} heads",
            on_click=edit,
            args=(state, "keep_top_k", cached_run(ranked.key)["scores"], int(k)),
            key="editor-topk",
        )


# --------------------------------------------------------------------------------------------
# the numbers


def evaluate_ui(evaluator: SliceEvaluator, mask: Any | None, what: str) -> Metrics:
    """Metrics under ``mask`` (None: the unedited model's, computed once per evaluator) with a
    spinner (one chunk) or a progress bar (larger slices)."""

    def run(on_progress: Any = None) -> Metrics:
        if mask is None:
            return evaluator.reference(on_progress=on_progress)
        return evaluator.evaluate(mask, on_progress=on_progress)

    if evaluator.n_chunks == 1:
        with st.spinner(f"Evaluating {what} on {evaluator.n_examples:,} texts…"):
            return run()
    bar = st.progress(0.0, text=f"Evaluating {what}…")

    def on_progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Evaluating {what}: {done:,} of {total:,} texts")

    metrics = run(on_progress)
    bar.empty()
    return metrics


def metrics_ui(reference: Metrics, edited: Metrics, note: str, split: str) -> None:
    """The edited model's accuracy, MCC and loss with their change (none while unedited), the
    unedited ones below."""
    same = edited == reference
    cols = st.columns(3)
    cols[0].metric(
        "Accuracy",
        f"{edited.accuracy:.1%}",
        None if same else f"{100 * (edited.accuracy - reference.accuracy):+.1f} pts",
    )
    cols[1].metric(
        "MCC", f"{edited.mcc:.3f}", None if same else f"{edited.mcc - reference.mcc:+.3f}"
    )
    cols[2].metric(
        "Loss",
        f"{edited.loss:.3f}",
        None if same else f"{edited.loss - reference.loss:+.3f}",
        delta_color="inverse",
    )
    st.caption(
        f"Unedited: accuracy {reference.accuracy:.1%} · MCC {reference.mcc:.3f} · loss "
        f"{reference.loss:.3f}, on {reference.n_examples:,} {split} texts{note}"
    )


def sentences_ui() -> list[str]:
    typed = st.text_area(
        f"Your sentences (one per line, up to {MAX_SENTENCES})",
        value="\n".join(DEFAULT_SENTENCES),
        key="editor-sentences",
        height=90,
    )
    sentences = [line.strip() for line in typed.splitlines() if line.strip()][:MAX_SENTENCES]
    good = []
    for number, sentence in enumerate(sentences, start=1):
        try:
            good.append(check_text(sentence, "predict"))
        except ValueError as error:
            st.error(f"Sentence {number}: {error}")
    return good


def predictions_ui(
    evaluator: SliceEvaluator, sentences: list[str], mask: Any, names: tuple[str, ...]
) -> None:
    before = evaluator.predict(sentences)
    after = evaluator.predict(sentences, mask)
    rows = []
    for text, old, new in zip(sentences, before, after, strict=True):
        row = {"sentence": text if len(text) <= 80 else text[:79] + "…"}
        row["unedited"] = f"{names[int(old.argmax())]} ({old.max():.1%})"
        row["edited"] = f"{names[int(new.argmax())]} ({new.max():.1%})"
        for index, name in enumerate(names):
            row[f"P({name}) unedited → edited"] = f"{old[index]:.3f} → {new[index]:.3f}"
        row["changed"] = "yes" if old.argmax() != new.argmax() else ""
        rows.append(row)
    st.table(pd.DataFrame(rows).set_index("sentence"))


def attention_ui(evaluator: SliceEvaluator, sentences: list[str], mask: Any) -> None:
    n_layers, n_heads = evaluator.shape
    cols = st.columns([3, 1, 1])
    number = cols[0].selectbox(
        "Sentence",
        range(len(sentences)),
        format_func=lambda i: sentences[i][:60],
        key="editor-att-text",
    )
    layer = cols[1].selectbox(
        "Layer",
        range(n_layers),
        index=n_layers - 1,  # the last layer: any edit below it changes what it attends to
        format_func=lambda i: f"L{i}",
        key="editor-att-layer",
    )
    head = cols[2].selectbox(
        "Head", range(n_heads), format_func=lambda i: f"H{i}", key="editor-att-head"
    )
    text = sentences[int(number)]
    views = [
        ("unedited", evaluator.head_attention(text, layer, head)),
        ("edited", evaluator.head_attention(text, layer, head, mask)),
    ]
    matrices = [view.matrix for _, view in views if view.matrix is not None]
    bounds = shared_range(matrices) if matrices else None
    colour_range = None if bounds is None else (0.0, max(bounds[1], 1e-6))
    figures = [
        None
        if view.matrix is None
        else build_attention_heatmap(
            view.tokens, view.matrix, colour_range=colour_range, title=f"{label} · L{layer} H{head}"
        )
        for label, view in views
    ]
    # Two heatmaps fit side by side up to ~12 tokens; wider ones go one per row, unshrunk.
    wide = any(figure is not None and figure.layout.width > HALF_PAGE_PX for figure in figures)
    slots = [st.container() for _ in views] if wide else st.columns(2)
    for index, (slot, (label, view), figure) in enumerate(zip(slots, views, figures, strict=True)):
        with slot:
            if figure is None:
                note = ABSENT_NOTES[view.status]
                st.info(f"{label}: head L{layer} H{head} {note}, so it attends to nothing.")
            else:
                show_chart(
                    figure,
                    f"editor-attention-{label}-L{layer}H{head}",
                    width="content",
                    key=f"editor-attention-{index}",
                )
    st.caption("A head's attention changes only when a head in an earlier layer is switched off.")


# --------------------------------------------------------------------------------------------
# explanations (background jobs)


def explain_ui(
    evaluator: SliceEvaluator,
    ref: ModelRef,
    sentences: list[str],
    state: EditorState,
    names: tuple[str, ...],
) -> None:
    cols = st.columns([3, 1, 1])
    number = cols[0].selectbox(
        "Sentence to explain",
        range(len(sentences)),
        format_func=lambda i: sentences[i][:60],
        key="editor-exp-text",
    )
    method = str(
        cols[1].selectbox(
            "Method",
            list(METHOD_NAMES),
            format_func=lambda name: METHOD_NAMES[name],
            key="editor-exp-method",
        )
    )
    samples = cols[2].number_input("Samples", 10, 20_000, 500, 100, key="editor-exp-samples")
    mask = state.mask
    payload = {
        "ref": ref_fingerprint(ref),
        "text": sentences[int(number)],
        "method": method,
        "samples": int(samples),
        "mask": mask.int().tolist(),
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    job_id = f"editorexplain-{digest}"
    if st.button("Explain unedited and edited", key="editor-explain"):
        job = executor().get(job_id)
        if job is None or job.snapshot().status in ("failed", "cancelled"):
            executor().submit(
                job_id,
                "editor-explain",
                explain_job(evaluator, ref, payload, names),
                meta={"title": f"{METHOD_NAMES[method]} on the edit"},
            )
        st.session_state.setdefault(EXPLAIN_PENDING, {})[job_id] = True
    if st.session_state.get(EXPLAIN_PENDING):
        explain_panel()
    result = st.session_state.get(EXPLAIN_RESULTS, {}).get(job_id)
    if result is not None:
        from pruning.explain import Attribution
        from viz.explain_html import side_by_side_html

        st.html(side_by_side_html([Attribution.from_dict(item) for item in result]))
    elif job_id not in st.session_state.get(EXPLAIN_PENDING, {}):
        st.caption(
            f"{METHOD_NAMES[method]} takes a few seconds per model on a 2-core CPU; both "
            "models explain the class the unedited model predicts."
        )


def explain_job(
    evaluator: SliceEvaluator, ref: ModelRef, payload: dict[str, Any], names: tuple[str, ...]
) -> Any:
    """The background work: ``[unedited, edited]`` attributions as JSON-ready dicts."""

    def work(progress: Progress) -> list[dict[str, Any]]:
        from pruning.explain import ExplanationCache

        attributions = explain_edit(
            evaluator,
            ref,
            payload["text"],
            np.asarray(payload["mask"], dtype=bool),
            method=payload["method"],
            samples=payload["samples"],
            label_names=names,
            cache=ExplanationCache(),
            on_progress=progress.update,
            should_stop=progress.should_stop,
        )
        return [a.to_dict() for a in attributions]

    return work


@st.fragment(run_every=1.0)
def explain_panel() -> None:
    """Progress of this session's explanation jobs; a finished one reruns the page. Drawn only
    while one is pending, so an idle page does not poll."""
    pending: dict[str, bool] = st.session_state.setdefault(EXPLAIN_PENDING, {})
    for job_id in list(pending):
        job = executor().get(job_id)
        if job is None:
            del pending[job_id]
            continue
        snap = job.snapshot()
        if snap.status == "done":
            st.session_state.setdefault(EXPLAIN_RESULTS, {})[job_id] = snap.result
            del pending[job_id]
            st.rerun(scope="app")
        job_status(job, snap)


# --------------------------------------------------------------------------------------------
# saving


def save_ui(state: EditorState, prepared: PreparedModel, base: ModelRef) -> None:
    """Save the edited mask as a ``manual`` run (a background job through the pipeline)."""
    if base.kind == "run" and cached_run(base.key)["has_model"]:
        st.caption(
            "This run changed the model's weights (fine-tuning or weight pruning), but a "
            "manual run is cut from the original classifier. To save, open the original "
            "and apply this run's mask there."
        )
        return
    off = len(state.removed())
    default_name = f"Manual: {off} head{'' if off == 1 else 's'} off"
    cols = st.columns([3, 2], vertical_alignment="bottom")
    name = cols[0].text_input(
        "Run name", placeholder=default_name, key="editor-run-name", help=f"Empty: {default_name}"
    )
    if cols[1].button(
        "Save as run", type="primary", disabled=not state.edited, key="editor-save", width="stretch"
    ):
        model_spec, data_spec = current_specs()
        request = RunRequest(
            method="manual",
            config=manual_config(state.mask),
            model=model_spec,
            data=data_spec,
            prepared_key=prepared.key,
            name=name.strip() or default_name,
        )
        submit_run(request, prefix=SAVE_PREFIX, session_key=SAVE_SESSION)
    if st.session_state.get(SAVE_SESSION) or unfinished_jobs(SAVE_PREFIX):
        save_panel()
    saved = st.session_state.get(f"last_run_{SAVE_SESSION}")
    if saved:
        try:
            saved_name = run_store().get(str(saved)).info.get("name", "")
        except ValueError:
            return  # deleted since
        st.success(f"Saved as run “{saved_name}” (`{saved}`): the Runs page lists it.")


def unfinished_jobs(prefix: str) -> bool:
    """Whether any session's job with ``prefix`` is queued or running (shared machine)."""
    return any(
        job.job_id.startswith(f"{prefix}-") and not job.snapshot().finished
        for job in executor().jobs()
    )


@st.fragment(run_every=1.0)
def save_panel() -> None:
    """Progress of saves; polls only while there is one (a poll reruns this fragment)."""
    for job, snap in tracked_jobs(SAVE_PREFIX, SAVE_SESSION):
        job_status(job, snap)


# --------------------------------------------------------------------------------------------


def main() -> None:
    st.title("Head editor")
    st.caption(
        "Switch attention heads off by hand (click a square) and see at once what happens to "
        "accuracy, to your sentences' predictions and to the attention, next to the unedited "
        "model."
    )
    prepared = require_prepared()
    if prepared is None:
        return
    refs = model_refs(prepared, run_store())
    cols = st.columns([2, 1, 1])
    base = cols[0].selectbox(
        "Model to edit",
        refs,
        format_func=lambda r: r.label,
        key="editor-base",
        help="The original classifier or a stored run of it (whose removed heads stay off).",
    )
    split = cols[1].selectbox("Evaluation split", ["validation", "test"], key="editor-split")
    examples = cols[2].selectbox(
        "Evaluation texts",
        SLICE_SIZES,
        key="editor-size",
        format_func=lambda n: (
            "the whole split" if n is None else f"{n:,}" + (" (fast)" if n == DEFAULT_SLICE else "")
        ),
        help=f"{DEFAULT_SLICE} texts update in about a second on a 2-core CPU; larger slices "
        "are slower and show progress.",
    )
    fingerprint = ref_fingerprint(base)
    try:
        with st.spinner(f"Loading {base.label} and tokenising the evaluation texts…"):
            loaded = cached_model(fingerprint, base)
            dataset = cached_dataset(current_specs()[1])
            evaluator = cached_evaluator(
                fingerprint, dataset.fingerprint, split, examples, loaded, dataset
            )
    except (OSError, ValueError) as error:
        st.error(f"{base.label} cannot be opened for editing: {error}")
        return
    state = editor_state(fingerprint, evaluator)
    note = st.session_state.pop(NOTE, None)
    if note:
        st.warning(note)
    left, right = st.columns([5, 6], gap="large")
    with left:
        grid_ui(state, base.label)
        runs_ui(state, refs)
        save_ui(state, prepared, base)
    with right:
        reference = evaluate_ui(evaluator, None, "the unedited model")
        remembered = evaluator.remembers(state.mask)
        started = time.perf_counter()
        edited = evaluate_ui(evaluator, state.mask, "the edit")
        metrics_ui(reference, edited, update_note(state, remembered, started), split)
        sentences = sentences_ui()
        if sentences:
            predictions_ui(evaluator, sentences, state.mask, tuple(prepared.label_names))
        else:
            st.info("Type a sentence to see its prediction, attention and explanation.")
    if not sentences:
        return
    # Full width below: two attention heatmaps side by side need the room.
    st.subheader("Attention of one head")
    attention_ui(evaluator, sentences, state.mask)
    st.subheader("Explanations (on request)")
    explain_ui(evaluator, base, sentences, state, tuple(prepared.label_names))


ensure_app_navigation()
main()
