"""``headscope bench explain``: what explanations cost and how faithful they are.

1. LIME on one real test sentence (the one whose word count is closest to 22) with the batched
   predictor and with one forward per text, interleaved, same seed (so the same perturbed texts):
   the time ratio, and the largest difference between the two sets of values.
2. The time of LIME (``--samples``, 1000) and SHAP (``--shap-evals``, 500) on the model; SHAP's
   first call in a process also compiles numba code, timed separately.
3. With ``--runs KEY,...`` (or ``--pruned KEY``): comprehensiveness and sufficiency (ERASER AOPC)
   of LIME and SHAP averaged over ``--texts`` test texts, for the original and each run, with
   random-order baselines.

The model is the prepared classifier of --model/--data (or --prepared, or the runs' own); when
none is prepared, parts 1 and 2 time the encoder with a fresh, untrained head.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruning.cli_bench_runs import command_line, write_report
from pruning.cli_common import add_data_args, add_model_args, fraction_bar, show_fraction

if TYPE_CHECKING:
    from cache.model_store import PreparedModel

__all__ = ["add_explain_bench", "bench_explain"]

_TARGET_WORDS = 22
_QUICK = {"samples": 60, "shap_evals": 40, "repeats": 1, "texts": 2, "faith_samples": 30}


def add_explain_bench(kinds: Any) -> None:
    """Register ``bench explain`` on the ``bench`` subparsers object."""
    bench = kinds.add_parser(
        "explain", help="LIME batched vs one text at a time; LIME/SHAP time; faithfulness"
    )
    add_model_args(bench, prepared=True)
    add_data_args(bench, default="rotten_tomatoes")
    bench.add_argument("--samples", type=int, default=1000, help="LIME samples timed (1000)")
    bench.add_argument("--shap-evals", type=int, default=500, help="SHAP max_evals timed (500)")
    bench.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats (3)")
    bench.add_argument("--runs", default="", help="comma-separated run keys for faithfulness")
    bench.add_argument("--pruned", action="append", default=[], metavar="KEY", help="a run key")
    bench.add_argument("--texts", type=int, default=20, help="test texts for faithfulness (20)")
    bench.add_argument(
        "--faith-samples", type=int, default=500, help="LIME samples / SHAP evals there (500)"
    )
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument(
        "--skip-timing",
        action="store_true",
        help="only the faithfulness part (timings need a quiet machine; run them separately)",
    )
    bench.add_argument("--quick", action="store_true", help="tiny numbers (CI smoke test)")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    bench.add_argument("--out", type=Path, help="write the result JSON here")
    bench.add_argument("--markdown", type=Path, help="write the tables as markdown here")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")


def _settings(args: argparse.Namespace) -> dict[str, int]:
    settings = {
        "samples": args.samples,
        "shap_evals": args.shap_evals,
        "repeats": args.repeats,
        "texts": args.texts,
        "faith_samples": args.faith_samples,
    }
    if args.quick:
        settings = {k: min(v, _QUICK[k]) for k, v in settings.items()}
    for name, value in settings.items():
        low = 1 if name in ("repeats", "texts") else 10
        if value < low:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {low}.")
    return settings


def _sentence(texts: list[str]) -> str:
    from pruning.attribution import split_words

    candidates = [t for t in texts if split_words(t)]
    if not candidates:
        raise ValueError("The test split has no text with words to explain.")
    return min(candidates, key=lambda t: abs(len(split_words(t)) - _TARGET_WORDS))


def _load(args: argparse.Namespace, run_keys: list[str], device: Any) -> dict[str, Any]:
    """The classifier, its dataset and the refs for faithfulness (runs need a prepared model)."""
    from cache.model_store import ModelStore
    from pruning.cli_common import data_spec_from_args, parse_model_arg
    from pruning.cli_explain import resolve_models
    from pruning.data import DataSpec, load_dataset
    from pruning.models import load_classifier

    model_spec, data_spec = parse_model_arg(args.model), data_spec_from_args(args)
    prepared: PreparedModel | None
    if args.prepared or run_keys:
        lookup = argparse.Namespace(**{**vars(args), "run": run_keys, "original": True})
        prepared, refs = resolve_models(lookup)
    else:
        dataset = load_dataset(data_spec)
        found = ModelStore().find(model_spec, data_spec, dataset.fingerprint)
        prepared, refs = (found[0], []) if found else (None, [])
    if prepared is None:
        dataset = load_dataset(data_spec)
        loaded = load_classifier(model_spec, label_names=dataset.label_names, device=device)
        description = f"{model_spec.label}, untrained head (nothing prepared)"
    else:
        dataset = load_dataset(DataSpec(**prepared.info["data_spec"]))
        loaded = prepared.load(device=device)
        description = f"prepared model {prepared.key} ({prepared.info.get('model_label')})"
    return {"loaded": loaded, "dataset": dataset, "refs": refs, "description": description}


def _time_lime(loaded: Any, sentence: str, samples: int, repeats: int, seed: int) -> dict[str, Any]:
    import numpy as np

    from pruning.explain import explain
    from pruning.predictor import BatchedPredictor

    BatchedPredictor(loaded.model, loaded.tokenizer)([sentence])  # warm up kernels and caches
    timings: dict[str, list[float]] = {"batched": [], "one_at_a_time": []}
    values: dict[str, Any] = {}
    unique = 0
    for _ in range(repeats):
        for mode in ("batched", "one_at_a_time"):
            predictor = BatchedPredictor(
                loaded.model, loaded.tokenizer, one_at_a_time=mode == "one_at_a_time"
            )
            started = time.perf_counter()
            result = explain(predictor, sentence, method="lime", samples=samples, seed=seed)
            timings[mode].append(time.perf_counter() - started)
            values[mode] = np.asarray(result.values)
            unique = predictor.texts_computed
    batched = statistics.median(timings["batched"])
    single = statistics.median(timings["one_at_a_time"])
    return {
        "samples": samples,
        "distinct_texts": unique,
        "batched_seconds": timings["batched"],
        "one_at_a_time_seconds": timings["one_at_a_time"],
        "batched_median": batched,
        "one_at_a_time_median": single,
        "ratio": single / batched if batched > 0 else None,
        "max_abs_value_difference": float(
            np.max(np.abs(values["batched"] - values["one_at_a_time"]))
        ),
    }


def _time_shap(loaded: Any, sentence: str, evals: int, repeats: int, seed: int) -> dict[str, Any]:
    from pruning.explain import explain
    from pruning.predictor import BatchedPredictor

    predictor = BatchedPredictor(loaded.model, loaded.tokenizer)
    started = time.perf_counter()
    explain(predictor, sentence, method="shap", samples=min(evals, 20), seed=seed)
    first = time.perf_counter() - started
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        explain(predictor, sentence, method="shap", samples=evals, seed=seed)
        timings.append(time.perf_counter() - started)
    return {
        "evals": evals,
        "first_call_seconds": first,
        "seconds": timings,
        "median": statistics.median(timings),
    }


def bench_explain(args: argparse.Namespace) -> int:
    """``headscope bench explain``."""
    import torch

    from cache.fingerprints import software_versions
    from pruning.explain_cache import explainer_versions
    from pruning.faithfulness import dataset_faithfulness
    from pruning.models import pick_device

    settings = _settings(args)
    run_keys = [k.strip() for k in args.runs.split(",") if k.strip()] + list(args.pruned)
    device = pick_device(args.device)
    started = time.perf_counter()
    setup = _load(args, run_keys, device)
    loaded, dataset = setup["loaded"], setup["dataset"]
    test_texts = list(dataset.split("test").texts)
    sentence = _sentence(test_texts)
    seed = args.seed
    if args.skip_timing and not run_keys:
        raise ValueError("--skip-timing leaves nothing to do without --runs / --pruned.")
    lime = shap = None
    if not args.skip_timing:
        lime = _time_lime(loaded, sentence, settings["samples"], settings["repeats"], seed)
        shap = _time_shap(loaded, sentence, settings["shap_evals"], settings["repeats"], seed)
    faith = None
    if run_keys:
        del loaded  # free it: dataset_faithfulness loads each model itself
        subset = dataset.split("test").subset(settings["texts"], seed=seed)
        faith = dataset_faithfulness(
            setup["refs"],
            list(subset.texts),
            methods=("lime", "shap"),
            samples=settings["faith_samples"],
            seed=seed,
            device=device,
            on_progress=None if args.no_progress else _stderr_progress(),
        )
    report = {
        "bench": "explain",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(device),
        },
        "versions": {**software_versions(), **explainer_versions()},
        "command": command_line(args),
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "quick": bool(args.quick),
        "settings": settings,
        "model": setup["description"],
        "sentence": {"text": sentence, "words": len(sentence.split())},
        "lime": lime,
        "shap": shap,
        "faithfulness": faith,
        "seconds": time.perf_counter() - started,
    }
    return write_report(args, report, markdown_report(report))


def _stderr_progress() -> Any:
    bar = fraction_bar("faithfulness", file=sys.stderr)

    def on_progress(fraction: float, message: str) -> None:
        show_fraction(bar, fraction, message[:50])
        if fraction >= 1.0:
            bar.close()

    return on_progress


def markdown_report(report: dict[str, Any]) -> str:
    """The benchmark's tables as markdown."""
    lime, shap = report["lime"], report["shap"]
    lines = [
        f"Model: {report['model']}; {report['machine']['cpu_count']} CPUs, "
        f"{report['machine']['torch_threads']} torch threads, {report['machine']['device']}.",
    ]
    if lime is not None and shap is not None:
        ratio = "n/a" if lime["ratio"] is None else f"{lime['ratio']:.1f}x"
        lines += [
            f"Sentence ({report['sentence']['words']} words): {report['sentence']['text']!r}",
            "",
            "| measurement | seconds (median) |",
            "|---|---|",
            f"| LIME {lime['samples']} samples, batched | {lime['batched_median']:.2f} |",
            f"| LIME {lime['samples']} samples, one text per forward | "
            f"{lime['one_at_a_time_median']:.2f} |",
            f"| speed-up from batching | {ratio} |",
            f"| SHAP {shap['evals']} evals | {shap['median']:.2f} |",
            f"| SHAP first call in a process (numba compile) | {shap['first_call_seconds']:.2f} |",
        ]
    if report["faithfulness"]:
        lines += [
            "",
            "| model | method | texts | comprehensiveness (random) | sufficiency (random) |",
            "|---|---|---|---|---|",
        ]
        for row in report["faithfulness"]:
            lines.append(
                f"| {row['model']} | {row['method'].upper()} | {row['n_texts']} | "
                f"{row['comprehensiveness_mean']:.3f} ± {row['comprehensiveness_std']:.3f} "
                f"({row['random_comprehensiveness_mean']:.3f}) | "
                f"{row['sufficiency_mean']:.3f} ± {row['sufficiency_std']:.3f} "
                f"({row['random_sufficiency_mean']:.3f}) |"
            )
    return "\n".join(lines) + "\n"
