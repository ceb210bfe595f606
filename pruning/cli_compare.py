"""``headscope compare``: stored runs side by side, their mask overlap, the masked-vs-removed check.

Examples::

    headscope compare 3f2a9c 9b1e44
    headscope compare 3f2a9c 9b1e44 5d0c7a --check
    headscope compare 3f2a9c 9b1e44 --json

For each run: name, method, heads removed, zeroed weights (weight-level runs), final accuracy and
MCC (after recovery fine-tuning when the run had it), the FLOPs-predicted speedup
(``flops_dense / flops_pruned`` of the run's cost) and, when it was measured on this machine
(Compare page, batch 32 x 128 tokens, :mod:`pruning.latency_cache`), the measured speedup. Then
the IoU matrix of the heads the runs remove (masks bool ``(n_layers, n_heads)``, True = keep;
runs of different head grids are refused). ``--check`` runs the masked-vs-removed check
(:mod:`pruning.consistency`) on 32 test texts of each run's prepared classifier (cached) and exits
with status 1 when a run's logits disagree. Keys may be unique prefixes (4+ hex digits). Input
errors print one line on stderr and exit with status 2 (``pruning.cli``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pruning.cli_common import add_common_args, emit_json

if TYPE_CHECKING:
    from cache.run_format import RunRecord
    from cache.run_store import RunStore
    from pruning.consistency import ConsistencyResult

__all__ = [
    "add_compare_command",
    "cmd_compare",
    "final_metrics",
    "predicted_speedup",
    "resolve_run",
]

EXIT_MISMATCH = 1
LATENCY_BATCH, LATENCY_SEQ_LEN = 32, 128
_NAME_WIDTH = 28


def add_compare_command(commands: Any) -> None:
    """Register ``headscope compare`` on the ``headscope`` subparsers object."""
    compare = commands.add_parser(
        "compare", help="compare stored runs: metrics, speedups, mask IoU, masked-vs-removed check"
    )
    compare.add_argument(
        "keys", nargs="+", metavar="KEY", help="run keys or unique prefixes (`headscope runs`)"
    )
    compare.add_argument(
        "--check",
        action="store_true",
        help="check that each run's removed model gives its gated model's logits (cached)",
    )
    compare.add_argument(
        "--texts", type=int, default=32, help="test texts the --check runs on (32)"
    )
    compare.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest |Δlogit| called a match (1e-4)"
    )
    compare.add_argument(
        "--refresh", action="store_true", help="with --check: ignore cached verdicts"
    )
    add_common_args(compare)


def final_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The run's final metrics (after recovery when it had it) and whether they are recovered."""
    recovered = metrics.get("recovered")
    if isinstance(recovered, Mapping) and recovered:
        return dict(recovered), True
    pruned = metrics.get("pruned")
    return (dict(pruned) if isinstance(pruned, Mapping) else {}), False


def predicted_speedup(metrics: Mapping[str, Any]) -> float | None:
    """``flops_dense / flops_pruned`` from a run's cost metrics (None when not recorded)."""
    cost = metrics.get("cost")
    if not isinstance(cost, Mapping):
        return None
    dense, pruned = cost.get("flops_dense"), cost.get("flops_pruned")
    if not isinstance(dense, int | float) or not isinstance(pruned, int | float) or pruned <= 0:
        return None
    return float(dense) / float(pruned)


def _weight_sparsity(metrics: Mapping[str, Any]) -> float | None:
    cost = metrics.get("cost")
    if not isinstance(cost, Mapping):
        return None
    nonzero, total = cost.get("params_nonzero"), cost.get("params_dense")
    if not isinstance(nonzero, int | float) or not isinstance(total, int | float) or not total:
        return None
    return 1.0 - float(nonzero) / float(total)


def resolve_run(store: RunStore, key: str) -> RunRecord:
    """The run with this key, or the only one whose key starts with it (4+ hex digits).

    Raises:
        ValueError: no run, or more than one, matches.
    """
    text = key.strip().lower()
    summaries, _ = store.list()
    matches = [
        s.key for s in summaries if s.key == text or (len(text) >= 4 and s.key.startswith(text))
    ]
    if len(matches) != 1:
        known = "; `headscope runs` lists them" if summaries else "; none are stored yet"
        what = "No stored run" if not matches else "More than one stored run"
        raise ValueError(f"{what} matches {key!r}{known}.")
    return store.get(matches[0])


def _row(record: RunRecord, measured: Mapping[str, Any] | None) -> dict[str, Any]:
    final, recovered = final_metrics(record.metrics)
    return {
        "key": record.key,
        "name": record.name,
        "method": record.method,
        "granularity": str(record.info.get("granularity", "head")),
        "head_sparsity": record.head_sparsity,
        "weight_sparsity": _weight_sparsity(record.metrics),
        "accuracy": final.get("accuracy"),
        "mcc": final.get("mcc"),
        "recovered": recovered,
        "dense_accuracy": (record.metrics.get("dense") or {}).get("accuracy"),
        "predicted_speedup": predicted_speedup(record.metrics),
        "measured_speedup": None if measured is None else measured.get("speedup"),
        "latency_ms": None if measured is None else measured.get("latency_ms"),
    }


def _checks(
    records: list[RunRecord], args: argparse.Namespace, store: RunStore
) -> dict[str, ConsistencyResult]:
    """The masked-vs-removed verdict of every run, each against its own prepared classifier."""
    from cache.model_store import ModelStore
    from pruning.consistency import check_run, consistency_texts
    from pruning.data import DataSpec, load_dataset

    if args.texts < 1:
        raise ValueError(f"--texts must be at least 1; got {args.texts}.")
    model_store = ModelStore()
    verdicts = {}
    loaded: dict[str, Any] = {}
    texts_by_key: dict[str, list[str]] = {}
    for record in records:
        prepared_key = str(record.model.get("prepared_key") or "")
        prepared = model_store.get(prepared_key) if prepared_key else None
        if prepared is None:
            raise ValueError(
                f"Run {record.key} names no stored prepared classifier ({prepared_key or 'none'});"
                " prepare it again to check this run."
            )
        if prepared_key not in texts_by_key:
            dataset = load_dataset(DataSpec(**prepared.info["data_spec"]))
            texts_by_key[prepared_key] = consistency_texts(dataset, args.texts)

        def load(entry: Any = prepared, key: str = prepared_key) -> Any:
            if key not in loaded:
                loaded.clear()
                device = None if args.device == "auto" else args.device
                loaded[key] = entry.load(device=device)
            return loaded[key]

        verdicts[record.key] = check_run(
            record,
            prepared_key,
            load,
            texts_by_key[prepared_key],
            tolerance=args.tolerance,
            run_store=store,
            refresh=args.refresh,
        )
    return verdicts


def _number(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec`` ("6.1%", ...), or a dash padded to the same width."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        width = int(spec.split(".")[0] or 0)
        return "—".rjust(width)
    return format(value, spec)


def _print_table(rows: list[dict[str, Any]], verdicts: Mapping[str, ConsistencyResult]) -> None:
    header = (
        f"{'#':>2}  {'key':16}  {'name':{_NAME_WIDTH}}  {'method':12} {'heads':>6} "
        f"{'weights':>7} {'acc':>7} {'MCC':>7} {'pred×':>6} {'meas×':>6}"
    )
    print(header + ("  check" if verdicts else ""))
    for number, row in enumerate(rows, start=1):
        name = row["name"]
        name = name if len(name) <= _NAME_WIDTH else name[: _NAME_WIDTH - 1] + "…"
        line = (
            f"{number:>2}  {row['key']:16}  {name:{_NAME_WIDTH}}  {row['method'][:12]:12} "
            f"{_number(row['head_sparsity'], '6.1%')} {_number(row['weight_sparsity'], '7.1%')} "
            f"{_number(row['accuracy'], '7.4f')} {_number(row['mcc'], '7.4f')} "
            f"{_number(row['predicted_speedup'], '6.2f')} "
            f"{_number(row['measured_speedup'], '6.2f')}"
        )
        verdict = verdicts.get(row["key"])
        print(line + (f"  {verdict.summary}" if verdict is not None else ""))
    if any(row["recovered"] for row in rows):
        print("acc / MCC: after recovery fine-tuning where the run had it.")


def cmd_compare(args: argparse.Namespace) -> int:
    """``headscope compare``: returns 0, or 1 when ``--check`` finds a mismatch."""
    from cache.run_store import RunStore
    from pruning.latency_cache import cached_latencies
    from viz.compare_matrix import mask_iou_matrix

    store = RunStore()
    records: list[RunRecord] = []
    for key in args.keys:
        record = resolve_run(store, key)
        if all(record.key != seen.key for seen in records):
            records.append(record)
    matrix = mask_iou_matrix([record.mask.numpy() for record in records])
    device = None if args.device == "auto" else args.device
    measured = cached_latencies(
        [r.key for r in records], batch_size=LATENCY_BATCH, seq_len=LATENCY_SEQ_LEN, device=device
    )
    rows = [_row(record, measured.get(record.key)) for record in records]
    verdicts = _checks(records, args, store) if args.check else {}
    mismatch = any(v.status == "mismatch" for v in verdicts.values())
    if args.json:
        for row in rows:
            if row["key"] in verdicts:
                row["consistency"] = verdicts[row["key"]].to_dict()
        keys = [r.key for r in records]
        emit_json({"runs": rows, "iou": {"keys": keys, "matrix": matrix.round(6).tolist()}})
        return EXIT_MISMATCH if mismatch else 0
    _print_table(rows, verdicts)
    print("\nIoU of the removed heads (1 = same heads removed; two runs removing none: 1):")
    print("    " + "".join(f"{n:>6}" for n in range(1, len(rows) + 1)))
    for number, values in enumerate(matrix, start=1):
        print(f"{number:>4}" + "".join(f"{v:6.2f}" for v in values))
    print(
        "pred×: FLOPs-predicted speedup; meas×: measured on this machine (batch "
        f"{LATENCY_BATCH} × {LATENCY_SEQ_LEN} tokens), — when not measured yet."
    )
    return EXIT_MISMATCH if mismatch else 0
