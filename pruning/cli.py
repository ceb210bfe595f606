"""The ``headscope`` command line: prepare, evaluate and time classifiers without the dashboard.

Examples::

    headscope prepare                                   # default encoder on Rotten Tomatoes
    headscope prepare --data reviews.csv --text-column review --label-column sentiment
    headscope evaluate --prepared 3f2a --split test
    headscope latency --batch-size 32 --seq-len 128
    headscope models
    headscope info
    headscope methods
    headscope prune --method hisp --sparsity 0.5
    headscope runs
    headscope prune --method astar --set budget=1.0 --score-examples 256
    headscope bench astar --budget 1.0 --examples 256

Errors about the input (a missing file, mismatched classes, bad options) print one line on stderr
and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from pruning.cli_assets import cmd_assets
from pruning.cli_attention import cmd_attention
from pruning.cli_bench import cmd_bench
from pruning.cli_common import (
    TrainProgress,
    build_parser,
    configure_logging,
    data_spec_from_args,
    emit_json,
    format_metrics,
    one_line,
    parse_model_arg,
    train_config_from_args,
)
from pruning.cli_compare import cmd_compare
from pruning.cli_embeddings import cmd_embeddings
from pruning.cli_explain import cmd_explain
from pruning.cli_report import cmd_report
from pruning.cli_runs import cmd_methods, cmd_prune, cmd_runs

log = logging.getLogger(__name__)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _device(value: str) -> Any:
    from pruning.models import pick_device

    return pick_device(value)


def cmd_prepare(args: argparse.Namespace) -> int:
    """``headscope prepare``: fine-tune, evaluate and store (or fetch the stored entry)."""
    from pruning.prepare import prepare_model

    model_spec = parse_model_arg(args.model)
    data_spec = data_spec_from_args(args)
    config = train_config_from_args(args)
    device = _device(args.device)
    progress = TrainProgress(enabled=not args.no_progress)
    events = 0

    def on_event(event: Any) -> None:
        nonlocal events
        events += 1
        progress(event)

    started = time.perf_counter()
    try:
        entry = prepare_model(
            model_spec, data_spec, config, device=device, on_event=on_event, force=args.force
        )
    finally:
        progress.close()
    wall = time.perf_counter() - started
    cached = events == 0
    if args.json:
        emit_json(
            {
                "key": entry.key,
                "path": str(entry.path),
                "cached": cached,
                "label_names": list(entry.label_names),
                "metrics": entry.metrics,
                "model": entry.info.get("model_spec"),
                "data": entry.info.get("data_spec"),
                "data_description": entry.info.get("data_description"),
                "train_config": entry.info.get("train_config"),
                "train": entry.info.get("train"),
                "train_seconds": entry.info.get("train_seconds"),
                "total_seconds": entry.info.get("total_seconds"),
                "wall_seconds": wall,
                "device": entry.info.get("device"),
                "versions": entry.info.get("versions"),
            }
        )
        return 0
    print(f"Prepared {entry.info.get('model_label')} on {entry.info.get('data_description')}")
    print(f"classes: {', '.join(entry.label_names)}")
    for split in ("test", "validation"):
        if split in entry.metrics:
            print(f"{split + ':':12} {format_metrics(entry.metrics[split])}")
    if cached:
        print(f"found in the store in {wall:.1f} s (use --force to retrain)")
    else:
        train = entry.info.get("train", {})
        print(
            f"trained {train.get('steps')} steps in {entry.info.get('train_seconds', 0):.1f} s "
            f"(total {entry.info.get('total_seconds', 0):.1f} s) on {entry.info.get('device')}"
        )
    print(f"stored as {entry.key}: {entry.path}")
    return 0


def _load_for_command(args: argparse.Namespace, device: Any) -> tuple[Any, Any, str]:
    """``(loaded classifier, prepared entry or None, description)`` from --model / --prepared."""
    from cache.model_store import ModelStore
    from pruning.models import load_classifier

    if getattr(args, "prepared", None):
        entry = ModelStore().resolve(args.prepared)
        return entry.load(device=device), entry, f"prepared model {entry.key}"
    spec = parse_model_arg(args.model)
    return load_classifier(spec, device=device), None, spec.label


def _mismatch_hint(args: argparse.Namespace, data_spec: Any) -> str:
    from cache.model_store import ModelStore

    try:
        entries = ModelStore().find(parse_model_arg(args.model), data_spec)
    except (ValueError, OSError):
        return ""
    if not entries:
        return ""
    return f" A prepared model exists for it: `headscope evaluate --prepared {entries[0].key}`."


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``headscope evaluate``: metrics of a model on a split of a dataset with the same classes."""
    from cache.model_store import check_label_compatibility
    from pruning.data import DataSpec, load_dataset
    from pruning.evaluate import evaluate_split

    device = _device(args.device)
    loaded, entry, description = _load_for_command(args, device)
    if args.data is None and entry is not None:
        data_spec = DataSpec(**entry.info["data_spec"])
    else:
        args.data = args.data or "rotten_tomatoes"
        data_spec = data_spec_from_args(args)
    dataset = load_dataset(data_spec)
    try:
        check_label_compatibility(loaded.label_names, dataset.label_names)
    except ValueError as error:
        hint = "" if entry is not None else _mismatch_hint(args, data_spec)
        raise ValueError(f"{error}{hint}") from error
    split = dataset.split(args.split)
    if args.limit is not None:
        split = split.subset(args.limit, seed=data_spec.seed)
    started = time.perf_counter()
    metrics = evaluate_split(
        loaded.model,
        loaded.tokenizer,
        split,
        batch_size=args.batch_size,
        max_length=args.max_length,
    ).to_dict()
    seconds = time.perf_counter() - started
    if args.json:
        emit_json(
            {
                "model": description,
                "key": None if entry is None else entry.key,
                "data": dataset.description,
                "split": args.split,
                "label_names": list(dataset.label_names),
                "metrics": metrics,
                "seconds": seconds,
            }
        )
        return 0
    print(f"{description} on {dataset.name} ({args.split}):")
    print(f"  {format_metrics(metrics)}  in {seconds:.1f} s")
    return 0


def cmd_latency(args: argparse.Namespace) -> int:
    """``headscope latency``: median forward time, parameter count and FLOPs per example."""
    from pruning.cost import count_parameters, flops_per_example, measure_latency

    device = _device(args.device)
    loaded, entry, description = _load_for_command(args, device)
    result = measure_latency(
        loaded.model,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
    ).to_dict()
    params = count_parameters(loaded.model)
    flops = flops_per_example(loaded.model, args.seq_len)
    if args.json:
        emit_json(
            {
                "model": description,
                "key": None if entry is None else entry.key,
                "latency": result,
                "parameters": params,
                "flops_per_example": flops,
            }
        )
        return 0
    print(f"{description}: batch {args.batch_size} x {args.seq_len} tokens on {result['device']}")
    print(
        f"  median {result['median_ms']:.1f} ms (p10 {result['p10_ms']:.1f}, "
        f"p90 {result['p90_ms']:.1f}) over {result['repeats']} runs, {result['threads']} threads"
    )
    print(f"  {params:,} parameters, {flops / 1e9:.2f} GFLOPs per example")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """``headscope models``: the prepared models in the store, newest first."""
    from cache.model_store import ModelStore

    store = ModelStore()
    entries = store.list()
    if args.json:
        emit_json(
            [
                {
                    "key": e.key,
                    "path": str(e.path),
                    "created": e.created,
                    "model": e.info.get("model_label"),
                    "data": e.info.get("data_description"),
                    "label_names": list(e.label_names),
                    "metrics": e.metrics,
                    "train_config": e.info.get("train_config"),
                }
                for e in entries
            ]
        )
        return 0
    if not entries:
        print(f"No prepared models in {store.root}; run `headscope prepare` to make one.")
        return 0
    for e in entries:
        accuracy = e.metric("accuracy")
        shown = "n/a" if accuracy is None else f"{accuracy:.2%}"
        print(
            f"{e.key}  {e.created}  test acc {shown}  {e.info.get('model_label')} on "
            f"{e.info.get('data_name')} [{', '.join(e.label_names)}]"
        )
    print(f"{len(entries)} prepared model(s) in {store.root}")
    return 0


def _located(find: Callable[[], Any]) -> str:
    try:
        return str(find())
    except (ValueError, OSError) as error:
        return f"missing ({one_line(error)})"


def cmd_info(args: argparse.Namespace) -> int:
    """``headscope info``: versions, device, threads and where things are stored and found."""
    import torch

    from cache.fingerprints import software_versions
    from cache.model_store import ModelStore
    from cache.paths import headscope_home, models_dir
    from pruning.data import rotten_tomatoes_path
    from pruning.models import default_model_path, pick_device

    versions = software_versions()
    data: dict[str, object] = {
        "device": str(pick_device()),
        "cuda": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "headscope_home": str(headscope_home()),
        "models_dir": str(models_dir()),
        "prepared_models": len(ModelStore().list()),
        "default_model": _located(default_model_path),
        "default_data": _located(rotten_tomatoes_path),
    }
    if args.json:
        emit_json({"versions": versions, **data})
        return 0
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    for key, value in data.items():
        print(f"{key}: {value}")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "prepare": cmd_prepare,
    "evaluate": cmd_evaluate,
    "latency": cmd_latency,
    "models": cmd_models,
    "info": cmd_info,
    "methods": cmd_methods,
    "prune": cmd_prune,
    "runs": cmd_runs,
    "bench": cmd_bench,
    "explain": cmd_explain,
    "assets": cmd_assets,
    "attention": cmd_attention,
    "embeddings": cmd_embeddings,
    "compare": cmd_compare,
    "report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    """Run the ``headscope`` command line; returns the exit status (2 for input errors)."""
    from pruning.jobs import JobCancelled

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    configure_logging(args.verbose)
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, OSError) as error:
        print(f"headscope {args.command}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, JobCancelled):
        print(f"headscope {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
