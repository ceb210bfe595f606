"""``headscope bench ray``: local executor vs Ray, measured in one run (issue #17).

Examples::

    headscope bench ray --workers 2 --out bench/results/ray_cpu.json \\
        --markdown bench/results/ray_cpu.md            # the README measurement (2-core CPU)
    headscope bench ray --quick                        # CI-sized
    headscope bench ray --device cuda --workers 1 --skip-sweep   # per-evaluation cost on a GPU

What one invocation measures, on a prepared classifier (the default one unless ``--model`` /
``--data`` / ``--prepared`` say otherwise):

(a) **Sweep wall time**: the same ``--runs`` pruning runs (methods cycled from ``--methods``, seeds
    0, 1, ... per cycle, head sparsity ``--sparsity``, ``--recovery-steps`` recovery fine-tuning),
    once with the local executor and once as Ray tasks, each into a fresh temporary run store (so
    nothing comes from a cache), through :func:`pruning.ray_sweep.run_requests`. Reports both
    times, their ratio, and whether both stores hold the same keys and masks.
(b) **A\\* evaluations per second**: the first A* iteration's candidates (every single-head
    removal, plus the baseline) on ``--score-examples`` validation texts, scored by the local fast
    engine and by :class:`pruning.ray_eval.RayMaskEvaluator` with ``--workers`` actors; the scores
    must be equal. Actor start-up is timed separately.
(c) **Scaling note**: expected A* time for BERT-base (the paper's 5,000-7,500 evaluations) and
    sweep time on N workers, from the measured costs; the formulas and their assumptions are part
    of the report (:func:`scaling_note`).

Ray runs on a private instance (``--ray-address local``, the default) with ``--num-cpus`` CPUs
(default: ``--workers``, so a sweep runs ``--workers`` tasks at a time and A* uses as many actors);
the local side runs with as many torch threads (``--local-threads``), so both use the same cores.
The report (``--out``) is JSON with the date, machine, versions and exact command; ``--markdown``
writes the tables, which are also printed.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pruning.cli_bench_runs import bench_report, write_report
from pruning.cli_common import add_data_args, add_model_args

__all__ = ["HELP", "add_arguments", "markdown_report", "run", "scaling_note"]

HELP = "local executor vs Ray: sweep wall time, A* evaluations per second, scaling note"
PAPER_EVALUATIONS = (5000, 7500)
SCALING_WORKERS = (1, 2, 4, 8, 16)
SCALING_SWEEP_RUNS = 36  # e.g. 3 methods x 4 sparsities x 3 seeds
_FULL = {"runs": 4, "recovery_steps": 50, "score_examples": 256, "eval_examples": None}
_QUICK = {"runs": 2, "recovery_steps": 2, "score_examples": 16, "eval_examples": 16}

Progress = Callable[[str, int, int], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``headscope bench ray``."""
    add_model_args(parser, prepared=True)
    add_data_args(parser, default="rotten_tomatoes")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers / actors (2)")
    parser.add_argument(
        "--num-cpus", type=int, help="CPUs of the private Ray instance (default: --workers)"
    )
    parser.add_argument(
        "--ray-address", default="local", help="local (a private instance, default) or host:port"
    )
    parser.add_argument(
        "--methods", default="hisp,entropy,magnitude", help="sweep methods, cycled over the runs"
    )
    parser.add_argument("--runs", type=int, help="sweep runs (default 4; quick 2)")
    parser.add_argument("--sparsity", type=float, default=0.5, help="head sparsity (0.5)")
    parser.add_argument(
        "--recovery-steps", type=int, help="recovery fine-tuning steps (default 50; quick 2)"
    )
    parser.add_argument(
        "--score-examples", type=int, help="texts that score heads (default 256; quick 16)"
    )
    parser.add_argument(
        "--eval-examples", type=int, help="test texts per run (default: all; quick 16)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--local-threads",
        type=int,
        help="torch threads of the local side (default: the Ray CPU slots: the same cores)",
    )
    parser.add_argument("--skip-sweep", action="store_true", help="leave out part (a)")
    parser.add_argument("--skip-astar", action="store_true", help="leave out part (b)")
    parser.add_argument("--quick", action="store_true", help="CI-sized plan (tiny sizes)")
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    parser.add_argument("--markdown", type=Path, help="write the tables as markdown here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    """Sizes of the run: the flags, else the quick or full defaults; validated."""
    defaults = _QUICK if args.quick else _FULL
    plan = {name: getattr(args, name) for name in defaults}
    plan = {name: defaults[name] if value is None else value for name, value in plan.items()}
    methods = tuple(name.strip() for name in args.methods.split(",") if name.strip())
    if not methods:
        raise ValueError("--methods needs at least one method name, e.g. hisp,entropy,magnitude.")
    if args.skip_sweep and args.skip_astar:
        raise ValueError("--skip-sweep and --skip-astar leave nothing to measure; drop one.")
    if plan["runs"] < 1 or args.workers < 1:
        raise ValueError("--runs and --workers must be at least 1.")
    if plan["score_examples"] < 1 or (
        plan["eval_examples"] is not None and plan["eval_examples"] < 1
    ):
        raise ValueError("--score-examples and --eval-examples must be at least 1.")
    if args.local_threads is not None and args.local_threads < 1:
        raise ValueError("--local-threads must be at least 1.")
    return {**plan, "methods": methods, "sparsity": args.sparsity, "workers": args.workers}


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[Progress]:
    """``on_progress(phase, done, total)``: one tqdm bar per phase on stderr (or nothing)."""
    bars: dict[str, Any] = {}

    def on_progress(phase: str, done: int, total: int) -> None:
        if not enabled:
            return
        from tqdm import tqdm

        if phase not in bars:
            for other in bars.values():
                other.close()
            bars[phase] = tqdm(total=total, desc=phase, file=sys.stderr)
        bars[phase].update(done - bars[phase].n)

    try:
        yield on_progress
    finally:
        for bar in bars.values():
            bar.close()


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[int]:
    """Run the local side with ``threads`` torch threads (None: as they are)."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _prepared(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """``(prepared entry, model spec, data spec)`` of the classifier under test."""
    from cache.model_store import ModelStore
    from pruning.cli_common import data_spec_from_args, parse_model_arg
    from pruning.data import DataSpec, load_dataset
    from pruning.models import ModelSpec

    store = ModelStore()
    if args.prepared:
        entry = store.resolve(args.prepared)
        return entry, ModelSpec(**entry.info["model_spec"]), DataSpec(**entry.info["data_spec"])
    model, data = parse_model_arg(args.model), data_spec_from_args(args)
    found = store.find(model, data, load_dataset(data).fingerprint)
    if not found:
        raise ValueError(
            f"No classifier is prepared for {model.label} on this dataset; run `headscope "
            "prepare` with the same --model and --data first."
        )
    return found[0], model, data


def sweep_part(
    plan: dict[str, Any],
    entry: Any,
    model: Any,
    data: Any,
    settings: Any,
    *,
    device: str,
    local_threads: int | None,
    on_progress: Progress,
) -> dict[str, Any]:
    """(a): the same runs with the local executor and as Ray tasks, fresh stores each."""
    import torch

    from cache.run_store import RunStore
    from pruning.executors import LOCAL
    from pruning.pipeline import RunRequest
    from pruning.ray_sweep import run_requests

    methods = plan["methods"]
    requests = [
        RunRequest(
            method=methods[index % len(methods)],
            config={"sparsity": plan["sparsity"]},
            model=model,
            data=data,
            prepared_key=entry.key,
            seed=index // len(methods),
            score_examples=plan["score_examples"],
            eval_examples=plan["eval_examples"],
            recovery_steps=plan["recovery_steps"],
            device=device,
            name=f"bench ray {index}",
        )
        for index in range(plan["runs"])
    ]
    seconds: dict[str, float] = {}
    records: dict[str, list[Any]] = {}
    with tempfile.TemporaryDirectory(prefix="headscope-bench-ray-") as folder:
        for name, executor in (("local", LOCAL), ("ray", settings)):
            done: list[int] = []

            def on_record(
                index: int, record: Any, done: list[int] = done, name: str = name
            ) -> None:
                done.append(index)
                on_progress(f"sweep, {name}", len(done), len(requests))

            with _torch_threads(local_threads if name == "local" else None):
                started = time.perf_counter()
                records[name] = run_requests(
                    requests,
                    executor=executor,
                    store=RunStore(Path(folder) / name),
                    on_record=on_record,
                )
                seconds[name] = time.perf_counter() - started
    pairs = list(zip(records["local"], records["ray"], strict=True))
    differences = [
        abs(float(a.metrics[part]["accuracy"]) - float(b.metrics[part]["accuracy"]))
        for a, b in pairs
        for part in ("pruned", "recovered")
        if part in a.metrics and part in b.metrics
    ]
    return {
        "runs": [
            {"method": r.method, "seed": r.seed, "key": r.key, "heads_pruned": int((~r.mask).sum())}
            for r in records["local"]
        ],
        "local_seconds": seconds["local"],
        "ray_seconds": seconds["ray"],
        "speedup": seconds["local"] / max(seconds["ray"], 1e-9),
        "same_keys": all(a.key == b.key for a, b in pairs),
        "same_masks": all(torch.equal(a.mask, b.mask) for a, b in pairs),
        "max_accuracy_difference": max(differences, default=0.0),
    }


def astar_part(
    plan: dict[str, Any],
    entry: Any,
    data: Any,
    settings: Any,
    *,
    device: str,
    local_threads: int | None,
    on_progress: Progress,
) -> dict[str, Any]:
    """(b): the first A* iteration's evaluations, local fast engine vs Ray actors."""
    import torch

    from pruning.batching import make_batches
    from pruning.cost import flops_per_example
    from pruning.data import load_dataset
    from pruning.fast_eval import FastMaskEvaluator
    from pruning.heads import head_grid
    from pruning.models import pick_device
    from pruning.ray_eval import RayMaskEvaluator

    torch_device = pick_device(device)
    loaded = entry.load(device=torch_device)
    model = loaded.model
    split = load_dataset(data).split("validation").subset(plan["score_examples"], seed=0)
    batches = [
        batch.to(torch_device)
        for batch in make_batches(
            loaded.tokenizer,
            split.texts,
            split.labels,
            batch_size=64,
            text_pairs=split.text_pairs,
        )
    ]
    n_layers, n_heads = head_grid(model)
    baseline = torch.ones(n_layers, n_heads, dtype=torch.bool)
    candidates = []
    for index in range(n_layers * n_heads):
        mask = baseline.clone()
        mask.view(-1)[index] = False
        candidates.append(mask)
    total = 1 + len(candidates)

    def progress(phase: str) -> Callable[[int], None]:
        return lambda count: on_progress(phase, count, total)

    with _torch_threads(local_threads) as threads:
        local = FastMaskEvaluator(model, batches, on_evaluation=progress("A*, local engine"))
        started = time.perf_counter()
        local_scores = [local(baseline), *local.evaluate_many(candidates)]
        local_seconds = time.perf_counter() - started
    with RayMaskEvaluator(
        model, batches, settings=settings, on_evaluation=progress("A*, Ray actors")
    ) as remote:
        started = time.perf_counter()
        actors = remote.start()
        start_seconds = time.perf_counter() - started
        started = time.perf_counter()
        ray_scores = [remote(baseline), *remote.evaluate_many(candidates)]
        ray_seconds = time.perf_counter() - started
    tokens = sum(int(batch.attention_mask.sum()) for batch in batches) / len(split)
    return {
        "examples": len(split),
        "mean_tokens": tokens,
        "flops_per_example": flops_per_example(model, max(1, round(tokens))),
        "device": str(torch_device),
        "evaluations": total,
        "local": {
            "seconds": local_seconds,
            "evaluations_per_second": total / local_seconds,
            "torch_threads": threads,
        },
        "ray": {
            "seconds": ray_seconds,
            "evaluations_per_second": total / ray_seconds,
            "actors": actors,
            "start_seconds": start_seconds,
        },
        "speedup": local_seconds / max(ray_seconds, 1e-9),
        "identical_scores": local_scores == ray_scores,
        # One worker's seconds per evaluation (Ray overhead and each actor's cache pass included).
        "seconds_per_evaluation_one_worker": ray_seconds * actors / total,
    }


def _bert_base_flops(tokens: float) -> int:
    """Analytic FLOPs per example of BERT-base (12 x 12 heads, hidden 768) at ``tokens``."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from pruning.bench_speed import random_model_config
    from pruning.cost import flops_per_example

    with torch.device("meta"):  # shapes only: no 440 MB of weights
        model = AutoModelForSequenceClassification.from_config(random_model_config("bert-base"))
    return flops_per_example(model, max(1, round(tokens)))


def scaling_note(
    sweep: dict[str, Any] | None, astar: dict[str, Any] | None, slots: int
) -> dict[str, Any]:
    """Expected A* and sweep times for BERT-base on N workers, from the measured costs.

    A* on N workers: ``T = E * c * r / N``, with ``E`` evaluations (the paper: 5,000-7,500 for
    BERT-base), ``c`` one worker's measured seconds per evaluation and ``r`` the ratio of
    BERT-base's FLOPs per example to the measured model's at the same mean token count. Sweep of
    ``K`` runs on N workers: ``T = ceil(K / N) * t * r``, ``t`` the measured seconds of one run on
    one worker (Ray sweep time / ``ceil(K_measured / slots)``).

    Assumptions (in the report): cost proportional to FLOPs on the same kind of device; every
    A* iteration has at least N candidates (true until the search space is smaller than N) and
    the driver's work between iterations is negligible; sweep runs are independent and equally
    long, one per worker at a time; worker start-up is amortised. Numbers measured on CPU hold
    for CPU workers; for GPUs, measure ``c`` on one GPU (``--device cuda --workers 1``) and use
    the same formulas.
    """
    note: dict[str, Any] = {
        "formulas": {
            "astar": "T_astar(N) = E * c * r / N",
            "sweep": "T_sweep(N, K) = ceil(K / N) * t * r",
        },
        "assumptions": [
            "cost scales with FLOPs per example on the same kind of device (r = BERT-base "
            "FLOPs / measured model FLOPs at the measured mean token count)",
            "each A* iteration has at least N candidates and the driver's work between "
            "iterations is negligible",
            "sweep runs are independent and equally long, one per worker at a time",
            "worker and actor start-up (seconds) is amortised over the run",
            "CPU-measured costs hold for CPU workers; for N GPUs measure c and t on one GPU "
            "(--device cuda --workers 1) and apply the same formulas",
        ],
    }
    if astar is not None:
        ratio = _bert_base_flops(astar["mean_tokens"]) / astar["flops_per_example"]
        cost = astar["seconds_per_evaluation_one_worker"]
        note["astar"] = {
            "measured_on": astar["device"],
            "c_seconds_per_evaluation": cost,
            "r_flops_ratio": ratio,
            "hours": {
                str(evaluations): {
                    str(n): evaluations * cost * ratio / n / 3600 for n in SCALING_WORKERS
                }
                for evaluations in PAPER_EVALUATIONS
            },
        }
        note["flops_ratio"] = ratio
    if sweep is not None:
        runs = len(sweep["runs"])
        per_run = sweep["ray_seconds"] / math.ceil(runs / slots)
        ratio = note.get("flops_ratio")
        note["sweep"] = {
            "t_seconds_per_run": per_run,
            "measured_runs": runs,
            "minutes": {
                str(count): {str(n): math.ceil(count / n) * per_run / 60 for n in SCALING_WORKERS}
                for count in (runs, SCALING_SWEEP_RUNS)
            },
        }
        if ratio is not None:
            note["sweep"]["bert_base_minutes"] = {
                str(count): {
                    str(n): math.ceil(count / n) * per_run * ratio / 60 for n in SCALING_WORKERS
                }
                for count in (runs, SCALING_SWEEP_RUNS)
            }
    return note


def run_ray_bench(args: argparse.Namespace, on_progress: Progress) -> dict[str, Any]:
    """Every part of the bench; the report's content (without the header)."""
    import os

    import ray as ray_module

    from pruning.executors import ExecutorSettings, cluster_slots, connect

    plan = _plan(args)
    settings = ExecutorSettings(
        kind="ray",
        address=args.ray_address,
        workers=args.workers,
        num_cpus=args.num_cpus or args.workers,
    )
    entry, model, data = _prepared(args)
    started = time.perf_counter()
    ray = connect(settings)
    init_seconds = time.perf_counter() - started
    slots = cluster_slots(ray, use_gpu=False)
    # The local side gets as many cores as Ray has slots: a fair comparison whatever
    # OMP_NUM_THREADS says.
    local_threads = args.local_threads or slots
    common = {"device": args.device, "local_threads": local_threads, "on_progress": on_progress}
    sweep = None if args.skip_sweep else sweep_part(plan, entry, model, data, settings, **common)
    astar = None if args.skip_astar else astar_part(plan, entry, data, settings, **common)
    return {
        "model": f"{entry.info.get('model_label', 'model')} (prepared {entry.key})",
        "prepared_key": entry.key,
        "data": entry.info.get("data_description", ""),
        "plan": {**plan, "methods": list(plan["methods"])},
        "environment": {
            "cpu_count": os.cpu_count(),
            "ray_version": ray_module.__version__,
            "ray_address": settings.address,
            "ray_resources": {
                k: v for k, v in ray.cluster_resources().items() if "memory" not in k
            },
            "ray_cpu_slots": slots,
            "local_torch_threads": local_threads,
            "ray_init_seconds": init_seconds,
        },
        "sweep": sweep,
        "astar": astar,
        "scaling": scaling_note(sweep, astar, slots),
    }


def run(args: argparse.Namespace) -> int:
    """``headscope bench ray``: run, write ``--out`` / ``--markdown``, print the tables."""
    started = time.perf_counter()
    with _progress_bars(not args.no_progress) as on_progress:
        content = run_ray_bench(args, on_progress)
    report = bench_report(args, started, **content)
    return write_report(args, report, markdown_report(report))


def _table(rows: dict[str, dict[str, float]], unit: str, digits: int = 2) -> list[str]:
    columns = [str(n) for n in SCALING_WORKERS]
    lines = [
        f"| {unit} | " + " | ".join(f"N = {n}" for n in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, values in rows.items():
        cells = " | ".join(f"{values[n]:.{digits}f}" for n in columns)
        lines.append(f"| {label} | {cells} |")
    return lines


def markdown_report(report: dict[str, Any]) -> str:
    """The sweep and A* tables and the scaling note, as markdown."""
    env, plan = report["environment"], report["plan"]
    lines = [
        "## Scale-out: local executor vs Ray",
        "",
        f"Model: {report['model']}; data: {report['data']}. Ray {env['ray_version']} at "
        f"{env['ray_address']} with {env['ray_cpu_slots']} CPU slots ({env['cpu_count']} CPUs "
        "on the machine).",
    ]
    if "date" in report:
        lines.append(f"Run {report['date']} on {report['machine']}: `{report['command']}`.")
    sweep = report.get("sweep")
    if sweep:
        methods = ", ".join(plan["methods"])
        same = (
            "same keys and masks"
            if sweep["same_keys"] and sweep["same_masks"]
            else ("DIFFERENT keys or masks")
        )
        lines += [
            "",
            f"Sweep: {len(sweep['runs'])} runs ({methods} cycled; {plan['sparsity']:.0%} of heads, "
            f"{plan['recovery_steps']} recovery steps, {plan['score_examples']} scoring texts), "
            "each executor into a fresh run store:",
            "",
            "| executor | seconds |",
            "|---|---|",
            f"| local (one process, {env['local_torch_threads']} torch threads) | "
            f"{sweep['local_seconds']:.1f} |",
            f"| Ray ({env['ray_cpu_slots']} workers) | {sweep['ray_seconds']:.1f} |",
            "",
            f"Ray / local speed-up: {sweep['speedup']:.2f}x; the two stores hold the {same} "
            f"(largest accuracy difference {sweep['max_accuracy_difference']:.2g}).",
        ]
    astar = report.get("astar")
    if astar:
        local, ray = astar["local"], astar["ray"]
        same = "identical" if astar["identical_scores"] else "DIFFERENT"
        lines += [
            "",
            f"A* first iteration: {astar['evaluations']} evaluations (baseline and every "
            f"single-head removal) on {astar['examples']} validation texts, {astar['device']}:",
            "",
            "| engine | seconds | evaluations / s |",
            "|---|---|---|",
            f"| local fast engine ({local['torch_threads']} torch threads) | "
            f"{local['seconds']:.2f} | {local['evaluations_per_second']:.2f} |",
            f"| {ray['actors']} Ray actors (1 thread each) | {ray['seconds']:.2f} | "
            f"{ray['evaluations_per_second']:.2f} |",
            "",
            f"Ray / local speed-up: {astar['speedup']:.2f}x; scores {same}; actors started in "
            f"{ray['start_seconds']:.1f} s (not in the times above).",
        ]
    scaling = report["scaling"]
    lines += ["", "### Scaling note", ""]
    if "astar" in scaling:
        a = scaling["astar"]
        lines += [
            f"A* for BERT-base: `{scaling['formulas']['astar']}` with c = "
            f"{a['c_seconds_per_evaluation']:.3f} s per evaluation on one worker (measured, "
            f"{a['measured_on']}) and r = {a['r_flops_ratio']:.1f} (FLOPs ratio). Hours:",
            "",
            *_table({f"E = {e}": row for e, row in a["hours"].items()}, "evaluations"),
            "",
        ]
    if "sweep" in scaling:
        s = scaling["sweep"]
        rows = {f"K = {k} (measured model)": row for k, row in s["minutes"].items()}
        rows |= {f"K = {k} (BERT-base)": row for k, row in s.get("bert_base_minutes", {}).items()}
        lines += [
            f"Sweeps: `{scaling['formulas']['sweep']}` with t = {s['t_seconds_per_run']:.1f} s "
            "per run on one worker (measured). Minutes:",
            "",
            *_table(rows, "runs", digits=1),
            "",
        ]
    lines += ["Assumptions: " + "; ".join(scaling["assumptions"]) + "."]
    return "\n".join(lines) + "\n"
