"""Prune: pick a method from the registry, set it up, run it in the background, see the mask."""

from __future__ import annotations

import streamlit as st

from cache.model_store import PreparedModel
from pages.support.common import (
    config_form,
    current_specs,
    ensure_app_navigation,
    job_status,
    require_prepared,
    run_settings_ui,
    run_store,
    submit_runs,
    tracked_jobs,
)
from pages.support.figures import show_chart
from pruning.methods.base import list_methods
from pruning.models import config_head_grid
from pruning.pipeline import RunRequest
from viz.heads import build_mask_heatmap

MAX_SWEEP = 64


def parse_seeds(text: str, first: int) -> list[int]:
    """``first`` followed by the seeds of ``"1, 2"`` (duplicates dropped, order kept).

    Raises:
        ValueError: a part that is not a whole number in 0..2**31-1.
    """
    seeds = [first]
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) > 2**31 - 1:
            raise ValueError(
                f"More seeds: {part!r} is not a seed; give whole numbers separated by commas, "
                "e.g. 1, 2."
            )
        if int(part) not in seeds:
            seeds.append(int(part))
    if len(seeds) > MAX_SWEEP:
        raise ValueError(f"More seeds: at most {MAX_SWEEP} runs at once (got {len(seeds)}).")
    return seeds


def settings_ui(prepared: PreparedModel) -> list[RunRequest] | None:
    """The method picker and its generated form; returns the requests when Run is pressed.

    One request per seed (the form's seed and any "More seeds"): several make a sweep, which
    runs as one job (one Ray task per run with the Ray executor). The requests are checked before
    they are returned (settings in range, a head count the prepared model can give up), so a bad
    setting shows an error here and no job is started.
    """
    methods = list_methods()
    titles = {cls.name: f"{cls.title} ({cls.name})" for cls in methods}
    names = [cls.name for cls in methods]
    default = names.index("hisp") if "hisp" in names else 0
    name = st.selectbox("Method", names, index=default, format_func=titles.__getitem__)
    method = next(cls for cls in methods if cls.name == name)
    if method.paper:
        st.caption(method.paper)
    model_spec, data_spec = current_specs()
    with st.form(f"prune-form-{name}"):
        st.markdown("**Method settings**")
        config = config_form(method.config_class, key=f"cfg-{name}")
        settings = run_settings_ui(
            "Scoring texts", "Validation texts the method may use to score heads."
        )
        more_seeds = st.text_input(
            "More seeds (a sweep)",
            value="",
            placeholder="e.g. 1, 2",
            help="Also run these seeds: one run per seed, stored separately and compared on the "
            "Compare page. With the Ray executor (sidebar) they run in parallel.",
        )
        name_label = st.text_input("Run name", value="", placeholder="optional label")
        submitted = st.form_submit_button("Run", type="primary")
    if not submitted:
        return None
    try:
        seeds = parse_seeds(more_seeds, settings.seed)
        label = name_label.strip()
        requests = [
            RunRequest(
                method=name,
                config={k: v for k, v in config.items()},
                model=model_spec,
                data=data_spec,
                seed=seed,
                score_examples=settings.examples,
                eval_split=settings.eval_split,
                recovery_steps=settings.recovery_steps,
                name=f"{label} seed {seed}" if label and len(seeds) > 1 else label,
            )
            for seed in seeds
        ]
        method_config = requests[0].method_config()
        heads_to_prune = getattr(method_config, "heads_to_prune", None)
        if heads_to_prune is not None:
            heads_to_prune(*config_head_grid(prepared.path))
    except ValueError as error:
        st.error(f"{error} Nothing was started; change the setting and press Run again.")
        return None
    return requests


def show_run(key: str) -> None:
    """The mask heatmap and the metrics of a stored run."""
    try:
        record = run_store().get(key)
    except ValueError as error:
        st.error(f"This run cannot be shown: {error}")
        return
    st.subheader(f"Result: {record.info.get('name', record.method)}")
    dense = record.metrics.get("dense", {})
    pruned = record.metrics.get("pruned", {})
    recovered = record.metrics.get("recovered")
    cols = st.columns(4)
    cols[0].metric("Heads kept", f"{int(record.mask.sum())} / {record.mask.numel()}")
    for col, (metric, label) in zip(
        cols[1:], (("accuracy", "Accuracy"), ("mcc", "MCC"), ("macro_f1", "Macro-F1")), strict=True
    ):
        after = (recovered or pruned).get(metric)
        before = dense.get(metric)
        if after is None:
            continue
        delta = None if before is None else f"{after - before:+.3f}"
        col.metric(label + (" (recovered)" if recovered else ""), f"{after:.3f}", delta)
    scores = None if record.scores is None else record.scores.numpy()
    figure = build_mask_heatmap(record.mask.numpy(), scores, title=record.info.get("name", ""))
    show_chart(figure, f"mask-{record.info.get('name', record.key)}", width="stretch")
    st.caption(f"Run `{record.key}` · stored; find it on the Runs page.")


@st.fragment(run_every=1.0)
def jobs_panel() -> None:
    """Live progress of queued and running pruning jobs (all sessions share the machine)."""
    for job, snap in tracked_jobs("prune", "prune_jobs"):
        job_status(job, snap)


def main() -> None:
    st.title("Prune")
    prepared = require_prepared()
    if prepared is None:
        return
    st.caption(
        f"Classifier `{prepared.key}` · test accuracy "
        f"{(prepared.metric('accuracy') or 0.0):.3f} · classes {', '.join(prepared.label_names)}"
    )
    settings, results = st.columns([2, 3], gap="large")
    with settings:
        requests = settings_ui(prepared)
    if requests:
        submit_runs(requests, prefix="prune", session_key="prune_jobs")
    with results:
        jobs_panel()
        last = st.session_state.get("last_run")
        if last:
            show_run(str(last))
        else:
            st.info("Choose a method and press Run: progress and the resulting mask appear here.")


ensure_app_navigation()
main()
