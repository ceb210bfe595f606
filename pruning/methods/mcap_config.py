"""MCAP's settings (see :mod:`pruning.methods.mcap` for the algorithm and the readings).

Reference: Rajapaksha and Crespi, "Explainable Attention Pruning: A Meta-learning-based
Approach", IEEE Transactions on Artificial Intelligence, 2024,
https://openreview.net/forum?id=2HXUDneIMH.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pruning.methods.base import HeadTargetConfig, ui

__all__ = ["MIN_EPISODE", "MCAPConfig"]

MIN_EPISODE = 3  # a relative-distance distribution over "the others" needs >= 2 others
_INTEGER_FIELDS = (
    "episode_size",
    "update_every",
    "passes",
    "max_train_examples",
    "map_size",
    "maps_per_episode",
    "pattern_maps",
    "pattern_texts",
    "pattern_epochs",
)
_FLOAT_FIELDS = (
    "lr",
    "momentum",
    "temperature",
    "cnn_weight",
    "budget_weight",
    "sparsity",
    "pattern_test_share",
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
            "Rate of the controller (and of the legacy CNN scorer; SGD: try 0.05).",
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
            "CNN loss weight (beta)",
            "Weight of the CNN loss in the objective (Algorithm 1: KL + CNN loss); 0 = KL only.",
            min=0.0,
            max=100.0,
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
        default="patterns",
        metadata=ui(
            "CNN target",
            "patterns (the paper): a CNN trained on labelled maps of the five attention patterns "
            "gives each head delta = 1 - P(vertical), fed to the controller, and scores the "
            "pruned model (Algorithm 1's CNN loss); controller (legacy, circular): the CNN learns "
            "the controller's own keep probabilities; none (legacy): no CNN loss.",
            choices=("patterns", "controller", "none"),
        ),
    )
    pattern_maps: int = field(
        default=200,
        metadata=ui(
            "Generated maps per pattern",
            "Generated attention maps of each of the five patterns the CNN learns (200: the "
            "paper's 1,000 images).",
            min=0,
            max=100_000,
        ),
    )
    pattern_texts: int = field(
        default=16,
        metadata=ui(
            "Labelled model texts",
            "Training texts (half single, half paired) whose attention maps, every head's, are "
            "labelled by rules and added to the CNN's maps.",
            min=0,
            max=4096,
        ),
    )
    pattern_epochs: int = field(
        default=10,
        metadata=ui("Pattern CNN epochs", "Passes over the CNN's labelled maps.", min=1, max=1000),
    )
    pattern_test_share: float = field(
        default=0.2,
        metadata=ui(
            "Pattern test share",
            "Share of the labelled maps held out to test the CNN (generated maps per pattern; "
            "the model's maps by head).",
            min=0.05,
            max=0.9,
            step=0.05,
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
        for name in _FLOAT_FIELDS:
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
        if self.cnn_target == "patterns" and self.pattern_maps == 0 and self.pattern_texts == 0:
            raise ValueError(
                "The pattern CNN needs labelled maps: set Generated maps per pattern or Labelled "
                "model texts above 0 (200 and 16 by default)."
            )
