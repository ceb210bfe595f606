"""Compression-ratio definitions: HeadScope's prunable ratio and the DeepCuts paper's whole model.

Grover, Gawri and Manku, "DeepCuts: Single-Shot Interpretability based Pruning for BERT", arXiv
2212.13392 (2022), https://arxiv.org/abs/2212.13392, define (Section 1.2) the compression ratio
as "the ratio of the number of parameters in the unpruned model to the number of parameters in
the pruned model", measured with ShrinkBench (Ortiz, Blalock and Guttag 2019) over the whole
model. Section 3.3 leaves the embeddings, the LayerNorms and the classifier unpruned: "out of
110 million BERT parameters, only 85 million are considered prunable". ShrinkBench turns a
ratio ``r`` into the share of every prunable tensor to keep (``fraction_to_keep`` in the
authors' ``shrinkbench/pruning/utils.py``, https://github.com/RuskinManku/DeepCuts)::

    keep = (N / r - (N - P)) / P      N = all parameters, P = prunable parameters

so ``N / (N - P + keep * P) = r``. Its prunable modules (``VisionPruning.can_prune``) are every
``nn.Linear`` except the one marked ``is_classifier``, weights and biases: on BERT-base that is
the 72 encoder matrices and the pooler, P = 85,608,192 of N = 109,483,778 (hand counts in
:func:`bert_base_counts`). At the paper's ratios 2 / 3 / 3.5 / 4 it keeps 36.1% / 14.7% / 8.7% /
4.1% of them, matching Section 4.3's "at the compression ratio of 4 ... less than 5% of prunable
parameters remain".

HeadScope prunes only the encoder's linear weight matrices
(:func:`pruning.weight_scores.prunable_weights`) and its ``"prunable"`` ratio is P / kept: 3
keeps a third of them, which on BERT-base is the paper's ratio 2.1, the regime where the paper
finds that all strategies tie (Section 4.4). The three definitions of :data:`RATIO_DEFINITIONS`:

* ``"prunable"``: ``r = P / kept`` over HeadScope's prunable weights (keep ``1 / r``).
* ``"whole_model"``: ``r = N / (N - pruned)`` on the model being pruned, the paper's definition
  measured on that model. On all-MiniLM-L6-v2 the embeddings are about half the parameters, so
  ``r`` cannot exceed about 1.9 there (:attr:`ParameterCounts.max_whole_model_ratio`).
* ``"bert_base_equivalent"``: keep the share of the prunable weights that the paper's ratio
  ``r`` leaves on BERT-base (:func:`bert_base_keep_share`), whatever the model: the way to test
  the paper's claims at its ratios on a smaller encoder.

:func:`keep_share_for` turns a (definition, ratio) into the share to keep; :func:`ratio_report`
states a finished mask in every definition (what DeepCuts and the unstructured baselines put in
their method info) and :func:`stored_ratios` reads them back from a stored run.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from torch import nn

RatioDefinition = Literal["prunable", "whole_model", "bert_base_equivalent"]
RATIO_DEFINITIONS: tuple[str, ...] = get_args(RatioDefinition)
# The compression ratios of the paper's experiments (Section 4, Figures 6-8).
PAPER_RATIOS: tuple[float, ...] = (2.0, 3.0, 3.5, 4.0)


@dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts of one model: ``total`` (all of them) and the ``prunable`` ones."""

    total: int
    prunable: int

    def __post_init__(self) -> None:
        if not 0 < self.prunable <= self.total:
            raise ValueError(
                f"A model needs some prunable parameters and no more than it has in all; got "
                f"prunable={self.prunable:,} of total={self.total:,}."
            )

    @property
    def fixed(self) -> int:
        """Parameters never pruned (embeddings, LayerNorms, classifier, ...)."""
        return self.total - self.prunable

    @property
    def max_whole_model_ratio(self) -> float:
        """The whole-model ratio with every prunable parameter removed: ``N / (N - P)``."""
        return float("inf") if self.fixed == 0 else self.total / self.fixed

    def keep_share(self, whole_model_ratio: float) -> float:
        """Share of the prunable parameters kept at a whole-model ratio (ShrinkBench's rule).

        ``(N / r - (N - P)) / P``, as ``fraction_to_keep`` of the authors' ShrinkBench.

        Raises:
            ValueError: for a ratio below 1, or one that this model cannot reach.
        """
        ratio = _checked_ratio(whole_model_ratio)
        share = (self.total / ratio - self.fixed) / self.prunable
        if share <= 0.0:
            raise ValueError(
                f"A whole-model compression ratio of {ratio:g} cannot be reached: "
                f"{self.fixed:,} of the {self.total:,} parameters (embeddings, LayerNorms, "
                f"classifier, ...) are never pruned, so the ratio tops out at "
                f"{self.max_whole_model_ratio:.3g} with every prunable weight removed. Pick a "
                "lower ratio, or the bert_base_equivalent definition to prune the share the "
                "paper's ratio leaves on BERT-base."
            )
        return min(1.0, share)

    def whole_model_ratio(self, kept: float) -> float:
        """Whole-model ratio when ``kept`` prunable parameters remain: ``N / (N - P + kept)``."""
        if not 0 <= kept <= self.prunable:
            raise ValueError(f"kept must lie in [0, {self.prunable:,}], got {kept!r}.")
        remaining = self.fixed + kept
        return float("inf") if remaining == 0 else self.total / remaining


def _checked_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 1.0 <= ratio < 1e300:
        raise ValueError(
            f"A compression ratio is a finite number >= 1 (unpruned / pruned size), got {ratio!r}."
        )
    return float(ratio)


def _linear_parameters(module: nn.Module) -> int:
    """Weights and biases of every ``nn.Linear`` below ``module`` (shared tensors once)."""
    seen = {
        id(parameter): parameter.numel()
        for linear in module.modules()
        if isinstance(linear, nn.Linear)
        for parameter in linear.parameters(recurse=False)
    }
    return sum(seen.values())


def _all_parameters(model: nn.Module) -> int:
    return sum({id(p): p.numel() for p in model.parameters()}.values())


def shrinkbench_counts(model: nn.Module) -> ParameterCounts:
    """What ShrinkBench counts on a Hugging Face classifier, as the DeepCuts authors ran it.

    ``total``: every parameter. ``prunable``: weights and biases of every ``nn.Linear`` of the
    base model (the encoder's matrices and the pooler), i.e. every linear layer but the task head,
    which the authors mark ``is_classifier`` (``BertNet.classifier``).
    """
    base = getattr(model, "base_model", model)
    return ParameterCounts(total=_all_parameters(model), prunable=_linear_parameters(base))


def headscope_counts(model: nn.Module) -> ParameterCounts:
    """``total``: every parameter; ``prunable``: the weights DeepCuts prunes in HeadScope
    (:func:`pruning.weight_scores.prunable_weights`: the encoder's linear weight matrices)."""
    from pruning.weight_scores import prunable_weights

    prunable = sum(weight.numel() for weight in prunable_weights(model).values())
    return ParameterCounts(total=_all_parameters(model), prunable=prunable)


@functools.cache
def bert_base_counts() -> ParameterCounts:
    """ShrinkBench's counts of BERT-base with a two-class head, built on the meta device.

    ``transformers.BertConfig()`` defaults (vocabulary 30,522, hidden 768, 12 layers, feed-forward
    3,072, 512 positions, 2 token types, 2 labels), no weights downloaded or allocated. By hand:
    embeddings 23,837,184 (word 23,440,896 + position 393,216 + type 1,536 + LayerNorm 1,536);
    per layer 7,087,872 = q, k, v, attention output 4 x 590,592 + intermediate 2,362,368 + output
    2,360,064 + two LayerNorms 3,072; pooler 590,592; classifier 1,538. Total 109,483,778;
    prunable (12 x 7,084,800 linear + pooler) 85,608,192: the paper's "110 million" and "85
    million" (Section 3.3). Without the pooler the prunable count would be 85,017,600; the
    authors' code prunes it (every ``nn.Linear`` but the classifier).
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    with torch.device("meta"):
        model = BertForSequenceClassification(BertConfig())
    return shrinkbench_counts(model)


def bert_base_keep_share(ratio: float) -> float:
    """Share of the prunable weights that the paper's compression ``ratio`` keeps on BERT-base.

    2 -> 0.3606, 3 -> 0.1474, 3.5 -> 0.0865, 4 -> 0.0408 (see :func:`bert_base_keep_shares`).

    Raises:
        ValueError: for a ratio below 1 or above BERT-base's limit of about 4.59.
    """
    return bert_base_counts().keep_share(ratio)


def bert_base_keep_shares(ratios: tuple[float, ...] = PAPER_RATIOS) -> dict[float, float]:
    """:func:`bert_base_keep_share` of each ratio (default: the paper's 2, 3, 3.5 and 4)."""
    return {float(ratio): bert_base_keep_share(ratio) for ratio in ratios}


def bert_base_equivalent_ratio(keep_share: float) -> float:
    """The paper's whole-model ratio on BERT-base that keeps ``keep_share`` of its prunable
    weights: the inverse of :func:`bert_base_keep_share` (a HeadScope prunable ratio of 3,
    keep share 1/3, is the paper's 2.09)."""
    if not 0.0 <= keep_share <= 1.0:
        raise ValueError(f"keep_share must lie in [0, 1], got {keep_share!r}.")
    counts = bert_base_counts()
    return counts.whole_model_ratio(keep_share * counts.prunable)


def keep_share_for(
    definition: str, ratio: float, model_counts: ParameterCounts | None = None
) -> float:
    """Share of HeadScope's prunable weights to keep for ``ratio`` under ``definition``.

    Args:
        definition: one of :data:`RATIO_DEFINITIONS`.
        ratio: the compression ratio, >= 1.
        model_counts: :func:`headscope_counts` of the model (needed for ``"whole_model"``).

    Raises:
        ValueError: unknown definition, bad ratio, or a ratio the model cannot reach.
    """
    ratio = _checked_ratio(ratio)
    if definition == "prunable":
        return 1.0 / ratio
    if definition == "bert_base_equivalent":
        return bert_base_keep_share(ratio)
    if definition == "whole_model":
        if model_counts is None:
            raise ValueError("The whole_model definition needs the model's parameter counts.")
        return model_counts.keep_share(ratio)
    raise ValueError(
        f"Unknown ratio definition {definition!r}; choose one of {', '.join(RATIO_DEFINITIONS)}."
    )


def ratio_report(counts: ParameterCounts, kept: int) -> dict[str, Any]:
    """Both compression-ratio definitions of a mask keeping ``kept`` of ``counts.prunable``.

    Returns:
        ``keep_share`` (kept / prunable), ``achieved_ratio`` (prunable / kept, HeadScope's
        definition; None when nothing is kept), ``whole_model_ratio`` (all parameters /
        remaining, the paper's definition on this model), ``bert_base_ratio`` (the paper's ratio
        that keeps the same share of BERT-base's prunable weights) and ``params_total``.
    """
    share = kept / counts.prunable
    return {
        "keep_share": share,
        "achieved_ratio": counts.prunable / kept if kept else None,
        "whole_model_ratio": counts.whole_model_ratio(kept),
        "bert_base_ratio": bert_base_equivalent_ratio(share),
        "params_total": counts.total,
    }


def stored_ratios(method_info: Mapping[str, Any], cost: Mapping[str, Any]) -> dict[str, Any]:
    """Every ratio definition of a stored weight-level run, also for runs made before issue #27.

    Args:
        method_info: the run's ``info["method_info"]`` (``achieved_ratio``, and from issue #27
            on ``keep_share``, ``whole_model_ratio``, ``bert_base_ratio``).
        cost: the run's ``metrics["cost"]`` (``params_dense``, ``params_nonzero``).

    Returns:
        ``keep_share``, ``achieved_ratio`` (prunable / kept), ``whole_model_ratio`` (for older
        runs ShrinkBench's own measure, all parameters / non-zero ones, from the cost) and
        ``bert_base_ratio``; None where the run holds nothing to derive it from.
    """
    achieved = method_info.get("achieved_ratio")
    share = method_info.get("keep_share")
    if share is None and achieved:
        share = 1.0 / float(achieved)
    whole = method_info.get("whole_model_ratio")
    if whole is None and cost.get("params_dense") and cost.get("params_nonzero"):
        whole = float(cost["params_dense"]) / float(cost["params_nonzero"])
    paper = method_info.get("bert_base_ratio")
    if paper is None and share is not None and 0.0 <= share <= 1.0:
        paper = bert_base_equivalent_ratio(share)
    return {
        "keep_share": share,
        "achieved_ratio": achieved,
        "whole_model_ratio": whole,
        "bert_base_ratio": paper,
    }
