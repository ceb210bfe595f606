"""Background work and helpers of the Embeddings page (no Streamlit here).

A UMAP or t-SNE grid is one job per model: :func:`embedding_work` projects head after head and
reports each finished head as a progress event ``{"layer", "head", "coords"}``, so the page can
draw the grid as it fills in (:func:`partial_grid`). The grid goes to the disk cache
(:class:`pruning.embedding_cache.ProjectionCache`), also when the job is cancelled: the heads it
finished are kept and the next job continues from them. ``payload`` is JSON-ready; its hash is the
job id, so the same request reattaches to its job.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

from pruning.embedding_cache import EmbeddingRequest, ProjectionCache, compute_grid, load_points
from pruning.embeddings import JointPoints
from pruning.jobs import Progress
from pruning.run_models import ModelRef, RefKind, ref_fingerprint


def job_payload(ref: ModelRef, request: EmbeddingRequest) -> dict[str, Any]:
    """The JSON-ready description of one model's projection job."""
    return {"ref": [ref.kind, ref.key, ref.label], "request": request.to_dict()}


def job_id(payload: dict[str, Any]) -> str:
    """``"embed-<12 hex>"``: the same payload gives the same id."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    return f"embed-{digest}"


def make_ref(row: Sequence[str]) -> ModelRef:
    """A :class:`ModelRef` from its JSON form ``[kind, key, label]``."""
    kind, key, label = row
    return ModelRef(cast(RefKind, kind), key, label)


def embedding_work(payload: dict[str, Any]) -> Callable[[Progress], dict[str, Any]]:
    """Project every head of one model; returns ``{"key", "heads"}`` (the grid is on disk)."""

    def work(progress: Progress) -> dict[str, Any]:
        ref, request = make_ref(payload["ref"]), EmbeddingRequest.from_dict(payload["request"])
        cache = ProjectionCache()
        progress.update(0.0, "loading the queries and keys")
        points = load_points(ref, request, cache=cache)
        total, done = int(points.present.sum()), 0
        if request.method == "umap" and "umap" not in sys.modules:
            progress.update(0.0, "loading umap-learn; its first run compiles (about 30-60 s)")

        def on_head(layer: int, head: int, coords: np.ndarray) -> None:
            nonlocal done
            done += 1
            event = {"layer": layer, "head": head, "coords": coords.tolist()}
            progress.update(done / total, f"L{layer} H{head} · {done} of {total} heads", event)

        grid = compute_grid(
            ref,
            request,
            cache=cache,
            points=points,
            on_head=on_head,
            should_stop=progress.should_stop,
        )
        progress.check()  # a cancelled job has stored the heads it finished
        return {"key": request.grid_key(ref_fingerprint(ref)), "heads": grid.heads_done}

    return work


def partial_grid(events: Sequence[Any], points: JointPoints) -> tuple[np.ndarray, np.ndarray]:
    """The coordinates and the projected mask that a job's events describe so far.

    Returns:
        float32 ``(n_layers, n_heads, 2M, 2)`` (NaN where no event arrived yet) and bool
        ``(n_layers, n_heads)``.
    """
    n_layers, n_heads = points.grid
    coords = np.full((n_layers, n_heads, points.sample.n_points, 2), np.nan, dtype=np.float32)
    projected = np.zeros((n_layers, n_heads), dtype=bool)
    for event in events:
        if not isinstance(event, dict) or "coords" not in event:
            continue
        values = np.asarray(event["coords"], dtype=np.float32)
        layer, head = int(event["layer"]), int(event["head"])
        if values.shape == coords.shape[2:] and layer < n_layers and head < n_heads:
            coords[layer, head] = values
            projected[layer, head] = True
    return coords, projected
