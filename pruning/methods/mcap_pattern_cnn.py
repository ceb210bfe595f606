"""Training and held-out testing of MCAP's pattern CNN (Section II-D of the MCAP paper).

Rajapaksha and Crespi ("Explainable Attention Pruning: A Meta-learning-based Approach", IEEE
Transactions on Artificial Intelligence, 2024, https://openreview.net/forum?id=2HXUDneIMH) train a
CNN "with 5 convolution layers ... to learn the spatial features in the attention maps using 1000
images" of the five patterns, before the meta-learning loop (Algorithm 1 receives the trained
``cnn_classifier`` as an argument and updates only the meta-controller). Here the labelled maps
come from :mod:`pruning.methods.mcap_patterns`: generated maps and the model's own maps labelled
by rules. A share of them is held out and never trained on:

* generated maps: that share of each pattern, drawn at random;
* the model's maps: every map of a held-out set of heads (that share of the heads that have
  labelled maps), so the test asks about heads the CNN never saw, not about another sentence of a
  head it was trained on.

Training: Adam (lr 3e-3), batches of 64, cross-entropy weighted by inverse class frequency in the
training part (the model's maps are mostly one or two patterns), seeded shuffles.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pruning.head_roles import SEP_TOKENS
from pruning.methods.mcap_nets import PatternCNN
from pruning.methods.mcap_patterns import (
    PATTERNS,
    VERTICAL,
    label_maps,
    map_structure,
    pattern_input,
)

__all__ = [
    "SOURCES",
    "ModelMaps",
    "PatternReport",
    "confusion_matrix",
    "holdout_mask",
    "label_model_maps",
    "predict",
    "train_pattern_cnn",
]

SOURCES: tuple[str, ...] = ("generated", "model")
PATTERN_LR = 3e-3
PATTERN_BATCH = 64


def holdout_mask(groups: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Which items are held out: every item of a seeded ``share`` of the distinct groups.

    With two or more groups at least one is held out and at least one kept, so both parts are
    non-empty. Shapes: ``groups`` int ``(n,)`` -> bool ``(n,)``, True = test.
    """
    distinct = torch.unique(groups)
    if distinct.numel() < 2 or share <= 0:
        return torch.zeros_like(groups, dtype=torch.bool)
    count = min(max(1, round(share * distinct.numel())), distinct.numel() - 1)
    order = torch.randperm(distinct.numel(), generator=generator)
    chosen = distinct[order[:count]]
    return torch.isin(groups, chosen)


def confusion_matrix(true: torch.Tensor, predicted: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Counts ``(n_classes, n_classes)``: rows = true pattern, columns = predicted."""
    flat = true.long() * n_classes + predicted.long()
    counts = torch.bincount(flat, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


@dataclass(frozen=True)
class PatternReport:
    """The pattern CNN's training set and its held-out test.

    Attributes:
        accuracy: share of held-out maps classified as labelled (NaN without a test part).
        confusion: ``(5, 5)`` held-out counts, rows = label, columns = prediction.
        accuracy_by_source: held-out accuracy of the generated and of the model's maps (None
            where that source has no held-out map).
        train_counts / test_counts: maps per pattern, by source.
        losses: mean training loss of each epoch.
        epochs: passes over the training part.
    """

    accuracy: float
    confusion: list[list[int]]
    accuracy_by_source: dict[str, float | None]
    train_counts: dict[str, list[int]]
    test_counts: dict[str, list[int]]
    losses: list[float]
    epochs: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the pattern names."""
        return {
            "classes": list(PATTERNS),
            "accuracy": self.accuracy,
            "confusion": self.confusion,
            "accuracy_by_source": dict(self.accuracy_by_source),
            "train_counts": {k: list(v) for k, v in self.train_counts.items()},
            "test_counts": {k: list(v) for k, v in self.test_counts.items()},
            "losses": list(self.losses),
            "epochs": self.epochs,
        }


def _counts(labels: torch.Tensor) -> list[int]:
    counts: list[int] = torch.bincount(labels, minlength=len(PATTERNS)).tolist()
    return counts


@torch.no_grad()
def predict(cnn: PatternCNN, maps: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted pattern indices ``(n,)`` of maps ``(n, S, S)`` (CNN inputs)."""
    parts = [cnn(maps[i : i + batch_size]).argmax(dim=1) for i in range(0, len(maps), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def train_pattern_cnn(
    maps: torch.Tensor,
    labels: torch.Tensor,
    sources: Sequence[str],
    groups: torch.Tensor,
    *,
    epochs: int,
    test_share: float,
    seed: int,
) -> tuple[PatternCNN, PatternReport]:
    """Hold out a test part, train a :class:`PatternCNN` on the rest, test it.

    Args:
        maps: float ``(n, S, S)`` CNN inputs (:func:`pruning.methods.mcap_patterns.pattern_input`).
        labels: int ``(n,)`` pattern indices.
        sources: ``n`` names from :data:`SOURCES`.
        groups: int ``(n,)``: items of one group are held out together (a generated map is its
            own group; the model's maps are grouped by head).
        epochs: passes over the training part.
        test_share: share held out (of each pattern's generated maps, of the model's heads).
        seed: seeds the split, the initialisation and the batch order.

    Returns:
        the trained CNN (in eval mode, gradients off) and its report.

    Raises:
        ValueError: when there is nothing to train on or a source name is unknown.
    """
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"Unknown map sources {unknown}; use {', '.join(SOURCES)}.")
    source_ids = torch.tensor([SOURCES.index(s) for s in sources], dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    test = torch.zeros(len(labels), dtype=torch.bool)
    generated = source_ids == SOURCES.index("generated")
    for pattern in range(len(PATTERNS)):
        part = generated & (labels == pattern)
        test[part] = holdout_mask(groups[part], test_share, generator)
    model_part = ~generated
    test[model_part] = holdout_mask(groups[model_part], test_share, generator)
    train = ~test
    if int(train.sum()) == 0:
        raise ValueError("No labelled attention map to train the pattern CNN on; generate some.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cnn = PatternCNN(vertical_index=VERTICAL)
    train_maps, train_labels = maps[train], labels[train]
    frequency = torch.bincount(train_labels, minlength=len(PATTERNS)).float()
    weights = torch.where(frequency > 0, frequency.sum() / (len(PATTERNS) * frequency), 0.0)
    optimizer = torch.optim.Adam(cnn.parameters(), lr=PATTERN_LR)
    losses = []
    cnn.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_labels), generator=generator)
        total = 0.0
        for start in range(0, len(order), PATTERN_BATCH):
            index = order[start : start + PATTERN_BATCH]
            loss = F.cross_entropy(cnn(train_maps[index]), train_labels[index], weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        losses.append(total / len(order))
    cnn.eval()
    cnn.requires_grad_(False)
    predicted = predict(cnn, maps[test])
    true = labels[test]
    correct = predicted == true
    by_source: dict[str, float | None] = {}
    for code, name in enumerate(SOURCES):
        part = source_ids[test] == code
        by_source[name] = float(correct[part].float().mean()) if bool(part.any()) else None
    report = PatternReport(
        accuracy=float(correct.float().mean()) if len(true) else float("nan"),
        confusion=confusion_matrix(true, predicted, len(PATTERNS)).tolist(),
        accuracy_by_source=by_source,
        train_counts={
            name: _counts(labels[train & (source_ids == i)]) for i, name in enumerate(SOURCES)
        },
        test_counts={
            name: _counts(labels[test & (source_ids == i)]) for i, name in enumerate(SOURCES)
        },
        losses=losses,
        epochs=epochs,
    )
    return cnn, report


@dataclass(frozen=True)
class ModelMaps:
    """The model's attention maps of some texts, ready for the pattern CNN.

    Attributes:
        maps: float32 ``(n_texts, N, S, S)`` CNN inputs of every head's map (``N = n_layers *
            n_heads``, layer-major).
        labels: int64 ``(n_texts, N)`` rule labels
            (:func:`pruning.methods.mcap_patterns.label_maps`), -1 where no rule fits or the text
            is shorter than ``MIN_LENGTH`` tokens.
    """

    maps: torch.Tensor
    labels: torch.Tensor


def label_model_maps(
    attentions: Sequence[torch.Tensor],
    tokens: Sequence[Sequence[str]],
    size: int,
    *,
    sep_tokens: Collection[str] = SEP_TOKENS,
) -> ModelMaps:
    """Measure, label and resize every head's attention map of each text.

    Args:
        attentions: one float ``(n_layers, n_heads, T, T)`` tensor per text (its valid tokens
            only, rows = queries).
        tokens: the ``T`` token texts of each text.
        size: ``S``.
        sep_tokens: separator texts of the tokenizer.

    Raises:
        ValueError: when no text is given or a text's tokens do not match its maps.
    """
    if not attentions:
        raise ValueError("Give at least one text's attention maps.")
    maps, labels = [], []
    for index, (attention, words) in enumerate(zip(attentions, tokens, strict=True)):
        n_layers, n_heads, length, _ = attention.shape
        if len(words) != length:
            raise ValueError(
                f"Text {index} has {len(words)} tokens but maps of {length}; pass the tokens the "
                "attention was captured for."
            )
        structure = map_structure(attention, words, sep_tokens=sep_tokens)
        labels.append(torch.from_numpy(label_maps(structure, length)).reshape(-1))
        flat = attention.float().reshape(n_layers * n_heads, length, length)
        maps.append(pattern_input(F.adaptive_avg_pool2d(flat, size)))
    return ModelMaps(torch.stack(maps), torch.stack(labels))
