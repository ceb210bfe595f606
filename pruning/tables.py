"""User tables (CSV/TSV files, bytes or uploads) read, checked and turned into datasets.

:func:`read_table` reads every cell as text, decompresses ``.bz2``/``.gz``/``.xz``, picks the
delimiter and accepts UTF-8 only, up to ``MAX_CSV_BYTES``. :func:`dataset_from_frame` checks the
table row by row (errors name the offending 1-based data rows), strips texts and labels, removes
exact duplicate texts keeping the first, encodes labels (2..``MAX_CLASSES`` classes, each with 2+
rows), optionally caps the rows per class and splits them with :func:`pruning.splits.assign_splits`.
:func:`load_csv_dataset` chains the two.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import logging
import lzma
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import pandas as pd

from pruning.datasets_base import (
    SPLIT_NAMES,
    LabelledDataset,
    TextSplit,
    data_fingerprint,
    describe_splits,
)
from pruning.splits import assign_splits, check_fractions, encode_labels, row_key, stratified_sample

log = logging.getLogger(__name__)

MAX_CLASSES = 20
MAX_CSV_BYTES = 200 * 1024 * 1024
_OPENERS: dict[str, Callable[..., Any]] = {".bz2": bz2.open, ".gz": gzip.open, ".xz": lzma.open}
_SHOWN_ROWS = 5


def read_table(source: str | Path | bytes | IO[bytes], *, name: str | None = None) -> pd.DataFrame:
    """Read a CSV/TSV file, bytes or binary upload (e.g. Streamlit) into a frame of strings.

    Every cell is read as text (no ``NA`` guessing: a review reading "None" stays a text); column
    names are stripped. Files ending ``.bz2``/``.gz``/``.xz`` are decompressed. The delimiter is
    a tab for ``.tsv``/``.tab`` names, otherwise the most frequent of ``,`` tab ``;`` ``|`` in the
    header line (``,`` when none occurs). Text must be UTF-8 (a BOM is fine): other encodings are
    rejected rather than guessed, so texts and fingerprints never change silently.

    Args:
        source: a path, the file's bytes, or a binary file-like object (``.name`` used if set).
        name: file name used for the suffix rules when ``source`` is bytes or a file-like object.

    Raises:
        ValueError: when the file is missing, larger than ``MAX_CSV_BYTES`` (200 MB), not UTF-8,
            empty or not parseable.
    """
    raw, file_name = _read_bytes(source, name)
    suffixes = [suffix.lower() for suffix in Path(file_name).suffixes]
    if suffixes and suffixes[-1] in _OPENERS:
        raw = _decompress(raw, suffixes.pop(), file_name)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1]
        raise ValueError(
            f"{file_name} is not UTF-8 text (byte {exc.start} is {bad!r}). Re-save it as UTF-8 "
            "(in Excel: Save As > 'CSV UTF-8'; in pandas: to_csv(..., encoding='utf-8'))."
        ) from exc
    if not text.strip():
        raise ValueError(f"{file_name} is empty; it needs a header row and at least one data row.")
    if suffixes and suffixes[-1] in (".tsv", ".tab"):
        delimiter = "\t"
    else:
        header = text.lstrip().splitlines()[0]
        counts = {sep: header.count(sep) for sep in (",", "\t", ";", "|")}
        delimiter = max(counts, key=lambda sep: counts[sep]) if max(counts.values()) else ","
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            # index_col=False: a trailing delimiter (common in spreadsheet exports) must not turn
            # the first column into the index.
            frame = pd.read_csv(
                io.StringIO(text),
                sep=delimiter,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                index_col=False,
            )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as exc:
        raise ValueError(
            f"Could not parse {file_name} as {'TSV' if delimiter == chr(9) else 'CSV'} "
            f"(delimiter {delimiter!r}): {exc}. Check quoting and that every row has as many "
            "fields as the header (line numbers count the header as line 1)."
        ) from exc
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        log.warning(
            "%s: some rows have more fields than the header; extras were ignored.", file_name
        )
    frame.columns = [str(column).strip() for column in frame.columns]
    return frame


def _decompress(raw: bytes, suffix: str, file_name: str) -> bytes:
    """Decompress ``raw`` by its suffix, reading at most ``MAX_CSV_BYTES`` + 1 bytes."""
    try:
        with _OPENERS[suffix](io.BytesIO(raw)) as stream:
            data: bytes = stream.read(MAX_CSV_BYTES + 1)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise ValueError(f"Could not decompress {file_name}: {exc}. Use the plain file.") from exc
    _check_size(len(data), file_name)
    return data


def _read_bytes(source: str | Path | bytes | IO[bytes], name: str | None) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray):
        _check_size(len(source), name or "the upload")
        return bytes(source), name or "upload.csv"
    if isinstance(source, str | Path):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValueError(f"No file at {path}; check the path (it must be a CSV or TSV file).")
        _check_size(path.stat().st_size, path.name)
        return path.read_bytes(), name or path.name
    file_name = name or Path(str(getattr(source, "name", "upload.csv"))).name
    raw = source.read(MAX_CSV_BYTES + 1)
    if isinstance(raw, str):
        raise ValueError("read_table needs a binary file object; open the file with mode 'rb'.")
    _check_size(len(raw), file_name)
    return bytes(raw), file_name


def _check_size(size: int, file_name: str) -> None:
    if size > MAX_CSV_BYTES:
        raise ValueError(
            f"{file_name} is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB; "
            "use a sample of it (e.g. with DataSpec.max_rows on a smaller file)."
        )


def _rows_text(rows: Sequence[int]) -> str:
    """'data rows 3, 7, 9 and 2 more (5 rows)' for 0-based positions (shown 1-based)."""
    shown = ", ".join(str(row + 1) for row in rows[:_SHOWN_ROWS])
    more = f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else ""
    noun = "data row" if len(rows) == 1 else "data rows"
    return f"{noun} {shown}{more} ({len(rows)} row{'s' if len(rows) != 1 else ''})"


def dataset_from_frame(
    frame: pd.DataFrame,
    *,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_rows: int | None = None,
    name: str = "CSV",
    source: str = "csv",
) -> LabelledDataset:
    """Validate a table of texts and labels, de-duplicate it and split it (see the module docs).

    Texts and labels are stripped of surrounding whitespace. Exact duplicate texts (or text pairs)
    are removed keeping the first occurrence, also when a later copy carries another label (that
    is logged as a warning). Row numbers in errors are 1-based data rows (the header is not
    counted). ``max_rows`` then keeps a seeded per-class sample (at least 2 rows a class), and
    :func:`assign_splits` splits the rows; each split keeps the file's row order.

    Raises:
        ValueError: on missing columns, no rows, empty texts or labels (naming the rows), more than
            ``MAX_CLASSES`` labels, a single class, a class with fewer than 2 rows, or a
            ``max_rows`` below 2 per class.
    """
    check_fractions(val_fraction, test_fraction)
    wanted = [text_column, label_column] + ([text_pair_column] if text_pair_column else [])
    missing = [column for column in wanted if column not in frame.columns]
    if missing:
        raise ValueError(
            f"Column(s) {', '.join(map(repr, missing))} not found; available columns: "
            f"{', '.join(map(repr, map(str, frame.columns)))}. Pick the text and label columns "
            "from these."
        )
    if len(frame) == 0:
        raise ValueError(f"{name} has a header but no data rows; add labelled rows.")
    texts = [str(value).strip() for value in frame[text_column]]
    pairs = [str(v).strip() for v in frame[text_pair_column]] if text_pair_column else None
    raw_labels = [str(value).strip() for value in frame[label_column]]
    problems = []
    for column, values in ((text_column, texts), (text_pair_column, pairs)):
        empty = [i for i, value in enumerate(values or ()) if not value]
        if empty:
            problems.append(f"empty or missing texts in column {column!r} at {_rows_text(empty)}")
    empty_labels = [i for i, value in enumerate(raw_labels) if not value]
    if empty_labels:
        problems.append(
            f"empty or missing labels in column {label_column!r} at {_rows_text(empty_labels)}"
        )
    if problems:
        raise ValueError(
            f"{name} has " + "; ".join(problems) + ". Rows count from 1 after the header; "
            "fill those cells in or delete the rows."
        )
    rows = _unique_rows(texts, pairs, raw_labels)
    ids, label_names = encode_labels(raw_labels[i] for i in rows)
    _check_classes(ids, label_names, rows, label_column, [str(c) for c in frame.columns])
    keys = [row_key(seed, texts[i], pairs[i] if pairs else "") for i in rows]
    if max_rows is not None and max_rows < len(rows):
        if max_rows < 2 * len(label_names):
            raise ValueError(
                f"max_rows={max_rows} is too small for {len(label_names)} classes; use at least "
                f"{2 * len(label_names)} (2 rows a class) or None for all rows."
            )
        capped_keys = [row_key(seed, "cap", key.hex()) for key in keys]
        kept = sorted(stratified_sample(ids, capped_keys, max_rows, minimum=2))
        rows, ids, keys = [rows[i] for i in kept], [ids[i] for i in kept], [keys[i] for i in kept]
    assignment = assign_splits(ids, keys, val_fraction, test_fraction)
    splits = {}
    for split_name in SPLIT_NAMES:
        members = [i for i, where in enumerate(assignment) if where == split_name]
        splits[split_name] = TextSplit(
            tuple(texts[rows[i]] for i in members),
            tuple(ids[i] for i in members),
            tuple(pairs[rows[i]] for i in members) if pairs else None,
        )
    params = {
        "source": source,
        "text_column": text_column,
        "label_column": label_column,
        "text_pair_column": text_pair_column,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "max_rows": max_rows,
    }
    return LabelledDataset(
        name=name,
        label_names=label_names,
        **splits,
        fingerprint=data_fingerprint(splits, label_names, params),
        description=describe_splits(name, "unique texts", label_names, splits),
    )


def _unique_rows(
    texts: Sequence[str], pairs: Sequence[str] | None, labels: Sequence[str]
) -> list[int]:
    """Positions of the first occurrence of each text (or text pair); duplicates are logged."""
    first: dict[tuple[str, str], int] = {}
    conflicts = 0
    for i, text in enumerate(texts):
        key = (text, pairs[i] if pairs else "")
        if key not in first:
            first[key] = i
        elif labels[first[key]] != labels[i]:
            conflicts += 1
    dropped = len(texts) - len(first)
    if dropped:
        log.info("Removed %d duplicate texts (kept the first occurrence of each).", dropped)
    if conflicts:
        log.warning(
            "%d duplicate texts carried a different label than their first occurrence; "
            "the first label was kept.",
            conflicts,
        )
    return sorted(first.values())


def _check_classes(
    ids: Sequence[int],
    label_names: Sequence[str],
    rows: Sequence[int],
    label_column: str,
    columns: Sequence[str],
) -> None:
    if len(label_names) > MAX_CLASSES:
        examples = ", ".join(repr(name) for name in label_names[:_SHOWN_ROWS])
        raise ValueError(
            f"Column {label_column!r} has {len(label_names)} distinct labels ({examples}, ...); "
            f"at most {MAX_CLASSES} classes are supported. This is most likely the wrong column: "
            f"choose the one holding each row's class (available: {', '.join(map(repr, columns))})."
        )
    if len(label_names) < 2:
        raise ValueError(
            f"Column {label_column!r} holds only one class ({label_names[0]!r}); a classifier "
            "needs at least 2 classes. Add rows of other classes or choose another column."
        )
    counts = Counter(ids)
    small = [k for k in range(len(label_names)) if counts[k] < 2]
    if small:
        details = "; ".join(
            f"{label_names[k]!r} at {_rows_text([rows[i] for i, c in enumerate(ids) if c == k])}"
            for k in small
        )
        raise ValueError(
            f"Every class needs at least 2 rows (one to train on, one to test on) after removing "
            f"duplicate texts; too few for {details}. Add rows for these classes or remove them."
        )


def load_csv_dataset(
    source: str | Path | bytes | IO[bytes],
    text_column: str = "text",
    label_column: str = "label",
    *,
    text_pair_column: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_rows: int | None = None,
    file_name: str | None = None,
) -> LabelledDataset:
    """Load a CSV/TSV file (path, bytes or binary upload) as a split labelled dataset.

    Reading follows :func:`read_table`, checking and splitting :func:`dataset_from_frame`. The
    fingerprint depends on the content and the column names, not on the file's name or place.
    """
    frame = read_table(source, name=file_name)
    if isinstance(source, str | Path):
        display = Path(source).name
    else:
        display = file_name or Path(str(getattr(source, "name", "upload.csv"))).name
    return dataset_from_frame(
        frame,
        text_column=text_column,
        label_column=label_column,
        text_pair_column=text_pair_column,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        max_rows=max_rows,
        name=display,
        source="csv",
    )
