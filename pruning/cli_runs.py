"""``headscope prune``, ``headscope runs`` and ``headscope methods``: pruning from the shell.

Examples::

    headscope methods
    headscope prune --method hisp --sparsity 0.5
    headscope prune --method random --sparsity 0.5 --seed 1 --set min_heads_per_layer=1
    headscope prune --method random --sparsity 0.3,0.5 --seeds 0,1,2 --executor ray
    headscope runs
    headscope runs --export 3f2a9c --to run.zip
    headscope runs --import run.zip
    headscope runs --delete 3f2a9c
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from typing import TYPE_CHECKING, Any

from pruning.cli_common import (
    add_common_args,
    add_data_args,
    add_executor_args,
    add_model_args,
    data_spec_from_args,
    emit_json,
    executor_from_args,
    fraction_bar,
    parse_model_arg,
    show_event,
)

if TYPE_CHECKING:
    from cache.run_store import RunRecord
    from pruning.pipeline import RunRequest


def add_run_commands(commands: Any) -> None:
    """Register the run subcommands on the ``headscope`` subparsers object."""
    methods = commands.add_parser("methods", help="list the pruning methods and their settings")
    methods.add_argument("--json", action="store_true", help="print as JSON")

    prune = commands.add_parser("prune", help="prune heads with a method and store the run")
    prune.add_argument("--method", required=True, help="method name (see `headscope methods`)")
    prune.add_argument(
        "--sparsity",
        help="share of heads to remove (0..1); a comma list (0.3,0.5) makes a sweep",
    )
    prune.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other method setting, e.g. --set iterative=true (repeatable)",
    )
    add_model_args(prune, prepared=True)
    add_data_args(prune, default="rotten_tomatoes")
    prune.add_argument("--seed", type=int, default=0, help="seed of the method and recovery")
    prune.add_argument(
        "--seeds", help="a sweep over seeds, e.g. 0,1,2 (instead of --seed); see --executor"
    )
    prune.add_argument(
        "--score-split",
        choices=("validation", "train"),
        default="validation",
        help="split the method scores on (A* search: the texts it evaluates candidates on)",
    )
    prune.add_argument("--score-examples", type=int, default=256, help="texts used for scoring")
    prune.add_argument("--eval-split", choices=("test", "validation"), default="test")
    prune.add_argument("--eval-examples", type=int, help="evaluate on N texts (default: all)")
    prune.add_argument("--recovery-steps", type=int, default=0, help="fine-tune after pruning")
    prune.add_argument(
        "--protocol",
        choices=("after", "before"),
        default="after",
        help="after: prune the fine-tuned classifier (default); before: prune the encoder, then "
        "fine-tune it as the classifier was prepared (the MCAP paper's protocol)",
    )
    prune.add_argument("--name", default="", help="a label for the run list")
    prune.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(prune)
    add_executor_args(prune)

    runs = commands.add_parser("runs", help="list, export, import or delete stored runs")
    runs.add_argument("--method", help="only runs of this method")
    runs.add_argument("--filter", help="only runs whose name, method or key contains this")
    action = runs.add_mutually_exclusive_group()
    action.add_argument("--show", metavar="KEY", help="print one run (metrics, mask, trace size)")
    action.add_argument("--export", metavar="KEY", help="export a run (see --to)")
    action.add_argument("--import", dest="import_path", metavar="PATH", help="import a run")
    action.add_argument("--delete", metavar="KEY", help="delete a run")
    runs.add_argument("--to", help="export destination (.zip for an archive, else a folder)")
    runs.add_argument("--json", action="store_true", help="print as JSON")


def _parse_value(raw: str, annotation: Any) -> Any:
    """Turn a --set value into the config field's type."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    kind = args[0] if args else annotation
    if raw.lower() in ("none", "null", ""):
        return None
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{raw!r} is not a boolean; use true or false.")
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        example = "3" if kind is int else "0.5"
        noun = "a whole number" if kind is int else "a number"
        raise ValueError(f"{raw!r} is not {noun}; give one such as {example}.") from None
    return raw


def method_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The method settings named by --sparsity and --set NAME=VALUE."""
    from pruning.methods.base import get_method

    config_class = get_method(args.method).config_class
    hints = typing.get_type_hints(config_class)
    config: dict[str, Any] = {}
    if args.sparsity is not None:
        if "sparsity" not in hints:
            raise ValueError(f"Method {args.method!r} has no sparsity setting.")
        config["sparsity"] = (
            args.sparsity if isinstance(args.sparsity, float) else float(args.sparsity)
        )
    for item in args.set:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in hints:
            known = ", ".join(sorted(hints))
            raise ValueError(f"--set {item!r}: use NAME=VALUE with NAME one of: {known}.")
        try:
            config[name] = _parse_value(raw.strip(), hints[name])
        except ValueError as error:
            raise ValueError(f"--set {item!r}: {error}") from None
    return config


def cmd_methods(args: argparse.Namespace) -> int:
    from pruning.methods.base import list_methods

    rows: list[dict[str, Any]] = []
    for cls in list_methods():
        fields = [
            {
                "name": spec.name,
                "default": spec.default if spec.default is not dataclasses.MISSING else None,
                "help": spec.metadata.get("help", ""),
            }
            for spec in dataclasses.fields(cls.config_class)
        ]
        rows.append(
            {
                "name": cls.name,
                "title": cls.title,
                "granularity": cls.granularity,
                "paper": cls.paper,
                "settings": fields,
            }
        )
    if args.json:
        emit_json(rows)
        return 0
    for row in rows:
        print(f"{row['name']:12} {row['title']} [{row['granularity']}]")
        for spec in row["settings"]:
            print(f"    {spec['name']}={spec['default']!r}  {spec['help']}")
    return 0


def _number_list(text: str, kind: type, flag: str) -> list[Any]:
    """``"0.3,0.5"`` -> ``[0.3, 0.5]``; duplicates dropped, order kept."""
    values: list[Any] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = kind(part)
        except ValueError:
            noun = "whole numbers" if kind is int else "numbers"
            raise ValueError(f"{flag} {text!r}: give {noun} separated by commas.") from None
        if value not in values:
            values.append(value)
    if not values:
        raise ValueError(f"{flag} is empty; give at least one value.")
    return values


def prune_requests(args: argparse.Namespace) -> list[RunRequest]:
    """One request per (sparsity, seed) named by --sparsity and --seed/--seeds."""
    from pruning.pipeline import RunRequest

    sparsities: list[float | None] = (
        [None] if args.sparsity is None else _number_list(args.sparsity, float, "--sparsity")
    )
    seeds = [args.seed] if not args.seeds else _number_list(args.seeds, int, "--seeds")
    several = len(sparsities) * len(seeds) > 1
    requests = []
    for sparsity in sparsities:
        for seed in seeds:
            args_one = argparse.Namespace(**{**vars(args), "sparsity": sparsity})
            name = args.name
            if several and name:
                name += "".join([f" {sparsity:g}" if sparsity is not None else "", f" seed {seed}"])
            requests.append(
                RunRequest(
                    method=args.method,
                    config=method_config_from_args(args_one),
                    model=parse_model_arg(args.model),
                    data=data_spec_from_args(args),
                    prepared_key=args.prepared,
                    seed=seed,
                    score_split=args.score_split,
                    score_examples=args.score_examples,
                    eval_split=args.eval_split,
                    eval_examples=args.eval_examples,
                    recovery_steps=args.recovery_steps,
                    protocol=args.protocol,
                    device=args.device,
                    name=name,
                )
            )
    for request in requests:
        request.method_config()
    return requests


def cmd_prune(args: argparse.Namespace) -> int:
    from pruning.pipeline import run_pruning
    from pruning.ray_sweep import run_requests

    requests = prune_requests(args)
    executor = executor_from_args(args)
    bar = fraction_bar(args.method, enabled=not args.no_progress)
    fractions = [0.0] * len(requests)

    def on_event(event: Any) -> None:
        show_event(bar, event)

    def on_sweep_event(index: int, event: Any) -> None:
        fractions[index] = max(fractions[index], event.fraction)
        total = dataclasses.replace(event, fraction=sum(fractions) / len(fractions))
        show_event(bar, total, prefix=f"run {index + 1}/{len(requests)}: ")

    try:
        if len(requests) == 1:
            records = [run_pruning(requests[0], on_event=on_event, executor=executor)]
        else:
            records = run_requests(requests, executor=executor, on_event=on_sweep_event)
    finally:
        bar.close()
    summaries = [_prune_summary(record) for record in records]
    if args.json:
        emit_json(summaries[0] if len(summaries) == 1 else summaries)
        return 0
    for record, summary in zip(records, summaries, strict=True):
        _print_run(record, summary)
    return 0


def _prune_summary(record: RunRecord) -> dict[str, Any]:
    return {
        "key": record.key,
        "method": record.method,
        "kept": int(record.mask.sum()),
        "heads": int(record.mask.numel()),
        "metrics": record.metrics,
        "seconds": record.info.get("total_seconds"),
    }


def _print_run(record: RunRecord, summary: dict[str, Any]) -> None:
    dense, pruned = record.metrics["dense"], record.metrics["pruned"]
    print(f"run {record.key}: {record.method}, kept {summary['kept']} of {summary['heads']} heads")
    for name in ("accuracy", "mcc", "macro_f1", "loss"):
        line = f"  {name:9} dense {dense.get(name, float('nan')):.4f}"
        line += f"  pruned {pruned.get(name, float('nan')):.4f}"
        if "recovered" in record.metrics:
            line += f"  recovered {record.metrics['recovered'].get(name, float('nan')):.4f}"
        print(line)
    cost = record.metrics.get("cost", {})
    if cost:
        print(
            f"  params {cost['params_dense']:,} -> {cost['params_pruned']:,}; "
            f"FLOPs/example@{cost['flops_seq_len']} {cost['flops_dense'] / 1e9:.2f} G -> "
            f"{cost['flops_pruned'] / 1e9:.2f} G"
        )


def cmd_runs(args: argparse.Namespace) -> int:
    from cache.model_store import ModelStore
    from cache.run_store import RunStore

    store = RunStore()
    if args.show:
        record = store.get(args.show)
        data = {**record.json_fields(), "mask": record.mask.int().tolist()}
        data.pop("trace", None)
        data["trace_events"] = len(record.trace)
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
        return 0
    if args.delete:
        if not store.delete(args.delete):
            raise ValueError(f"No run {args.delete!r} in the store; `headscope runs` lists them.")
        print(f"deleted {args.delete}")
        return 0
    if args.import_path:
        record = store.import_run(args.import_path)
        print(f"imported run {record.key} ({record.method})")
        return 0
    if args.export:
        if not args.to:
            raise ValueError("--export needs --to PATH (a .zip file or a folder).")
        record = store.get(args.export)
        base = tokenizer = None
        if not record.has_model:
            prepared = ModelStore().resolve(str(record.model.get("prepared_key")))
            loaded = prepared.load(device="cpu")
            base, tokenizer = loaded.model, loaded.tokenizer
        target = store.export(
            args.export,
            args.to,
            as_zip=str(args.to).endswith(".zip"),
            base_model=base,
            tokenizer=tokenizer,
        )
        print(f"exported run {args.export} to {target}")
        return 0
    summaries, problems = store.list(method=args.method, text=args.filter)
    if args.json:
        emit_json({"runs": [dataclasses.asdict(s) for s in summaries], "problems": problems})
        return 0
    for summary in summaries:
        accuracy = summary.metrics.get("accuracy", float("nan"))
        delta = summary.metrics.get("delta_accuracy", float("nan"))
        weights = summary.metrics.get("weight_sparsity")
        sparsity = (
            f"weights {weights:6.1%}"
            if weights is not None
            else f"heads {summary.head_sparsity:6.1%}"
        )
        print(
            f"{summary.key}  {summary.created[:19]}  {summary.method:10} "
            f"{sparsity}  acc {accuracy:.4f} (Δ {delta:+.4f})  {summary.name}"
        )
    for problem in problems:
        print(f"warning: {problem}")
    print(f"{len(summaries)} run(s) in {store.root}")
    return 0
