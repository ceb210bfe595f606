"""``headscope explain``: LIME / SHAP word attributions of the original and pruned classifiers.

Examples::

    headscope explain "A gorgeous, witty, seductive movie."
    headscope explain "..." --run 3f2a9c0d11aa42e1 --method both --samples 500
    headscope explain "..." --run 3f2a9c0d11aa42e1 --no-original --target rotten --faithfulness
    headscope bench explain --quick

The classifier is the prepared model of ``--model``/``--data`` (the default encoder on Rotten
Tomatoes unless told otherwise), ``--prepared KEY``, or the one the first ``--run`` was pruned
from. Errors about the input print one line on stderr and exit with status 2 (``pruning.cli``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruning.cli_bench_explain import add_explain_bench, bench_explain
from pruning.cli_common import (
    add_common_args,
    add_data_args,
    add_model_args,
    data_spec_from_args,
    emit_json,
    fraction_bar,
    parse_model_arg,
    show_fraction,
)

if TYPE_CHECKING:
    from cache.model_store import PreparedModel
    from pruning.attribution import Attribution
    from pruning.run_models import ModelRef

__all__ = [
    "add_explain_bench",
    "add_explain_command",
    "bench_explain",
    "cmd_explain",
    "resolve_models",
]

_BAR_WIDTH = 20


def add_explain_command(commands: Any) -> None:
    """Register ``headscope explain`` on the ``headscope`` subparsers object."""
    explain = commands.add_parser(
        "explain", help="LIME/SHAP word attributions of the original and pruned models"
    )
    explain.add_argument("text", help="the sentence to explain (quote it)")
    explain.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="KEY",
        help="a stored run to explain as well (repeatable; `headscope runs` lists keys)",
    )
    explain.add_argument(
        "--original",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="explain the unpruned prepared model too (default: yes)",
    )
    explain.add_argument("--method", choices=("lime", "shap", "both"), default="both")
    explain.add_argument(
        "--samples", type=int, default=1000, help="LIME samples / SHAP evaluations (1000)"
    )
    explain.add_argument("--seed", type=int, default=0)
    explain.add_argument(
        "--target", metavar="LABEL", help="class name or id (default: the first model's prediction)"
    )
    explain.add_argument(
        "--faithfulness",
        action="store_true",
        help="also score comprehensiveness and sufficiency (ERASER AOPC) with random baselines",
    )
    explain.add_argument("--top", type=int, default=5, help="k of the top-k agreement (5)")
    explain.add_argument("--no-cache", action="store_true", help="recompute cached explanations")
    explain.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_args(explain, prepared=True)
    add_data_args(explain, default="rotten_tomatoes")
    add_common_args(explain)


def _run_record(store: Any, key: str) -> Any:
    """The run with this key, or the only one whose key starts with it (4+ hex digits)."""
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


def resolve_models(args: argparse.Namespace) -> tuple[PreparedModel, list[ModelRef]]:
    """The prepared model and the references that --prepared/--model/--data, --run and
    --original name.

    Raises:
        ValueError: an unknown run, no prepared model, or nothing left to explain.
    """
    from cache.model_store import ModelStore
    from cache.run_store import RunStore
    from pruning.data import load_dataset
    from pruning.run_models import prepared_ref, run_ref

    model_store, run_store = ModelStore(), RunStore()
    runs = [_run_record(run_store, key) for key in args.run]
    if args.prepared:
        prepared = model_store.resolve(args.prepared)
    elif runs:
        found = model_store.get(str(runs[0].model.get("prepared_key") or ""))
        if found is None:
            raise ValueError(
                f"The prepared model of run {runs[0].key} is no longer stored; prepare it again."
            )
        prepared = found
    else:
        model_spec, data_spec = parse_model_arg(args.model), data_spec_from_args(args)
        dataset = load_dataset(data_spec)
        entries = model_store.find(model_spec, data_spec, dataset.fingerprint)
        if not entries:
            raise ValueError(
                f"No classifier is prepared for {model_spec.label} on {dataset.name}; run "
                "`headscope prepare` with the same --model and --data first."
            )
        prepared = entries[0]
    refs = [prepared_ref(prepared)] if args.original else []
    refs += [run_ref(record.key, record.name) for record in runs]
    if not refs:
        raise ValueError("--no-original leaves nothing to explain; add --run KEY.")
    return prepared, refs


def parse_target(value: str | None, label_names: tuple[str, ...]) -> int | None:
    """A class id from a class name or id (None stays None).

    Raises:
        ValueError: neither a class name nor an id of these classes.
    """
    if value is None:
        return None
    names = [name.lower() for name in label_names]
    if value.strip().lower() in names:
        return names.index(value.strip().lower())
    if value.strip().isdigit() and int(value) < len(label_names):
        return int(value)
    raise ValueError(f"--target {value!r} is not one of the classes {list(label_names)}.")


def _progress_bar(enabled: bool) -> tuple[Any, Any]:
    bar = fraction_bar("explaining", enabled=enabled)

    def on_progress(fraction: float, message: str) -> None:
        show_fraction(bar, fraction, message[:50])

    return bar, on_progress


def _token_count(folder: Path, text: str) -> tuple[int | None, int | None]:
    """``(tokens of text, the most the model reads)``, or Nones when the folder's tokenizer
    cannot be read (the note is then left out; loading the model reports the real problem)."""
    from pruning.models import input_limit

    try:
        tokenizer, limit = input_limit(folder)
    except (OSError, ValueError):
        return None, None
    return len(tokenizer(text, truncation=False, verbose=False)["input_ids"]), limit


def cmd_explain(args: argparse.Namespace) -> int:
    """``headscope explain``: attributions per model, their agreement, optionally faithfulness."""
    from pruning.attribution import agreement
    from pruning.data import check_text
    from pruning.explain import METHODS, ExplanationCache, explain_models, text_words
    from pruning.models import pick_device

    check_text(args.text, "explain (quote it)")
    text_words(args.text)
    if args.samples < 10:
        raise ValueError("--samples must be at least 10.")
    if args.top < 1:
        raise ValueError("--top must be at least 1.")
    methods = list(METHODS) if args.method == "both" else [args.method]
    prepared, refs = resolve_models(args)
    target = parse_target(args.target, prepared.label_names)
    device = pick_device(args.device)
    n_tokens, limit = _token_count(prepared.path, args.text)
    truncated = n_tokens is not None and limit is not None and n_tokens > limit
    if truncated and not args.json:
        print(
            f"note: the models read the first {limit} of {n_tokens} tokens; words past that "
            "point get no attribution",
            file=sys.stderr,
        )
    bar, on_progress = _progress_bar(not args.no_progress and not args.json)
    started = time.perf_counter()
    try:
        results = explain_models(
            refs,
            args.text,
            methods=methods,
            samples=args.samples,
            seed=args.seed,
            target=target,
            device=device,
            cache=None if args.no_cache else ExplanationCache(),
            on_progress=on_progress,
        )
    finally:
        bar.close()
    scores = _faithfulness(refs, results, device) if args.faithfulness else {}
    pairs = _pairs(results)
    agreements = [
        {"a": a.model_label, "b": b.model_label, "method_a": a.method, "method_b": b.method,
         **agreement(a, b, k=args.top)}
        for a, b in pairs
    ]  # fmt: skip
    if args.json:
        emit_json(
            {
                "text": args.text,
                "target": results[0].target,
                "target_name": results[0].target_name,
                "methods": methods,
                "samples": args.samples,
                "seed": args.seed,
                "prepared_key": prepared.key,
                "n_tokens": n_tokens,
                "max_length": limit,
                "truncated": truncated,
                "attributions": [
                    {**a.to_dict(), "faithfulness": scores.get(i)} for i, a in enumerate(results)
                ],
                "agreement": agreements,
                "seconds": time.perf_counter() - started,
            }
        )
        return 0
    _print_report(args.text, results, scores, agreements, args.top)
    return 0


def _pairs(results: list[Attribution]) -> list[tuple[Attribution, Attribution]]:
    """Each model against the first model (same method), then LIME vs SHAP per model."""
    pairs = []
    first_key = results[0].model_key
    firsts = {a.method: a for a in results if a.model_key == first_key}
    for a in results:
        if a.model_key != first_key and a.method in firsts:
            pairs.append((firsts[a.method], a))
    by_model: dict[str, dict[str, Attribution]] = {}
    for a in results:
        by_model.setdefault(a.model_key, {})[a.method] = a
    for methods in by_model.values():
        if "lime" in methods and "shap" in methods:
            pairs.append((methods["lime"], methods["shap"]))
    return pairs


def _faithfulness(
    refs: list[ModelRef], results: list[Attribution], device: Any
) -> dict[int, dict[str, Any]]:
    from pruning.faithfulness import faithfulness
    from pruning.predictor import BatchedPredictor
    from pruning.run_models import load_ref, ref_fingerprint

    scores: dict[int, dict[str, Any]] = {}
    for ref in refs:
        loaded = load_ref(ref, device=device)
        predictor = BatchedPredictor(loaded.model, loaded.tokenizer)
        for index, attribution in enumerate(results):
            if attribution.model_key == ref_fingerprint(ref):
                scores[index] = faithfulness(predictor, attribution).to_dict()
    return scores


def _bar(value: float, scale: float) -> str:
    cells = 0 if scale <= 0 else round(abs(value) / scale * _BAR_WIDTH)
    return ("+" if value >= 0 else "-") * cells


def _print_report(
    text: str,
    results: list[Attribution],
    scores: dict[int, dict[str, Any]],
    agreements: list[dict[str, Any]],
    top: int,
) -> None:
    first = results[0]
    print(f"{text!r}")
    print(f"values toward {first.target_name!r} (class {first.target}); + supports it")
    for index, a in enumerate(results):
        probs = ", ".join(
            f"{n} {p:.2f}" for n, p in zip(a.label_names, a.probabilities, strict=True)
        )
        print(
            f"\n{a.model_label} · {a.method.upper()} ({a.samples} samples, seed {a.seed}, "
            f"{a.seconds:.1f} s): predicts {a.label_names[a.predicted]!r} ({probs})"
        )
        scale = max((abs(v) for v in a.values), default=0.0)
        width = max(len(w) for w in a.words)
        for word, value in zip(a.words, a.values, strict=True):
            print(f"  {word:<{width}}  {value:+.4f}  {_bar(value, scale)}")
        score = scores.get(index)
        if score is not None:
            print(
                f"  faithfulness: comprehensiveness {score['comprehensiveness']:.3f} "
                f"(random {score['random_comprehensiveness']:.3f}), sufficiency "
                f"{score['sufficiency']:.3f} (random {score['random_sufficiency']:.3f}), "
                f"k = {score['ks']}"
            )
    if agreements:
        print(f"\nagreement (top-{top} overlap, Spearman over words):")
    for row in agreements:
        rho = "n/a" if math.isnan(row["spearman"]) else f"{row['spearman']:+.2f}"
        what = (
            f"{row['a']} vs {row['b']} ({row['method_a'].upper()})"
            if row["method_a"] == row["method_b"]
            else f"{row['a']}: LIME vs SHAP"
        )
        same = "same prediction" if row["same_prediction"] else "different prediction"
        print(f"  {what}: overlap {row['topk_overlap']:.2f}, Spearman {rho}, {same}")
