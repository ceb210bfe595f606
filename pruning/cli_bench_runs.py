"""Benchmarks made of stored pruning runs: `headscope bench gates` and `bench deepcuts`.

Every row of these tables is an ordinary run of the pipeline (:func:`pruning.pipeline.run_pruning`)
on the prepared classifier, so each one is stored, shows up in the dashboard (Gates, DeepCuts,
Runs pages) and is fetched from the store instead of recomputed when the bench runs again.

* ``bench gates`` (issue #5): AutoAttention at several gate learning rates (the sparsity each one
  reaches and its accuracy), AutoAttention at a fixed sparsity next to HISP and random heads that
  get the same fine-tuning budget (recovery steps at the same weight learning rate), and the L0
  hard-concrete baseline at the same settings.
* ``bench deepcuts`` (issue #7): accuracy against compression ratio for each weight-importance
  strategy (one table, one figure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pruning.cli_common import (
    add_data_args,
    add_model_args,
    emit_json,
    fraction_bar,
    show_fraction,
)

# (label, request) pairs; the request is built lazily so imports stay light for --help.
Plan = list[tuple[str, Any]]


def add_run_bench_commands(kinds: Any) -> None:
    """Register ``bench gates`` and ``bench deepcuts`` on the ``bench`` subparsers object."""
    gates = kinds.add_parser(
        "gates", help="AutoAttention gate-lr sweep; fixed sparsity vs HISP, random and L0"
    )
    add_shared_bench_args(gates)
    gates.add_argument(
        "--gate-lrs",
        type=_floats,
        default=[2.0, 5.0, 10.0],
        help="comma-separated gate learning rates, SGD on W' (default 2,5,10); the middle one "
        "also runs at the fixed sparsity",
    )
    gates.add_argument("--steps", type=int, default=300, help="joint training steps (300)")
    gates.add_argument("--mu", type=float, default=1e-3, help="gate penalty weight (1e-3)")
    gates.add_argument(
        "--l0-mu",
        type=float,
        default=1e-2,
        help="L0 penalty weight (1e-2: its expected-L0 penalty is smoother than the gate count)",
    )
    gates.add_argument("--lr", type=float, default=3e-5, help="model weight learning rate")
    gates.add_argument(
        "--sparsity", type=float, default=0.5, help="fixed head sparsity compared (0.5)"
    )
    gates.add_argument("--skip-l0", action="store_true", help="leave out the L0 baseline")

    deepcuts = kinds.add_parser(
        "deepcuts", help="DeepCuts: accuracy vs compression ratio per weight-importance strategy"
    )
    add_shared_bench_args(deepcuts)
    deepcuts.add_argument(
        "--strategies",
        type=_names,
        default=[
            "layer_mag_weight",
            "global_mag_weight",
            "layer_mag_grad",
            "cam_cut",
            "smooth_cut",
        ],
        help="comma-separated strategies (default: the five of the paper's table)",
    )
    deepcuts.add_argument(
        "--ratios", type=_floats, default=[2.0, 3.0, 3.5, 4.0], help="compression ratios"
    )
    deepcuts.add_argument(
        "--grad-batches", type=int, default=16, help="training batches for gradients (16)"
    )
    deepcuts.add_argument(
        "--refine-steps", type=int, default=0, help="re-fine-tuning steps with the mask fixed"
    )


def add_shared_bench_args(parser: argparse.ArgumentParser) -> None:
    """Model, data, split sizes, seed, device and output options of the run benches."""
    add_model_args(parser, prepared=True)
    add_data_args(parser, default="rotten_tomatoes")
    parser.add_argument("--examples", type=int, default=256, help="validation texts (256)")
    parser.add_argument(
        "--eval-examples", type=int, help="test texts (default: the whole test split)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table as markdown here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _floats(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one number")
    return values


def _names(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one name")
    return values


def base_request(args: argparse.Namespace, **fields: Any) -> Any:
    """A :class:`pruning.pipeline.RunRequest` with the shared options and ``fields``."""
    from pruning.cli_common import data_spec_from_args, parse_model_arg
    from pruning.pipeline import RunRequest

    return RunRequest(
        model=parse_model_arg(args.model),
        data=data_spec_from_args(args),
        prepared_key=args.prepared,
        seed=args.seed,
        score_examples=args.examples,
        eval_examples=args.eval_examples,
        device=args.device,
        **fields,
    )


def gates_plan(args: argparse.Namespace) -> Plan:
    """The runs of ``bench gates``, in order."""
    if args.steps < 1:
        raise ValueError("--steps must be at least 1.")
    common = {"steps": args.steps, "mu": args.mu, "lr": args.lr}
    plan: Plan = []
    for gate_lr in args.gate_lrs:
        plan.append(
            (
                f"AutoAttention, gate lr {gate_lr:g}",
                base_request(
                    args,
                    method="autoattention",
                    config={**common, "gate_lr": gate_lr},
                    name=f"AutoAttention gate lr {gate_lr:g}",
                ),
            )
        )
    fixed_lr = args.gate_lrs[len(args.gate_lrs) // 2]
    plan.append(
        (
            f"AutoAttention, gate lr {fixed_lr:g}, fixed {args.sparsity:.0%}",
            base_request(
                args,
                method="autoattention",
                config={**common, "gate_lr": fixed_lr, "fixed_sparsity": args.sparsity},
                name=f"AutoAttention fixed {args.sparsity:.0%}",
            ),
        )
    )
    if not args.skip_l0:
        plan.append(
            (
                "L0 hard-concrete (Voita et al.)",
                base_request(
                    args,
                    method="l0_gates",
                    config={**common, "mu": args.l0_mu},
                    name=f"L0 gates mu {args.l0_mu:g}",
                ),
            )
        )
    for method, title in (("hisp", "HISP"), ("random", "Random heads")):
        plan.append(
            (
                f"{title} {args.sparsity:.0%} + {args.steps} recovery steps",
                base_request(
                    args,
                    method=method,
                    config={"sparsity": args.sparsity},
                    recovery_steps=args.steps,
                    recovery_lr=args.lr,
                    name=f"{title} {args.sparsity:.0%} + recovery",
                ),
            )
        )
    return plan


def deepcuts_plan(args: argparse.Namespace) -> Plan:
    """The runs of ``bench deepcuts``: every strategy at every ratio."""
    plan: Plan = []
    for strategy in args.strategies:
        for ratio in args.ratios:
            config = {
                "strategy": strategy,
                "compression_ratio": ratio,
                "grad_batches": args.grad_batches,
                "refine_steps": args.refine_steps,
            }
            plan.append(
                (
                    f"{strategy} x{ratio:g}",
                    base_request(
                        args,
                        method="deepcuts",
                        config=config,
                        name=f"DeepCuts {strategy} x{ratio:g}",
                    ),
                )
            )
    return plan


def run_plan(
    plan: Plan, *, progress: bool, run: Callable[..., Any] | None = None
) -> list[dict[str, Any]]:
    """Run (or fetch) every request of ``plan``; one row per run."""
    from pruning.pipeline import run_pruning

    run = run or run_pruning
    for _, request in plan:
        request.method_config()  # refuse bad settings before hours of work
    rows = []
    for label, request in plan:
        bar = fraction_bar(label[:40], enabled=progress)

        def on_event(event: Any, bar: Any = bar) -> None:
            show_fraction(bar, event.fraction, event.message[:50])

        started = time.perf_counter()
        try:
            record = run(request, on_event=on_event)
        finally:
            bar.close()
        rows.append(_row(label, record, time.perf_counter() - started))
    return rows


def _row(label: str, record: Any, wall: float) -> dict[str, Any]:
    metrics = record.metrics
    final = metrics.get("recovered") or metrics["pruned"]
    info = record.info.get("method_info", {})
    cost = metrics.get("cost", {})
    return {
        "label": label,
        "key": record.key,
        "method": record.method,
        "config": record.config,
        "heads_removed": int((~record.mask).sum()),
        "heads": int(record.mask.numel()),
        "head_sparsity": record.head_sparsity,
        "dense_accuracy": metrics["dense"].get("accuracy"),
        "pruned_accuracy": metrics["pruned"].get("accuracy"),
        "recovered_accuracy": metrics.get("recovered", {}).get("accuracy"),
        "accuracy": final.get("accuracy"),
        "mcc": final.get("mcc"),
        "params_nonzero": cost.get("params_nonzero"),
        "achieved_ratio": info.get("achieved_ratio"),
        "reopened": info.get("reopened_count"),
        "seconds": record.info.get("total_seconds"),
        "wall_seconds": wall,
    }


def markdown_table(rows: Sequence[dict[str, Any]], *, weight_level: bool = False) -> str:
    """The rows as a markdown table (accuracy in %, dense accuracy once in the header)."""
    dense = next((r["dense_accuracy"] for r in rows if r["dense_accuracy"] is not None), None)
    title = f"dense {dense:.2%}" if dense is not None else "dense n/a"
    if weight_level:
        lines = [
            f"| strategy | ratio | achieved | accuracy ({title}) | recovered | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            config = r["config"]
            lines.append(
                f"| {config.get('strategy')} | {config.get('compression_ratio'):g} | "
                f"{_num(r['achieved_ratio'], '{:.2f}')} | {_num(r['pruned_accuracy'], '{:.2%}')} "
                f"| {_num(r['recovered_accuracy'], '{:.2%}')} | {_num(r['seconds'], '{:.0f}')} |"
            )
        return "\n".join(lines) + "\n"
    lines = [
        f"| run | heads removed | accuracy ({title}) | before recovery | reopened | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        before = r["pruned_accuracy"] if r["recovered_accuracy"] is not None else None
        lines.append(
            f"| {r['label']} | {r['heads_removed']}/{r['heads']} ({r['head_sparsity']:.0%}) | "
            f"{_num(r['accuracy'], '{:.2%}')} | {_num(before, '{:.2%}')} | "
            f"{_num(r['reopened'], '{}')} | {_num(r['seconds'], '{:.0f}')} |"
        )
    return "\n".join(lines) + "\n"


def _num(value: Any, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def cmd_run_bench(args: argparse.Namespace) -> int:
    """``headscope bench gates`` / ``headscope bench deepcuts``."""
    plan = gates_plan(args) if args.bench == "gates" else deepcuts_plan(args)
    started = time.perf_counter()
    rows = run_plan(plan, progress=not args.no_progress)
    weight_level = args.bench == "deepcuts"
    table = markdown_table(rows, weight_level=weight_level)
    report = bench_report(args, started, rows=rows)
    return write_report(args, report, table)


def bench_report(args: argparse.Namespace, started: float, **content: Any) -> dict[str, Any]:
    """The JSON report of a bench: when, where, which versions, the exact command, ``content``."""
    import torch

    from cache.fingerprints import software_versions

    return {
        "bench": args.bench,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} · {os.cpu_count()} cores · "
        f"{torch.get_num_threads()} threads",
        "command": command_line(args),
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": time.perf_counter() - started,
        "versions": software_versions(),
        **content,
    }


def command_line(args: argparse.Namespace) -> str:
    """The command as typed when run from the ``headscope`` script, else its short form."""
    import shlex
    import sys

    if Path(sys.argv[0]).name == "headscope" and len(sys.argv) > 1:
        return "headscope " + shlex.join(sys.argv[1:])
    return f"headscope bench {args.bench}"


def write_report(args: argparse.Namespace, report: dict[str, Any], table: str) -> int:
    """Write ``--out`` (JSON) and ``--markdown``; print the table (or JSON with ``--json``)."""
    from pruning.bench_quality import write_atomic

    if args.out is not None:
        write_atomic(args.out, json.dumps(report, indent=2, default=str) + "\n")
    if args.markdown is not None:
        write_atomic(args.markdown, table)
    if args.json:
        emit_json(report)
    else:
        print(table, end="")
    return 0
