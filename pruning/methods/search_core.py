"""Model-independent cores of budgeted head search: A*, and the paper's three baselines.

Everything here sees the model only through a metric oracle: ``evaluate(mask) -> float`` with a
bool ``(n_layers, n_heads)`` mask, **True = keep**, and the metric in *points* (e.g. accuracy x
100). The budget is in the same points. Tests drive these functions with synthetic oracles;
:mod:`pruning.methods.astar` drives them with a model evaluator.

Reading of Parnami, Singh and Joshi, "Pruning Attention Heads of Transformer Models Using A*
Search" (Section 3.2.2 and Figure 6; line numbers are Figure 6's), as implemented by
:func:`astar_search`:

* ``A`` is the metric of the unpruned model (one evaluation of the all-True mask). It never
  changes: Section 3.2.2 item 4 defines the cost as "the drop in performance of the model from
  A ... computed as A - P", Figure 6's input C is the "drop in accuracy from the baseline", and
  Figure 8c's accuracy "drops back to the baseline ... During this period the utilized budget is
  zero". ``L`` is the pruned set (empty), ``S`` the search space: every head allowed by
  ``min_heads_per_layer`` (line 2).
* Iteration (lines 4-8): for every head ``y`` in ``S`` evaluate ``P_y`` = metric with
  ``L + {y}`` removed and its cost ``C_y = A - P_y`` (negative when pruning improves on A).
  Sort by ``C`` (ties: lowest ``(layer, head)``); ``X`` is the first, ``C_x`` its cost.
* Lines 9-10: ``C_x`` is clamped at 0. Line 11: ``X`` is pruned when ``C_x <= B`` (the given
  budget): the model with ``L + {X}`` removed is at most ``B`` below ``A``. Lines 12-15: ``X``
  joins ``L`` and the remaining budget becomes ``B - C_x`` (line 14 read with costs from A: the
  given budget minus the current cumulative drop, never a running sum of increments). The budget
  used by a run is ``max(0, A - P_final)``, Table 3's "Used".
* Lines 16-28, elimination: ``T = 0``; for every other head ``y`` of ``S``, in increasing cost,
  the heuristic estimate of its cost in the next iteration is its cost now, made non-negative
  (line 19, ``E_y = max(0, C_y)``, Section 3.2.2 item 5: ``E^{k+1} = C^k``); its estimated
  contribution is ``I_y = E_y - C_x`` (line 20, the increment over the pruned head). While
  ``T + I_y <= B - C_x`` (line 21) ``y`` stays and ``T += I_y``; the first ``y`` that does not fit
  and every head after it are eliminated (lines 24-28): they leave ``S`` for good and stay in the
  model. Figure 7: budget 20, the head of cost 5 is pruned, 15 is left; heads of cost 7, 8, 9, 10
  contribute 2, 3, 4, 5 (sum 14 <= 15) and stay, the rest are eliminated (test
  ``test_figure_7_example_with_its_numbers``). While every cost is <= 0 (the metric at or above
  A) every ``I_y`` is 0 and nothing is eliminated: "the A* heuristics does not kick in until the
  cost becomes positive" (Section 4.4.1).
* Heads whose layer reached ``min_heads_per_layer`` also leave ``S`` (before elimination, so they
  use no budget there). ``min_heads_per_layer`` is ours; the paper has no such floor.
* Stop (lines 3, 29-30) when ``S`` is empty, or when ``C_x`` exceeds the budget; that last
  iteration is still recorded, with nothing pruned and every candidate eliminated.

One written departure: Figure 6 compares strictly (line 3 ``WHILE B > 0``, line 11
``C_x < B``); we use ``<=`` so that budget 0 means "prune while the metric stays at or above A",
Table 3's "with zero budget" solution. The two differ only when a cumulative drop equals the
budget exactly. Comparisons allow :data:`TOLERANCE` for floating-point sums.

Guarantee: the final drop ``A - P_final`` is ``<=`` the budget (every pruned head passed line 11
with the cumulative drop it left). Local pruning (Section 3.2, steps i-v) and global pruning are
the same loop without elimination; random pruning (Section 4.4.2) uses the same accounting
(:func:`within_budget`).

Candidate statuses in the trace say what happens to a candidate after the iteration:
``"pruned"`` (removed), ``"searched"`` (a candidate again next iteration), ``"eliminated"``
(never a candidate again; stays in the model).

A search resumes from the iteration payloads of an interrupted one (``resume``): the payloads
carry the mask, the search space (candidates with status ``"searched"``) and the evaluation count,
so the resumed search continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pruning.jobs import JobCancelled

MaskEval = Callable[[torch.Tensor], float]
MaskEvalMany = Callable[[Sequence[torch.Tensor]], list[float]]
Payload = dict[str, Any]
Head = tuple[int, int]

# Costs are sums of metric differences; an exact tie with the budget must not fail by 1e-15.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class SearchResult:
    """Outcome of a budgeted search.

    Attributes:
        mask: bool ``(n_layers, n_heads)``, True = keep.
        pruned: pruned heads ``(layer, head)`` in pruning order.
        baseline: metric of the unpruned model (points).
        final_metric: metric of the returned mask (points).
        budget: the budget given (points).
        budget_used: ``max(0, baseline - final_metric)``, Table 3's "Used" (points).
        evaluations: masks evaluated, the baseline included.
        iterations: the per-iteration trace payloads (see :mod:`pruning.methods.astar`).
        stop_reason: ``"search_space_empty"`` or ``"over_budget"``.
    """

    mask: torch.Tensor
    pruned: list[tuple[int, int]]
    baseline: float
    final_metric: float
    budget: float
    budget_used: float
    evaluations: int
    iterations: list[dict[str, Any]]
    stop_reason: str


class _Oracle:
    """Evaluates masks, counts evaluations and polls ``should_stop`` between them."""

    def __init__(
        self,
        evaluate: MaskEval,
        evaluate_many: MaskEvalMany | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.evaluate = evaluate
        self.evaluate_many = evaluate_many
        self.should_stop = should_stop
        self.evaluations = 0

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise JobCancelled()

    def many(self, masks: Sequence[torch.Tensor]) -> list[float]:
        """Metrics of ``masks``: one ``evaluate_many`` call when given, else one call each."""
        self.check()
        if self.evaluate_many is not None and masks:
            values = [float(value) for value in self.evaluate_many(masks)]
            if len(values) != len(masks):
                raise ValueError(
                    f"evaluate_many returned {len(values)} metrics for {len(masks)} masks; "
                    "it must return one per mask, in order."
                )
            self.evaluations += len(masks)
        else:
            values = []
            for mask in masks:
                values.append(float(self.evaluate(mask)))
                self.evaluations += 1
                self.check()
        if not all(math.isfinite(value) for value in values):
            raise ValueError("The metric is NaN or infinite for some mask; check the evaluator.")
        self.check()
        return values


def _check_grid(n_layers: int, n_heads: int, budget: float, min_heads_per_layer: int) -> None:
    if n_layers < 1 or n_heads < 1:
        raise ValueError(f"The head grid must be at least 1 x 1 (got {n_layers} x {n_heads}).")
    if not math.isfinite(budget) or budget < 0:
        raise ValueError(f"The budget must be a finite number >= 0 metric points (got {budget}).")
    if not 0 <= min_heads_per_layer <= n_heads:
        raise ValueError(
            f"Minimum heads per layer must be between 0 and the heads per layer ({n_heads}); "
            f"got {min_heads_per_layer}."
        )


def _fits(mask: torch.Tensor, unit: Sequence[Head], min_heads: int) -> bool:
    """Whether removing ``unit`` (present heads) leaves every layer ``min_heads`` heads."""
    removed: dict[int, int] = {}
    for layer, _ in unit:
        removed[layer] = removed.get(layer, 0) + 1
    return all(int(mask[layer].sum()) - count >= min_heads for layer, count in removed.items())


def _without(mask: torch.Tensor, unit: Sequence[Head]) -> torch.Tensor:
    out = mask.clone()
    for layer, head in unit:
        out[layer, head] = False
    return out


# Table 3 of the paper: A*'s evaluations ("# Search") as a share of a full local search of the
# 144 heads of BERT-base (144 x 145 / 2 = 10,440): Amazon 5282, 6360, 7496 and IMDB 6158, 6420,
# 7107 at budgets 1, 2, 3; the means are 0.548, 0.612, 0.699.
_PAPER_ASTAR_SHARE = {1.0: 0.548, 2.0: 0.612, 3.0: 0.699}


def expected_evaluations(
    algorithm: str, units: int, budget: float, trials: int = 1
) -> tuple[int, int]:
    """A rough count of the evaluations a search will make, and its upper bound.

    The upper bound of A* and local pruning is a full local search, ``1 + units (units + 1) / 2``
    (every candidate re-evaluated until none is left), of global pruning the same over columns,
    of random trials ``1 + trials x units``. The typical A* count takes the share of the full
    search that A* needed in the paper's Table 3 (0.55 at budget 1 to 0.70 at budget 3, linear
    between and clamped outside); the others are given at their bound. Only an estimate: the
    real count depends on how fast the metric falls on the model at hand.

    Args:
        algorithm: ``"astar"``, ``"local"``, ``"global"`` or ``"random"``.
        units: candidates at the start (heads; columns for global search).
        budget: the budget in points. trials: random trials.

    Returns:
        ``(typical, at_most)`` evaluations, the baseline included.
    """
    if algorithm == "random":
        most = 1 + trials * units
        return most, most
    most = 1 + units * (units + 1) // 2
    if algorithm != "astar":
        return most, most
    low, high = min(_PAPER_ASTAR_SHARE), max(_PAPER_ASTAR_SHARE)
    clamped = min(high, max(low, budget))
    share = _PAPER_ASTAR_SHARE[low] + (clamped - low) * (
        _PAPER_ASTAR_SHARE[high] - _PAPER_ASTAR_SHARE[low]
    ) / (high - low)
    return max(units + 1, round(1 + share * (most - 1))), most


def drop_from(baseline: float, metric: float) -> float:
    """Budget used by a model with ``metric``: its drop below the unpruned ``baseline``, >= 0."""
    return max(0.0, baseline - metric)


def within_budget(drop: float, budget: float) -> bool:
    """Whether a (clamped) drop from the baseline fits ``budget`` (Figure 6, line 11).

    The one budget rule of A*, local, global and random pruning, so their comparisons are fair.
    """
    return drop <= budget + TOLERANCE


def split_by_budget(
    costs: dict[int, float], pruned_cost: float, remaining: float
) -> tuple[list[int], list[int]]:
    """A*'s elimination step (Figure 6, lines 16-28): who stays in the search space.

    Candidates in increasing cost (ties by index) contribute ``I_y = E_y - C_x`` each, with
    ``E_y = max(0, C_y)`` (line 19) and ``C_x = pruned_cost``, the clamped cost of the head just
    pruned (line 20). The longest prefix whose cumulative contribution is ``<= remaining``
    stays (line 21); the first candidate that does not fit and all after it are eliminated
    (lines 24-28).

    Args:
        costs: candidate index -> cost this iteration, ``A - P`` (points; may be negative).
        pruned_cost: ``C_x``, the clamped cost of the head pruned this iteration.
        remaining: the remaining budget ``B - C_x`` (points).

    Returns:
        ``(kept, eliminated)``, each in (cost, index) order.
    """
    order = sorted(costs, key=lambda u: (costs[u], u))
    total = 0.0
    for position, u in enumerate(order):
        total += max(0.0, costs[u]) - pruned_cost
        if total > remaining + TOLERANCE:
            return order[:position], order[position:]
    return order, []


def zero_budget_point(iterations: Sequence[Payload]) -> tuple[int, float] | None:
    """Table 3's "with zero budget" solution: heads pruned and metric before any budget is used.

    The last recorded state whose metric is still at or above the baseline ``A`` (the point
    where the metric first falls below A comes after it).

    Args:
        iterations: the ``search_iteration`` payloads of a run, in order.

    Returns:
        ``(heads pruned, metric)``, or None without iterations.
    """
    if not iterations:
        return None
    baseline = float(iterations[0]["baseline"])
    heads, metric = 0, baseline
    for payload in iterations:
        if not payload["pruned"]:
            break
        if float(payload["metric"]) < baseline - TOLERANCE:
            break
        heads += len(payload["pruned"])
        metric = float(payload["metric"])
    return heads, metric


@dataclass
class _State:
    """Where a greedy search stands after an iteration (restored from payloads on resume)."""

    baseline: float
    mask: torch.Tensor
    search: list[int]
    pruned: list[Head]
    iterations: list[Payload]
    done: bool
    stop_reason: str = "search_space_empty"


def _restore(
    algorithm: str,
    payloads: Sequence[Payload],
    labels: list[str],
    budget: float,
    shape: tuple[int, int],
) -> _State:
    """The state after the recorded iterations of an interrupted search of the same settings."""
    index = {label: u for u, label in enumerate(labels)}
    first = payloads[0]
    if (
        first.get("algorithm") != algorithm
        or abs(float(first["budget"]) - budget) > TOLERANCE
        or [len(row) for row in payloads[-1]["mask"]] != [shape[1]] * shape[0]
    ):
        raise ValueError(
            "The checkpoint belongs to another search (algorithm, budget or head grid differ); "
            "start the search afresh."
        )
    last = payloads[-1]
    pruned = [(int(layer), int(head)) for p in payloads for layer, head in p["pruned"]]
    search = sorted(index[c["label"]] for c in last["candidates"] if c["status"] == "searched")
    done = not last["pruned"] or not search
    return _State(
        baseline=float(first["baseline"]),
        mask=torch.tensor(last["mask"], dtype=torch.bool),
        search=search,
        pruned=pruned,
        iterations=[dict(p) for p in payloads],
        done=done,
        stop_reason="over_budget" if not last["pruned"] else "search_space_empty",
    )


def _greedy(
    algorithm: str,
    oracle: _Oracle,
    shape: tuple[int, int],
    budget: float,
    units: list[list[Head]],
    labels: list[str],
    *,
    min_heads: int,
    eliminate: bool,
    on_start: Callable[[Payload], None] | None,
    on_iteration: Callable[[Payload], None] | None,
    resume: Sequence[Payload] | None = None,
) -> SearchResult:
    """The loop shared by A* (``eliminate``), local (heads) and global (columns) search.

    ``units`` are the candidates (a head, or a column of heads), indexed in (layer, head) order
    so that ties go to the lowest index. With ``resume`` (the payloads of an interrupted search
    of the same settings) the search continues after its last recorded iteration; ``on_start``
    and ``on_iteration`` then see only what is new.
    """
    if resume:
        state = _restore(algorithm, resume, labels, budget, shape)
        oracle.evaluations = int(resume[-1]["evaluations"])
    else:
        mask = torch.ones(shape, dtype=torch.bool)
        baseline = oracle.many([mask])[0]
        search = [u for u in range(len(units)) if _fits(mask, units[u], min_heads)]
        state = _State(baseline, mask, search, [], [], done=False)
        if on_start is not None:
            on_start(
                {
                    "algorithm": algorithm,
                    "baseline": baseline,
                    "budget": budget,
                    "n_layers": shape[0],
                    "n_heads": shape[1],
                    "search_space": len(search),
                }
            )
    baseline = state.baseline
    while state.search and not state.done:
        oracle.check()
        search = state.search
        metrics = dict(
            zip(search, oracle.many([_without(state.mask, units[u]) for u in search]), strict=True)
        )
        costs = {u: baseline - metric for u, metric in metrics.items()}  # C = A - P (line 5)
        order = sorted(search, key=lambda u: (costs[u], u))  # lines 6-7
        best = order[0]
        cost = max(0.0, costs[best])  # lines 8-10
        status = dict.fromkeys(search, "eliminated")
        increments: dict[int, float] = {}
        if not within_budget(cost, budget):  # lines 11, 29-30
            state.stop_reason = "over_budget"
            taken: list[Head] = []
            state.search = []
        else:
            taken = units[best]
            state.mask = _without(state.mask, taken)
            state.pruned.extend(taken)
            status[best] = "pruned"
            rest = [u for u in order[1:] if _fits(state.mask, units[u], min_heads)]
            if eliminate:
                increments = {u: max(0.0, costs[u]) - cost for u in rest}
                rest, _ = split_by_budget({u: costs[u] for u in rest}, cost, budget - cost)
            state.search = sorted(rest)
            status.update(dict.fromkeys(state.search, "searched"))
        current = (
            metrics[best]
            if taken
            else (float(state.iterations[-1]["metric"]) if state.iterations else baseline)
        )
        used = drop_from(baseline, current)
        payload: Payload = {
            "iteration": len(state.iterations) + 1,
            "algorithm": algorithm,
            "pruned": [list(head) for head in taken],
            "cost": cost,
            "budget": budget,
            "budget_used": used,
            "budget_remaining": max(0.0, budget - used),
            "baseline": baseline,
            "metric": current,
            "evaluations": oracle.evaluations,
            "evaluations_this_iteration": len(order),
            "candidates": [
                {
                    "heads": [list(head) for head in units[u]],
                    "label": labels[u],
                    "cost": costs[u],
                    "metric": metrics[u],
                    "status": status[u],
                    **({"increment": increments[u]} if u in increments else {}),
                }
                for u in order
            ],
            "mask": state.mask.tolist(),
        }
        state.iterations.append(payload)
        if on_iteration is not None:
            on_iteration(payload)
    final = float(state.iterations[-1]["metric"]) if state.iterations else baseline
    return SearchResult(
        mask=state.mask,
        pruned=state.pruned,
        baseline=baseline,
        final_metric=final,
        budget=budget,
        budget_used=drop_from(baseline, final),
        evaluations=oracle.evaluations,
        iterations=state.iterations,
        stop_reason=state.stop_reason,
    )


def _head_units(n_layers: int, n_heads: int) -> tuple[list[list[Head]], list[str]]:
    units = [[(layer, head)] for layer in range(n_layers) for head in range(n_heads)]
    return units, [f"L{layer} H{head}" for [(layer, head)] in units]


def astar_search(
    evaluate: MaskEval,
    n_layers: int,
    n_heads: int,
    budget: float,
    *,
    evaluate_many: MaskEvalMany | None = None,
    min_heads_per_layer: int = 0,
    on_start: Callable[[Payload], None] | None = None,
    on_iteration: Callable[[Payload], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: Sequence[Payload] | None = None,
) -> SearchResult:
    """Prune heads by A* search within a metric budget (the module docstring has the reading).

    Args:
        evaluate: bool ``(n_layers, n_heads)`` mask (True = keep) -> metric in points.
        n_layers, n_heads: the head grid.
        budget: the metric drop allowed, in points (e.g. 1.0 = one accuracy point).
        evaluate_many: when given, each iteration's candidates go to it in one call.
        min_heads_per_layer: never leave a layer with fewer heads.
        on_start: receives ``{"algorithm", "baseline", "budget", "n_layers", "n_heads",
            "search_space"}`` after the baseline evaluation.
        on_iteration: receives each iteration's payload as it is recorded.
        should_stop: polled between evaluations; when True, ``JobCancelled`` is raised.
        resume: the iteration payloads of an interrupted search with the same oracle and
            settings; the search continues after the last one (and returns all of them).

    Returns:
        The pruned mask, the pruning order, the trace payloads and counts.

    Raises:
        ValueError: on an empty grid, a negative budget or an impossible minimum.
        JobCancelled: when ``should_stop`` returns True.
    """
    _check_grid(n_layers, n_heads, budget, min_heads_per_layer)
    units, labels = _head_units(n_layers, n_heads)
    oracle = _Oracle(evaluate, evaluate_many, should_stop)
    return _greedy(
        "astar",
        oracle,
        (n_layers, n_heads),
        budget,
        units,
        labels,
        min_heads=min_heads_per_layer,
        eliminate=True,
        on_start=on_start,
        on_iteration=on_iteration,
        resume=resume,
    )


def local_search(
    evaluate: MaskEval,
    n_layers: int,
    n_heads: int,
    budget: float,
    *,
    evaluate_many: MaskEvalMany | None = None,
    min_heads_per_layer: int = 0,
    on_start: Callable[[Payload], None] | None = None,
    on_iteration: Callable[[Payload], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: Sequence[Payload] | None = None,
) -> SearchResult:
    """The paper's local pruning (Section 3.2, steps i-v): A* without elimination.

    Every iteration re-evaluates all remaining heads and prunes the least-cost one while the
    cumulative drop from the unpruned model stays within the budget. Arguments and result as
    :func:`astar_search`.
    """
    _check_grid(n_layers, n_heads, budget, min_heads_per_layer)
    units, labels = _head_units(n_layers, n_heads)
    oracle = _Oracle(evaluate, evaluate_many, should_stop)
    return _greedy(
        "local",
        oracle,
        (n_layers, n_heads),
        budget,
        units,
        labels,
        min_heads=min_heads_per_layer,
        eliminate=False,
        on_start=on_start,
        on_iteration=on_iteration,
        resume=resume,
    )


def global_search(
    evaluate: MaskEval,
    n_layers: int,
    n_heads: int,
    budget: float,
    *,
    evaluate_many: MaskEvalMany | None = None,
    min_heads_per_layer: int = 0,
    on_start: Callable[[Payload], None] | None = None,
    on_iteration: Callable[[Payload], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: Sequence[Payload] | None = None,
) -> SearchResult:
    """The paper's global pruning: remove the same head index from every layer.

    Candidates are head indices ``j`` (columns). Each iteration evaluates removing column ``j``
    on top of the pruned columns and prunes the least-cost column while the cumulative drop
    from the unpruned model stays within the budget; no elimination. A column is a candidate
    only while removing it leaves ``min_heads_per_layer`` heads in every layer. Arguments and
    result as :func:`astar_search`; ``pruned`` lists every head of each pruned column.
    """
    _check_grid(n_layers, n_heads, budget, min_heads_per_layer)
    units = [[(layer, head) for layer in range(n_layers)] for head in range(n_heads)]
    labels = [f"H{head}, all layers" for head in range(n_heads)]
    oracle = _Oracle(evaluate, evaluate_many, should_stop)
    return _greedy(
        "global",
        oracle,
        (n_layers, n_heads),
        budget,
        units,
        labels,
        min_heads=min_heads_per_layer,
        eliminate=False,
        on_start=on_start,
        on_iteration=on_iteration,
        resume=resume,
    )


@dataclass
class _Trial:
    """State of one random trial: the heads still to try, in its random order."""

    mask: torch.Tensor
    metric: float
    queue: list[Head]
    pruned: list[list[int]] = field(default_factory=list)
    done: bool = False
    evaluations: int = 0

    def next_head(self, min_heads: int) -> Head | None:
        """The next head of the order whose layer may lose one, or None when none is left."""
        while self.queue:
            head = self.queue.pop(0)
            if _fits(self.mask, [head], min_heads):
                return head
        return None


def random_budget_trials(
    evaluate: MaskEval,
    n_layers: int,
    n_heads: int,
    budget: float,
    *,
    trials: int = 20,
    seed: int = 0,
    min_heads_per_layer: int = 0,
    evaluate_many: MaskEvalMany | None = None,
    on_start: Callable[[Payload], None] | None = None,
    on_trial: Callable[[Payload], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: Payload | None = None,
) -> list[dict[str, Any]]:
    """The paper's random pruning under the same budget: ``trials`` seeded random orders.

    Trial ``t`` draws a permutation of the heads with a ``torch.Generator`` seeded with
    ``seed + t`` and removes heads in that order, each kept removed while the total drop from the
    unpruned baseline ``A_0 - P`` is ``<=`` the budget; the trial stops at the first head that
    would exceed it. Heads whose layer is at ``min_heads_per_layer`` are skipped (not a stop).
    With ``evaluate_many`` the trials advance in lockstep, one call per step holding each active
    trial's next mask; the results are the same as one trial after another.

    Args:
        evaluate: bool ``(n_layers, n_heads)`` mask (True = keep) -> metric in points.
        trials: number of trials (>= 1).
        seed: trial ``t`` uses ``seed + t``.
        on_start: receives ``{"algorithm": "random", "baseline", "budget", "n_layers",
            "n_heads", "search_space"}`` after the baseline evaluation.
        on_trial: receives each trial's dict, in trial order.
        resume: ``{"baseline", "trials"}`` of an interrupted call with the same oracle and
            settings: the finished trials (a prefix, in order) are kept and not recomputed, nor
            is the baseline; ``on_start`` and ``on_trial`` see only what is new.
        Others: as :func:`astar_search`.

    Returns:
        Per trial: ``{"trial", "seed", "heads_pruned", "budget_used" (A_0 - final metric,
        clamped >= 0), "metric" (final), "pruned": [[layer, head], ...] in pruning order,
        "evaluations" (masks this trial evaluated)}``. All evaluations: 1 (the baseline) plus
        the trials' evaluations, the same whether or not the call was resumed.

    Raises:
        ValueError: on bad arguments. JobCancelled: when ``should_stop`` returns True.
    """
    _check_grid(n_layers, n_heads, budget, min_heads_per_layer)
    if trials < 1:
        raise ValueError(f"Trials must be at least 1 (got {trials}).")
    oracle = _Oracle(evaluate, evaluate_many, should_stop)
    finished: list[Payload] = [dict(t) for t in (resume or {}).get("trials", [])][:trials]
    if resume is not None:
        baseline = float(resume["baseline"])
        if [t.get("trial") for t in finished] != list(range(len(finished))) or any(
            t.get("seed") != seed + t["trial"] for t in finished
        ):
            raise ValueError(
                "The checkpoint belongs to another random search (trials or seed differ); "
                "start it afresh."
            )
    else:
        baseline = oracle.many([torch.ones(n_layers, n_heads, dtype=torch.bool)])[0]
    if on_start is not None and resume is None:
        on_start(
            {
                "algorithm": "random",
                "baseline": baseline,
                "budget": budget,
                "n_layers": n_layers,
                "n_heads": n_heads,
                "search_space": n_layers * n_heads,
            }
        )
    states = [
        _Trial(
            mask=torch.ones(n_layers, n_heads, dtype=torch.bool),
            metric=baseline,
            queue=[
                divmod(int(i), n_heads)
                for i in torch.randperm(
                    n_layers * n_heads, generator=torch.Generator().manual_seed(seed + t)
                )
            ],
        )
        for t in range(trials)
    ]
    results: list[Payload] = finished
    for state in states[: len(finished)]:
        state.done = True
    per_call = trials if evaluate_many is not None else 1
    while len(results) < trials:
        proposals: list[tuple[_Trial, Head, torch.Tensor]] = []
        for state in [state for state in states if not state.done][:per_call]:
            head = state.next_head(min_heads_per_layer)
            if head is None:
                state.done = True
            else:
                proposals.append((state, head, _without(state.mask, [head])))
        metrics = oracle.many([mask for _, _, mask in proposals])
        for (state, head, mask), metric in zip(proposals, metrics, strict=True):
            state.evaluations += 1
            if within_budget(drop_from(baseline, metric), budget):
                state.mask, state.metric = mask, metric
                state.pruned.append([head[0], head[1]])
            else:
                state.done = True
        while len(results) < trials and states[len(results)].done:
            t = len(results)
            state = states[t]
            trial = {
                "trial": t,
                "seed": seed + t,
                "heads_pruned": len(state.pruned),
                "budget_used": drop_from(baseline, state.metric),
                "metric": state.metric,
                "pruned": state.pruned,
                "evaluations": state.evaluations,
            }
            results.append(trial)
            if on_trial is not None:
                on_trial(trial)
    return results
