"""Per-weight importance scores and unstructured masks (DeepCuts, Grover, Gawri & Manku 2022).

Reference: Grover, Gawri and Manku, "DeepCuts: Single-Shot Interpretability based Pruning for
BERT", arXiv 2212.13392 (2022), https://arxiv.org/abs/2212.13392; the authors' code is
https://github.com/RuskinManku/DeepCuts (ShrinkBench strategies ``LayerMagWeight``,
``GlobalMagWeight``, ``LayerGradCAMShift``, ``LayerSmoothGrad``, ``LayerSmoothGradCAMShift``).

* :func:`prunable_weights`: the encoder's linear weight matrices (q, k, v, attention output,
  intermediate, output dense; embeddings, LayerNorm, biases, pooler and classifier excluded).
* :func:`compute_weight_scores`: one float score per weight, higher = more important, for the six
  strategies of :data:`STRATEGIES`.
* :func:`masks_for_ratio`: bool masks, **True = keep**, that keep exactly ``round(n / r)``
  weights per tensor (layer scope) or overall (global scope). Scores computed once can be turned
  into masks for several ratios without recomputing gradients (:func:`masks_for_ratios`).
* :func:`apply_weight_masks`: a copy of the model with the pruned weights set to exactly zero
  (:func:`zero_pruned_weights` does the same in place, for a copy the caller already owns).

Compression ratio: :func:`masks_for_ratio` takes ``r = prunable weights / remaining weights``,
counted over the prunable matrices only. The paper's ratio counts the whole model as ShrinkBench
does (Section 1.2); :mod:`pruning.compression` converts between the two.

Sources of the formulas: the paper's eqs. 1-9 (Sections 2.1-3.5), checked against the authors'
code, which they match except where noted: the authors' ``LayerMagGrad`` class scores ``|g|``
alone while eq. 4 is ``|w * g|`` (used here); the authors average activations over padding
positions too and keep dropout on while taking gradients, whereas here padding is excluded and
dropout is off; they also score and prune biases (ShrinkBench masks every parameter of a
prunable module), which are never pruned here; their SmoothGrad noise is ``randn * 1e-3`` while
the paper's Section 3.5.1 gives a variance of 0.01 (standard deviation 0.1, the default here).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from pruning.adapters import encoder_layers
from pruning.batching import Batch
from pruning.evaluate import eval_mode
from pruning.jobs import JobCancelled

Strategy = Literal[
    "layer_mag_weight", "global_mag_weight", "layer_mag_grad", "cam_cut", "smooth_cut", "smooth_cam"
]
Scope = Literal["layer", "global"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
# The strategies that need labelled batches (all but the two weight magnitudes).
DATA_STRATEGIES = frozenset({"layer_mag_grad", "cam_cut", "smooth_cut", "smooth_cam"})
# How each strategy selects: the paper's "Layer*" strategies rank inside each tensor.
STRATEGY_SCOPE: dict[str, Scope] = {
    name: ("global" if name == "global_mag_weight" else "layer") for name in STRATEGIES
}


def weights_by_layer(model: nn.Module) -> list[dict[str, nn.Parameter]]:
    """For each encoder layer, its ``nn.Linear`` weight matrices by ``named_parameters()`` name.

    Works for every family with an adapter (BERT, RoBERTa, ELECTRA, DistilBERT): the layer list
    comes from :func:`pruning.adapters.encoder_layers` and every linear map inside a layer is a
    q/k/v projection, the attention output projection or one of the two feed-forward matrices.
    """
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    per_layer = []
    for layer in encoder_layers(model):
        per_layer.append(
            {
                names[id(module.weight)]: module.weight
                for module in layer.modules()
                if isinstance(module, nn.Linear) and isinstance(module.weight, nn.Parameter)
            }
        )
    return per_layer


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights DeepCuts may prune, by ``model.named_parameters()`` name, in model order.

    Only the encoder layers' linear weight matrices: the q, k, v and attention output projections
    and the two feed-forward matrices of every layer. Embeddings (and ELECTRA's embedding
    projection), LayerNorm, biases, the pooler and the classifier are never pruned.
    """
    return {name: weight for layer in weights_by_layer(model) for name, weight in layer.items()}


def _owning_linears(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` module whose ``weight`` is each given parameter."""
    owners = {
        id(module.weight): module for module in model.modules() if isinstance(module, nn.Linear)
    }
    found = {}
    for name, parameter in weights.items():
        module = owners.get(id(parameter))
        if module is None:
            raise ValueError(
                f"{name} is not the weight of an nn.Linear in this model; score only linear "
                "weights (prunable_weights(model) lists them)."
            )
        found[name] = module
    return found


@contextmanager
def _output_hooks(
    modules: Mapping[str, nn.Linear], state: dict[str, Any], generator: torch.Generator
) -> Iterator[None]:
    """Forward hooks that record each layer's mean output and add Gaussian noise to it.

    ``state["tokens"]``: float ``(B, T)``, 1 for real tokens. When ``state["record"]`` is true,
    ``state["sums"][name]`` receives the sum over real tokens of the layer's output ``(out,)``
    and ``state["counts"][name]`` the number of tokens. When ``state["noise"] > 0``, noise
    ``N(0, noise^2)`` drawn from ``generator`` (CPU, so runs repeat on any device) is added to
    the output that flows on.
    """

    def make_hook(name: str) -> Callable[..., torch.Tensor | None]:
        def hook(_module: nn.Module, _args: object, output: torch.Tensor) -> torch.Tensor | None:
            if state["record"]:
                values = output.detach().float()
                tokens = state["tokens"]
                if values.dim() == 3 and tuple(values.shape[:2]) == tuple(tokens.shape):
                    state["sums"][name] = torch.einsum("bt,bto->o", tokens, values)
                    state["counts"][name] = float(tokens.sum())
                else:
                    flat = values.reshape(-1, values.shape[-1])
                    state["sums"][name] = flat.sum(dim=0)
                    state["counts"][name] = float(flat.shape[0])
            if state["noise"] > 0:
                noise = torch.randn(output.shape, generator=generator, dtype=output.dtype)
                return output + noise.to(output.device) * state["noise"]
            return None

        return hook

    handles = [module.register_forward_hook(make_hook(name)) for name, module in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def compute_weight_scores(
    model: nn.Module,
    batches: Sequence[Batch],
    strategy: str,
    *,
    cam_lambda: float = 10.0,
    smooth_samples: int = 10,
    smooth_noise_std: float = 0.1,
    generator: torch.Generator | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Importance of every prunable weight; higher = more important.

    With ``w`` a weight matrix ``(out, in)``, ``g_b = dL_b/dw`` the gradient of batch ``b``'s
    mean cross-entropy and ``B`` the number of batches:

    * ``layer_mag_weight``, ``global_mag_weight`` (eqs. 1-3): ``|w|``; no data.
    * ``layer_mag_grad`` (eq. 4): ``1/B sum_b |w * g_b|``.
    * ``cam_cut`` = LayerGradCAMShift (eq. 5): ``1/B sum_b |w * g_b * (a_b + lambda)|``, where
      ``a_b`` ``(out,)`` is the layer's pre-activation output (the Linear's own output, before
      GELU, dropout, residual or LayerNorm) averaged over the batch's real tokens (padding
      excluded), one value per output unit, broadcast along that unit's row of ``w``.
      ``lambda`` (``cam_lambda``) shifts the activations so negative means do not zero a row.
    * ``smooth_cut`` = LayerSmoothGrad (eq. 9): ``g_b`` replaced by its SmoothGrad average over
      ``eta = smooth_samples`` forward/backward passes, each with ``N(0, sigma^2)`` noise added
      to every prunable layer's output by forward hooks (eq. 8, ``y + z``); ``sigma =
      smooth_noise_std`` is the noise's *standard deviation*: the paper's "variance of 0.01"
      (Section 3.5.1) is ``sigma = 0.1``, the default; the authors' code uses ``1e-3``.
    * ``smooth_cam`` = LayerSmoothGradCAMShift: the SmoothGrad gradients in the Cam-Cut formula
      (``a_b`` from a clean, noise-free forward).

    Gradient scores are accumulated over all ``batches`` (the paper finds one batch too few): each
    batch adds its own absolute score, as in the authors' code, and the sum is divided by ``B``.
    The model runs in eval mode (dropout off, the SmoothGrad noise is the only randomness; the
    authors' code kept dropout on). Gradients are taken with ``torch.autograd.grad`` with respect
    to the scored weights only: no ``.grad`` is written, no weight changes, and every
    ``requires_grad`` flag and the training flag are restored.

    Args:
        model: a classifier returning ``.logits``; never modified.
        batches: labelled batches on the model's device (ignored by the magnitude strategies).
        strategy: one of :data:`STRATEGIES`.
        generator: CPU generator of the SmoothGrad noise (None: one seeded with 0).
        on_batch: called after each batch with ``(batches done, batches in all)``.
        should_stop: polled before each batch; True raises ``JobCancelled``.
        weights: the weights to score (default :func:`prunable_weights`); each must be the
            ``weight`` of an ``nn.Linear`` of ``model``.

    Returns:
        float32 scores on the CPU, one per weight, same names and shapes as ``weights``.

    Raises:
        ValueError: unknown strategy, bad settings, no batches or unlabelled batches.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}.")
    chosen: dict[str, torch.Tensor] = dict(
        weights if weights is not None else prunable_weights(model)
    )
    if strategy not in DATA_STRATEGIES:
        return {name: w.detach().abs().float().cpu() for name, w in chosen.items()}
    if isinstance(smooth_samples, bool) or not isinstance(smooth_samples, int):
        raise ValueError(f"smooth_samples must be a positive integer, got {smooth_samples!r}.")
    if smooth_samples < 1 or smooth_noise_std < 0:
        raise ValueError(
            "smooth_samples must be >= 1 and smooth_noise_std >= 0 (0 turns the noise off)."
        )
    if not batches:
        raise ValueError(f"The {strategy} scores need labelled batches; give at least one.")
    labelled = []
    for batch in batches:
        if batch.labels is None:
            raise ValueError(
                f"The {strategy} scores use the cross-entropy, so every batch needs labels; "
                "build the batches with labels."
            )
        labelled.append((batch, batch.labels))
    return _gradient_scores(
        model,
        labelled,
        chosen,
        strategy=strategy,
        cam_lambda=float(cam_lambda),
        samples=smooth_samples if strategy in ("smooth_cut", "smooth_cam") else 1,
        noise_std=float(smooth_noise_std) if strategy in ("smooth_cut", "smooth_cam") else 0.0,
        generator=generator if generator is not None else torch.Generator().manual_seed(0),
        on_batch=on_batch,
        should_stop=should_stop,
    )


def _gradient_scores(
    model: nn.Module,
    batches: Sequence[tuple[Batch, torch.Tensor]],
    weights: dict[str, torch.Tensor],
    *,
    strategy: str,
    cam_lambda: float,
    samples: int,
    noise_std: float,
    generator: torch.Generator,
    on_batch: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> dict[str, torch.Tensor]:
    """The data strategies of :func:`compute_weight_scores` on ``(batch, labels)`` pairs."""
    names = list(weights)
    params = [weights[name] for name in names]
    cam = strategy in ("cam_cut", "smooth_cam")
    totals = {name: torch.zeros_like(w, dtype=torch.float32) for name, w in weights.items()}
    state: dict[str, Any] = {"record": False, "noise": 0.0, "sums": {}, "counts": {}}
    flags = [(p, p.requires_grad) for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        with (
            eval_mode(model),
            torch.enable_grad(),
            _output_hooks(_owning_linears(model, weights), state, generator),
        ):
            for done, (batch, labels) in enumerate(batches, start=1):
                if should_stop is not None and should_stop():
                    raise JobCancelled()
                state["tokens"] = batch.attention_mask.float()
                grads = [torch.zeros_like(t) for t in totals.values()]
                for sample in range(samples):
                    # Cam-Cut's activations come from a clean pass: the first one when no noise.
                    state["record"] = cam and sample == 0 and noise_std == 0
                    state["noise"] = noise_std
                    logits = model(**batch.model_inputs()).logits
                    loss = F.cross_entropy(logits.float(), labels)
                    step = torch.autograd.grad(loss, params, allow_unused=True)
                    for total, grad in zip(grads, step, strict=True):
                        if grad is not None:
                            total += grad.float()
                if cam and noise_std > 0:
                    state["record"], state["noise"] = True, 0.0
                    with torch.no_grad():
                        model(**batch.model_inputs())
                state["record"] = False
                with torch.no_grad():
                    for name, w, grad in zip(names, params, grads, strict=True):
                        score = w.detach().float() * (grad / samples)
                        if cam:
                            mean = state["sums"][name] / max(state["counts"][name], 1.0)
                            score = score * (mean + cam_lambda).unsqueeze(1)
                        totals[name] += score.abs()
                state["sums"].clear()
                state["counts"].clear()
                if on_batch is not None:
                    on_batch(done, len(batches))
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return {name: (total / len(batches)).cpu() for name, total in totals.items()}


def keep_count(numel: int, ratio: float) -> int:
    """Weights kept out of ``numel`` at compression ratio ``ratio``: ``round(numel / ratio)``.

    Raises:
        ValueError: when ``ratio`` is below 1 or not finite.
    """
    if not isinstance(ratio, int | float) or not ratio >= 1.0 or ratio == float("inf"):
        raise ValueError(
            f"The compression ratio must be a finite number >= 1 (prunable / remaining "
            f"weights; 3 keeps a third), got {ratio!r}."
        )
    return min(numel, round(numel / ratio))


def _top_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool mask (flat) of the ``keep`` highest scores; ties go to the lower position, NaN last."""
    flat = scores.detach().to("cpu", torch.float64).flatten()
    flat = torch.nan_to_num(flat, nan=float("-inf"))
    order = torch.sort(flat, descending=True, stable=True).indices
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[order[:keep]] = True
    return mask


def masks_for_ratio(
    scores: Mapping[str, torch.Tensor], ratio: float, *, scope: Scope = "layer"
) -> dict[str, torch.Tensor]:
    """Keep masks (bool, **True = keep**, the scores' shapes, on the CPU) at compression ``ratio``.

    * ``scope="layer"``: each tensor keeps exactly ``round(numel / ratio)`` of its weights, the
      highest-scoring ones.
    * ``scope="global"``: one ranking over all the given weights keeps exactly
      ``round(total / ratio)`` of them overall (a single threshold; tensors end up with different
      densities).

    Ties are broken by position (earlier tensor in ``scores`` order, then lower flat index first),
    so the masks are deterministic; NaN scores rank lowest.

    Raises:
        ValueError: bad ratio or scope, or no scores.
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}.")
    if not scores:
        raise ValueError("There are no scores to turn into masks; score some weights first.")
    if scope == "layer":
        return {
            name: _top_mask(score, keep_count(score.numel(), ratio)).reshape(score.shape)
            for name, score in scores.items()
        }
    flat = torch.cat(
        [score.detach().to("cpu", torch.float64).flatten() for score in scores.values()]
    )
    kept = _top_mask(flat, keep_count(flat.numel(), ratio))
    masks = {}
    start = 0
    for name, score in scores.items():
        masks[name] = kept[start : start + score.numel()].reshape(score.shape)
        start += score.numel()
    return masks


def masks_for_ratios(
    scores: Mapping[str, torch.Tensor], ratios: Sequence[float], *, scope: Scope = "layer"
) -> dict[float, dict[str, torch.Tensor]]:
    """Masks for several ratios from one set of scores (gradients are computed once)."""
    return {float(ratio): masks_for_ratio(scores, ratio, scope=scope) for ratio in ratios}


def count_kept(masks: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """``(kept, total)`` weights over all masks."""
    kept = sum(int(mask.sum()) for mask in masks.values())
    return kept, sum(mask.numel() for mask in masks.values())


def check_weight_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Check that every mask names a parameter of ``model`` and has its shape.

    Raises:
        ValueError: naming the first offending mask.
    """
    parameters = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in parameters:
            raise ValueError(
                f"The mask {name!r} names no parameter of the model; use names from "
                "model.named_parameters() (prunable_weights(model) lists the prunable ones)."
            )
        if tuple(mask.shape) != tuple(parameters[name].shape):
            raise ValueError(
                f"The mask of {name} has shape {tuple(mask.shape)} but the weight has "
                f"{tuple(parameters[name].shape)}."
            )


def apply_weight_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A deep copy of ``model`` whose weights are exactly zero where the mask is False.

    Args:
        model: never modified.
        masks: bool masks by parameter name, True = keep (see :func:`masks_for_ratio`).

    Raises:
        ValueError: unknown names or mismatched shapes.
    """
    check_weight_masks(model, masks)
    masked = copy.deepcopy(model)
    zero_pruned_weights(masked, masks)
    return masked


def zero_pruned_weights(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Set ``model``'s weights to exactly zero where the mask is False, IN PLACE.

    Args:
        model: changed in place (use :func:`apply_weight_masks` to keep the original).
        masks: bool masks by parameter name, True = keep.

    Raises:
        ValueError: unknown names or mismatched shapes.
    """
    check_weight_masks(model, masks)
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            parameter = parameters[name]
            parameter.masked_fill_(~mask.to(device=parameter.device, dtype=torch.bool), 0.0)
