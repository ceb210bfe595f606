"""Label encoding and seeded, stratified assignment of rows to splits.

Pure functions over labels and per-row sort keys; no dataset containers, no I/O. Label ids follow
one documented order (:func:`encode_labels`). Splits are assigned by :func:`assign_splits`:
stratified, seeded and independent of library versions (rows are ordered inside each class by a
SHA-256 of seed and text, see :func:`row_key`, not by a random generator).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise ``ValueError`` unless both split fractions are numbers in (0, 0.5)."""
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 0.5:
            raise ValueError(f"{label} must be a number in (0, 0.5), e.g. 0.1; got {value!r}.")


def encode_labels(raw_labels: Iterable[object]) -> tuple[list[int], tuple[str, ...]]:
    """Map raw labels to class ids 0..k-1 in the documented stable order.

    If every label is an integer (ints, or strings such as ``"0"``, ``" 2 "``, ``"-1"``), classes
    are sorted numerically and named by the integer's string (so labels 0..k-1 keep their ids).
    Otherwise labels are stripped of surrounding whitespace and sorted case-sensitively by code
    point (``"Negative" < "negative" < "positive"``). Names are kept for display.

    Returns:
        ``(ids, names)``: one class id per input label, and the names indexed by class id.
    """
    values = list(raw_labels)
    as_ints = [as_int(value) for value in values]
    if values and all(value is not None for value in as_ints):
        numbers = [int(value) for value in as_ints if value is not None]
        ordered = sorted(set(numbers))
        lookup = {number: index for index, number in enumerate(ordered)}
        return [lookup[number] for number in numbers], tuple(str(number) for number in ordered)
    names = [str(value).strip() for value in values]
    ordered_names = sorted(set(names))
    name_lookup = {name: index for index, name in enumerate(ordered_names)}
    return [name_lookup[name] for name in names], tuple(ordered_names)


def as_int(value: object) -> int | None:
    """``value`` as an int when it is one (int, numpy integer or integer string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if hasattr(value, "dtype") and hasattr(value, "item"):  # numpy scalars
        item = value.item()
        return item if isinstance(item, int) and not isinstance(item, bool) else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def row_key(seed: int, *parts: str) -> bytes:
    """A stable pseudo-random sort key: SHA-256 of the seed and the row's identifying parts."""
    digest = hashlib.sha256(str(seed).encode())
    for part in parts:
        digest.update(b"\x00" + part.encode("utf-8", "surrogatepass"))
    return digest.digest()


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` over ``weights`` proportionally (largest remainder, ties to lower index)."""
    weight_sum = sum(weights)
    if weight_sum == 0 or total == 0:
        return [0] * len(weights)
    shares = [total * weight // weight_sum for weight in weights]
    remainders = [total * weight % weight_sum for weight in weights]
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _rows_by_class(labels: Sequence[int], keys: Sequence[bytes]) -> dict[int, list[int]]:
    """Row positions of each class, ordered by their key."""
    groups: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        groups.setdefault(label, []).append(position)
    return {
        label: sorted(rows, key=lambda i: (keys[i], i)) for label, rows in sorted(groups.items())
    }


def stratified_sample(
    labels: Sequence[int], keys: Sequence[bytes], n: int, *, minimum: int
) -> list[int]:
    """Positions of ``n`` rows sampled per class in key order; each class gets ``minimum`` rows
    when ``n`` and its size allow."""
    groups = _rows_by_class(labels, keys)
    sizes = [len(rows) for rows in groups.values()]
    quotas = apportion(n, sizes)
    floors = [min(minimum, size) for size in sizes]
    if n >= sum(floors):
        for i, floor in enumerate(floors):
            while quotas[i] < floor:
                donor = max(range(len(quotas)), key=lambda j: (quotas[j] - floors[j], -j))
                quotas[donor] -= 1
                quotas[i] += 1
    return [
        row for rows, quota in zip(groups.values(), quotas, strict=True) for row in rows[:quota]
    ]


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Target ``(train, validation, test)`` sizes for ``n`` rows.

    ``ceil(n * (val + test))`` rows are held out and divided between test (rounded up) and
    validation, as two successive scikit-learn ``train_test_split`` calls would do: 12,752 rows
    at 0.1 / 0.1 give 10,201 / 1,275 / 1,276. Fractions are read as the decimals they print as.
    """
    val = Fraction(repr(float(val_fraction)))
    test = Fraction(repr(float(test_fraction)))
    held_out = math.ceil(n * (val + test))
    n_test = math.ceil(held_out * test / (val + test)) if test else 0
    return n - held_out, held_out - n_test, n_test


def assign_splits(
    labels: Sequence[int], keys: Sequence[bytes], val_fraction: float, test_fraction: float
) -> list[str]:
    """Assign each row to ``"train"``, ``"validation"`` or ``"test"``, stratified by class.

    Split totals come from :func:`split_sizes` and are shared among classes in proportion to their
    size (largest remainder). Inside a class, rows are taken in ``keys`` order: test first, then
    validation, the rest train. Small classes are then adjusted so that every class has a train
    row, every class with 2+ rows a test row (a 2-row class: one train, one test) and every class
    with 3+ rows a validation row; if validation is still empty (every class has exactly 2 rows)
    one test row moves to validation, so no split is empty for any valid input (2+ classes of 2+
    rows). Either fraction may be 0 to carve only the other split (used for Hugging Face data).
    """
    groups = _rows_by_class(labels, keys)
    sizes = [len(rows) for rows in groups.values()]
    _, n_val, n_test = split_sizes(len(labels), val_fraction, test_fraction)
    test_quota = apportion(n_test, sizes)
    val_quota = apportion(n_val, sizes)
    counts: list[dict[str, int]] = []
    for size, n_t, n_v in zip(sizes, test_quota, val_quota, strict=True):
        count = {"train": size - n_t - n_v, "validation": n_v, "test": n_t}
        floors = {
            "train": 1,
            "test": 1 if test_fraction and size >= 2 else 0,
            "validation": 1 if val_fraction and size >= (3 if test_fraction else 2) else 0,
        }
        _meet_floors(count, floors)
        counts.append(count)
    n_val_rows = sum(c["validation"] for c in counts)
    if val_fraction and n_val_rows == 0 and sum(c["test"] for c in counts) >= 2:
        donor = max(range(len(counts)), key=lambda i: (counts[i]["test"], -i))
        counts[donor]["test"] -= 1
        counts[donor]["validation"] += 1
    assignment = ["train"] * len(labels)
    for rows, count in zip(groups.values(), counts, strict=True):
        n_t, n_v = count["test"], count["validation"]
        for row in rows[:n_t]:
            assignment[row] = "test"
        for row in rows[n_t : n_t + n_v]:
            assignment[row] = "validation"
    return assignment


def _meet_floors(count: dict[str, int], floors: Mapping[str, int]) -> None:
    """Move rows between splits of one class until each split reaches its floor."""
    for target in ("train", "test", "validation"):
        while count[target] < floors[target]:
            donor = max(
                (name for name in ("train", "validation", "test") if name != target),
                key=lambda name: count[name] - floors[name],
            )
            if count[donor] - floors[donor] <= 0:
                return
            count[donor] -= 1
            count[target] += 1
