"""A* search (Parnami et al. 2021) and its baselines against hand-worked synthetic oracles.

Oracles give the metric in points of a bool ``(n_layers, n_heads)`` mask (True = keep); they
need no model. The registered methods then run end to end on a small random BERT through the real
evaluation engines of ``pruning.fast_eval``, every candidate's metric checked against a copy with
the heads physically removed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

from conftest import build_tiny_model, real_tokenizer, sentiment_rows, small_bert
from pruning.batching import make_batches
from pruning.datasets_base import LabelledDataset, TextSplit
from pruning.evaluate import predict_logits
from pruning.heads import remove_heads
from pruning.jobs import JobCancelled
from pruning.methods import astar as astar_module
from pruning.methods.base import PruningContext, get_method, select_lowest
from pruning.methods.search_core import (
    astar_search,
    global_search,
    local_search,
    random_budget_trials,
    split_by_budget,
    zero_budget_point,
)
from test_methods import hook_count, run_method, tiny_context

SEARCHES = {"astar": astar_search, "local": local_search, "global": global_search}


class Oracle:
    """metric = 100 - sum of removed heads' costs - sum of removed pairs' interaction terms."""

    def __init__(self, costs: list[list[float]], pairs: torch.Tensor | None = None) -> None:
        self.costs = torch.tensor(costs, dtype=torch.float64)
        self.pairs = pairs
        self.calls = 0
        self.batch_calls = 0

    def __call__(self, mask: torch.Tensor) -> float:
        self.calls += 1
        removed = (~mask).flatten().double()
        drop = float((self.costs.flatten() * removed).sum())
        if self.pairs is not None:
            drop += float(removed @ torch.triu(self.pairs, diagonal=1) @ removed)
        return 100.0 - drop

    def many(self, masks: Sequence[torch.Tensor]) -> list[float]:
        self.batch_calls += 1
        return [self(mask) for mask in masks]


def statuses(payload: dict[str, Any]) -> dict[str, str]:
    return {c["label"]: c["status"] for c in payload["candidates"]}


def removed(mask: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(l_), int(h)) for l_, h in (~mask).nonzero().tolist()}


# Additive oracle used by several tests (costs chosen exactly representable in binary).
ADDITIVE = [[0.5, 2.0, 0.125], [1.0, 0.25, 4.0]]


def test_astar_on_additive_costs_matches_the_hand_worked_answer() -> None:
    # Budget 2, A = 100, costs always from A. Iteration 1: costs L0H2 .125 < L1H1 .25 < L0H0 .5 <
    # L1H0 1 < L0H1 2 < L1H2 4; prune L0H2 (C_x .125), 2 - .125 = 1.875 left; contributions
    # I_y = C_y - .125: .125 + .375 + .875 = 1.375 <= 1.875, + 1.875 = 3.25 is over, so L0H1 and
    # L1H2 are eliminated. Iteration 2 (S = L0H0, L1H0, L1H1), costs from A with L0H2 gone:
    # L1H1 .375, L0H0 .625, L1H0 1.125; prune L1H1, 1.625 left; .25 + .75 = 1 fits. Iteration 3:
    # prune L0H0 (.875), 1.125 left; .5 fits. Iteration 4: prune L1H0 (1.875 <= 2), .125 left,
    # S empty. Evaluations 1 + 6 + 3 + 2 + 1 = 13.
    oracle = Oracle(ADDITIVE)
    result = astar_search(oracle, 2, 3, 2.0)
    assert result.pruned == [(0, 2), (1, 1), (0, 0), (1, 0)]
    assert result.mask.tolist() == [[False, True, False], [False, False, True]]
    assert result.budget_used == 1.875 and result.final_metric == 98.125
    assert result.baseline == 100.0 and result.budget == 2.0
    assert result.evaluations == 13 == oracle.calls
    assert result.stop_reason == "search_space_empty"
    its = result.iterations
    assert [p["evaluations_this_iteration"] for p in its] == [6, 3, 2, 1]
    assert [p["evaluations"] for p in its] == [7, 10, 12, 13]
    # Cost = the drop from the unpruned model A (Section 3.2.2 item 4), not from the last model.
    assert [p["cost"] for p in its] == [0.125, 0.375, 0.875, 1.875]
    assert [p["budget_used"] for p in its] == [0.125, 0.375, 0.875, 1.875]
    assert [p["budget_remaining"] for p in its] == [1.875, 1.625, 1.125, 0.125]
    assert [p["metric"] for p in its] == [99.875, 99.625, 99.125, 98.125]
    assert [p["pruned"] for p in its] == [[[0, 2]], [[1, 1]], [[0, 0]], [[1, 0]]]
    assert [c["label"] for c in its[0]["candidates"]] == [
        "L0 H2",
        "L1 H1",
        "L0 H0",
        "L1 H0",
        "L0 H1",
        "L1 H2",
    ]
    assert statuses(its[0]) == {
        "L0 H2": "pruned",
        "L1 H1": "searched",
        "L0 H0": "searched",
        "L1 H0": "searched",
        "L0 H1": "eliminated",
        "L1 H2": "eliminated",
    }
    assert statuses(its[1]) == {"L1 H1": "pruned", "L0 H0": "searched", "L1 H0": "searched"}
    assert statuses(its[2]) == {"L0 H0": "pruned", "L1 H0": "searched"}
    assert statuses(its[3]) == {"L1 H0": "pruned"}
    assert its[0]["candidates"][4] == {
        "heads": [[0, 1]],
        "label": "L0 H1",
        "cost": 2.0,
        "metric": 98.0,
        "status": "eliminated",
        "increment": 1.875,
    }
    assert [c["cost"] for c in its[1]["candidates"]] == [0.375, 0.625, 1.125]
    assert its[1]["mask"] == [[True, True, False], [True, False, True]]
    assert all(p["algorithm"] == "astar" and p["baseline"] == 100.0 for p in its)
    assert [p["iteration"] for p in its] == [1, 2, 3, 4]
    json.dumps(its)


def test_local_search_reevaluates_everything_and_costs_more_evaluations() -> None:
    # Same oracle, budget 2: local prunes the same heads (L0H2, L1H1, L0H0, L1H0) but evaluates
    # 6, 5, 4, 3 heads, then 2 (L0H1 would leave a drop of 3.875 and L1H2 of 5.875, both over
    # 2): it stops there with that iteration recorded. 1 + 6 + 5 + 4 + 3 + 2 = 21 evaluations.
    oracle = Oracle(ADDITIVE)
    local = local_search(oracle, 2, 3, 2.0)
    astar = astar_search(Oracle(ADDITIVE), 2, 3, 2.0)
    assert local.pruned == astar.pruned
    assert local.evaluations == 21 == oracle.calls and astar.evaluations == 13
    assert [p["evaluations_this_iteration"] for p in local.iterations] == [6, 5, 4, 3, 2]
    last = local.iterations[-1]
    assert last["pruned"] == [] and last["cost"] == 3.875 and last["metric"] == 98.125
    assert statuses(last) == {"L0 H1": "eliminated", "L1 H2": "eliminated"}
    assert statuses(local.iterations[0])["L1 H2"] == "searched"
    assert local.stop_reason == "over_budget" and local.budget_used == 1.875
    for result in (local, astar):
        assert 100.0 - result.final_metric == result.budget_used <= 2.0


def test_costs_that_rise_with_removed_heads() -> None:
    # Every removed pair costs .25 more. Budget 1.5. Iteration 1: costs L0H0 .25, L1H0 .5,
    # L0H1 1, L1H1 2; prune L0H0, 1.25 left; contributions .25 fits, .25 + .75 = 1 fits,
    # 1 + 1.75 does not: L1H1 goes. Iteration 2: from A, L1H0 costs .25 + .5 + .25 = 1 and L0H1
    # 1.5; prune L1H0 (1 <= 1.5), .5 left; L0H1's contribution .5 fits. Iteration 3: L0H1 costs
    # 1 + 1 + 2 x .25 = 2.5 > 1.5: stop.
    pairs = torch.full((4, 4), 0.25, dtype=torch.float64)
    result = astar_search(Oracle([[0.25, 1.0], [0.5, 2.0]], pairs), 2, 2, 1.5)
    assert result.pruned == [(0, 0), (1, 0)]
    assert [p["cost"] for p in result.iterations] == [0.25, 1.0, 2.5]
    assert statuses(result.iterations[0]) == {
        "L0 H0": "pruned",
        "L1 H0": "searched",
        "L0 H1": "searched",
        "L1 H1": "eliminated",
    }
    assert result.budget_used == 1.0 and result.final_metric == 99.0
    assert result.evaluations == 1 + 4 + 2 + 1 and result.stop_reason == "over_budget"


def test_figure_7_example_with_its_numbers() -> None:
    # Figure 7: budget 20; the least cost 5 is pruned and 20 - 5 = 15 is left. The heads that
    # stay contribute I_y = E_y - C_x = 2, 3, 4, 5 (costs 7, 8, 9, 10), sum 14 <= 15; the next
    # contributes 6 (cost 11), 14 + 6 > 15, so it and the rest (7 and 9: costs 12 and 14) are
    # eliminated. Without the - C_x term (line 20) only 7 and 8 would fit (7 + 8 = 15).
    costs = {1: 7.0, 2: 8.0, 3: 9.0, 4: 10.0, 5: 11.0, 6: 12.0, 7: 14.0}
    assert split_by_budget(costs, 5.0, 20.0 - 5.0) == ([1, 2, 3, 4], [5, 6, 7])
    assert split_by_budget(costs, 5.0, 13.9) == ([1, 2, 3], [4, 5, 6, 7])
    assert split_by_budget({}, 5.0, 1.0) == ([], [])
    # Negative costs estimate as 0 (line 19: non-negative estimates).
    assert split_by_budget({1: -3.0, 2: 0.5}, 0.0, 0.4) == ([1], [2])
    result = astar_search(Oracle([[5.0, 7.0, 8.0, 9.0], [10.0, 11.0, 12.0, 14.0]]), 2, 4, 20.0)
    first = result.iterations[0]
    assert first["budget_remaining"] == 15.0 and first["cost"] == 5.0
    assert statuses(first) == {
        "L0 H0": "pruned",
        "L0 H1": "searched",
        "L0 H2": "searched",
        "L0 H3": "searched",
        "L1 H0": "searched",
        "L1 H1": "eliminated",
        "L1 H2": "eliminated",
        "L1 H3": "eliminated",
    }
    assert [c.get("increment") for c in first["candidates"]] == [None, 2, 3, 4, 5, 6, 7, 9]
    # Iteration 2 (costs from A: 12, 13, 14, 15): prune L0H1, 8 left, 1 + 2 + 3 fit. Iteration
    # 3 (20, 21, 22): prune L0H2 (20 <= 20), 0 left; L0H3 and L1H0 (1, 2) are eliminated.
    assert result.pruned == [(0, 0), (0, 1), (0, 2)] and result.budget_used == 20.0
    assert [p["cost"] for p in result.iterations] == [5.0, 12.0, 20.0]
    assert result.evaluations == 1 + 8 + 4 + 3 and result.stop_reason == "search_space_empty"


def test_heads_pruned_above_the_baseline_use_no_budget() -> None:
    # The Figure 8c shape: removing L0H0 lifts the metric to 101, removing L0H1 and L0H2 then
    # lowers it by .6 each. Costs from A: iteration 2 sees L0H1 at -.4 (clamped to 0, no budget
    # used, metric 100.4), iteration 3 L0H2 at .2. Local greedy with budget .5 prunes all three
    # and uses .2; chaining costs from the last model would stop at .6 > .5 after one head.
    oracle = Oracle([[-1.0, 0.6, 0.6]])
    local = local_search(oracle, 1, 3, 0.5)
    assert local.pruned == [(0, 0), (0, 1), (0, 2)]
    assert [p["budget_used"] for p in local.iterations] == [0.0, 0.0, pytest.approx(0.2)]
    assert local.budget_used == pytest.approx(0.2) and local.final_metric == pytest.approx(99.8)
    # A* with budget 1.2 (contributions .6 + .6 fit in iteration 1): the same three heads, and
    # the budget used is the final drop .2, not the 1.2 that summed increments would charge.
    astar = astar_search(Oracle([[-1.0, 0.6, 0.6]]), 1, 3, 1.2)
    assert astar.pruned == [(0, 0), (0, 1), (0, 2)]
    assert [p["budget_used"] for p in astar.iterations] == [0.0, 0.0, pytest.approx(0.2)]
    assert [p["budget_remaining"] for p in astar.iterations][:2] == [1.2, 1.2]
    assert zero_budget_point(astar.iterations) == (2, pytest.approx(100.4))
    # The head with the largest gain goes first (argmin of raw costs, line 7), not the lowest
    # index among the heads that cost nothing.
    gains = astar_search(Oracle([[-0.5, -2.0, 1.0]]), 1, 3, 0.0)
    assert gains.pruned[0] == (0, 1)


def test_negative_costs_are_clamped_and_the_budget_counts_from_the_baseline() -> None:
    # Removing L0H0 improves the metric by 1. Budget .5. Iteration 1: costs -1, .5, 3; prune
    # L0H0 (C_x clamped to 0, metric 101), .5 left; .5 fits exactly (<=), 3 is eliminated.
    # Iteration 2: L0H1 costs 100 - 100.5 = -.5 from A: pruned with no budget used.
    result = astar_search(Oracle([[-1.0, 0.5, 3.0]]), 1, 3, 0.5)
    first = result.iterations[0]
    assert first["candidates"][0] == {
        "heads": [[0, 0]],
        "label": "L0 H0",
        "cost": -1.0,
        "metric": 101.0,
        "status": "pruned",
    }
    assert first["cost"] == 0.0 and first["budget_used"] == 0.0
    assert statuses(first) == {"L0 H0": "pruned", "L0 H1": "searched", "L0 H2": "eliminated"}
    assert result.pruned == [(0, 0), (0, 1)]
    assert result.final_metric == 100.5 and result.budget_used == 0.0
    assert result.iterations[-1]["budget_remaining"] == 0.5
    assert result.evaluations == 5


def test_zero_budget_prunes_only_free_heads() -> None:
    # Costs 0, .5, 0, 1 and no budget: L0H0 (tie with L0H2 at 0, lower index) is pruned; the
    # prefix keeps L0H2 (cumulative 0 <= 0); L0H1 and L0H3 are eliminated; L0H2 goes next.
    for search in (astar_search, local_search):
        result = search(Oracle([[0.0, 0.5, 0.0, 1.0]]), 1, 4, 0.0)
        assert result.pruned == [(0, 0), (0, 2)]
        assert result.budget_used == 0.0 and result.final_metric == 100.0
    astar = astar_search(Oracle([[0.0, 0.5, 0.0, 1.0]]), 1, 4, 0.0)
    assert statuses(astar.iterations[0]) == {
        "L0 H0": "pruned",
        "L0 H2": "searched",
        "L0 H1": "eliminated",
        "L0 H3": "eliminated",
    }
    assert astar.evaluations == 1 + 4 + 1 and astar.stop_reason == "search_space_empty"
    nothing = astar_search(Oracle([[0.5, 1.0]]), 1, 2, 0.0)
    assert nothing.pruned == [] and nothing.mask.all() and nothing.stop_reason == "over_budget"
    assert nothing.iterations[0]["pruned"] == [] and nothing.iterations[0]["cost"] == 0.5


def test_budget_larger_than_everything_prunes_all_heads_unless_a_minimum_binds() -> None:
    everything = astar_search(Oracle(ADDITIVE), 2, 3, 100.0)
    assert not everything.mask.any() and everything.final_metric == 92.125
    assert everything.evaluations == 1 + 6 + 5 + 4 + 3 + 2 + 1
    # With one head per layer kept: after L0H2, L1H1, L0H0 layer 0 is down to L0H1, which is
    # eliminated in iteration 3; after L1H0 in iteration 4, L1H2 is too.
    kept = astar_search(Oracle(ADDITIVE), 2, 3, 100.0, min_heads_per_layer=1)
    assert kept.pruned == [(0, 2), (1, 1), (0, 0), (1, 0)]
    assert kept.mask.tolist() == [[False, True, False], [False, False, True]]
    assert statuses(kept.iterations[2]) == {
        "L0 H0": "pruned",
        "L1 H0": "searched",
        "L0 H1": "eliminated",
        "L1 H2": "searched",
    }
    assert statuses(kept.iterations[3]) == {"L1 H0": "pruned", "L1 H2": "eliminated"}
    assert kept.evaluations == 1 + 6 + 5 + 4 + 2
    untouchable = astar_search(Oracle(ADDITIVE), 2, 3, 100.0, min_heads_per_layer=3)
    assert untouchable.mask.all() and untouchable.iterations == [] and untouchable.evaluations == 1


def test_global_search_removes_whole_columns() -> None:
    # Column costs: H0 .5, H1 2.5, H2 1.25, H3 5. Budget 2: prune H0 (1.5 left), then H2
    # (.25 left); then H1 (2.5) and H3 (5) are over: stop. 1 + 4 + 3 + 2 = 10 evaluations.
    costs = [[0.25, 1.0, 0.5, 2.0], [0.25, 0.5, 0.5, 2.0], [0.0, 1.0, 0.25, 1.0]]
    result = global_search(Oracle(costs), 3, 4, 2.0)
    assert result.mask.tolist() == [[False, True, False, True]] * 3
    assert result.pruned == [(0, 0), (1, 0), (2, 0), (0, 2), (1, 2), (2, 2)]
    assert result.budget_used == 1.75 and result.final_metric == 98.25
    assert result.evaluations == 10 and result.stop_reason == "over_budget"
    first = result.iterations[0]
    assert first["algorithm"] == "global" and first["pruned"] == [[0, 0], [1, 0], [2, 0]]
    assert first["candidates"][0]["label"] == "H0, all layers"
    assert [c["cost"] for c in first["candidates"]] == [0.5, 1.25, 2.5, 5.0]
    assert first["candidates"][1]["heads"] == [[0, 2], [1, 2], [2, 2]]
    assert [c["status"] for c in result.iterations[-1]["candidates"]] == ["eliminated"] * 2
    # Three heads per layer must stay: one column can go, then none fits.
    capped = global_search(Oracle(costs), 3, 4, 100.0, min_heads_per_layer=3)
    assert capped.mask.tolist() == [[False, True, True, True]] * 3
    assert capped.evaluations == 5 and capped.stop_reason == "search_space_empty"


def expected_trial(
    oracle: Oracle, shape: tuple[int, int], budget: float, seed: int, minimum: int = 0
) -> list[list[int]]:
    """Reference walk of one random trial: the seeded order, skipping full layers."""
    order = torch.randperm(shape[0] * shape[1], generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(shape, dtype=torch.bool)
    baseline, pruned = oracle(mask), []
    for layer, head in (divmod(index, shape[1]) for index in order.tolist()):
        if int(mask[layer].sum()) <= minimum:
            continue
        candidate = mask.clone()
        candidate[layer, head] = False
        if baseline - oracle(candidate) > budget:
            break
        mask = candidate
        pruned.append([layer, head])
    return pruned


RANDOM_COSTS = [[0.25, 0.5, 1.0, 0.125], [0.75, 0.25, 0.5, 2.0], [0.125, 1.5, 0.25, 0.5]]


def test_random_trials_follow_seeded_orders_within_the_budget() -> None:
    oracle = Oracle(RANDOM_COSTS)
    seen: list[dict[str, Any]] = []
    trials = random_budget_trials(oracle, 3, 4, 2.0, trials=6, seed=5, on_trial=seen.append)
    # baseline + one evaluation per accepted head + the one that broke the budget (if any)
    steps = [t["heads_pruned"] + (t["heads_pruned"] < 12) for t in trials]
    assert oracle.calls == 1 + sum(steps)
    assert seen == trials and [t["trial"] for t in trials] == list(range(6))
    reference = Oracle(RANDOM_COSTS)
    for trial in trials:
        assert trial["seed"] == 5 + trial["trial"]
        assert trial["pruned"] == expected_trial(reference, (3, 4), 2.0, trial["seed"])
        assert trial["heads_pruned"] == len(trial["pruned"])
        assert trial["budget_used"] == pytest.approx(100.0 - trial["metric"])
        assert trial["budget_used"] <= 2.0
        mask = torch.ones(3, 4, dtype=torch.bool)
        for layer, head in trial["pruned"]:
            mask[layer, head] = False
        assert trial["metric"] == reference(mask)
    assert len({len(t["pruned"]) for t in trials}) > 1  # a distribution, not one answer
    assert random_budget_trials(Oracle(RANDOM_COSTS), 3, 4, 2.0, trials=6, seed=5) == trials
    other = random_budget_trials(Oracle(RANDOM_COSTS), 3, 4, 2.0, trials=6, seed=6)
    assert [t["seed"] for t in other[:5]] == [t["seed"] for t in trials[1:]]
    assert [t["pruned"] for t in other[:5]] == [t["pruned"] for t in trials[1:]]
    assert [t["pruned"] for t in other] != [t["pruned"] for t in trials]
    lockstep = Oracle(RANDOM_COSTS)
    batched = random_budget_trials(
        lockstep, 3, 4, 2.0, trials=6, seed=5, evaluate_many=lockstep.many
    )
    assert batched == trials
    assert lockstep.calls == oracle.calls and lockstep.batch_calls == 1 + max(steps)


def test_random_trials_skip_heads_of_full_layers_and_may_go_above_baseline() -> None:
    costs = [[-1.0, 0.5], [0.5, -0.5]]
    trials = random_budget_trials(Oracle(costs), 2, 2, 0.0, trials=8, min_heads_per_layer=1)
    reference = Oracle(costs)
    for trial in trials:
        assert trial["pruned"] == expected_trial(reference, (2, 2), 0.0, trial["seed"], 1)
        layers = [layer for layer, _ in trial["pruned"]]
        assert len(layers) == len(set(layers))  # at most one head per layer
        assert trial["metric"] >= 100.0 and trial["budget_used"] == 0.0
    assert max(t["heads_pruned"] for t in trials) == 2


def random_oracle(seed: int, n_layers: int, n_heads: int) -> Oracle:
    generator = torch.Generator().manual_seed(seed)
    size = n_layers * n_heads
    costs = torch.rand(n_layers, n_heads, generator=generator, dtype=torch.float64) * 2.5 - 0.5
    pairs = torch.rand(size, size, generator=generator, dtype=torch.float64) * 0.9 - 0.3
    return Oracle(costs.tolist(), pairs)


@pytest.mark.parametrize("seed", range(25))
def test_metric_drop_never_exceeds_the_budget_used(seed: int) -> None:
    generator = torch.Generator().manual_seed(1000 + seed)
    budget = float(torch.rand(1, generator=generator)) * 4.0
    minimum = seed % 3
    for name, search in SEARCHES.items():
        oracle = random_oracle(seed, 3, 4)
        result = search(oracle, 3, 4, budget, min_heads_per_layer=minimum)
        assert result.evaluations == oracle.calls, name
        assert result.budget_used == max(0.0, result.baseline - result.final_metric), name
        assert result.budget_used <= budget + 1e-9, name
        assert result.final_metric == pytest.approx(oracle(result.mask)), name
        assert removed(result.mask) == set(result.pruned), name
        assert bool((result.mask.sum(dim=1) >= minimum).all()), name
        for payload in result.iterations:
            costs = [c["cost"] for c in payload["candidates"]]
            assert costs == sorted(costs), name
            assert payload["budget_used"] == max(0.0, result.baseline - payload["metric"])
            assert payload["budget_remaining"] == pytest.approx(budget - payload["budget_used"])
            if payload["pruned"]:
                assert payload["cost"] == max(0.0, costs[0]) <= budget + 1e-9
                # Figure 8c: while the metric is at or above A no budget is used.
                if payload["metric"] >= result.baseline:
                    assert payload["budget_used"] == 0.0
        batched_oracle = random_oracle(seed, 3, 4)
        batched = search(
            batched_oracle,
            3,
            4,
            budget,
            min_heads_per_layer=minimum,
            evaluate_many=batched_oracle.many,
        )
        assert batched.iterations == result.iterations and batched.pruned == result.pruned
        assert batched_oracle.batch_calls == 1 + len(result.iterations)
    trials = random_budget_trials(
        random_oracle(seed, 3, 4), 3, 4, budget, trials=5, seed=seed, min_heads_per_layer=minimum
    )
    assert all(t["budget_used"] <= budget + 1e-9 for t in trials)


@pytest.mark.parametrize("name", [*SEARCHES, "random"])
def test_should_stop_raises_job_cancelled(name: str) -> None:
    for allowed in (0, 1, 5):
        polls = iter(range(1000))

        def stop(a: int = allowed, p: Any = polls) -> bool:
            return next(p) >= a

        with pytest.raises(JobCancelled):
            if name == "random":
                random_budget_trials(Oracle(ADDITIVE), 2, 3, 2.0, should_stop=stop)
            else:
                SEARCHES[name](Oracle(ADDITIVE), 2, 3, 2.0, should_stop=stop)


def test_bad_arguments_say_how_to_fix() -> None:
    with pytest.raises(ValueError, match="budget must be a finite number >= 0"):
        astar_search(Oracle(ADDITIVE), 2, 3, -1.0)
    with pytest.raises(ValueError, match=r"between 0 and the heads per layer \(3\)"):
        local_search(Oracle(ADDITIVE), 2, 3, 1.0, min_heads_per_layer=4)
    with pytest.raises(ValueError, match="Trials must be at least 1"):
        random_budget_trials(Oracle(ADDITIVE), 2, 3, 1.0, trials=0)
    with pytest.raises(ValueError, match="one per mask"):
        astar_search(Oracle(ADDITIVE), 2, 3, 1.0, evaluate_many=lambda masks: [1.0])
    with pytest.raises(ValueError, match="NaN or infinite"):
        astar_search(lambda mask: float("nan"), 2, 3, 1.0)


# --- registered methods ------------------------------------------------------------------------

METHODS = ("astar", "local_greedy", "global_heads", "random_budget")


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The real evaluators the methods build, each with the anchors it was given."""
    built: list[Any] = []
    real_build = astar_module.build_evaluator

    def build(
        context: PruningContext, config: Any, on_evaluation: Callable[[int], None] | None = None
    ) -> Any:
        evaluator = real_build(context, config, on_evaluation)
        evaluator.anchors = []
        set_anchor = evaluator.set_anchor

        def record(mask: torch.Tensor) -> None:
            evaluator.anchors.append(mask.clone())
            set_anchor(mask)

        evaluator.set_anchor = record
        built.append(evaluator)
        return evaluator

    monkeypatch.setattr(astar_module, "build_evaluator", build)
    return built


def test_registry_lists_the_four_search_methods() -> None:
    for name in METHODS:
        method = get_method(name)
        assert method.granularity == "head" and "http" in method.paper
        assert "2110.15225" in (method.__doc__ or "")
        json.dumps(method.config_class().to_dict())
    assert get_method("astar").title == "A* search"
    assert get_method("random_budget").config_class().trials == 100  # Figures 9-10
    assert get_method("astar").config_class(budget=2).budget == 2.0


def test_config_errors_say_how_to_fix() -> None:
    config_class = get_method("astar").config_class
    with pytest.raises(ValueError, match=r"Budget \(metric points\) must be between 0.0 and 100"):
        config_class(budget=-0.5)
    with pytest.raises(ValueError, match="Metric must be one of accuracy, mcc, f1"):
        config_class(metric="loss")
    with pytest.raises(ValueError, match="naive engine runs in fp32 only"):
        config_class(engine="naive", precision="bf16")
    with pytest.raises(ValueError, match="Trials must be between 1 and 1000"):
        get_method("random_budget").config_class(trials=0)
    with pytest.raises(ValueError, match=r"exceeds the heads per layer \(4\)"):
        run_method("astar", planted_context(), min_heads_per_layer=5)


def planted_context(**kwargs: Any) -> PruningContext:
    """small_bert on 48 texts labelled by its own predictions, its threshold centred.

    A freshly initialised classifier predicts one class whatever the heads: its logit margins are
    tiny. Moving the threshold to the median margin makes it predict each class for half of the
    texts, and those predictions become the labels: the baseline is 100 points, a head's first
    cost is the share of predictions its removal flips, and the margins are small enough that
    heads matter (a model without heads is back to 50).
    """
    model = small_bert(seed=0)
    rows = sentiment_rows(48)
    texts = tuple(text + " indeed" * (i % 5) for i, (text, _) in enumerate(rows))
    tokenizer = real_tokenizer()
    logits, _ = predict_logits(model, make_batches(tokenizer, texts, batch_size=8))
    margins = (logits[:, 1] - logits[:, 0]).sort().values
    with torch.no_grad():
        model.classifier.bias[1] -= float(margins[23] + margins[24]) / 2
    logits, _ = predict_logits(model, make_batches(tokenizer, texts, batch_size=8))
    labels = tuple(int(label) for label in logits.argmax(dim=1))
    assert sum(labels) == 24
    split = TextSplit(texts, labels)
    dataset = LabelledDataset("test", ("negative", "positive"), split, split, split, "fp", "test")
    batches = make_batches(tokenizer, texts, labels, batch_size=8)
    return PruningContext(
        model=model,
        tokenizer=tokenizer,
        dataset=dataset,
        score_split=split,
        batches=batches,
        device=torch.device("cpu"),
        **kwargs,
    )


def accuracy_without(context: PruningContext, mask: torch.Tensor) -> float:
    """Accuracy in points of a copy with the heads physically removed (independent path)."""
    logits, labels = predict_logits(remove_heads(context.model, mask), context.batches)
    assert labels is not None
    return 100.0 * float((logits.argmax(dim=1) == labels).double().mean())


def check_trace(context: PruningContext, result: Any, algorithm: str) -> list[Any]:
    trace = result.trace
    assert trace == tuple(context.trace)
    assert [event.step for event in trace] == list(range(len(trace)))
    assert [e.fraction for e in trace] == sorted(e.fraction for e in trace)
    assert trace[0].kind == "search_start" and trace[-1].kind == "search_done"
    assert trace[-1].fraction == 1.0
    start, done = trace[0].data, trace[-1].data
    assert start["algorithm"] == done["algorithm"] == algorithm
    assert start["metric"] == "accuracy" and start["eval_examples"] == 48
    assert start["n_layers"] == 2 and start["n_heads"] == 4 and start["budget"] == 30.0
    assert start["baseline"] == result.info["baseline"] == 100.0
    assert done["evaluations"] == result.info["evaluations"]
    assert done["final_metric"] == result.info["final_metric"]
    assert done["budget_used"] == result.info["budget_used"]
    assert removed(result.mask) == {tuple(head) for head in done["pruned"]}
    json.dumps([event.to_dict() for event in trace])
    json.dumps(result.info)
    return [event.data for event in trace if event.kind == "search_iteration"]


@pytest.mark.parametrize("name", METHODS[:3])
def test_greedy_methods_end_to_end(name: str, engines: list[Any]) -> None:
    context = planted_context()
    model = context.model
    state = {key: value.clone() for key, value in model.state_dict().items()}
    hooks = hook_count(model)
    result = run_method(name, context, budget=30.0)
    algorithm = {"astar": "astar", "local_greedy": "local", "global_heads": "global"}[name]
    iterations = check_trace(context, result, algorithm)
    evaluator, info = engines[0], result.info
    assert 0 < info["heads_pruned"] < 8  # the budget binds: some heads go, some stay
    assert info["heads_pruned"] == int((~result.mask).sum())
    assert iterations and iterations[-1]["mask"] == result.mask.tolist()
    assert info["iterations"] == len(iterations) and info["engine"] == "fast"
    assert info["evaluations"] == evaluator.n_evaluations == iterations[-1]["evaluations"]
    # Every candidate's metric, checked on a copy with its heads physically removed.
    mask = torch.ones(2, 4, dtype=torch.bool)
    for payload in iterations:
        for candidate in payload["candidates"]:
            trial = mask.clone()
            for layer, head in candidate["heads"]:
                trial[layer, head] = False
            assert candidate["metric"] == pytest.approx(accuracy_without(context, trial))
        for layer, head in payload["pruned"]:
            mask[layer, head] = False
    assert info["final_metric"] == pytest.approx(accuracy_without(context, result.mask))
    assert info["baseline"] - info["final_metric"] <= info["budget_used"] + 1e-9
    assert info["budget_used"] <= 30.0 + 1e-9
    pruned_iterations = [p for p in iterations if p["pruned"]]
    assert [a.tolist() for a in evaluator.anchors] == [p["mask"] for p in pruned_iterations]
    assert result.scores is not None and result.scores.shape == (2, 4)
    assert torch.equal(result.mask, select_lowest(result.scores, info["heads_pruned"]))
    assert hook_count(model) == hooks and not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_astar_on_the_model_saves_evaluations_over_local() -> None:
    astar = run_method("astar", planted_context(), budget=30.0)
    local = run_method("local_greedy", planted_context(), budget=30.0)
    assert astar.info["evaluations"] < local.info["evaluations"]
    first = next(e.data for e in astar.trace if e.kind == "search_iteration")
    assert {c["status"] for c in first["candidates"]} == {"pruned", "searched", "eliminated"}


def test_random_budget_method_returns_the_best_trial(engines: list[Any]) -> None:
    context = planted_context(seed=3)
    result = run_method("random_budget", context, budget=30.0, trials=7)
    check_trace(context, result, "random")
    events = [e.data for e in result.trace if e.kind == "random_trial"]
    trials = result.trace[-1].data["trials"]
    assert [e["trial"] for e in events] == list(range(7)) and all(e["trials"] == 7 for e in events)
    assert [{k: v for k, v in e.items() if k != "trials"} for e in events] == trials
    assert [t["seed"] for t in trials] == list(range(3, 10))
    assert len({t["heads_pruned"] for t in trials}) > 1
    best = max(trials, key=lambda t: (t["heads_pruned"], -t["budget_used"], -t["trial"]))
    assert result.info["best_trial"] == best["trial"] and result.scores is None
    assert removed(result.mask) == {tuple(head) for head in best["pruned"]}
    assert result.info["final_metric"] == pytest.approx(accuracy_without(context, result.mask))
    assert all(t["budget_used"] <= 30.0 + 1e-9 for t in trials)
    again = run_method("random_budget", planted_context(seed=3), budget=30.0, trials=7)
    assert again.trace[-1].data["trials"] == trials


def test_progress_and_stop_requests_reach_inside_a_batched_evaluation(
    monkeypatch: pytest.MonkeyPatch, engines: list[Any]
) -> None:
    monkeypatch.setattr(astar_module, "PROGRESS_INTERVAL_S", 0.0)
    context = planted_context()
    result = run_method("astar", context, budget=30.0)
    kinds = [event.kind for event in result.trace]
    assert kinds[0] == "search_start" and "progress" in kinds
    notes = [e for e in result.trace if e.kind == "progress" and e.data.get("note")]
    assert [e.message[:13] for e in notes] == ["expect about "]  # right after the start
    progress = [e for e in result.trace if e.kind == "progress" and not e.data.get("note")]
    # every evaluation after the baseline ticks once; the baseline's tick precedes the start
    assert len(progress) == result.info["evaluations"] - 1
    assert progress[0].message == (
        "iteration 1 · candidate 1/8 · 2 evaluations · budget 0.00 / 30.00"
    )
    first = kinds.index("search_iteration")
    assert kinds[1:first] == ["progress"] * 9  # the expected time, the 8 candidates
    # The bar moves while iteration 1's candidates are evaluated (before any head is pruned).
    inside = [e.fraction for e in result.trace[2:first]]
    assert inside == sorted(inside) and 0 < inside[0] < inside[-1] <= 1 / 8 + 1e-9
    engines.clear()
    stopping = planted_context(should_stop=lambda: bool(engines and engines[-1].n_evaluations >= 3))
    with pytest.raises(JobCancelled):
        run_method("astar", stopping, budget=30.0)
    assert engines[-1].n_evaluations == 3  # inside iteration 1's single evaluate_many call


@pytest.mark.parametrize("name", METHODS)
def test_methods_stop_when_asked(name: str) -> None:
    for allowed in (0, 3):
        polls = iter(range(10_000))
        context = planted_context(should_stop=lambda a=allowed, p=polls: next(p) >= a)
        with pytest.raises(JobCancelled):
            run_method(name, context, budget=50.0)


def test_build_evaluator_wires_the_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def recorder(kind: str) -> Callable[..., str]:
        def build(*args: Any, **kwargs: Any) -> str:
            calls.append((kind, args, kwargs))
            return kind

        return build

    monkeypatch.setattr(astar_module, "FastMaskEvaluator", recorder("fast"))
    monkeypatch.setattr(astar_module, "NaiveMaskEvaluator", recorder("naive"))
    config_class = get_method("astar").config_class
    context = planted_context()

    def tick(count: int) -> None:
        del count

    for precision, amp in (("auto", None), ("fp32", False), ("bf16", True)):
        config = config_class(metric="mcc", precision=precision)
        assert astar_module.build_evaluator(context, config, tick) == "fast"
        expected = {"metric": "mcc", "amp": amp, "on_evaluation": tick}
        assert calls[-1] == ("fast", (context.model, context.batches), expected)
    assert astar_module.build_evaluator(context, config_class(engine="naive")) == "naive"
    kind, args, kwargs = calls[-1]
    split = context.score_split
    assert kind == "naive"
    assert args == (context.model, context.tokenizer, split.texts, split.labels)
    assert kwargs == {"metric": "accuracy", "text_pairs": None, "on_evaluation": None}


@pytest.mark.parametrize("name", METHODS)
def test_methods_with_the_real_engines_agree(name: str) -> None:
    """FastMaskEvaluator and NaiveMaskEvaluator (pruning.fast_eval) give the same search."""
    config: dict[str, Any] = {"budget": 30.0}
    if name == "random_budget":
        config["trials"] = 3
    fast = run_method(name, planted_context(), **config)
    naive = run_method(name, planted_context(), **config, engine="naive")
    assert torch.equal(fast.mask, naive.mask)
    assert fast.info["final_metric"] == pytest.approx(naive.info["final_metric"])
    assert fast.info["evaluations"] == naive.info["evaluations"]
    assert fast.info["baseline"] - fast.info["final_metric"] <= fast.info["budget_used"] + 1e-9


@pytest.mark.parametrize("name", METHODS)
def test_model_with_removed_heads_is_refused(name: str) -> None:
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 0] = False
    with pytest.raises(ValueError, match="already has 1 of 12 heads removed"):
        run_method(name, tiny_context(remove_heads(build_tiny_model("bert"), mask)))


@pytest.mark.parametrize("metric", ["mcc", "f1"])
def test_other_metrics_with_the_real_engine(metric: str) -> None:
    result = run_method("astar", planted_context(), budget=30.0, metric=metric)
    assert result.info["baseline"] == pytest.approx(100.0) and result.info["metric"] == metric
    assert result.trace[0].data["metric"] == metric
    assert (
        result.info["baseline"] - result.info["final_metric"] <= result.info["budget_used"] + 1e-9
    )


class RiseThenFall(Oracle):
    """The Figure 8c shape: the metric rises with the first heads removed, then falls."""

    def __call__(self, mask: torch.Tensor) -> float:
        count = float((~mask).sum())
        return super().__call__(mask) + 1.5 * count - 0.12 * count * count


@pytest.mark.parametrize("seed", range(12))
def test_rise_then_fall_oracles_keep_the_guarantee(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    costs = (torch.rand(3, 4, generator=generator, dtype=torch.float64) * 0.8 - 0.2).tolist()
    budget = float(torch.rand(1, generator=generator)) * 3.0
    for name, search in SEARCHES.items():
        result = search(RiseThenFall(costs), 3, 4, budget)
        assert result.budget_used == max(0.0, 100.0 - result.final_metric) <= budget + 1e-9
        metrics = [p["metric"] for p in result.iterations if p["pruned"]]
        assert max(metrics) > 100.0, name  # the metric did rise above A
        for payload in result.iterations:
            if payload["pruned"] and payload["metric"] >= 100.0:
                assert payload["budget_used"] == 0.0 and payload["cost"] == 0.0, name
        point = zero_budget_point(result.iterations)
        assert point is not None and point[1] >= 100.0
        above = [p for p in result.iterations if p["pruned"] and p["metric"] >= 100.0]
        assert point[0] == len(above) or point[0] <= len(result.pruned)


@pytest.mark.parametrize("name", list(SEARCHES))
def test_an_interrupted_search_resumes_to_the_same_result(name: str) -> None:
    search = SEARCHES[name]
    budget = 2.5
    full = search(random_oracle(3, 3, 4), 3, 4, budget, min_heads_per_layer=1)
    assert len(full.iterations) >= 2

    class Killed(Exception):
        pass

    for stop_after in range(1, len(full.iterations)):
        saved: list[dict[str, Any]] = []

        def checkpoint(payload: dict[str, Any], saved: list[Any] = saved, k: int = stop_after):
            saved.append(json.loads(json.dumps(payload)))  # what a checkpoint file holds
            if len(saved) == k:
                raise Killed

        with pytest.raises(Killed):
            search(
                random_oracle(3, 3, 4), 3, 4, budget, min_heads_per_layer=1, on_iteration=checkpoint
            )
        fresh = random_oracle(3, 3, 4)
        new: list[dict[str, Any]] = []
        resumed = search(
            fresh, 3, 4, budget, min_heads_per_layer=1, resume=saved, on_iteration=new.append
        )
        assert resumed.mask.tolist() == full.mask.tolist()
        assert resumed.pruned == full.pruned and resumed.evaluations == full.evaluations
        assert resumed.iterations == full.iterations and resumed.stop_reason == full.stop_reason
        assert new == full.iterations[stop_after:]
        # No evaluation is repeated: the baseline and the finished iterations are not redone.
        assert fresh.calls == full.evaluations - saved[-1]["evaluations"]
    with pytest.raises(ValueError, match="another search"):
        search(random_oracle(3, 3, 4), 3, 4, budget + 1.0, resume=full.iterations[:1])
    done = search(
        random_oracle(3, 3, 4), 3, 4, budget, min_heads_per_layer=1, resume=full.iterations
    )
    assert done.iterations == full.iterations and done.mask.tolist() == full.mask.tolist()


class MemoryCheckpoint:
    """An in-memory checkpoint that round-trips through JSON, as the file store does."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.saves = 0

    def load(self) -> dict[str, Any] | None:
        return None if self.text is None else json.loads(self.text)

    def save(self, state: dict[str, Any]) -> None:
        self.text = json.dumps(state)
        self.saves += 1


def _without_progress(result: Any) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (event.kind, event.message, json.loads(json.dumps(event.data)))
        for event in result.trace
        if event.kind != "progress"
    ]


@pytest.mark.parametrize(
    ("name", "config", "unit"),
    [
        ("astar", {"budget": 30.0}, "search_iteration"),
        ("local_greedy", {"budget": 30.0}, "search_iteration"),
        ("random_budget", {"budget": 30.0, "trials": 5}, "random_trial"),
    ],
)
def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_result(
    name: str, config: dict[str, Any], unit: str
) -> None:
    from pruning.methods.base import Checkpoint

    plain = run_method(name, planted_context(seed=3), **config)
    units = sum(1 for event in plain.trace if event.kind == unit)
    assert units >= 3
    memory = MemoryCheckpoint()
    seen = {"units": 0}

    def on_event(event: Any) -> None:
        if event.kind == unit:
            seen["units"] += 1

    context = planted_context(
        seed=3,
        on_event=on_event,
        should_stop=lambda: seen["units"] >= 2,  # killed after its second iteration or trial
        checkpoint=Checkpoint(load=memory.load, save=memory.save),
    )
    with pytest.raises(JobCancelled):
        run_method(name, context, **config)
    assert memory.text is not None
    resumed_context = planted_context(
        seed=3, checkpoint=Checkpoint(load=memory.load, save=memory.save)
    )
    resumed = run_method(name, resumed_context, **config)
    assert torch.equal(resumed.mask, plain.mask)
    assert resumed.info == plain.info
    if plain.scores is not None:
        assert torch.equal(resumed.scores, plain.scores)
    assert _without_progress(resumed) == _without_progress(plain)
    # A checkpoint of another algorithm or budget is not used: the run starts afresh.
    other = (
        run_method(
            name,
            planted_context(seed=3, checkpoint=Checkpoint(load=memory.load, save=lambda s: None)),
            **{**config, "budget": 12.0},
        )
        if name != "random_budget"
        else None
    )
    if other is not None:
        fresh = run_method(name, planted_context(seed=3), **{**config, "budget": 12.0})
        assert torch.equal(other.mask, fresh.mask) and other.info == fresh.info


def test_expected_evaluations_follow_the_grid_budget_and_papers_table_3() -> None:
    from pruning.methods.search_core import expected_evaluations

    # 144 heads, budget 1: the paper's mean share .548 of 10,440 evaluations.
    assert expected_evaluations("astar", 144, 1.0) == (1 + round(0.548 * 10440), 10441)
    assert expected_evaluations("astar", 144, 3.0)[0] == 1 + round(0.699 * 10440)
    assert expected_evaluations("astar", 144, 9.0) == expected_evaluations("astar", 144, 3.0)
    low, mid, high = (expected_evaluations("astar", 72, b)[0] for b in (1.0, 2.0, 3.0))
    assert low < mid < high <= 1 + 72 * 73 // 2
    assert expected_evaluations("local", 72, 1.0) == (2629, 2629)
    assert expected_evaluations("random", 72, 1.0, trials=100) == (7201, 7201)
    assert expected_evaluations("astar", 2, 0.0)[0] >= 3  # never below one iteration


def test_a_search_states_its_expected_time_after_the_baseline() -> None:
    result = run_method("astar", planted_context(), budget=5.0)
    start = next(i for i, e in enumerate(result.trace) if e.kind == "search_start")
    expect = result.trace[start + 1]
    assert expect.kind == "progress" and expect.message.startswith("expect about ")
    assert "evaluations (at most 37)" in expect.message  # 8 heads: 1 + 8 x 9 / 2
