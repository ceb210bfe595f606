"""Paper claims, live: each paper's headline reproduced on the user's own prepared classifier.

The rows every claim needs are ordinary runs of :func:`pruning.pipeline.run_pruning` on one
prepared classifier and its own dataset, planned by :func:`claim_plan` at two scales:

* ``"paper"``: the papers' settings where they are known (A* and ``random_budget`` at a budget
  of 1 point with 100 random orders on the whole validation split, Parnami et al. Figures 9-10;
  DeepCuts with the paper's gradient batches) and the quality bench's full settings elsewhere
  (256 score texts, the whole test split, 300 gate steps and as many recovery steps at the
  gates' weight learning rate, 3e-5);
* ``"quick"``: the same rows, far smaller (64 score texts, 200 test texts, 10 random orders, a
  few steps): it shows the page working end to end and is too small to judge any paper.

Every paired row runs at seeds 0, 1 and 2 (the paired rule of :mod:`pruning.claim_rules` needs
3). The A* pair runs at the first seed only: A* does not use the seed, and ``random_budget`` at
seed ``s`` draws its orders with seeds ``s .. s + trials - 1``, so further seeds would repeat all
but one of its orders; its 100 orders are the spread the trials rule judges.

Run keys are content-based, so :func:`stored_rows` finds finished rows without running anything
and a job over the missing rows never recomputes a stored one. :func:`live_claims` (from
:mod:`pruning.claims_report`) judges the rows: the four claims of
:func:`pruning.bench_quality.evaluate_claims` plus the claim of Michel et al. (HISP keeps more
accuracy than random heads at 50%, without fine-tuning, :func:`claim_hisp`), each with its paper
reference, protocol, notes where this run is smaller than the paper, run keys and per-seed
numbers. :func:`estimate_seconds` (from :mod:`pruning.claims_estimate`) says how long a missing
row will take.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cache.run_store import RunStore
from pruning.bench_quality import FULL, PlannedRun, QualityOptions, quality_plan, quality_row
from pruning.claims_estimate import estimate_seconds
from pruning.claims_report import (
    CLAIM_IDS,
    HISP_CLAIM,
    HISP_SPARSITY,
    PAPER_RANDOM_TRIALS,
    REFERENCES,
    claim_hisp,
    claim_of,
    live_claims,
)

if TYPE_CHECKING:
    from cache.model_store import ModelStore, PreparedModel
    from pruning.data import DataSpec, LabelledDataset

__all__ = [
    "CLAIM_IDS",
    "HISP_CLAIM",
    "PAPER",
    "QUICK",
    "REFERENCES",
    "SCALES",
    "ClaimScale",
    "claim_hisp",
    "claim_of",
    "claim_plan",
    "estimate_seconds",
    "live_claims",
    "planned_keys",
    "prepared_specs",
    "stored_rows",
]

log = logging.getLogger(__name__)

MAX_SCORE_EXAMPLES = 100_000  # RunRequest's bound


@dataclass(frozen=True)
class ClaimScale:
    """The settings of one scale of the plan.

    Attributes:
        score_examples: validation texts the head scorers (HISP, entropy, ...) use.
        search_examples: texts A* and ``random_budget`` search on (None: the whole validation
            split).
        eval_examples: test texts every row is evaluated on (None: the whole test split).
        budget, random_trials: the A* comparison.
        gate_steps: AutoAttention's joint training steps.
        recovery_steps, recovery_lr: fine-tuning of HISP and random rows after pruning.
        mcap_episode_size, mcap_update_every, mcap_train_examples: MCAP (0 = every training text).
        strategies, ratios: DeepCuts, at the paper's (BERT-base-equivalent) ratios.
        grad_batches: DeepCuts gradient batches (None: the paper's per strategy).
        too_small: the scale cannot judge a paper (the page says so).
    """

    name: str
    score_examples: int
    search_examples: int | None
    eval_examples: int | None
    budget: float
    random_trials: int
    gate_steps: int
    recovery_steps: int
    recovery_lr: float
    mcap_episode_size: int
    mcap_update_every: int
    mcap_train_examples: int
    strategies: tuple[str, ...]
    ratios: tuple[float, ...]
    grad_batches: int | None
    too_small: bool


GATE_STEPS = 300
GATE_WEIGHT_LR = 3e-5
PAPER = ClaimScale(
    name="paper",
    score_examples=FULL.examples,
    search_examples=None,
    eval_examples=None,
    budget=1.0,
    random_trials=PAPER_RANDOM_TRIALS,
    # AutoAttention's joint training and the baselines' recovery get the same steps at the same
    # weight learning rate (the paper's 3e-5 for W): the rows of `bench gates --fixed-only`.
    gate_steps=GATE_STEPS,
    recovery_steps=GATE_STEPS,
    recovery_lr=GATE_WEIGHT_LR,
    mcap_episode_size=FULL.mcap_episode_size,
    mcap_update_every=FULL.mcap_update_every,
    mcap_train_examples=FULL.mcap_train_examples,
    strategies=("layer_mag_weight", "cam_cut", "smooth_cut"),
    ratios=(2.0, 3.0, 3.5, 4.0),
    grad_batches=None,
    too_small=False,
)
QUICK = dataclasses.replace(
    PAPER,
    name="quick",
    score_examples=64,
    search_examples=64,
    eval_examples=200,
    random_trials=10,
    gate_steps=20,
    recovery_steps=20,
    mcap_episode_size=30,
    mcap_update_every=2,
    mcap_train_examples=120,
    ratios=(2.0, 3.0),
    grad_batches=4,
    too_small=True,
)
SCALES = {"paper": PAPER, "quick": QUICK}


def prepared_specs(prepared: PreparedModel) -> tuple[Any, DataSpec]:
    """The ModelSpec and DataSpec a prepared classifier was made from.

    Raises:
        ValueError: the entry does not record them (prepare the classifier again).
    """
    from pruning.data import DataSpec
    from pruning.models import ModelSpec

    try:
        return ModelSpec(**prepared.info["model_spec"]), DataSpec(**prepared.info["data_spec"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"Prepared classifier {prepared.key} does not record its model and dataset "
            f"({error}); prepare it again on the Overview page."
        ) from None


def _check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    chosen = tuple(dict.fromkeys(seeds))
    if not chosen or not all(
        isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31 for s in chosen
    ):
        raise ValueError(f"seeds must be one or more integers from 0 to 2**31 - 1; got {seeds!r}.")
    return chosen


def _deepcuts_rows(scale: ClaimScale, data: DataSpec, prepared_key: str) -> list[PlannedRun]:
    """The DeepCuts rows at one seed (:func:`pruning.cli_bench_runs.deepcuts_plan`)."""
    from pruning.cli_bench_runs import deepcuts_plan

    args = argparse.Namespace(
        model="default",
        data="rotten_tomatoes",  # replaced by ``data`` below; only the request's shape matters
        text_column="text",
        label_column="label",
        data_seed=0,
        max_rows=None,
        prepared=prepared_key,
        seed=0,
        examples=scale.score_examples,
        eval_examples=scale.eval_examples,
        device="auto",
        strategies=list(scale.strategies),
        ratios=list(scale.ratios),
        grad_batches="paper" if scale.grad_batches is None else scale.grad_batches,
        refine_steps=0,
        ratio_definition="bert_base_equivalent",
    )
    return [
        PlannedRun(f"DeepCuts {label}", "deepcuts", dataclasses.replace(request, data=data))
        for label, request in deepcuts_plan(args)
    ]


def claim_plan(
    prepared: PreparedModel, *, seeds: Sequence[int] = (0, 1, 2), scale: str = "paper"
) -> list[PlannedRun]:
    """The rows every claim needs on ``prepared`` and its own dataset, row by row over the seeds.

    The rows: A* and ``random_budget`` at the scale's budget (first seed only, see the module
    docstring); HISP and random heads at 50% without and with recovery fine-tuning; AutoAttention
    at a fixed 50%; MCAP, random heads and attention entropy at 20% pruned before fine-tuning;
    DeepCuts LayerMagWeight, Cam-Cut and Smooth-Cut at the paper's ratios
    (``ratio_definition="bert_base_equivalent"``). Every config is validated.

    Raises:
        ValueError: an unknown scale, bad seeds, or a prepared entry without its specs.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}.")
    chosen = _check_seeds(seeds)
    s = SCALES[scale]
    model, data = prepared_specs(prepared)
    validation = int((prepared.info.get("split_sizes") or {}).get("validation") or 0)
    search = s.search_examples or min(validation or MAX_SCORE_EXAMPLES, MAX_SCORE_EXAMPLES)
    settings = dataclasses.replace(
        FULL,
        methods=("random", "hisp", "astar", "autoattention", "mcap"),
        examples=s.score_examples,
        search_examples=search,
        eval_examples=s.eval_examples,
        sparsities=(HISP_SPARSITY,),
        recovery_sparsities=(HISP_SPARSITY,),
        recovery_steps=s.recovery_steps,
        recovery_lr=s.recovery_lr,
        budgets=(s.budget,),
        random_trials=s.random_trials,
        gate_steps=s.gate_steps,
        mcap_episode_size=s.mcap_episode_size,
        mcap_update_every=s.mcap_update_every,
        mcap_train_examples=s.mcap_train_examples,
    )
    rows = [
        p
        for p in quality_plan(QualityOptions(prepared=prepared.key), settings, data)
        if not (p.request.method == "autoattention" and "fixed_sparsity" not in p.request.config)
    ]
    rows += _deepcuts_rows(s, data, prepared.key)
    plan = []
    for row in rows:
        request = dataclasses.replace(row.request, model=model, prepared_key=prepared.key)
        for seed in chosen[:1] if row.group == "astar" else chosen:
            plan.append(
                PlannedRun(
                    f"{row.label} · seed {seed}",
                    row.group,
                    dataclasses.replace(request, seed=seed),
                )
            )
    for planned in plan:
        planned.request.method_config()
    return plan


def planned_keys(
    plan: Sequence[PlannedRun],
    *,
    model_store: ModelStore | None = None,
    dataset: LabelledDataset | None = None,
) -> list[str]:
    """The store key of every row, loading each dataset and classifier once (not once a row).

    Args:
        dataset: the rows' dataset, already loaded (the plan of :func:`claim_plan` has one);
            None loads each distinct data spec once.

    Raises:
        ValueError: unusable data, no such prepared classifier, classes that do not fit.
    """
    from cache.fingerprints import spec_to_dict
    from cache.model_store import ModelStore
    from pruning.data import load_dataset
    from pruning.pipeline import resolve_prepared, run_key

    store = model_store or ModelStore()
    datasets: dict[str, LabelledDataset] = {}
    classifiers: dict[tuple[str, str | None], PreparedModel] = {}
    keys = []
    for planned in plan:
        request = planned.request
        data_id = repr(sorted(spec_to_dict(request.data).items()))
        if data_id not in datasets:
            datasets[data_id] = dataset if dataset is not None else load_dataset(request.data)
        dataset = datasets[data_id]
        which = (data_id, request.prepared_key)
        if which not in classifiers:
            classifiers[which] = resolve_prepared(request, dataset, store)
        keys.append(run_key(request, dataset, classifiers[which]))
    return keys


def stored_rows(
    plan: Sequence[PlannedRun],
    store: RunStore,
    *,
    model_store: ModelStore | None = None,
    dataset: LabelledDataset | None = None,
) -> tuple[list[dict[str, Any]], list[PlannedRun]]:
    """``(rows, missing)``: the plan's stored runs as bench rows, and the rows not stored yet.

    Nothing runs (``dataset``: see :func:`planned_keys`). A row is built as the quality bench
    builds it (:func:`pruning.bench_quality.quality_row`) with ``seconds`` = the run's own
    compute time. A stored run that cannot be read counts as missing (and is logged).
    """
    from pruning.cli_bench_runs import _row

    rows, missing = [], []
    keys = planned_keys(plan, model_store=model_store, dataset=dataset)
    for planned, key in zip(plan, keys, strict=True):
        if not store.exists(key):
            missing.append(planned)
            continue
        try:
            record = store.get(key)
        except ValueError as error:
            log.warning("stored run %s cannot be read (%s); it counts as missing", key, error)
            missing.append(planned)
            continue
        seconds = float(record.info.get("total_seconds") or 0.0)
        rows.append(quality_row(planned, _row(planned.label, record, seconds), record))
    return rows, missing
