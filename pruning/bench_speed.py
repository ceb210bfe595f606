"""Is the pruned model faster? Dense vs physically pruned latency, next to the FLOPs prediction.

The speed benchmark of issue #10 (``headscope bench speed``), as a Python API:
:func:`run_speed_bench` takes :class:`SpeedBenchOptions` and returns a JSON-ready dict.

1. **Latency.** For every head sparsity ``s`` the same number of heads, ``round(s * n_heads)``
   (half up), is removed from *every* layer, chosen per layer by a seeded permutation, and removed
   physically (:func:`pruning.heads.remove_heads`: smaller q/k/v and output projections). The same
   count in every layer on purpose: uneven per-layer removal leaves layers of different shapes,
   whose speed depends on which layers lose heads, and the table would then compare shapes rather
   than sparsities. For every batch size x sequence length, the dense model and every pruned model
   are timed in the same interleaved rounds (:func:`pruning.cost.interleaved_latency`, order
   rotating each round, fixed random tokens, full attention mask, device-synchronised), so machine
   drift hits all of them alike. Each row gives the median times, the measured speed-up
   ``median_dense / median_pruned`` with the min/max and quartiles of the per-round ratios, and
   the speed-up that the analytic FLOPs predict for the same shape
   (:func:`pruning.cost.flops_per_example`: ``flops(dense) / flops(pruned)``; per example, so the
   batch size does not change it). On CUDA every shape is timed twice: fp32 and bf16 autocast.
2. **A* engine ratio.** The fast engine (:class:`pruning.fast_eval.FastMaskEvaluator`) and the
   naive reference (:class:`pruning.fast_eval.NaiveMaskEvaluator`) run the same bounded prefix of
   an A* search (the first ``astar_iterations`` iterations, the baseline evaluation included) on
   the same validation texts; reported as evaluations per second of each and their ratio, with a
   check that both prefixes produced the identical trace (pruned heads, costs, candidates' metrics
   and statuses).
3. **Explanation ratio.** LIME on one test sentence with the batched predictor vs one text per
   forward (:mod:`pruning.cli_bench_explain`'s timing, same seed, so the same perturbed texts).

The model is the prepared classifier of the model and data (or ``prepared``) when one exists,
else the encoder with a fresh classification head (weights do not change latency), or, with
``random_config``, a randomly initialised model built from a config (no download): ``"minilm"``
(the default encoder's shape) or ``"bert-base"`` (12 x 12 heads, hidden 768).

The headline the issue asks for is the row at 50% of heads removed, CPU, fp32, batch 32, 128
tokens: :func:`headline` says whether its measured speed-up is within 25% of the FLOPs prediction,
i.e. ``|measured - predicted| <= 0.25 * predicted``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from pruning.adapters import model_config
from pruning.cost import (
    count_parameters,
    flops_per_example,
    interleaved_latency,
    max_sequence_length,
)
from pruning.data import DataSpec
from pruning.evaluate import model_device
from pruning.heads import head_grid, head_sparsity, remove_heads

log = logging.getLogger(__name__)

# on_progress(phase, done, total): phase is "latency", "astar" or "explain".
ProgressFn = Callable[[str, int, int], None]

RANDOM_CONFIGS = ("minilm", "bert-base")
PRECISIONS_CPU = ("fp32",)
PRECISIONS_CUDA = ("fp32", "bf16-autocast")
HEADLINE_SHAPE = {"sparsity": 0.5, "batch_size": 32, "seq_len": 128}
HEADLINE_TOLERANCE = 0.25

_FULL = {
    "sparsities": (0.25, 0.5, 0.75),
    "batch_sizes": (1, 8, 32),
    "seq_lens": (32, 128),
    "repeats": 20,
    "warmup": 2,
    "astar_iterations": 2,
    "astar_examples": 64,
    "lime_samples": 1000,
    "lime_repeats": 3,
}
_QUICK = {
    "sparsities": (0.5,),
    "batch_sizes": (1, 8),
    "seq_lens": (32,),
    "repeats": 5,
    "warmup": 1,
    "astar_iterations": 1,
    "astar_examples": 32,
    "lime_samples": 100,
    "lime_repeats": 1,
}


@dataclass(frozen=True)
class SpeedBenchOptions:
    """What ``headscope bench speed`` measures; ``None`` = the full (or ``quick``) default.

    Attributes:
        model: ``"default"``, a model folder or ``hub:ID`` (as the CLI's ``--model``).
        prepared: a prepared model's key (or unique prefix); overrides ``model`` and ``data``.
        data: the dataset: its prepared classifier is looked up, and it gives the A* texts and
            the LIME sentence.
        random_config: ``"minilm"`` or ``"bert-base"``: a random model built from a config.
        sparsities: head sparsities, each in (0, 1); full default 0.25, 0.5, 0.75 (quick: 0.5).
        batch_sizes: rows per forward, each >= 1; full 1, 8, 32 (quick: 1, 8).
        seq_lens: tokens per row, 1..the model's maximum; full 32, 128 (quick: 32).
        repeats: interleaved timed rounds per shape (full 20, quick 5); warmup: untimed rounds.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        skip_astar, skip_explain: leave out parts 2 and 3.
        astar_iterations: A* iterations timed per engine (full 2, quick 1).
        astar_examples: validation texts the engines score (full 64, quick 32).
        astar_budget: A*'s budget in accuracy points.
        lime_samples: LIME samples (full 1000, quick 100); lime_repeats: interleaved repeats.
        quick: the CI-sized plan (each value above that is ``None`` takes the quick default).
        seed: seed of the heads chosen, the random tokens, the texts and LIME.
    """

    model: str = "default"
    prepared: str | None = None
    data: DataSpec = field(default_factory=DataSpec)
    random_config: str | None = None
    sparsities: tuple[float, ...] | None = None
    batch_sizes: tuple[int, ...] | None = None
    seq_lens: tuple[int, ...] | None = None
    repeats: int | None = None
    warmup: int | None = None
    device: str = "auto"
    skip_astar: bool = False
    skip_explain: bool = False
    astar_iterations: int | None = None
    astar_examples: int | None = None
    astar_budget: float = 1.0
    lime_samples: int | None = None
    lime_repeats: int | None = None
    quick: bool = False
    seed: int = 0


@dataclass(frozen=True)
class SpeedPlan:
    """The resolved settings of one benchmark run (every default filled in, validated)."""

    sparsities: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    seq_lens: tuple[int, ...]
    repeats: int
    warmup: int
    astar: bool
    astar_iterations: int
    astar_examples: int
    astar_budget: float
    explain: bool
    lime_samples: int
    lime_repeats: int
    quick: bool
    seed: int


def _distinct(values: Sequence[Any], flag: str) -> tuple[Any, ...]:
    if len(values) == 0:
        raise ValueError(f"{flag} needs at least one value.")
    if len(set(values)) != len(values):
        raise ValueError(f"{flag} lists a value twice ({', '.join(map(str, values))}).")
    return tuple(values)


def resolve_plan(options: SpeedBenchOptions) -> SpeedPlan:
    """Fill in the full or quick defaults and check everything that needs no model.

    Raises:
        ValueError: a sparsity outside (0, 1), a batch size or sequence length below 1, repeats
            below 1, negative warm-up, fewer than 1 A* iteration or text, a negative budget,
            fewer than 10 LIME samples, an unknown random config, or a value listed twice.
    """
    defaults = _QUICK if options.quick else _FULL

    def pick(name: str) -> Any:
        value = getattr(options, name)
        return defaults[name] if value is None else value

    sparsities = _distinct(tuple(float(s) for s in pick("sparsities")), "--sparsities")
    for sparsity in sparsities:
        if not 0.0 < sparsity < 1.0:
            raise ValueError(
                f"--sparsities: each head sparsity must be strictly between 0 and 1 (got "
                f"{sparsity:g}); 0.5 removes half of the heads of every layer."
            )
    batch_sizes = _distinct(tuple(int(b) for b in pick("batch_sizes")), "--batch-sizes")
    if min(batch_sizes) < 1:
        raise ValueError(f"--batch-sizes: each batch size must be >= 1 (got {min(batch_sizes)}).")
    seq_lens = _distinct(tuple(int(n) for n in pick("seq_lens")), "--seq-lens")
    if min(seq_lens) < 1:
        raise ValueError(f"--seq-lens: each sequence length must be >= 1 (got {min(seq_lens)}).")
    checks = (
        ("--repeats", pick("repeats"), 1),
        ("--warmup", pick("warmup"), 0),
        ("--astar-iterations", pick("astar_iterations"), 1),
        ("--astar-examples", pick("astar_examples"), 1),
        ("--lime-samples", pick("lime_samples"), 10),
        ("--lime-repeats", pick("lime_repeats"), 1),
    )
    for flag, value, low in checks:
        if int(value) < low:
            raise ValueError(f"{flag} must be at least {low} (got {value}).")
    if not math.isfinite(options.astar_budget) or options.astar_budget < 0:
        raise ValueError(
            f"--astar-budget must be a finite number >= 0 accuracy points "
            f"(got {options.astar_budget})."
        )
    if options.random_config is not None:
        if options.random_config not in RANDOM_CONFIGS:
            raise ValueError(
                f"--random-config must be one of {', '.join(RANDOM_CONFIGS)} "
                f"(got {options.random_config!r})."
            )
        if options.prepared or options.model.strip() not in ("", "default"):
            raise ValueError(
                "--random-config builds its own random model: leave out --model and --prepared."
            )
    return SpeedPlan(
        sparsities=sparsities,
        batch_sizes=batch_sizes,
        seq_lens=seq_lens,
        repeats=int(pick("repeats")),
        warmup=int(pick("warmup")),
        astar=not options.skip_astar,
        astar_iterations=int(pick("astar_iterations")),
        astar_examples=int(pick("astar_examples")),
        astar_budget=float(options.astar_budget),
        explain=not options.skip_explain,
        lime_samples=int(pick("lime_samples")),
        lime_repeats=int(pick("lime_repeats")),
        quick=options.quick,
        seed=options.seed,
    )


def heads_removed_per_layer(n_heads: int, sparsity: float) -> int:
    """``round(sparsity * n_heads)``, rounded half up (0.5 of 12 heads -> 6, 0.5 of 3 -> 2).

    Raises:
        ValueError: when that removes no head or every head of a layer.
    """
    removed = math.floor(sparsity * n_heads + 0.5)
    if not 1 <= removed <= n_heads - 1:
        raise ValueError(
            f"Head sparsity {sparsity:g} removes {removed} of the {n_heads} heads of each layer; "
            f"choose sparsities that remove between 1 and {n_heads - 1} heads per layer "
            f"(between {0.5 / n_heads:.3f} and {1 - 0.5 / n_heads:.3f})."
        )
    return removed


def head_removal_mask(n_layers: int, n_heads: int, sparsity: float, seed: int = 0) -> torch.Tensor:
    """Bool ``(n_layers, n_heads)`` mask, **True = keep**, with the same number of heads removed
    in every layer (:func:`heads_removed_per_layer`), chosen per layer by a seeded permutation.
    """
    removed = heads_removed_per_layer(n_heads, sparsity)
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(n_layers, n_heads, dtype=torch.bool)
    for layer in range(n_layers):
        mask[layer, torch.randperm(n_heads, generator=generator)[:removed]] = False
    return mask


def check_plan_for_model(plan: SpeedPlan, model: nn.Module) -> None:
    """Refuse sequence lengths above the model's limit and sparsities it cannot express.

    Raises:
        ValueError: a sequence length above ``max_sequence_length(model)``, a sparsity that
            removes no head or every head of a layer, two sparsities that remove the same number
            of heads, or a model that already has heads removed.
    """
    if head_sparsity(model) > 0:
        raise ValueError(
            "This model already has heads removed; benchmark the unpruned model (its removed "
            "heads would make the layers uneven)."
        )
    limit = max_sequence_length(model)
    too_long = [n for n in plan.seq_lens if n > limit]
    if too_long:
        raise ValueError(
            f"--seq-lens: {too_long[0]} tokens is above the model's maximum of {limit}; "
            f"use sequence lengths up to {limit}."
        )
    n_heads = head_grid(model)[1]
    seen: dict[int, float] = {}
    for sparsity in plan.sparsities:
        removed = heads_removed_per_layer(n_heads, sparsity)
        if removed in seen:
            raise ValueError(
                f"--sparsities {seen[removed]:g} and {sparsity:g} both remove {removed} of the "
                f"{n_heads} heads of each layer; give sparsities that differ by whole heads."
            )
        seen[removed] = sparsity


@contextlib.contextmanager
def _precision(name: str, device: torch.device) -> Iterator[None]:
    """fp32 as the model is, or bf16 autocast (CUDA) around every timed forward."""
    if name == "fp32":
        yield
    elif name == "bf16-autocast":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        raise ValueError(f"Unknown precision {name!r}; use 'fp32' or 'bf16-autocast'.")


def latency_table(
    model: nn.Module,
    plan: SpeedPlan,
    *,
    precisions: Sequence[str] = PRECISIONS_CPU,
    on_progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """Dense vs physically pruned latency for every sparsity x batch size x sequence length.

    For each shape (and precision) the dense model and all pruned models are timed together in
    ``plan.repeats`` interleaved rounds after ``plan.warmup`` untimed ones, on the model's device.

    Returns:
        One row per precision x sparsity x batch size x sequence length, sorted in that order:
        the shape, ``heads_removed_per_layer``, ``dense_ms`` / ``pruned_ms`` (medians),
        ``speedup`` (``dense_ms / pruned_ms``), ``speedup_min`` / ``speedup_max`` /
        ``speedup_p25`` / ``speedup_p75`` over the per-round ratios, ``predicted_speedup`` (FLOPs),
        ``measured_over_predicted``, the FLOPs per example and both full latency results.
    """
    check_plan_for_model(plan, model)
    n_layers, n_heads = head_grid(model)
    device = model_device(model)
    pruned = [
        remove_heads(model, head_removal_mask(n_layers, n_heads, sparsity, plan.seed))
        for sparsity in plan.sparsities
    ]
    total = len(precisions) * len(plan.batch_sizes) * len(plan.seq_lens) * plan.repeats
    done = 0

    def on_round(_round: int, _repeats: int) -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress("latency", done, total)

    rows: list[dict[str, Any]] = []
    for precision in precisions:
        for batch_size in plan.batch_sizes:
            for seq_len in plan.seq_lens:
                log.info("timing %s, batch %d x %d tokens", precision, batch_size, seq_len)
                with _precision(precision, device):
                    results = interleaved_latency(
                        [model, *pruned],
                        batch_size=batch_size,
                        seq_len=seq_len,
                        repeats=plan.repeats,
                        warmup=plan.warmup,
                        seed=plan.seed,
                        on_round=on_round,
                    )
                dense, flops_dense = results[0], flops_per_example(model, seq_len)
                for sparsity, small, result in zip(
                    plan.sparsities, pruned, results[1:], strict=True
                ):
                    ratios = np.asarray(dense.times_ms) / np.asarray(result.times_ms)
                    flops_pruned = flops_per_example(small, seq_len)
                    measured = dense.median_ms / result.median_ms
                    predicted = flops_dense / flops_pruned
                    p25, p75 = np.percentile(ratios, [25, 75])
                    rows.append(
                        {
                            "device": str(device),
                            "precision": precision,
                            "sparsity": sparsity,
                            "heads_removed_per_layer": heads_removed_per_layer(n_heads, sparsity),
                            "heads_per_layer": n_heads,
                            "layers": n_layers,
                            "batch_size": batch_size,
                            "seq_len": seq_len,
                            "dense_ms": dense.median_ms,
                            "pruned_ms": result.median_ms,
                            "speedup": measured,
                            "speedup_min": float(ratios.min()),
                            "speedup_max": float(ratios.max()),
                            "speedup_p25": float(p25),
                            "speedup_p75": float(p75),
                            "predicted_speedup": predicted,
                            "measured_over_predicted": measured / predicted,
                            "flops_dense": flops_dense,
                            "flops_pruned": flops_pruned,
                            "dense_latency": dense.to_dict(),
                            "pruned_latency": result.to_dict(),
                        }
                    )
    order = {name: index for index, name in enumerate(precisions)}
    rows.sort(key=lambda r: (order[r["precision"]], r["sparsity"], r["batch_size"], r["seq_len"]))
    return rows


def headline(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The issue's headline: 50% of heads removed, CPU, fp32, batch 32, 128 tokens.

    Returns:
        ``{"measured", "predicted", "within_25_percent", ...}``; the three are ``None`` (and
        ``note`` says why) when this run did not time that shape on the CPU.
    """
    shape = {**HEADLINE_SHAPE, "device": "cpu", "precision": "fp32"}
    base: dict[str, Any] = {**shape, "tolerance": HEADLINE_TOLERANCE}
    row = next(
        (
            r
            for r in rows
            if r["device"].split(":")[0] == "cpu"
            and r["precision"] == "fp32"
            and math.isclose(r["sparsity"], HEADLINE_SHAPE["sparsity"])
            and r["batch_size"] == HEADLINE_SHAPE["batch_size"]
            and r["seq_len"] == HEADLINE_SHAPE["seq_len"]
        ),
        None,
    )
    if row is None:
        return {
            **base,
            "measured": None,
            "predicted": None,
            "within_25_percent": None,
            "note": "not measured in this run: it needs --device cpu with 0.5 among --sparsities, "
            "32 among --batch-sizes and 128 among --seq-lens",
        }
    measured, predicted = row["speedup"], row["predicted_speedup"]
    return {
        **base,
        "measured": measured,
        "measured_min": row["speedup_min"],
        "measured_max": row["speedup_max"],
        "predicted": predicted,
        "within_25_percent": abs(measured - predicted) <= HEADLINE_TOLERANCE * predicted,
        "note": "",
    }


class _PrefixDone(Exception):
    """Raised from ``on_iteration`` to stop an A* search after its timed prefix."""


def _trace_signature(payload: dict[str, Any]) -> dict[str, Any]:
    """What must agree between engines in one A* iteration."""
    return {
        "pruned": payload["pruned"],
        "cost": payload["cost"],
        "metric": payload["metric"],
        "candidates": [(c["label"], c["status"], c["metric"]) for c in payload["candidates"]],
    }


def _timed_prefix(
    evaluator: Any, grid: tuple[int, int], budget: float, iterations: int, tick: Callable[[], None]
) -> dict[str, Any]:
    from pruning.methods.search_core import astar_search

    trace: list[dict[str, Any]] = []

    def on_iteration(payload: dict[str, Any]) -> None:
        trace.append(_trace_signature(payload))
        tick()
        if len(trace) >= iterations:
            raise _PrefixDone
        # The next candidates differ from this iteration's mask (as bench astar does).
        evaluator.set_anchor(torch.tensor(payload["mask"], dtype=torch.bool))

    started = time.perf_counter()
    with contextlib.suppress(_PrefixDone):
        astar_search(
            evaluator,
            grid[0],
            grid[1],
            budget,
            evaluate_many=evaluator.evaluate_many,
            on_iteration=on_iteration,
        )
    seconds = time.perf_counter() - started
    evaluations = int(evaluator.n_evaluations)
    return {
        "seconds": seconds,
        "evaluations": evaluations,
        "iterations": len(trace),
        "evaluations_per_second": evaluations / seconds if seconds > 0 else None,
        "trace": trace,
    }


def astar_engine_ratio(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    iterations: int,
    budget: float,
    text_pairs: Sequence[str] | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Fast vs naive evaluator on the same first ``iterations`` A* iterations and texts.

    The fast engine runs first, then the naive one; both start from the unpruned mask and move
    their anchor after each iteration as ``headscope bench astar`` does. The search may end
    before ``iterations`` (search space empty or over budget); then both run to its end.

    Returns:
        ``fast`` / ``naive``: seconds, evaluations, iterations, evaluations per second (the
        baseline evaluation counted); ``ratio`` (fast evaluations/s over naive evaluations/s);
        ``identical_trace``; ``fast_bf16`` (the fast engine's default bf16 autocast on CUDA,
        where near-ties can flip and the traces may then differ).
    """
    from pruning.batching import make_batches
    from pruning.fast_eval import FastMaskEvaluator, NaiveMaskEvaluator

    device = model_device(model)
    grid = head_grid(model)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress("astar", done, 2 * iterations)

    batches = [
        batch.to(device)
        for batch in make_batches(
            tokenizer, list(texts), list(labels), batch_size=64, text_pairs=text_pairs
        )
    ]
    fast = FastMaskEvaluator(model, batches, metric="accuracy")
    naive = NaiveMaskEvaluator(
        model, tokenizer, list(texts), list(labels), metric="accuracy", text_pairs=text_pairs
    )
    runs = {
        "fast": _timed_prefix(fast, grid, budget, iterations, tick),
        "naive": _timed_prefix(naive, grid, budget, iterations, tick),
    }
    identical = runs["fast"]["trace"] == runs["naive"]["trace"]
    fast_rate, naive_rate = (runs[k]["evaluations_per_second"] for k in ("fast", "naive"))
    return {
        "examples": len(texts),
        "iterations_requested": iterations,
        "budget": budget,
        "metric": "accuracy",
        "fast": {k: v for k, v in runs["fast"].items() if k != "trace"},
        "naive": {k: v for k, v in runs["naive"].items() if k != "trace"},
        "ratio": fast_rate / naive_rate if fast_rate and naive_rate else None,
        "identical_trace": identical,
        "fast_bf16": device.type == "cuda",
    }


def explanation_ratio(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], *, samples: int, repeats: int, seed: int
) -> dict[str, Any]:
    """LIME batched vs one text per forward on the test sentence closest to 22 words.

    Reuses :mod:`pruning.cli_bench_explain` (same seed, interleaved repeats, medians). One small
    untimed LIME call goes first: the first LIME call in a process pays seconds of one-time set-up
    (imports, first fit), which would otherwise land on the batched run alone.
    """
    from pruning.cli_bench_explain import _sentence, _time_lime
    from pruning.explain import explain
    from pruning.predictor import BatchedPredictor

    sentence = _sentence(list(texts))
    started = time.perf_counter()
    explain(BatchedPredictor(model, tokenizer), sentence, method="lime", samples=10, seed=seed)
    warmup = time.perf_counter() - started
    loaded = SimpleNamespace(model=model, tokenizer=tokenizer)
    result = _time_lime(loaded, sentence, samples, repeats, seed)
    return {
        "sentence": sentence,
        "words": len(sentence.split()),
        "warmup_seconds": warmup,
        "repeats": repeats,
        **result,
    }


def random_model_config(name: str, label_names: Sequence[str] = ("0", "1")) -> Any:
    """A BERT config of the default encoder's shape (``"minilm"``) or BERT-base's, classes named
    ``label_names``."""
    from transformers import AutoConfig, BertConfig

    from pruning.models import default_model_path

    if name == "minilm":
        config = AutoConfig.from_pretrained(default_model_path(), trust_remote_code=False)
    elif name == "bert-base":
        # BertConfig's defaults are bert-base-uncased: 12 layers x 12 heads, hidden 768, FFN 3072.
        config = BertConfig()
    else:
        raise ValueError(
            f"--random-config must be one of {', '.join(RANDOM_CONFIGS)} (got {name!r})."
        )
    config.id2label = dict(enumerate(label_names))
    config.label2id = {label: index for index, label in enumerate(label_names)}
    return config


@dataclass
class BenchModel:
    """The classifier under test, its tokenizer, the data for A* / LIME and where it came from."""

    model: nn.Module
    tokenizer: Any
    dataset: Any
    description: str
    source: str


def load_bench_model(options: SpeedBenchOptions, device: torch.device) -> BenchModel:
    """The prepared classifier, else the encoder with a fresh head, else a random-config model.

    Raises:
        ValueError: an unknown prepared key, a model or dataset that cannot be loaded.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from cache.model_store import ModelStore
    from pruning.cli_common import parse_model_arg
    from pruning.data import load_dataset
    from pruning.models import default_model_path, load_classifier

    if options.random_config is not None:
        dataset = load_dataset(options.data)
        config = random_model_config(options.random_config, dataset.label_names)
        torch.manual_seed(options.seed)
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
        tokenizer = AutoTokenizer.from_pretrained(default_model_path(), trust_remote_code=False)
        description = f"random {options.random_config} config (random weights, no download)"
        return BenchModel(model.eval().to(device), tokenizer, dataset, description, "random")
    if options.prepared:
        entry = ModelStore().resolve(options.prepared)
        dataset = load_dataset(DataSpec(**entry.info["data_spec"]))
    else:
        spec = parse_model_arg(options.model)
        dataset = load_dataset(options.data)
        found = ModelStore().find(spec, options.data, dataset.fingerprint)
        if not found:
            loaded = load_classifier(spec, label_names=dataset.label_names, device=device)
            description = f"{spec.label}, fresh classification head (nothing prepared)"
            return BenchModel(loaded.model, loaded.tokenizer, dataset, description, "fresh-head")
        entry = found[0]
    loaded = entry.load(device=device)
    description = f"{entry.info.get('model_label', 'model')} (prepared {entry.key})"
    return BenchModel(loaded.model, loaded.tokenizer, dataset, description, "prepared")


def _environment(device: torch.device) -> dict[str, Any]:
    name = platform.processor() or platform.machine()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": name,
        "cuda": torch.version.cuda,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
    }


def _architecture(model: nn.Module) -> dict[str, Any]:
    config = model_config(model)
    n_layers, n_heads = head_grid(model)
    return {
        "model_type": config.model_type,
        "layers": n_layers,
        "heads": n_heads,
        "hidden": int(config.hidden_size),
        "intermediate": int(getattr(config, "intermediate_size", 0) or config.hidden_dim),
        "parameters": count_parameters(model),
        "max_seq_len": max_sequence_length(model),
        "attn_implementation": getattr(config, "_attn_implementation", None),
    }


def run_speed_bench(
    options: SpeedBenchOptions, *, on_progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Run the speed benchmark (module docstring) and return its JSON-ready content.

    Returns:
        ``plan``, ``model``, ``model_source``, ``architecture``, ``environment``, ``latency``
        (rows of :func:`latency_table`), ``headline`` (:func:`headline`), ``astar``
        (:func:`astar_engine_ratio` or None), ``explain`` (:func:`explanation_ratio` or None) and
        the seconds each part took.

    Raises:
        ValueError: bad options (:func:`resolve_plan`, :func:`check_plan_for_model`), a device
            that is not available, or a model / dataset that cannot be loaded.
    """
    from pruning.models import pick_device

    plan = resolve_plan(options)
    device = pick_device(options.device)
    bench = load_bench_model(options, device)
    model = bench.model
    check_plan_for_model(plan, model)
    precisions = PRECISIONS_CUDA if device.type == "cuda" else PRECISIONS_CPU
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    rows = latency_table(model, plan, precisions=precisions, on_progress=on_progress)
    seconds["latency"] = time.perf_counter() - started
    astar = explain = None
    if plan.astar:
        split = bench.dataset.split("validation").subset(plan.astar_examples, seed=plan.seed)
        started = time.perf_counter()
        astar = astar_engine_ratio(
            model,
            bench.tokenizer,
            split.texts,
            split.labels,
            iterations=plan.astar_iterations,
            budget=plan.astar_budget,
            text_pairs=split.text_pairs,
            on_progress=on_progress,
        )
        seconds["astar"] = time.perf_counter() - started
    if plan.explain:
        started = time.perf_counter()
        explain = explanation_ratio(
            model,
            bench.tokenizer,
            bench.dataset.split("test").texts,
            samples=plan.lime_samples,
            repeats=plan.lime_repeats,
            seed=plan.seed,
        )
        seconds["explain"] = time.perf_counter() - started
        if on_progress is not None:
            on_progress("explain", 1, 1)
    return {
        "plan": asdict(plan),
        "model": bench.description,
        "model_source": bench.source,
        "data": bench.dataset.description,
        "architecture": _architecture(model),
        "environment": _environment(device),
        "heads_chosen": "the same number in every layer, round(sparsity x heads) rounded half up, "
        f"chosen per layer by a permutation seeded with {plan.seed}",
        "latency": rows,
        "headline": headline(rows),
        "astar": astar,
        "explain": explain,
        "part_seconds": seconds,
    }
