"""The labelled-dataset containers shared by every loader, and their content fingerprint.

:class:`TextSplit` holds one split's texts and class ids 0..k-1; :class:`LabelledDataset` the
train / validation / test splits with label names and a fingerprint (:func:`data_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pruning.splits import row_key, stratified_sample

FINGERPRINT_VERSION = 1
SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class TextSplit:
    """Texts and their class ids (0..k-1) for one split.

    Attributes:
        texts: the texts, one per row.
        labels: class ids, same length as ``texts``.
        text_pairs: second texts for sentence-pair tasks, or None.
    """

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    text_pairs: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "labels", tuple(int(label) for label in self.labels))
        if len(self.texts) != len(self.labels):
            raise ValueError(
                f"TextSplit has {len(self.texts)} texts but {len(self.labels)} labels; "
                "give one label per text."
            )
        if any(label < 0 for label in self.labels):
            raise ValueError("TextSplit labels must be class ids >= 0; encode them first.")
        if self.text_pairs is not None:
            object.__setattr__(self, "text_pairs", tuple(self.text_pairs))
            if len(self.text_pairs) != len(self.texts):
                raise ValueError("TextSplit.text_pairs must have one entry per text.")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int, seed: int = 0) -> TextSplit:
        """A deterministic sample of at most ``n`` rows, stratified by class, in original order.

        Every class present keeps at least one row when ``n`` allows; ``n >= len(self)`` returns
        the split unchanged.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"subset size must be a positive integer, got {n!r}.")
        if n >= len(self):
            return self
        keys = [row_key(seed, "subset", str(i), text) for i, text in enumerate(self.texts)]
        keep = sorted(stratified_sample(self.labels, keys, n, minimum=1))
        return self.take(keep)

    def take(self, rows: Sequence[int]) -> TextSplit:
        """The rows at positions ``rows``, in the order given."""
        pairs = None if self.text_pairs is None else tuple(self.text_pairs[i] for i in rows)
        return TextSplit(
            tuple(self.texts[i] for i in rows), tuple(self.labels[i] for i in rows), pairs
        )


@dataclass(frozen=True)
class LabelledDataset:
    """A labelled dataset split into train, validation and test.

    Attributes:
        name: display name of the source.
        label_names: class names; the index is the class id.
        train, validation, test: the splits.
        fingerprint: SHA-256 hex over texts, labels, label names, split assignment and the spec
            fields that shaped them; equal content gives an equal fingerprint in any process.
        description: one human-readable line about the data.
    """

    name: str
    label_names: tuple[str, ...]
    train: TextSplit
    validation: TextSplit
    test: TextSplit
    fingerprint: str
    description: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_names", tuple(self.label_names))
        if len(self.label_names) < 2:
            raise ValueError("A labelled dataset needs at least 2 label names.")
        for split_name in SPLIT_NAMES:
            labels = self.split(split_name).labels
            if labels and max(labels) >= len(self.label_names):
                raise ValueError(
                    f"The {split_name} split has class id {max(labels)} but only "
                    f"{len(self.label_names)} label names; give one name per class."
                )

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        """Class id -> name, as models expect in their config."""
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        """Name -> class id."""
        return {name: index for index, name in enumerate(self.label_names)}

    def split(self, name: str) -> TextSplit:
        """The split called ``name`` (``"train"``, ``"validation"`` or ``"test"``)."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"Unknown split {name!r}; use one of {', '.join(SPLIT_NAMES)}.")
        split: TextSplit = getattr(self, name)
        return split


def data_fingerprint(
    splits: Mapping[str, TextSplit], label_names: Sequence[str], params: Mapping[str, object]
) -> str:
    """SHA-256 hex of the split contents, label names and the parameters that shaped them.

    Rows are hashed as JSON lines ``[split, label, text, pair]`` in split order, so the value is
    the same in every process and on every machine for the same content.
    """
    digest = hashlib.sha256()
    header = {"version": FINGERPRINT_VERSION, "labels": list(label_names), "params": params}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode() + b"\n")
    for split_name, split in splits.items():
        pairs = split.text_pairs or (None,) * len(split)
        for text, label, pair in zip(split.texts, split.labels, pairs, strict=True):
            digest.update(json.dumps([split_name, label, text, pair]).encode() + b"\n")
    return digest.hexdigest()


def describe_splits(
    name: str, noun: str, label_names: Sequence[str], splits: Mapping[str, TextSplit]
) -> str:
    """One line such as ``"name: 1,234 texts, a/b, split 987/123/124"`` for a dataset."""
    classes = "/".join(label_names) if len(label_names) <= 4 else f"{len(label_names)} classes"
    sizes = "/".join(f"{len(splits[s]):,}" for s in SPLIT_NAMES)
    total = sum(len(split) for split in splits.values())
    return f"{name}: {total:,} {noun}, {classes}, split {sizes}"
