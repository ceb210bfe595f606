"""Labelled Hugging Face datasets, loaded with the optional ``datasets`` package.

Names: one of ``KNOWN_HF_DATASETS``, ``"glue/<task>"`` (GLUE's config, text columns from
``GLUE_TEXT_COLUMNS``), ``"owner/name"`` or ``"owner/name:config"`` (see :func:`hf_source`). The
data must be reachable or in the local ``datasets`` cache.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pruning.datasets_base import (
    SPLIT_NAMES,
    LabelledDataset,
    TextSplit,
    data_fingerprint,
    describe_splits,
)
from pruning.splits import apportion, as_int, assign_splits, encode_labels, row_key

if TYPE_CHECKING:
    from pruning.data import DataSpec

# Hugging Face datasets known to work without naming a config or columns.
KNOWN_HF_DATASETS = ("imdb", "ag_news", "yelp_polarity", "emotion")
# GLUE tasks: text column, optional second text column. Their test labels are hidden (-1).
GLUE_TEXT_COLUMNS: dict[str, tuple[str, str | None]] = {
    "sst2": ("sentence", None),
    "cola": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}


def hf_source(name: str) -> tuple[str, str | None]:
    """``(path, config)`` for ``datasets.load_dataset``: ``"glue/sst2"`` -> GLUE's sst2 config,
    ``"owner/name:config"`` -> that config, anything else -> no config."""
    if ":" in name:
        path, config = name.split(":", 1)
        return path, config or None
    if name.startswith("glue/"):
        return "nyu-mll/glue", name.split("/", 1)[1]
    return name, None


def load_hf_dataset(spec: DataSpec) -> LabelledDataset:
    """Load a labelled Hugging Face dataset with the optional ``datasets`` package.

    Splits: ``test`` is the dataset's test split when all its labels are known; otherwise its
    validation split (GLUE hides test labels as -1). ``validation`` is the dataset's validation
    split when it is not already used as test; otherwise it is carved from train
    (``spec.val_fraction`` of it, stratified and seeded as in :func:`assign_splits`). Texts are
    used as published (no stripping or de-duplication). Label names come from the ``ClassLabel``
    feature when there is one (its ids are kept), else from :func:`encode_labels`. ``max_rows``
    caps every split in proportion to its size.

    Raises:
        ValueError: when ``datasets`` is not installed, the data can be neither downloaded nor found
            in the local cache, or the columns or labels do not fit.
    """
    try:
        datasets = importlib.import_module("datasets")
    except ImportError as exc:
        raise ValueError(
            f"Loading {spec.name!r} needs the Hugging Face datasets package: install it with "
            "pip install 'headscope[hf]', or use the offline rotten_tomatoes data or a CSV file."
        ) from exc
    path, config = hf_source(spec.name)
    try:
        loaded = datasets.load_dataset(path, config)
    except Exception as exc:  # datasets raises many types for network, cache and name problems
        raise ValueError(
            f"Could not load the Hugging Face dataset {spec.name!r}: it could not be reached "
            f"(no network?) or found in the local cache ({type(exc).__name__}: {exc}). Check the "
            "name, download it once while online, or use rotten_tomatoes or a CSV file."
        ) from exc
    if "train" not in loaded:
        raise ValueError(f"{spec.name!r} has no train split (splits: {list(loaded)}).")
    train = loaded["train"]
    text_col, pair_col, label_col = _hf_columns(spec, path, config, list(train.column_names))
    names = getattr(train.features.get(label_col), "names", None)

    def read(split_name: str) -> tuple[list[str], list[str] | None, list[Any]]:
        part = loaded[split_name]
        texts = [str(text) for text in part[text_col]]
        pairs = [str(text) for text in part[pair_col]] if pair_col else None
        return texts, pairs, list(part[label_col])

    def usable(split_name: str) -> bool:
        if split_name not in loaded or len(loaded[split_name]) == 0:
            return False
        return all(
            as_int(label) is None or int(label) >= 0 for label in loaded[split_name][label_col]
        )

    parts = {"train": read("train")}
    test_source = next((s for s in ("test", "validation", "validation_matched") if usable(s)), None)
    val_source = next(
        (s for s in ("validation", "validation_matched") if s != test_source and usable(s)), None
    )
    if test_source:
        parts["test"] = read(test_source)
    if val_source:
        parts["validation"] = read(val_source)
    all_labels = [label for part in parts.values() for label in part[2]]
    if names:
        ids = [int(label) for label in all_labels]
        label_names = tuple(str(name) for name in names)
    else:
        ids, label_names = encode_labels(all_labels)
    offset = 0
    splits: dict[str, TextSplit] = {}
    for split_name, (texts, pairs, labels) in parts.items():
        chunk = ids[offset : offset + len(labels)]
        offset += len(labels)
        splits[split_name] = TextSplit(tuple(texts), tuple(chunk), tuple(pairs) if pairs else None)
    carved = [s for s, source in (("validation", val_source), ("test", test_source)) if not source]
    if carved:
        whole = splits["train"]
        pairs_or_blank = whole.text_pairs or ("",) * len(whole)
        keys = [
            row_key(spec.seed, str(i), text, pair)
            for i, (text, pair) in enumerate(zip(whole.texts, pairs_or_blank, strict=True))
        ]
        assignment = assign_splits(
            whole.labels,
            keys,
            spec.val_fraction if val_source is None else 0.0,
            spec.test_fraction if test_source is None else 0.0,
        )
        for split_name in ("train", *carved):
            splits[split_name] = whole.take(
                [i for i, s in enumerate(assignment) if s == split_name]
            )
    if spec.max_rows is not None:
        caps = apportion(spec.max_rows, [len(splits[s]) for s in SPLIT_NAMES])
        for split_name, cap in zip(SPLIT_NAMES, caps, strict=True):
            splits[split_name] = splits[split_name].subset(max(cap, 1), seed=spec.seed)
    ordered = {s: splits[s] for s in SPLIT_NAMES}
    params = {
        "source": "huggingface",
        "name": spec.name,
        "text_column": text_col,
        "label_column": label_col,
        "text_pair_column": pair_col,
        "seed": spec.seed,
        "val_fraction": spec.val_fraction,
        "test_fraction": spec.test_fraction,
        "max_rows": spec.max_rows,
    }
    note = f"test = {test_source}" if test_source else "test carved from train"
    note += f", validation = {val_source}" if val_source else ", validation carved from train"
    return LabelledDataset(
        name=spec.name,
        label_names=label_names,
        **ordered,
        fingerprint=data_fingerprint(ordered, label_names, params),
        description=describe_splits(f"{spec.name} (Hugging Face)", "texts", label_names, ordered)
        + f" ({note})",
    )


def _hf_columns(
    spec: DataSpec, path: str, config: str | None, columns: list[str]
) -> tuple[str, str | None, str]:
    """Text, pair and label columns: the spec's, except that the default ``"text"`` falls back to
    the GLUE task's usual column (``"sentence"`` for sst2/cola, ...) when the data has no
    ``"text"`` column."""
    task_text, task_pair = ("text", None)
    if path == "nyu-mll/glue":
        task_text, task_pair = GLUE_TEXT_COLUMNS.get(config or "", (task_text, task_pair))
    default_text = type(spec).__dataclass_fields__["text_column"].default
    keep_spec = spec.text_column != default_text or spec.text_column in columns
    text_col = spec.text_column if keep_spec else task_text
    pair_col = spec.text_pair_column or task_pair
    label_col = spec.label_column
    for role, column in (("text", text_col), ("label", label_col), ("text_pair", pair_col)):
        if column is not None and column not in columns:
            raise ValueError(
                f"{spec.name!r} has no {role.replace('_', ' ')} column {column!r}; available "
                f"columns: {', '.join(columns)}. Set DataSpec.{role}_column to one of them."
            )
    return text_col, pair_col, label_col
