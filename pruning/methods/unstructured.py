"""Unstructured weight-pruning baselines of MCAP's Table I: IMP, L1 unstructured, random weights."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

import torch
from torch import nn

from pruning.compression import headscope_counts, ratio_report
from pruning.methods.base import (
    MethodConfig,
    PruneResult,
    PruningContext,
    PruningMethod,
    register,
    ui,
)
from pruning.methods.scoring import dense_grid, fine_tune_in_context
from pruning.train import TrainConfig
from pruning.weight_masks import head_density
from pruning.weight_scores import (
    Scope,
    count_kept,
    masks_for_ratio,
    prunable_weights,
    zero_pruned_weights,
)

Criterion = Literal["l1", "random"]
CRITERIA: tuple[str, ...] = get_args(Criterion)
SCOPES: tuple[str, ...] = get_args(Scope)
_INT_FIELDS = ("rounds", "round_steps", "batch_size")
_FLOAT_FIELDS = ("sparsity", "round_lr")
_MAX_SEED = 2**31 - 1

# The three unstructured rows of MCAP's Table I, at 20% of the prunable weights; settings left
# out keep their defaults. Build a config with ``UnstructuredConfig(**TABLE1_PRESETS[name])``.
TABLE1_PRESETS: dict[str, dict[str, Any]] = {
    "IMP": {
        "sparsity": 0.2,
        "criterion": "l1",
        "scope": "global",
        "rounds": 4,
        "round_steps": 50,
        "round_lr": 5e-5,
    },
    "L1 unstructured": {"sparsity": 0.2, "criterion": "l1", "scope": "layer", "rounds": 1},
    "Random weights": {"sparsity": 0.2, "criterion": "random", "scope": "layer", "rounds": 1},
}


@dataclass(frozen=True)
class UnstructuredConfig(MethodConfig):
    """Settings of unstructured weight pruning: target, criterion, scope and the IMP schedule."""

    sparsity: float = field(
        default=0.2,
        metadata=ui(
            "Weight sparsity",
            "Share of the prunable encoder weights (q, k, v, attention output and feed-forward "
            "matrices) to remove; 0.2 removes a fifth.",
            min=0.0,
            max=0.99,
            step=0.05,
        ),
    )
    criterion: Criterion = field(
        default="l1",
        metadata=ui(
            "Criterion",
            "l1: remove the weights of smallest |w|; random: remove weights in a random order "
            "drawn once from the run's seed.",
            choices=CRITERIA,
        ),
    )
    scope: Scope = field(
        default="layer",
        metadata=ui(
            "Scope",
            "layer: every matrix loses the same share of its weights; global: one ranking over "
            "all matrices (one threshold, densities differ per matrix).",
            choices=SCOPES,
        ),
    )
    rounds: int = field(
        default=1,
        metadata=ui(
            "Rounds",
            "1 = one shot; R > 1 = iterative: every round removes the same share of the weights "
            "that remain, reaching the sparsity after round R.",
            min=1,
            max=100,
        ),
    )
    round_steps: int = field(
        default=50,
        metadata=ui(
            "Steps between rounds",
            "Fine-tuning steps with the current mask held fixed after every round but the last "
            "(0 = no training between rounds; ignored when rounds is 1).",
            min=0,
            max=100_000,
        ),
    )
    round_lr: float = field(
        default=5e-5,
        metadata=ui(
            "Learning rate between rounds",
            "Peak learning rate of the training between rounds.",
            min=1e-7,
            max=1e-2,
        ),
    )
    batch_size: int = field(
        default=32,
        metadata=ui("Batch size", "Texts per training step between rounds.", min=1, max=1024),
    )

    def validate(self) -> None:
        defaults = {spec.name: spec.default for spec in fields(self)}
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"{name} must be a whole number (default {defaults[name]}), got {value!r}."
                )
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(
                    f"{name} must be a number (default {defaults[name]}), got {value!r}."
                )
            # 1 and 1.0 are the same setting and must give the same store key.
            object.__setattr__(self, name, float(value))

    @property
    def trains_between_rounds(self) -> bool:
        """True when the model is fine-tuned between rounds (IMP)."""
        return self.rounds > 1 and self.round_steps > 0


def round_sparsities(sparsity: float, rounds: int) -> tuple[float, ...]:
    """Target sparsity after each round: ``s_r = 1 - (1 - s)^(r / R)``, the last exactly ``s``.

    Each round removes the same share ``1 - (1 - s)^(1/R)`` of the weights still present, as
    iterative magnitude pruning does.

    Raises:
        ValueError: sparsity outside [0, 1) or rounds below 1.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"The sparsity must be in [0, 1), got {sparsity!r}.")
    if rounds < 1:
        raise ValueError(f"There must be at least one round, got {rounds!r}.")
    density = 1.0 - sparsity
    return (*(1.0 - density ** (r / rounds) for r in range(1, rounds)), float(sparsity))


def ratio_for_sparsity(sparsity: float) -> float:
    """The compression ratio (prunable / kept) of ``sparsity``, for
    :func:`pruning.weight_scores.masks_for_ratio` and ``keep_count``."""
    return 1.0 / (1.0 - sparsity)


def criterion_scores(
    weights: Mapping[str, torch.Tensor],
    criterion: Criterion,
    *,
    priorities: Mapping[str, torch.Tensor] | None = None,
    kept: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-weight scores, higher = kept first; weights already pruned score ``-inf``.

    Args:
        weights: the weights to score, by parameter name.
        criterion: ``"l1"`` scores ``|w|``; ``"random"`` returns ``priorities``.
        priorities: for ``"random"``: one float per weight (e.g. U(0, 1) draws), same shapes.
        kept: bool masks, True = still kept; False entries get ``-inf`` so a later round never
            brings them back (the pruned sets are nested).

    Returns:
        float32 scores on the CPU, same names and shapes as ``weights``.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"Unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}.")
    if criterion == "random":
        if priorities is None:
            raise ValueError("The random criterion needs priorities: one random draw per weight.")
        base = priorities
    else:
        base = {name: weight.detach().abs() for name, weight in weights.items()}
    scores = {}
    for name in weights:
        score = base[name].detach().float().cpu()
        if kept is not None:
            score = score.masked_fill(~kept[name].to("cpu", torch.bool), float("-inf"))
        scores[name] = score
    return scores


@register("unstructured")
class UnstructuredPruning(PruningMethod):
    """Remove individual encoder weights by magnitude or at random, in one shot or iteratively.

    The unstructured baselines of MCAP's Table I (Rajapaksha and Crespi, "Explainable Attention
    Pruning: A Meta-learning-based Approach", IEEE Transactions on Artificial Intelligence, 2024,
    https://openreview.net/forum?id=2HXUDneIMH), compared at 20% of the weights. The presets of
    :data:`TABLE1_PRESETS`:

    * ``"IMP"`` (iterative magnitude pruning; Han, Pool, Tran and Dally, "Learning both Weights
      and Connections for Efficient Neural Networks", NeurIPS 2015,
      https://arxiv.org/abs/1506.02626; Frankle and Carbin, "The Lottery Ticket Hypothesis",
      ICLR 2019, https://arxiv.org/abs/1803.03635): criterion ``l1``, scope ``global``, 4 rounds
      with ``round_steps`` of fine-tuning between them.
    * ``"L1 unstructured"``: criterion ``l1``, scope ``layer``, one shot: what
      ``torch.nn.utils.prune.l1_unstructured`` does to each matrix.
    * ``"Random weights"``: criterion ``random``, scope ``layer``, one shot. The paper's "random
      magnitude" row is read as random unstructured pruning (a seeded random subset of each
      matrix; the baseline of Blalock et al., "What is the State of Neural Network Pruning?",
      MLSys 2020, https://arxiv.org/abs/2003.03033), not as a magnitude criterion.

    Reading. The prunable weights are those of :func:`pruning.weight_scores.prunable_weights`
    (the encoder's q, k, v, attention output and two feed-forward matrices). Round ``r`` of ``R``
    prunes to sparsity ``s_r = 1 - (1 - s)^(r/R)`` (:func:`round_sparsities`): each round removes
    the same share of what remains. A round keeps exactly ``keep_count(n, 1 / (1 - s_r))`` =
    ``round(n * (1 - s_r))`` weights of every matrix of ``n`` (layer scope) or of all ``n``
    together (global scope), the highest-scoring ones, ties to the earlier position; weights
    pruned earlier score ``-inf`` so the pruned sets are nested. ``l1`` scores ``|w|`` on the
    current (trained) weights; ``random`` draws one U(0, 1) priority per weight once, from
    ``context.seed``. Torch's ``l1_unstructured`` prunes ``round(s * n)``, which can differ from
    ``n - round(n * (1 - s))`` by one only when ``s * n`` ends in exactly .5 (never at 20%).

    Iterative rounds. After every round but the last, the masked copy is fine-tuned on the
    training split for ``round_steps`` steps (``pruning.train.fine_tune`` with the mask held
    fixed; per round a fresh AdamW whose rate warms up to ``round_lr`` and decays linearly to 0,
    batch order seeded by ``context.seed`` + round). With ``round_steps = 0`` the rounds add
    nothing: for ``l1`` the nested top-k of unchanged magnitudes is the one-shot mask, and for
    ``random`` the priorities are drawn once, so the mask equals the one-shot mask whatever the
    training (iterative random only adds the training between rounds).

    Protocol caveat. In the "prune before fine-tuning" protocol the pipeline fine-tunes every
    pruned model afterwards with its mask held fixed; IMP's training between rounds is extra
    training (``(R - 1) * round_steps`` steps) that the one-shot baselines do not get. Report it
    next to IMP's numbers, or give the others the same number of recovery steps.

    Trace kinds: ``"train"`` (one per training step between rounds: ``round``, ``step``,
    ``total_steps``, ``loss``), ``"round"`` (one per round, after the training that follows it:
    ``round`` 1-based, ``rounds``, ``sparsity`` = the round's target, ``kept``, ``total``,
    ``train_loss`` = mean loss of the training after this round or None), then ``"final"``
    (``sparsity`` = achieved share pruned, ``kept``, ``total``).

    Info: besides the settings, ``kept`` / ``total`` weights and the compression ratio in both
    definitions of :func:`pruning.compression.ratio_report` (``achieved_ratio`` = total / kept,
    ``whole_model_ratio`` = all parameters / remaining, ``bert_base_ratio``, ``keep_share``).

    Result: ``mask`` = heads (bool ``(n_layers, n_heads)``, True = keep) that keep any q/k/v/output
    weight; ``scores`` = per-head density (float32, share of the head's q/k/v/output weights
    kept); ``weight_masks`` = bool masks (True = keep) of every prunable weight, named as in
    ``model.named_parameters()``; ``model`` = the masked (and, iterative, trained) copy. The
    context's model is never changed.
    """

    title = "Unstructured weights"
    paper = (
        "Baselines of Rajapaksha & Crespi, Explainable Attention Pruning (MCAP), IEEE TAI 2024, "
        "https://openreview.net/forum?id=2HXUDneIMH; IMP after Han et al. 2015, "
        "https://arxiv.org/abs/1506.02626"
    )
    granularity = "weight"
    config_class = UnstructuredConfig
    config: UnstructuredConfig

    def run(self, context: PruningContext) -> PruneResult:
        config = self.config
        started = time.monotonic()
        dense_grid(context.model, self.title)
        if config.trains_between_rounds and len(context.dataset.train) == 0:
            raise ValueError(
                "Training between rounds needs labelled training texts; load a dataset with a "
                "training split, or set the steps between rounds to 0 (or rounds to 1)."
            )
        context.check()
        targets = round_sparsities(config.sparsity, config.rounds)
        steps = config.round_steps if config.trains_between_rounds else 0
        # Work units: one per round's pruning, one per training step between rounds.
        units = config.rounds + (config.rounds - 1) * steps
        model = copy.deepcopy(context.model)
        weights = prunable_weights(model)
        masks = {
            name: torch.ones(weight.shape, dtype=torch.bool) for name, weight in weights.items()
        }
        priorities = _random_priorities(weights, context) if config.criterion == "random" else None
        losses: list[float | None] = []
        trained = 0
        for index, target in enumerate(targets, start=1):
            # Fetched again: training may have moved the copy to the context's device.
            weights = prunable_weights(model)
            scores = criterion_scores(weights, config.criterion, priorities=priorities, kept=masks)
            masks = masks_for_ratio(scores, ratio_for_sparsity(target), scope=config.scope)
            zero_pruned_weights(model, masks)
            context.check()
            loss = None
            if steps and index < config.rounds:
                done = (index - 1) * (1 + steps) + 1
                loss, taken = self._train(context, model, masks, index, done=done, units=units)
                trained += taken
            losses.append(loss)
            kept, total = count_kept(masks)
            context.emit(
                "round",
                index * (1 + steps) / units if index < config.rounds else 1.0,
                f"round {index}/{config.rounds}: kept {kept:,} of {total:,} weights",
                round=index,
                rounds=config.rounds,
                sparsity=target,
                kept=kept,
                total=total,
                train_loss=loss,
            )
        kept, total = count_kept(masks)
        achieved = 1.0 - kept / total
        context.emit(
            "final",
            1.0,
            f"pruned {achieved:.1%} of {total:,} weights",
            sparsity=achieved,
            kept=kept,
            total=total,
        )
        density = head_density(context.model, masks)
        info: dict[str, Any] = {
            "criterion": config.criterion,
            "scope": config.scope,
            "sparsity": config.sparsity,
            "achieved_sparsity": achieved,
            "round_sparsities": list(targets),
            "rounds": config.rounds,
            "kept": kept,
            "total": total,
            # Both compression-ratio definitions (pruning.compression), as DeepCuts reports them.
            **ratio_report(headscope_counts(context.model), kept),
            "train_steps": trained,
            "train_losses": losses,
            "seed": context.seed,
            "seconds": time.monotonic() - started,
        }
        return PruneResult(
            mask=density > 0,
            scores=density,
            trace=tuple(context.trace),
            info=info,
            weight_masks=masks,
            model=model,
        )

    def _train(
        self,
        context: PruningContext,
        model: nn.Module,
        masks: dict[str, torch.Tensor],
        index: int,
        *,
        done: int,
        units: int,
    ) -> tuple[float | None, int]:
        """Fine-tune ``model`` in place after round ``index`` with ``masks`` held fixed.

        ``done`` of ``units`` work units were finished before the training (for the progress).

        Returns:
            the mean training loss of the steps taken (None when none ran) and their number.
        """
        config = self.config
        split = context.dataset.train
        train_config = TrainConfig.for_steps(
            config.round_steps,
            len(split),
            lr=config.round_lr,
            seed=(context.seed + index - 1) % _MAX_SEED,
            batch_size=config.batch_size,
        )

        report = fine_tune_in_context(
            context,
            model,
            train_config,
            kind="train",
            fraction=lambda event: (done + event.step) / units,
            label=f"round {index} · ",
            weight_masks=masks,
            round=index,
        )
        mean = sum(report.losses) / len(report.losses) if report.losses else None
        return mean, report.steps


def _random_priorities(
    weights: Mapping[str, torch.Tensor], context: PruningContext
) -> dict[str, torch.Tensor]:
    """One U(0, 1) draw per weight from the run's seed (CPU generator, in ``weights`` order)."""
    generator = context.generator()
    return {
        name: torch.rand(tuple(weight.shape), generator=generator)
        for name, weight in weights.items()
    }
