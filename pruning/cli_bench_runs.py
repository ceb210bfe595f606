"""Benchmarks made of stored pruning runs: `headscope bench gates` and `bench deepcuts`.

Every row of these tables is an ordinary run of the pipeline (:func:`pruning.pipeline.run_pruning`)
on the prepared classifier, so each one is stored, shows up in the dashboard (Gates, DeepCuts,
Runs pages) and is fetched from the store instead of recomputed when the bench runs again.

* ``bench gates`` (issue #5): AutoAttention at several gate learning rates (the sparsity each one
  reaches and its accuracy), AutoAttention at a fixed sparsity next to HISP and random heads that
  get the same fine-tuning budget (recovery steps at the same weight learning rate), and the L0
  hard-concrete baseline at the same settings.
* ``bench deepcuts`` (issues #7, #27): accuracy against compression ratio for each
  weight-importance strategy, with both compression-ratio definitions per row (HeadScope's
  prunable / kept and the paper's whole-model ratio, see :mod:`pruning.compression`), optionally
  at the share of prunable weights the paper's ratios leave on BERT-base
  (``--ratio-definition bert_base_equivalent``), and the paper's two claims checked on the seed
  means (:func:`pruning.bench_runs_table.deepcuts_claims`).

Both benches take ``--seeds`` (comma list; default ``--seed``, i.e. 0): every row runs at each
seed, and the table shows the mean accuracy ± its sample standard deviation and the range.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pruning.bench_runs_table import (
    DEFAULT_TIE_TOLERANCE,
    claims_markdown,
    deepcuts_claims,
    markdown_table,
)
from pruning.cli_common import (
    add_data_args,
    add_model_args,
    emit_json,
    fraction_bar,
    show_fraction,
)

# (label, request) pairs; the request is built lazily so imports stay light for --help.
Plan = list[tuple[str, Any]]
# The choices of DeepCutsConfig.ratio_definition (pruning.compression; not imported for --help).
RATIO_DEFINITION_CHOICES = ("prunable", "whole_model", "bert_base_equivalent")


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
    gates.add_argument(
        "--fixed-only",
        action="store_true",
        help="leave out the natural-output AutoAttention rows: only the claim's comparison at "
        "the fixed sparsity (AutoAttention, HISP and random heads with as many recovery steps)",
    )
    add_seeds_arg(gates)

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
        "--ratios",
        type=_floats,
        default=[2.0, 3.0, 3.5, 4.0],
        help="compression ratios, read as --ratio-definition says (default 2,3,3.5,4)",
    )
    deepcuts.add_argument(
        "--ratio-definition",
        choices=RATIO_DEFINITION_CHOICES,
        default="prunable",
        help="prunable: prunable / kept weights (HeadScope; 3 keeps a third); whole_model: all / "
        "remaining parameters of this model, the paper's definition (MiniLM: at most ~1.9); "
        "bert_base_equivalent: keep the share the paper's ratio leaves on BERT-base (2: 36.1%%, "
        "3: 14.7%%, 3.5: 8.7%%, 4: 4.1%%)",
    )
    deepcuts.add_argument(
        "--grad-batches",
        type=_grad_batches,
        default=16,
        help="training batches for gradients (16), or 'paper': 1000 for the gradient "
        "strategies and 100 for the smoothing ones (Sections 3.2 and 3.5.2)",
    )
    deepcuts.add_argument(
        "--batch-size", type=int, help="texts per gradient batch (the method's 32; paper: 16)"
    )
    deepcuts.add_argument(
        "--smooth-noise-std",
        type=float,
        help="SmoothGrad noise standard deviation (the method's default 0.1 is the paper's; "
        "the authors' code uses 0.001)",
    )
    deepcuts.add_argument(
        "--refine-steps", type=int, default=0, help="re-fine-tuning steps with the mask fixed"
    )
    deepcuts.add_argument(
        "--tie-tolerance",
        type=float,
        default=DEFAULT_TIE_TOLERANCE,
        help="largest accuracy spread between strategies that counts as a tie at the paper's "
        "ratio 2 (0.01 = one point)",
    )
    add_seeds_arg(deepcuts)


def add_seeds_arg(parser: argparse.ArgumentParser) -> None:
    """``--seeds``: every row of the bench runs at each of these seeds."""
    parser.add_argument(
        "--seeds",
        type=_seeds,
        help="comma-separated seeds; every row runs at each (default: --seed, which is 0)",
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


def _seeds(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers, got {text!r}"
        ) from None
    if not values or min(values) < 0 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError("give one or more different seeds >= 0, e.g. 0,1,2")
    return values


def _grad_batches(text: str) -> int | str:
    if text.strip().lower() == "paper":
        return "paper"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of batches or 'paper', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError("give at least one gradient batch")
    return value


def _names(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one name")
    return values


def bench_seeds(args: argparse.Namespace) -> list[int]:
    """The seeds every row runs at: ``--seeds``, else ``[--seed]``.

    Raises:
        ValueError: when both ``--seeds`` and a non-zero ``--seed`` are given.
    """
    seeds = getattr(args, "seeds", None)
    if not seeds:
        return [args.seed]
    if args.seed != 0:
        raise ValueError("Give the seeds either as --seeds 0,1,2 or as --seed N, not both.")
    return list(seeds)


def base_request(args: argparse.Namespace, **fields: Any) -> Any:
    """A :class:`pruning.pipeline.RunRequest` with the shared options and ``fields``.

    ``fields`` may set ``seed``; it defaults to ``--seed``.
    """
    from pruning.cli_common import data_spec_from_args, parse_model_arg
    from pruning.pipeline import RunRequest

    seed = fields.pop("seed", args.seed)
    return RunRequest(
        model=parse_model_arg(args.model),
        data=data_spec_from_args(args),
        prepared_key=args.prepared,
        seed=seed,
        score_examples=args.examples,
        eval_examples=args.eval_examples,
        device=args.device,
        **fields,
    )


def _at_seeds(args: argparse.Namespace, runs: list[tuple[str, dict[str, Any]]]) -> Plan:
    """Every ``(label, request fields)`` at each of :func:`bench_seeds`, row by row."""
    return [
        (label, base_request(args, **fields, seed=seed))
        for label, fields in runs
        for seed in bench_seeds(args)
    ]


def gates_plan(args: argparse.Namespace) -> Plan:
    """The runs of ``bench gates``, in order, each at every seed."""
    if args.steps < 1:
        raise ValueError("--steps must be at least 1.")
    common = {"steps": args.steps, "mu": args.mu, "lr": args.lr}
    runs: list[tuple[str, dict[str, Any]]] = []
    for gate_lr in [] if getattr(args, "fixed_only", False) else args.gate_lrs:
        runs.append(
            (
                f"AutoAttention, gate lr {gate_lr:g}",
                {
                    "method": "autoattention",
                    "config": {**common, "gate_lr": gate_lr},
                    "name": f"AutoAttention gate lr {gate_lr:g}",
                },
            )
        )
    fixed_lr = args.gate_lrs[len(args.gate_lrs) // 2]
    runs.append(
        (
            f"AutoAttention, gate lr {fixed_lr:g}, fixed {args.sparsity:.0%}",
            {
                "method": "autoattention",
                "config": {**common, "gate_lr": fixed_lr, "fixed_sparsity": args.sparsity},
                "name": f"AutoAttention fixed {args.sparsity:.0%}",
            },
        )
    )
    if not args.skip_l0:
        runs.append(
            (
                "L0 hard-concrete (Voita et al.)",
                {
                    "method": "l0_gates",
                    "config": {**common, "mu": args.l0_mu},
                    "name": f"L0 gates mu {args.l0_mu:g}",
                },
            )
        )
    for method, title in (("hisp", "HISP"), ("random", "Random heads")):
        runs.append(
            (
                f"{title} {args.sparsity:.0%} + {args.steps} recovery steps",
                {
                    "method": method,
                    "config": {"sparsity": args.sparsity},
                    "recovery_steps": args.steps,
                    "recovery_lr": args.lr,
                    "name": f"{title} {args.sparsity:.0%} + recovery",
                },
            )
        )
    return _at_seeds(args, runs)


# The paper's gradient batches (Sections 3.2 and 3.5.2): the first 1,000 batches of the training
# set for the gradient strategies, 100 batches (10 noisy passes each) for the smoothing ones.
PAPER_GRAD_BATCHES = {"layer_mag_grad": 1000, "cam_cut": 1000, "smooth_cut": 100, "smooth_cam": 100}


def deepcuts_plan(args: argparse.Namespace) -> Plan:
    """The runs of ``bench deepcuts``: every strategy at every ratio, each at every seed.

    Reads ``strategies``, ``ratios``, ``grad_batches`` and ``refine_steps`` from ``args``, and,
    when present, ``ratio_definition``, ``batch_size``, ``smooth_noise_std`` and ``seeds`` (the
    quality bench's namespace has only the first four). Settings left at their defaults stay out
    of the configs, so earlier runs keep their store keys.
    """
    definition = getattr(args, "ratio_definition", "prunable")
    extra: dict[str, Any] = {}
    if definition != "prunable":
        extra["ratio_definition"] = definition
    for name in ("batch_size", "smooth_noise_std"):
        if getattr(args, name, None) is not None:
            extra[name] = getattr(args, name)
    suffix = "" if definition == "prunable" else f" ({definition})"
    runs: list[tuple[str, dict[str, Any]]] = []
    for strategy in args.strategies:
        batches = args.grad_batches
        if batches == "paper":
            batches = PAPER_GRAD_BATCHES.get(strategy, 16)
        for ratio in args.ratios:
            config = {
                "strategy": strategy,
                "compression_ratio": ratio,
                "grad_batches": batches,
                "refine_steps": args.refine_steps,
                **extra,
            }
            runs.append(
                (
                    f"{strategy} x{ratio:g}{suffix}",
                    {
                        "method": "deepcuts",
                        "config": config,
                        "name": f"DeepCuts {strategy} x{ratio:g}{suffix}",
                    },
                )
            )
    return _at_seeds(args, runs)


def run_plan(
    plan: Plan, *, progress: bool, run: Callable[..., Any] | None = None
) -> list[dict[str, Any]]:
    """Run (or fetch) every request of ``plan``; one row per run (with its ``seed``)."""
    from pruning.pipeline import run_pruning

    run = run or run_pruning
    for _, request in plan:
        request.method_config()  # refuse bad settings before hours of work
    several = len({request.seed for _, request in plan}) > 1
    rows = []
    for label, request in plan:
        shown = f"{label} · seed {request.seed}" if several else label
        bar = fraction_bar(shown[:40], enabled=progress)

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
    from pruning.compression import stored_ratios

    metrics = record.metrics
    final = metrics.get("recovered") or metrics["pruned"]
    info = record.info.get("method_info", {})
    cost = metrics.get("cost", {})
    # Both compression-ratio definitions; None for head-level runs.
    weight_level = record.info.get("granularity") == "weight"
    ratios = stored_ratios(info, cost if weight_level else {})
    return {
        "label": label,
        "key": record.key,
        "method": record.method,
        "config": record.config,
        "seed": record.seed,
        "heads_removed": int((~record.mask).sum()),
        "heads": int(record.mask.numel()),
        "head_sparsity": record.head_sparsity,
        "dense_accuracy": metrics["dense"].get("accuracy"),
        "pruned_accuracy": metrics["pruned"].get("accuracy"),
        "recovered_accuracy": metrics.get("recovered", {}).get("accuracy"),
        "accuracy": final.get("accuracy"),
        "mcc": final.get("mcc"),
        "params_nonzero": cost.get("params_nonzero"),
        **ratios,
        "reopened": info.get("reopened_count"),
        "seconds": record.info.get("total_seconds"),
        "wall_seconds": wall,
    }


def cmd_run_bench(args: argparse.Namespace) -> int:
    """``headscope bench gates`` / ``headscope bench deepcuts``."""
    plan = gates_plan(args) if args.bench == "gates" else deepcuts_plan(args)
    started = time.perf_counter()
    rows = run_plan(plan, progress=not args.no_progress)
    weight_level = args.bench == "deepcuts"
    table = markdown_table(rows, weight_level=weight_level)
    content: dict[str, Any] = {"rows": rows}
    if weight_level:
        claims = deepcuts_claims(rows, tie_tolerance=args.tie_tolerance)
        content["claims"] = claims
        table += claims_markdown(claims)
    report = bench_report(args, started, **content)
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
