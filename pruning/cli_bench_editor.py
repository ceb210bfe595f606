"""``headscope bench editor``: how long the head editor takes from an edit to updated numbers.

On the prepared classifier (the default model on the default data unless --model/--data or
--prepared say otherwise) and the editor's default evaluation slice (256 stratified validation
texts, :func:`pruning.head_editor.editor_slice`), the bench toggles ``--toggles`` random heads one
after another, as a person clicking the grid would, and times each edit until

* the slice's accuracy / MCC / loss are updated (the issue's edit-to-updated-metrics cycle), and
* additionally the sentences' predictions and one head's attention are updated (what the page
  redraws after an edit).

It reports the median and the 90th percentile of both, the unedited model's first evaluation
(which builds the caches) and the machine's load average before and after, since the numbers
depend on what else runs there.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruning.cli_bench_runs import bench_report, write_report
from pruning.cli_common import add_data_args, add_model_args

if TYPE_CHECKING:
    from cache.model_store import PreparedModel
    from pruning.data import LabelledDataset

__all__ = ["add_editor_bench", "bench_editor", "markdown_report"]


def add_editor_bench(kinds: Any) -> None:
    """Register ``bench editor`` on the ``bench`` subparsers object."""
    from pruning.head_editor import DEFAULT_SLICE

    bench = kinds.add_parser(
        "editor", help="head editor: time from a head toggle to updated metrics (median, p90)"
    )
    add_model_args(bench, prepared=True)
    add_data_args(bench, default="rotten_tomatoes")
    bench.add_argument(
        "--examples",
        type=int,
        default=DEFAULT_SLICE,
        help=f"evaluation texts in the slice (default {DEFAULT_SLICE}, the editor's default)",
    )
    bench.add_argument("--split", choices=("validation", "test"), default="validation")
    bench.add_argument("--toggles", type=int, default=30, help="random head toggles timed (30)")
    bench.add_argument(
        "--sentence",
        action="append",
        default=[],
        metavar="TEXT",
        help="a sentence predicted after each edit (repeatable; default: the page's two)",
    )
    bench.add_argument("--seed", type=int, default=0, help="seed of the random toggles")
    bench.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's own choice)"
    )
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    bench.add_argument("--out", type=Path, help="write the result JSON here")
    bench.add_argument("--markdown", type=Path, help="write the table as markdown here")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")


def _prepared(args: argparse.Namespace) -> tuple[PreparedModel, LabelledDataset]:
    """The prepared classifier the options name and its dataset (classes checked)."""
    from cache.model_store import ModelStore, check_label_compatibility
    from pruning.cli_common import data_spec_from_args, parse_model_arg
    from pruning.data import DataSpec, load_dataset

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
                "`headscope prepare` with the same --model and --data first (the editor edits "
                "a fine-tuned classifier)."
            )
        entry = found[0]
    check_label_compatibility(entry.label_names, dataset.label_names)
    return entry, dataset


def bench_editor(args: argparse.Namespace) -> int:
    """``headscope bench editor``."""
    import torch

    from pruning.head_editor import (
        DEFAULT_SENTENCES,
        SliceEvaluator,
        editor_slice,
        time_edit_cycles,
    )
    from pruning.models import pick_device

    if args.toggles < 1:
        raise ValueError("--toggles must be at least 1.")
    if args.examples < 1:
        raise ValueError("--examples must be at least 1.")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError("--threads must be at least 1.")
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_before = os.getloadavg()
    device = pick_device(args.device)
    entry, dataset = _prepared(args)
    loaded = entry.load(device=device)
    split = editor_slice(dataset, args.split, args.examples)
    sentences = list(args.sentence) or list(DEFAULT_SENTENCES)
    evaluator = SliceEvaluator(loaded.model, loaded.tokenizer, split)
    times = time_edit_cycles(evaluator, toggles=args.toggles, seed=args.seed, sentences=sentences)
    n_layers, n_heads = evaluator.shape
    report = bench_report(
        args,
        started,
        model=f"{entry.info.get('model_label', 'model')} (prepared {entry.key})",
        prepared_key=entry.key,
        data=dataset.description,
        heads=f"{n_layers} x {n_heads}",
        split=args.split,
        examples=evaluator.n_examples,
        sentences=sentences,
        device=str(device),
        torch_threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        load_average_before=list(load_before),
        load_average_after=list(os.getloadavg()),
        cycles=times.to_dict(),
    )
    return write_report(args, report, markdown_report(report))


def markdown_report(report: dict[str, Any]) -> str:
    """The benchmark's table as markdown."""
    cycles = report["cycles"]
    before = ", ".join(f"{v:.2f}" for v in report["load_average_before"])
    after = ", ".join(f"{v:.2f}" for v in report["load_average_after"])
    lines = [
        f"Head editor on {report['model']} ({report['heads']} heads), {report['examples']} "
        f"{report['split']} texts; {report['cpu_count']} CPUs, {report['torch_threads']} torch "
        f"threads, {report['device']}; load average {before} before, {after} after.",
        "",
        "| measurement | median (s) | p90 (s) | max (s) |",
        "|---|---|---|---|",
        f"| edit → updated metrics ({len(cycles['metrics_seconds'])} random toggles) | "
        f"{cycles['median_metrics']:.2f} | {cycles['p90_metrics']:.2f} | "
        f"{max(cycles['metrics_seconds']):.2f} |",
        f"| edit → metrics + {len(report['sentences'])} predictions + head attention | "
        f"{cycles['median_update']:.2f} | {cycles['p90_update']:.2f} | "
        f"{max(cycles['update_seconds']):.2f} |",
        f"| unedited model, first evaluation (builds the caches) | "
        f"{cycles['reference_seconds']:.2f} | | |",
    ]
    return "\n".join(lines) + "\n"
