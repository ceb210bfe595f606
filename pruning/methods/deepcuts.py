"""DeepCuts: single-shot unstructured pruning with interpretability scores (Cam-Cut, Smooth-Cut)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from pruning.batching import Batch, make_batches
from pruning.compression import (
    RATIO_DEFINITIONS,
    RatioDefinition,
    bert_base_counts,
    headscope_counts,
    keep_share_for,
    ratio_report,
)
from pruning.methods.base import (
    MethodConfig,
    PruneResult,
    PruningContext,
    PruningMethod,
    register,
    ui,
)
from pruning.methods.scoring import dense_grid, fine_tune_in_context
from pruning.models import model_fingerprint
from pruning.train import TrainConfig
from pruning.weight_masks import head_density
from pruning.weight_scores import (
    DATA_STRATEGIES,
    STRATEGIES,
    STRATEGY_SCOPE,
    Strategy,
    apply_weight_masks,
    compute_weight_scores,
    count_kept,
    masks_for_ratio,
)

# Peak learning rate of the default preparation: what "rewind" replays (see DeepCuts).
REWIND_LR = TrainConfig().lr
# SmoothGrad noise, a standard deviation: the paper's "variance of 0.01" (Section 3.5.1) is
# sigma = 0.1; the authors' code draws ``torch.randn_like(output) * 1e-3``; HeadScope used 0.01
# before issue #27 (the paper's variance read as a standard deviation).
PAPER_NOISE_STD = 0.1
AUTHORS_CODE_NOISE_STD = 1e-3
_FLOAT_FIELDS = ("compression_ratio", "cam_lambda", "smooth_noise_std", "refine_lr")
# Fields added after runs were stored, with the default that reproduces the earlier behaviour:
# ``to_dict`` leaves them out at that default, so the run keys (which hash ``to_dict()``) of
# earlier configs do not change, as ``RunRequest.run_settings`` does for ``protocol``.
_ADDED_FIELDS: dict[str, Any] = {"ratio_definition": "prunable"}


@dataclass(frozen=True)
class DeepCutsConfig(MethodConfig):
    """Settings of DeepCuts: strategy, compression ratio, gradient data, optional re-fine-tuning."""

    strategy: Strategy = field(
        default="cam_cut",
        metadata=ui(
            "Strategy",
            "cam_cut: |w·grad·(mean activation + λ)| (LayerGradCAMShift); smooth_cut: |w·grad| "
            "with noise-averaged gradients (LayerSmoothGrad); smooth_cam: both; layer_mag_grad: "
            "|w·grad|; layer_mag_weight / global_mag_weight: |w| per tensor / over all weights.",
            choices=STRATEGIES,
        ),
    )
    compression_ratio: float = field(
        default=3.0,
        metadata=ui(
            "Compression ratio",
            "Read as the ratio definition says. prunable: prunable weights / kept weights (3 "
            "keeps a third of every encoder matrix); whole_model and bert_base_equivalent: all "
            "parameters / remaining parameters, as the paper measures it (3 keeps 14.7% of "
            "BERT-base's prunable weights).",
            min=1.0,
            max=100.0,
            step=0.5,
        ),
    )
    grad_batches: int = field(
        default=16,
        metadata=ui(
            "Gradient batches",
            "Batches of the training split (a seeded sample) whose gradients are accumulated.",
            min=1,
            max=10_000,
        ),
    )
    batch_size: int = field(
        default=32,
        metadata=ui("Batch size", "Texts per gradient batch and refine step.", min=1, max=1024),
    )
    cam_lambda: float = field(
        default=10.0,
        metadata=ui(
            "Activation shift λ",
            "Added to the mean pre-activation output before it weighs a row (Cam-Cut).",
            min=-1000.0,
            max=1000.0,
            step=1.0,
        ),
    )
    smooth_samples: int = field(
        default=10,
        metadata=ui(
            "SmoothGrad passes η",
            "Noisy forward/backward passes averaged per batch (Smooth-Cut).",
            min=1,
            max=100,
        ),
    )
    smooth_noise_std: float = field(
        default=PAPER_NOISE_STD,
        metadata=ui(
            "SmoothGrad noise σ",
            "Standard deviation of the Gaussian noise added to every prunable layer's output "
            "(Smooth-Cut, smooth_cam); 0 = none. 0.1 is the paper's (variance 0.01); the "
            "authors' code uses 0.001.",
            min=0.0,
            max=10.0,
            step=0.001,
        ),
    )
    refine_steps: int = field(
        default=0,
        metadata=ui(
            "Refine steps",
            "Re-fine-tuning steps of the pruned model with its mask fixed (0 = none).",
            min=0,
            max=100_000,
        ),
    )
    refine_lr: float = field(
        default=5e-5,
        metadata=ui(
            "Refine learning rate", "Peak learning rate of the refinement.", min=1e-7, max=1e-2
        ),
    )
    rewind: bool = field(
        default=False,
        metadata=ui(
            "Rewind learning rate",
            f"Refine with the preparation's schedule (peak {REWIND_LR:g}) instead of the "
            "refine rate: learning-rate rewinding. Needs refine steps.",
        ),
    )
    ratio_definition: RatioDefinition = field(
        default="prunable",
        metadata=ui(
            "Ratio definition",
            "prunable: prunable / kept weights (HeadScope; 3 keeps a third); whole_model: all "
            "parameters / remaining ones on this model, the paper's definition (about 1.9 at "
            "most on MiniLM, whose embeddings are half of it); bert_base_equivalent: keep the "
            "share of prunable weights the paper's ratio leaves on BERT-base (2: 36.1%, "
            "3: 14.7%, 3.5: 8.7%, 4: 4.1%).",
            choices=RATIO_DEFINITIONS,
        ),
    )

    def validate(self) -> None:
        for name in _FLOAT_FIELDS:
            # 3 and 3.0 are the same setting and must give the same store key.
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.rewind and self.refine_steps == 0:
            raise ValueError(
                "Rewind changes how the pruned model is re-fine-tuned; set refine steps above 0 "
                "or turn rewind off."
            )
        if self.ratio_definition == "bert_base_equivalent":
            limit = bert_base_counts().max_whole_model_ratio
            if self.compression_ratio >= limit:
                raise ValueError(
                    f"With the bert_base_equivalent definition the compression ratio must be "
                    f"below {limit:.3f} (BERT-base with every prunable weight removed); got "
                    f"{self.compression_ratio:g}. The paper's ratios are 2, 3, 3.5 and 4."
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields; fields added later are left out at their defaults."""
        data = super().to_dict()
        for name, default in _ADDED_FIELDS.items():
            if data[name] == default:
                del data[name]
        return data


@register("deepcuts")
class DeepCuts(PruningMethod):
    """Prune individual encoder weights in one shot, ranked by interpretability scores.

    Reading of Grover, Gawri and Manku (2022; section, equation and figure numbers are the
    paper's), checked against the authors' ShrinkBench code (https://github.com/RuskinManku/DeepCuts).

    Scores (:func:`pruning.weight_scores.compute_weight_scores`). Every linear weight matrix of the
    encoder layers (q, k, v, attention output, intermediate, output dense; Section 3.3 leaves the
    embeddings, LayerNorms and classifier unpruned) gets one score per weight: ``|w|``
    (LayerMagWeight / GlobalMagWeight, eqs. 1-3), ``|w·g|`` (LayerMagGrad, eq. 4),
    ``|w·g·(a + λ)|`` with ``a`` the layer's mean pre-activation output per output unit (Cam-Cut =
    LayerGradCAMShift, eq. 5, λ = 10 as in Section 3.4.3), or ``|w·ḡ|`` with ``ḡ`` the SmoothGrad
    gradient averaged over ``η = smooth_samples`` noisy passes (Smooth-Cut = LayerSmoothGrad,
    eq. 9; smooth_cam = LayerSmoothGradCAMShift). Gradients are those of the cross-entropy on
    ``grad_batches`` labelled batches of a seeded sample of the training split, each batch adding
    its own absolute score (Section 3.2). The paper uses the first 1,000 batches (batch size 16,
    Section 4.2.1) for Cam-Cut and 100 batches with η = 10 for every smoothing method (Section
    3.5.2); the defaults here (16 batches of 32) are cheaper, and ``headscope bench deepcuts
    --grad-batches paper`` runs the paper's counts.

    SmoothGrad noise. Section 3.5.1 draws ``z`` "from a normal distribution with a variance of
    0.01 and a mean of 0" and adds it to every layer's output (eq. 8). ``smooth_noise_std`` is
    the standard deviation, so the default is the paper's σ = 0.1 (:data:`PAPER_NOISE_STD`).
    The authors' code draws ``torch.randn_like(output) * 1e-3`` (σ = 0.001,
    :data:`AUTHORS_CODE_NOISE_STD`), available by setting it; before issue #27 HeadScope's
    default was 0.01, the paper's variance read as a standard deviation (runs stored with it keep
    their keys; set it to 0.01 to fetch them). The noise is added to the six prunable matrices of
    every layer; the authors' hooks also perturb the pooler and classifier outputs.

    Compression ratio (``ratio_definition``, see :mod:`pruning.compression`). The paper's ratio
    is "the number of parameters in the unpruned model to the number of parameters in the pruned
    model" (Section 1.2), counted by ShrinkBench over the whole model, and at 4 "less than 5% of
    prunable parameters remain" (Section 4.3). ``"prunable"`` (the default, HeadScope's
    reading before issue #27) is prunable / kept weights: each matrix keeps exactly
    ``round(n / r)`` of its weights (global_mag_weight: ``round(N / r)`` over all of them), so 3
    keeps a third, the paper's ratio 2.1 on BERT-base. ``"whole_model"`` reads ``r`` as all
    parameters / remaining ones of the model being pruned (on MiniLM at most about 1.9);
    ``"bert_base_equivalent"`` keeps the share ``s`` of the prunable weights that the paper's
    ratio ``r`` leaves on BERT-base (2 / 3 / 3.5 / 4 keep 36.1% / 14.7% / 8.7% / 4.1%). Both keep
    ``round(n · s)`` per matrix (``round(N · s)`` globally). Every run reports both definitions:
    ``achieved_ratio`` (prunable / kept), ``whole_model_ratio`` and ``bert_base_ratio``.

    The result's ``model`` is a copy with the pruned weights set to exactly zero (the context's
    model is never changed), optionally re-fine-tuned for ``refine_steps`` on the training split
    with the mask held fixed (``fine_tune(weight_masks=...)``: the pruned weights are zeroed
    before training and again after every AdamW step, so neither weight decay nor the moment
    estimates bring them back).

    Re-training and rewind. Section 2 describes a lottery-ticket protocol: "We reinitialize the
    network parameters with pre-pruned values, and fine-tune the models with the mask applied".
    The authors' code (``is_LTH``) saves the state before fine-tuning, fine-tunes, picks the mask,
    reloads that saved state and re-trains with the mask fixed. A :class:`PruningContext`
    carries only the fine-tuned classifier, so the refinement re-trains the masked fine-tuned
    weights with the mask fixed (the "mask fixed, weights re-trained" part of the protocol);
    the pre-fine-tuning weights are not available. ``rewind=True`` means learning-rate
    rewinding (Renda, Frankle and Carbin, "Comparing Rewinding and Fine-tuning in Neural Network
    Pruning", ICLR 2020, https://arxiv.org/abs/2003.02389): the survivors keep their fine-tuned
    values and the refinement replays the default preparation's schedule from its start (peak
    learning rate :data:`REWIND_LR` = 1e-4 with its warm-up and linear decay) instead of the
    gentler ``refine_lr``. It needs ``refine_steps > 0``.

    Reference: Grover, Gawri and Manku, "DeepCuts: Single-Shot Interpretability based Pruning for
    BERT", arXiv 2212.13392 (2022), https://arxiv.org/abs/2212.13392.

    Trace kinds: ``"scores"`` (one per gradient batch, data ``batch``, ``total_batches``; a
    single one with 0/0 for the magnitude strategies), ``"mask"`` (``strategy``, ``ratio``,
    ``ratio_definition``, ``keep_share``, ``kept``, ``prunable``, ``achieved_ratio``,
    ``whole_model_ratio``, ``bert_base_ratio``, ``density``: per-head share kept, a list of
    lists), ``"refine"`` (one per refine step: ``step``, ``total_steps``, ``loss``).

    Result: ``mask`` = heads that keep any q/k/v/output weight; ``scores`` = per-head density
    (float32, share of the head's weights kept); ``weight_masks`` = a bool mask (True = keep) for
    every prunable weight; ``model`` = the masked (and refined) copy.
    """

    title = "DeepCuts (Cam-Cut / Smooth-Cut)"
    paper = (
        "Grover, Gawri & Manku, DeepCuts: Single-Shot Interpretability based Pruning for BERT, "
        "arXiv 2022, https://arxiv.org/abs/2212.13392"
    )
    granularity = "weight"
    config_class = DeepCutsConfig
    config: DeepCutsConfig

    def run(self, context: PruningContext) -> PruneResult:
        config = self.config
        started = time.monotonic()
        dense_grid(context.model, self.title)
        counts = headscope_counts(context.model)
        # Before any gradient: a whole-model ratio this model cannot reach fails at once.
        share = keep_share_for(config.ratio_definition, config.compression_ratio, counts)
        context.check()
        refine = config.refine_steps > 0
        score_share = 0.5 if refine else 0.95
        # Only gradient scores are worth keeping: magnitudes take milliseconds.
        uses_data = config.strategy in DATA_STRATEGIES
        cache_key = _score_key(context, config) if uses_data else ()
        cached = _SCORES.get(cache_key) if uses_data else None
        if cached is not None:
            scores, n_batches, n_examples = cached
            context.emit(
                "scores",
                score_share,
                "scores reused from an earlier run of this process (same model, data, settings)",
                batch=n_batches,
                total_batches=n_batches,
                cached=True,
            )
        elif uses_data:
            batches = gradient_batches(context, config)

            def on_batch(done: int, total: int) -> None:
                context.emit(
                    "scores",
                    score_share * done / total,
                    f"gradients of batch {done}/{total}",
                    batch=done,
                    total_batches=total,
                )

            scores = compute_weight_scores(
                context.model,
                batches,
                config.strategy,
                cam_lambda=config.cam_lambda,
                smooth_samples=config.smooth_samples,
                smooth_noise_std=config.smooth_noise_std,
                generator=context.generator(),
                on_batch=on_batch,
                should_stop=context.should_stop,
            )
            n_batches, n_examples = len(batches), sum(len(batch) for batch in batches)
            _SCORES.put(cache_key, (scores, n_batches, n_examples))
        else:
            scores = compute_weight_scores(context.model, [], config.strategy)
            n_batches = n_examples = 0
            context.emit("scores", score_share, "weight magnitudes", batch=0, total_batches=0)
        # "prunable" keeps round(n / r) exactly as before; the others keep round(n * share).
        mask_ratio = (
            config.compression_ratio if config.ratio_definition == "prunable" else 1.0 / share
        )
        masks = masks_for_ratio(scores, mask_ratio, scope=STRATEGY_SCOPE[config.strategy])
        kept, prunable = count_kept(masks)
        ratios = ratio_report(counts, kept)
        density = head_density(context.model, masks)
        context.emit(
            "mask",
            score_share + 0.05 if refine else 1.0,
            f"kept {kept:,} of {prunable:,} prunable weights ({ratios['keep_share']:.1%}; "
            f"whole model {ratios['whole_model_ratio']:.2f}×)",
            strategy=config.strategy,
            ratio=config.compression_ratio,
            ratio_definition=config.ratio_definition,
            target_keep_share=share,
            kept=kept,
            prunable=prunable,
            **ratios,
            density=density.tolist(),
        )
        pruned = apply_weight_masks(context.model, masks)
        info: dict[str, Any] = {
            "strategy": config.strategy,
            "scope": STRATEGY_SCOPE[config.strategy],
            "ratio": config.compression_ratio,
            "ratio_definition": config.ratio_definition,
            "target_keep_share": share,
            "prunable": prunable,
            "kept": kept,
            **ratios,
            "grad_batches": n_batches,
            "grad_examples": n_examples,
            "scores_reused": cached is not None,
            "n_tensors": len(masks),
        }
        if refine:
            info["refine"] = self._refine(context, pruned, masks, start=score_share + 0.05)
        info["seconds"] = time.monotonic() - started
        return PruneResult(
            mask=density > 0,
            scores=density,
            trace=tuple(context.trace),
            info=info,
            weight_masks=masks,
            model=pruned,
        )

    def _refine(
        self,
        context: PruningContext,
        model: torch.nn.Module,
        masks: dict[str, torch.Tensor],
        *,
        start: float,
    ) -> dict[str, Any]:
        """Re-fine-tune ``model`` in place on the training split with ``masks`` held fixed."""
        config = self.config
        lr = REWIND_LR if config.rewind else config.refine_lr
        split = context.dataset.train
        train_config = TrainConfig.for_steps(
            config.refine_steps, len(split), lr=lr, seed=context.seed, batch_size=config.batch_size
        )
        report = fine_tune_in_context(
            context,
            model,
            train_config,
            kind="refine",
            fraction=lambda event: start + (1.0 - start) * event.fraction,
            label="refine ",
            weight_masks=masks,
        )
        return {
            "steps": report.steps,
            "lr": lr,
            "rewind": "learning_rate" if config.rewind else "none",
            "final_loss": report.final_loss,
        }


def gradient_batches(context: PruningContext, config: DeepCutsConfig) -> list[Batch]:
    """``config.grad_batches`` labelled batches from a seeded sample of the training split.

    Raises:
        ValueError: when the training split is empty.
    """
    split = context.dataset.train
    if len(split) == 0:
        raise ValueError(
            "DeepCuts needs labelled training texts for its gradients; load a dataset with a "
            "training split, or pick the layer_mag_weight or global_mag_weight strategy."
        )
    sample = split.subset(config.grad_batches * config.batch_size, seed=context.seed)
    batches = make_batches(
        context.tokenizer,
        sample.texts,
        sample.labels,
        batch_size=config.batch_size,
        max_length=TrainConfig().max_length,
        shuffle=True,
        seed=context.seed,
        text_pairs=sample.text_pairs,
    )
    return [batch.to(context.device) for batch in batches[: config.grad_batches]]


class _ScoreCache:
    """The last few score sets of this process, so a sweep over compression ratios (the DeepCuts
    page, ``headscope bench deepcuts``) computes each strategy's gradients once.

    Keyed by everything the scores depend on: the model's content fingerprint, the dataset's
    fingerprint, the strategy and its settings, the gradient sample and the seed. Bounded (about
    90 MB per entry for the default model); thread-safe, since jobs run in worker threads.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[Any, ...], tuple[dict[str, torch.Tensor], int, int]]
        self._entries = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> tuple[dict[str, torch.Tensor], int, int] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple[Any, ...], entry: tuple[dict[str, torch.Tensor], int, int]) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_SCORES = _ScoreCache(capacity=3)


def _score_key(context: PruningContext, config: DeepCutsConfig) -> tuple[Any, ...]:
    """Everything a gradient strategy's scores depend on."""
    return (
        model_fingerprint(context.model),
        config.strategy,
        context.dataset.fingerprint,
        config.grad_batches,
        config.batch_size,
        config.cam_lambda,
        config.smooth_samples,
        config.smooth_noise_std,
        context.seed,
    )
