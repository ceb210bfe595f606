"""One pruning run from request to stored result: the path every page, CLI call and sweep takes.

``run_pruning`` loads the prepared classifier for the dataset, scores and masks heads with the
chosen method, removes the heads for real, evaluates the pruned model with every metric, optionally
fine-tunes it for a few recovery steps, and stores the run. A request whose result is already in
the store returns at once (the key hashes everything that determines the result).

It is made of two parts that a sweep can use apart (:mod:`pruning.ray_sweep`): ``planned_key``
(the key, from the dataset and the prepared classifier, without loading any model) and
``compute_run`` (the whole computation, nothing stored), so a worker computes and the driver alone
stores; both share :func:`plan_run`, so keys never diverge.

Progress: ``on_event`` receives the method's :class:`TraceEvent` objects with their fraction
rescaled to the whole run, plus ``stage`` events from the pipeline itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from cache.checkpoints import RunCheckpoints
from cache.fingerprints import software_versions, spec_to_dict
from cache.model_store import ModelStore, PreparedModel, check_label_compatibility
from cache.run_store import RunRecord, RunStore
from pruning.batching import make_batches
from pruning.cost import count_parameters, flops_per_example, nonzero_parameters
from pruning.data import DataSpec, LabelledDataset, load_dataset
from pruning.evaluate import Metrics, evaluate_split
from pruning.executors import LOCAL, ExecutorSettings
from pruning.heads import head_sparsity, remove_heads
from pruning.methods.base import (
    Checkpoint,
    MethodConfig,
    PruningContext,
    TraceEvent,
    get_method,
)
from pruning.models import ModelSpec, pick_device
from pruning.protocol import fine_tune_pruned, load_encoder
from pruning.train import TrainConfig, fine_tune

log = logging.getLogger(__name__)

# Share of the progress bar each stage takes ("before": the method, then the fine-tuning up to
# _BEFORE_TRAIN_END, then evaluation).
_METHOD_SHARE, _EVAL_SHARE = 0.75, 0.15
_BEFORE_METHOD_SHARE, _BEFORE_TRAIN_END = 0.3, 0.85
FLOPS_SEQ_LEN = 128
# Pipeline stage messages that callers (sweeps, tests) recognise.
LOADING_MESSAGE = "loading data and the prepared classifier"
FOUND_MESSAGE = "found in the run store"
STORED_MESSAGE = "stored"


@dataclass(frozen=True)
class RunRequest:
    """Everything that determines a pruning run.

    Attributes:
        method: registry name (``headscope methods`` lists them).
        config: the method's settings as a dict (validated by its config class).
        model, data: the base encoder and the dataset; the classifier used is the newest one
            prepared for this pair in the model store, unless ``prepared_key`` names one.
        seed: seeds the method and the recovery fine-tuning.
        score_split, score_examples: texts the method may use to score heads.
        eval_split, eval_examples: texts the pruned model is evaluated on (None = whole split).
        recovery_steps, recovery_lr: optional fine-tuning of the pruned model (0 = none; at
            most 50 passes over the training split).
        protocol: ``"after"`` prunes the fine-tuned classifier; ``"before"`` prunes the base
            encoder (with a fresh classifier head, seeded as the preparation seeds it), then
            fine-tunes the pruned model with the prepared classifier's own training config, so
            the result is comparable with the unpruned fine-tuned classifier (the MCAP paper's
            protocol). Methods that score heads with the task loss see an untrained head then.
        name: a label shown in the run list.
    """

    method: str
    config: dict[str, Any] = field(default_factory=dict)
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    prepared_key: str | None = None
    seed: int = 0
    score_split: Literal["validation", "train"] = "validation"
    score_examples: int = 256
    eval_split: Literal["validation", "test"] = "test"
    eval_examples: int | None = None
    recovery_steps: int = 0
    recovery_lr: float = 5e-5
    protocol: Literal["after", "before"] = "after"
    batch_size: int = 64
    device: str = "auto"
    name: str = ""

    def __post_init__(self) -> None:
        if self.score_split not in ("validation", "train"):
            raise ValueError("score_split must be 'validation' or 'train'.")
        if self.eval_split not in ("validation", "test"):
            raise ValueError("eval_split must be 'validation' or 'test'.")
        if not 1 <= self.score_examples <= 100_000:
            raise ValueError("score_examples must be between 1 and 100,000.")
        if self.eval_examples is not None and self.eval_examples < 1:
            raise ValueError("eval_examples must be at least 1 (or None for the whole split).")
        if not 0 <= self.recovery_steps <= 100_000:
            raise ValueError("recovery_steps must be between 0 and 100,000.")
        if not 0 < self.recovery_lr <= 1e-2:
            raise ValueError("recovery_lr must be in (0, 0.01]; 5e-5 is a good start.")
        if self.protocol not in ("after", "before"):
            raise ValueError(
                "protocol must be 'after' (prune the fine-tuned classifier) or "
                "'before' (prune the encoder, then fine-tune)."
            )
        if self.protocol == "before" and self.recovery_steps:
            raise ValueError(
                "Recovery steps apply to the 'after' protocol only: with 'before' the pruned "
                "model is fine-tuned in full anyway. Set recovery_steps to 0."
            )
        if not 1 <= self.batch_size <= 4096:
            raise ValueError("batch_size must be between 1 and 4096.")

    def to_dict(self) -> dict[str, Any]:
        """The request as JSON-ready data (see :meth:`from_dict`)."""
        data = dataclasses.asdict(self)
        data["config"] = json.loads(json.dumps(self.config))
        return data

    @classmethod
    def from_dict(cls, data: Any) -> RunRequest:
        """Inverse of :meth:`to_dict`, validating every field.

        Raises:
            ValueError: not a request (unknown fields, wrong types, bad values).
        """
        if not isinstance(data, dict):
            raise ValueError("A run request must be a JSON object.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown run request fields: {', '.join(unknown)}.")
        fields = dict(data)
        try:
            fields["model"] = ModelSpec(**dict(fields.get("model") or {}))
            fields["data"] = DataSpec(**dict(fields.get("data") or {}))
            fields["config"] = dict(fields.get("config") or {})
            return cls(**fields)
        except TypeError as error:
            raise ValueError(f"Not a run request: {error}") from None

    def method_config(self) -> MethodConfig:
        """The validated method config (raises ValueError with a fix-it message)."""
        return get_method(self.method).config_class.from_dict(dict(self.config))

    def run_settings(self) -> dict[str, Any]:
        """The settings besides the method config that change the result (part of the key).

        ``protocol`` appears only when it is ``"before"``, so the keys of runs made before the
        protocol existed still match.
        """
        settings: dict[str, Any] = {
            "score_split": self.score_split,
            "score_examples": self.score_examples,
            "eval_split": self.eval_split,
            "eval_examples": self.eval_examples,
            "recovery_steps": self.recovery_steps,
            "recovery_lr": self.recovery_lr,
        }
        if self.protocol == "before":
            settings["protocol"] = "before"
        return settings


def stage_event(message: str, fraction: float, **data: Any) -> TraceEvent:
    """A pipeline progress event (not part of the method's trace)."""
    return TraceEvent(kind="stage", step=-1, fraction=fraction, message=message, data=data)


def resolve_prepared(
    request: RunRequest, dataset: LabelledDataset, model_store: ModelStore
) -> PreparedModel:
    """The prepared classifier the run uses, checked against the dataset's classes.

    Raises:
        ValueError: when none is prepared for this model and dataset, or classes differ.
    """
    if request.prepared_key:
        prepared = model_store.resolve(request.prepared_key)
    else:
        matches = model_store.find(request.model, request.data, dataset.fingerprint)
        if not matches:
            raise ValueError(
                f"No classifier is prepared for {request.model.label} on {dataset.name}. "
                "Prepare one first: `headscope prepare` (or the Overview page)."
            )
        prepared = matches[0]
    check_label_compatibility(prepared.label_names, dataset.label_names)
    return prepared


def _metrics_dict(metrics: Metrics) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, float) else v) for k, v in metrics.to_dict().items()}


@dataclass(frozen=True)
class RunPlan:
    """What is known about a run before any model is loaded: its inputs and its key."""

    request: RunRequest
    config: MethodConfig
    dataset: LabelledDataset
    prepared: PreparedModel
    key: str

    @property
    def model_fingerprint(self) -> str:
        return f"prepared:{self.prepared.key}"


@dataclass(frozen=True)
class ComputedRun:
    """A finished run that is not stored yet: what :func:`run_pruning` hands to ``store.save``.

    Attributes:
        record: the run (key, mask, scores, metrics, trace, info).
        model: the pruned (and recovered) classifier to store with the run, or None.
        tokenizer: its tokenizer.
    """

    record: RunRecord
    model: nn.Module | None
    tokenizer: PreTrainedTokenizerBase


def plan_run(request: RunRequest, *, model_store: ModelStore | None = None) -> RunPlan:
    """Validate the request, load its dataset, resolve the prepared classifier, compute the key.

    Raises:
        ValueError: bad settings, no prepared classifier, mismatched classes, unusable data.
    """
    config = request.method_config()
    dataset = load_dataset(request.data)
    prepared = resolve_prepared(request, dataset, model_store or ModelStore())
    key = run_key(request, dataset, prepared)
    return RunPlan(request=request, config=config, dataset=dataset, prepared=prepared, key=key)


def run_key(request: RunRequest, dataset: LabelledDataset, prepared: PreparedModel) -> str:
    """The store key of ``request`` on an already loaded dataset and resolved classifier.

    The one place the key is computed: :func:`plan_run` uses it, and so do callers that key many
    requests on one dataset (the Paper claims page) without loading it again for each.
    """
    extra = request.run_settings()
    revision = get_method(request.method).revision
    if revision > 1:
        extra["method_revision"] = revision
    return RunStore.key_for(
        model_fingerprint=f"prepared:{prepared.key}",
        data_fingerprint=dataset.fingerprint,
        method=request.method,
        config=request.method_config().to_dict(),
        seed=request.seed,
        extra=extra,
    )


def planned_key(request: RunRequest, *, model_store: ModelStore | None = None) -> str:
    """The key the run of ``request`` is stored under, without loading any model.

    Loads the dataset and resolves the prepared classifier (both determine the key), exactly as
    :func:`run_pruning` does, so the two never disagree.

    Raises:
        ValueError: bad settings, no prepared classifier, mismatched classes, unusable data.
    """
    return plan_run(request, model_store=model_store).key


def compute_run(
    request: RunRequest,
    *,
    model_store: ModelStore | None = None,
    on_event: Callable[[TraceEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    executor: ExecutorSettings = LOCAL,
) -> ComputedRun:
    """Compute one run without looking in or writing to the run store.

    Everything :func:`run_pruning` does except the store lookup and ``store.save``: a sweep
    computes runs elsewhere (a Ray worker) and stores them in one place (the driver).

    Args:
        executor: where the method may spread its candidate evaluations (never part of the key).

    Raises:
        ValueError: bad settings, no prepared classifier, mismatched classes.
        pruning.jobs.JobCancelled: when ``should_stop`` fired.
    """
    started = time.monotonic()
    request.method_config()  # bad settings fail before the first event
    if on_event is not None:
        on_event(stage_event(LOADING_MESSAGE, 0.0))
    plan = plan_run(request, model_store=model_store)
    return _compute(
        plan,
        started=started,
        on_event=on_event,
        should_stop=should_stop,
        executor=executor,
    )


def run_pruning(
    request: RunRequest,
    *,
    store: RunStore | None = None,
    model_store: ModelStore | None = None,
    on_event: Callable[[TraceEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    executor: ExecutorSettings = LOCAL,
) -> RunRecord:
    """Run (or fetch from the store) one pruning run and return its stored record.

    Args:
        executor: where the method may spread its candidate evaluations (never part of the key).

    Raises:
        ValueError: bad settings, no prepared classifier, mismatched classes.
        pruning.jobs.JobCancelled: when ``should_stop`` fired; nothing is stored then.
    """
    started = time.monotonic()
    request.method_config()  # bad settings fail before the first event
    store = store or RunStore()
    if on_event is not None:
        on_event(stage_event(LOADING_MESSAGE, 0.0))
    plan = plan_run(request, model_store=model_store)
    if store.exists(plan.key):
        if on_event is not None:
            on_event(stage_event(FOUND_MESSAGE, 1.0, cached=True))
        return store.get(plan.key)
    computed = _compute(
        plan,
        started=started,
        on_event=on_event,
        should_stop=should_stop,
        executor=executor,
    )
    saved = store.save(computed.record, model=computed.model, tokenizer=computed.tokenizer)
    RunCheckpoints().delete(plan.key)
    if on_event is not None:
        on_event(stage_event(STORED_MESSAGE, 1.0, key=plan.key))
    log.info("run %s (%s) stored in %.1f s", plan.key, request.method, time.monotonic() - started)
    return saved


def _checkpoint(key: str, request: RunRequest) -> Checkpoint:
    """The checkpoint of run ``key`` (see :mod:`cache.checkpoints`): resumable methods use it.

    Each save also records the request, so the dashboard can offer to resume the run.
    """
    checkpoints = RunCheckpoints()
    meta = {"request": request.to_dict()}

    def save(state: dict[str, Any]) -> None:
        checkpoints.save(key, state, meta=meta)

    return Checkpoint(load=lambda: checkpoints.load(key), save=save)


def _compute(
    plan: RunPlan,
    *,
    started: float,
    on_event: Callable[[TraceEvent], None] | None,
    should_stop: Callable[[], bool] | None,
    executor: ExecutorSettings,
) -> ComputedRun:
    """The run of ``plan``: load, prune, remove, evaluate, (recover); nothing is stored."""
    request, config, dataset, prepared = plan.request, plan.config, plan.dataset, plan.prepared
    key, model_fingerprint = plan.key, plan.model_fingerprint
    method_class = get_method(request.method)

    def emit(event: TraceEvent) -> None:
        if on_event is not None:
            on_event(event)

    device = pick_device(request.device)
    before = request.protocol == "before"
    loaded = (
        load_encoder(request.model, prepared, dataset) if before else prepared.load(device=device)
    )
    if before:
        loaded.model.to(device)
    model, tokenizer = loaded.model, loaded.tokenizer
    method_share = _BEFORE_METHOD_SHARE if before else _METHOD_SHARE
    score_split = dataset.split(request.score_split).subset(request.score_examples, seed=0)
    batches = [
        batch.to(device)
        for batch in make_batches(
            tokenizer,
            score_split.texts,
            score_split.labels,
            batch_size=request.batch_size,
            text_pairs=score_split.text_pairs,
        )
    ]

    def forward_method_event(event: TraceEvent) -> None:
        emit(dataclasses.replace(event, fraction=event.fraction * method_share))

    context = PruningContext(
        model=model,
        tokenizer=tokenizer,
        dataset=dataset,
        score_split=score_split,
        batches=batches,
        device=device,
        seed=request.seed,
        on_event=forward_method_event,
        should_stop=should_stop,
        executor=executor,
        checkpoint=_checkpoint(key, request),
    )
    method = method_class(config)
    method_started = time.monotonic()
    result = method.run(context)
    method_seconds = time.monotonic() - method_started
    context.check()

    emit(stage_event("removing heads and evaluating", method_share))
    weight_level = method_class.granularity == "weight"
    changed = result.model if result.model is not None else model
    # A weight-level mask lives inside the heads: the masked copy is the pruned model (dense
    # shape, zeros where pruned); head-level methods lose their heads for real.
    pruned = (
        changed if weight_level and result.model is not None else remove_heads(changed, result.mask)
    )
    fine_tune_info = None
    if before:
        span = _BEFORE_TRAIN_END - _BEFORE_METHOD_SHARE

        def on_fine_tune(fraction: float, message: str) -> None:
            emit(stage_event(message, _BEFORE_METHOD_SHARE + span * fraction))

        emit(stage_event("fine-tuning the pruned model", _BEFORE_METHOD_SHARE))
        fine_tune_info = fine_tune_pruned(
            pruned,
            tokenizer,
            dataset,
            prepared,
            device=device,
            weight_masks=result.weight_masks or None,
            on_progress=on_fine_tune,
            should_stop=should_stop,
        )
        context.check()
    eval_split = dataset.split(request.eval_split)
    if request.eval_examples is not None:
        eval_split = eval_split.subset(request.eval_examples, seed=0)
    stored_dense = prepared.metrics.get(request.eval_split)
    if request.eval_examples is None and stored_dense:
        dense_metrics = dict(stored_dense)
    else:
        # Under "before" the model the method saw is the untrained encoder: the unpruned
        # reference is the prepared (fine-tuned) classifier.
        reference = prepared.load(device=device).model if before else model
        dense_metrics = _metrics_dict(
            evaluate_split(reference, tokenizer, eval_split, batch_size=request.batch_size)
        )
    context.check()
    pruned_metrics = _metrics_dict(
        evaluate_split(pruned, tokenizer, eval_split, batch_size=request.batch_size)
    )
    metrics: dict[str, Any] = {
        "dense": dense_metrics,
        "pruned": pruned_metrics,
        "cost": {
            "params_dense": count_parameters(model),
            "params_pruned": count_parameters(pruned),
            "flops_dense": flops_per_example(model, FLOPS_SEQ_LEN),
            "flops_pruned": flops_per_example(pruned, FLOPS_SEQ_LEN),
            "flops_seq_len": FLOPS_SEQ_LEN,
            "head_sparsity": head_sparsity(pruned),
        },
    }
    if weight_level:
        metrics["cost"].update(nonzero_parameters(pruned))
    recovered_model = None
    if request.recovery_steps > 0:
        context.check()
        emit(stage_event("recovery fine-tuning", _METHOD_SHARE + _EVAL_SHARE))
        recovery_share = 1.0 - _METHOD_SHARE - _EVAL_SHARE

        def on_train(event: Any) -> None:
            emit(
                stage_event(
                    f"recovery step {event.step}/{event.total_steps} · loss {event.loss:.3f}",
                    _METHOD_SHARE + _EVAL_SHARE + recovery_share * event.fraction,
                )
            )

        recovery = TrainConfig.for_steps(
            request.recovery_steps, len(dataset.train), lr=request.recovery_lr, seed=request.seed
        )
        fine_tune(
            pruned,
            tokenizer,
            dataset.train,
            recovery,
            device=device,
            on_event=on_train,
            should_stop=should_stop,
            weight_masks=result.weight_masks or None,
        )
        context.check()
        metrics["recovered"] = _metrics_dict(
            evaluate_split(pruned, tokenizer, eval_split, batch_size=request.batch_size)
        )
        recovered_model = pruned
    if recovered_model is None and (result.model is not None or before):
        recovered_model = pruned

    record = RunRecord(
        key=key,
        method=request.method,
        config=config.to_dict(),
        seed=request.seed,
        model={
            "spec": spec_to_dict(request.model),
            "fingerprint": model_fingerprint,
            "prepared_key": prepared.key,
            "label": request.model.label,
        },
        data={
            "spec": spec_to_dict(request.data),
            "fingerprint": dataset.fingerprint,
            "description": dataset.description,
            "label_names": list(dataset.label_names),
        },
        metrics=metrics,
        trace=[event.to_dict() for event in result.trace],
        info={
            "name": request.name or f"{method_class.title or request.method}",
            "method_title": method_class.title,
            "granularity": method_class.granularity,
            "settings": request.run_settings(),
            "method_info": result.info,
            **({"fine_tune": fine_tune_info} if fine_tune_info is not None else {}),
            "method_seconds": method_seconds,
            "total_seconds": time.monotonic() - started,
            "device": str(device),
            "versions": software_versions(),
        },
        mask=result.mask.to("cpu", torch.bool),
        scores=None if result.scores is None else result.scores.detach().to("cpu", torch.float32),
        extra_tensors={name: t.detach().cpu() for name, t in result.weight_masks.items()},
        has_model=recovered_model is not None,
    )
    context.check()
    return ComputedRun(record=record, model=recovered_model, tokenizer=tokenizer)
