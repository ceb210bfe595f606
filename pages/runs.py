"""Runs: every stored run with its metrics; filter, rename, delete, export, import, compare, and
download an HTML report of the selected runs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from cache.run_export import export_file_name
from cache.run_format import RunSummary
from pages.support.common import ensure_app_navigation, model_store, run_store
from pages.support.figures import show_chart
from pruning.report import build_report, report_file_name
from viz.compare import build_mask_comparison
from viz.heads import build_mask_heatmap
from viz.metrics import build_metric_deltas

METRIC_COLUMNS = ("accuracy", "mcc", "macro_f1", "loss")


def runs_table(summaries: list[RunSummary]) -> pd.DataFrame:
    rows = []
    for summary in summaries:
        row = {
            "key": summary.key,
            "name": summary.name,
            "method": summary.method,
            "created": summary.created[:19].replace("T", " "),
            "head sparsity": summary.head_sparsity,
            "weight sparsity": summary.metrics.get("weight_sparsity"),
            "seed": summary.seed,
        }
        for name in METRIC_COLUMNS:
            row[name] = summary.metrics.get(name)
            delta = summary.metrics.get(f"delta_{name}")
            row[f"Δ {name}"] = delta
        row["model"] = summary.model_label
        row["data"] = summary.data_label
        rows.append(row)
    return pd.DataFrame(rows)


def export_ui(key: str) -> None:
    """Export a run as a zip (pruned model that reloads, mask JSON, metrics, trace)."""
    record = run_store().get(key)
    if st.button("Build export", key=f"export-{key}"):
        with st.spinner("Writing the pruned model and the run files…"):
            base = None
            tokenizer = None
            if not record.has_model:
                prepared = model_store().resolve(str(record.model.get("prepared_key")))
                loaded = prepared.load(device="cpu")
                base, tokenizer = loaded.model, loaded.tokenizer
            folder = Path(tempfile.mkdtemp(prefix="headscope-export-"))
            archive = run_store().export(
                key,
                folder / export_file_name(key, str(record.info.get("name", ""))),
                as_zip=True,
                base_model=base,
                tokenizer=tokenizer,
            )
            st.session_state[f"export-path-{key}"] = str(archive)
    path = st.session_state.get(f"export-path-{key}")
    if path and Path(path).is_file():
        st.download_button(
            "Download zip",
            data=Path(path).read_bytes(),
            file_name=Path(path).name,
            mime="application/zip",
            key=f"download-{key}",
        )


def import_ui() -> None:
    upload = st.file_uploader("Import an exported run (.zip)", type=["zip"])
    if upload is not None and st.button("Import"):
        folder = Path(tempfile.mkdtemp(prefix="headscope-import-"))
        archive = folder / "run.zip"
        archive.write_bytes(upload.getvalue())
        try:
            record = run_store().import_run(archive)
        except ValueError as error:
            st.error(f"Could not import this file: {error}")
        else:
            st.success(f"Imported run `{record.key}` ({record.method}).")


def compare_ui(keys: list[str]) -> None:
    records = []
    for key in keys:
        try:
            records.append(run_store().get(key))
        except ValueError as error:
            st.error(f"Run {key} cannot be read: {error}")
    if len(records) < 2:
        return
    shapes = {tuple(r.mask.shape) for r in records}
    if len(shapes) > 1:
        st.error(
            "These runs come from models with different head grids; compare runs of one model."
        )
        return
    names = [f"{r.info.get('name', r.method)} ({r.key[:6]})" for r in records]
    # Scores of different methods live on different scales: then each run is coloured by its
    # own min-max range (hover keeps the raw scores).
    same_method = len({r.method for r in records}) == 1
    figure = build_mask_comparison(
        [r.mask.numpy() for r in records],
        names,
        [None if r.scores is None else r.scores.numpy() for r in records],
        shared_range=same_method,
    )
    show_chart(figure, "mask-comparison", width="stretch")
    if not same_method:
        st.caption(
            "Colours: each run's importance scores scaled to its own range (methods score heads "
            "on different scales); hover a cell for the raw score."
        )
    rows = [r.metrics.get("recovered") or r.metrics.get("pruned", {}) for r in records]
    show_chart(build_metric_deltas(rows, names), "metric-deltas", width="stretch")


@st.cache_data(max_entries=4, show_spinner=False)
def report_html(runs: tuple[tuple[str, str], ...]) -> str:
    """The HTML report of these runs (keys and names: a rename changes the report)."""
    return build_report([key for key, _ in runs])


def report_ui(keys: list[str], names: list[str]) -> None:
    """Download a self-contained HTML report of the selected runs, built when clicked."""
    runs = tuple(zip(keys, names, strict=True))
    what = "this run" if len(keys) == 1 else f"these {len(keys)} runs"
    st.download_button(
        "Download HTML report",
        data=lambda: report_html(runs),
        file_name=report_file_name(keys, names),
        mime="text/html",
        on_click="ignore",
        key="runs-report",
        help=f"One HTML file with the figures, metrics, cost, configuration and software "
        f"versions of {what}; it opens offline in any browser (about 5 MB: plotly is inside).",
    )


def main() -> None:
    st.title("Runs")
    store = run_store()
    cols = st.columns([2, 2, 1])
    text = cols[0].text_input("Filter", placeholder="name, method or key", key="runs-filter")
    summaries, problems = store.list(text=text.strip() or None)
    methods = sorted({s.method for s in summaries})
    chosen = cols[1].multiselect("Methods", methods, default=methods)
    summaries = [s for s in summaries if s.method in chosen]
    for problem in problems:
        st.warning(f"Run store: {problem}")
    if not summaries:
        st.info("No runs stored yet. Run a method on the Prune page.")
        import_ui()
        return
    table = runs_table(summaries)
    event = st.dataframe(
        table,
        hide_index=True,
        on_select="rerun",
        selection_mode="multi-row",
        key="runs-table",
        column_config={
            "head sparsity": st.column_config.NumberColumn(format="percent"),
            "weight sparsity": st.column_config.NumberColumn(
                format="percent", help="Zeroed weights of unstructured (DeepCuts) runs"
            ),
            **{c: st.column_config.NumberColumn(format="%.4f") for c in METRIC_COLUMNS},
            **{f"Δ {c}": st.column_config.NumberColumn(format="%+.4f") for c in METRIC_COLUMNS},
        },
    )
    rows = event.selection.rows
    selected = [summaries[i].key for i in rows]
    if not selected:
        st.caption(
            "Select one run to inspect, rename, export, report or delete it; two or more to "
            "compare them or to download a report of them all."
        )
    else:
        report_ui(selected, [summaries[i].name for i in rows])
    if len(selected) == 1:
        key = selected[0]
        record = store.get(key)
        scores = None if record.scores is None else record.scores.numpy()
        show_chart(
            build_mask_heatmap(record.mask.numpy(), scores, title=record.info.get("name", "")),
            f"mask-{record.info.get('name', key)}",
            width="stretch",
        )
        actions = st.columns(3)
        with actions[0]:
            new_name = st.text_input("Name", value=record.info.get("name", ""), key=f"name-{key}")
            if st.button("Rename", key=f"rename-{key}") and new_name.strip():
                store.rename(key, new_name.strip())
                st.rerun()
        with actions[1]:
            export_ui(key)
        with actions[2]:
            if st.button("Delete run", key=f"delete-{key}"):
                store.delete(key)
                st.rerun()
    elif len(selected) > 1:
        compare_ui(selected)
    with st.expander("Import a run"):
        import_ui()


ensure_app_navigation()
main()
