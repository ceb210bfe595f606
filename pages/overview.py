"""Overview: the default model and dataset, and the prepared classifier's metrics.

On first start the default encoder is fine-tuned on the default dataset in a background job
(a few minutes on a CPU) with visible progress; later starts load it from the model store.
"""

from __future__ import annotations

import os
from collections import Counter

import pandas as pd
import streamlit as st

from cache.model_store import PreparedModel
from pages.common import (
    cached_dataset,
    ensure_app_navigation,
    executor,
    prepare_panel,
    prepare_work,
    prepared_for,
)
from pruning.cost import count_parameters, flops_per_example
from pruning.data import DataSpec, LabelledDataset
from pruning.heads import head_grid
from pruning.models import ModelSpec, load_classifier

AUTO_PREPARE = os.environ.get("HEADSCOPE_AUTOPREPARE", "1") != "0"
PREPARE_JOB = "prepare-default"


@st.cache_resource(show_spinner="Loading the model…")
def cached_architecture(spec: ModelSpec, label_names: tuple[str, ...]) -> dict[str, object]:
    loaded = load_classifier(spec, label_names=label_names, device="cpu")
    n_layers, n_heads = head_grid(loaded.model)
    return {
        "layers": n_layers,
        "heads": n_heads,
        "params": count_parameters(loaded.model),
        "flops": flops_per_example(loaded.model, 128),
        "type": loaded.model.config.model_type,
        "hidden": loaded.model.config.hidden_size,
    }


def dataset_section(dataset: LabelledDataset) -> None:
    st.subheader("Dataset")
    st.write(dataset.description)
    rows = []
    for name in ("train", "validation", "test"):
        split = dataset.split(name)
        counts = Counter(split.labels)
        row: dict[str, object] = {"split": name, "texts": len(split)}
        for class_id, label in enumerate(dataset.label_names):
            row[label] = counts.get(class_id, 0)
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="content")
    with st.expander("Examples from the training split"):
        sample = dataset.train.subset(8, seed=0)
        st.dataframe(
            pd.DataFrame(
                {
                    "text": sample.texts,
                    "label": [dataset.label_names[i] for i in sample.labels],
                }
            ),
            hide_index=True,
        )


def model_section(model_spec: ModelSpec, info: dict[str, object]) -> None:
    st.subheader("Model")
    cols = st.columns(4)
    cols[0].metric("Layers × heads", f"{info['layers']} × {info['heads']}")
    cols[1].metric("Attention heads", f"{int(info['layers']) * int(info['heads'])}")  # type: ignore[call-overload]
    cols[2].metric("Parameters", f"{int(info['params']) / 1e6:.1f} M")  # type: ignore[call-overload]
    cols[3].metric("FLOPs / example (128 tokens)", f"{int(info['flops']) / 1e9:.2f} G")  # type: ignore[call-overload]
    st.caption(f"{model_spec.label} · {info['type']} · hidden size {info['hidden']}")


def metrics_section(prepared: PreparedModel) -> None:
    st.subheader("Fine-tuned classifier")
    test = prepared.metrics.get("test", {})
    validation = prepared.metrics.get("validation", {})
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
    columns = {
        "accuracy": "Accuracy",
        "mcc": "MCC",
        "macro_f1": "Macro-F1",
        "loss": "Loss",
        "n_examples": "Texts",
    }
    table = pd.DataFrame(
        [
            {"Split": split, **{title: values.get(name) for name, title in columns.items()}}
            for split, values in (("validation", validation), ("test", test))
        ]
    )
    st.dataframe(
        table,
        hide_index=True,
        width="content",
        column_config={
            title: st.column_config.NumberColumn(format="%.4f")
            for title in ("Accuracy", "MCC", "Macro-F1", "Loss")
        },
    )
    seconds = prepared.info.get("train_seconds")
    if seconds is not None:
        st.caption(f"Prepared in {float(seconds):.0f} s · stored at `{prepared.path}`")


def main() -> None:
    st.title("HeadScope")
    st.write(
        "Prune the attention heads of a BERT-family classifier and see what the pruning changed."
    )
    model_spec, data_spec = ModelSpec(), DataSpec()
    try:
        dataset = cached_dataset(data_spec)
        info = cached_architecture(model_spec, dataset.label_names)
    except (ValueError, FileNotFoundError) as error:
        st.error(f"{error}")
        st.info("Run `make setup` to install the offline default model and data, then reload.")
        return
    model_section(model_spec, info)
    prepared = prepared_for(model_spec, data_spec)
    if prepared is not None:
        metrics_section(prepared)
    else:
        st.subheader("Fine-tuned classifier")
        st.info(
            "The default encoder has no classification head for this dataset yet. HeadScope "
            "fine-tunes it once (one epoch, a few minutes on a CPU, seconds on a GPU) and keeps "
            "the result in the model store."
        )
        job = executor().get(PREPARE_JOB)
        running = job is not None and not job.snapshot().finished
        if AUTO_PREPARE and job is None:
            executor().submit(PREPARE_JOB, "prepare default", prepare_work(model_spec, data_spec))
        elif not running and st.button("Prepare the default classifier", type="primary"):
            executor().submit(PREPARE_JOB, "prepare default", prepare_work(model_spec, data_spec))
            st.rerun()
        prepare_panel(PREPARE_JOB, "Fine-tuning the default classifier")
    dataset_section(dataset)


ensure_app_navigation()
main()
