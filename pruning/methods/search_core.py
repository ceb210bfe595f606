"""Model-independent cores of budgeted head search: A*, and the paper's three baselines.

Everything here sees the model only through a metric oracle: ``evaluate(mask) -> float`` with a
bool ``(n_layers, n_heads)`` mask, **True = keep**, and the metric in *points* (e.g. accuracy x
100). The budget is in the same points. Tests drive these functions with synthetic oracles;
:mod:`pruning.methods.astar` drives them with a model evaluator.

Reading of Parnami, Singh and Joshi, "Pruning Attention Heads of Transformer Models Using A*
Search" (Figure 6), as implemented by :func:`astar_search`:

* ``A_1`` is the metric of the unpruned model (one evaluation of the all-True mask), ``L`` the
  pruned set (empty), ``S`` the search space: every head allowed by ``min_heads_per_layer``.
* Iteration ``k``: for every head ``h`` in ``S`` evaluate ``P_h`` = metric with ``L + {h}``
  removed; cost ``C_h = max(0, A_k - P_h)`` (an improvement costs nothing).
* The least-cost head ``h*`` (ties: lowest ``(layer, head)``) is pruned when ``C_h* <= remaining
  budget``. ``<=`` on purpose: zero-cost heads are pruned even with no budget left. Then
  ``L += h*``, the remaining budget drops by ``C_h*`` and ``A_{k+1} = P_h*``.
* Heuristic: the estimated cost of a head in iteration ``k+1`` is its cost in iteration ``k``.
  Elimination (Figure 6, lines 16-28): the other heads of ``S``, sorted by estimated cost
  (ties by index), keep the longest prefix whose cumulative estimated cost is ``<=`` the remaining
  budget; the rest leave ``S`` for good and stay in the model. Figure 7: budget 20, the least cost
  5 is pruned; with 15 left, heads estimated at 2, 3, 4, 5 stay (cumulative 14) and 6, 7, 9 go
  (:func:`split_by_budget`). The figure's estimates below 5 are illustrative: with
  ``E(k+1) = C(k)`` no other head of an iteration is estimated below the head it prunes.
* Heads whose layer reached ``min_heads_per_layer`` also leave ``S`` (before the prefix is taken,
  so they use no budget there).
* Stop when ``S`` is empty, or when the least cost exceeds the remaining budget; that last
  iteration is still recorded, with nothing pruned and every candidate eliminated.

Guarantee: the final drop ``A_1 - A_final`` is the sum of the unclamped costs of the pruned
heads, so it is ``<=`` the budget used (clamped costs) ``<=`` the budget. Comparisons with the
budget allow :data:`TOLERANCE` for floating-point sums.

Candidate statuses in the trace say what happens to a candidate after the iteration:
``"pruned"`` (removed), ``"searched"`` (a candidate again next iteration), ``"eliminated"``
(never a candidate again; stays in the model).
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
        budget_used: sum of the clamped costs of the pruned heads (points).
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


def split_by_budget(estimates: dict[int, float], remaining: float) -> tuple[list[int], list[int]]:
    """A*'s elimination step (Figure 6, lines 16-28): who stays in the search space.

    Candidates sorted by estimated cost (ties by index) keep the longest prefix whose cumulative
    estimated cost is ``<=`` ``remaining``; the rest are eliminated.

    Args:
        estimates: candidate index -> estimated cost of the next iteration (points).
        remaining: the remaining budget (points).

    Returns:
        ``(kept, eliminated)``, each in (cost, index) order.
    """
    order = sorted(estimates, key=lambda u: (estimates[u], u))
    total = 0.0
    for position, u in enumerate(order):
        total += estimates[u]
        if total > remaining + TOLERANCE:
            return order[:position], order[position:]
    return order, []


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
) -> SearchResult:
    """The loop shared by A* (``eliminate``), local (heads) and global (columns) search.

    ``units`` are the candidates (a head, or a column of heads), indexed in (layer, head) order
    so that ties go to the lowest index.
    """
    mask = torch.ones(shape, dtype=torch.bool)
    baseline = oracle.many([mask])[0]
    search = [u for u in range(len(units)) if _fits(mask, units[u], min_heads)]
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
    current, used = baseline, 0.0
    pruned: list[Head] = []
    iterations: list[Payload] = []
    stop_reason = "search_space_empty"
    while search:
        oracle.check()
        metrics = dict(
            zip(search, oracle.many([_without(mask, units[u]) for u in search]), strict=True)
        )
        costs = {u: max(0.0, current - metric) for u, metric in metrics.items()}
        order = sorted(search, key=lambda u: (costs[u], u))
        best = order[0]
        status = dict.fromkeys(search, "eliminated")
        if costs[best] > budget - used + TOLERANCE:
            stop_reason = "over_budget"
            taken: list[Head] = []
            search = []
        else:
            taken = units[best]
            mask = _without(mask, taken)
            used += costs[best]
            current = metrics[best]
            pruned.extend(taken)
            status[best] = "pruned"
            rest = [u for u in order[1:] if _fits(mask, units[u], min_heads)]
            if eliminate:
                rest, _ = split_by_budget({u: costs[u] for u in rest}, budget - used)
            search = sorted(rest)
            status.update(dict.fromkeys(search, "searched"))
        payload: Payload = {
            "iteration": len(iterations) + 1,
            "algorithm": algorithm,
            "pruned": [list(head) for head in taken],
            "cost": costs[best],
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
                }
                for u in order
            ],
            "mask": mask.tolist(),
        }
        iterations.append(payload)
        if on_iteration is not None:
            on_iteration(payload)
    return SearchResult(
        mask=mask,
        pruned=pruned,
        baseline=baseline,
        final_metric=current,
        budget=budget,
        budget_used=used,
        evaluations=oracle.evaluations,
        iterations=iterations,
        stop_reason=stop_reason,
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
) -> SearchResult:
    """The paper's local pruning: A* without elimination.

    Every iteration re-evaluates all remaining heads and prunes the least-cost one while its cost
    is ``<=`` the remaining budget. Arguments and result as :func:`astar_search`.
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
) -> SearchResult:
    """The paper's global pruning: remove the same head index from every layer.

    Candidates are head indices ``j`` (columns). Each iteration evaluates removing column ``j``
    on top of the pruned columns and prunes the least-cost column while its cost is ``<=`` the
    remaining budget; no elimination. A column is a candidate only while removing it leaves
    ``min_heads_per_layer`` heads in every layer. Arguments and result as :func:`astar_search`;
    ``pruned`` lists every head of each pruned column.
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
    )


@dataclass
class _Trial:
    """State of one random trial: the heads still to try, in its random order."""

    mask: torch.Tensor
    metric: float
    queue: list[Head]
    pruned: list[list[int]] = field(default_factory=list)
    done: bool = False

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
        Others: as :func:`astar_search`.

    Returns:
        Per trial: ``{"trial", "seed", "heads_pruned", "budget_used" (A_0 - final metric,
        clamped >= 0), "metric" (final), "pruned": [[layer, head], ...] in pruning order}``.

    Raises:
        ValueError: on bad arguments. JobCancelled: when ``should_stop`` returns True.
    """
    _check_grid(n_layers, n_heads, budget, min_heads_per_layer)
    if trials < 1:
        raise ValueError(f"Trials must be at least 1 (got {trials}).")
    oracle = _Oracle(evaluate, evaluate_many, should_stop)
    baseline = oracle.many([torch.ones(n_layers, n_heads, dtype=torch.bool)])[0]
    if on_start is not None:
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
    results: list[Payload] = []
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
            if baseline - metric <= budget + TOLERANCE:
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
                "budget_used": max(0.0, baseline - state.metric),
                "metric": state.metric,
                "pruned": state.pruned,
            }
            results.append(trial)
            if on_trial is not None:
                on_trial(trial)
    return results
