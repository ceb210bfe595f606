"""`headscope bench table1`: the MCAP paper's Table I on our model and data (issue #6).

Every method prunes **before fine-tuning** (``RunRequest(protocol="before")``): the base encoder
is pruned, then fine-tuned with the prepared classifier's own training config, and evaluated on
the test split. Rows: the unpruned fine-tuned classifier, MCAP, random heads, attention entropy
and attention to [SEP] at the same share of heads (20% by default), and the three unstructured
baselines (IMP, L1 unstructured, random weights) at the same share of prunable weights.

Latency is measured after all runs, for every model in the same process, in interleaved rounds
(:func:`pruning.cost.interleaved_latency`) on fixed random tokens: so the ratios between rows are
measured in one run, not assembled from single timings. Unstructured rows keep a dense shape, so
their latency is the dense model's (zeros are multiplied like any other number): the table says
so rather than crediting them a speed-up.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from pruning.cli_bench_runs import (
    Plan,
    add_shared_bench_args,
    base_request,
    bench_report,
    run_plan,
    write_report,
)

HEAD_BASELINES = (
    ("Random heads", "random"),
    ("Attention entropy", "entropy"),
    ("Attention to [SEP]", "sep"),
)


def add_table1_bench(kinds: Any) -> None:
    """Register ``bench table1`` on the ``bench`` subparsers object."""
    table1 = kinds.add_parser(
        "table1",
        help="MCAP vs its six baselines pruned before fine-tuning (the paper's Table I)",
    )
    add_shared_bench_args(table1)
    table1.add_argument(
        "--sparsity", type=float, default=0.2, help="share of heads removed (0.2, as the paper)"
    )
    table1.add_argument(
        "--weight-sparsity",
        type=float,
        default=0.2,
        help="share of prunable weights removed by the unstructured baselines (0.2)",
    )
    table1.add_argument("--episode-size", type=int, default=60, help="MCAP episode size k (60)")
    table1.add_argument(
        "--update-every", type=int, default=8, help="MCAP episodes per optimiser step (8)"
    )
    table1.add_argument(
        "--max-train-examples",
        type=int,
        default=0,
        help="MCAP training instances (0 = the whole training split)",
    )
    table1.add_argument(
        "--skip", type=_names, default=[], help="comma-separated row labels to leave out"
    )
    table1.add_argument(
        "--extra-seeds",
        type=_seeds,
        default=[],
        help="extra seeds of MCAP and random heads (e.g. 1,2): the spread one seed hides",
    )
    table1.add_argument(
        "--latency-batch", type=int, default=32, help="batch size of the latency runs (32)"
    )
    table1.add_argument(
        "--latency-seq-len", type=int, default=128, help="tokens per text of the latency runs"
    )
    table1.add_argument(
        "--latency-repeats", type=int, default=10, help="interleaved latency rounds (10)"
    )


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _seeds(text: str) -> list[int]:
    try:
        return [int(part) for part in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds, got {text!r}") from None


def table1_plan(args: argparse.Namespace) -> Plan:
    """The runs of ``bench table1`` (all in the "before fine-tuning" protocol), in order."""
    from pruning.methods.unstructured import TABLE1_PRESETS

    for name, value in (("--sparsity", args.sparsity), ("--weight-sparsity", args.weight_sparsity)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be between 0 and 1 (got {value}); 0.2 is the paper's.")
    share = f"{args.sparsity:.0%}"
    mcap = {
        "sparsity": args.sparsity,
        "episode_size": args.episode_size,
        "update_every": args.update_every,
        "max_train_examples": args.max_train_examples,
    }
    plan: Plan = [
        (
            "MCAP",
            base_request(args, method="mcap", config=mcap, protocol="before", name=f"MCAP {share}"),
        )
    ]
    for label, method in HEAD_BASELINES:
        plan.append(
            (
                label,
                base_request(
                    args,
                    method=method,
                    config={"sparsity": args.sparsity},
                    protocol="before",
                    name=f"{label} {share} (before fine-tuning)",
                ),
            )
        )
    for seed in args.extra_seeds:
        for label, method, config in (
            ("MCAP", "mcap", mcap),
            ("Random heads", "random", {"sparsity": args.sparsity}),
        ):
            request = base_request(
                args,
                method=method,
                config=config,
                protocol="before",
                name=f"{label} {share} seed {seed} (before fine-tuning)",
            )
            plan.append((f"{label} (seed {seed})", dataclasses.replace(request, seed=seed)))
    weight_share = f"{args.weight_sparsity:.0%}"
    for label, preset in TABLE1_PRESETS.items():
        plan.append(
            (
                label,
                base_request(
                    args,
                    method="unstructured",
                    config={**preset, "sparsity": args.weight_sparsity},
                    protocol="before",
                    name=f"{label} {weight_share} weights (before fine-tuning)",
                ),
            )
        )
    skipped = set(args.skip)
    unknown = skipped - {label for label, _ in plan}
    if unknown:
        raise ValueError(
            f"--skip names unknown rows {sorted(unknown)}; rows are "
            f"{', '.join(label for label, _ in plan)}."
        )
    return [(label, request) for label, request in plan if label not in skipped]


def table1_row(label: str, record: Any) -> dict[str, Any]:
    """One Table-I row from a stored run of the "before fine-tuning" protocol."""
    metrics, cost = record.metrics["pruned"], record.metrics["cost"]
    weight_level = record.info.get("granularity") == "weight"
    params = cost.get("params_nonzero") if weight_level else cost["params_pruned"]
    return {
        "label": label,
        "key": record.key,
        "method": record.method,
        "granularity": record.info.get("granularity", "head"),
        "heads_removed": float(cost.get("head_sparsity", 0.0)),
        "weights_removed": 1.0 - params / cost["params_dense"],
        "mcc": metrics.get("mcc"),
        "accuracy": metrics.get("accuracy"),
        "loss": metrics.get("loss"),
        "flops": cost["flops_pruned"],
        "params": params,
        "seconds": record.info.get("total_seconds"),
    }


def dense_row(record: Any) -> dict[str, Any]:
    """The unpruned fine-tuned classifier's row (its metrics travel with every run)."""
    metrics, cost = record.metrics["dense"], record.metrics["cost"]
    return {
        "label": "Unpruned (fine-tuned)",
        "key": None,
        "method": "none",
        "granularity": "-",
        "heads_removed": 0.0,
        "weights_removed": 0.0,
        "mcc": metrics.get("mcc"),
        "accuracy": metrics.get("accuracy"),
        "loss": metrics.get("loss"),
        "flops": cost["flops_dense"],
        "params": cost["params_dense"],
        "seconds": None,
    }


def measure_rows_latency(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Add ``latency_ms`` (median, p10, p90) to every row, all models timed interleaved."""
    from cache.model_store import ModelStore
    from cache.run_store import RunStore
    from pruning.cost import interleaved_latency
    from pruning.models import pick_device

    device = pick_device(args.device)
    store = RunStore()
    prepared_key = store.get(rows[1]["key"]).model["prepared_key"]
    models = [ModelStore().resolve(prepared_key).load(device=device).model]
    models += [store.load_model(row["key"], device=device).model for row in rows[1:]]
    results = interleaved_latency(
        models,
        batch_size=args.latency_batch,
        seq_len=args.latency_seq_len,
        repeats=args.latency_repeats,
        warmup=1,
    )
    for row, result in zip(rows, results, strict=True):
        row["latency_ms"] = result.median_ms
        row["latency_p10_ms"] = result.p10_ms
        row["latency_p90_ms"] = result.p90_ms
        row["latency"] = result.to_dict()


def markdown_table1(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as the paper's Table I (MCC, accuracy, loss, latency, FLOPs, parameters)."""
    first = rows[0].get("latency", {})
    where = f"batch {first.get('batch_size', '?')} x {first.get('seq_len', '?')} tokens"
    lines = [
        f"| method | heads removed | weights removed | MCC | accuracy | loss | "
        f"latency ms ({where}, p10–p90) | GFLOPs / example | parameters (M) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        latency = (
            f"{r['latency_ms']:.0f} ({r['latency_p10_ms']:.0f}–{r['latency_p90_ms']:.0f})"
            if "latency_ms" in r
            else "–"
        )
        lines.append(
            f"| {r['label']} | {r['heads_removed']:.0%} | {r['weights_removed']:.1%} | "
            f"{r['mcc']:.3f} | {r['accuracy']:.2%} | {r['loss']:.3f} | {latency} | "
            f"{r['flops'] / 1e9:.2f} | {r['params'] / 1e6:.2f} |"
        )
    return "\n".join(lines) + "\n"


def bench_table1(args: argparse.Namespace) -> int:
    """``headscope bench table1``: run (or fetch) the rows, time every model, write the table."""
    import time

    from cache.run_store import RunStore

    plan = table1_plan(args)
    started = time.perf_counter()
    summaries = run_plan(plan, progress=not args.no_progress)
    store = RunStore()
    records = [store.get(summary["key"]) for summary in summaries]
    rows = [dense_row(records[0])]
    rows += [table1_row(label, record) for (label, _), record in zip(plan, records, strict=True)]
    measure_rows_latency(rows, args)
    report = bench_report(args, started, rows=rows)
    return write_report(args, report, markdown_table1(rows))
