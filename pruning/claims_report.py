"""The five paper claims judged on the rows of :mod:`pruning.claims_live`, with their context.

:func:`live_claims` runs :func:`pruning.bench_quality.evaluate_claims` (A* vs random,
AutoAttention vs HISP and random, MCAP vs random and entropy, DeepCuts vs LayerMagWeight) and
:func:`claim_hisp` (Michel et al.: HISP keeps more accuracy than random heads at 50%, without
fine-tuning), and adds to each claim its paper reference, the protocol (model, data, split sizes,
seeds, budgets or ratios), notes where the run is smaller than the paper, the run keys it used,
and the per-seed numbers its figure draws (:mod:`viz.claims`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pruning.bench_quality import (
    FULL,
    GATE_FIXED_SPARSITY,
    MCAP_SPARSITY,
    STRATEGY_NAMES,
    PlannedRun,
    evaluate_claims,
)
from pruning.claim_rules import (
    MIN_SEEDS,
    PAIRED_RULE,
    accuracy_by_seed,
    combine,
    holds_flag,
    paired,
)

if TYPE_CHECKING:
    from cache.model_store import PreparedModel

__all__ = [
    "CLAIM_IDS",
    "HISP_CLAIM",
    "REFERENCES",
    "claim_hisp",
    "claim_of",
    "live_claims",
]

HISP_CLAIM = "hisp_vs_random"
HISP_SPARSITY = 0.5
CLAIM_IDS = (
    "astar_vs_random",
    "autoattention_vs_hisp_random",
    "mcap_vs_random_entropy",
    "deepcuts_vs_layer_magnitude",
    HISP_CLAIM,
)
REFERENCES = {
    "astar_vs_random": "Parnami, Singh and Joshi, Pruning Attention Heads of Transformer Models "
    "Using A* Search, 2021, Figures 9-10",
    "autoattention_vs_hisp_random": "Zhang et al., AutoAttention: Automatic Attention Head "
    "Selection Through Differentiable Pruning, 2022, Table 1 (fixed global head sparsity of 50%)",
    "mcap_vs_random_entropy": "Rajapaksha and Crespi, Explainable Attention Pruning: A "
    "Meta-learning-based Approach, IEEE TAI 2024, Table I",
    "deepcuts_vs_layer_magnitude": "Grover, Gawri and Manku, DeepCuts: Single-Shot "
    "Interpretability based Pruning for BERT, 2022, Sections 4.3-4.4",
    HISP_CLAIM: "Michel, Levy and Neubig, Are Sixteen Heads Really Better than One?, NeurIPS "
    "2019, Section 4 (pruning by head importance; that paper is not in this repository, so the "
    "section is cited from memory); AutoAttention's Table 1 reports both HISP and Random at 50%",
}
PAPER_RANDOM_TRIALS = 100  # Parnami et al., Figures 9-10


def claim_of(
    method: str, config: Mapping[str, Any], *, protocol: str = "after", recovered: bool = False
) -> str | None:
    """The claim a row serves (see :data:`CLAIM_IDS`), or None."""
    if protocol == "before":
        return "mcap_vs_random_entropy"
    if method in ("astar", "random_budget"):
        return "astar_vs_random"
    if method == "deepcuts":
        return "deepcuts_vs_layer_magnitude"
    if method == "autoattention":
        return "autoattention_vs_hisp_random"
    if method in ("hisp", "random") and _same(config.get("sparsity"), HISP_SPARSITY):
        return "autoattention_vs_hisp_random" if recovered else HISP_CLAIM
    return None


def _row_claim(row: Mapping[str, Any]) -> str | None:
    return claim_of(
        str(row.get("method")),
        row.get("config") or {},
        protocol=str(row.get("protocol") or "after"),
        recovered=bool(row.get("recovered")),
    )


def _same(a: Any, b: float) -> bool:
    return isinstance(a, int | float) and abs(float(a) - b) < 1e-9


def _select(
    rows: Sequence[Mapping[str, Any]],
    method: str,
    *,
    protocol: str = "after",
    recovered: bool | None = None,
    sparsity: float | None = None,
) -> list[Mapping[str, Any]]:
    return [
        r
        for r in rows
        if r.get("method") == method
        and (r.get("protocol") or "after") == protocol
        and r.get("accuracy") is not None
        and (recovered is None or bool(r.get("recovered")) == recovered)
        and (sparsity is None or _same((r.get("config") or {}).get("sparsity"), sparsity))
    ]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def claim_hisp(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Michel et al.'s claim: HISP at 50% of heads keeps more accuracy than random heads at 50%.

    Both without fine-tuning after pruning (the sweep rows), paired by seed with
    :func:`pruning.claim_rules.paired` on test accuracy. The dict has the shape of
    :func:`pruning.bench_quality.evaluate_claims`' claims.
    """
    hisp = _select(rows, "hisp", recovered=False, sparsity=HISP_SPARSITY)
    random = _select(rows, "random", recovered=False, sparsity=HISP_SPARSITY)
    comparisons = []
    if hisp and random:
        mine, theirs = accuracy_by_seed(hisp), accuracy_by_seed(random)
        result = paired(mine, theirs)
        comparisons.append(
            {
                "method": "hisp",
                "accuracy": statistics.fmean(mine.values()),
                "baseline": "random",
                "baseline_accuracy": statistics.fmean(theirs.values()),
                "seeds": len(result["seeds"]),
                "differences": result["differences"],
                "verdict": result["verdict"],
                "reason": result["reason"],
                "holds": result["verdict"] == "holds",
            }
        )
    verdict = combine(c["verdict"] for c in comparisons)
    if verdict is None:
        statement = (
            "Not measured: the claim needs HISP and random heads at 50% of heads without "
            "fine-tuning after pruning."
        )
    else:
        c = comparisons[0]
        texts = hisp[0].get("test_examples")
        on = f"{texts:,} test texts" if isinstance(texts, int) else "the test texts"
        statement = (
            f"HISP at {HISP_SPARSITY:.0%} of heads, without fine-tuning, reached "
            f"{_pct(c['accuracy'])} test accuracy against random heads "
            f"{_pct(c['baseline_accuracy'])} (means over {c['seeds']} seed(s), on {on}): "
            f"{verdict}."
        )
        if c["seeds"] < MIN_SEEDS:
            statement += (
                f" Measured on {c['seeds']} seed(s); the rule needs {MIN_SEEDS} before it can "
                "say holds or does not hold."
            )
    return {
        "id": HISP_CLAIM,
        "title": "HISP vs random heads at 50%",
        "claim": "Pruning the heads HISP scores least important keeps more accuracy than "
        "pruning random heads at the same share (Michel, Levy and Neubig, 2019).",
        "rule": "HISP against random heads at 50% of heads, no fine-tuning after pruning, in "
        f"test accuracy: {PAIRED_RULE}.",
        "verdict": verdict,
        "holds": holds_flag(verdict),
        "comparisons": comparisons,
        "statement": statement,
    }


def _series(rows: Sequence[Mapping[str, Any]], claim_id: str) -> dict[str, Any]:
    """The per-seed numbers a claim's figure draws (plain dicts)."""
    if claim_id == "astar_vs_random":
        astar = _select(rows, "astar")
        random = _select(rows, "random_budget")
        return {
            "astar_heads": {int(r.get("seed") or 0): int(r["heads_removed"]) for r in astar},
            "random_heads": [int(h) for r in random for h in (r.get("random_heads") or [])],
            "budget": float(astar[0]["config"]["budget"]) if astar else None,
        }
    if claim_id == "deepcuts_vs_layer_magnitude":
        by: dict[str, dict[float, dict[int, float]]] = {}
        for r in _select(rows, "deepcuts"):
            config = r.get("config") or {}
            strategy = STRATEGY_NAMES.get(str(config.get("strategy")), str(config.get("strategy")))
            ratio = float(config.get("compression_ratio") or 0.0)
            by.setdefault(strategy, {}).setdefault(ratio, {})[int(r.get("seed") or 0)] = float(
                r["accuracy"]
            )
        return {"accuracy": by}
    picks: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "autoattention_vs_hisp_random": [
            ("AutoAttention", {"method": "autoattention"}),
            ("HISP + recovery", {"method": "hisp", "recovered": True, "sparsity": 0.5}),
            ("Random + recovery", {"method": "random", "recovered": True, "sparsity": 0.5}),
        ],
        "mcap_vs_random_entropy": [
            ("MCAP", {"method": "mcap", "protocol": "before"}),
            ("Random heads", {"method": "random", "protocol": "before"}),
            ("Attention entropy", {"method": "entropy", "protocol": "before"}),
        ],
        HISP_CLAIM: [
            ("HISP", {"method": "hisp", "recovered": False, "sparsity": HISP_SPARSITY}),
            ("Random heads", {"method": "random", "recovered": False, "sparsity": HISP_SPARSITY}),
        ],
    }
    chosen = [r for r in rows if _row_claim(r) == claim_id]
    return {
        "accuracy": {
            name: accuracy_by_seed(_select(chosen, **how)) for name, how in picks[claim_id]
        }
    }


def _spread(series: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Mean, min, max and seeds of every accuracy series (DeepCuts: per strategy and ratio)."""
    out = []
    for name, values in (series.get("accuracy") or {}).items():
        nested = values and isinstance(next(iter(values.values())), dict)
        groups = (
            {f"{name} ×{ratio:g}": v for ratio, v in values.items()} if nested else {name: values}
        )
        for label, by_seed in groups.items():
            if by_seed:
                numbers = list(by_seed.values())
                out.append(
                    {
                        "series": label,
                        "mean": statistics.fmean(numbers),
                        "min": min(numbers),
                        "max": max(numbers),
                        "seeds": sorted(by_seed),
                    }
                )
    return out


def _protocol(
    claim_id: str, entries: Sequence[Mapping[str, Any]], prepared: PreparedModel | None
) -> tuple[str, list[str]]:
    """The protocol text of one claim and the notes where it is smaller than the paper's."""
    info = prepared.info if prepared is not None else {}
    sizes = info.get("split_sizes") or {}
    where = (
        f"{info.get('model_label', 'the prepared classifier')} on "
        f"{info.get('data_description', 'its dataset')}"
    )
    if not entries:
        return f"{where}; no row of this claim is planned.", []
    seeds = sorted({int(e.get("seed") or 0) for e in entries})
    test = sizes.get("test")
    evaluated = entries[0].get("eval_examples") or entries[0].get("test_examples")
    if evaluated and test:
        evaluated = min(int(evaluated), int(test))
    tested = (
        f"{evaluated:,} of the {test:,} test texts"
        if evaluated and test and evaluated < test
        else f"the whole test split ({test:,} texts)"
        if test
        else "the test split"
    )
    parts = [where, f"seeds {', '.join(map(str, seeds))}", f"evaluated on {tested}"]
    notes = []
    if evaluated and test and evaluated < test:
        notes.append(f"evaluated on {evaluated:,} of the {test:,} test texts")
    first = entries[0]
    config = first.get("config") or {}
    if claim_id == "astar_vs_random":
        trials = max(int((e.get("config") or {}).get("trials") or 0) for e in entries)
        score = int(first.get("score_examples") or 0)
        validation = int(sizes.get("validation") or 0)
        parts.append(
            f"budget {float(config.get('budget', 0)):g} point(s), {trials} random orders, "
            f"searched on {min(score, validation) if validation else score:,} validation texts; "
            "at one seed (A* does not use it; the random orders are the spread)"
        )
        if trials < PAPER_RANDOM_TRIALS:
            notes.append(f"{trials} random orders; the paper drew {PAPER_RANDOM_TRIALS}")
        if validation and score < validation:
            notes.append(
                f"searched on {score:,} of the {validation:,} validation texts; the paper used "
                "the whole validation split"
            )
    else:
        if len(seeds) < MIN_SEEDS:
            notes.append(f"{len(seeds)} seed(s); the paired rule needs {MIN_SEEDS}")
    if claim_id == "autoattention_vs_hisp_random":
        steps = [int((e.get("config") or {}).get("steps") or 0) for e in entries]
        recovery = max(int(e.get("recovery_steps") or 0) for e in entries)
        parts.append(
            f"AutoAttention at a fixed {GATE_FIXED_SPARSITY:.0%} with {max(steps)} joint steps; "
            f"HISP and random heads at 50% with {recovery} recovery steps"
        )
        if max(steps) < FULL.gate_steps or recovery < FULL.recovery_steps:
            notes.append(
                f"{max(steps)} gate steps and {recovery} recovery steps, below the paper scale's "
                f"{FULL.gate_steps} and {FULL.recovery_steps}"
            )
    if claim_id == "mcap_vs_random_entropy":
        mcap = next((e.get("config") or {} for e in entries if e.get("method") == "mcap"), {})
        cap = int(mcap.get("max_train_examples") or 0)
        parts.append(
            f"MCAP, random heads and attention entropy at {MCAP_SPARSITY:.0%} of heads, pruned "
            "before fine-tuning with the classifier's own training settings; MCAP episodes of "
            f"{mcap.get('episode_size', '?')} texts over "
            f"{'every training text' if not cap else f'{cap:,} training texts'}"
        )
        train = int(sizes.get("train") or 0)
        if cap and train and cap < train:
            notes.append(f"MCAP trained on {cap:,} of the {train:,} training texts")
    if claim_id == HISP_CLAIM:
        parts.append(
            f"HISP and random heads at {HISP_SPARSITY:.0%} of heads, no fine-tuning after "
            f"pruning; HISP scored on {int(first.get('score_examples') or 0):,} validation texts"
        )
    if claim_id == "deepcuts_vs_layer_magnitude":
        from pruning.cli_bench_runs import PAPER_GRAD_BATCHES

        ratios = sorted(
            {float((e.get("config") or {}).get("compression_ratio") or 0.0) for e in entries}
        )
        batches: dict[str, int] = {}
        for e in entries:
            c = e.get("config") or {}
            batches[str(c.get("strategy"))] = int(c.get("grad_batches") or 0)
        names = ", ".join(STRATEGY_NAMES.get(s, s) for s in batches)
        parts.append(
            f"{names} at the paper's ratios {', '.join(f'{r:g}' for r in ratios)} (BERT-base "
            "equivalent), no re-fine-tuning; gradient batches "
            + ", ".join(f"{STRATEGY_NAMES.get(s, s)} {n}" for s, n in batches.items())
        )
        for strategy, n in batches.items():
            paper_n = PAPER_GRAD_BATCHES.get(strategy)
            if paper_n and n < paper_n:
                notes.append(
                    f"{STRATEGY_NAMES.get(strategy, strategy)}: {n} gradient batches; the paper "
                    f"used {paper_n}"
                )
    return "; ".join(parts) + ".", notes


def live_claims(
    rows: Sequence[Mapping[str, Any]],
    *,
    plan: Sequence[PlannedRun] = (),
    prepared: PreparedModel | None = None,
) -> list[dict[str, Any]]:
    """The five claims judged on ``rows``, in :data:`CLAIM_IDS` order.

    Each dict is :func:`pruning.bench_quality.evaluate_claims`' (or :func:`claim_hisp`'s) plus
    ``reference`` (paper, figure/table/section), ``protocol`` (model, data, split sizes, seeds,
    budgets/ratios: from ``plan`` when given, else from the rows), ``fewer_than_paper`` (notes),
    ``run_keys`` (the stored runs the claim used), ``series`` (per-seed numbers for the figures)
    and ``numbers`` (mean, min and max over the seeds of every series).
    """
    by_id = {claim["id"]: claim for claim in evaluate_claims(rows)}
    by_id[HISP_CLAIM] = claim_hisp(rows)
    entries: list[Mapping[str, Any]] = [p.to_dict() for p in plan] if plan else list(rows)
    claims = []
    for claim_id in CLAIM_IDS:
        claim = dict(by_id[claim_id])
        mine = [
            e
            for e in entries
            if claim_of(
                str(e.get("method")),
                e.get("config") or {},
                protocol=str(e.get("protocol") or "after"),
                recovered=bool(e.get("recovered") or e.get("recovery_steps")),
            )
            == claim_id
        ]
        protocol, notes = _protocol(claim_id, mine, prepared)
        series = _series(rows, claim_id)
        claim.update(
            reference=REFERENCES[claim_id],
            protocol=protocol,
            fewer_than_paper=notes,
            run_keys=[str(r["key"]) for r in rows if _row_claim(r) == claim_id and r.get("key")],
            series=series,
            numbers=_spread(series),
        )
        claims.append(claim)
    return claims
