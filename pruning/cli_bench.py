"""``headscope bench``: measurements that the README reports, reproducible with one command.

``headscope bench astar`` runs A* head-pruning search on a prepared classifier twice in one
process, once with the fast evaluation engine and once with the naive reference evaluator, on the
same evaluation texts, checks that both prune the identical set of heads, and prints the time
ratio; it then runs random pruning under the same budget (seeded trials) for comparison and
evaluates the A*-pruned model (heads physically removed) on the test split.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pruning import cli_bench_ray
from pruning.cli_bench_astar import add_astar_paper_bench, bench_astar_paper
from pruning.cli_bench_editor import add_editor_bench, bench_editor
from pruning.cli_bench_explain import add_explain_bench, bench_explain
from pruning.cli_bench_mcap import add_table1_bench, bench_table1
from pruning.cli_bench_quality import add_quality_bench, bench_quality
from pruning.cli_bench_runs import add_run_bench_commands, cmd_run_bench
from pruning.cli_bench_speed import add_speed_bench, bench_speed
from pruning.cli_common import add_data_args, add_model_args, emit_json
from pruning.cli_embeddings import add_embeddings_bench, bench_embeddings


def add_bench_commands(commands: Any) -> None:
    """Register ``headscope bench <what>`` on the ``headscope`` subparsers object."""
    bench = commands.add_parser("bench", help="benchmarks reported in the README")
    kinds = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    astar = kinds.add_parser(
        "astar", help="A* search with the fast engine vs the naive evaluator (time ratio)"
    )
    add_model_args(astar, prepared=True)
    add_data_args(astar, default="rotten_tomatoes")
    astar.add_argument("--budget", type=float, default=1.0, help="metric points (default 1.0)")
    astar.add_argument("--metric", choices=("accuracy", "mcc", "f1"), default="accuracy")
    astar.add_argument("--split", choices=("validation", "train"), default="validation")
    astar.add_argument(
        "--examples", type=int, default=256, help="evaluation texts (default 256; 0 = whole split)"
    )
    astar.add_argument(
        "--prefix-evaluations",
        type=int,
        default=0,
        help="time both engines on the first N evaluations of the search only (the same "
        "prefix, checked identical) instead of the whole search; skips random pruning and the "
        "test evaluation (0 = the whole search)",
    )
    astar.add_argument("--random-trials", type=int, default=20, help="0 skips random pruning")
    astar.add_argument("--skip-naive", action="store_true", help="time the fast engine only")
    astar.add_argument("--out", type=Path, help="also write the result JSON to this file")
    astar.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    astar.add_argument("--json", action="store_true", help="print the result as JSON")
    add_run_bench_commands(kinds)
    add_table1_bench(kinds)
    add_explain_bench(kinds)
    add_embeddings_bench(kinds)
    add_quality_bench(kinds)
    add_speed_bench(kinds)
    cli_bench_ray.add_arguments(kinds.add_parser("ray", help=cli_bench_ray.HELP))
    add_editor_bench(kinds)
    add_astar_paper_bench(kinds)
    claims = kinds.add_parser(
        "claims-table",
        help="README's paper-claims table from the results files (no model, no runs)",
    )
    claims.add_argument(
        "--results", type=Path, default=Path("bench/results"), help="results folder"
    )
    claims.add_argument(
        "--readme", type=Path, help="rewrite the table between this file's claims-table markers"
    )


class _PrefixDone(Exception):
    """The timed prefix of a search is complete."""


def _timed_prefix(
    evaluator: Any, n_layers: int, n_heads: int, budget: float, evaluations: int
) -> dict[str, Any]:
    """Time the first ``evaluations`` masks of an A* search (baseline included)."""
    import torch

    from pruning.methods.search_core import astar_search

    metrics: list[float] = []

    def many(masks: Any) -> list[float]:
        take = list(masks)[: evaluations - len(metrics)]
        values = evaluator.evaluate_many(take) if take else []
        metrics.extend(float(v) for v in values)
        if len(take) < len(masks):
            raise _PrefixDone
        return list(values)

    started = time.perf_counter()
    with contextlib.suppress(_PrefixDone):
        astar_search(
            lambda mask: many([mask])[0],
            n_layers,
            n_heads,
            budget,
            evaluate_many=many,
            on_iteration=lambda payload: evaluator.set_anchor(
                torch.tensor(payload["mask"], dtype=torch.bool)
            ),
        )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "evaluations": len(metrics),
        "evaluations_per_second": len(metrics) / max(seconds, 1e-9),
        "metrics": metrics,
    }


def _timed_search(evaluator: Any, n_layers: int, n_heads: int, budget: float) -> dict[str, Any]:
    import torch

    from pruning.methods.search_core import astar_search

    started = time.perf_counter()
    result = astar_search(
        evaluator,
        n_layers,
        n_heads,
        budget,
        evaluate_many=evaluator.evaluate_many,
        # The next candidates differ from this iteration's mask (the evaluator checks its shape).
        on_iteration=lambda payload: evaluator.set_anchor(
            torch.tensor(payload["mask"], dtype=torch.bool)
        ),
    )
    seconds = time.perf_counter() - started
    return {
        "evaluations_per_second": result.evaluations / max(seconds, 1e-9),
        "seconds": seconds,
        "pruned": [list(head) for head in result.pruned],
        "heads_pruned": len(result.pruned),
        "baseline": result.baseline,
        "final_metric": result.final_metric,
        "budget_used": result.budget_used,
        "evaluations": result.evaluations,
        "iterations": len(result.iterations),
        "mask": result.mask,
    }


def cmd_bench(args: argparse.Namespace) -> int:
    """``headscope bench <what>``."""
    if args.bench == "astar":
        return bench_astar(args)
    if args.bench == "astar-paper":
        return bench_astar_paper(args)
    if args.bench == "claims-table":
        return bench_claims_table(args)
    if args.bench in ("gates", "deepcuts"):
        return cmd_run_bench(args)
    if args.bench == "table1":
        return bench_table1(args)
    if args.bench == "explain":
        return bench_explain(args)
    if args.bench == "embeddings":
        return bench_embeddings(args)
    if args.bench == "quality":
        return bench_quality(args)
    if args.bench == "speed":
        return bench_speed(args)
    if args.bench == "ray":
        return cli_bench_ray.run(args)
    if args.bench == "editor":
        return bench_editor(args)
    raise ValueError(f"Unknown benchmark {args.bench!r}.")


def bench_claims_table(args: argparse.Namespace) -> int:
    """``headscope bench claims-table``: print the table; with ``--readme`` also write it there."""
    from pruning.claims_table import claims_table, update_readme

    if not args.results.is_dir():
        raise ValueError(f"--results {args.results} is not a folder of bench results files.")
    table = claims_table(args.results)
    print(table, end="")
    if args.readme is not None:
        changed = update_readme(args.readme, table)
        print(f"{args.readme}: {'table updated' if changed else 'already current'}")
    return 0


def bench_astar(args: argparse.Namespace) -> int:
    """Fast vs naive A* on the same texts; random pruning under the same budget; test metrics."""
    import torch

    from cache.fingerprints import software_versions
    from cache.model_store import ModelStore, check_label_compatibility
    from pruning.batching import make_batches
    from pruning.bench_quality import write_atomic
    from pruning.cli_common import data_spec_from_args, parse_model_arg
    from pruning.data import DataSpec, load_dataset
    from pruning.evaluate import evaluate_split
    from pruning.fast_eval import FastMaskEvaluator, NaiveMaskEvaluator
    from pruning.heads import head_grid, remove_heads
    from pruning.methods.search_core import random_budget_trials
    from pruning.models import pick_device

    if args.examples < 0:
        raise ValueError("--examples must be at least 1 (or 0 for the whole split).")
    if args.prefix_evaluations < 0:
        raise ValueError("--prefix-evaluations must be 0 (the whole search) or more.")
    if not 0 <= args.budget <= 100:
        raise ValueError("--budget must be between 0 and 100 metric points.")
    device = pick_device(args.device)
    if args.prepared:
        entry = ModelStore().resolve(args.prepared)
        dataset = load_dataset(DataSpec(**entry.info["data_spec"]))
    else:
        model_spec, data_spec = parse_model_arg(args.model), data_spec_from_args(args)
        dataset = load_dataset(data_spec)
        found = ModelStore().find(model_spec, data_spec, dataset.fingerprint)
        if not found:
            raise ValueError(
                f"No classifier is prepared for {model_spec.label} on {dataset.name}; run "
                "`headscope prepare` with the same --model and --data first (A* needs a "
                "fine-tuned classifier, not a fresh head)."
            )
        entry = found[0]
    check_label_compatibility(entry.label_names, dataset.label_names)
    loaded = entry.load(device=device)
    description = f"{entry.info.get('model_label', 'model')} (prepared {entry.key})"
    whole = dataset.split(args.split)
    split = whole.subset(args.examples, seed=0) if args.examples else whole
    model, tokenizer = loaded.model, loaded.tokenizer
    n_layers, n_heads = head_grid(model)
    batches = [
        batch.to(device)
        for batch in make_batches(
            tokenizer, split.texts, split.labels, batch_size=64, text_pairs=split.text_pairs
        )
    ]
    fast = FastMaskEvaluator(model, batches, metric=args.metric)
    prefix = args.prefix_evaluations

    def timed(evaluator: Any) -> dict[str, Any]:
        if prefix:
            return _timed_prefix(evaluator, n_layers, n_heads, args.budget, prefix)
        return _timed_search(evaluator, n_layers, n_heads, args.budget)

    runs = {"fast": timed(fast)}
    if not args.skip_naive:
        naive = NaiveMaskEvaluator(
            model,
            tokenizer,
            split.texts,
            split.labels,
            metric=args.metric,
            text_pairs=split.text_pairs,
        )
        runs["naive"] = timed(naive)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} · {torch.get_num_threads()} threads · {device}",
        "model": description,
        "prepared_key": entry.key,
        "data": dataset.description,
        "split": args.split,
        "examples": len(split),
        "metric": args.metric,
        "budget": args.budget,
        "versions": software_versions(),
    }
    for name, run in runs.items():
        report[name] = {k: v for k, v in run.items() if k != "mask"}
    if prefix:
        report["prefix_evaluations"] = prefix
    if "naive" in runs:
        same = "metrics" if prefix else "pruned"
        report["identical_pruned_set" if not prefix else "identical_prefix"] = (
            runs["fast"][same] == runs["naive"][same]
        )
        report["speedup"] = runs["naive"]["seconds"] / max(runs["fast"]["seconds"], 1e-9)
    if prefix:
        if args.out is not None:
            write_atomic(args.out, json.dumps(report, indent=2) + "\n")
        if args.json:
            emit_json(report)
        else:
            _print_prefix(report)
        return 0
    if args.random_trials > 0:
        started = time.perf_counter()
        trials = random_budget_trials(
            fast, n_layers, n_heads, args.budget, trials=args.random_trials, seed=0
        )
        pruned_counts = [t["heads_pruned"] for t in trials]
        report["random"] = {
            "trials": len(trials),
            "seconds": time.perf_counter() - started,
            "heads_pruned_mean": sum(pruned_counts) / len(pruned_counts),
            "heads_pruned_min": min(pruned_counts),
            "heads_pruned_max": max(pruned_counts),
            "budget_used_mean": sum(t["budget_used"] for t in trials) / len(trials),
        }
    test = dataset.split("test")
    dense = entry.metrics.get("test") or evaluate_split(model, tokenizer, test).to_dict()
    pruned_model = remove_heads(model, runs["fast"]["mask"])
    pruned = evaluate_split(pruned_model, tokenizer, test).to_dict()
    report["test"] = {"dense": dense, "pruned": pruned, "texts": len(test)}
    if args.out is not None:
        write_atomic(args.out, json.dumps(report, indent=2) + "\n")
    if args.json:
        emit_json(report)
        return 0
    _print_astar(report)
    return 0


def _print_prefix(report: dict[str, Any]) -> None:
    print(
        f"A* search prefix ({report['prefix_evaluations']} evaluations) on {report['model']} · "
        f"{report['examples']} {report['split']} texts · {report['machine']} · {report['date']}"
    )
    for name in ("fast", "naive"):
        if name in report:
            run = report[name]
            print(
                f"  {name:5} engine: {run['evaluations']} evaluations in {run['seconds']:.1f} s "
                f"({run['evaluations_per_second']:.3f} per second)"
            )
    if "speedup" in report:
        same = "identical" if report["identical_prefix"] else "DIFFERENT"
        print(f"  fast engine is {report['speedup']:.1f}x faster; the metrics are {same}")


def _print_astar(report: dict[str, Any]) -> None:
    print(
        f"A* search on {report['model']} · {report['data']} · {report['examples']} "
        f"{report['split']} texts · budget {report['budget']:g} {report['metric']} points"
    )
    print(f"machine: {report['machine']} · {report['date']}")
    for name in ("fast", "naive"):
        if name not in report:
            continue
        run = report[name]
        print(
            f"  {name:5} engine: {run['heads_pruned']} heads pruned, metric "
            f"{run['baseline']:.2f} -> {run['final_metric']:.2f}, {run['evaluations']} "
            f"evaluations, {run['iterations']} iterations, {run['seconds']:.1f} s"
        )
    if "speedup" in report:
        same = "identical" if report["identical_pruned_set"] else "DIFFERENT"
        print(f"  fast engine is {report['speedup']:.1f}x faster; pruned sets are {same}")
    if "random" in report:
        r = report["random"]
        print(
            f"  random under the same budget ({r['trials']} trials): "
            f"{r['heads_pruned_mean']:.1f} heads pruned on average "
            f"(min {r['heads_pruned_min']}, max {r['heads_pruned_max']}), "
            f"budget used {r['budget_used_mean']:.2f}"
        )
    test = report["test"]
    print(
        f"  test accuracy ({test['texts']} texts): dense {test['dense']['accuracy']:.4f}, "
        f"A*-pruned {test['pruned']['accuracy']:.4f}"
    )
