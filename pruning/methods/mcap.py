"""MCAP: meta-learned, explainable attention-head pruning (Rajapaksha and Crespi).

Reference: Pasindu Rajapaksha and Noel Crespi, "Explainable Attention Pruning: A
Meta-learning-based Approach", IEEE Transactions on Artificial Intelligence, 2024,
https://openreview.net/forum?id=2HXUDneIMH.

Two small networks learn which heads to keep, while the model's own weights stay frozen:

* a CNN scorer (eq. 6) reads a head's attention map and gives it a score in (0, 1). Maps come
  from the original model (eager attention, one forward per episode, captured with hooks, no
  gradient through the model): for ``maps_per_episode`` instances of the episode, each head's
  valid (non-padding) ``T x T`` block is resized to ``map_size x map_size`` by adaptive average
  pooling. A head's score is the mean over those instances;
* a meta-controller (a feed-forward network with two hidden layers) maps ``[task representation ;
  the scores of all n_layers x n_heads heads]`` to one keep logit per head.

Algorithm 1 (eqs. 10-14), per episode of ``episode_size`` (k) training instances, tokenised with
dynamic padding: representations under the original model (no gradient) and under the masked
model; ``d(i, j) = (1 - cos) / 2`` (eq. 10); ``P_i(j) = d(i, j) / sum_{j' != i} d(i, j')`` over the
other instances (eq. 11); loss ``L = KL(P_orig || P_pruned) + cnn_weight * L_cnn +
budget_weight * L_budget`` (KL averaged over instances). The masked model is the original with
float gates from :func:`pruning.heads.head_gates`: during training a hard two-class (keep / drop)
Gumbel-softmax sample per head (exactly 0/1 forward, the soft sample's gradient backward),
deterministic ``sigmoid(logit)`` at the end. Gradients are accumulated and SGD (with momentum)
steps once every ``update_every`` episodes, and once more for a remainder. Episodes walk a seeded
shuffle of the training instances, ``passes`` times; the last episode of a pass may be smaller
but needs at least 3 instances (smaller remainders are dropped and counted).

Our readings, where the paper leaves room:

* Sentence representation: the last hidden states, mean-pooled over the non-padding tokens
  (``representation="mean_pool"``) or the first token (``"cls"``).
* Task representation: the mean over the episode's instances of the original model's sentence
  representations (hidden-size vector); ``task_representation="none"`` drops it, so the
  controller sees the CNN scores alone.
* CNN training signal (``cnn_target="controller"``): ``L_cnn`` is the binary cross-entropy
  between each head's CNN score and the controller's detached keep probability, so the scorer
  learns to recognise from the attention pattern alone the heads the controller keeps; the KL's
  gradient also reaches the CNN through the controller's input. ``"none"`` drops ``L_cnn``.
* Budget: ``L_budget = (mean keep probability - (1 - share removed))^2`` keeps training at the
  target share; without it the KL is trivially 0 by keeping every head. The controller's output
  starts at that keep probability for every head.
* Optimiser: Adam at ``lr=0.01`` by default, a deliberate departure from the paper's SGD
  (``optimizer="sgd"``, with momentum, reproduces it). The KL's gradients are small: on
  all-MiniLM-L6-v2 with episodes of 60 Rotten Tomatoes texts, about 1e-5 (mean) to 7e-5 (max)
  per keep logit against about 0.3 for the CNN's own loss, so at ``lr=0.05`` SGD left every keep
  probability within 0.01 of its start over 600 texts (measured: 0.802-0.809), i.e. the ranking
  was initialisation noise; Adam rescales each parameter's step and lets the KL signal through.
* Final importance: the controller's noiseless keep probability given the task representation
  averaged over every instance seen (all passes) and the CNN scores averaged over all episodes.
  The heads with the lowest importance are removed (``HeadTargetConfig``: ``sparsity`` or
  ``n_prune``, ``min_heads_per_layer``). The model's weights are not changed.

Trace kinds (the visualisations replay them):

* ``"episode"`` after every episode: ``{"episode" (0-based), "total_episodes", "pass",
  "instances_seen", "total_instances" (instance visits, every pass, dropped excluded), "kl",
  "cnn_loss", "budget_loss", "objective", "update" (an SGD step followed this episode),
  "updates" (steps so far), "keep_prob" (n_layers x n_heads noiseless keep probabilities),
  "cnn_score" (n_layers x n_heads), "sampled_keep" (heads kept by the sampled hard mask)}``.
* ``"final"`` once: ``{"scores", "mask" (True = keep), "n_pruned", "episodes", "updates"}``.

Mask convention: bool ``(n_layers, n_heads)``, **True = keep**; scores higher = keep.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from pruning.adapters import encoder_layers, get_adapter, get_submodule, model_config
from pruning.batching import Batch, make_batches
from pruning.capture import eager_attention
from pruning.evaluate import eval_mode
from pruning.heads import HeadGates
from pruning.methods.base import (
    HeadTargetConfig,
    PruneResult,
    PruningContext,
    PruningMethod,
    register,
    select_lowest,
    ui,
)
from pruning.methods.mcap_nets import (
    AttentionMapCNN,
    MetaController,
    gumbel_keep_sample,
    relative_distance_kl,
    resize_attention_maps,
    sentence_representation,
)
from pruning.methods.scoring import dense_grid

PAPER = (
    "Rajapaksha & Crespi, Explainable Attention Pruning: A Meta-learning-based Approach, "
    "IEEE Transactions on Artificial Intelligence 2024, https://openreview.net/forum?id=2HXUDneIMH"
)
MAX_LENGTH = 128
MIN_EPISODE = 3  # a relative-distance distribution over "the others" needs >= 2 others
_TRAIN_SHARE = 0.95  # progress share of the episodes; the final selection takes the rest
_INTEGER_FIELDS = (
    "episode_size",
    "update_every",
    "passes",
    "max_train_examples",
    "map_size",
    "maps_per_episode",
)


@dataclass(frozen=True)
class MCAPConfig(HeadTargetConfig):
    """Settings of MCAP; ``sparsity`` defaults to the paper's 20% of heads removed."""

    sparsity: float = field(
        default=0.2,
        metadata=ui(
            "Head sparsity", "Share of all attention heads to remove.", min=0.0, max=1.0, step=0.05
        ),
    )
    episode_size: int = field(
        default=60,
        metadata=ui("Episode size (k)", "Training instances per episode.", min=3, max=4096),
    )
    update_every: int = field(
        default=8,
        metadata=ui(
            "Update every", "Episodes whose gradients make one SGD step.", min=1, max=10_000
        ),
    )
    passes: int = field(
        default=1,
        metadata=ui("Passes", "Epochs over the training instances.", min=1, max=100),
    )
    max_train_examples: int = field(
        default=0,
        metadata=ui(
            "Training instances",
            "0 = every training instance; else a seeded sample of this many (at least 3).",
            min=0,
            max=10_000_000,
        ),
    )
    map_size: int = field(
        default=32,
        metadata=ui("Map size", "Attention maps are resized to S x S for the CNN.", min=4, max=256),
    )
    maps_per_episode: int = field(
        default=8,
        metadata=ui(
            "Maps per episode",
            "How many of an episode's instances feed their attention maps to the CNN.",
            min=1,
            max=4096,
        ),
    )
    lr: float = field(
        default=0.01,
        metadata=ui(
            "Learning rate",
            "Rate of the CNN and the controller (SGD: try 0.05).",
            min=1e-6,
            max=10.0,
        ),
    )
    optimizer: str = field(
        default="adam",
        metadata=ui(
            "Optimizer",
            "adam (default) rescales each parameter's step, so the small KL gradients move the "
            "controller; sgd (with momentum) is the paper's optimiser but barely moves it here.",
            choices=("sgd", "adam"),
        ),
    )
    momentum: float = field(
        default=0.9,
        metadata=ui("Momentum", "SGD momentum.", min=0.0, max=0.999, step=0.05),
    )
    temperature: float = field(
        default=1.0,
        metadata=ui(
            "Gumbel temperature (tau)",
            "Temperature of the keep / drop Gumbel-softmax; lower is closer to a hard choice.",
            min=0.01,
            max=100.0,
        ),
    )
    cnn_weight: float = field(
        default=1.0,
        metadata=ui(
            "CNN loss weight (beta)", "Weight of the CNN scorer's loss.", min=0.0, max=100.0
        ),
    )
    budget_weight: float = field(
        default=1.0,
        metadata=ui(
            "Budget weight (lambda)",
            "Weight of (mean keep probability - target keep share)^2.",
            min=0.0,
            max=1000.0,
        ),
    )
    cnn_target: str = field(
        default="controller",
        metadata=ui(
            "CNN target",
            "controller: the CNN learns the controller's keep probabilities (BCE); none: the CNN "
            "learns only through the controller.",
            choices=("controller", "none"),
        ),
    )
    task_representation: str = field(
        default="mean_embedding",
        metadata=ui(
            "Task representation",
            "mean_embedding: the episode's mean sentence representation feeds the controller; "
            "none: the CNN scores alone.",
            choices=("mean_embedding", "none"),
        ),
    )
    representation: str = field(
        default="mean_pool",
        metadata=ui(
            "Sentence representation",
            "mean_pool: mean of the last hidden states over the tokens; cls: the first token.",
            choices=("mean_pool", "cls"),
        ),
    )

    def validate(self) -> None:
        for name in _INTEGER_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number (got {value!r}).")
        for name in ("lr", "momentum", "temperature", "cnn_weight", "budget_weight", "sparsity"):
            # 1 and 1.0 are the same setting and must give the same store key.
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.maps_per_episode > self.episode_size:
            raise ValueError(
                f"Maps per episode ({self.maps_per_episode}) exceeds the episode size "
                f"({self.episode_size}); lower it to at most {self.episode_size}."
            )
        if 0 < self.max_train_examples < MIN_EPISODE:
            raise ValueError(
                f"Training instances ({self.max_train_examples}) is too few for an episode; use 0 "
                f"for every training instance or at least {MIN_EPISODE}."
            )


@dataclass(frozen=True)
class Episode:
    """One planned episode: its pass and the positions of its instances in the training split."""

    index: int
    pass_index: int
    instances: tuple[int, ...]


def plan_episodes(
    n_instances: int, episode_size: int, passes: int, generator: torch.Generator
) -> tuple[list[Episode], int]:
    """Chunk a seeded shuffle of ``range(n_instances)`` into episodes, ``passes`` times.

    Each pass reshuffles; its last episode keeps a remainder of at least ``MIN_EPISODE``
    instances, a smaller remainder is dropped.

    Returns:
        the episodes in order and the number of dropped instance visits (all passes).
    """
    episodes: list[Episode] = []
    dropped = 0
    for pass_index in range(passes):
        order = torch.randperm(n_instances, generator=generator).tolist()
        for start in range(0, n_instances, episode_size):
            chunk = tuple(order[start : start + episode_size])
            if len(chunk) < MIN_EPISODE:
                dropped += len(chunk)
                continue
            episodes.append(Episode(len(episodes), pass_index, chunk))
    return episodes, dropped


def make_optimizer(parameters: list[nn.Parameter], config: MCAPConfig) -> torch.optim.Optimizer:
    """SGD with momentum (or Adam) over the CNN's and the controller's parameters."""
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum)


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Switch off ``requires_grad`` on every parameter, then restore each flag."""
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def _last_hidden(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Last hidden states ``(B, T, D)`` of the encoder (the classification head is not run).

    The base model returns them directly; asking the classifier for ``output_hidden_states``
    would make transformers install its output-capturing hooks on the model for good.
    """
    base = cast(nn.Module, model.base_model)
    outputs = base(**batch.model_inputs())
    last: torch.Tensor = outputs.last_hidden_state
    return last


def _nested(tensor: torch.Tensor) -> list[list[float]]:
    values: list[list[float]] = tensor.detach().to("cpu", torch.float64).tolist()
    return values


class _Trainer:
    """One MCAP run: the networks, the hooks on the (frozen) model, the episode loop."""

    def __init__(self, context: PruningContext, config: MCAPConfig, n_remove: int) -> None:
        self.context, self.config = context, config
        self.model = context.model
        self.n_layers, self.n_heads = dense_grid(context.model, MCAP.title)
        n_total = self.n_layers * self.n_heads
        self.target_keep = 1.0 - n_remove / n_total
        self.device = context.device
        self.generator = context.generator()
        hidden = int(model_config(self.model).hidden_size)
        task_dim = hidden if config.task_representation == "mean_embedding" else 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            self.cnn = AttentionMapCNN().to(self.device)
            self.controller = MetaController(n_total, task_dim, self.target_keep).to(self.device)
        self.all_keep = torch.ones(self.n_layers, self.n_heads, device=self.device)
        self.gates = HeadGates(self.model, self.all_keep)
        self.captured: dict[int, torch.Tensor] = {}
        self.n_maps = config.maps_per_episode
        self.task_sum: torch.Tensor | None = None
        self.task_count = 0
        self.cnn_sum = torch.zeros(n_total, device=self.device)
        self.updates = 0

    @contextmanager
    def attached(self) -> Iterator[None]:
        """Model in eval mode, eager attention, frozen weights, gate hooks; all undone after."""
        with ExitStack() as stack:
            stack.enter_context(eval_mode(self.model))
            stack.enter_context(eager_attention(self.model))
            stack.enter_context(frozen(self.model))
            stack.enter_context(self.gates)
            yield

    def batch(self, positions: tuple[int, ...]) -> Batch:
        """The episode's instances in one dynamically padded batch (in episode order)."""
        split = self.context.dataset.train
        pairs = split.text_pairs
        (batch,) = make_batches(
            self.context.tokenizer,
            [split.texts[i] for i in positions],
            batch_size=len(positions),
            max_length=MAX_LENGTH,
            bucket=False,
            text_pairs=None if pairs is None else [pairs[i] for i in positions],
        )
        return batch.to(self.device)

    @contextmanager
    def capture_maps(self, rows: int) -> Iterator[None]:
        """Hooks keeping the first ``rows`` instances' attention probabilities of every layer."""
        adapter = get_adapter(self.model)
        self.captured.clear()

        def make_hook(index: int) -> Any:
            def hook(_module: nn.Module, _inputs: object, output: object) -> None:
                if not isinstance(output, tuple) or len(output) < 2 or output[1] is None:
                    raise RuntimeError(
                        f"The attention module of layer {index} returned no attention weights; "
                        "MCAP cannot read this architecture's attention maps."
                    )
                self.captured[index] = output[1][:rows].detach()

            return hook

        handles = [
            get_submodule(layer, adapter.attention).register_forward_hook(make_hook(index))
            for index, layer in enumerate(encoder_layers(self.model))
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def original(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Original representations ``(k, D)`` and resized maps ``(m, N, S, S)``, no gradient."""
        rows = min(self.n_maps, len(batch))
        self.gates.gates = self.all_keep
        with self.capture_maps(rows):
            hidden = _last_hidden(self.model, batch)
        mask = batch.attention_mask
        reps = sentence_representation(hidden, mask, self.config.representation)
        maps = torch.cat(
            [
                resize_attention_maps(self.captured[layer], mask[:rows], self.config.map_size)
                for layer in range(self.n_layers)
            ],
            dim=1,
        )
        self.captured.clear()
        return reps, maps

    def masked(self, batch: Batch, gates: torch.Tensor) -> torch.Tensor:
        """Representations ``(k, D)`` of the model gated by ``gates`` ``(n_layers, n_heads)``."""
        self.gates.gates = gates
        hidden = _last_hidden(self.model, batch)
        return sentence_representation(hidden, batch.attention_mask, self.config.representation)

    def episode(self, episode: Episode, group_size: int) -> dict[str, Any]:
        """Forward, objective and backward of one episode (the loss divided by ``group_size``)."""
        config = self.config
        batch = self.batch(episode.instances)
        original, maps = self.original(batch)
        task = original.mean(dim=0) if config.task_representation == "mean_embedding" else None
        scores = self.cnn(maps).mean(dim=0)
        logits = self.controller(task, scores)
        keep_prob = torch.sigmoid(logits)
        sample = gumbel_keep_sample(logits, config.temperature, self.generator)
        gates = sample.hard.reshape(self.n_layers, self.n_heads)
        kl = relative_distance_kl(original, self.masked(batch, gates))
        if config.cnn_target == "controller":
            cnn_loss = F.binary_cross_entropy(scores, keep_prob.detach())
        else:
            cnn_loss = scores.new_zeros(())
        budget = (keep_prob.mean() - self.target_keep) ** 2
        objective = kl + config.cnn_weight * cnn_loss + config.budget_weight * budget
        (objective / group_size).backward()
        if task is not None:
            weighted = task.detach() * len(batch)
            self.task_sum = weighted if self.task_sum is None else self.task_sum + weighted
        self.task_count += len(batch)
        self.cnn_sum += scores.detach()
        return {
            "kl": float(kl.detach()),
            "cnn_loss": float(cnn_loss.detach()),
            "budget_loss": float(budget.detach()),
            "objective": float(objective.detach()),
            "keep_prob": _nested(keep_prob.reshape(self.n_layers, self.n_heads)),
            "cnn_score": _nested(scores.reshape(self.n_layers, self.n_heads)),
            "sampled_keep": int(sample.hard.detach().sum()),
        }

    def train(self, episodes: list[Episode]) -> None:
        """Every episode, an SGD step after each ``update_every`` episodes and after the last."""
        config, context = self.config, self.context
        parameters = [*self.cnn.parameters(), *self.controller.parameters()]
        optimizer = make_optimizer(parameters, config)
        optimizer.zero_grad(set_to_none=True)
        total = len(episodes)
        total_instances = sum(len(e.instances) for e in episodes)
        seen = 0
        for episode in episodes:
            context.check()
            group_start = episode.index - episode.index % config.update_every
            group_size = min(config.update_every, total - group_start)
            data = self.episode(episode, group_size)
            update = episode.index + 1 == group_start + group_size
            if update:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                self.updates += 1
            seen += len(episode.instances)
            payload = {
                "episode": episode.index,
                "total_episodes": total,
                "pass": episode.pass_index,
                "instances_seen": seen,
                "total_instances": total_instances,
                "kl": data["kl"],
                "cnn_loss": data["cnn_loss"],
                "budget_loss": data["budget_loss"],
                "objective": data["objective"],
                "update": update,
                "updates": self.updates,
                "keep_prob": data["keep_prob"],
                "cnn_score": data["cnn_score"],
                "sampled_keep": data["sampled_keep"],
            }
            context.emit(
                "episode",
                _TRAIN_SHARE * (episode.index + 1) / total,
                f"episode {episode.index + 1}/{total} · KL {data['kl']:.4f}",
                **payload,
            )

    @torch.no_grad()
    def importance(self, n_episodes: int) -> torch.Tensor:
        """Noiseless keep probabilities ``(n_layers, n_heads)`` from the run's mean inputs."""
        task = None if self.task_sum is None else self.task_sum / self.task_count
        scores = self.cnn_sum / max(n_episodes, 1)
        keep = torch.sigmoid(self.controller(task, scores))
        return keep.reshape(self.n_layers, self.n_heads).to("cpu", torch.float32)


@register("mcap")
class MCAP(PruningMethod):
    """MCAP: a CNN over attention maps and a meta-controller learn which heads to keep.

    See the module docstring for the algorithm (Algorithm 1, eqs. 6 and 10-14 of Rajapaksha and
    Crespi, "Explainable Attention Pruning: A Meta-learning-based Approach", IEEE TAI 2024,
    https://openreview.net/forum?id=2HXUDneIMH), our readings and the trace contract.

    Trace kinds: ``"episode"`` (one per episode) and ``"final"``. Scores: the final keep
    probabilities, higher = keep; mask bool ``(n_layers, n_heads)``, True = keep. The model's
    weights are left alone (``PruneResult.model`` is None).
    """

    title = "MCAP"
    paper = PAPER
    granularity = "head"
    config_class = MCAPConfig
    config: MCAPConfig

    def run(self, context: PruningContext) -> PruneResult:
        """Train the CNN and the controller on the training split, then keep the top heads.

        Raises:
            ValueError: on a model with heads removed, a model on another device than the run's,
                an impossible head target or fewer than 3 training instances.
            JobCancelled: when the run is asked to stop (checked before every episode).
        """
        config = self.config
        n_layers, n_heads = dense_grid(context.model, self.title)
        n_remove = config.heads_to_prune(n_layers, n_heads)
        model_device = next(context.model.parameters()).device
        if model_device.type != context.device.type:
            raise ValueError(
                f"The model is on {model_device} but the run's device is {context.device}; "
                f"move the model there first (model.to({str(context.device)!r}))."
            )
        n_train = len(context.dataset.train.texts)
        generator = context.generator()
        if config.max_train_examples and config.max_train_examples < n_train:
            chosen = torch.randperm(n_train, generator=generator)[: config.max_train_examples]
            positions = sorted(chosen.tolist())
        else:
            positions = list(range(n_train))
        if len(positions) < MIN_EPISODE:
            raise ValueError(
                f"MCAP trains on the training split, which has {len(positions)} instance(s); "
                f"load a dataset with at least {MIN_EPISODE} training rows."
            )
        planned, dropped = plan_episodes(
            len(positions), config.episode_size, config.passes, generator
        )
        episodes = [
            Episode(e.index, e.pass_index, tuple(positions[i] for i in e.instances))
            for e in planned
        ]
        started = time.perf_counter()
        trainer = _Trainer(context, config, n_remove)
        with trainer.attached():
            trainer.train(episodes)
        scores = trainer.importance(len(episodes))
        if not bool(torch.isfinite(scores).all()):
            raise ValueError(
                "Some keep probabilities became NaN or infinite; lower the learning rate "
                f"(lr={config.lr})."
            )
        mask = select_lowest(scores, n_remove, min_heads_per_layer=config.min_heads_per_layer)
        n_pruned = int((~mask).sum())
        context.emit(
            "final",
            1.0,
            f"removed {n_pruned} of {mask.numel()} heads",
            scores=scores.tolist(),
            mask=mask.tolist(),
            n_pruned=n_pruned,
            episodes=len(episodes),
            updates=trainer.updates,
        )
        info = {
            "episodes": len(episodes),
            "updates": trainer.updates,
            "instances": len(positions),
            "dropped_instances": dropped,
            "episode_size": config.episode_size,
            "update_every": config.update_every,
            "seconds": time.perf_counter() - started,
        }
        return PruneResult(mask=mask, scores=scores, trace=tuple(context.trace), info=info)
