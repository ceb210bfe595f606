"""Overview, the landing page: what HeadScope does, the model and data, a gallery of the stored
runs' key figures, and a guided first run for a new user.

On first start the default encoder is fine-tuned on the default dataset in a background job
(a few minutes on a CPU) with visible progress; later starts load it from the model store.

The gallery shows, for the current prepared classifier, one tile per kind of stored result, each
only when such a result exists: the best accuracy at each head sparsity (every run, with the
Pareto front), the newest head mask, the newest A* search (the heads numbered in the order it
pruned them), the newest AutoAttention gate evolution (an animation) and one explanation side by
side, read from the explanation cache (nothing is computed here). Its figures are built once per
set of stored runs (``st.cache_data`` keyed on the runs' keys and names), so the page stays fast
with many runs.

"First run" prepares the classifier if needed and then prunes half of its heads with HISP on a
validation slice, both as background jobs with progress, and shows the result.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cache.model_store import PreparedModel
from cache.paths import headscope_home
from cache.run_format import RunRecord, RunSummary
from pages.support.common import (
    cached_dataset,
    current_specs,
    ensure_app_navigation,
    executor,
    job_status,
    prepare_panel,
    prepare_work,
    prepared_for,
    pruning_work,
    request_job_id,
    run_store,
)
from pages.support.figures import show_chart
from pruning.cost import count_parameters, flops_per_example
from pruning.data import DataSpec, LabelledDataset
from pruning.explain_cache import ExplanationCache
from pruning.heads import head_grid
from pruning.models import ModelSpec, load_classifier
from pruning.pipeline import RunRequest

AUTO_PREPARE = os.environ.get("HEADSCOPE_AUTOPREPARE", "1") != "0"
PREPARE_JOB = "prepare-default"
FIRST_RUN_JOB = "first_run_job"  # session key: the first run's job id
FIRST_RUN_KEY = "first_run_key"  # session key: the first run's run key once stored
FIRST_RUN_NAME = "First run · HISP 50%"
# Validation texts the first run scores heads on and is evaluated on: seconds on a CPU. The page
# says these counts through first_run_texts, from the run's settings (capped by the split's size).
FIRST_RUN_SCORE_TEXTS = 128
FIRST_RUN_EVAL_TEXTS = 256
# The newest explanation files the gallery reads at most (each is a small JSON file).
MAX_EXPLANATION_FILES = 200
INTRO = (
    "HeadScope prunes the attention heads (or weights) of a BERT-family text classifier with "
    "methods from the literature: importance scores, A* search, learned gates, reinforcement "
    "learning and explanation-guided weight pruning. Every run is stored with its mask, metrics, "
    "cost and the trace of how the method got there, so the pages can replay the search, the "
    "gates and the controller step by step. Explanations and attention views then show what "
    "the pruned model does differently from the original on your own sentences."
)


@st.cache_resource(show_spinner="Loading the model…")
def cached_architecture(spec: ModelSpec, label_names: tuple[str, ...]) -> dict[str, object]:
    loaded = load_classifier(spec, label_names=label_names, device="cpu")
    n_layers, n_heads = head_grid(loaded.model)
    config: Any = loaded.model.config
    return {
        "layers": n_layers,
        "heads": n_heads,
        "params": count_parameters(loaded.model),
        "flops": flops_per_example(loaded.model, 128),
        "type": config.model_type,
        "hidden": config.hidden_size,
    }


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def plain(text: str) -> str:
    """User text (run names) shown literally inside Markdown captions."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def prepare_job_id(model: ModelSpec, data: DataSpec) -> str:
    """The preparation job of a model and dataset (the Model & data page uses the same ids)."""
    if model == ModelSpec() and data == DataSpec():
        return PREPARE_JOB
    return "prepare-" + hashlib.sha256(f"{model!r}{data!r}".encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# Model and data


def model_section(model_spec: ModelSpec, info: dict[str, object]) -> None:
    st.subheader("Model")
    cols = st.columns(4)
    layers, heads = int(str(info["layers"])), int(str(info["heads"]))
    cols[0].metric("Layers × heads", f"{layers} × {heads}")
    cols[1].metric("Attention heads", f"{layers * heads}")
    cols[2].metric("Parameters", f"{int(str(info['params'])) / 1e6:.1f} M")
    cols[3].metric("FLOPs / example (128 tokens)", f"{int(str(info['flops'])) / 1e9:.2f} G")
    st.caption(f"{model_spec.label} · {info['type']} · hidden size {info['hidden']}")


def classifier_section(prepared: PreparedModel) -> None:
    st.subheader("Fine-tuned classifier")
    test = prepared.metrics.get("test", {})
    cols = st.columns(4)
    for col, (name, label) in zip(
        cols,
        (
            ("accuracy", "Test accuracy"),
            ("mcc", "Test MCC"),
            ("macro_f1", "Test macro-F1"),
            ("loss", "Test loss"),
        ),
        strict=True,
    ):
        value = test.get(name)
        col.metric(label, "–" if value is None else f"{value:.3f}")


def preparation_section(model_spec: ModelSpec, data_spec: DataSpec) -> None:
    """No classifier yet: start (or offer) its preparation and show its progress."""
    st.subheader("Fine-tuned classifier")
    st.info(
        "The encoder has no classification head for this dataset yet. HeadScope fine-tunes it "
        "once (one epoch, a few minutes on a CPU, seconds on a GPU) and keeps the result in the "
        "model store."
    )
    job_id = prepare_job_id(model_spec, data_spec)
    job = executor().get(job_id)
    running = job is not None and not job.snapshot().finished
    if AUTO_PREPARE and job is None:
        executor().submit(job_id, "prepare", prepare_work(model_spec, data_spec))
    elif not running and st.button("Prepare the default classifier", type="primary"):
        executor().submit(job_id, "prepare", prepare_work(model_spec, data_spec))
        st.rerun()
    prepare_panel(job_id, "Fine-tuning the default classifier")


def details_section(dataset: LabelledDataset, prepared: PreparedModel | None) -> None:
    """Split sizes per class, example texts and the classifier's metrics per split."""
    with st.expander("Dataset and classifier details"):
        rows = []
        for name in ("train", "validation", "test"):
            split = dataset.split(name)
            counts = Counter(split.labels)
            row: dict[str, object] = {"split": name, "texts": len(split)}
            for class_id, label in enumerate(dataset.label_names):
                row[label] = counts.get(class_id, 0)
            rows.append(row)
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="content")
        sample = dataset.train.subset(8, seed=0)
        st.markdown("**Examples from the training split**")
        st.dataframe(
            pd.DataFrame(
                {"text": sample.texts, "label": [dataset.label_names[i] for i in sample.labels]}
            ),
            hide_index=True,
        )
        if prepared is None:
            return
        columns = {"accuracy": "Accuracy", "mcc": "MCC", "macro_f1": "Macro-F1", "loss": "Loss"}
        table = pd.DataFrame(
            [
                {
                    "Split": split,
                    **{
                        title: prepared.metrics.get(split, {}).get(k)
                        for k, title in columns.items()
                    },
                    "Texts": prepared.metrics.get(split, {}).get("n_examples"),
                }
                for split in ("validation", "test")
            ]
        )
        st.markdown("**The fine-tuned classifier**")
        st.dataframe(
            table,
            hide_index=True,
            width="content",
            column_config={
                t: st.column_config.NumberColumn(format="%.4f") for t in columns.values()
            },
        )
        seconds = prepared.info.get("train_seconds")
        if seconds is not None:
            st.caption(f"Prepared in {float(seconds):.0f} s · stored at `{prepared.path}`")


# ---------------------------------------------------------------------------------------------
# The gallery


class Tile(TypedDict, total=False):
    """One gallery tile: a figure (or an HTML fragment) with its title, caption and run.

    A plain dict (``st.cache_data`` copies its values by pickling, and a class defined in a page
    script could not be found again when they are read back).
    """

    kind: str
    title: str
    caption: str
    key: str
    figure: go.Figure
    html: str


def head_level(summaries: Sequence[RunSummary]) -> list[RunSummary]:
    """Runs that remove whole heads (weight-level runs keep every head)."""
    return [s for s in summaries if "weight_sparsity" not in s.metrics]


def pareto_tile(summaries: Sequence[RunSummary]) -> Tile | None:
    from viz.pareto import ParetoPoint, build_pareto_figure

    points = []
    for summary in head_level(summaries):
        recovered = "recovered_accuracy" in summary.metrics
        prefix = "recovered_" if recovered else ""
        points.append(
            ParetoPoint(
                label=summary.name,
                method=summary.method,
                key=summary.key,
                head_sparsity=summary.head_sparsity,
                accuracy=summary.metrics.get(f"{prefix}accuracy"),
                mcc=summary.metrics.get(f"{prefix}mcc"),
                recovered=recovered,
            )
        )
    if not points:
        return None
    dense = next(
        (s.metrics["dense_accuracy"] for s in summaries if "dense_accuracy" in s.metrics), None
    )
    return Tile(
        kind="pareto",
        title="Best accuracy at each sparsity",
        caption=f"{len(points)} runs of this classifier; the line is the best accuracy reached at "
        "each head sparsity (diamonds: fine-tuned after pruning). Each run is evaluated on its own "
        "split and number of texts, the dashed line is the newest run's unpruned accuracy.",
        figure=build_pareto_figure(points, dense=dense),
    )


def mask_tile(summaries: Sequence[RunSummary]) -> Tile | None:
    from viz.heads import build_mask_heatmap

    runs = head_level(summaries)
    if not runs:
        return None
    record = run_store().get(runs[0].key)
    scores = None if record.scores is None else record.scores.numpy()
    return Tile(
        kind="mask",
        title="Newest head mask",
        caption=f"{record.info.get('method_title', record.method)}: the heads it kept, coloured by "
        "their importance score; grey heads are removed.",
        key=record.key,
        figure=build_mask_heatmap(record.mask.numpy(), scores, title=record.name),
    )


def astar_tile(summaries: Sequence[RunSummary]) -> Tile | None:
    from viz.search import build_search_mask, search_iterations

    run = next((s for s in summaries if s.method == "astar"), None)
    if run is None:
        return None
    record = run_store().get(run.key)
    if not search_iterations(record.trace):
        return None
    info = record.info.get("method_info", {})
    return Tile(
        kind="astar",
        title="A\\* search replay",
        caption=f"{plain(record.name)}: the numbers are the order in which A* pruned the heads "
        f"({info.get('evaluations', '?')} mask evaluations); the A* page replays it iteration "
        "by iteration.",
        key=record.key,
        figure=build_search_mask(record.trace),
    )


def gates_tile(summaries: Sequence[RunSummary]) -> Tile | None:
    from viz.gates import build_gate_animation, parse_gate_trace

    run = next((s for s in summaries if s.method == "autoattention"), None)
    run = run or next((s for s in summaries if s.method == "l0_gates"), None)
    if run is None:
        return None
    record = run_store().get(run.key)
    history = parse_gate_trace(record.trace)
    return Tile(
        kind="gates",
        title="Gate evolution",
        caption=f"{plain(record.name)}: press play to watch the gates open and close while they "
        f"train ({history.n_snapshots} snapshots).",
        key=record.key,
        figure=build_gate_animation(history),
    )


def explanation_stamp() -> tuple[tuple[str, int], ...]:
    """Names and modification times of the newest explanation files (the tile's cache key)."""
    folder = headscope_home() / "explanations"
    if not folder.is_dir():
        return ()
    files = []
    for path in folder.glob("*.json"):
        try:
            files.append((path.name, path.stat().st_mtime_ns))
        except OSError:
            continue
    files.sort(key=lambda item: item[1], reverse=True)
    return tuple(files[:MAX_EXPLANATION_FILES])


def explanation_tile(
    stamp: Sequence[tuple[str, int]], prepared_key: str, run_keys: Sequence[str]
) -> Tile | None:
    """The explained text with the most models of this classifier, side by side (cache only)."""
    from viz.explain_html import side_by_side_html

    ours = {f"prepared:{prepared_key}", *(f"run:{key}" for key in run_keys)}
    cache = ExplanationCache()
    groups: dict[tuple[str, str, int], dict[str, Any]] = {}
    for name, _ in stamp:
        try:
            attribution = cache.get(name.removesuffix(".json"))
        except ValueError:
            continue  # not an explanation key
        if attribution is None or attribution.model_key not in ours:
            continue
        group = groups.setdefault((attribution.text, attribution.method, attribution.target), {})
        group.setdefault(attribution.model_key, attribution)
    if not groups:
        return None
    (_, method, _), group = max(groups.items(), key=lambda item: len(item[1]))
    original = f"prepared:{prepared_key}"
    chosen = sorted(group.values(), key=lambda a: (a.model_key != original, a.model_label))[:4]
    return Tile(
        kind="explanation",
        title="One explanation side by side",
        caption=f"{method.upper()} word attributions of {len(chosen)} model"
        f"{'s' if len(chosen) > 1 else ''} for one sentence, from the explanation cache.",
        html=side_by_side_html(chosen),
    )


@st.cache_data(max_entries=4, show_spinner="Loading the gallery…")
def gallery_tiles(
    runs: tuple[tuple[str, str], ...],
    prepared_key: str,
    stamp: tuple[tuple[str, int], ...],
    _summaries: Sequence[RunSummary],
) -> tuple[list[Tile], list[str]]:
    """The gallery's tiles and the problems met; ``runs`` (keys and names) and ``stamp`` key
    the cache.

    A run's key fixes its content, and its name is the only thing a user can change, so the same
    keys and names always give the same tiles.
    """
    builders = (pareto_tile, mask_tile, astar_tile, gates_tile)
    tiles, problems = [], []
    for builder in builders:
        try:
            tile = builder(_summaries)
        except ValueError as error:  # a damaged or unreadable run: that tile is left out
            problems.append(f"A gallery tile is left out: {error}")
            continue
        if tile is not None:
            tiles.append(tile)
    explanation = explanation_tile(stamp, prepared_key, [key for key, _ in runs])
    if explanation is not None:
        tiles.append(explanation)
    return tiles, problems


def open_run(key: str, page: str, session_key: str | None = None) -> None:
    """Go to ``page`` with the run ``key`` chosen (Runs: as the filter)."""
    if page == "pages/runs.py":
        st.session_state["runs-filter"] = key
    elif session_key:
        st.session_state[session_key] = key
    st.switch_page(page)


# Where each tile's link goes: (page, label, session key the page reads its default run from).
TILE_LINKS = {
    "pareto": ("pages/runs.py", "All runs", None),
    "mask": ("pages/runs.py", "Open in Runs", None),
    "astar": ("pages/search.py", "Replay on the A* page", "last_run_search_jobs"),
    "gates": ("pages/gates.py", "Replay on the Gates page", "last_run_gates_jobs"),
    "explanation": ("pages/explanations.py", "Explanations", None),
}


def draw_tile(tile: Tile) -> None:
    kind = tile["kind"]
    page, label, session_key = TILE_LINKS[kind]
    with st.container(border=True):
        st.markdown(f"**{tile['title']}**")
        if "figure" in tile:
            show_chart(tile["figure"], f"gallery-{kind}", width="stretch", key=f"gallery-{kind}")
        if "html" in tile:
            st.html(tile["html"])
        st.caption(tile["caption"])
        if "key" in tile:
            if st.button(label, key=f"gallery-open-{kind}"):
                open_run(tile["key"], page, session_key)
        else:
            st.page_link(page, label=label, icon=":material/arrow_forward:")


def gallery(prepared: PreparedModel, summaries: list[RunSummary]) -> None:
    st.subheader("Gallery")
    runs = tuple((s.key, s.name) for s in summaries)
    tiles, problems = gallery_tiles(runs, prepared.key, explanation_stamp(), summaries)
    for problem in problems:
        st.warning(problem)
    if not tiles:
        st.info("The stored runs of this classifier have no figures to show yet.")
        return
    wide = [t for t in tiles if t["kind"] == "explanation"]
    pairs = [t for t in tiles if t["kind"] != "explanation"]
    for start in range(0, len(pairs), 2):
        cols = st.columns(2)
        for col, tile in zip(cols, pairs[start : start + 2], strict=False):
            with col:
                draw_tile(tile)
    for tile in wide:
        draw_tile(tile)


# ---------------------------------------------------------------------------------------------
# The guided first run


def first_run_request(model: ModelSpec, data: DataSpec) -> RunRequest:
    """HISP removing half of the heads, scored and evaluated on validation slices."""
    return RunRequest(
        method="hisp",
        config={"sparsity": 0.5},
        model=model,
        data=data,
        score_split="validation",
        score_examples=FIRST_RUN_SCORE_TEXTS,
        eval_split="validation",
        eval_examples=FIRST_RUN_EVAL_TEXTS,
        name=FIRST_RUN_NAME,
    )


def _texts_used(dataset: LabelledDataset, split: str, examples: int | None) -> int:
    """How many texts of ``split`` a run reads when asked for ``examples`` (None: all of them);
    the pipeline takes ``split.subset(examples)``, which is the whole split when that is smaller."""
    size = len(dataset.split(split))
    return size if examples is None else min(examples, size)


def first_run_texts(settings: Mapping[str, Any], dataset: LabelledDataset) -> str:
    """What the first run scores and evaluates on, from its run settings
    (:meth:`RunRequest.run_settings`, stored in the record as ``info["settings"]``).

    The offer (before the run, from :func:`first_run_request`) and the result (from the stored
    run) both say this, so they cannot disagree.
    """
    score_split, eval_split = str(settings["score_split"]), str(settings["eval_split"])
    scored = _texts_used(dataset, score_split, int(settings["score_examples"]))
    evaluated = _texts_used(dataset, eval_split, settings["eval_examples"])
    return (
        f"scoring every head on {scored:,} {score_split} texts and comparing accuracy before and "
        f"after on {evaluated:,} {eval_split} texts"
    )


def start_first_run(model: ModelSpec, data: DataSpec, prepared: PreparedModel | None) -> str:
    """Queue the preparation (when needed) and the first run behind it; returns the run's job."""
    if prepared is None:
        executor().submit(prepare_job_id(model, data), "prepare", prepare_work(model, data))
    request = first_run_request(model, data)
    job_id = request_job_id(request, "prune")
    executor().submit(job_id, "hisp", pruning_work(request), meta={"title": FIRST_RUN_NAME})
    return job_id


@st.fragment(run_every=1.0)
def first_run_panel(job_id: str) -> None:
    """The first run's progress; once it is stored, the page reruns to show it."""
    job = executor().get(job_id)
    if job is None:  # the server restarted: the job is gone
        st.session_state.pop(FIRST_RUN_JOB, None)
        return
    snap = job.snapshot()
    if snap.status == "queued":
        st.info(
            f"{FIRST_RUN_NAME}: waiting for the classifier's preparation to finish "
            f"(position {snap.queue_position} in the queue)."
        )
    elif snap.status == "done":
        st.session_state[FIRST_RUN_KEY] = snap.result
        st.session_state["last_run"] = snap.result
        st.session_state.pop(FIRST_RUN_JOB, None)
        st.rerun(scope="app")
    elif snap.status == "failed":
        st.error(
            f"The first run failed: {snap.error}. If the classifier's preparation failed too, "
            "check the model and data on the Model & data page, then press Start again."
        )
    else:
        job_status(job, snap)


def first_run_result(record: RunRecord, dataset: LabelledDataset) -> None:
    """What the first run did: accuracy before and after, heads and FLOPs removed, its mask."""
    from viz.heads import build_mask_heatmap

    st.success(
        "Your first run is stored. HISP removed the half of the heads it found least important, "
        f"{first_run_texts(record.info['settings'], dataset)}."
    )
    dense = record.metrics.get("dense", {})
    pruned = record.metrics.get("pruned", {})
    cols = st.columns(4)
    if "accuracy" in pruned:
        delta = pruned["accuracy"] - dense.get("accuracy", pruned["accuracy"])
        cols[0].metric("Validation accuracy, pruned", f"{pruned['accuracy']:.3f}", f"{delta:+.3f}")
    if "accuracy" in dense:
        cols[1].metric("Validation accuracy, unpruned", f"{dense['accuracy']:.3f}")
    cols[2].metric("Heads removed", f"{record.mask.numel() - record.kept} / {record.mask.numel()}")
    cost = record.metrics.get("cost", {})
    if cost.get("flops_dense"):
        cols[3].metric("FLOPs removed", f"{1 - cost['flops_pruned'] / cost['flops_dense']:.1%}")
    scores = None if record.scores is None else record.scores.numpy()
    show_chart(
        build_mask_heatmap(record.mask.numpy(), scores, title=record.name),
        f"mask-{record.name}",
        width="stretch",
        key="first-run-mask",
    )
    links = st.columns(3)
    with links[0]:
        if st.button("Open in Runs", key="first-run-open"):
            open_run(record.key, "pages/runs.py")
    links[1].page_link("pages/prune.py", label="Try other methods", icon=":material/content_cut:")
    links[2].page_link("pages/search.py", label="Search with A*", icon=":material/travel_explore:")


def first_run_section(
    model: ModelSpec,
    data: DataSpec,
    dataset: LabelledDataset,
    prepared: PreparedModel | None,
    has_runs: bool,
) -> None:
    """The guided first run: offered while this classifier has no runs; progress; result."""
    job_id = st.session_state.get(FIRST_RUN_JOB)
    key = st.session_state.get(FIRST_RUN_KEY)
    record = None
    if key is not None:
        try:
            record = run_store().get(str(key))
        except ValueError:  # deleted (or damaged) since: offer the first run again if need be
            st.session_state.pop(FIRST_RUN_KEY, None)
    if has_runs and job_id is None and record is None:
        return
    st.subheader("First run")
    if record is not None:
        first_run_result(record, dataset)
        return
    if job_id is None:
        st.markdown(
            "New here? **Start the first run**: HeadScope "
            + ("prepares the classifier, then " if prepared is None else "")
            + "removes half of the attention heads with HISP (head importance scores, Michel et "
            f"al. 2019), {first_run_texts(first_run_request(model, data).run_settings(), dataset)}"
            + (". Both steps run" if prepared is None else ". It runs")
            + " in the background with progress; about a minute on a laptop CPU"
            + (" plus the preparation." if prepared is None else ".")
        )
        if st.button("Start the first run", type="primary", key="first-run-start"):
            st.session_state[FIRST_RUN_JOB] = start_first_run(model, data, prepared)
            st.rerun()
        return
    first_run_panel(str(job_id))


# ---------------------------------------------------------------------------------------------


def main() -> None:
    st.title("HeadScope")
    st.write(INTRO)
    model_spec, data_spec = current_specs()
    try:
        dataset = cached_dataset(data_spec)
        info = cached_architecture(model_spec, dataset.label_names)
    except (ValueError, FileNotFoundError) as error:
        st.error(f"{error}")
        st.info("Run `make setup` to install the offline default model and data, then reload.")
        return
    model_section(model_spec, info)
    st.subheader("Dataset")
    st.write(dataset.description)
    prepared = prepared_for(model_spec, data_spec)
    if prepared is not None:
        classifier_section(prepared)
    else:
        preparation_section(model_spec, data_spec)
    summaries: list[RunSummary] = []
    if prepared is not None:
        summaries, problems = run_store().list(model_fingerprint=f"prepared:{prepared.key}")
        for problem in problems:
            st.warning(f"Run store: {problem}")
    first_run_section(model_spec, data_spec, dataset, prepared, bool(summaries))
    if prepared is not None and summaries:
        gallery(prepared, summaries)
    details_section(dataset, prepared)


ensure_app_navigation()
main()
