"""``headscope bench speed``: is the pruned model faster, and by as much as FLOPs predict?

Examples::

    headscope bench speed --quick                                 # CI-sized, under 2 minutes
    headscope bench speed --out bench/results/speed_cpu.json --markdown bench/results/speed_cpu.md
    headscope bench speed --random-config bert-base --device cuda --skip-astar

What is measured, and how, is described in :mod:`pruning.bench_speed`. The report (``--out``) is
JSON with the date, machine, library versions and the exact command; ``--markdown`` writes the
latency table, the headline sentence and the A* and LIME ratios, which are also printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pruning.bench_speed import RANDOM_CONFIGS, ProgressFn, SpeedBenchOptions, run_speed_bench
from pruning.cli_bench_runs import bench_report, write_report
from pruning.cli_common import add_data_args, add_model_args, data_spec_from_args

__all__ = ["add_speed_bench", "bench_speed", "markdown_report", "options_from_args"]


def _numbers(kind: type, text: str) -> tuple[Any, ...]:
    try:
        values = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        noun = "whole numbers" if kind is int else "numbers"
        raise argparse.ArgumentTypeError(f"expected comma-separated {noun}, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one value")
    return values


def _floats(text: str) -> tuple[float, ...]:
    return _numbers(float, text)


def _ints(text: str) -> tuple[int, ...]:
    return _numbers(int, text)


def add_speed_bench(kinds: Any) -> None:
    """Register ``bench speed`` on the ``bench`` subparsers object."""
    bench = kinds.add_parser(
        "speed",
        help="dense vs heads-removed latency next to the FLOPs prediction; A* and LIME ratios",
    )
    add_model_args(bench, prepared=True)
    add_data_args(bench, default="rotten_tomatoes")
    bench.add_argument(
        "--random-config",
        choices=RANDOM_CONFIGS,
        help="time a randomly initialised model of this shape instead (no download); "
        "bert-base is the GPU / large case",
    )
    bench.add_argument(
        "--sparsities", type=_floats, help="head sparsities (default 0.25,0.5,0.75; quick 0.5)"
    )
    bench.add_argument("--batch-sizes", type=_ints, help="batch sizes (default 1,8,32; quick 1,8)")
    bench.add_argument("--seq-lens", type=_ints, help="tokens per row (default 32,128; quick 32)")
    bench.add_argument("--repeats", type=int, help="interleaved timed rounds (default 20; quick 5)")
    bench.add_argument("--warmup", type=int, help="untimed rounds first (default 2; quick 1)")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    bench.add_argument("--skip-astar", action="store_true", help="leave out the A* engine ratio")
    bench.add_argument(
        "--skip-explain", action="store_true", help="leave out the LIME batching ratio"
    )
    bench.add_argument(
        "--astar-iterations", type=int, help="A* iterations timed per engine (default 2; quick 1)"
    )
    bench.add_argument(
        "--astar-examples", type=int, help="validation texts A* scores (default 64; quick 32)"
    )
    bench.add_argument(
        "--astar-budget", type=float, default=1.0, help="A* budget, accuracy points (1.0)"
    )
    bench.add_argument("--lime-samples", type=int, help="LIME samples (default 1000; quick 100)")
    bench.add_argument("--lime-repeats", type=int, help="LIME repeats (default 3; quick 1)")
    bench.add_argument("--seed", type=int, default=0, help="heads chosen, tokens, texts, LIME")
    bench.add_argument("--quick", action="store_true", help="CI-sized plan (under 2 min on CPU)")
    bench.add_argument("--out", type=Path, help="write the result JSON here")
    bench.add_argument("--markdown", type=Path, help="write the tables as markdown here")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")


def options_from_args(args: argparse.Namespace) -> SpeedBenchOptions:
    """The :class:`SpeedBenchOptions` that the ``bench speed`` flags name."""
    return SpeedBenchOptions(
        model=args.model,
        prepared=args.prepared,
        data=data_spec_from_args(args),
        random_config=args.random_config,
        sparsities=args.sparsities,
        batch_sizes=args.batch_sizes,
        seq_lens=args.seq_lens,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        skip_astar=args.skip_astar,
        skip_explain=args.skip_explain,
        astar_iterations=args.astar_iterations,
        astar_examples=args.astar_examples,
        astar_budget=args.astar_budget,
        lime_samples=args.lime_samples,
        lime_repeats=args.lime_repeats,
        quick=args.quick,
        seed=args.seed,
    )


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[ProgressFn | None]:
    """One tqdm bar per phase on stderr, fed by ``on_progress(phase, done, total)``."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def on_progress(phase: str, done: int, total: int) -> None:
        bar = bars.get(phase)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[phase] = tqdm(total=total, desc=phase, file=sys.stderr)
        bar.update(done - bar.n)

    try:
        yield on_progress
    finally:
        for bar in bars.values():
            bar.close()


def bench_speed(args: argparse.Namespace) -> int:
    """``headscope bench speed``: run, write ``--out`` / ``--markdown``, print a summary."""
    options = options_from_args(args)
    started = time.perf_counter()
    with _progress_bars(not args.no_progress) as on_progress:
        content = run_speed_bench(options, on_progress=on_progress)
    report = bench_report(args, started, **content)
    return write_report(args, report, markdown_report(report))


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _headline_sentence(head: dict[str, Any]) -> str:
    shape = (
        f"{head['sparsity']:.0%} of heads removed, CPU fp32, batch {head['batch_size']}, "
        f"{head['seq_len']} tokens"
    )
    if head["measured"] is None:
        return f"Headline ({shape}): {head['note']}."
    verdict = "within" if head["within_25_percent"] else "NOT within"
    return (
        f"Headline ({shape}): measured speed-up {_x(head['measured'])} "
        f"[{head['measured_min']:.2f}-{head['measured_max']:.2f} over rounds] vs "
        f"{_x(head['predicted'])} predicted by FLOPs (measured/predicted "
        f"{head['measured'] / head['predicted']:.2f}): {verdict} "
        f"{head['tolerance']:.0%} of the prediction."
    )


def markdown_report(report: dict[str, Any]) -> str:
    """The latency table, the headline sentence, then the A* and LIME ratios, as markdown."""
    env, arch, plan = report["environment"], report["architecture"], report["plan"]
    lines = [
        "## Speed: dense vs attention heads physically removed",
        "",
        f"Model: {report['model']}; {arch['layers']} layers x {arch['heads']} heads, hidden "
        f"{arch['hidden']}, {arch['parameters']:,} parameters. Device: {env['device']} "
        f"({env['device_name']}), {env['cpu_count']} CPUs, {env['torch_threads']} torch threads.",
    ]
    if "date" in report:
        lines.append(f"Run {report['date']} on {report['machine']}: `{report['command']}`.")
    lines += [
        f"Heads removed: {report['heads_chosen']}. Each shape: dense and every pruned model "
        f"timed in the same {plan['repeats']} interleaved rounds (after {plan['warmup']} "
        "warm-up rounds), random tokens, no padding; speed-up = median dense / median pruned, "
        "[min-max] of the per-round ratios; FLOPs-predicted = analytic FLOPs per example, "
        "dense / pruned.",
        "",
        "| precision | heads removed | batch | tokens | dense ms | pruned ms | "
        "measured speed-up [min-max] | FLOPs-predicted | measured / predicted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["latency"]:
        lines.append(
            f"| {row['precision']} | {row['sparsity']:.0%} ({row['heads_removed_per_layer']}/"
            f"{row['heads_per_layer']} per layer) | {row['batch_size']} | {row['seq_len']} | "
            f"{row['dense_ms']:.2f} | {row['pruned_ms']:.2f} | {_x(row['speedup'])} "
            f"[{row['speedup_min']:.2f}-{row['speedup_max']:.2f}] | "
            f"{_x(row['predicted_speedup'])} | {row['measured_over_predicted']:.2f} |"
        )
    lines += ["", _headline_sentence(report["headline"])]
    astar = report.get("astar")
    if astar:
        lines += [
            "",
            f"A* engines on the same first {astar['iterations_requested']} iteration(s), "
            f"{astar['examples']} validation texts, budget {astar['budget']:g} accuracy points:",
            "",
            "| engine | iterations | evaluations | seconds | evaluations / s |",
            "|---|---|---|---|---|",
        ]
        for name in ("fast", "naive"):
            run = astar[name]
            rate = run["evaluations_per_second"]
            lines.append(
                f"| {name} | {run['iterations']} | {run['evaluations']} | "
                f"{run['seconds']:.1f} | {'n/a' if rate is None else f'{rate:.2f}'} |"
            )
        same = "identical" if astar["identical_trace"] else "DIFFERENT"
        if not astar["identical_trace"] and astar["fast_bf16"]:
            same += " (the fast engine ran in bf16 autocast, the naive one in fp32)"
        lines += ["", f"Fast engine / naive: {_x(astar['ratio'])}; traces {same}."]
    lime = report.get("explain")
    if lime:
        lines += [
            "",
            f"LIME, {lime['samples']} samples on a {lime['words']}-word test sentence "
            f"({lime['distinct_texts']} distinct texts):",
            "",
            "| predictor | seconds (median) |",
            "|---|---|",
            f"| batched | {lime['batched_median']:.2f} |",
            f"| one text per forward | {lime['one_at_a_time_median']:.2f} |",
            "",
            f"Batching speed-up: {_x(lime['ratio'])} (largest difference between the two "
            f"explanations: {lime['max_abs_value_difference']:.2g}).",
        ]
    return "\n".join(lines) + "\n"
