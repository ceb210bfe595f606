"""Manual head removal: the heads a person switched off in the head editor, stored as a run."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from pruning.heads import head_grid
from pruning.methods.base import (
    MethodConfig,
    PruneResult,
    PruningContext,
    PruningMethod,
    register,
    ui,
)

__all__ = ["ManualConfig", "ManualHeads", "format_heads", "mask_from_heads", "parse_heads"]

_PAIR = re.compile(r"^(\d+)\s*:\s*(\d+)$")
_EXAMPLE = "0:3,2:5"


def parse_heads(text: str) -> list[tuple[int, int]]:
    """The ``(layer, head)`` pairs of a ``"layer:head,layer:head"`` list, in the order given.

    Indices are 0-based; spaces around numbers and commas are ignored; an empty text names no
    head.

    Raises:
        ValueError: a pair that is not two whole numbers joined by ``:``, or a pair named twice.
    """
    if not isinstance(text, str):
        raise ValueError(f"Removed heads must be text such as {_EXAMPLE!r} (got {text!r}).")
    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for part in text.split(","):
        item = part.strip()
        if not item:
            if text.strip():
                raise ValueError(
                    f"Removed heads {text!r} has an empty entry; separate layer:head pairs by "
                    f"single commas, e.g. {_EXAMPLE!r}."
                )
            continue
        match = _PAIR.match(item)
        if match is None:
            raise ValueError(
                f"Removed heads: {item!r} is not a layer:head pair of 0-based whole numbers; "
                f"write them like {_EXAMPLE!r}."
            )
        pair = (int(match[1]), int(match[2]))
        if pair in seen:
            raise ValueError(
                f"Removed heads names layer {pair[0]} head {pair[1]} twice; name each head once."
            )
        seen.add(pair)
        pairs.append(pair)
    return pairs


def format_heads(heads: Iterable[tuple[int, int]]) -> str:
    """``"layer:head,..."`` of ``heads``, sorted by layer then head (the canonical form)."""
    return ",".join(f"{layer}:{head}" for layer, head in sorted(set(heads)))


def mask_from_heads(heads: Iterable[tuple[int, int]], n_layers: int, n_heads: int) -> torch.Tensor:
    """Bool ``(n_layers, n_heads)`` mask, **True = keep**, with ``heads`` switched off.

    Raises:
        ValueError: a head outside the ``n_layers x n_heads`` grid.
    """
    mask = torch.ones(n_layers, n_heads, dtype=torch.bool)
    for layer, head in heads:
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ValueError(
                f"Removed heads: layer {layer} head {head} is outside this model's grid of "
                f"{n_layers} layers x {n_heads} heads (0-based: layers 0..{n_layers - 1}, heads "
                f"0..{n_heads - 1}); fix the pair."
            )
        mask[layer, head] = False
    return mask


@dataclass(frozen=True)
class ManualConfig(MethodConfig):
    """The heads to remove, named explicitly as ``"layer:head"`` pairs (0-based).

    Stored in canonical form (pairs sorted by layer, then head), so the same set of heads gives
    the same run key whatever order it was typed in.
    """

    removed: str = field(
        default="",
        metadata=ui(
            "Removed heads",
            f"Heads to remove as 0-based layer:head pairs separated by commas, e.g. {_EXAMPLE} "
            "(empty = none).",
        ),
    )

    def validate(self) -> None:
        object.__setattr__(self, "removed", format_heads(parse_heads(self.removed)))

    def heads(self) -> list[tuple[int, int]]:
        """The removed ``(layer, head)`` pairs, sorted."""
        return parse_heads(self.removed)

    def mask(self, n_layers: int, n_heads: int) -> torch.Tensor:
        """Bool ``(n_layers, n_heads)``, True = keep (raises ``ValueError`` outside the grid)."""
        return mask_from_heads(self.heads(), n_layers, n_heads)

    def heads_to_prune(self, n_layers: int, n_heads: int) -> int:
        """The number of heads removed on an ``n_layers x n_heads`` grid (checks the range)."""
        return int((~self.mask(n_layers, n_heads)).sum())


@register("manual")
class ManualHeads(PruningMethod):
    """Remove exactly the heads a person chose (in the head editor or with ``--set removed=``).

    Reading: no scoring and no data; the mask is the configured set of heads switched off
    (bool ``(n_layers, n_heads)``, True = keep) on the model's original grid. The pipeline then
    removes those heads, evaluates and stores the run like any other, so a hand-made mask can be
    compared with the automatic methods. Scores are None.

    Reference: hand ablation of single heads and head sets as studied by Michel, Levy and
    Neubig, "Are Sixteen Heads Really Better than One?", NeurIPS 2019,
    https://arxiv.org/abs/1905.10650.

    Trace kinds: ``"mask"`` (bool grid, True = keep; ``removed`` lists the pairs).
    """

    title = "Manual (head editor)"
    paper = (
        "Hand ablation: Michel, Levy and Neubig, Are Sixteen Heads Really Better than One?, "
        "NeurIPS 2019, https://arxiv.org/abs/1905.10650"
    )
    config_class = ManualConfig
    config: ManualConfig

    def run(self, context: PruningContext) -> PruneResult:
        n_layers, n_heads = head_grid(context.model)
        context.check()
        mask = self.config.mask(n_layers, n_heads)
        removed = int((~mask).sum())
        context.emit(
            "mask",
            1.0,
            f"removed {removed} of {mask.numel()} heads by hand",
            mask=mask.tolist(),
            n_removed=removed,
            removed=[list(pair) for pair in self.config.heads()],
        )
        return PruneResult(
            mask=mask,
            scores=None,
            trace=tuple(context.trace),
            info={"removed": self.config.removed, "n_removed": removed},
        )
