"""`headscope bench quality`: every pruning method under one protocol, on one model and dataset.

**The plan.** Every row is an ordinary stored run of :func:`pruning.pipeline.run_pruning` on the
same prepared classifier, scored on the same validation texts and evaluated on the same test
split, so a rerun (or a bench resumed after an interruption) fetches finished rows from the run
store instead of recomputing them. The rows, in order:

1. **Head sweep**: random heads, HISP, attention entropy, attention to [SEP] and head weight
   magnitude at every head sparsity (full: 10% to 90% in steps of 10%), each once as pruned and
   once followed by recovery fine-tuning (full: 200 steps at learning rate 5e-5, at every
   sparsity).
2. **A\\* vs random under a budget** (Parnami et al.'s comparison): A* search at several
   accuracy budgets (full: 0.5, 1, 2 and 4 points on the score texts) next to ``random_budget``
   (seeded random pruning orders, full: 20 trials) at the same budgets and on the same texts.
3. **Gates**: AutoAttention at its natural output (the heads whose gate closed) and at a fixed
   50% of heads, and the L0 hard-concrete gates of Voita et al. at their natural output; all
   train gates and weights jointly (full: the methods' default 300 steps).
4. **MCAP** at 20% of heads in the paper's "before fine-tuning" protocol (the base encoder is
   pruned, then fine-tuned with the classifier's own training settings) next to random heads and
   attention entropy at 20% in the same protocol (the rows of ``bench table1``, built by
   :func:`pruning.cli_bench_mcap.table1_plan`).
5. **DeepCuts by compression ratio** (weight level): LayerMagWeight, GlobalMagWeight, Cam-Cut
   and Smooth-Cut at ratios 2, 3, 3.5 and 4 (full), built by
   :func:`pruning.cli_bench_runs.deepcuts_plan`, no re-fine-tuning.

``--quick`` (the CI check, under 10 minutes on a 2-core CPU from an empty store, preparing the
classifier included) keeps every family but shrinks each: 2,000 rows of the dataset (1,600
training, 200 validation and 200 test texts; a classifier is prepared on them with the default
training settings, 50 steps, and the "before" rows fine-tune as long; on 1,000 rows the
classifier learned nothing and predicted one class), 64 score texts, sparsities 30% and 50% with
recovery (10 steps) at 50% only, A* and random at a budget of 2 points (5 random trials), gates
with 10 steps (as many as the recovery), MCAP with episodes of 30 texts over 120 training texts
(a step every 2 episodes), DeepCuts LayerMagWeight and Cam-Cut at the paper's ratio 3 (BERT-base
equivalent) with 4 gradient batches, latency on batches of
8 x 64 tokens over 3 rounds. Its accuracies are too noisy to judge the papers (a test text is
half a point): it checks that the bench runs end to end. Every setting can be overridden by its
flag; the resolved settings and the exact plan are in the JSON report.

**Latency** (head-level rows; ``--skip-latency`` leaves it out): the prepared classifier and, for
every distinct head mask, a copy with those heads physically removed
(:func:`pruning.heads.remove_heads`) are timed in interleaved rounds
(:func:`pruning.cost.interleaved_latency`; at most 8 pruned models per round-robin, each with the
dense model in it) on fixed random tokens (full: batch 32 x 128 tokens, 10 rounds). Each row gets
``latency_ms`` (median), ``dense_latency_ms`` (the dense median of the same rounds),
``speedup`` (dense median / pruned median) and ``predicted_speedup`` (analytic FLOPs dense /
pruned at 128 tokens, from the run's stored cost). Rows that fine-tuned their own copy (recovery,
"before") share the timing of their mask: the architecture is the same. Weight-level rows keep a
dense shape and get no latency (zeros are multiplied like any other number).

**Claims**: :func:`evaluate_claims` states, from the rows alone, whether each paper's claim holds
on our model and data.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import shlex
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruning.bench_runs_table import deepcuts_claims
from pruning.claim_rules import (
    DOES_NOT_HOLD,
    HOLDS,
    MIN_SEEDS,
    PAIRED_RULE,
    TRIALS_RULE,
    accuracy_by_seed,
    combine,
    holds_flag,
    paired,
    trials_verdict,
)
from pruning.compression import RATIO_DEFINITIONS
from pruning.executors import LOCAL, ExecutorSettings

if TYPE_CHECKING:
    from cache.model_store import PreparedModel
    from cache.run_format import RunRecord
    from pruning.data import DataSpec
    from pruning.pipeline import RunRequest

__all__ = [
    "FAMILIES",
    "FULL",
    "QUICK",
    "PlannedRun",
    "QualityOptions",
    "QualitySettings",
    "evaluate_claims",
    "quality_markdown",
    "quality_plan",
    "resolve_settings",
    "run_quality_bench",
    "write_quality_figures",
]

log = logging.getLogger(__name__)

SWEEP_TITLES = {
    "random": "Random heads",
    "hisp": "HISP",
    "entropy": "Attention entropy",
    "sep": "Attention to [SEP]",
    "magnitude": "Head magnitude",
}
# Plan families selectable with --methods, in plan order.
FAMILIES = (*SWEEP_TITLES, "astar", "autoattention", "l0_gates", "mcap", "deepcuts")
GATE_FIXED_SPARSITY = 0.5
MCAP_SPARSITY = 0.2
MCAP_BASELINES = ("Random heads", "Attention entropy")
LATENCY_CHUNK = 8


@dataclass(frozen=True)
class QualitySettings:
    """The resolved settings of one ``bench quality`` (full or quick preset plus overrides).

    Attributes:
        quick: the quick preset was the base.
        max_rows: rows of the dataset used (None = all).
        examples: validation texts the methods score heads on.
        search_examples: score texts of A* and random_budget (None in a preset: as
            ``examples``). Fewer texts do not make A* cheaper: more heads then cost nothing, so
            fewer leave its search space.
        eval_examples: test texts every row is evaluated on (None = the whole test split).
        methods: plan families that run (see ``FAMILIES``).
        sparsities: head sparsities of the sweep.
        recovery_sparsities: sweep sparsities that also get a recovery row.
        recovery_steps, recovery_lr: fine-tuning after pruning of those rows (0 steps = none).
        budgets: A* / random budgets in accuracy points.
        random_trials: random pruning orders tried per budget.
        gate_steps: joint training steps of AutoAttention and L0 gates (the presets give them
            as many as ``recovery_steps``, so AutoAttention meets HISP and random heads with equal
            training budgets, as the AutoAttention issue asks).
        mcap_episode_size, mcap_update_every, mcap_train_examples: MCAP's episode size, episodes
            per optimiser step and training instances (0 = the whole training split).
        strategies, ratios, grad_batches: the DeepCuts table.
        ratio_definition: how the DeepCuts ratios read (:mod:`pruning.compression`): by default
            ``"bert_base_equivalent"``, the share of prunable weights the paper's ratio leaves on
            BERT-base (its ratio 3 keeps 14.7%), so the claim is tested in the paper's regime.
        latency_batch, latency_seq_len, latency_repeats: the latency measurement.
    """

    quick: bool
    max_rows: int | None
    examples: int
    search_examples: int | None
    eval_examples: int | None
    methods: tuple[str, ...]
    sparsities: tuple[float, ...]
    recovery_sparsities: tuple[float, ...]
    recovery_steps: int
    recovery_lr: float
    budgets: tuple[float, ...]
    random_trials: int
    gate_steps: int
    mcap_episode_size: int
    mcap_update_every: int
    mcap_train_examples: int
    strategies: tuple[str, ...]
    ratios: tuple[float, ...]
    grad_batches: int
    ratio_definition: str
    latency_batch: int
    latency_seq_len: int
    latency_repeats: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


_SWEEP = tuple(round(0.1 * i, 1) for i in range(1, 10))
FULL = QualitySettings(
    quick=False,
    max_rows=None,
    examples=256,
    search_examples=None,
    eval_examples=None,
    methods=FAMILIES,
    sparsities=_SWEEP,
    recovery_sparsities=_SWEEP,
    recovery_steps=200,
    recovery_lr=5e-5,
    budgets=(0.5, 1.0, 2.0, 4.0),
    random_trials=20,
    gate_steps=200,  # = recovery_steps: AutoAttention's comparison at equal training budgets
    mcap_episode_size=60,
    mcap_update_every=8,
    mcap_train_examples=0,
    strategies=("layer_mag_weight", "global_mag_weight", "cam_cut", "smooth_cut"),
    ratios=(2.0, 3.0, 3.5, 4.0),
    grad_batches=16,
    ratio_definition="bert_base_equivalent",
    latency_batch=32,
    latency_seq_len=128,
    latency_repeats=10,
)
QUICK = dataclasses.replace(
    FULL,
    quick=True,
    max_rows=2000,
    examples=64,
    sparsities=(0.3, 0.5),
    recovery_sparsities=(0.5,),
    recovery_steps=10,
    budgets=(2.0,),
    random_trials=5,
    gate_steps=10,  # = recovery_steps
    mcap_episode_size=30,
    mcap_update_every=2,
    mcap_train_examples=120,
    strategies=("layer_mag_weight", "cam_cut"),
    ratios=(3.0,),
    grad_batches=4,
    latency_batch=8,
    latency_seq_len=64,
    latency_repeats=3,
)
SETTING_NAMES = tuple(f.name for f in dataclasses.fields(QualitySettings) if f.name != "quick")


@dataclass(frozen=True)
class QualityOptions:
    """What ``run_quality_bench`` needs: model, data, device and overrides of the preset.

    Attributes:
        quick: start from :data:`QUICK` instead of :data:`FULL`.
        model: ``"default"``, a model folder or ``hub:ID`` (as ``--model``).
        prepared: a prepared classifier's key; the bench then uses the dataset it was trained on
            (``data`` and a ``max_rows`` override are refused with it).
        data: ``"rotten_tomatoes"`` (default), a CSV path or a Hugging Face name (as ``--data``).
        text_column, label_column, data_seed: as the ``--data`` options.
        seed: seed of every run.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        skip_latency: leave the latency measurement out.
        progress: progress bars on stderr.
        overrides: :class:`QualitySettings` fields to change (None values are ignored;
            ``max_rows=0`` means all rows, ``eval_examples=0`` the whole test split).
        executor: ``local`` runs the rows one after the other in this process; ``ray`` fans them
            out as Ray tasks (:func:`pruning.ray_sweep.run_requests`; the driver alone writes the
            store). The rows are the same either way; latency is always timed on the driver.
    """

    quick: bool = False
    model: str = "default"
    prepared: str | None = None
    data: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    data_seed: int = 0
    seed: int = 0
    device: str = "auto"
    skip_latency: bool = False
    progress: bool = True
    overrides: Mapping[str, Any] = field(default_factory=dict)
    executor: ExecutorSettings = LOCAL


def _items(values: Any) -> list[Any]:
    """A list from a list/tuple or a comma-separated string (as the flags take them)."""
    if isinstance(values, str):
        return [part.strip() for part in values.split(",") if part.strip()]
    return list(values)


def _floats(values: Any, name: str) -> tuple[float, ...]:
    try:
        result = tuple(sorted({float(v) for v in _items(values)}))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers; got {values!r}.") from None
    if not all(math.isfinite(v) for v in result):
        raise ValueError(f"{name} must be finite numbers; got {values!r}.")
    return result


def resolve_settings(options: QualityOptions) -> QualitySettings:
    """The preset of ``options.quick`` with ``options.overrides`` applied, checked.

    Without an explicit ``recovery_sparsities`` the full preset recovers at every sweep
    sparsity and the quick one at the largest.

    Raises:
        ValueError: an unknown override or a value out of range (the message says which).
    """
    overrides = {k: v for k, v in options.overrides.items() if v is not None}
    unknown = sorted(set(overrides) - set(SETTING_NAMES))
    if unknown:
        raise ValueError(f"Unknown bench settings {unknown}; known: {', '.join(SETTING_NAMES)}.")
    base = QUICK if options.quick else FULL
    for name in ("sparsities", "recovery_sparsities", "budgets", "ratios"):
        if name in overrides:
            overrides[name] = _floats(overrides[name], f"--{name.replace('_', '-')}")
    for name in ("methods", "strategies"):
        if name in overrides:
            overrides[name] = tuple(dict.fromkeys(str(v) for v in _items(overrides[name])))
    if overrides.get("max_rows") == 0:
        overrides["max_rows"] = None
    for name in ("eval_examples", "search_examples"):
        if overrides.get(name) == 0:
            overrides[name] = None
    if "recovery_sparsities" not in overrides:
        sweep = overrides.get("sparsities", base.sparsities)
        overrides["recovery_sparsities"] = sweep[-1:] if options.quick else sweep
    settings = dataclasses.replace(base, **overrides)
    if settings.search_examples is None:
        settings = dataclasses.replace(settings, search_examples=settings.examples)
    _check_settings(settings)
    return settings


def _check_settings(s: QualitySettings) -> None:
    unknown = sorted(set(s.methods) - set(FAMILIES))
    if unknown or not s.methods:
        raise ValueError(
            f"--methods names unknown families {unknown}; choose from {', '.join(FAMILIES)}."
            if unknown
            else f"--methods is empty; choose from {', '.join(FAMILIES)}."
        )
    if not s.sparsities or not all(0.0 < v < 1.0 for v in s.sparsities):
        raise ValueError(
            f"--sparsities must be shares of heads between 0 and 1 (0.5 = half); got "
            f"{list(s.sparsities)}."
        )
    if not s.budgets or not all(0.0 < v <= 100.0 for v in s.budgets):
        raise ValueError(
            f"--budgets must be accuracy points in (0, 100] (1 = one point); got {list(s.budgets)}."
        )
    if not set(s.recovery_sparsities) <= set(s.sparsities):
        raise ValueError(
            f"--recovery-sparsities {list(s.recovery_sparsities)} must be among --sparsities "
            f"{list(s.sparsities)}."
        )
    if not s.ratios or min(s.ratios) <= 1.0:
        raise ValueError(f"--ratios must be compression ratios above 1 (e.g. 3); got {s.ratios}.")
    if not s.strategies:
        raise ValueError("--strategies is empty; give at least one DeepCuts strategy.")
    if s.ratio_definition not in RATIO_DEFINITIONS:
        raise ValueError(
            f"--ratio-definition must be one of {', '.join(RATIO_DEFINITIONS)}; got "
            f"{s.ratio_definition!r}."
        )
    for name, value, low, high in (
        ("--recovery-steps", s.recovery_steps, 0, 100_000),
        ("--random-trials", s.random_trials, 1, 10_000),
        ("--gate-steps", s.gate_steps, 1, 100_000),
        ("--latency-batch", s.latency_batch, 1, 4096),
        ("--latency-seq-len", s.latency_seq_len, 1, 512),
        ("--latency-repeats", s.latency_repeats, 1, 10_000),
        ("--examples", s.examples, 1, 100_000),
        ("--search-examples", s.search_examples, 1, 100_000),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer from {low} to {high}; got {value!r}.")


@dataclass(frozen=True)
class PlannedRun:
    """One row of the plan: its label, its family group and the run request.

    ``group`` is ``"sweep"``, ``"astar"``, ``"gates"``, ``"mcap"`` or ``"deepcuts"``.
    """

    label: str
    group: str
    request: RunRequest

    def to_dict(self) -> dict[str, Any]:
        """The row's exact settings (JSON-ready), as the report lists them."""
        r = self.request
        return {
            "label": self.label,
            "group": self.group,
            "method": r.method,
            "config": dict(r.config),
            "protocol": r.protocol,
            "recovery_steps": r.recovery_steps,
            "recovery_lr": r.recovery_lr,
            "seed": r.seed,
            "score_examples": r.score_examples,
            "eval_examples": r.eval_examples,
            "prepared_key": r.prepared_key,
        }


def _namespace(options: QualityOptions, settings: QualitySettings) -> argparse.Namespace:
    """The fields the shared bench helpers (``base_request``, the table1/deepcuts plans) read."""
    return argparse.Namespace(
        bench="quality",
        model=options.model,
        prepared=options.prepared,
        data=options.data or "rotten_tomatoes",
        text_column=options.text_column,
        label_column=options.label_column,
        data_seed=options.data_seed,
        max_rows=settings.max_rows,
        seed=options.seed,
        examples=settings.examples,
        eval_examples=settings.eval_examples,
        device=options.device,
        # bench table1's MCAP rows
        sparsity=MCAP_SPARSITY,
        weight_sparsity=MCAP_SPARSITY,
        episode_size=settings.mcap_episode_size,
        update_every=settings.mcap_update_every,
        max_train_examples=settings.mcap_train_examples,
        extra_seeds=[],
        # bench deepcuts' rows
        strategies=list(settings.strategies),
        ratios=list(settings.ratios),
        grad_batches=settings.grad_batches,
        ratio_definition=settings.ratio_definition,
        refine_steps=0,
    )


def quality_plan(
    options: QualityOptions, settings: QualitySettings, data: DataSpec
) -> list[PlannedRun]:
    """The rows of the bench, in order (see the module docstring); every config is validated.

    Args:
        data: the dataset every row uses (the prepared classifier's own with ``--prepared``).

    Raises:
        ValueError: a setting a method's config refuses (nothing has run yet).
    """
    from pruning.cli_bench_mcap import HEAD_BASELINES, table1_plan
    from pruning.cli_bench_runs import base_request, deepcuts_plan
    from pruning.methods.unstructured import TABLE1_PRESETS

    ns = _namespace(options, settings)

    def request(**fields: Any) -> RunRequest:
        return dataclasses.replace(base_request(ns, **fields), data=data)

    plan: list[PlannedRun] = []
    chosen = set(settings.methods)
    for method, title in SWEEP_TITLES.items():
        if method not in chosen:
            continue
        for sparsity in settings.sparsities:
            name = f"{title} {sparsity:.0%}"
            config = {"sparsity": sparsity}
            plan.append(PlannedRun(name, "sweep", request(method=method, config=config, name=name)))
            if sparsity in settings.recovery_sparsities and settings.recovery_steps > 0:
                label = f"{name} + {settings.recovery_steps} recovery steps"
                plan.append(
                    PlannedRun(
                        label,
                        "sweep",
                        request(
                            method=method,
                            config=config,
                            recovery_steps=settings.recovery_steps,
                            recovery_lr=settings.recovery_lr,
                            name=f"{name} + recovery",
                        ),
                    )
                )
    if "astar" in chosen:
        for budget in settings.budgets:
            random = f"Random under budget {budget:g} (best of {settings.random_trials})"
            for label, method, config in (
                (f"A* budget {budget:g}", "astar", {"budget": budget}),
                (random, "random_budget", {"budget": budget, "trials": settings.random_trials}),
            ):
                searched = request(method=method, config=config, name=label)
                searched = dataclasses.replace(
                    searched, score_examples=settings.search_examples or settings.examples
                )
                plan.append(PlannedRun(label, "astar", searched))
    steps: dict[str, Any] = {"steps": settings.gate_steps}
    gates: list[tuple[str, str, dict[str, Any]]] = []
    if "autoattention" in chosen:
        fixed = f"AutoAttention fixed {GATE_FIXED_SPARSITY:.0%}"
        gates += [
            ("AutoAttention (natural output)", "autoattention", steps),
            (fixed, "autoattention", {**steps, "fixed_sparsity": GATE_FIXED_SPARSITY}),
        ]
    if "l0_gates" in chosen:
        gates.append(("L0 gates (natural output)", "l0_gates", steps))
    for label, method, config in gates:
        plan.append(PlannedRun(label, "gates", request(method=method, config=config, name=label)))
    if "mcap" in chosen:
        keep = {"MCAP", *MCAP_BASELINES}
        ns.skip = [label for label, _ in HEAD_BASELINES if label not in keep]
        ns.skip += list(TABLE1_PRESETS)
        share = f"{MCAP_SPARSITY:.0%}"
        for label, req in table1_plan(ns):
            plan.append(
                PlannedRun(
                    f"{label} {share} (before fine-tuning)",
                    "mcap",
                    dataclasses.replace(req, data=data),
                )
            )
    if "deepcuts" in chosen:
        for label, req in deepcuts_plan(ns):
            plan.append(
                PlannedRun(f"DeepCuts {label}", "deepcuts", dataclasses.replace(req, data=data))
            )
    for planned in plan:
        planned.request.method_config()  # refuse bad settings before any work
    return plan


def _data_spec(options: QualityOptions, settings: QualitySettings) -> DataSpec:
    """The dataset of every row: the prepared classifier's own with ``--prepared``."""
    from cache.model_store import ModelStore
    from pruning.cli_common import parse_data_arg
    from pruning.data import DEFAULT_DATASET, DataSpec

    if options.prepared:
        if options.data is not None or options.overrides.get("max_rows") is not None:
            raise ValueError(
                "--data and --max-rows do not apply with --prepared: the bench uses the rows the "
                "prepared classifier was trained on. Drop them, or drop --prepared."
            )
        entry = ModelStore().resolve(options.prepared)
        return DataSpec(**entry.info["data_spec"])
    return parse_data_arg(
        options.data or DEFAULT_DATASET,
        text_column=options.text_column,
        label_column=options.label_column,
        seed=options.data_seed,
        max_rows=settings.max_rows,
    )


def ensure_prepared(
    options: QualityOptions, data: DataSpec, *, say: Callable[[str], None]
) -> tuple[PreparedModel, bool]:
    """The prepared classifier of the bench, fine-tuned first when none exists.

    Returns:
        ``(entry, prepared_now)``; a new one is trained with the default
        :class:`pruning.train.TrainConfig` on the dataset's training split.
    """
    from cache.model_store import ModelStore
    from pruning.cli_common import TrainProgress, parse_model_arg
    from pruning.data import load_dataset
    from pruning.models import pick_device
    from pruning.prepare import prepare_model
    from pruning.train import TrainConfig

    store = ModelStore()
    if options.prepared:
        return store.resolve(options.prepared), False
    model = parse_model_arg(options.model)
    dataset = load_dataset(data)
    found = store.find(model, data, dataset.fingerprint)
    if found:
        return found[0], False
    config = TrainConfig()
    say(
        f"No classifier is prepared for {model.label} on {dataset.description}: preparing one "
        f"({config.epochs} epoch over {len(dataset.train):,} training texts, default settings)."
    )
    bar = TrainProgress(enabled=options.progress, description="preparing")
    try:
        entry = prepare_model(model, data, config, device=pick_device(options.device), on_event=bar)
    finally:
        bar.close()
    return entry, True


def _random_heads(record: RunRecord) -> list[int] | None:
    """Heads pruned by each of a ``random_budget`` run's trials (from its final trace event)."""
    for event in reversed(record.trace):
        trials = event.get("data", {}).get("trials")
        if event.get("kind") == "search_done" and isinstance(trials, list) and trials:
            return [int(t["heads_pruned"]) for t in trials]
    return None


def _random_heads_mean(record: RunRecord) -> float | None:
    """Mean heads pruned over a ``random_budget`` run's trials."""
    heads = _random_heads(record)
    return sum(heads) / len(heads) if heads else None


def quality_row(planned: PlannedRun, row: Mapping[str, Any], record: RunRecord) -> dict[str, Any]:
    """A bench row (:func:`pruning.cli_bench_runs.run_plan`'s) with what the quality bench adds.

    Adds ``group``, ``protocol``, ``recovered`` (fine-tuned after pruning: recovery steps or the
    "before" protocol), ``recovery_steps``, ``granularity``, ``test_examples``, ``dense_mcc``,
    ``predicted_speedup`` (head level: FLOPs dense / pruned), ``weight_sparsity`` (DeepCuts:
    1 - 1 / achieved ratio), ``random_heads_mean`` (random_budget), and the latency fields
    (None until measured).
    """
    request = planned.request
    metrics, cost = record.metrics, record.metrics.get("cost", {})
    head_level = record.info.get("granularity", "head") == "head"
    achieved = row.get("achieved_ratio")
    flops_dense, flops_pruned = cost.get("flops_dense"), cost.get("flops_pruned")
    return {
        **row,
        "group": planned.group,
        "protocol": request.protocol,
        "recovered": request.recovery_steps > 0 or request.protocol == "before",
        "recovery_steps": request.recovery_steps,
        "granularity": "head" if head_level else "weight",
        "test_examples": metrics["pruned"].get("n_examples"),
        "dense_mcc": metrics["dense"].get("mcc"),
        "predicted_speedup": (
            flops_dense / flops_pruned if head_level and flops_dense and flops_pruned else None
        ),
        "weight_sparsity": 1.0 - 1.0 / achieved if not head_level and achieved else None,
        "random_heads_mean": (
            _random_heads_mean(record) if record.method == "random_budget" else None
        ),
        "random_heads": (_random_heads(record) if record.method == "random_budget" else None),
        "latency_ms": None,
        "latency_p10_ms": None,
        "latency_p90_ms": None,
        "dense_latency_ms": None,
        "speedup": None,
    }


def measure_row_latency(
    rows: list[dict[str, Any]],
    masks: Mapping[str, Any],
    prepared: PreparedModel,
    settings: QualitySettings,
    *,
    device: Any,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Time the dense classifier against each distinct head mask; fill the rows' latency fields.

    Args:
        rows: the bench rows (changed in place: head-level rows get their latency).
        masks: bool ``(n_layers, n_heads)`` mask (True = keep) of each row, by run key.
        prepared: the classifier the heads are removed from.

    Returns:
        The measurement's setup: batch, length, rounds, device, threads, distinct masks, the
        dense median of every round-robin and the seconds it took.
    """
    import torch

    from pruning.cost import interleaved_latency
    from pruning.heads import remove_heads

    started = time.perf_counter()
    distinct: dict[tuple[Any, ...], Any] = {}
    for row in rows:
        if row["granularity"] == "head":
            mask = masks[row["key"]].to(torch.bool)
            distinct.setdefault(_mask_id(mask), mask)
    dense = prepared.load(device=device).model
    timed: dict[tuple[Any, ...], tuple[Any, Any]] = {}
    items = list(distinct.items())
    chunks = [items[i : i + LATENCY_CHUNK] for i in range(0, len(items), LATENCY_CHUNK)]
    dense_ms = []
    for index, chunk in enumerate(chunks):
        say(f"latency {index + 1}/{len(chunks)}: the dense model and {len(chunk)} pruned models")
        models = [dense, *(remove_heads(dense, mask) for _, mask in chunk)]
        results = interleaved_latency(
            models,
            batch_size=settings.latency_batch,
            seq_len=settings.latency_seq_len,
            repeats=settings.latency_repeats,
            warmup=1,
        )
        dense_ms.append(results[0].median_ms)
        for (mask_id, _), result in zip(chunk, results[1:], strict=True):
            timed[mask_id] = (result, results[0])
    for row in rows:
        if row["granularity"] != "head":
            continue
        result, reference = timed[_mask_id(masks[row["key"]].to(torch.bool))]
        row.update(
            latency_ms=result.median_ms,
            latency_p10_ms=result.p10_ms,
            latency_p90_ms=result.p90_ms,
            dense_latency_ms=reference.median_ms,
            speedup=reference.median_ms / result.median_ms,
        )
    return {
        "batch_size": settings.latency_batch,
        "seq_len": settings.latency_seq_len,
        "repeats": settings.latency_repeats,
        "warmup": 1,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "distinct_masks": len(distinct),
        "models_per_round_robin": LATENCY_CHUNK,
        "dense_ms": dense_ms,
        "seconds": time.perf_counter() - started,
    }


def _mask_id(mask: Any) -> tuple[Any, ...]:
    return (tuple(mask.shape), *mask.flatten().tolist())


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def quality_command(options: QualityOptions) -> str:
    """The ``headscope bench quality`` command line that ``options`` stand for."""
    parts = ["headscope", "bench", "quality"]
    defaults = QualityOptions()
    if options.quick:
        parts.append("--quick")
    for name in ("model", "prepared", "data", "text_column", "label_column", "data_seed", "seed"):
        value = getattr(options, name)
        if value is not None and value != getattr(defaults, name):
            parts += [f"--{name.replace('_', '-')}", str(value)]
    if options.device != defaults.device:
        parts += ["--device", options.device]
    if options.skip_latency:
        parts.append("--skip-latency")
    if options.executor.is_ray:
        parts += ["--executor", "ray", "--ray-address", options.executor.address]
        if options.executor.workers:
            parts += ["--ray-workers", str(options.executor.workers)]
    if not options.progress:
        parts.append("--no-progress")
    for name in SETTING_NAMES:
        value = options.overrides.get(name)
        if value is None:
            continue
        if isinstance(value, list | tuple):
            value = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        parts += [f"--{name.replace('_', '-')}", str(value)]
    return shlex.join(parts)


def run_quality_bench(
    options: QualityOptions, *, on_message: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run (or fetch) every row of the plan, time the head masks, judge the claims.

    Settings are resolved and every row's config validated before anything runs; then the
    classifier is prepared when none exists (``on_message`` hears about it), the rows run in plan
    order through :func:`pruning.cli_bench_runs.run_plan`, the latency is measured and
    :func:`evaluate_claims` judges the rows.

    Returns:
        The JSON-ready report: what :func:`pruning.cli_bench_runs.bench_report` records (date,
        machine, versions, command, arguments, seconds) plus ``mode``, ``settings``, ``plan``,
        ``prepared``, ``dense`` (the unpruned classifier's metrics on the test texts), ``rows``,
        ``latency`` (None with ``skip_latency``), ``claims`` and ``timings``.

    Raises:
        ValueError: bad settings (before any work), an unknown prepared key, unusable data.
    """
    from pruning.cli_bench_runs import bench_report, command_line, run_plan
    from pruning.models import pick_device
    from pruning.pipeline import run_pruning

    started = time.perf_counter()
    say = on_message or log.info
    settings = resolve_settings(options)
    data = _data_spec(options, settings)
    settings = dataclasses.replace(settings, max_rows=data.max_rows)
    plan = quality_plan(options, settings, data)
    prepared, prepared_now = ensure_prepared(options, data, say=say)
    prepared_at = time.perf_counter()
    plan = [
        dataclasses.replace(p, request=dataclasses.replace(p.request, prepared_key=prepared.key))
        for p in plan
    ]
    records: dict[str, RunRecord] = {}

    def run(request: RunRequest, **kwargs: Any) -> RunRecord:
        record = run_pruning(request, **kwargs)
        records[record.key] = record
        return record

    say(f"{len(plan)} runs on prepared classifier {prepared.key} (stored runs are reused)")
    if options.executor.is_ray:
        say(f"runs fan out on {options.executor.describe()}")
        summaries = _run_on_ray(plan, options, records)
    else:
        summaries = run_plan(
            [(p.label, p.request) for p in plan], progress=options.progress, run=run
        )
    rows = [
        quality_row(p, summary, records[summary["key"]])
        for p, summary in zip(plan, summaries, strict=True)
    ]
    ran_at = time.perf_counter()
    latency = None
    if not options.skip_latency and any(row["granularity"] == "head" for row in rows):
        latency = measure_row_latency(
            rows,
            {key: record.mask for key, record in records.items()},
            prepared,
            settings,
            device=pick_device(options.device),
            say=say,
        )
    ns = argparse.Namespace(
        bench="quality",
        **{
            **options.__dict__,
            "overrides": dict(options.overrides),
            "executor": options.executor.to_dict(),
        },
    )
    report = bench_report(
        ns,
        started,
        mode="quick" if settings.quick else "full",
        settings=settings.to_dict(),
        plan=[p.to_dict() for p in plan],
        prepared={
            "key": prepared.key,
            "prepared_now": prepared_now,
            "model": prepared.info.get("model_label"),
            "data": prepared.info.get("data_description"),
            "train_config": prepared.info.get("train_config"),
            "train_seconds": prepared.info.get("train_seconds"),
            "metrics": prepared.metrics,
        },
        dense=records[rows[0]["key"]].metrics["dense"],
        rows=rows,
        latency=latency,
        claims=evaluate_claims(rows),
        timings={
            "prepare_seconds": prepared_at - started,
            "runs_seconds": ran_at - prepared_at,
            "latency_seconds": None if latency is None else latency["seconds"],
            "total_seconds": time.perf_counter() - started,
        },
    )
    typed = command_line(ns)
    report["command"] = typed if typed != "headscope bench quality" else quality_command(options)
    return report


def _run_on_ray(
    plan: Sequence[PlannedRun], options: QualityOptions, records: dict[str, RunRecord]
) -> list[dict[str, Any]]:
    """Every row of ``plan`` as a Ray task; one summary row per run, in plan order.

    Each row's ``seconds`` is the run's own compute time (``info.total_seconds``; a fetched run
    keeps the time it took when it was made), since the rows overlap in wall time.
    """
    from pruning.cli_bench_runs import _row
    from pruning.cli_common import fraction_bar, show_fraction
    from pruning.ray_sweep import run_requests

    fractions = [0.0] * len(plan)
    bar = fraction_bar("quality bench", enabled=options.progress)

    def on_event(index: int, event: Any) -> None:
        fractions[index] = max(fractions[index], float(event.fraction))
        message = f"{plan[index].label}: {event.message}"[:60]
        show_fraction(bar, sum(fractions) / len(fractions), message)

    try:
        found = run_requests(
            [p.request for p in plan], executor=options.executor, on_event=on_event
        )
    finally:
        bar.close()
    summaries = []
    for planned, record in zip(plan, found, strict=True):
        records[record.key] = record
        seconds = float(record.info.get("total_seconds") or 0.0)
        summaries.append(_row(planned.label, record, seconds))
    return summaries


CLAIM_TITLES = {
    "astar_vs_random": "A* vs random pruning at the same budget",
    "autoattention_vs_hisp_random": "AutoAttention vs HISP and random heads at 50%",
    "mcap_vs_random_entropy": "MCAP vs random heads and attention entropy at 20%",
    "deepcuts_vs_layer_magnitude": "Cam-Cut / Smooth-Cut vs LayerMagWeight at ratios 3-4",
}
STRATEGY_NAMES = {
    "layer_mag_weight": "LayerMagWeight",
    "cam_cut": "Cam-Cut",
    "smooth_cut": "Smooth-Cut",
}


def evaluate_claims(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Whether each paper's claim holds on these rows: four dicts, in the issue's order.

    Every dict has ``id``, ``title``, ``claim`` (what the paper says), ``rule`` (how it is judged
    here), ``verdict`` ("holds", "does not hold", "not distinguishable", or None when the rows it
    needs are missing), ``holds`` (True only when it holds; None when not measured),
    ``comparisons`` (the numbers compared, each with its own verdict and reason) and
    ``statement`` (one plain sentence with them, the verdict, and a warning when fewer seeds
    than the rule needs were run).

    The verdicts use the rules every claim bench shares (:mod:`pruning.claim_rules`; accuracy is
    test accuracy on the bench's test texts):

    * ``astar_vs_random`` (Parnami et al., 2021, Figures 9-10), at every budget with both an A*
      row and a ``random_budget`` row: the trials rule on A*'s heads against every random
      trial's; it does not hold either when A*'s test accuracy falls more than the budget below
      the dense model's (both searches enforce the budget on the score texts; the test split
      checks that A*'s saving generalises).
    * ``autoattention_vs_hisp_random`` (Zhang et al., 2022): AutoAttention at a fixed 50% of
      heads against HISP and against random heads at 50%, paired by seed. AutoAttention trains
      the weights with its gates, so it is compared with the HISP and random rows that had
      recovery fine-tuning (like with like; with ``train_weights`` off, the rows without).
    * ``mcap_vs_random_entropy`` (Rajapaksha and Crespi, 2024, Table I): in the "before
      fine-tuning" protocol, MCAP against random heads and against attention entropy at MCAP's
      sparsity, paired by seed.
    * ``deepcuts_vs_layer_magnitude`` (Grover et al., 2022): both DeepCuts claims of
      :func:`pruning.bench_runs_table.deepcuts_claims`, placed by each row's BERT-base-equivalent
      ratio: the strategies tie at the paper's ratio 2, and Cam-Cut and Smooth-Cut beat
      LayerMagWeight (paired by seed) at its 3 to 4.

    Paired comparisons need 3 seeds for any verdict other than "not distinguishable"; a bench
    run at one seed therefore shows the numbers and says it cannot decide.
    """
    return [
        _claim_astar(rows),
        _claim_autoattention(rows),
        _claim_mcap(rows),
        _claim_deepcuts(rows),
    ]


def _same(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        return abs(float(a) - float(b)) < 1e-9
    return bool(a == b)


def _recovered(row: Mapping[str, Any]) -> bool:
    if row.get("recovered") is not None:
        return bool(row["recovered"])
    return row.get("recovered_accuracy") is not None


def _rows(
    rows: Sequence[Mapping[str, Any]],
    method: str,
    *,
    protocol: str = "after",
    recovered: bool | None = None,
    **config: Any,
) -> list[Mapping[str, Any]]:
    """Rows of ``method`` in ``protocol`` with a test accuracy whose config has ``config``."""
    found = []
    for row in rows:
        settings = row.get("config") or {}
        if (
            row.get("method") == method
            and row.get("protocol", "after") == protocol
            and row.get("accuracy") is not None
            and (recovered is None or _recovered(row) == recovered)
            and all(_same(settings.get(k), v) for k, v in config.items())
        ):
            found.append(row)
    return found


def _first(
    rows: Sequence[Mapping[str, Any]], method: str, **kwargs: Any
) -> Mapping[str, Any] | None:
    found = _rows(rows, method, **kwargs)
    return found[0] if found else None


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _texts(row: Mapping[str, Any]) -> str:
    n = row.get("test_examples")
    return f"{n:,} test texts" if isinstance(n, int) else "the test texts"


def _sentence(parts: list[str], row: Mapping[str, Any]) -> str:
    """``parts`` joined into one sentence that ends with the number of test texts."""
    if not parts:
        return ""
    text = "; ".join(parts) + f" (on {_texts(row)})"
    return text[0].upper() + text[1:]


def _claim(
    claim_id: str,
    claim: str,
    rule: str,
    comparisons: list[dict[str, Any]],
    statement: str,
    missing: str,
) -> dict[str, Any]:
    verdict = combine(c["verdict"] for c in comparisons)
    if verdict is None:
        text = f"Not measured: {missing}"
    else:
        text = f"{statement}: {verdict}."
        few = [c["seeds"] for c in comparisons if isinstance(c.get("seeds"), int)]
        if few and min(few) < MIN_SEEDS:
            text += (
                f" Measured on {min(few)} seed(s); the rule needs {MIN_SEEDS} before it can "
                "say holds or does not hold."
            )
    return {
        "id": claim_id,
        "title": CLAIM_TITLES[claim_id],
        "claim": claim,
        "rule": rule,
        "verdict": verdict,
        "holds": holds_flag(verdict),
        "comparisons": comparisons,
        "statement": text,
    }


def _claim_astar(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    comparisons: list[dict[str, Any]] = []
    seen: set[float] = set()
    for astar in _rows(rows, "astar"):
        budget = float(astar["config"]["budget"])
        random = _first(rows, "random_budget", budget=budget)
        dense = astar.get("dense_accuracy")
        if budget in seen or random is None or dense is None:
            continue
        trials = random.get("random_heads")
        if not trials:
            continue
        seen.add(budget)
        drop = 100.0 * (dense - astar["accuracy"])
        verdict, share = trials_verdict(astar["heads_removed"], trials)
        reason = f"p = {share:.2f} of {len(trials)} random trials pruned at least as many heads"
        if drop > budget + 1e-9:
            verdict = DOES_NOT_HOLD
            reason = f"A*'s test accuracy fell {drop:.2f} points, over the budget of {budget:g}"
        comparisons.append(
            {
                "budget": budget,
                "astar_heads": astar["heads_removed"],
                "random_heads_mean": statistics.fmean(trials),
                "random_heads_best": max(trials),
                "random_trials": len(trials),
                "share_at_least_astar": share,
                "astar_accuracy": astar["accuracy"],
                "random_best_accuracy": random["accuracy"],
                "dense_accuracy": dense,
                "astar_drop_points": drop,
                "test_examples": astar.get("test_examples"),
                "verdict": verdict,
                "reason": reason,
                "holds": verdict == HOLDS,
            }
        )
    parts = []
    for c in comparisons:
        drop, budget = c["astar_drop_points"], c["budget"]
        change = f"a drop of {drop:.1f} points" if drop >= 0 else f"a gain of {-drop:.1f} points"
        parts.append(
            f"at a budget of {budget:g} point{'' if budget == 1 else 's'} A* removed "
            f"{c['astar_heads']} heads against {c['random_heads_mean']:.1f} on average for "
            f"{c['random_trials']} random trials ({c['share_at_least_astar']:.0%} of them "
            f"removed as many or more), with test accuracy {_pct(c['astar_accuracy'])} vs "
            f"{_pct(c['dense_accuracy'])} dense ({change}, "
            f"{'within' if drop <= budget + 1e-9 else 'over'} the budget)"
        )
    statement = _sentence(parts, comparisons[0] if comparisons else {})
    return _claim(
        "astar_vs_random",
        "A* search prunes more heads than random pruning while keeping accuracy within the same "
        "budget (Parnami, Singh and Joshi, 2021, Figures 9-10).",
        f"At every budget with both rows: {TRIALS_RULE}; and A*'s test accuracy drop from the "
        "dense model is at most the budget (otherwise it does not hold).",
        comparisons,
        statement,
        "the bench has no A* row with a random_budget row at the same budget.",
    )


def _by_seed(rows: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Test accuracy by seed of rows that share one setting (the first row's)."""
    if not rows:
        return {}
    like = rows[0]
    return accuracy_by_seed(
        r
        for r in rows
        if r.get("config") == like.get("config")
        and r.get("recovery_steps") == like.get("recovery_steps")
    )


def _versus(
    name: str,
    mine: Sequence[Mapping[str, Any]],
    other: str,
    theirs: Sequence[Mapping[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """``name``'s rows against ``other``'s, paired by seed (:func:`pruning.claim_rules.paired`)."""
    a, b = _by_seed(mine), _by_seed(theirs)
    result = paired(a, b)
    return {
        "method": name,
        "accuracy": statistics.fmean(a.values()),
        "baseline": other,
        "baseline_accuracy": statistics.fmean(b.values()),
        **extra,
        "seeds": len(result["seeds"]),
        "differences": result["differences"],
        "verdict": result["verdict"],
        "reason": result["reason"],
        "holds": result["verdict"] == HOLDS,
    }


def _claim_autoattention(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    gates = _rows(rows, "autoattention", fixed_sparsity=GATE_FIXED_SPARSITY)
    comparisons: list[dict[str, Any]] = []
    statement = ""
    if gates:
        trained = bool(gates[0]["config"].get("train_weights", True))
        hisp = _rows(rows, "hisp", recovered=trained, sparsity=GATE_FIXED_SPARSITY)
        random = _rows(rows, "random", recovered=trained, sparsity=GATE_FIXED_SPARSITY)
        if hisp and random:
            comparisons = [
                _versus("autoattention", gates, "hisp", hisp),
                _versus("autoattention", gates, "random", random),
            ]
            steps = hisp[0].get("recovery_steps") or "some"
            how = f"each with {steps} recovery steps" if trained else "without fine-tuning"
            statement = _sentence(
                [
                    f"AutoAttention at {GATE_FIXED_SPARSITY:.0%} of heads "
                    f"({gates[0]['config'].get('steps')} joint steps) reached "
                    f"{_pct(comparisons[0]['accuracy'])} test accuracy against HISP "
                    f"{_pct(comparisons[0]['baseline_accuracy'])} and random heads "
                    f"{_pct(comparisons[1]['baseline_accuracy'])} at "
                    f"{GATE_FIXED_SPARSITY:.0%} ({how}; means over "
                    f"{comparisons[0]['seeds']} seed(s))"
                ],
                gates[0],
            )
    return _claim(
        "autoattention_vs_hisp_random",
        "AutoAttention keeps more accuracy than HISP and random pruning at the same share of "
        "heads (Zhang et al., 2022).",
        "AutoAttention at a fixed 50% against HISP and against random heads at 50%, both with "
        f"recovery fine-tuning (AutoAttention trains its weights), in test accuracy: "
        f"{PAIRED_RULE}.",
        comparisons,
        statement,
        "the bench needs AutoAttention at a fixed 50% and HISP and random heads at 50% with "
        "recovery fine-tuning.",
    )


def _claim_mcap(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    mcap = _rows(rows, "mcap", protocol="before")
    comparisons: list[dict[str, Any]] = []
    statement = ""
    if mcap:
        sparsity = mcap[0]["config"].get("sparsity")
        random = _rows(rows, "random", protocol="before", sparsity=sparsity)
        entropy = _rows(rows, "entropy", protocol="before", sparsity=sparsity)
        if random and entropy:
            comparisons = [
                _versus("mcap", mcap, "random", random),
                _versus("mcap", mcap, "entropy", entropy),
            ]
            statement = _sentence(
                [
                    f"pruned to {sparsity:.0%} of heads before fine-tuning, MCAP reached "
                    f"{_pct(comparisons[0]['accuracy'])} test accuracy against random heads "
                    f"{_pct(comparisons[0]['baseline_accuracy'])} and attention entropy "
                    f"{_pct(comparisons[1]['baseline_accuracy'])} (means over "
                    f"{comparisons[0]['seeds']} seed(s))"
                ],
                mcap[0],
            )
    return _claim(
        "mcap_vs_random_entropy",
        "MCAP keeps more accuracy than random heads and attention entropy at 20% of heads, "
        "pruned before fine-tuning (Rajapaksha and Crespi, 2024, Table I).",
        "In the 'before fine-tuning' protocol, MCAP against random heads and against attention "
        f"entropy at MCAP's sparsity, in test accuracy: {PAIRED_RULE}.",
        comparisons,
        statement,
        "the bench needs MCAP, random heads and attention entropy at the same sparsity in the "
        "'before fine-tuning' protocol.",
    )


def _claim_deepcuts(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Both DeepCuts claims (:func:`pruning.bench_runs_table.deepcuts_claims`) as one."""
    deepcuts = [r for r in rows if r.get("method") == "deepcuts" and r.get("accuracy") is not None]
    tie, beat = deepcuts_claims(deepcuts)
    comparisons = [
        {**c, "part": part}
        for part, claim in (("tie at 2", tie), ("beat at 3-4", beat))
        for c in claim["comparisons"]
    ]
    parts = []
    for c in comparisons:
        where = f"at the paper's ratio {c['paper_ratio']:.2f} ({c['ratio_definition']})"
        if c["part"] == "tie at 2":
            listed = ", ".join(
                f"{STRATEGY_NAMES.get(k, k)} {_pct(v)}" for k, v in c["accuracies"].items()
            )
            parts.append(f"{where} the strategies reached {listed} ({c['verdict']} as a tie)")
        else:
            parts.append(
                f"{where} {STRATEGY_NAMES[c['method']]} reached {_pct(c['accuracy'])} against "
                f"LayerMagWeight {_pct(c['baseline_accuracy'])} ({c['verdict']})"
            )
    first = deepcuts[0] if deepcuts else {}
    return _claim(
        "deepcuts_vs_layer_magnitude",
        "All strategies tie at compression ratio 2, and Cam-Cut and Smooth-Cut keep more accuracy "
        "than weight magnitude (LayerMagWeight) at compression ratios 3 to 4 (Grover, Gawri and "
        "Manku, 2022, Sections 4.3-4.4).",
        f"{tie['rule']} {beat['rule']}",
        comparisons,
        _sentence(parts, first),
        "the bench needs two DeepCuts strategies at the paper's ratio 2, or LayerMagWeight and "
        "Cam-Cut or Smooth-Cut at the paper's 3 to 4 (--ratio-definition bert_base_equivalent).",
    )


def _num(value: Any, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def _head_table(rows: Sequence[Mapping[str, Any]], dense: float | None) -> list[str]:
    title = f"dense {_pct(dense)}" if dense is not None else "dense n/a"
    lines = [
        f"| run | heads removed | accuracy ({title}) | before recovery | MCC | latency ms "
        "(p10–p90) | speed-up | predicted (FLOPs) | notes | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        before = r["pruned_accuracy"] if r.get("recovered_accuracy") is not None else None
        latency = (
            f"{r['latency_ms']:.1f} ({r['latency_p10_ms']:.1f}–{r['latency_p90_ms']:.1f})"
            if r.get("latency_ms") is not None
            else "–"
        )
        notes = []
        if r.get("random_heads_mean") is not None:
            notes.append(f"trials' mean {r['random_heads_mean']:.1f} heads")
        if r.get("reopened") is not None:
            notes.append(f"{r['reopened']} gate reopenings")
        if r.get("protocol") == "before":
            notes.append("pruned before fine-tuning")
        lines.append(
            f"| {r['label']} | {r['heads_removed']}/{r['heads']} ({r['head_sparsity']:.0%}) | "
            f"{_num(r['accuracy'], '{:.2%}')} | {_num(before, '{:.2%}')} | "
            f"{_num(r.get('mcc'), '{:.3f}')} | {latency} | {_num(r.get('speedup'), '{:.2f}×')} | "
            f"{_num(r.get('predicted_speedup'), '{:.2f}×')} | {'; '.join(notes) or '–'} | "
            f"{_num(r.get('seconds'), '{:.0f}')} |"
        )
    return lines


def quality_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: the head-level table, the DeepCuts table and the claims."""
    from pruning.cli_bench_runs import markdown_table

    rows = report["rows"]
    head = [r for r in rows if r.get("granularity") == "head"]
    weight = [r for r in rows if r.get("granularity") == "weight"]
    settings, prepared = report["settings"], report["prepared"]
    n_test = report["dense"].get("n_examples")
    lines = [
        f"# Quality bench ({report['mode']})",
        "",
        f"{prepared.get('model')} (prepared {prepared['key']}) on {prepared.get('data')}; "
        f"{_num(n_test, '{:,}')} test texts, {settings['examples']} score texts; "
        f"{report['machine']}; {report['date']}.",
        "",
        f"Command: `{report['command']}`",
        "",
        "## Head-level runs",
        "",
    ]
    lines += _head_table(head, report["dense"].get("accuracy")) if head else ["No head-level rows."]
    latency = report.get("latency")
    lines.append("")
    if latency:
        lines.append(
            f"Latency: median of {latency['repeats']} interleaved rounds of a batch of "
            f"{latency['batch_size']} x {latency['seq_len']} tokens on {latency['device']} "
            f"({latency['threads']} torch threads), heads physically removed; speed-up = dense "
            "median / "
            "pruned median in the same rounds; predicted = analytic FLOPs dense / pruned at 128 "
            "tokens."
        )
    else:
        lines.append("Latency not measured (--skip-latency).")
    lines += ["", "## DeepCuts by compression ratio", ""]
    lines.append(
        markdown_table(weight, weight_level=True).rstrip() if weight else "No DeepCuts rows."
    )
    lines += ["", "## Claims", ""]
    for claim in report["claims"]:
        lines.append(f"- **{claim['title']}** — {claim['statement']}")
    return "\n".join(lines) + "\n"


def write_quality_figures(report: Mapping[str, Any], folder: Path) -> list[Path]:
    """``quality_sparsity.html`` and ``quality_latency.html`` (plotly.js inlined: opens offline).

    Both plot the head-level rows' test accuracy, against the share of heads removed and against
    the measured latency (the unpruned classifier is a point of its own there); weight-level rows
    are in the DeepCuts table instead.
    """
    from viz.pareto import ParetoPoint, build_pareto_figure, points_from_rows

    head = [r for r in report["rows"] if r.get("granularity") == "head"]
    points = points_from_rows(head)
    dense = report["dense"]
    latency = report.get("latency") or {}
    if latency.get("dense_ms"):
        points_latency = [
            *points,
            ParetoPoint(
                label="Unpruned classifier",
                method="dense",
                key=None,
                head_sparsity=0.0,
                accuracy=dense.get("accuracy"),
                mcc=dense.get("mcc"),
                latency_ms=statistics.median(latency["dense_ms"]),
                speedup=1.0,
            ),
        ]
    else:
        points_latency = points
    where = f"{report['prepared'].get('model')} on {report['prepared'].get('data')}"
    figures = {
        "quality_sparsity.html": build_pareto_figure(
            points,
            x="head_sparsity",
            title=f"Test accuracy against heads removed · {where}",
            dense=dense.get("accuracy"),
        ),
        "quality_latency.html": build_pareto_figure(
            points_latency,
            x="latency_ms",
            title=f"Test accuracy against latency · {where}",
            dense=dense.get("accuracy"),
        ),
    }
    written = []
    for name, figure in figures.items():
        path = folder / name
        write_atomic(path, figure.to_html(include_plotlyjs=True, full_html=True))
        written.append(path)
    return written
