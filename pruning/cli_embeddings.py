"""``headscope embeddings`` and ``headscope bench embeddings``: joint query/key embeddings.

Examples::

    headscope embeddings --out grid.html                       # PCA grid of the original
    headscope embeddings --run 3f2a9c --projection umap --out grid.html
    headscope embeddings --text "A gorgeous movie." "A dull one." --out coords.json
    headscope bench embeddings --out bench/results/embeddings_cpu.json \\
        --markdown bench/results/embeddings_cpu.md

The classifier is the prepared model of ``--model``/``--data``, ``--prepared KEY``, or the one
the first ``--run`` was pruned from (as ``headscope explain``). Sentences default to a seeded
sample of ``--sentences`` test texts. Captures and projections go through the disk cache
(:mod:`pruning.embedding_cache`), so asking again is instant.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruning.cli_bench_runs import bench_report, write_report
from pruning.cli_common import (
    add_common_args,
    add_data_args,
    add_model_args,
    data_spec_from_args,
    emit_json,
    parse_model_arg,
)
from pruning.embeddings import DEFAULT_MAX_POINTS
from pruning.projections import PROJECTION_NAMES, PROJECTIONS

if TYPE_CHECKING:
    from cache.model_store import PreparedModel
    from pruning.embeddings import JointPoints
    from pruning.projections import EmbeddingGrid

__all__ = ["add_embeddings_bench", "add_embeddings_command", "bench_embeddings", "cmd_embeddings"]

_QUICK = {"sentences": 6, "umap_sentences": 3, "max_points": 60}
# What the issue asks of the 2-core CPU (seconds).
TARGETS = {"pca_grid": 5.0, "umap_grid": 120.0, "reopen": 2.0}


def add_embeddings_command(commands: Any) -> None:
    """Register ``headscope embeddings`` on the ``headscope`` subparsers object."""
    parser = commands.add_parser(
        "embeddings", help="joint query/key embeddings per head (AttentionViz): JSON or HTML grid"
    )
    parser.add_argument(
        "--run", action="append", default=[], metavar="KEY", help="a stored run (repeatable)"
    )
    parser.add_argument(
        "--original",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="include the unpruned prepared model (default: yes)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--sentences", type=int, default=20, help="a seeded sample of N test texts (20)"
    )
    source.add_argument(
        "--text", action="extend", nargs="+", metavar="T", help="your own sentences instead"
    )
    parser.add_argument("--projection", choices=PROJECTIONS, default="pca")
    parser.add_argument(
        "--max-points",
        type=int,
        default=DEFAULT_MAX_POINTS,
        help=f"cap on points per head, queries + keys ({DEFAULT_MAX_POINTS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling and projection seed")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per sentence (128)")
    parser.add_argument(
        "--no-normalise", action="store_true", help="skip AttentionViz's key-to-query alignment"
    )
    parser.add_argument("--out", type=Path, help="write coordinates (.json) or the grid (.html)")
    parser.add_argument("--no-cache", action="store_true", help="recompute cached results")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_args(parser, prepared=True)
    add_data_args(parser, default="rotten_tomatoes")
    add_common_args(parser)


def add_embeddings_bench(kinds: Any) -> None:
    """Register ``bench embeddings`` on the ``bench`` subparsers object."""
    bench = kinds.add_parser(
        "embeddings", help="capture, PCA grid, UMAP grid and cache reopen times (issue #15)"
    )
    add_model_args(bench, prepared=True)
    add_data_args(bench, default="rotten_tomatoes")
    bench.add_argument("--sentences", type=int, default=50, help="test texts of the PCA grid")
    bench.add_argument(
        "--umap-sentences", type=int, default=20, help="test texts of the UMAP grid (20)"
    )
    bench.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--quick", action="store_true", help="tiny numbers (CI smoke test)")
    bench.add_argument("--device", default="cpu", help="cpu (default: the targets are CPU's)")
    bench.add_argument("--out", type=Path, help="write the result JSON here")
    bench.add_argument("--markdown", type=Path, help="write the table as markdown here")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")


def _test_texts(dataset: Any, count: int, seed: int) -> list[str]:
    if count < 1:
        raise ValueError("--sentences must be at least 1.")
    return list(dataset.split("test").subset(count, seed=seed).texts)


def cmd_embeddings(args: argparse.Namespace) -> int:
    """``headscope embeddings``: project every head of each model; write JSON or HTML."""
    from tqdm import tqdm

    from pruning.cli_explain import resolve_models
    from pruning.data import DataSpec, load_dataset
    from pruning.embedding_cache import EmbeddingRequest, ProjectionCache, compute_grid, load_points
    from pruning.models import pick_device

    if args.out is not None and args.out.suffix.lower() not in (".json", ".html"):
        raise ValueError(f"--out {args.out} must end in .json (coordinates) or .html (grid).")
    prepared, refs = resolve_models(args)
    if args.text:
        sentences = [t for t in args.text if t.strip()]
        if not sentences:
            raise ValueError("--text gave only empty sentences; give at least one with words.")
    else:
        dataset = load_dataset(DataSpec(**prepared.info["data_spec"]))
        sentences = _test_texts(dataset, args.sentences, args.seed)
    request = EmbeddingRequest.make(
        sentences,
        args.projection,
        max_points=args.max_points,
        seed=args.seed,
        normalise=not args.no_normalise,
        max_length=args.max_length,
    )
    cache = None if args.no_cache else ProjectionCache()
    device = pick_device(args.device)
    results = []
    for ref in refs:
        started = time.perf_counter()
        points = load_points(ref, request, cache=cache, device=device)
        with tqdm(
            total=int(points.present.sum()),
            desc=f"{PROJECTION_NAMES[args.projection]} · {ref.label}",
            unit="head",
            disable=args.no_progress or args.json,
        ) as bar:
            grid = compute_grid(
                ref, request, cache=cache, points=points, on_head=lambda *_: bar.update(1)
            )
        results.append((ref.label, points, grid, time.perf_counter() - started))
    document = coordinates_document(request.to_dict(), results)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix.lower() == ".html":
            args.out.write_text(grid_html(results, args.projection), encoding="utf-8")
        else:
            args.out.write_text(json.dumps(document) + "\n", encoding="utf-8")
    if args.json:
        emit_json(document if args.out is None else {"out": str(args.out), **_summary(results)})
        return 0
    for label, points, grid, seconds in results:
        sample = points.sample
        print(
            f"{label}: {grid.heads_done} heads x {sample.n_points} points ({sample.n_tokens} of "
            f"{sample.total_tokens} tokens, {sample.n_sentences} sentences), "
            f"{PROJECTION_NAMES[grid.method]} in {seconds:.1f} s"
        )
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


def _summary(results: list[Any]) -> dict[str, Any]:
    return {"models": [{"label": r[0], "heads": r[2].heads_done, "seconds": r[3]} for r in results]}


def coordinates_document(request: dict[str, Any], results: list[Any]) -> dict[str, Any]:
    """Every model's coordinates per head, with the points' tokens (JSON-ready)."""
    sample = results[0][1].sample
    models = []
    for label, points, grid, _ in results:
        heads = [
            {
                "layer": int(layer),
                "head": int(head),
                "coords": grid.coords[layer, head].round(5).tolist(),
            }
            for layer, head in zip(*grid.projected.nonzero(), strict=True)
        ]
        models.append({"label": label, "present": points.present.tolist(), "heads": heads})
    return {
        "request": request,
        "points": {
            "kind": sample.point_kinds().tolist(),
            "sentence": sample.point_sentences().tolist(),
            "position": sample.point_positions().tolist(),
            "token": sample.point_tokens().tolist(),
            "total_tokens": sample.total_tokens,
        },
        "models": models,
    }


def grid_html(results: list[Any], method: str) -> str:
    """One offline HTML page with each model's grid (plotly.js embedded once)."""
    from viz.embeddings import build_embedding_grid

    parts = []
    for index, (label, points, grid, _) in enumerate(results):
        figure = build_embedding_grid(
            grid.coords,
            points.sample.point_kinds(),
            grid.present,
            grid.projected,
            title=f"{label} · {PROJECTION_NAMES[method]}",
        )
        parts.append(figure.to_html(full_html=False, include_plotlyjs=index == 0))
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>HeadScope embeddings</title>'
        f"</head><body>\n{body}\n</body></html>\n"
    )


def _bench_model(args: argparse.Namespace, device: Any) -> tuple[Any, Any, str, str]:
    """The classifier, its dataset, a description and a fingerprint for cache keys."""
    from cache.model_store import ModelStore
    from pruning.data import DataSpec, load_dataset
    from pruning.models import load_classifier

    if args.prepared:
        prepared: PreparedModel | None = ModelStore().resolve(args.prepared)
    else:
        model_spec, data_spec = parse_model_arg(args.model), data_spec_from_args(args)
        dataset = load_dataset(data_spec)
        found = ModelStore().find(model_spec, data_spec, dataset.fingerprint)
        prepared = found[0] if found else None
    if prepared is None:
        loaded = load_classifier(model_spec, label_names=dataset.label_names, device=device)
        description = f"{model_spec.label}, untrained head (nothing prepared)"
        return loaded, dataset, description, f"bench:{model_spec.label}"
    dataset = load_dataset(DataSpec(**prepared.info["data_spec"]))
    description = f"prepared model {prepared.key} ({prepared.info.get('model_label')})"
    return prepared.load(device=device), dataset, description, f"prepared:{prepared.key}"


def _grid_figure_seconds(points: JointPoints, grid: EmbeddingGrid) -> float:
    """Build the grid figure and serialise it as Streamlit does; the seconds it took."""
    from viz.embeddings import build_embedding_grid

    started = time.perf_counter()
    figure = build_embedding_grid(
        grid.coords, points.sample.point_kinds(), grid.present, grid.projected
    )
    figure.to_json()
    return time.perf_counter() - started


def bench_embeddings(args: argparse.Namespace) -> int:
    """``headscope bench embeddings``: the issue's three measurements in one process."""
    from tqdm import tqdm

    from pruning.embedding_cache import EmbeddingRequest, ProjectionCache
    from pruning.embeddings import capture_points
    from pruning.models import pick_device
    from pruning.projections import project, project_grid

    settings = {
        "sentences": args.sentences,
        "umap_sentences": args.umap_sentences,
        "max_points": args.max_points,
    }
    if args.quick:
        settings = {k: min(v, _QUICK[k]) for k, v in settings.items()}
    if min(settings.values()) < 1 or settings["max_points"] < 2:
        raise ValueError("--sentences and --umap-sentences must be at least 1, --max-points 2.")
    started = time.perf_counter()
    device = pick_device(args.device)
    loaded, dataset, description, fingerprint = _bench_model(args, device)
    model, tokenizer, seed, cap = loaded.model, loaded.tokenizer, args.seed, settings["max_points"]
    texts = {
        key: _test_texts(dataset, settings[key], seed) for key in ("sentences", "umap_sentences")
    }
    timings: dict[str, float] = {}
    points: dict[str, JointPoints] = {}
    for key, text in texts.items():
        tick = time.perf_counter()
        points[key] = capture_points(model, tokenizer, text, max_points=cap, seed=seed)
        timings[f"capture_{key}"] = time.perf_counter() - tick
    big, small = points["sentences"], points["umap_sentences"]

    tick = time.perf_counter()
    pca = project_grid(big, "pca", seed=seed)
    timings["pca_project"] = time.perf_counter() - tick
    timings["pca_figure"] = _grid_figure_seconds(big, pca)
    timings["pca_grid"] = timings["pca_project"] + timings["pca_figure"]

    layer, head = (int(i) for i in next(zip(*small.present.nonzero(), strict=True)))
    first = small.head_points(layer, head)
    if first is None:
        raise ValueError("Every head of this model was removed; there is nothing to project.")
    tick = time.perf_counter()
    project(first, "umap", seed=seed)
    timings["umap_first_head_compile"] = time.perf_counter() - tick
    heads = int(small.present.sum())
    with tqdm(total=heads, desc="UMAP grid", unit="head", disable=args.no_progress) as bar:
        tick = time.perf_counter()
        umap_grid = project_grid(small, "umap", seed=seed, on_head=lambda *_: bar.update(1))
        timings["umap_project"] = time.perf_counter() - tick
    timings["umap_figure"] = _grid_figure_seconds(small, umap_grid)
    timings["umap_grid"] = timings["umap_project"] + timings["umap_figure"]

    with tempfile.TemporaryDirectory(prefix="headscope-bench-") as folder:
        cache = ProjectionCache(folder)
        request = EmbeddingRequest.make(texts["umap_sentences"], "umap", max_points=cap, seed=seed)
        grid_key = request.grid_key(fingerprint)
        cache.put_grid(grid_key, umap_grid)
        tick = time.perf_counter()
        reopened = cache.get_grid(grid_key)
        if reopened is None:
            raise ValueError(f"The grid written to {folder} could not be read back.")
        timings["reopen_read"] = time.perf_counter() - tick
        timings["reopen_figure"] = _grid_figure_seconds(small, reopened)
        timings["reopen"] = timings["reopen_read"] + timings["reopen_figure"]
    shapes = {
        "heads": heads,
        "grid": list(small.grid),
        "points_pca": big.sample.n_points,
        "points_umap": small.sample.n_points,
        "tokens_pca": big.sample.total_tokens,
        "tokens_umap": small.sample.total_tokens,
    }
    checks = {name: timings[name] <= limit for name, limit in TARGETS.items()}
    report = bench_report(
        args,
        started,
        quick=bool(args.quick),
        model=description,
        device=str(device),
        settings=settings,
        params={"umap": umap_grid.params},
        shapes=shapes,
        timings=timings,
        targets=TARGETS,
        within_targets=checks,
    )
    return write_report(args, report, markdown_report(report))


def markdown_report(report: dict[str, Any]) -> str:
    """The benchmark's table as markdown."""
    t, s, shapes = report["timings"], report["settings"], report["shapes"]
    grid = "x".join(str(n) for n in shapes["grid"])
    target = report["targets"]

    def row(what: str, seconds: float, goal: float | None = None) -> str:
        verdict = "" if goal is None else ("yes" if seconds <= goal else "**no**")
        limit = "" if goal is None else f"≤ {goal:g}"
        return f"| {what} | {seconds:.2f} | {limit} | {verdict} |"

    lines = [
        f"Model: {report['model']} ({grid} heads = {shapes['heads']} kept); {report['machine']}; "
        f"{report['device']}. Cap {s['max_points']} points per head; UMAP "
        f"{report['params']['umap']}.",
        "",
        "| measurement | seconds | target | met |",
        "|---|---|---|---|",
        row(f"capture, {s['sentences']} sentences ({shapes['tokens_pca']} tokens)",
            t["capture_sentences"]),
        row(f"capture, {s['umap_sentences']} sentences ({shapes['tokens_umap']} tokens)",
            t["capture_umap_sentences"]),
        row(f"PCA grid, {s['sentences']} sentences x {shapes['points_pca']} points: project + "
            f"figure ({t['pca_project']:.2f} + {t['pca_figure']:.2f})", t["pca_grid"],
            target["pca_grid"]),
        row("UMAP, first head in the process (import + numba compile)",
            t["umap_first_head_compile"]),
        row(f"UMAP grid, {s['umap_sentences']} sentences x {shapes['points_umap']} points: "
            f"project + figure ({t['umap_project']:.1f} + {t['umap_figure']:.2f})",
            t["umap_grid"], target["umap_grid"]),
        row(f"reopen the UMAP grid from the disk cache: read + figure ({t['reopen_read']:.3f} + "
            f"{t['reopen_figure']:.2f})", t["reopen"], target["reopen"]),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"
