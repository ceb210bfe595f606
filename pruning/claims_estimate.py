"""How long a run that is not stored yet will take, for the Paper claims page.

Three sources, best first:

1. **Stored runs with the same settings** (method, full method config and run settings; any
   seed) on the same prepared classifier: the median of their ``info["total_seconds"]``.
2. **Stored runs of the same method** on the same classifier with other settings: each one's
   seconds scaled by the ratio of the two runs' work (below), then the median.
3. **A rough estimate** from the work alone, priced at the seconds per text of the classifier's
   own preparation (its training seconds over the texts it trained on, a training text counted
   as three forward passes); without that, at :data:`FALLBACK_SECONDS_PER_TEXT`.

The work of a run is counted in forward passes of one text: the method's own (A*'s expected
evaluations from :func:`pruning.methods.search_core.expected_evaluations`, random trials at
their bound, gate training, DeepCuts gradient batches, MCAP episodes, scoring passes), the
evaluation of the pruned model, recovery steps, and the fine-tuning of the "before" protocol.
It is only a model of the cost: the estimate says which source it came from.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cache.run_format import read_document

if TYPE_CHECKING:
    from cache.model_store import PreparedModel
    from cache.run_store import RunStore
    from pruning.bench_quality import PlannedRun
    from pruning.pipeline import RunRequest

__all__ = [
    "FALLBACK_SECONDS_PER_TEXT",
    "ROUGH",
    "StoredTiming",
    "estimate_seconds",
    "rough_seconds",
    "run_work",
    "stored_timings",
]

# Seconds of one forward pass of one text when the classifier's preparation time is unknown: a
# BERT-base classifier on a laptop CPU at 128 tokens (rough).
FALLBACK_SECONDS_PER_TEXT = 0.02
TRAIN_PASSES = 3  # one training text ~ one forward and one backward pass (two forwards' worth)
ROUGH = "rough estimate"


@dataclass(frozen=True)
class StoredTiming:
    """What the estimate needs of one stored run: its settings and how long it took."""

    method: str
    config: dict[str, Any]
    settings: dict[str, Any]
    seconds: float


@dataclass(frozen=True)
class Shape:
    """The sizes of the prepared classifier that the work depends on."""

    heads: int
    train: int
    validation: int
    test: int
    train_batch: int
    train_steps: int
    seconds_per_text: float
    measured: bool


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def stored_timings(store: RunStore, prepared_key: str) -> list[StoredTiming]:
    """The stored runs of one prepared classifier with their seconds (unreadable ones skipped)."""
    summaries, _ = store.list(model_fingerprint=f"prepared:{prepared_key}")
    timings = []
    with store.reading():
        for summary in summaries:
            try:
                run = read_document(store.path_for(summary.key))["run"]
                seconds = float(run["info"]["total_seconds"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            timings.append(
                StoredTiming(
                    method=str(run["method"]),
                    config=dict(run.get("config") or {}),
                    settings=dict(run["info"].get("settings") or {}),
                    seconds=seconds,
                )
            )
    return timings


def classifier_shape(prepared: PreparedModel | None) -> Shape:
    """Heads, split sizes and the seconds per text of ``prepared`` (defaults where unknown)."""
    info = prepared.info if prepared is not None else {}
    sizes = info.get("split_sizes") or {}
    heads = 144
    if prepared is not None:
        try:
            config = json.loads((prepared.path / "config.json").read_text(encoding="utf-8"))
            layers = int(config.get("num_hidden_layers") or config.get("n_layers"))
            heads = layers * int(config.get("num_attention_heads") or config.get("n_heads"))
        except (OSError, ValueError, TypeError):
            pass
    batch = int((info.get("train_config") or {}).get("batch_size") or 16)
    steps = int((info.get("train") or {}).get("steps") or 0)
    seconds = info.get("train_seconds")
    measured = isinstance(seconds, int | float) and seconds > 0 and steps > 0
    per_text = (
        float(seconds) / (steps * batch * TRAIN_PASSES)
        if measured and isinstance(seconds, int | float)
        else FALLBACK_SECONDS_PER_TEXT
    )
    return Shape(
        heads=heads,
        train=int(sizes.get("train") or 8_000),
        validation=int(sizes.get("validation") or 1_000),
        test=int(sizes.get("test") or 1_000),
        train_batch=batch,
        train_steps=steps or 500,
        seconds_per_text=per_text,
        measured=measured,
    )


def _method_work(request: RunRequest, config: Mapping[str, Any], shape: Shape) -> float:
    """Forward passes of one text that the method itself makes (see the module docstring)."""
    from pruning.methods.search_core import expected_evaluations

    score = min(request.score_examples, shape.validation)
    method = request.method
    if method == "astar":
        evaluations, _ = expected_evaluations("astar", shape.heads, float(config["budget"]))
        return float(evaluations * score)
    if method == "random_budget":
        trials = int(config.get("trials") or 1)
        evaluations, _ = expected_evaluations("random", shape.heads, 0.0, trials)
        return float(evaluations * score)
    if method in ("autoattention", "l0_gates"):
        return float(config.get("steps") or 0) * int(config.get("batch_size") or 32) * TRAIN_PASSES
    if method == "deepcuts":
        batch = int(config.get("batch_size") or 32)
        passes = (
            int(config.get("smooth_samples") or 1) if "smooth" in str(config["strategy"]) else 1
        )
        gradients = int(config.get("grad_batches") or 0) * batch * passes * TRAIN_PASSES
        refine = int(config.get("refine_steps") or 0) * batch * TRAIN_PASSES
        return float(gradients + refine)
    if method == "mcap":
        instances = int(config.get("max_train_examples") or 0) or shape.train
        return float(instances * int(config.get("passes") or 1) * TRAIN_PASSES)
    if method == "hisp":
        return float(score * TRAIN_PASSES)
    if method in ("entropy", "sep"):
        return float(score)
    return 0.0


def run_work(request: RunRequest, shape: Shape, config: Mapping[str, Any] | None = None) -> float:
    """The whole run's work in forward passes of one text (method, evaluation, fine-tuning)."""
    config = dict(config if config is not None else request.method_config().to_dict())
    test = shape.test if request.eval_split == "test" else shape.validation
    evaluated = min(request.eval_examples or test, test)
    work = _method_work(request, config, shape) + evaluated
    if request.recovery_steps:
        work += request.recovery_steps * 32 * TRAIN_PASSES + evaluated
    if request.protocol == "before":
        work += shape.train_steps * shape.train_batch * TRAIN_PASSES
    return work


def rough_seconds(request: RunRequest, prepared: PreparedModel | None) -> float:
    """The rough estimate: the run's work at the classifier's seconds per text."""
    shape = classifier_shape(prepared)
    return run_work(request, shape) * shape.seconds_per_text


def _stored_request(request: RunRequest, timing: StoredTiming) -> RunRequest:
    """The request a stored run was made from (as far as its work goes)."""
    settings = timing.settings
    return dataclasses.replace(
        request,
        config=dict(timing.config),
        score_examples=int(settings.get("score_examples") or request.score_examples),
        eval_split="validation" if settings.get("eval_split") == "validation" else "test",
        eval_examples=settings.get("eval_examples"),
        recovery_steps=int(settings.get("recovery_steps") or 0),
        protocol="before" if settings.get("protocol") == "before" else "after",
    )


def estimate_seconds(
    planned: PlannedRun,
    store: RunStore,
    *,
    timings: Sequence[StoredTiming] | None = None,
    prepared: PreparedModel | None = None,
) -> tuple[float, str]:
    """``(seconds, how)``: the expected time of ``planned``'s run and where the number came from.

    Args:
        timings: the classifier's stored runs (:func:`stored_timings`); read from ``store``
            when None (pass them when estimating many rows).
        prepared: the classifier (its preparation prices the rough estimate); looked up by the
            request's ``prepared_key`` when None.
    """
    request = planned.request
    if prepared is None and request.prepared_key:
        from cache.model_store import ModelStore

        prepared = ModelStore().get(request.prepared_key)
    if timings is None:
        timings = stored_timings(store, request.prepared_key) if request.prepared_key else []
    config = request.method_config().to_dict()
    own = [t for t in timings if t.method == request.method]
    same = [
        t.seconds
        for t in own
        if _canonical(t.config) == _canonical(config)
        and _canonical(t.settings) == _canonical(request.run_settings())
    ]
    if same:
        return statistics.median(same), f"median of {len(same)} stored run(s), same settings"
    shape = classifier_shape(prepared)
    wanted = run_work(request, shape, config)
    scaled = []
    for timing in own:
        try:
            theirs = run_work(_stored_request(request, timing), shape, timing.config)
        except (KeyError, TypeError, ValueError):
            continue
        if theirs > 0:
            scaled.append(timing.seconds * wanted / theirs)
    if scaled:
        return (
            statistics.median(scaled),
            f"median of {len(scaled)} stored {request.method} run(s) with other settings, "
            "scaled by their work",
        )
    where = (
        "priced at this classifier's training speed"
        if shape.measured
        else f"priced at {FALLBACK_SECONDS_PER_TEXT} s per text"
    )
    return wanted * shape.seconds_per_text, f"{ROUGH}: no stored {request.method} run yet; {where}"
