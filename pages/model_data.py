"""Model & data: choose the encoder and the dataset the other pages work on."""

from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

from cache.paths import headscope_home
from pages.support.common import (
    cached_dataset,
    current_specs,
    ensure_app_navigation,
    executor,
    prepare_panel,
    prepare_work,
    prepared_for,
)
from pruning.data import (
    MAX_CLASSES,
    MAX_CSV_BYTES,
    MAX_CSV_ROWS,
    DataSpec,
    read_table,
    store_upload,
)
from pruning.models import ModelSpec, check_architecture


def model_ui(current: ModelSpec) -> ModelSpec | None:
    sources = {
        "default": "Embedded default (all-MiniLM-L6-v2)",
        "local": "Local folder",
        "hub": "Hugging Face hub id (needs network)",
    }
    source = st.radio(
        "Model source",
        list(sources),
        format_func=sources.__getitem__,
        index=list(sources).index(current.source),
        horizontal=True,
    )
    if source == "default":
        return ModelSpec()
    label = "Folder with config.json and weights" if source == "local" else "Model id"
    path = st.text_input(
        label,
        value=current.path or "",
        placeholder="e.g. ~/models/my-bert"
        if source == "local"
        else "e.g. textattack/bert-base-uncased-SST-2",
    )
    if not path.strip():
        st.info("Enter a path or id.")
        return None
    try:
        spec = ModelSpec(source=source, path=path.strip())  # type: ignore[arg-type]
        family = check_architecture(spec)
    except (ValueError, OSError) as error:
        # UnsupportedArchitectureError is a ValueError: a GPT-2 folder is refused here, before
        # anything is prepared for it.
        st.error(f"{error}")
        return None
    if family is None:
        st.info("This hub model is not in the local cache; it is downloaded when it is prepared.")
    return spec


def upload_megabytes() -> int:
    """The largest table an upload may be: Streamlit's upload cap or the data limit, the lower."""
    server_cap = int(st.get_option("server.maxUploadSize") or 0) or MAX_CSV_BYTES // 2**20
    return min(server_cap, MAX_CSV_BYTES // 2**20)


def data_ui(current: DataSpec) -> DataSpec | None:
    kinds = {
        "rotten_tomatoes": "Rotten Tomatoes (offline default)",
        "csv": "CSV / TSV file",
        "hf": "Hugging Face dataset name",
    }
    now = current.name if current.name in ("rotten_tomatoes", "csv") else "hf"
    kind = st.radio(
        "Dataset",
        list(kinds),
        format_func=kinds.__getitem__,
        index=list(kinds).index(now),
        horizontal=True,
    )
    if kind == "rotten_tomatoes":
        return DataSpec()
    if kind == "hf":
        name = st.text_input(
            "Dataset name",
            value=current.name if now == "hf" else "",
            placeholder="glue/sst2, glue/cola, imdb",
        )
        if not name.strip():
            return None
        try:
            return DataSpec(name=name.strip())
        except ValueError as error:
            st.error(f"{error}")
            return None
    upload = st.file_uploader(
        "Table with a text column and a label column",
        type=["csv", "tsv", "txt", "gz", "bz2"],
        help=f"UTF-8 CSV or TSV, up to {upload_megabytes()} MB and {MAX_CSV_ROWS:,} rows, 2 to "
        f"{MAX_CLASSES} classes with at least 2 rows each; every text and label filled in.",
    )
    if upload is None:
        return current if current.name == "csv" else None
    try:
        frame = read_table(upload.getvalue(), name=upload.name)
    except ValueError as error:
        st.error(f"{error}")
        return None
    st.dataframe(frame.head(8), hide_index=True)
    columns = list(frame.columns)
    cols = st.columns(2)
    text_default = columns.index("text") if "text" in columns else 0
    label_default = columns.index("label") if "label" in columns else min(1, len(columns) - 1)
    text_column = cols[0].selectbox("Text column", columns, index=text_default)
    label_column = cols[1].selectbox("Label column", columns, index=label_default)
    try:
        spec, _ = store_upload(
            upload.getvalue(),
            upload.name,
            headscope_home() / "uploads",
            text_column=text_column,
            label_column=label_column,
        )
    except (ValueError, OSError) as error:
        st.error(f"{error} Nothing was kept; fix the file or pick other columns.")
        return None
    return spec


def main() -> None:
    st.title("Model & data")
    current_model, current_data = current_specs()
    st.subheader("Model")
    model = model_ui(current_model)
    st.subheader("Dataset")
    data = data_ui(current_data)
    device = st.selectbox(
        "Device",
        ["auto", "cpu", "cuda", "mps"],
        index=["auto", "cpu", "cuda", "mps"].index(st.session_state.get("device", "auto")),
        help="auto picks CUDA, then Apple MPS, else the CPU.",
    )
    if model is None or data is None:
        return
    try:
        dataset = cached_dataset(data)
    except (ValueError, FileNotFoundError) as error:
        st.error(f"{error}")
        return
    st.success(dataset.description)
    counts = pd.Series([dataset.label_names[i] for i in dataset.train.labels]).value_counts()
    st.dataframe(counts.rename("training texts"), width="content")
    if st.button("Use this model and dataset", type="primary"):
        st.session_state["model_spec"] = model
        st.session_state["data_spec"] = data
        st.session_state["device"] = device
        st.success("Selected: the other pages now use this model and dataset.")
    prepared = prepared_for(model, data)
    if prepared is not None:
        st.info(
            f"A classifier is prepared for this pair: `{prepared.key}`, test accuracy "
            f"{(prepared.metric('accuracy') or 0.0):.3f}."
        )
        return
    st.warning(
        "No classifier is prepared for this model and dataset: its classes "
        f"({', '.join(dataset.label_names)}) need a fine-tuned head. HeadScope never evaluates a "
        "model on classes it was not trained for."
    )
    job_id = "prepare-" + hashlib.sha256(f"{model!r}{data!r}".encode()).hexdigest()[:12]
    if st.button("Prepare a classifier for this dataset"):
        executor().submit(job_id, "prepare", prepare_work(model, data))
    prepare_panel(job_id, "Fine-tuning")


ensure_app_navigation()
main()
