"""DeepCuts: unstructured weight pruning with explanation scores, compared across ratios.

Each (strategy, compression ratio) pair is one background run of the ``deepcuts`` method. The page
reads the stored runs of the current classifier: accuracy against ratio, a table with both
compression-ratio definitions (HeadScope's prunable / kept, the paper's whole-model ratio and its
BERT-base equivalent, see :mod:`pruning.compression`), one run's density map and honest size, and
the IoU of the strategies' weight masks, including the paper's Figure 9 (mean and minimum IoU
across layers at its ratios 3 and 3.5; pruned-set IoU, as in the paper's figures).

IoU needs the parameter layout (head size, layer of each parameter): the page loads the prepared
classifier once on the CPU (``st.cache_resource``) and hands it to :mod:`pruning.weight_masks`
rather than re-deriving the layout from mask shapes, so the numbers match the method's own.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

import pandas as pd
import streamlit as st
import torch
from torch import nn

from cache.model_store import PreparedModel
from cache.run_store import RunRecord
from pages.support.common import (
    current_specs,
    ensure_app_navigation,
    executor,
    job_status,
    model_store,
    require_prepared,
    run_store,
    submit_run,
    tracked_jobs,
)
from pages.support.figures import show_chart
from pruning.compression import (
    ParameterCounts,
    bert_base_keep_share,
    headscope_counts,
    keep_share_for,
    stored_ratios,
)
from pruning.cost import compare_latency
from pruning.jobs import Progress
from pruning.methods.base import get_method
from pruning.pipeline import RunRequest
from viz.deepcuts import (
    CostRow,
    IouMatrices,
    RatioPoint,
    build_cost_table,
    build_density_heatmap,
    build_head_iou_heatmap,
    build_iou_matrices,
    build_iou_matrix,
    build_layer_iou_chart,
    build_ratio_curves,
)

STRATEGIES = {
    "layer_mag_weight": "Weight magnitude, per layer",
    "global_mag_weight": "Weight magnitude, global",
    "layer_mag_grad": "Gradient magnitude, per layer",
    "cam_cut": "CAM-Cut (Grad-CAM)",
    "smooth_cut": "Smooth-Cut (SmoothGrad)",
    "smooth_cam": "Smooth-CAM (SmoothGrad + Grad-CAM)",
}
DEFAULT_STRATEGIES = ["cam_cut", "smooth_cut", "layer_mag_weight"]
RATIOS = [1.25, 1.5, 1.75, 2.0, 3.0, 3.5, 4.0]
DEFINITIONS = {
    "prunable": "prunable / kept weights (HeadScope)",
    "whole_model": "whole model, this classifier (the paper's definition)",
    "bert_base_equivalent": "the paper's ratio on BERT-base (keep share)",
}
AXIS_TITLES = {
    "prunable": "compression ratio (all prunable weights / kept weights)",
    "whole_model": "compression ratio (all parameters / remaining parameters)",
    "bert_base_equivalent": "the paper's compression ratio on BERT-base (whole model)",
}
PAPER_FIGURE9_RATIOS = (3.0, 3.5)
IouSet = Literal["pruned", "kept"]
IOU_SET_CHOICES: list[IouSet] = ["pruned", "kept"]
IOU_SETS = {"pruned": "pruned weights (the paper's figures)", "kept": "kept weights"}
SESSION_JOBS = "deepcuts_jobs"
LATENCY_PREFIX = "dclatency"  # not "deepcuts-": tracked_jobs would take it for a pruning run
NO_METHOD = (
    "The DeepCuts method is not available in this installation (no 'deepcuts' in the method "
    "registry), so new runs cannot start. Update HeadScope; stored runs are still shown below."
)


def strategy_of(record: RunRecord) -> str:
    return str(record.config.get("strategy", "?"))


def ratio_of(record: RunRecord) -> float:
    try:
        return float(record.config.get("compression_ratio", math.nan))
    except (TypeError, ValueError):
        return math.nan


def definition_of(record: RunRecord) -> str:
    return str(record.config.get("ratio_definition", "prunable"))


def run_label(record: RunRecord) -> str:
    definition = definition_of(record)
    suffix = "" if definition == "prunable" else f" ({definition.replace('_', ' ')})"
    return f"{strategy_of(record)} · {ratio_of(record):g}×{suffix} · {record.key[:6]}"


def ratio_columns(record: RunRecord) -> dict[str, float | None]:
    """Both ratio definitions of a run (runs stored before issue #27 included)."""
    ratios = stored_ratios(record.info.get("method_info", {}), record.metrics.get("cost", {}))
    return {
        "kept share": ratios["keep_share"],
        "prunable ratio": ratios["achieved_ratio"],
        "whole-model ratio": ratios["whole_model_ratio"],
        "BERT-base ratio": ratios["bert_base_ratio"],
    }


def accuracy(record: RunRecord, section: str) -> float | None:
    value = (record.metrics.get(section) or {}).get("accuracy")
    return None if value is None else float(value)


def config_fields() -> dict[str, dataclasses.Field[Any]] | None:
    """The DeepCuts config's fields by name, or None when the method is not registered."""
    try:
        method = get_method("deepcuts")
    except ValueError:
        return None
    return {f.name: f for f in dataclasses.fields(method.config_class)}


def field_input(fields: dict[str, dataclasses.Field[Any]], name: str, label: str) -> Any:
    """A number input from a config field's default, bounds and help; None when it has none."""
    spec = fields.get(name)
    if spec is None or spec.default is dataclasses.MISSING:
        return None
    meta, default = spec.metadata, spec.default
    cast = int if isinstance(default, int) and not isinstance(default, bool) else float
    low, high = meta.get("min"), meta.get("max")
    return st.number_input(
        meta.get("label", label),
        min_value=None if low is None else cast(low),
        max_value=None if high is None else cast(high),
        value=cast(default),
        step=cast(meta.get("step", 1 if cast is int else 0.01)),
        help=meta.get("help"),
        key=f"deepcuts:{name}",
        format="%d" if cast is int else "%g",
    )


def settings_form(
    fields: dict[str, dataclasses.Field[Any]], counts: Callable[[], ParameterCounts]
) -> list[RunRequest]:
    """The DeepCuts form; returns one request per (strategy, ratio) when Run is pressed.

    ``counts``: the classifier's parameter counts, asked for only to check whole-model ratios.
    """
    model_spec, data_spec = current_specs()
    choices = list(fields["strategy"].metadata.get("choices", STRATEGIES))
    definition_field = fields.get("ratio_definition")
    definitions = list(definition_field.metadata["choices"]) if definition_field else []
    with st.form("deepcuts-form"):
        strategies = st.multiselect(
            "Strategies",
            choices,
            default=[s for s in DEFAULT_STRATEGIES if s in choices],
            format_func=lambda s: STRATEGIES.get(s, s),
        )
        ratios = st.multiselect(
            "Compression ratios",
            RATIOS,
            default=[3.0],
            format_func=lambda r: f"{r:g}×",
            help="Read as the ratio definition says: prunable 3× keeps a third of the prunable "
            "weights; the paper's 3× (whole model, BERT-base) keeps 14.7% of them.",
        )
        definition = "prunable"
        if definition_field is not None:
            definition = st.selectbox(
                definition_field.metadata.get("label", "Ratio definition"),
                definitions,
                format_func=lambda d: DEFINITIONS.get(d, d),
                help=definition_field.metadata.get("help"),
            )
        values: dict[str, Any] = {}
        cols = st.columns(2)
        for index, (name, label) in enumerate(
            [
                ("grad_batches", "Gradient batches"),
                ("cam_lambda", "CAM lambda"),
                ("smooth_samples", "SmoothGrad samples"),
                ("smooth_noise_std", "SmoothGrad noise std"),
                ("refine_steps", "Refine steps"),
            ]
        ):
            with cols[index % 2]:
                values[name] = field_input(fields, name, label)
        seed = cols[1].number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1)
        examples = st.number_input(
            "Evaluation texts",
            min_value=16,
            max_value=100_000,
            value=None,
            step=64,
            placeholder="whole test split",
            help="Test texts each pruned model is evaluated on; empty = the whole test split.",
        )
        submitted = st.form_submit_button("Run", type="primary")
    if not submitted:
        return []
    if not strategies or not ratios:
        st.error("Pick at least one strategy and one compression ratio, then press Run again.")
        return []
    common = {k: v for k, v in values.items() if v is not None}
    if definition != "prunable":
        common["ratio_definition"] = definition
    requests = []
    try:
        for strategy, ratio in itertools.product(strategies, ratios):
            request = RunRequest(
                method="deepcuts",
                config={**common, "strategy": strategy, "compression_ratio": float(ratio)},
                model=model_spec,
                data=data_spec,
                seed=int(seed),
                eval_examples=None if examples is None else int(examples),
                name=f"DeepCuts · {strategy} · {ratio:g}×"
                + ("" if definition == "prunable" else f" ({definition})"),
            )
            request.method_config()
            if definition == "whole_model":
                keep_share_for(definition, float(ratio), counts())
            requests.append(request)
    except ValueError as error:
        st.error(f"{error} Nothing was started; fix the setting and press Run again.")
        return []
    return requests


@st.fragment(run_every=1.0)
def jobs_panel() -> None:
    """Queued and running DeepCuts runs (one at a time in the server's executor)."""
    jobs = tracked_jobs("deepcuts", SESSION_JOBS)
    if not jobs:
        st.info("Pick strategies and ratios and press Run: each pair runs as one job, in turn.")
    for job, snap in jobs:
        job_status(job, snap)


def stored_runs(prepared: PreparedModel) -> list[RunRecord]:
    """This classifier's DeepCuts runs, newest first (unreadable ones are reported)."""
    summaries, _ = run_store().list(method="deepcuts", model_fingerprint=f"prepared:{prepared.key}")
    records = []
    for summary in summaries:
        try:
            records.append(run_store().get(summary.key))
        except ValueError as error:
            st.warning(f"Run {summary.key} cannot be read and is left out: {error}")
    return records


def newest_per_pair(records: list[RunRecord]) -> list[RunRecord]:
    """The newest run of every (strategy, ratio definition, ratio) (``records``: newest first)."""
    chosen: dict[tuple[str, str, float], RunRecord] = {}
    for record in records:
        chosen.setdefault((strategy_of(record), definition_of(record), ratio_of(record)), record)
    return list(chosen.values())


def results_overview(records: list[RunRecord]) -> None:
    """Accuracy against ratio per strategy (one ratio definition), and a table of every run."""
    latest = [r for r in newest_per_pair(records) if math.isfinite(ratio_of(r))]
    present = list(dict.fromkeys(definition_of(r) for r in latest))
    definition = present[0] if present else "prunable"
    if len(present) > 1:
        definition = st.radio(
            "Ratio definition of the curves",
            present,
            horizontal=True,
            format_func=lambda d: DEFINITIONS.get(d, d),
        )
    shown = [r for r in latest if definition_of(r) == definition]
    points = [
        RatioPoint(strategy_of(r), ratio_of(r), acc, accuracy(r, "recovered"))
        for r in shown
        if (acc := accuracy(r, "pruned")) is not None
    ]
    if points:
        show_chart(
            build_ratio_curves(
                points,
                dense_accuracy=accuracy(records[0], "dense"),
                strategy_labels=STRATEGIES,
                axis_title=AXIS_TITLES.get(definition, "compression ratio"),
            ),
            "deepcuts-accuracy-vs-ratio",
            width="stretch",
        )
        settings = {str(r.info.get("settings", {}).get("eval_examples")) for r in shown}
        note = " They were evaluated on different numbers of texts." if len(settings) > 1 else ""
        st.caption(
            f"Newest run of every strategy and ratio; the dense line is its model.{note} The "
            "paper finds all strategies alike up to its ratio 2 and Cam-Cut / Smooth-Cut ahead "
            "at 3-4 (whole-model ratios of BERT-base: the BERT-base ratio column)."
        )
    rows = []
    for record in records:
        cost = record.metrics.get("cost", {})
        rows.append(
            {
                "strategy": strategy_of(record),
                "ratio": ratio_of(record),
                "definition": definition_of(record),
                **ratio_columns(record),
                "accuracy": accuracy(record, "pruned"),
                "recovered accuracy": accuracy(record, "recovered"),
                "non-zeros": cost.get("params_nonzero"),
                "sparse MB": (cost.get("sparse_bytes") or math.nan) / 1e6,
                "dense MB": (cost.get("dense_bytes") or math.nan) / 1e6,
                "seed": record.seed,
                "run": record.name,
                "key": record.key,
            }
        )
    ratio_format = st.column_config.NumberColumn(format="%.2f×")
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={
            "ratio": st.column_config.NumberColumn(format="%.2f×"),
            "kept share": st.column_config.NumberColumn(format="percent"),
            "prunable ratio": ratio_format,
            "whole-model ratio": ratio_format,
            "BERT-base ratio": ratio_format,
            "non-zeros": st.column_config.NumberColumn(format="localized"),
            "accuracy": st.column_config.NumberColumn(format="%.4f"),
            "recovered accuracy": st.column_config.NumberColumn(format="%.4f"),
            "sparse MB": st.column_config.NumberColumn(format="%.2f"),
            "dense MB": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    st.caption(
        "prunable ratio = prunable / kept weights (HeadScope); whole-model ratio = all / "
        "remaining parameters of this classifier (the paper's definition, via ShrinkBench); "
        "BERT-base ratio = the paper's ratio that keeps the same share of BERT-base's prunable "
        "weights (2: 36.1%, 3: 14.7%, 3.5: 8.7%, 4: 4.1%)."
    )


def latency_work(prepared_key: str, masks: dict[str, torch.Tensor]) -> Callable[[Progress], Any]:
    """Background work: time the dense classifier against a copy with the masks applied."""

    def work(progress: Progress) -> dict[str, Any]:
        from pruning.weight_scores import apply_weight_masks

        progress.update(0.0, "loading the classifier")
        dense = model_store().resolve(prepared_key).load().model
        masked = apply_weight_masks(dense, masks)
        progress.update(0.2, "timing dense and masked forwards (batch 1 × 128 tokens)")
        timing = compare_latency(dense, masked, repeats=20)
        return {
            "dense_ms": timing["dense"].median_ms,
            "masked_ms": timing["pruned"].median_ms,
            "device": timing["dense"].device,
        }

    return work


@st.fragment(run_every=1.0)
def latency_status(job_id: str) -> None:
    """Progress of a latency measurement; reruns the page once when it is done."""
    job = executor().get(job_id)
    if job is None:
        return
    snap = job.snapshot()
    handled = st.session_state.setdefault("handled_jobs", set())
    if snap.status in ("queued", "running", "failed", "cancelled"):
        job_status(job, snap)
    elif snap.status == "done" and job_id not in handled:
        handled.add(job_id)
        st.rerun(scope="app")


def run_view(record: RunRecord) -> None:
    """One run: its per-head weight density and its honest size (and latency when measured)."""
    left, right = st.columns([3, 2], gap="large")
    with left:
        title = f"Weight density per head · {run_label(record)}"
        try:
            if record.scores is None:
                raise ValueError("it has no scores")
            figure = build_density_heatmap(record.scores.numpy(), title=title)
        except ValueError as error:
            st.error(f"This run stored no usable density map ({error}); run it again.")
        else:
            show_chart(figure, f"weight-density-{run_label(record)}", width="stretch")
    cost = record.metrics.get("cost", {})
    with right:
        st.info(
            "Unstructured masks leave every matrix its dense shape: dense kernels still multiply "
            "the zeros, so there is no dense speed-up (the latency stays the same) and the size "
            "shrinks only in a sparse format. CSR stores 8 bytes per kept weight (value and "
            "column index), so it pays only below half density, and embeddings count too."
        )
        if not all(k in cost for k in ("params_nonzero", "dense_bytes", "sparse_bytes")):
            st.warning("This run has no sparse-size figures; run it again to measure them.")
            return
        total = cost.get("params_dense") or 0
        share = f"{cost['params_nonzero'] / total:.1%} of all parameters" if total else None
        st.metric(
            "Non-zero weights",
            f"{cost['params_nonzero'] / 1e6:.2f} M",
            share,
            delta_color="off",
            delta_arrow="off",
        )
        cols = st.columns(2)
        cols[0].metric("Dense size", f"{cost['dense_bytes'] / 1e6:.1f} MB")
        cols[1].metric("Sparse size (CSR)", f"{cost['sparse_bytes'] / 1e6:.1f} MB")
    job_id = f"{LATENCY_PREFIX}-{record.key}"
    job = executor().get(job_id)
    timing = job.snapshot().result if job is not None else None
    row = CostRow(
        name=run_label(record),
        params_nonzero=int(cost["params_nonzero"]),
        dense_bytes=int(cost["dense_bytes"]),
        sparse_bytes=int(cost["sparse_bytes"]),
        params_total=total or None,
        dense_ms=timing["dense_ms"] if isinstance(timing, dict) else None,
        masked_ms=timing["masked_ms"] if isinstance(timing, dict) else None,
    )
    show_chart(
        build_cost_table([row], title="Size and latency"), "size-and-latency", width="stretch"
    )
    if isinstance(timing, dict):
        st.caption(
            f"Median of 20 interleaved forwards (batch 1 × 128 tokens) on {timing['device']}: "
            "the masked model runs the same dense kernels."
        )
    if st.button("Measure latency", key=f"latency-{record.key}"):
        masks = dict(record.extra_tensors)
        prepared_key = str(record.model.get("prepared_key"))
        executor().submit(job_id, "latency", latency_work(prepared_key, masks))
    if executor().get(job_id) is not None:
        latency_status(job_id)


@st.cache_resource(show_spinner="Loading the classifier for the weight layout…", max_entries=2)
def layout_model(prepared_key: str) -> nn.Module:
    """The prepared classifier on the CPU: weight_masks reads head size and layers from it."""
    return model_store().resolve(prepared_key).load(device="cpu").model


def _ratio_group_label(group: tuple[str, float]) -> str:
    definition, ratio = group
    return f"{ratio:g}× ({DEFINITIONS.get(definition, definition)})"


def _keep_share(records: list[RunRecord]) -> float | None:
    shares = [s for r in records if (s := ratio_columns(r)["kept share"]) is not None]
    return sum(shares) / len(shares) if shares else None


def figure9_view(
    latest: list[RunRecord], model: nn.Module, which: IouSet, weight_masks: Any
) -> None:
    """The paper's Figure 9: mean and minimum IoU across layers at its ratios 3 and 3.5."""
    panels = []
    for ratio in PAPER_FIGURE9_RATIOS:
        runs = [
            r
            for r in latest
            if ratio_of(r) == ratio and definition_of(r) in ("bert_base_equivalent", "whole_model")
        ]
        definitions = {definition_of(r) for r in runs}
        # One definition per panel: prefer BERT-base shares, the paper's ratios on its model.
        chosen = "bert_base_equivalent" if "bert_base_equivalent" in definitions else "whole_model"
        runs = [r for r in runs if definition_of(r) == chosen]
        if len({strategy_of(r) for r in runs}) < 2:
            continue
        masks = {strategy_of(r): r.extra_tensors for r in runs}
        names, mean_iou, min_iou = weight_masks.iou_matrices(
            model, masks, which=which, over="layers"
        )
        share = _keep_share(runs) or bert_base_keep_share(ratio)
        chance = weight_masks.random_iou(share, which=which)
        labels = tuple(STRATEGIES.get(n, n) for n in names)
        panels.append(IouMatrices(ratio, labels, mean_iou.numpy(), min_iou.numpy(), chance))
    if not panels:
        st.info(
            "Figure 9 needs two or more strategies at the paper's ratio 3 or 3.5 with the ratio "
            "definition 'the paper's ratio on BERT-base' (or 'whole model'): pick Cam-Cut, "
            "Smooth-Cut and weight magnitude per layer, ratios 3× and 3.5×, and that definition."
        )
        return
    show_chart(
        build_iou_matrices(
            panels,
            which=which,
            over="layers",
            title=f"IoU of the {which} weights across layers (the paper's Figure 9)",
        ),
        f"deepcuts-figure9-{which}",
        width="stretch",
    )
    st.caption(
        "Mean and minimum over the encoder layers of each layer's IoU; 'random masks' is the IoU "
        "two unrelated masks of the same density would have. The paper reports about 0.82-0.86 "
        "per layer for weight magnitude against Cam-Cut or Smooth-Cut and about 0.95 between "
        "Cam-Cut and Smooth-Cut: values that only the pruned-set IoU gives at these densities."
    )


def iou_view(records: list[RunRecord], prepared: PreparedModel) -> None:
    """IoU of weight masks: two runs head by head, every strategy at one ratio, or Figure 9."""
    try:
        from pruning import weight_masks
    except ImportError:
        st.error(
            "Comparing weight masks needs pruning.weight_masks, which this installation lacks. "
            "Update HeadScope; the runs above are unaffected."
        )
        return
    usable = [r for r in records if r.extra_tensors]
    if len(usable) < 2:
        st.info("IoU needs two runs with stored weight masks: run two strategies or ratios.")
        return
    model = layout_model(prepared.key)
    cols = st.columns(2)
    mode = cols[0].radio(
        "Compare",
        ["Two runs", "All strategies at one ratio", "The paper's Figure 9 (ratios 3 and 3.5)"],
    )
    which: IouSet = cols[1].radio(
        "IoU of",
        IOU_SET_CHOICES,
        format_func=IOU_SETS.__getitem__,
        help="The paper compares 'the weights which are selected after pruning'; its figures' "
        "values (0.82-0.95 at 8-15% kept) are IoUs of the pruned sets, as the authors' "
        "mask_IOU.py computes them. Kept-set IoUs of the same masks are far lower.",
    )
    try:
        if mode == "Two runs":
            labels = {run_label(r): r for r in usable}
            cols = st.columns(2)
            first = cols[0].selectbox("First run", list(labels), index=0)
            second = cols[1].selectbox("Second run", list(labels), index=1)
            if first == second:
                st.info("Pick two different runs.")
                return
            a, b = labels[first].extra_tensors, labels[second].extra_tensors
            overall = weight_masks.mask_iou(a, b, which=which)
            st.metric(f"IoU of the {which} weights over all masked weights", f"{overall:.3f}")
            heads = weight_masks.head_iou(model, a, b, which=which).numpy()
            layers = {
                f"{first} vs {second}": weight_masks.layer_iou(model, a, b, which=which).numpy()
            }
            cols = st.columns(2)
            show_chart(
                build_head_iou_heatmap(heads, (first, second), which=which),
                f"head-iou-{which}-{first}-vs-{second}",
                container=cols[0],
                width="stretch",
            )
            show_chart(
                build_layer_iou_chart(layers, which=which),
                f"layer-iou-{which}-{first}-vs-{second}",
                container=cols[1],
                width="stretch",
            )
            return
        latest = newest_per_pair(usable)
        if mode != "All strategies at one ratio":
            figure9_view(latest, model, which, weight_masks)
            return
        counts = Counter((definition_of(r), ratio_of(r)) for r in latest)
        groups = sorted(g for g, n in counts.items() if n > 1)
        if not groups:
            st.info("No ratio has runs of two strategies yet: run several strategies at one ratio.")
            return
        definition, ratio = st.selectbox("Ratio", groups, format_func=_ratio_group_label)
        masks = {
            strategy_of(r): r.extra_tensors
            for r in latest
            if ratio_of(r) == ratio and definition_of(r) == definition
        }
        names, mean_iou, min_iou = weight_masks.iou_matrices(model, masks, which=which)
        cols = st.columns(2)
        for col, matrix, what in ((cols[0], mean_iou, "Mean"), (cols[1], min_iou, "Minimum")):
            title = f"{what} IoU over heads at {ratio:g}×"
            show_chart(
                build_iou_matrix(names, matrix.numpy(), title=title),
                f"{what}-iou-{which}-at-{ratio:g}x",
                container=col,
                width="stretch",
            )
        pairs = {
            f"{x} vs {y}": weight_masks.layer_iou(model, masks[x], masks[y], which=which).numpy()
            for x, y in itertools.combinations(masks, 2)
        }
        show_chart(
            build_layer_iou_chart(
                pairs, title=f"Weight-mask IoU per layer at {ratio:g}×", which=which
            ),
            f"layer-iou-{which}-at-{ratio:g}x",
            width="stretch",
        )
    except (ValueError, KeyError) as error:
        st.error(f"The IoU of these masks cannot be computed: {error}. Compare runs of one model.")


def main() -> None:
    st.title("DeepCuts")
    st.caption(
        "Unstructured pruning of attention weights scored by explanation methods (Grad-CAM, "
        "SmoothGrad) or by magnitude: masks live inside the heads, so heads stay but thin out."
    )
    prepared = require_prepared()
    if prepared is None:
        return
    fields = config_fields()
    settings, live = st.columns([2, 3], gap="large")
    with settings:
        if fields is None or "strategy" not in fields:
            st.error(NO_METHOD)
            requests = []
        else:
            paper = get_method("deepcuts").paper
            if paper:
                st.caption(paper)
            requests = settings_form(fields, lambda: headscope_counts(layout_model(prepared.key)))
    for request in requests:
        submit_run(request, prefix="deepcuts", session_key=SESSION_JOBS)
    with live:
        jobs_panel()

    st.subheader("Stored runs of this classifier")
    records = stored_runs(prepared)
    if not records:
        st.info("No DeepCuts run stored for this classifier yet: pick strategies and press Run.")
        return
    results_overview(records)

    st.subheader("One run: density and honest size")
    keys = [r.key for r in records]
    last = st.session_state.get(f"last_run_{SESSION_JOBS}")
    by_key = {r.key: r for r in records}
    chosen = st.selectbox(
        "Run",
        keys,
        index=keys.index(last) if last in keys else 0,
        format_func=lambda k: f"{run_label(by_key[k])} · {by_key[k].created[:19]}",
    )
    run_view(by_key[chosen])

    st.subheader("Where the strategies' masks agree (IoU)")
    iou_view(records, prepared)


ensure_app_navigation()
main()
