"""A* candidate evaluation on Ray actors (pruning.ray_eval) against the local fast engine.

Everything runs on the session's private Ray instance (``ray_cluster``: 2 CPUs, so 2 actors) with
the tiny 2 x 4-head BERT of ``test_astar.planted_context``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from test_astar import METHODS, planted_context

from pruning.executors import LOCAL, ExecutorSettings
from pruning.fast_eval import FastMaskEvaluator, NaiveMaskEvaluator
from pruning.jobs import JobCancelled
from pruning.methods import astar as astar_module
from pruning.methods.base import PruningContext
from pruning.ray_eval import RayMaskEvaluator, batches_from_payload, batches_payload
from test_methods import run_method


def random_masks(count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    masks = [torch.rand(2, 4, generator=generator) > 0.25 for _ in range(count)]
    return [*masks, torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool)]


def assert_dead(actors: tuple[Any, ...]) -> None:
    import ray

    assert actors, "the evaluator never started its actors"
    for actor in actors:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(actor.ready.remote(), timeout=60)


def anchors(evaluator: RayMaskEvaluator) -> list[Any]:
    import ray

    return ray.get([actor.anchor.remote() for actor in evaluator.actors])


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every evaluator the methods build."""
    evaluators: list[Any] = []
    real_build = astar_module.build_evaluator

    def build(context: PruningContext, config: Any, on_evaluation: Any = None) -> Any:
        evaluator = real_build(context, config, on_evaluation)
        evaluators.append(evaluator)
        return evaluator

    monkeypatch.setattr(astar_module, "build_evaluator", build)
    return evaluators


def test_batches_travel_as_safetensors_unchanged() -> None:
    batches = planted_context().batches
    again = batches_from_payload(batches_payload(batches))
    assert len(again) == len(batches)
    for before, after in zip(batches, again, strict=True):
        for name in ("input_ids", "attention_mask", "token_type_ids", "labels", "indices"):
            left, right = getattr(before, name), getattr(after, name)
            assert (left is None) == (right is None)
            if left is not None:
                assert torch.equal(left, right), name


def test_masks_are_dealt_round_robin() -> None:
    context = planted_context()
    settings = ExecutorSettings(kind="ray", address="local")
    evaluator = RayMaskEvaluator(context.model, context.batches, settings=settings)
    assert evaluator._plan(5, 2) == [(0, [0]), (1, [1]), (0, [2]), (1, [3]), (0, [4])]
    evaluator.masks_per_call = 2
    assert evaluator._plan(7, 3) == [(0, [0, 3]), (1, [1, 4]), (2, [2, 5]), (0, [6])]
    assert not evaluator.actors  # nothing starts before the first evaluation


def test_bad_arguments_say_how_to_fix() -> None:
    context = planted_context()
    with pytest.raises(ValueError, match="needs a Ray executor"):
        RayMaskEvaluator(context.model, context.batches, settings=LOCAL)
    settings = ExecutorSettings(kind="ray", address="local")
    with pytest.raises(ValueError, match="Unknown metric 'loss'"):
        RayMaskEvaluator(context.model, context.batches, settings=settings, metric="loss")
    with pytest.raises(ValueError, match="masks_per_call must be >= 1"):
        RayMaskEvaluator(context.model, context.batches, settings=settings, masks_per_call=0)
    evaluator = RayMaskEvaluator(context.model, context.batches, settings=settings)
    with pytest.raises(ValueError, match="pass a bool head mask"):
        evaluator.evaluate_many([torch.ones(2, 4)])
    with pytest.raises(ValueError):
        evaluator.set_anchor(torch.ones(3, 4, dtype=torch.bool))
    assert not evaluator.actors


def test_evaluate_many_equals_the_local_engine(ray_cluster: ExecutorSettings) -> None:
    context = planted_context()
    local = FastMaskEvaluator(context.model, context.batches)
    counts: list[int] = []
    masks = random_masks(12, seed=1)
    with RayMaskEvaluator(
        context.model, context.batches, settings=ray_cluster, on_evaluation=counts.append
    ) as remote:
        remote.set_anchor(masks[5])  # before the actors start: they get it at start
        local.set_anchor(masks[5])
        scores = remote.evaluate_many(masks)
        assert len(remote.actors) == 2  # one per CPU of the cluster
        assert anchors(remote) == [masks[5].tolist()] * 2
        assert scores == local.evaluate_many(masks)
        assert len(set(scores)) > 3  # the masks differ, so a reordering would show
        assert remote.n_evaluations == len(masks) and counts == list(range(1, len(masks) + 1))
        # A new anchor broadcast to every actor; candidates that differ from it in one head.
        anchor = masks[0]
        remote.set_anchor(anchor)
        local.set_anchor(anchor)
        assert anchors(remote) == [anchor.tolist()] * 2
        singles = []
        for layer, head in anchor.nonzero().tolist():
            single = anchor.clone()
            single[layer, head] = False
            singles.append(single)
        assert remote.evaluate_many(singles) == local.evaluate_many(singles)
        assert remote(masks[3]) == local(masks[3])
        assert remote.evaluate_many([]) == []
        assert remote.n_evaluations == len(masks) + len(singles) + 1
        actors = remote.actors
    assert_dead(actors)
    with pytest.raises(ValueError, match="was closed"):
        remote.evaluate_many(masks)


def comparable(result: Any) -> dict[str, Any]:
    """What must not depend on the executor: mask, scores, info, trace without progress."""
    events = [
        (event.kind, event.fraction, event.message, event.data)
        for event in result.trace
        if event.kind != "progress"
    ]
    info = {key: value for key, value in result.info.items() if key != "executor"}
    scores = None if result.scores is None else result.scores.tolist()
    return {"mask": result.mask.tolist(), "scores": scores, "info": info, "events": events}


@pytest.mark.parametrize("name", METHODS)
def test_methods_on_ray_match_the_local_executor(
    name: str, ray_cluster: ExecutorSettings, built: list[Any]
) -> None:
    config: dict[str, Any] = {"budget": 30.0}
    if name == "random_budget":
        config["trials"] = 3
    local = run_method(name, planted_context(), **config)
    remote = run_method(name, planted_context(executor=ray_cluster), **config)
    assert isinstance(built[0], FastMaskEvaluator) and isinstance(built[1], RayMaskEvaluator)
    assert comparable(remote) == comparable(local)
    assert local.info["executor"] == "local (this process)"
    assert remote.info["executor"] == ray_cluster.describe()
    assert built[1].n_evaluations == local.info["evaluations"]
    assert_dead(built[1].actors)  # closed when the run ended


def test_cancelling_inside_an_evaluation_kills_the_actors(
    ray_cluster: ExecutorSettings, built: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(astar_module, "PROGRESS_INTERVAL_S", 0.0)
    context = planted_context(
        executor=ray_cluster, should_stop=lambda: bool(built and built[-1].n_evaluations >= 3)
    )
    with pytest.raises(JobCancelled):
        run_method("astar", context, budget=30.0)
    evaluator = built[-1]
    assert isinstance(evaluator, RayMaskEvaluator)
    assert evaluator.n_evaluations == 3  # inside iteration 1's single evaluate_many call
    assert_dead(evaluator.actors)


def test_the_naive_engine_stays_local(ray_cluster: ExecutorSettings) -> None:
    context = planted_context(executor=ray_cluster)
    config_class = astar_module.SearchConfig
    naive = astar_module.build_evaluator(context, config_class(engine="naive"))
    assert isinstance(naive, NaiveMaskEvaluator)
    calls: list[int] = []
    tick: Callable[[int], None] = calls.append
    remote = astar_module.build_evaluator(context, config_class(precision="fp32"), tick)
    assert isinstance(remote, RayMaskEvaluator)
    assert (remote.settings, remote.amp, remote.on_evaluation) == (ray_cluster, False, tick)
    with astar_module.closing_evaluator(remote):
        assert not remote.actors  # actors start on the first evaluation only
    local_context = dataclasses.replace(context, executor=LOCAL)
    assert isinstance(
        astar_module.build_evaluator(local_context, config_class()), FastMaskEvaluator
    )
