"""The Paper claims logic: the plan at both scales, stored rows, the five verdicts, estimates."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cache.model_store import ModelStore, PreparedModel
from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from pruning.claim_rules import DOES_NOT_HOLD, HOLDS, UNCLEAR
from pruning.claims_estimate import ROUGH, StoredTiming, estimate_seconds
from pruning.claims_live import (
    CLAIM_IDS,
    HISP_CLAIM,
    claim_hisp,
    claim_plan,
    live_claims,
    planned_keys,
    stored_rows,
)
from pruning.pipeline import planned_key, run_pruning

SIZES = {"train": 8530, "validation": 1066, "test": 1066}


def fake_prepared(**info: Any) -> PreparedModel:
    """A model-store entry that is never loaded: the plan reads its info only."""
    base = {
        "model_spec": {"source": "default", "path": None, "revision": None},
        "data_spec": {"name": "rotten_tomatoes"},
        "split_sizes": SIZES,
        "model_label": "MiniLM",
        "data_description": "rotten_tomatoes (8,530 train)",
        "train_config": {"batch_size": 16},
        "train": {"steps": 100},
        "train_seconds": 48.0,
    }
    return PreparedModel(
        key="0123456789abcdef",
        path=Path("/nonexistent"),
        label_names=("neg", "pos"),
        metrics={},
        info={**base, **info},
    )


def _by(plan: list[Any], method: str, **config: Any) -> list[Any]:
    return [
        p
        for p in plan
        if p.request.method == method
        and all(p.request.config.get(k) == v for k, v in config.items())
    ]


def test_the_paper_plan_has_every_claims_rows_at_three_seeds() -> None:
    plan = claim_plan(fake_prepared(), scale="paper")
    assert len(plan) == 62
    assert Counter(p.group for p in plan) == {
        "deepcuts": 36,
        "sweep": 12,
        "mcap": 9,
        "gates": 3,
        "astar": 2,
    }
    assert {p.request.prepared_key for p in plan} == {"0123456789abcdef"}
    assert {p.request.eval_examples for p in plan} == {None}  # the whole test split
    astar, random = _by(plan, "astar"), _by(plan, "random_budget")
    assert [p.request.seed for p in astar + random] == [0, 0]
    assert astar[0].request.config == {"budget": 1.0}
    assert random[0].request.config == {"budget": 1.0, "trials": 100}
    assert astar[0].request.score_examples == 1066  # the whole validation split
    for method in ("hisp", "random"):
        rows = [p for p in _by(plan, method, sparsity=0.5) if p.request.protocol == "after"]
        assert sorted((p.request.recovery_steps, p.request.seed) for p in rows) == [
            (0, 0),
            (0, 1),
            (0, 2),
            (300, 0),
            (300, 1),
            (300, 2),
        ]
    gates = _by(plan, "autoattention")
    assert [p.request.config for p in gates] == [{"steps": 300, "fixed_sparsity": 0.5}] * 3
    before = [p for p in plan if p.request.protocol == "before"]
    assert sorted(Counter(p.request.method for p in before).items()) == [
        ("entropy", 3),
        ("mcap", 3),
        ("random", 3),
    ]
    deepcuts = _by(plan, "deepcuts", ratio_definition="bert_base_equivalent")
    assert len(deepcuts) == 36
    assert {p.request.config["compression_ratio"] for p in deepcuts} == {2.0, 3.0, 3.5, 4.0}
    batches = {p.request.config["strategy"]: p.request.config["grad_batches"] for p in deepcuts}
    assert batches == {"layer_mag_weight": 16, "cam_cut": 1000, "smooth_cut": 100}
    assert plan[0].label.endswith("· seed 0")


def test_the_quick_plan_is_smaller_and_seeds_can_be_chosen() -> None:
    plan = claim_plan(fake_prepared(), scale="quick")
    assert len(plan) == 44
    assert {p.request.eval_examples for p in plan} == {200}
    assert _by(plan, "random_budget")[0].request.config["trials"] == 10
    assert _by(plan, "astar")[0].request.score_examples == 64
    deepcuts = _by(plan, "deepcuts")
    assert {p.request.config["compression_ratio"] for p in deepcuts} == {2.0, 3.0}
    assert {p.request.config["grad_batches"] for p in deepcuts} == {4}
    one = claim_plan(fake_prepared(), scale="quick", seeds=(5,))
    assert len(one) == 2 + 4 + 1 + 3 + 6
    assert {p.request.seed for p in one} == {5}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": "huge"}, "scale must be one of paper, quick"),
        ({"seeds": ()}, "seeds must be one or more integers"),
        ({"seeds": (0, -1)}, "seeds must be one or more integers"),
    ],
)
def test_bad_plan_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        claim_plan(fake_prepared(), **kwargs)


def test_a_prepared_entry_without_its_specs_is_refused() -> None:
    broken = fake_prepared()
    del broken.info["data_spec"]
    with pytest.raises(ValueError, match="prepare it again"):
        claim_plan(broken)


def test_stored_rows_find_the_runs_that_ran_and_list_the_rest(tmp_path: Path) -> None:
    model, data = prepared_tiny_setup(tmp_path)
    prepared = ModelStore().find(model, data)[0]
    plan = claim_plan(prepared, scale="quick")
    chosen = [p for p in plan if p.label in ("Random heads 50% · seed 0", "HISP 50% · seed 0")]
    assert len(chosen) == 2
    records = [run_pruning(p.request) for p in chosen]
    store = RunStore()
    rows, missing = stored_rows(plan, store)
    assert sorted(r["key"] for r in rows) == sorted(r.key for r in records)
    assert len(missing) == len(plan) - 2
    assert not {p.label for p in chosen} & {p.label for p in missing}
    row = next(r for r in rows if r["method"] == "hisp")
    assert row["recovered"] is False and row["protocol"] == "after" and row["seed"] == 0
    assert row["accuracy"] is not None and row["group"] == "sweep"
    # The keys computed with one dataset load are the pipeline's own.
    samples = [*chosen, _by(plan, "astar")[0], _by(plan, "deepcuts")[0]]
    samples.append(next(p for p in plan if p.request.method == "mcap"))
    assert planned_keys(samples) == [planned_key(p.request) for p in samples]
    # Estimates: the same settings at another seed take the stored run's seconds.
    other_seed = next(p for p in plan if p.label == "Random heads 50% · seed 1")
    seconds, how = estimate_seconds(other_seed, store)
    stored = next(r for r in records if r.method == "random").info["total_seconds"]
    assert seconds == pytest.approx(stored) and "same settings" in how
    recovered = next(p for p in plan if p.label.startswith("Random heads 50% + 20 recovery"))
    seconds, how = estimate_seconds(recovered, store)
    assert "other settings" in how and seconds > stored
    astar = _by(plan, "astar")[0]
    seconds, how = estimate_seconds(astar, store)
    assert how.startswith(ROUGH) and "training speed" in how and seconds > 0


def test_estimates_fall_back_to_rough_and_scale_with_the_work() -> None:
    prepared = fake_prepared()
    plan = claim_plan(prepared, scale="paper")
    random = _by(plan, "random_budget")[0]
    fewer = dataclasses.replace(
        random, request=dataclasses.replace(random.request, config={"budget": 1.0, "trials": 10})
    )
    big, how = estimate_seconds(random, RunStore(), timings=[], prepared=prepared)
    small, _ = estimate_seconds(fewer, RunStore(), timings=[], prepared=prepared)
    assert how.startswith(ROUGH) and big > 5 * small > 0
    # 48 s for 100 steps of 16 texts: 0.01 s per text, three passes a training text.
    unknown = fake_prepared(train_seconds=None)
    _, how = estimate_seconds(random, RunStore(), timings=[], prepared=unknown)
    assert "0.02 s per text" in how
    full = random.request.method_config().to_dict()
    settings = random.request.run_settings()
    timings = [
        StoredTiming("random_budget", full, settings, 30.0),
        StoredTiming("random_budget", full, settings, 50.0),
        StoredTiming("random_budget", full, settings, 400.0),
        StoredTiming("astar", {"budget": 1.0}, settings, 9.0),
    ]
    assert estimate_seconds(random, RunStore(), timings=timings, prepared=prepared) == (
        50.0,
        "median of 3 stored run(s), same settings",
    )
    scaled, how = estimate_seconds(fewer, RunStore(), timings=timings, prepared=prepared)
    assert "3 stored random_budget run(s) with other settings" in how
    assert scaled == pytest.approx(50.0 * small / big)


def _row(method: str, seed: int, accuracy: float, **extra: Any) -> dict[str, Any]:
    config = extra.pop("config", {"sparsity": 0.5})
    return {
        "label": f"{method} {seed}",
        "key": f"{method}-{extra.get('protocol', 'after')}-{extra.get('recovered')}-{seed}",
        "method": method,
        "config": config,
        "seed": seed,
        "accuracy": accuracy,
        "dense_accuracy": 0.85,
        "heads_removed": 6,
        "heads": 12,
        "protocol": "after",
        "recovered": False,
        "recovery_steps": 0,
        "test_examples": 1066,
        "random_heads": None,
        **extra,
    }


def hisp_rows(hisp: list[float], random: list[float]) -> list[dict[str, Any]]:
    return [_row("hisp", s, a) for s, a in enumerate(hisp)] + [
        _row("random", s, a) for s, a in enumerate(random)
    ]


@pytest.mark.parametrize(
    ("hisp", "random", "verdict"),
    [
        ([0.80, 0.81, 0.82], [0.70, 0.705, 0.71], HOLDS),
        ([0.60, 0.61, 0.62], [0.70, 0.705, 0.71], DOES_NOT_HOLD),
        ([0.80, 0.60, 0.75], [0.70, 0.705, 0.71], UNCLEAR),
        ([0.80, 0.81], [0.70, 0.705], UNCLEAR),
    ],
)
def test_the_hisp_claim_is_judged_by_the_paired_rule(
    hisp: list[float], random: list[float], verdict: str
) -> None:
    claim = claim_hisp(hisp_rows(hisp, random))
    assert claim["id"] == HISP_CLAIM and claim["verdict"] == verdict
    assert claim["holds"] is (verdict == HOLDS)
    assert claim["comparisons"][0]["seeds"] == len(hisp)
    if len(hisp) < 3:
        assert "the rule needs 3" in claim["statement"]


def test_the_hisp_claim_ignores_recovered_rows_and_says_when_it_is_not_measured() -> None:
    rows = [_row("hisp", s, 0.8, recovered=True, recovery_steps=200) for s in range(3)]
    rows += [_row("random", s, 0.7) for s in range(3)]
    claim = claim_hisp(rows)
    assert claim["verdict"] is None and claim["holds"] is None
    assert claim["statement"].startswith("Not measured")


def every_claims_rows() -> list[dict[str, Any]]:
    rows = hisp_rows([0.80, 0.81, 0.82], [0.70, 0.705, 0.71])
    for method, base in (("autoattention", 0.83), ("hisp", 0.78), ("random", 0.74)):
        config = {"steps": 300, "fixed_sparsity": 0.5} if method == "autoattention" else None
        for seed in range(3):
            extra: dict[str, Any] = {"recovered": True, "recovery_steps": 200}
            if config:
                extra = {"config": config, "recovered": False}
            rows.append(_row(method, seed, base + 0.001 * seed, **extra))
    before = {"mcap": [0.82, 0.78, 0.81], "random": [0.80] * 3, "entropy": [0.79] * 3}
    for method, accuracies in before.items():
        for seed, accuracy in enumerate(accuracies):
            rows.append(
                _row(
                    method,
                    seed,
                    accuracy,
                    config={"sparsity": 0.2},
                    protocol="before",
                    recovered=True,
                )
            )
    rows.append(_row("astar", 0, 0.845, config={"budget": 1.0}, heads_removed=8))
    rows.append(
        _row(
            "random_budget",
            0,
            0.846,
            config={"budget": 1.0, "trials": 10},
            random_heads=[2, 3, 3, 4, 4, 4, 5, 5, 6, 3],
        )
    )
    return rows


def test_live_claims_gives_five_claims_with_their_papers_protocols_and_runs() -> None:
    prepared = fake_prepared()
    plan = claim_plan(prepared, scale="quick")
    rows = every_claims_rows()
    claims = live_claims(rows, plan=plan, prepared=prepared)
    assert [c["id"] for c in claims] == list(CLAIM_IDS)
    by_id = {c["id"]: c for c in claims}
    assert by_id["astar_vs_random"]["verdict"] == HOLDS  # 8 heads vs at most 6 of 10 orders
    assert by_id["autoattention_vs_hisp_random"]["verdict"] == HOLDS
    assert by_id["mcap_vs_random_entropy"]["verdict"] == UNCLEAR  # MCAP's differences change sign
    assert by_id["deepcuts_vs_layer_magnitude"]["verdict"] is None
    assert by_id[HISP_CLAIM]["verdict"] == HOLDS
    assert "Figures 9-10" in by_id["astar_vs_random"]["reference"]
    assert "Table I" in by_id["mcap_vs_random_entropy"]["reference"]
    assert "Michel" in by_id[HISP_CLAIM]["reference"]
    hisp = by_id[HISP_CLAIM]
    assert sorted(hisp["run_keys"]) == sorted(
        r["key"] for r in rows if r["method"] in ("hisp", "random") and not r["recovered"]
    )
    assert hisp["series"]["accuracy"]["HISP"] == {0: 0.80, 1: 0.81, 2: 0.82}
    assert hisp["numbers"][0] == {
        "series": "HISP",
        "mean": pytest.approx(0.81),
        "min": 0.80,
        "max": 0.82,
        "seeds": [0, 1, 2],
    }
    assert "seeds 0, 1, 2" in hisp["protocol"] and "200 of the 1,066 test texts" in hisp["protocol"]
    astar = by_id["astar_vs_random"]
    assert "10 random orders; the paper drew 100" in astar["fewer_than_paper"]
    assert any("64 of the 1,066 validation texts" in n for n in astar["fewer_than_paper"])
    assert astar["series"]["astar_heads"] == {0: 8} and len(astar["series"]["random_heads"]) == 10
    deepcuts = by_id["deepcuts_vs_layer_magnitude"]
    assert any(
        "Cam-Cut: 4 gradient batches; the paper used 1000" in n
        for n in deepcuts["fewer_than_paper"]
    )
    assert deepcuts["run_keys"] == []
    paper = live_claims(rows, plan=claim_plan(prepared, scale="paper"), prepared=prepared)
    assert all(not c["fewer_than_paper"] for c in paper)


def test_live_claims_with_one_seed_notes_that_the_rule_needs_three() -> None:
    prepared = fake_prepared()
    plan = claim_plan(prepared, scale="paper", seeds=(0,))
    claims = live_claims(hisp_rows([0.8], [0.7]), plan=plan, prepared=prepared)
    hisp = next(c for c in claims if c["id"] == HISP_CLAIM)
    assert hisp["verdict"] == UNCLEAR
    assert "1 seed(s); the paired rule needs 3" in hisp["fewer_than_paper"]
