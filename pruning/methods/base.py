"""What every pruning method shares: configs, the run context, results, trace events, registry.

A method is a class registered under a short name with ``@register("name")``. It is built from
its frozen config dataclass and run on a :class:`PruningContext`; it returns a
:class:`PruneResult`. Methods never mutate the model they are given: they work through removable
hooks (gates) or on a copy. Progress and the method's own steps are reported as
:class:`TraceEvent` objects through ``context.emit``; the same events form ``PruneResult.trace``,
so the UI (live) and the stored trace (replay) never disagree.

Mask convention: bool ``(n_layers, n_heads)``, **True = keep**. Scores: float
``(n_layers, n_heads)``, **higher = more important** (kept first).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from pruning.batching import Batch
from pruning.data import LabelledDataset, TextSplit
from pruning.executors import LOCAL, ExecutorSettings
from pruning.jobs import JobCancelled

Granularity = Literal["head", "weight"]


def ui(
    label: str,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    step: float | None = None,
    choices: tuple[Any, ...] | None = None,
) -> dict[str, Any]:
    """Field metadata for the generic config form: label, help, bounds, step, choices."""
    meta: dict[str, Any] = {"label": label, "help": help}
    for key, value in (("min", min), ("max", max), ("step", step), ("choices", choices)):
        if value is not None:
            meta[key] = value
    return meta


def min_heads_field() -> Any:
    """The ``min_heads_per_layer`` config field shared by head-level methods."""
    return field(
        default=0,
        metadata=ui(
            "Minimum heads per layer",
            "Keep at least this many heads in every layer.",
            min=0,
            max=64,
        ),
    )


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's config: a frozen dataclass whose fields carry UI metadata.

    Subclasses declare fields with ``field(default=..., metadata=ui(...))``. Validation runs in
    ``__post_init__`` and raises ``ValueError`` with a message that says how to fix the input:
    every value must have its field's type (None only where the field is optional; a whole float
    such as ``3.0`` becomes the int ``3``), numeric fields are checked against their ``min`` /
    ``max`` metadata and ``choices`` against the allowed values; subclasses add their own checks
    in :meth:`validate`.
    """

    def __post_init__(self) -> None:
        hints = _field_types(type(self))
        for spec in dataclasses.fields(self):
            meta = spec.metadata
            label = meta.get("label", spec.name)
            what = spec.name if label == spec.name else f"{label}: {spec.name}"
            value = _checked_type(what, getattr(self, spec.name), hints[spec.name])
            object.__setattr__(self, spec.name, value)
            if value is None:
                continue
            if "choices" in meta and value not in meta["choices"]:
                allowed = ", ".join(map(str, meta["choices"]))
                raise ValueError(f"{label} must be one of {allowed} (got {value!r}).")
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{label} must be a finite number (got {value}).")
            low, high = meta.get("min"), meta.get("max")
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(
                    f"{label} must be between {low} and {high} (got {value}); "
                    f"{meta.get('help', '')}".rstrip("; ")
                )
        self.validate()

    def validate(self) -> None:
        """Cross-field checks of a subclass; raise ``ValueError`` with a fix-it message."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodConfig:
        """Build from a dict; unknown keys are refused with the list of known ones."""
        known = {spec.name for spec in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Unknown setting(s) {unknown} for {cls.__name__}; known: {sorted(known)}."
            )
        return cls(**data)


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def _field_types(config_class: type) -> dict[str, Any]:
    """The resolved annotations of a config class (strings under PEP 563), resolved once."""
    if config_class not in _FIELD_TYPES:
        _FIELD_TYPES[config_class] = typing.get_type_hints(config_class)
    return _FIELD_TYPES[config_class]


def _checked_type(label: str, value: Any, annotation: Any) -> Any:
    """``value`` if it fits ``annotation`` (int, float, bool, str, a Literal, or X | None).

    A whole float for an int field becomes that int; other mismatches raise ``ValueError`` whose
    message starts with ``label`` (the form's label and the field name used by ``--set``).
    """
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and (
        type(None) in args
    )
    if optional:
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else Any
    if value is None:
        if optional or annotation is Any:
            return None
        raise ValueError(f"{label} must be set (got None); leave the setting out for its default.")
    kind = str if typing.get_origin(annotation) is Literal else annotation
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{label} must be true or false (got {value!r}).")
    elif kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{label} must be a whole number such as 3 (got {value!r}).")
        return int(value)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{label} must be a number such as 0.5 (got {value!r}).")
    elif kind is str and not isinstance(value, str):
        raise ValueError(f"{label} must be text (got {value!r}).")
    return value


@dataclass(frozen=True)
class HeadTargetConfig(MethodConfig):
    """How many heads a head-level method removes.

    ``sparsity`` is the share of all heads to remove; ``n_prune``, when set, overrides it with an
    exact count. ``min_heads_per_layer`` keeps at least that many heads in every layer.
    """

    sparsity: float = field(
        default=0.5,
        metadata=ui(
            "Head sparsity", "Share of all attention heads to remove.", min=0.0, max=1.0, step=0.05
        ),
    )
    n_prune: int | None = field(
        default=None,
        metadata=ui(
            "Heads to remove",
            "Exact number of heads to remove (overrides sparsity).",
            min=0,
            max=100_000,
        ),
    )
    min_heads_per_layer: int = min_heads_field()

    def heads_to_prune(self, n_layers: int, n_heads: int) -> int:
        """The number of heads to remove on an ``n_layers x n_heads`` grid.

        Raises:
            ValueError: when the target cannot be met with ``min_heads_per_layer``.
        """
        total = n_layers * n_heads
        count = self.n_prune if self.n_prune is not None else round(self.sparsity * total)
        if count > total:
            raise ValueError(
                f"Cannot remove {count} heads: the model has {total}. Lower the number."
            )
        if self.min_heads_per_layer > n_heads:
            raise ValueError(
                f"Minimum heads per layer ({self.min_heads_per_layer}) exceeds the heads per "
                f"layer ({n_heads}); lower it."
            )
        removable = total - self.min_heads_per_layer * n_layers
        if count > removable:
            raise ValueError(
                f"Removing {count} of {total} heads leaves fewer than {self.min_heads_per_layer} "
                f"per layer; at most {removable} can go. Lower the sparsity or the minimum."
            )
        return count


@dataclass(frozen=True)
class TraceEvent:
    """One step of a method, for live progress and for replay.

    Attributes:
        kind: what happened, e.g. ``"progress"``, ``"scores"``, ``"prune_step"``; each method
            documents its kinds.
        step: 0-based position in the trace (assigned by the context, strictly increasing).
        fraction: share of the method's work done after this event, in [0, 1].
        message: one human line.
        data: JSON-ready payload (numbers, strings, lists; tensors as nested lists).
    """

    kind: str
    step: int
    fraction: float
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceEvent:
        return cls(**data)


@dataclass(frozen=True)
class PruneResult:
    """What a method returns.

    Attributes:
        mask: bool ``(n_layers, n_heads)``, True = keep (for weight-level methods: the heads that
            keep any weight).
        scores: float ``(n_layers, n_heads)``, higher = more important, or None.
        trace: the ordered events emitted during the run.
        info: JSON-ready method facts (e.g. number of evaluations, iterations).
        weight_masks: for weight-level methods, bool masks by parameter name (True = keep, the
            parameter's own shape, names as in ``model.named_parameters()`` of the dense model);
            else empty.
        model: a changed copy of the context's model when the method changed weights (joint
            fine-tuning, masked weights, re-fine-tuning), with every head still present: the
            pipeline removes the heads of ``mask`` from it (head-level methods), evaluates and
            stores it. None when the method left the weights alone.
    """

    mask: torch.Tensor
    scores: torch.Tensor | None
    trace: tuple[TraceEvent, ...]
    info: dict[str, Any] = field(default_factory=dict)
    weight_masks: dict[str, torch.Tensor] = field(default_factory=dict)
    model: nn.Module | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A run's saved progress, for methods that work in iterations (A*, random trials).

    ``load()`` returns the last saved state (a JSON-ready dict) or None; ``save(state)`` replaces
    it atomically. The pipeline builds one per run key over
    :class:`cache.checkpoints.RunCheckpoints` and deletes it once the run is stored, so a run
    started again after an interruption resumes from its last finished iteration.
    """

    load: Callable[[], dict[str, Any] | None]
    save: Callable[[dict[str, Any]], None]


@dataclass
class PruningContext:
    """Everything a method may use; built by :mod:`pruning.pipeline` (or a test).

    Attributes:
        model: the fine-tuned classifier; methods must not mutate it.
        tokenizer: its tokenizer.
        dataset: the labelled dataset (label names, splits).
        score_split: texts used to score heads (a validation or train sample).
        batches: ``score_split`` tokenised with dynamic padding, already on ``device``.
        device: where to compute.
        seed: the run's seed; methods seed their own generators from it.
        on_event: receives every trace event as it happens.
        should_stop: polled between steps; when True, :meth:`check` raises ``JobCancelled``.
        executor: where evaluations may run (:mod:`pruning.executors`); never part of the run
            key, since a method gives the same result on every executor. A* and its baselines
            spread candidate evaluations over Ray actors with ``kind="ray"``.
        checkpoint: where an iterative method saves and finds its progress (None: no resume).
    """

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    dataset: LabelledDataset
    score_split: TextSplit
    batches: list[Batch]
    device: torch.device
    seed: int = 0
    on_event: Callable[[TraceEvent], None] | None = None
    should_stop: Callable[[], bool] | None = None
    trace: list[TraceEvent] = field(default_factory=list)
    executor: ExecutorSettings = LOCAL
    checkpoint: Checkpoint | None = None

    def emit(self, kind: str, fraction: float, message: str = "", **data: Any) -> TraceEvent:
        """Record a trace event, pass it to ``on_event`` and check for cancellation."""
        event = TraceEvent(
            kind=kind,
            step=len(self.trace),
            fraction=min(1.0, max(0.0, float(fraction))),
            message=message,
            data=data,
        )
        self.trace.append(event)
        if self.on_event is not None:
            self.on_event(event)
        self.check()
        return event

    def check(self) -> None:
        """Raise ``JobCancelled`` when the run was asked to stop."""
        if self.should_stop is not None and self.should_stop():
            raise JobCancelled()

    def generator(self) -> torch.Generator:
        """A CPU generator seeded with the run's seed."""
        return torch.Generator().manual_seed(self.seed)


class PruningMethod(ABC):
    """Base class of every method. Subclasses set the class attributes and implement ``run``.

    Class attributes:
        name: registry key (set by :func:`register`).
        title: display name.
        paper: reference shown in the UI (title, authors, year, link).
        granularity: ``"head"`` or ``"weight"``.
        config_class: the method's frozen config dataclass.
        revision: bumped when the method's algorithm changes what it returns for the same
            config; part of the run key from 2 on, so runs of an older algorithm are never
            served as results of the new one (keys of revision-1 methods are unchanged).
    """

    name: ClassVar[str] = ""
    revision: ClassVar[int] = 1
    title: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    granularity: ClassVar[Granularity] = "head"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, config: MethodConfig | None = None) -> None:
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"{self.title or type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(config).__name__}."
            )
        self.config = config

    @abstractmethod
    def run(self, context: PruningContext) -> PruneResult:
        """Compute the mask (and scores) on ``context``; emit events through ``context.emit``."""


REGISTRY: dict[str, type[PruningMethod]] = {}


def register(name: str) -> Callable[[type[PruningMethod]], type[PruningMethod]]:
    """Class decorator: make a method available under ``name`` to pages, CLI and benchmarks."""

    def decorate(cls: type[PruningMethod]) -> type[PruningMethod]:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"A pruning method named {name!r} is already registered.")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return decorate


def get_method(name: str) -> type[PruningMethod]:
    """The method class registered under ``name``.

    Raises:
        ValueError: listing the registered names.
    """
    load_builtin_methods()
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"Unknown pruning method {name!r}; choose one of: {known}.") from None


def list_methods() -> list[type[PruningMethod]]:
    """Every registered method, sorted by name."""
    load_builtin_methods()
    return [REGISTRY[name] for name in sorted(REGISTRY)]


def load_builtin_methods() -> None:
    """Import the method modules shipped with HeadScope so they register themselves."""
    import pruning.methods  # noqa: F401 - its __init__ imports every method module


def select_lowest(
    scores: torch.Tensor,
    n_prune: int,
    *,
    min_heads_per_layer: int = 0,
    already_removed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mask that removes the ``n_prune`` lowest-scoring heads.

    Ties are broken by position (lower layer, then lower head first) so results are
    deterministic. Heads in ``already_removed`` (bool, True = removed) count towards ``n_prune``
    and stay removed.

    Args:
        scores: float ``(n_layers, n_heads)``, higher = more important.
        n_prune: total number of heads removed in the returned mask.
        min_heads_per_layer: never leave a layer with fewer heads than this.

    Returns:
        bool ``(n_layers, n_heads)``, True = keep.

    Raises:
        ValueError: when the constraint makes ``n_prune`` impossible.
    """
    n_layers, n_heads = scores.shape
    removed = (
        already_removed.clone().bool()
        if already_removed is not None
        else torch.zeros(n_layers, n_heads, dtype=torch.bool)
    )
    flat = scores.detach().to("cpu", torch.float64).flatten()
    order = sorted(range(flat.numel()), key=lambda i: (float(flat[i]), i))
    for index in order:
        if int(removed.sum()) >= n_prune:
            break
        layer, head = divmod(index, n_heads)
        if removed[layer, head]:
            continue
        if n_heads - int(removed[layer].sum()) <= min_heads_per_layer:
            continue
        removed[layer, head] = True
    if int(removed.sum()) < n_prune:
        raise ValueError(
            f"Cannot remove {n_prune} heads while keeping {min_heads_per_layer} per layer; "
            "lower the sparsity or the minimum heads per layer."
        )
    return ~removed
