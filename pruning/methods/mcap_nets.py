"""MCAP's networks and objective pieces: the attention-map CNNs, the meta-controller, Gumbel gates.

Everything here is plain torch with no model or trace logic, so each piece can be tested on its
own; :mod:`pruning.methods.mcap` wires them into the episode loop. The reading of the paper
(Rajapaksha and Crespi, "Explainable Attention Pruning: A Meta-learning-based Approach", IEEE
Transactions on Artificial Intelligence, 2024, https://openreview.net/forum?id=2HXUDneIMH) is
documented there.

Mask convention: keep gates and masks are ``(n_layers, n_heads)`` (or flattened to ``N =
n_layers * n_heads``), **1.0 / True = keep**.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# A zero row of distances (every other instance at distance 0) still yields a distribution.
DISTANCE_EPSILON = 1e-8
# Channels of the five convolutions of the attention-map CNNs (Section II-D: "standard CNN
# architecture with 5 convolution layers"; eq. 6).
CNN_CHANNELS = (8, 16, 16, 32, 32)
CNN_STRIDES = (1, 2, 1, 2, 1)
N_PATTERNS = 5  # vertical, diagonal, vertical+diagonal, block, heterogeneous (Section II-D)
CONTROLLER_HIDDEN = 128
# Gumbel noise draws U in [eps, 1 - eps] so that -log(-log(U)) stays finite.
_UNIFORM_EPSILON = 1e-10


def _five_convolutions() -> nn.Sequential:
    """Five 3x3 convolutions with ReLU (channels :data:`CNN_CHANNELS`, strides 1-2-1-2-1)."""
    layers: list[nn.Module] = []
    channels_in = 1
    for channels, stride in zip(CNN_CHANNELS, CNN_STRIDES, strict=True):
        layers += [nn.Conv2d(channels_in, channels, 3, stride=stride, padding=1), nn.ReLU()]
        channels_in = channels
    return nn.Sequential(*layers)


class AttentionMapCNN(nn.Module):
    """The legacy head scorer (``cnn_target="controller"`` / ``"none"``): five 3x3 convolutions
    with ReLU, global average pooling, a linear layer and a sigmoid, trained inside the episode
    loop (no pattern labels).

    Shapes: ``forward(maps)`` takes ``(M, N, S, S)`` (``M`` instances, ``N`` heads, each map
    resized to ``S x S``) and returns ``(M, N)`` scores in (0, 1).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _five_convolutions()
        self.head = nn.Linear(CNN_CHANNELS[-1], 1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        count, n_heads, size, _ = maps.shape
        images = maps.reshape(count * n_heads, 1, size, size)
        pooled = self.features(images).mean(dim=(2, 3))
        return torch.sigmoid(self.head(pooled)).reshape(count, n_heads)


class PatternCNN(nn.Module):
    """The paper's CNN classifier of attention-map patterns (Section II-D, eq. 6).

    Five 3x3 convolutions with ReLU, then global average and global max pooling (the max keeps a
    thin stripe or diagonal visible after pooling) and a linear layer to one logit per pattern
    (:data:`pruning.methods.mcap_patterns.PATTERNS` order). :meth:`informative` is eq. 6's
    importance ``delta = sigmoid(x)`` with ``x`` the CNN's log-odds that a map is not vertical,
    i.e. ``delta = 1 - P(vertical)``: "except for vertical attention maps, all other attention
    maps help to interpret linguistic information".

    Shapes: ``forward(maps)`` takes ``(B, S, S)`` and returns ``(B, 5)`` logits;
    ``informative(maps)`` takes ``(..., S, S)`` and returns ``(...)`` values in (0, 1).
    """

    def __init__(self, vertical_index: int = 0) -> None:
        super().__init__()
        self.vertical_index = vertical_index
        self.features = _five_convolutions()
        self.head = nn.Linear(2 * CNN_CHANNELS[-1], N_PATTERNS)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        features = self.features(maps.reshape(-1, 1, *maps.shape[-2:]))
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        logits: torch.Tensor = self.head(pooled)
        return logits

    def informative(self, maps: torch.Tensor) -> torch.Tensor:
        """``delta = sigmoid(logsumexp(other logits) - vertical logit) = 1 - P(vertical)``."""
        logits = self(maps)
        vertical = logits[:, self.vertical_index]
        others = torch.cat(
            [logits[:, : self.vertical_index], logits[:, self.vertical_index + 1 :]], dim=1
        )
        delta = torch.sigmoid(torch.logsumexp(others, dim=1) - vertical)
        return delta.reshape(maps.shape[:-2])


class MetaController(nn.Module):
    """Feed-forward network: ``[task representation ; CNN scores]`` -> one keep logit per head.

    The task representation (when used) is layer-normalised without learned scale, so the
    controller sees the same range whatever the encoder's hidden scale. Two hidden ReLU layers.
    The output layer starts with small weights and every bias at ``logit(initial_keep)``, so
    training begins with every head kept with about the target probability.

    Args:
        n_total_heads: ``N = n_layers * n_heads``.
        task_dim: size of the task representation, 0 for none.
        initial_keep: keep probability every head starts near, in (0, 1).

    Shapes: ``forward(task, scores)``: ``task`` ``(task_dim,)`` or None, ``scores`` ``(N,)``;
    returns ``(N,)`` logits (keep probability = sigmoid).
    """

    def __init__(self, n_total_heads: int, task_dim: int, initial_keep: float) -> None:
        super().__init__()
        self.task_dim = task_dim
        self.norm = nn.LayerNorm(task_dim, elementwise_affine=False) if task_dim else None
        self.body = nn.Sequential(
            nn.Linear(task_dim + n_total_heads, CONTROLLER_HIDDEN),
            nn.ReLU(),
            nn.Linear(CONTROLLER_HIDDEN, CONTROLLER_HIDDEN),
            nn.ReLU(),
        )
        self.out = nn.Linear(CONTROLLER_HIDDEN, n_total_heads)
        keep = min(max(initial_keep, 0.01), 0.99)
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            self.out.bias.fill_(math.log(keep / (1 - keep)))

    def forward(self, task: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        parts = [scores]
        if self.norm is not None:
            if task is None:
                raise ValueError("This controller was built with a task representation; pass one.")
            parts.insert(0, self.norm(task))
        logits: torch.Tensor = self.out(self.body(torch.cat(parts)))
        return logits


class _StraightThrough(torch.autograd.Function):
    """Forward: exact 0/1 (``soft > 0.5``); backward: the gradient passes to ``soft`` unchanged."""

    @staticmethod
    def forward(ctx: Any, soft: torch.Tensor) -> torch.Tensor:
        return (soft > 0.5).to(soft.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


@dataclass(frozen=True)
class GumbelSample:
    """One two-class (keep / drop) Gumbel-softmax draw per head.

    Attributes:
        hard: exact 0/1 keep gates whose gradient is the soft sample's (straight-through).
        soft: ``sigmoid((logit + g_keep - g_drop) / tau)``, the relaxed keep sample.
    """

    hard: torch.Tensor
    soft: torch.Tensor


def gumbel_keep_sample(
    logits: torch.Tensor, temperature: float, generator: torch.Generator
) -> GumbelSample:
    """Hard straight-through Gumbel-softmax over {keep, drop} for every keep logit.

    The two class logits are ``(logit, 0)``, so the noiseless keep probability is
    ``sigmoid(logit)``; the softmax of the two noisy classes at temperature ``tau`` is
    ``sigmoid((logit + g_keep - g_drop) / tau)``. The hard gate is 1 where keep wins.

    Args:
        logits: any shape, on any device; the noise is drawn on the CPU from ``generator``.

    Returns:
        hard and soft samples of ``logits``' shape and dtype.
    """
    uniform = torch.rand((2, *logits.shape), generator=generator, dtype=torch.float64)
    uniform = uniform.clamp(_UNIFORM_EPSILON, 1 - _UNIFORM_EPSILON)
    gumbel = (-torch.log(-torch.log(uniform))).to(logits.device, logits.dtype)
    soft = torch.sigmoid((logits + gumbel[0] - gumbel[1]) / temperature)
    hard: torch.Tensor = _StraightThrough.apply(soft)
    return GumbelSample(hard=hard, soft=soft)


def pattern_cnn_loss(gates: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Algorithm 1's ``cnn_loss`` of a pruned model: ``mean_i [g_i (1 - delta_i) + (1 - g_i)
    delta_i]``.

    The share of kept heads the pattern CNN reads as uninformative (vertical) plus the share of
    removed heads it reads as informative; 0 when the mask keeps exactly the informative heads.

    Args:
        gates: keep gates ``(N,)`` in [0, 1] (the sampled hard mask; its straight-through
            gradient reaches the controller).
        delta: ``(N,)`` the CNN's ``1 - P(vertical)`` on the pruned model's maps (constant).

    Returns:
        a scalar in [0, 1], differentiable in ``gates``.
    """
    delta = delta.detach()
    return (gates * (1 - delta) + (1 - gates) * delta).mean()


def sentence_representation(
    hidden: torch.Tensor, attention_mask: torch.Tensor, kind: str
) -> torch.Tensor:
    """One vector per instance from the last hidden states.

    Args:
        hidden: ``(B, T, D)`` last-layer hidden states.
        attention_mask: ``(B, T)``, 1 for tokens, 0 for padding.
        kind: ``"mean_pool"`` (mean over the non-padding tokens) or ``"cls"`` (the first
            non-padding token: ``[CLS]`` / ``<s>``, also under left padding).

    Returns:
        ``(B, D)`` float32.
    """
    hidden = hidden.float()
    if kind == "cls":
        first = attention_mask.long().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    if kind != "mean_pool":
        raise ValueError(f"Unknown representation {kind!r}; use 'mean_pool' or 'cls'.")
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def cosine_distances(representations: torch.Tensor) -> torch.Tensor:
    """``d(i, j) = (1 - cos(r_i, r_j)) / 2`` in [0, 1] (eq. 10): ``(k, D) -> (k, k)``."""
    unit = F.normalize(representations.float(), dim=-1)
    return ((1.0 - unit @ unit.T) / 2.0).clamp(0.0, 1.0)


def relative_distance_distribution(representations: torch.Tensor) -> torch.Tensor:
    """Each instance's distribution over the other instances of its episode (eq. 11).

    ``P_i(j) = d(i, j) / sum_{j' != i} d(i, j')`` for ``j != i`` and ``P_i(i) = 0``. A small
    ``DISTANCE_EPSILON`` is added to every off-diagonal distance, so a row whose distances are all
    zero becomes uniform and every row sums to 1.

    Shapes: ``(k, D)`` with ``k >= 2`` -> ``(k, k)``.
    """
    distances = cosine_distances(representations)
    count = distances.shape[0]
    if count < 2:
        raise ValueError("A relative-distance distribution needs at least 2 instances.")
    others = 1.0 - torch.eye(count, device=distances.device, dtype=distances.dtype)
    shifted = (distances + DISTANCE_EPSILON) * others
    return shifted / shifted.sum(dim=1, keepdim=True)


def relative_distance_kl(original: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """``mean_i KL(P_i^original || P_i^pruned)`` over the episode (eqs. 11-12).

    Shapes: ``original`` and ``pruned`` ``(k, D)`` representations of the same instances;
    returns a scalar (differentiable in ``pruned``).
    """
    p = relative_distance_distribution(original)
    q = relative_distance_distribution(pruned)
    others = p > 0
    terms = torch.where(others, p * (p.clamp_min(1e-30).log() - q.clamp_min(1e-30).log()), 0.0)
    return terms.sum(dim=1).mean()


def resize_attention_maps(
    probs: torch.Tensor, attention_mask: torch.Tensor, size: int
) -> torch.Tensor:
    """Each instance's valid (non-padding) ``T x T`` block of every head, resized to ``S x S``.

    Adaptive average pooling: a longer text is averaged down, a shorter one repeated up.

    Args:
        probs: ``(B, H, T, T)`` attention probabilities of one layer.
        attention_mask: ``(B, T)``, 1 for tokens.
        size: ``S``.

    Returns:
        ``(B, H, S, S)`` float32.
    """
    maps = []
    for row in range(probs.shape[0]):
        valid = attention_mask[row].bool()
        block = probs[row][:, valid][:, :, valid].float()
        maps.append(F.adaptive_avg_pool2d(block, size))
    return torch.stack(maps)
