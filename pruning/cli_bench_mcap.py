"""`headscope bench table1`: the MCAP paper's Table I on our model and data (issues #6, #27).

Rajapaksha and Crespi, "Explainable Attention Pruning: A Meta-learning-based Approach", IEEE TAI
2024 (https://openreview.net/forum?id=2HXUDneIMH), Section III-C: every method prunes **before
fine-tuning**, then "We fine-tune a separate model ... for three epochs and try four learning
rates: [2, 3, 4, 5] x 10^-5. The best evaluation accuracies are averaged and the most suitable
hyperparameters for each pruned model" are kept; "the baseline pruning strategies ... target the
removal of only 20%". Rows: the unpruned fine-tuned classifier, MCAP, random heads, attention
entropy and attention to [SEP] at the same share of heads (20%), and the three unstructured
baselines (IMP, L1 unstructured, random weights) at the same share of prunable weights.

What the bench does, by default:

* for every learning rate of ``--learning-rates`` (the paper's four) and every seed of ``--seeds``
  (0, 1, 2) it prepares (or finds in the model store) the encoder fine-tuned for ``--epochs``
  (3, the paper's) at that rate with that seed: the unpruned row of that cell;
* every row runs with ``RunRequest(protocol="before")`` on that classifier at that seed: the base
  encoder is pruned (the method's seed = the seed), then fine-tuned with the classifier's own
  training config (epochs, rate, seed), and evaluated on the test split;
* each row keeps the learning rate with the best mean validation accuracy over the seeds (the
  models are evaluated on the validation split for this: ``--select-examples`` texts, default
  all); the table reports the test metrics at that rate, mean ± sample sd over the seeds;
* MCAP is paired with every other row seed by seed (same fine-tuning seed, same data), with a
  verdict per metric by the rule of :mod:`pruning.bench_table1_stats` (all paired differences of
  one sign and their mean beyond 2 x their sd, over at least 3 seeds; else "not
  distinguishable"); the stability of MCAP's head ranking is the Spearman correlation of its head
  scores between seeds; MCAP's pattern CNN reports its held-out accuracy and confusion matrix.

Latency is measured after all runs, for the first seed's model of every row at its chosen rate,
in the same process in interleaved rounds (:func:`pruning.cost.interleaved_latency`) on fixed
random tokens. Unstructured rows keep a dense shape, so their latency is the dense model's.

Deviations from the paper, and why:

* Data and model: the default dataset (Rotten Tomatoes, offline) and encoder (all-MiniLM-L6-v2,
  6 x 12 heads), not SST-2 / CoLA on BERT-base: GLUE cannot be downloaded here and BERT-base
  does not train in reasonable time on a CPU (``--model`` / ``--data`` take others).
* CPU time: the defaults are the paper's (4 rates x 3 epochs x 3 seeds x 7 rows + 12 classifiers
  = 96 fine-tunings of 3 epochs); on the 2-core CPU one epoch of the default model takes about
  130 s, so the whole bench takes about 11 hours. ``--learning-rates 5e-5`` (one rate, no
  selection) cuts that to a quarter; ``--max-steps`` caps every fine-tuning for smoke runs.
* Selection: the paper selects on its evaluation set, which is also the set it reports; here the
  rate is selected on the validation split and the table reports the separate test split.
* Batch size 32, warm-up 6%, weight decay 0.01 (the paper gives none of them).
* MCAP's pattern CNN learns from generated maps and rule-labelled maps of the model, not from the
  paper's 1,000 downloaded images (see :mod:`pruning.methods.mcap_patterns`).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Mapping, Sequence
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
PAPER_LEARNING_RATES = (2e-5, 3e-5, 4e-5, 5e-5)
PAPER_EPOCHS = 3
DEFAULT_SEEDS = (0, 1, 2)
# (learning rate or None for a given classifier, seed) -> prepared classifier key
Grid = dict[tuple[float | None, int], str]


def add_table1_bench(kinds: Any) -> None:
    """Register ``bench table1`` on the ``bench`` subparsers object."""
    table1 = kinds.add_parser(
        "table1",
        help="MCAP vs its six baselines pruned before fine-tuning (the paper's Table I), over "
        "seeds and learning rates",
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
    table1.add_argument(
        "--seeds",
        type=_seeds,
        default=list(DEFAULT_SEEDS),
        help="seeds of every row: the fine-tuning seed and the method's (default 0,1,2)",
    )
    table1.add_argument(
        "--learning-rates",
        type=_rates,
        default=list(PAPER_LEARNING_RATES),
        help="fine-tuning learning rates tried per row (the paper's 2e-5,3e-5,4e-5,5e-5); the "
        "best mean validation accuracy picks one per row",
    )
    table1.add_argument(
        "--epochs", type=int, default=PAPER_EPOCHS, help="fine-tuning epochs (3, the paper's)"
    )
    table1.add_argument(
        "--train-batch-size", type=int, default=32, help="fine-tuning batch size (32)"
    )
    table1.add_argument(
        "--max-steps", type=int, help="cap every fine-tuning at this many steps (smoke runs)"
    )
    table1.add_argument(
        "--select-examples",
        type=int,
        help="validation texts that choose the learning rate (default: the whole split)",
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
        "--mcap-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other MCAP setting, e.g. --mcap-set pattern_maps=50 (repeatable)",
    )
    table1.add_argument(
        "--skip", type=_names, default=[], help="comma-separated row labels to leave out"
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
        seeds = [int(part) for part in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"give distinct seeds, e.g. 0,1,2 (got {text!r})")
    return seeds


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated learning rates, got {text!r}"
        ) from None
    if not rates or any(not 0 < r <= 1e-2 for r in rates) or len(set(rates)) != len(rates):
        raise argparse.ArgumentTypeError(
            f"give distinct learning rates in (0, 0.01], e.g. 2e-5,5e-5 (got {text!r})"
        )
    return rates


def _mcap_config(args: argparse.Namespace) -> dict[str, Any]:
    """MCAP's settings: the bench's own flags, then ``--mcap-set NAME=VALUE``."""
    from pruning.cli_runs import method_config_from_args

    extra = method_config_from_args(
        argparse.Namespace(method="mcap", sparsity=None, set=list(getattr(args, "mcap_set", [])))
    )
    return {
        "sparsity": args.sparsity,
        "episode_size": args.episode_size,
        "update_every": args.update_every,
        "max_train_examples": args.max_train_examples,
        **extra,
    }


def table1_plan(args: argparse.Namespace) -> Plan:
    """The rows of Table I at ``args.seed`` on ``args``' classifier, in order ("before").

    Raises:
        ValueError: a share outside (0, 1), an unknown ``--skip`` row or a bad MCAP setting.
    """
    from pruning.methods.unstructured import TABLE1_PRESETS

    for name, value in (("--sparsity", args.sparsity), ("--weight-sparsity", args.weight_sparsity)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be between 0 and 1 (got {value}); 0.2 is the paper's.")
    share = f"{args.sparsity:.0%}"
    mcap = _mcap_config(args)
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
    if "MCAP" in skipped:
        raise ValueError("--skip cannot leave out MCAP: every other row is compared with it.")
    return [(label, request) for label, request in plan if label not in skipped]


def check_table1_args(args: argparse.Namespace) -> None:
    """Refuse bad settings before any fine-tuning (ValueError with what to fix)."""
    if not 1 <= args.epochs <= 50:
        raise ValueError(
            f"--epochs must be between 1 and 50 (got {args.epochs}); 3 is the paper's."
        )
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError("--max-steps must be at least 1 (or left out for whole epochs).")
    if args.select_examples is not None and args.select_examples < 1:
        raise ValueError("--select-examples must be at least 1 (or left out for the whole split).")
    if not 1 <= args.train_batch_size <= 1024:
        raise ValueError("--train-batch-size must be between 1 and 1024 (32 by default).")
    for _, request in table1_plan(args):
        request.method_config()


def prepare_grid(args: argparse.Namespace) -> Grid:
    """The classifier of every (learning rate, seed): prepared now, or found in the model store.

    With ``--prepared`` that one classifier serves every seed (its fine-tuning config and seed
    are then the same for every row and seed; the learning-rate sweep does not apply).
    """
    if args.prepared:
        return {(None, seed): args.prepared for seed in args.seeds}
    from pruning.cli_common import data_spec_from_args, fraction_bar, parse_model_arg, show_fraction
    from pruning.prepare import prepare_model
    from pruning.train import TrainConfig

    model, data = parse_model_arg(args.model), data_spec_from_args(args)
    grid: Grid = {}
    for rate in args.learning_rates:
        for seed in args.seeds:
            config = TrainConfig(
                epochs=args.epochs,
                lr=rate,
                batch_size=args.train_batch_size,
                seed=seed,
                max_steps=args.max_steps,
            )
            bar = fraction_bar(f"classifier lr {rate:g} seed {seed}", enabled=not args.no_progress)

            def on_event(event: Any, bar: Any = bar) -> None:
                show_fraction(bar, event.step / event.total_steps, f"loss {event.loss:.3f}")

            try:
                prepared = prepare_model(
                    model,
                    data,
                    config,
                    device=None if args.device == "auto" else args.device,
                    on_event=on_event,
                )
            finally:
                bar.close()
            grid[(rate, seed)] = prepared.key
    return grid


def grid_plan(args: argparse.Namespace, grid: Grid) -> tuple[Plan, list[tuple[str, Any, int]]]:
    """Every row of :func:`table1_plan` on every classifier of ``grid`` at its seed.

    Returns:
        the plan (labels name the rate and the seed) and, per entry, ``(row label, rate, seed)``.
    """
    plan: Plan = []
    where: list[tuple[str, Any, int]] = []
    for (rate, seed), key in grid.items():
        for label, request in table1_plan(args):
            at = f"{label} · lr {rate:g} · seed {seed}" if rate is not None else f"{label} · {seed}"
            plan.append((at, dataclasses.replace(request, seed=seed, prepared_key=key)))
            where.append((label, rate, seed))
    return plan, where


def run_cell(label: str, rate: Any, seed: int, record: Any) -> dict[str, Any]:
    """One Table-I cell (see :mod:`pruning.bench_table1_report`) from a stored "before" run."""
    metrics, cost = record.metrics["pruned"], record.metrics["cost"]
    weight_level = record.info.get("granularity") == "weight"
    params = cost.get("params_nonzero") if weight_level else cost["params_pruned"]
    info = record.info.get("method_info", {})
    return {
        "label": label,
        "learning_rate": rate,
        "seed": seed,
        "key": record.key,
        "prepared_key": record.model.get("prepared_key"),
        "method": record.method,
        "granularity": record.info.get("granularity", "head"),
        "mcc": metrics.get("mcc"),
        "accuracy": metrics.get("accuracy"),
        "loss": metrics.get("loss"),
        "validation_accuracy": None,
        "heads_removed": float(cost.get("head_sparsity", 0.0)),
        "weights_removed": 1.0 - params / cost["params_dense"],
        "flops": cost["flops_pruned"],
        "params": params,
        "scores": None if record.scores is None else record.scores.tolist(),
        "pattern_cnn": info.get("pattern_cnn"),
        "seconds": record.info.get("total_seconds"),
    }


def dense_cell(rate: Any, seed: int, record: Any) -> dict[str, Any]:
    """The unpruned fine-tuned classifier of a (rate, seed): its metrics travel with every run."""
    metrics, cost = record.metrics["dense"], record.metrics["cost"]
    return {
        "label": "Unpruned (fine-tuned)",
        "learning_rate": rate,
        "seed": seed,
        "key": None,
        "prepared_key": record.model.get("prepared_key"),
        "method": "none",
        "granularity": "-",
        "mcc": metrics.get("mcc"),
        "accuracy": metrics.get("accuracy"),
        "loss": metrics.get("loss"),
        "validation_accuracy": None,
        "heads_removed": 0.0,
        "weights_removed": 0.0,
        "flops": cost["flops_dense"],
        "params": cost["params_dense"],
        "scores": None,
        "pattern_cnn": None,
        "seconds": None,
    }


def add_validation_accuracy(cells: Sequence[dict[str, Any]], args: argparse.Namespace) -> None:
    """Fill ``validation_accuracy`` of every cell (the learning rate is chosen on it)."""
    from cache.model_store import ModelStore
    from cache.run_store import RunStore
    from pruning.cli_common import data_spec_from_args
    from pruning.data import load_dataset
    from pruning.evaluate import evaluate_split
    from pruning.models import pick_device

    device = pick_device(args.device)
    split = load_dataset(data_spec_from_args(args)).split("validation")
    if args.select_examples is not None:
        split = split.subset(args.select_examples, seed=0)
    store, models = RunStore(), ModelStore()
    for cell in cells:
        prepared = models.resolve(cell["prepared_key"])
        stored = prepared.metrics.get("validation") if args.select_examples is None else None
        if cell["key"] is None and stored:
            cell["validation_accuracy"] = float(stored["accuracy"])
            continue
        loaded = store.load_model(cell["key"], device=device) if cell["key"] else None
        model = loaded.model if loaded else prepared.load(device=device).model
        tokenizer = loaded.tokenizer if loaded else prepared.load(device=device).tokenizer
        cell["validation_accuracy"] = evaluate_split(model, tokenizer, split).accuracy


def measure_rows_latency(
    rows: Sequence[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any] | None:
    """Add ``latency_ms`` (median, p10, p90) to every row: its first seed's model, interleaved."""
    from cache.model_store import ModelStore
    from cache.run_store import RunStore
    from pruning.cost import interleaved_latency
    from pruning.models import pick_device

    device = pick_device(args.device)
    store, models = RunStore(), ModelStore()
    loaded = []
    for row in rows:
        key = row["keys"][row["seeds"][0]]
        if key is None:  # the unpruned row: its classifier at its chosen rate and first seed
            prepared_key = row["prepared_keys"][row["seeds"][0]]
            loaded.append(models.resolve(prepared_key).load(device=device).model)
        else:
            loaded.append(store.load_model(key, device=device).model)
    results = interleaved_latency(
        loaded,
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
    return results[0].to_dict() if results else None


def table1_cells(
    where: Sequence[tuple[str, Any, int]], records: Sequence[Any]
) -> list[dict[str, Any]]:
    """The unpruned cells (one per rate and seed) then every run's cell, in plan order."""
    dense: dict[tuple[Any, int], dict[str, Any]] = {}
    runs = []
    for (label, rate, seed), record in zip(where, records, strict=True):
        dense.setdefault((rate, seed), dense_cell(rate, seed, record))
        runs.append(run_cell(label, rate, seed, record))
    return [*dense.values(), *runs]


def bench_table1(args: argparse.Namespace) -> int:
    """``headscope bench table1``: prepare, run (or fetch), choose rates, compare, time, write."""
    from cache.run_store import RunStore
    from pruning.bench_table1_report import build_report, report_markdown

    check_table1_args(args)
    started = time.perf_counter()
    grid = prepare_grid(args)
    plan, where = grid_plan(args, grid)
    summaries = run_plan(plan, progress=not args.no_progress)
    store = RunStore()
    records = [store.get(summary["key"]) for summary in summaries]
    cells = table1_cells(where, records)
    if len({rate for rate, _ in grid}) > 1:
        add_validation_accuracy(cells, args)
    report = build_report(cells)
    latency = measure_rows_latency(report["rows"], args)
    shape = f"batch {args.latency_batch} x {args.latency_seq_len} tokens"
    protocol = _protocol(args, grid)
    content = {"protocol": protocol, **report, "latency_shape": shape, "latency": latency}
    out = bench_report(args, started, **content)
    return write_report(args, out, report_markdown(report, latency_shape=shape))


def _protocol(args: argparse.Namespace, grid: Mapping[tuple[Any, int], str]) -> dict[str, Any]:
    given = bool(args.prepared)
    return {
        "prune": "before fine-tuning (RunRequest protocol 'before')",
        "seeds": list(args.seeds),
        "learning_rates": None if given else list(args.learning_rates),
        "epochs": None if given else args.epochs,
        "train_batch_size": None if given else args.train_batch_size,
        "max_steps": None if given else args.max_steps,
        "selected_by": "mean validation accuracy over the seeds"
        if len({rate for rate, _ in grid}) > 1
        else "one learning rate (no selection)",
        "classifiers": {f"{rate}|{seed}": key for (rate, seed), key in grid.items()},
        "note": "--prepared: one classifier for every seed, fine-tuning fixed" if given else "",
    }
