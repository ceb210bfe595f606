"""`headscope bench quality`: the command line of :mod:`pruning.bench_quality`.

Every plan setting has a flag named after its :class:`pruning.bench_quality.QualitySettings`
field (``--gate-steps`` sets ``gate_steps``); a flag given explicitly overrides the full or the
``--quick`` preset, and the resolved settings and plan are in the JSON report. ``--max-rows 0``
and ``--eval-examples 0`` mean all rows and the whole test split (so they can undo the preset).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pruning.cli_bench_runs import _floats, _names, add_shared_bench_args
from pruning.cli_common import add_executor_args, emit_json, executor_from_args

# flag -> (type, help); the flag's destination is the QualitySettings field of the same name.
_PLAN_FLAGS: dict[str, tuple[Any, str]] = {
    "--methods": (
        _names,
        "comma-separated plan families: random, hisp, entropy, sep, magnitude (the sweep), astar "
        "(with random_budget), autoattention, l0_gates, mcap (with its baselines), deepcuts "
        "(default: all)",
    ),
    "--search-examples": (
        int,
        "score texts of A* and random_budget, 0 = as --examples (the default)",
    ),
    "--sparsities": (_floats, "head sparsities of the sweep (full 0.1..0.9, quick 0.3,0.5)"),
    "--recovery-sparsities": (
        _floats,
        "sweep sparsities that also get a recovery row (full: all, quick: the largest)",
    ),
    "--recovery-steps": (int, "recovery fine-tuning steps, 0 = none (full 200, quick 10)"),
    "--recovery-lr": (float, "peak learning rate of the recovery (5e-5)"),
    "--budgets": (_floats, "A* / random budgets in accuracy points (full 0.5,1,2,4, quick 2)"),
    "--random-trials": (int, "random pruning orders per budget (full 20, quick 5)"),
    "--gate-steps": (int, "AutoAttention and L0 joint training steps (full 300, quick 20)"),
    "--mcap-episode-size": (int, "MCAP episode size (full 60, quick 30)"),
    "--mcap-update-every": (int, "MCAP episodes per optimiser step (full 8, quick 2)"),
    "--mcap-train-examples": (
        int,
        "MCAP training instances, 0 = the whole training split (full 0, quick 120)",
    ),
    "--strategies": (
        _names,
        "DeepCuts strategies (full layer_mag_weight,global_mag_weight,cam_cut,smooth_cut; "
        "quick layer_mag_weight,cam_cut)",
    ),
    "--ratios": (_floats, "DeepCuts compression ratios (full 2,3,3.5,4, quick 3)"),
    "--grad-batches": (int, "DeepCuts gradient batches (full 16, quick 4)"),
    "--ratio-definition": (
        str,
        "how the DeepCuts ratios read: bert_base_equivalent (default: the share of prunable "
        "weights the paper's ratio leaves on BERT-base), prunable or whole_model",
    ),
    "--latency-batch": (int, "texts per timed forward (full 32, quick 8)"),
    "--latency-seq-len": (int, "tokens per text of the timed forwards (full 128, quick 64)"),
    "--latency-repeats": (int, "interleaved timing rounds (full 10, quick 3)"),
}


def add_quality_bench(kinds: Any) -> None:
    """Register ``bench quality`` on the ``bench`` subparsers object."""
    quality = kinds.add_parser(
        "quality",
        help="every pruning method on one model and dataset: quality table, the papers' "
        "claims, Pareto figures",
    )
    add_shared_bench_args(quality)
    # None = the preset's value (full or --quick).
    quality.set_defaults(examples=None, data=None)
    quality.add_argument(
        "--quick",
        action="store_true",
        help="the CI mode: every family, small (2,000 rows, 64 score texts, few settings); "
        "explicit flags override it",
    )
    for flag, (kind, text) in _PLAN_FLAGS.items():
        quality.add_argument(flag, type=kind, help=text)
    quality.add_argument(
        "--skip-latency", action="store_true", help="do not time the pruned models"
    )
    quality.add_argument(
        "--figures",
        type=Path,
        help="write quality_sparsity.html and quality_latency.html into this folder",
    )
    add_executor_args(quality)


def options_from_args(args: argparse.Namespace) -> Any:
    """The :class:`pruning.bench_quality.QualityOptions` that the parsed flags name."""
    from pruning.bench_quality import SETTING_NAMES, QualityOptions

    return QualityOptions(
        quick=args.quick,
        model=args.model,
        prepared=args.prepared,
        data=args.data,
        text_column=args.text_column,
        label_column=args.label_column,
        data_seed=args.data_seed,
        seed=args.seed,
        device=args.device,
        skip_latency=args.skip_latency,
        progress=not args.no_progress,
        overrides={name: getattr(args, name) for name in SETTING_NAMES},
        executor=executor_from_args(args),
    )


def bench_quality(args: argparse.Namespace) -> int:
    """``headscope bench quality``: run the bench, write JSON, markdown and figures."""
    from pruning.bench_quality import (
        quality_markdown,
        run_quality_bench,
        write_atomic,
        write_quality_figures,
    )

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = run_quality_bench(options_from_args(args), on_message=say)
    if args.figures is not None:
        report["figures"] = [str(p) for p in write_quality_figures(report, args.figures)]
    table = quality_markdown(report)
    if args.out is not None:
        write_atomic(args.out, json.dumps(report, indent=2, default=str) + "\n")
    if args.markdown is not None:
        write_atomic(args.markdown, table)
    if args.json:
        emit_json(report)
    else:
        print(table, end="")
    return 0
