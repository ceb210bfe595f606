"""A* search for attention heads within a metric budget, and the paper's three baselines.

Reference: Parnami, Singh and Joshi, "Pruning Attention Heads of Transformer Models Using A*
Search: A Novel Approach to Compress Big NLP Architectures", 2021,
https://arxiv.org/abs/2110.15225 (no public code).

The searches themselves are model-independent and live in :mod:`pruning.methods.search_core`
(whose docstring holds our reading of the paper's Figure 6). This module turns a model and its
score split into a metric oracle (the evaluation engine of :mod:`pruning.fast_eval`), runs a
search and reports it as trace events. With a Ray executor (``context.executor``) each
iteration's candidate evaluations are spread over Ray actors (:mod:`pruning.ray_eval`) while the
search stays here; the results, trace and ``info`` are the same as locally, except
``info["executor"]``, which says where the evaluations ran.

Trace kinds (every payload JSON-ready):

* ``"search_start"``: ``{"algorithm", "baseline", "budget", "metric" (its name), "n_layers",
  "n_heads", "eval_examples", "search_space" (number of candidates)}``.
* ``"search_iteration"`` (A*, local, global): ``{"iteration", "algorithm", "pruned", "cost",
  "budget", "budget_used", "budget_remaining", "baseline", "metric", "evaluations",
  "evaluations_this_iteration", "candidates": [{"heads", "label", "cost", "metric",
  "status"}], "mask"}``; candidates sorted by cost, ties by index; status ``"pruned"``,
  ``"searched"`` (a candidate again) or ``"eliminated"`` (out of the search, stays in the model).
* ``"random_trial"`` (random): the trial's dict (see
  :func:`pruning.methods.search_core.random_budget_trials`) plus ``{"trials": N}``.
* ``"progress"``: at most about four a second between evaluations.
* ``"search_done"``: ``{"algorithm", "pruned", "evaluations", "final_metric", "budget_used",
  "stop_reason"}``; for random also ``"trials"``, the list of trial dicts.

Mask convention: bool ``(n_layers, n_heads)``, **True = keep**. Metrics and budgets are in points
(accuracy, MCC or macro-F1 x 100).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from pruning.fast_eval import FastMaskEvaluator, NaiveMaskEvaluator
from pruning.methods.base import (
    MethodConfig,
    PruneResult,
    PruningContext,
    PruningMethod,
    min_heads_field,
    register,
    ui,
)
from pruning.methods.scoring import dense_grid
from pruning.methods.search_core import (
    SearchResult,
    astar_search,
    expected_evaluations,
    global_search,
    local_search,
    random_budget_trials,
)

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25
PAPER = (
    "Parnami, Singh & Joshi, Pruning Attention Heads of Transformer Models Using A* Search, "
    "2021, https://arxiv.org/abs/2110.15225"
)


class MaskEvaluator(Protocol):
    """What the searches need from an evaluation engine (see :mod:`pruning.fast_eval`)."""

    n_evaluations: int

    def __call__(self, mask: torch.Tensor) -> float: ...

    def evaluate_many(self, masks: Sequence[torch.Tensor]) -> list[float]: ...

    def set_anchor(self, mask: torch.Tensor) -> None: ...


@dataclass(frozen=True)
class SearchConfig(MethodConfig):
    """Settings shared by A* and its baselines."""

    budget: float = field(
        default=1.0,
        metadata=ui(
            "Budget (metric points)",
            "Largest metric drop allowed, in points: 1.0 = one accuracy point (x 100 scale).",
            min=0.0,
            max=100.0,
            step=0.1,
        ),
    )
    metric: str = field(
        default="accuracy",
        metadata=ui(
            "Metric",
            "Metric whose drop the budget limits, on the score split.",
            choices=("accuracy", "mcc", "f1"),
        ),
    )
    min_heads_per_layer: int = min_heads_field()
    engine: str = field(
        default="fast",
        metadata=ui(
            "Evaluation engine",
            "fast: pre-tokenised batches, many masks per forward on a GPU. naive: one "
            "tokenise-and-forward pass per mask (for tests and benchmarks).",
            choices=("fast", "naive"),
        ),
    )
    precision: str = field(
        default="auto",
        metadata=ui(
            "Precision",
            "auto: bf16 autocast on CUDA, fp32 elsewhere. The naive engine always runs fp32.",
            choices=("auto", "fp32", "bf16"),
        ),
    )

    def validate(self) -> None:
        object.__setattr__(self, "budget", float(self.budget))
        if self.engine == "naive" and self.precision == "bf16":
            raise ValueError(
                "The naive engine runs in fp32 only; set precision to auto or fp32, or use the "
                "fast engine for bf16."
            )


@dataclass(frozen=True)
class RandomBudgetConfig(SearchConfig):
    """Settings of random pruning under a budget."""

    trials: int = field(
        default=100,
        metadata=ui(
            "Trials",
            "Number of seeded random pruning orders to try (the paper runs 100, Figures 9-10).",
            min=1,
            max=1000,
        ),
    )


def build_evaluator(
    context: PruningContext,
    config: SearchConfig,
    on_evaluation: Callable[[int], None] | None = None,
) -> MaskEvaluator:
    """The metric oracle over the run's score split, from the chosen engine and executor.

    With a Ray executor (``context.executor.is_ray``) the fast engine's evaluations are spread
    over Ray actors (:class:`pruning.ray_eval.RayMaskEvaluator`); the naive engine, a reference
    for tests and benchmarks, always runs locally. Close the evaluator with
    :func:`closing_evaluator` when done (it kills the actors; a no-op for local engines).

    Args:
        on_evaluation: called after each evaluated mask with the running count.
    """
    if config.engine == "naive":
        if context.executor.is_ray:
            log.info("the naive engine runs locally; only the fast engine uses Ray actors")
        split = context.score_split
        return NaiveMaskEvaluator(
            context.model,
            context.tokenizer,
            split.texts,
            split.labels,
            metric=config.metric,
            text_pairs=split.text_pairs,
            on_evaluation=on_evaluation,
        )
    amp = {"auto": None, "fp32": False, "bf16": True}[config.precision]
    if context.executor.is_ray:
        from pruning.ray_eval import RayMaskEvaluator

        return RayMaskEvaluator(
            context.model,
            context.batches,
            settings=context.executor,
            metric=config.metric,
            amp=amp,
            on_evaluation=on_evaluation,
        )
    return FastMaskEvaluator(
        context.model,
        context.batches,
        metric=config.metric,
        amp=amp,
        on_evaluation=on_evaluation,
    )


@contextlib.contextmanager
def closing_evaluator(evaluator: MaskEvaluator) -> Iterator[MaskEvaluator]:
    """Yield ``evaluator`` and close it afterwards, also on errors and cancellation.

    Engines with resources (the Ray actors of :class:`pruning.ray_eval.RayMaskEvaluator`) have a
    ``close()``; local engines have none and are left as they are.
    """
    try:
        yield evaluator
    finally:
        close = getattr(evaluator, "close", None)
        if callable(close):
            close()


class _Reporter:
    """Turns search callbacks into trace events; throttled progress between evaluations.

    ``tick`` is the evaluator's per-mask callback, so progress (and a stop request, which
    ``context.emit`` checks) also reaches inside one large batched evaluation.
    """

    def __init__(self, context: PruningContext, config: SearchConfig, step_name: str) -> None:
        self.context = context
        self.config = config
        self.step_name = step_name
        self.evaluator: MaskEvaluator | None = None
        self.search_space = 0
        self.fraction = 0.0
        self.step = 1
        self.budget_used = 0.0
        self.last_emit: float | None = None  # no progress before "search_start"
        # Candidates of the running iteration and the evaluation count when it began: progress
        # inside an iteration (the first one evaluates every head, a minute on a laptop CPU).
        self.candidates = 0
        self.evaluations_before = 0
        # Evaluations done before a resume (the evaluator counts from 0 again).
        self.offset = 0

    def tick(self, evaluations: int) -> None:
        evaluations += self.offset
        if self.last_emit is None or time.monotonic() - self.last_emit < PROGRESS_INTERVAL_S:
            return
        where = f"{self.step_name} {self.step}"
        if self.step_name == "iteration" and self.candidates:
            done = min(self.candidates, evaluations - self.evaluations_before)
            where += f" · candidate {done}/{self.candidates}"
            # One iteration removes at least one unit from the search space: move the bar
            # through that share while its candidates are evaluated.
            share = done / self.candidates / max(1, self.search_space)
            self.context.emit(
                "progress",
                min(1.0, self.fraction + share),
                f"{where} · {evaluations} evaluations · budget "
                f"{self.budget_used:.2f} / {self.config.budget:.2f}",
            )
            self.last_emit = time.monotonic()
            return
        self._emit(
            "progress",
            f"{where} · {evaluations} evaluations · budget "
            f"{self.budget_used:.2f} / {self.config.budget:.2f}",
        )

    def _emit(self, kind: str, message: str, **data: Any) -> None:
        self.last_emit = time.monotonic()
        self.context.emit(kind, self.fraction, message, **data)

    def eval_examples(self) -> int:
        if self.config.engine == "naive":
            return len(self.context.score_split)
        return sum(len(batch) for batch in self.context.batches)

    def start(self, payload: dict[str, Any]) -> None:
        self.search_space = int(payload["search_space"])
        self.candidates = self.search_space
        self.evaluations_before = 1  # the baseline
        message = f"{payload['algorithm']}: baseline {payload['baseline']:.2f} points"
        data = {**payload, "metric": self.config.metric, "eval_examples": self.eval_examples()}
        self._emit("search_start", message, **data)

    def expect(self, payload: dict[str, Any], seconds_per_evaluation: float) -> None:
        """Say how long the search should take: estimated evaluations x the measured rate.

        A progress event (not part of the stored trace's meaning, so a resumed run that times
        itself again still has the same trace) with ``note=True``: the CLI prints it in full.
        """
        typical, most = expected_evaluations(
            str(payload["algorithm"]),
            int(payload["search_space"]),
            float(payload["budget"]),
            int(getattr(self.config, "trials", 1)),
        )
        rate = seconds_per_evaluation
        message = (
            f"expect about {typical:,} evaluations (at most {most:,}) at {rate:.2f} s each: "
            f"about {_duration(typical * rate)} (at most {_duration(most * rate)})"
        )
        log.info("%s: %s", payload["algorithm"], message)
        self._emit("progress", message, note=True)

    def on_iteration(self, payload: dict[str, Any]) -> None:
        searched = sum(1 for c in payload["candidates"] if c["status"] == "searched")
        self.fraction = max(self.fraction, 1.0 - searched / max(1, self.search_space))
        self.step = payload["iteration"] + 1
        self.budget_used = payload["budget_used"]
        self.candidates = searched
        self.evaluations_before = int(payload["evaluations"])
        budget = f"budget {payload['budget_used']:.2f} / {payload['budget']:.2f}"
        if payload["pruned"]:
            if self.evaluator is not None:
                self.evaluator.set_anchor(torch.tensor(payload["mask"], dtype=torch.bool))
            what = payload["candidates"][0]["label"]
            message = f"iteration {payload['iteration']}: pruned {what} · {budget}"
        else:
            message = f"iteration {payload['iteration']}: stopped, least cost over the budget"
        self._emit("search_iteration", message, **payload)

    def on_trial(self, trial: dict[str, Any]) -> None:
        trials = getattr(self.config, "trials", 1)
        self.fraction = (trial["trial"] + 1) / trials
        self.step = trial["trial"] + 2
        message = f"trial {trial['trial'] + 1}/{trials}: {trial['heads_pruned']} heads pruned"
        self._emit("random_trial", message, **trial, trials=trials)

    def done(self, message: str, **data: Any) -> None:
        self.fraction = 1.0
        self._emit("search_done", message, **data)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def search_scores(result: SearchResult) -> torch.Tensor:
    """Per-head scores of a greedy search: higher = more important.

    A kept head scores the cost ``A - P`` at which it (its column, for global search) was last
    evaluated: the more the metric falls without it, the more it matters. Pruned heads score
    below every kept head, the first pruned lowest, so removing the lowest-scoring
    ``len(result.pruned)`` heads gives the search's mask. Heads never evaluated (their layer was
    at the minimum from the start) score 0.

    Returns:
        float32 ``(n_layers, n_heads)``.
    """
    scores = torch.zeros(result.mask.shape, dtype=torch.float32)
    for payload in result.iterations:
        for candidate in payload["candidates"]:
            for layer, head in candidate["heads"]:
                scores[layer, head] = candidate["cost"]
    floor = float(scores[result.mask].min()) if bool(result.mask.any()) else 0.0
    count = len(result.pruned)
    for rank, (layer, head) in enumerate(result.pruned):
        scores[layer, head] = floor - 1.0 - (count - rank)
    return scores


class _BudgetSearch(PruningMethod):
    """Shared run of the greedy searches; subclasses pick the search function."""

    search: ClassVar[Callable[..., SearchResult]]
    algorithm: ClassVar[str]
    config_class = SearchConfig
    config: SearchConfig

    def run(self, context: PruningContext) -> PruneResult:
        config = self.config
        n_layers, n_heads = _grid(context, self.title, config)
        reporter = _Reporter(context, config, "iteration")
        evaluator = reporter.evaluator = build_evaluator(context, config, reporter.tick)
        expected = {"budget": config.budget, "n_layers": n_layers, "n_heads": n_heads}
        progress = _Checkpointed(
            context, reporter, self.algorithm, "iterations", expected, reporter.on_iteration
        )

        with closing_evaluator(evaluator):
            context.check()
            resume = progress.replay()
            if resume is not None:
                reporter.offset = int(resume[-1]["evaluations"])
                log.info("resuming %s after iteration %d", self.algorithm, len(resume))
            progress.start_clock()
            result = type(self).search(
                evaluator,
                n_layers,
                n_heads,
                config.budget,
                evaluate_many=evaluator.evaluate_many,
                min_heads_per_layer=config.min_heads_per_layer,
                on_start=progress.start,
                on_iteration=progress.add,
                should_stop=context.should_stop,
                resume=resume,
            )
        reporter.done(
            f"pruned {len(result.pruned)} heads; {result.final_metric:.2f} points",
            algorithm=self.algorithm,
            pruned=[list(head) for head in result.pruned],
            evaluations=result.evaluations,
            final_metric=result.final_metric,
            budget_used=result.budget_used,
            stop_reason=result.stop_reason,
        )
        info = {
            "evaluations": result.evaluations,
            "baseline": result.baseline,
            "final_metric": result.final_metric,
            "budget_used": result.budget_used,
            "iterations": len(result.iterations),
            "heads_pruned": len(result.pruned),
            "stop_reason": result.stop_reason,
            "engine": config.engine,
            "metric": config.metric,
            "executor": context.executor.describe(),
        }
        return PruneResult(
            mask=result.mask,
            scores=search_scores(result),
            trace=tuple(context.trace),
            info=info,
        )


def _saved_state(
    context: PruningContext, algorithm: str, items: str, expected: dict[str, Any]
) -> dict[str, Any] | None:
    """The checkpointed progress of this run, when there is a usable one (else None).

    A checkpoint is used only when it holds the search's start, with the same algorithm and
    ``expected`` start values (budget, head grid), and at least one finished ``items`` entry
    (iterations or trials); anything else starts afresh.
    """
    if context.checkpoint is None:
        return None
    saved = context.checkpoint.load()
    if (
        not saved
        or saved.get("algorithm") != algorithm
        or not isinstance(saved.get("start"), dict)
        or any(saved["start"].get(k) != v for k, v in expected.items())
        or not isinstance(saved.get(items), list)
        or not saved[items]
    ):
        if saved:
            log.warning("ignoring a checkpoint of other settings; the search starts afresh")
        return None
    return saved


class _Checkpointed:
    """A search's progress: its start payload and finished ``items`` (iterations or trials).

    Each is saved to the run's checkpoint before its trace event is emitted (a stop request at
    the event keeps it); a resumed run replays the saved ones as the same events.
    """

    def __init__(
        self,
        context: PruningContext,
        reporter: _Reporter,
        algorithm: str,
        items: str,
        expected: dict[str, Any],
        report_item: Callable[[dict[str, Any]], None],
    ) -> None:
        self.context = context
        self.reporter = reporter
        self.items = items
        self.report_item = report_item
        self.saved = _saved_state(context, algorithm, items, expected)
        self.state: dict[str, Any] = self.saved or {"algorithm": algorithm, items: []}
        self.clock = time.monotonic()

    def replay(self) -> list[dict[str, Any]] | None:
        """Emit the saved start and items again; returns the saved items (None: fresh run)."""
        if self.saved is None:
            return None
        self.reporter.start(self.saved["start"])
        for item in self.saved[self.items]:
            self.report_item(item)
        return list(self.saved[self.items])

    def start_clock(self) -> None:
        """The search starts now: its first (baseline) evaluation times the estimate."""
        self.clock = time.monotonic()

    def start(self, payload: dict[str, Any]) -> None:
        self.state["start"] = payload
        self._save()
        self.reporter.start(payload)
        self.reporter.expect(payload, time.monotonic() - self.clock)

    def add(self, item: dict[str, Any]) -> None:
        self.state[self.items].append(item)
        self._save()
        self.report_item(item)

    def _save(self) -> None:
        if self.context.checkpoint is not None:
            self.context.checkpoint.save(self.state)


def _grid(context: PruningContext, title: str, config: SearchConfig) -> tuple[int, int]:
    n_layers, n_heads = dense_grid(context.model, title)
    if config.min_heads_per_layer > n_heads:
        raise ValueError(
            f"Minimum heads per layer ({config.min_heads_per_layer}) exceeds the heads per "
            f"layer ({n_heads}); lower it."
        )
    return n_layers, n_heads


@register("astar")
class AStarSearch(_BudgetSearch):
    """Prune heads by A* search within a metric budget (Parnami, Singh and Joshi, 2021).

    Each iteration evaluates removing every head left in the search space on top of the heads
    pruned so far, prunes the cheapest while its cost fits the remaining budget, and eliminates
    for good the heads whose estimated costs (this iteration's costs) cannot all fit. Our reading
    of the paper's Figure 6 is in :mod:`pruning.methods.search_core`.

    Reference: https://arxiv.org/abs/2110.15225. Trace kinds: see :mod:`pruning.methods.astar`.
    """

    title = "A* search"
    paper = PAPER
    search = staticmethod(astar_search)
    algorithm = "astar"
    revision = 2  # costs from the unpruned baseline A (Figure 6); revision 1 chained them


@register("local_greedy")
class LocalGreedyPruning(_BudgetSearch):
    """The paper's local pruning: greedy, one head at a time, all remaining heads re-evaluated.

    Reference: Parnami, Singh and Joshi, 2021, https://arxiv.org/abs/2110.15225 (baseline).
    """

    title = "Local greedy pruning (A* baseline)"
    paper = PAPER
    search = staticmethod(local_search)
    algorithm = "local"
    revision = 2  # costs from the unpruned baseline A (Figure 6); revision 1 chained them


@register("global_heads")
class GlobalHeadPruning(_BudgetSearch):
    """The paper's global pruning: the same head index removed from every layer at once.

    Scores give every head its column's cost. Reference: Parnami, Singh and Joshi, 2021,
    https://arxiv.org/abs/2110.15225 (baseline).
    """

    title = "Global head-index pruning (A* baseline)"
    paper = PAPER
    search = staticmethod(global_search)
    algorithm = "global"
    revision = 2  # costs from the unpruned baseline A (Figure 6); revision 1 chained them


@register("random_budget")
class RandomBudgetPruning(PruningMethod):
    """The paper's random pruning under the same budget: many seeded random orders.

    Trial ``t`` removes heads in a random order drawn with seed ``run seed + t`` while the total
    drop from the unpruned model stays within the budget (see
    :func:`pruning.methods.search_core.random_budget_trials`). The distribution over trials is
    the point (the paper's Figures 9 and 10; all trials are in the trace). The returned mask is
    the trial with the most heads pruned (ties: less budget used, then the lower trial index).
    No per-head scores: a random order says nothing about importance.

    Reference: Parnami, Singh and Joshi, 2021, https://arxiv.org/abs/2110.15225 (baseline).
    """

    title = "Random pruning under a budget (A* baseline)"
    paper = PAPER
    config_class = RandomBudgetConfig
    config: RandomBudgetConfig

    def run(self, context: PruningContext) -> PruneResult:
        config = self.config
        n_layers, n_heads = _grid(context, self.title, config)
        reporter = _Reporter(context, config, "trial")
        evaluator = build_evaluator(context, config, reporter.tick)
        expected = {"budget": config.budget, "n_layers": n_layers, "n_heads": n_heads}
        progress = _Checkpointed(context, reporter, "random", "trials", expected, reporter.on_trial)

        with closing_evaluator(evaluator):
            context.check()
            finished = progress.replay()
            resume = None
            if finished is not None:
                resume = {"baseline": progress.state["start"]["baseline"], "trials": finished}
                log.info("resuming random pruning after trial %d", len(finished))
            progress.start_clock()
            trials = random_budget_trials(
                evaluator,
                n_layers,
                n_heads,
                config.budget,
                trials=config.trials,
                seed=context.seed,
                min_heads_per_layer=config.min_heads_per_layer,
                evaluate_many=evaluator.evaluate_many,
                on_start=progress.start,
                on_trial=progress.add,
                should_stop=context.should_stop,
                resume=resume,
            )
        baseline = float(progress.state["start"]["baseline"])
        evaluations = 1 + sum(int(t["evaluations"]) for t in trials)
        best = min(trials, key=lambda t: (-t["heads_pruned"], t["budget_used"], t["trial"]))
        mask = torch.ones(n_layers, n_heads, dtype=torch.bool)
        for layer, head in best["pruned"]:
            mask[layer, head] = False
        reporter.done(
            f"best trial {best['trial']}: {best['heads_pruned']} heads pruned",
            algorithm="random",
            pruned=best["pruned"],
            evaluations=evaluations,
            final_metric=best["metric"],
            budget_used=best["budget_used"],
            stop_reason="trials_done",
            trials=trials,
        )
        info = {
            "evaluations": evaluations,
            "baseline": baseline,
            "final_metric": best["metric"],
            "budget_used": best["budget_used"],
            "heads_pruned": best["heads_pruned"],
            "trials": config.trials,
            "best_trial": best["trial"],
            "engine": config.engine,
            "metric": config.metric,
            "executor": context.executor.describe(),
        }
        return PruneResult(mask=mask, scores=None, trace=tuple(context.trace), info=info)
