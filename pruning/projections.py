"""2-D projections of each head's joint query/key point set: PCA, UMAP and t-SNE.

* ``"pca"``: numpy SVD of the centred points; instant (about 1 ms for 1,000 points).
* ``"umap"``: umap-learn (McInnes et al., 2018, https://arxiv.org/abs/1802.03426), the view
  AttentionViz uses; imported on first use (about 20 s cold) and its first fit in a process
  compiles numba code (10-30 s). Point sets are small, so the exact euclidean distance matrix is
  computed with numpy and handed over as ``metric="precomputed"``: umap-learn's own small-data
  path calls a Python distance function once per pair, which took 2.6 s of a 3.1 s fit of 1,000
  points. With 200 epochs (umap-learn picks 500 below 10,000 points) a 1,000-point head then
  takes about 0.7 s on one CPU core.
* ``"tsne"``: scikit-learn's Barnes-Hut t-SNE (van der Maaten and Hinton, 2008), PCA
  initialisation; about 3 s per 1,000-point head with 500 iterations.

All three are seeded (the same seed and points give the same coordinates). Point sets of fewer
than :data:`MIN_NEIGHBOUR_POINTS` points are drawn with PCA by every method: UMAP and t-SNE need
neighbours to work with.
"""

from __future__ import annotations

import inspect
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pruning.embeddings import JointPoints, TokenSample

__all__ = [
    "DEFAULT_PARAMS",
    "PROJECTIONS",
    "PROJECTION_NAMES",
    "EmbeddingGrid",
    "project",
    "project_grid",
    "projection_params",
]

log = logging.getLogger(__name__)

PROJECTIONS = ("pca", "umap", "tsne")
PROJECTION_NAMES = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE"}
MIN_NEIGHBOUR_POINTS = 8
# Defaults measured to keep 72 heads x 1,000 points within 2 minutes on a 2-core CPU (UMAP).
DEFAULT_PARAMS: Mapping[str, Mapping[str, int | float]] = {
    "pca": {},
    "umap": {"n_neighbors": 15, "min_dist": 0.1, "n_epochs": 200},
    "tsne": {"perplexity": 30.0, "max_iter": 500},
}
# (low, high, type) of each parameter.
_BOUNDS: Mapping[str, tuple[float, float, type]] = {
    "n_neighbors": (2, 200, int),
    "min_dist": (0.0, 1.0, float),
    "n_epochs": (10, 5000, int),
    "perplexity": (2.0, 100.0, float),
    "max_iter": (250, 10_000, int),
}

HeadCallback = Callable[[int, int, np.ndarray], None]


def projection_params(method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full parameters of ``method``: its defaults overridden by ``params``, checked.

    Raises:
        ValueError: an unknown method or parameter, or a value out of bounds.
    """
    if method not in PROJECTIONS:
        raise ValueError(f"Unknown projection {method!r}; use one of {', '.join(PROJECTIONS)}.")
    defaults = DEFAULT_PARAMS[method]
    given = dict(params or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(defaults) or "none"
        raise ValueError(f"{method} takes no parameter {', '.join(unknown)}; it takes: {known}.")
    full: dict[str, Any] = {}
    for name, default in defaults.items():
        low, high, kind = _BOUNDS[name]
        value = given.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{method} {name} must be a number; got {value!r}.")
        if kind is int and float(value) != int(value):
            raise ValueError(f"{method} {name} must be a whole number; got {value!r}.")
        if not low <= value <= high:
            raise ValueError(f"{method} {name} is {value}; use a value from {low} to {high}.")
        full[name] = kind(value)
    return full


def _check_points(points: Any) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(
            f"points must be a non-empty 2-D (n_points, dim) array; got shape {array.shape}."
        )
    if not np.isfinite(array).all():
        raise ValueError("points hold NaN or inf; a removed head has no points to project.")
    return array


def _pca(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    coords = np.zeros((len(points), 2))
    if len(points) < 2:
        return coords
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    components = components[:2]
    # SVD signs are arbitrary: make each component's largest loading positive, so the same
    # points always give the same picture.
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    coords[:, : len(components)] = centred @ components.T
    return coords


def _distances(points: np.ndarray) -> np.ndarray:
    squares = (points**2).sum(axis=1)
    gram = points @ points.T
    distances = np.sqrt(np.maximum(squares[:, None] + squares[None, :] - 2 * gram, 0.0))
    np.fill_diagonal(distances, 0.0)
    return distances


def _umap(points: np.ndarray, seed: int, params: dict[str, Any]) -> np.ndarray:
    import umap

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(params["n_neighbors"], len(points) - 1),
        min_dist=params["min_dist"],
        n_epochs=params["n_epochs"],
        metric="precomputed",
        random_state=seed,
        n_jobs=1,
    )
    return np.asarray(reducer.fit_transform(_distances(points)), dtype=np.float64)


def _tsne(points: np.ndarray, seed: int, params: dict[str, Any]) -> np.ndarray:
    from sklearn.manifold import TSNE

    # scikit-learn renamed n_iter to max_iter in 1.5.
    steps = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"
    reducer = TSNE(
        n_components=2,
        # t-SNE needs perplexity < n_points; a third of them keeps neighbourhoods local.
        perplexity=min(params["perplexity"], (len(points) - 1) / 3),
        init="pca",
        learning_rate="auto",
        random_state=seed,
        **{steps: params["max_iter"]},
    )
    return np.asarray(reducer.fit_transform(points), dtype=np.float64)


def project(
    points: Any, method: str, *, seed: int = 0, params: Mapping[str, Any] | None = None
) -> np.ndarray:
    """Project one point set to 2-D.

    Args:
        points: float ``(N, d)``, finite.
        method: ``"pca"``, ``"umap"`` or ``"tsne"``.
        seed: the random seed of UMAP / t-SNE (PCA is deterministic).
        params: overrides of :data:`DEFAULT_PARAMS` for the method.

    Returns:
        float32 ``(N, 2)``.

    Raises:
        ValueError: bad points, an unknown method or bad parameters.
    """
    full = projection_params(method, params)
    array = _check_points(points)
    if method == "pca" or len(array) < MIN_NEIGHBOUR_POINTS:
        return _pca(array).astype(np.float32)
    with warnings.catch_warnings():
        # "precomputed metric: inverse_transform unavailable", spectral-init fallbacks on
        # disconnected neighbour graphs: expected here and not the user's to act on.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        coords = _umap(array, seed, full) if method == "umap" else _tsne(array, seed, full)
    return coords.astype(np.float32)


@dataclass(frozen=True)
class EmbeddingGrid:
    """The 2-D coordinates of every head's joint query/key set (possibly only some heads).

    Attributes:
        method, params, seed, normalise: how the coordinates were made.
        sample: the tokens behind the points (point ``i < M`` is the query of token ``i``,
            point ``M + i`` its key).
        coords: float32 ``(n_layers, n_heads, 2M, 2)``; NaN where a head has no projection.
        projected: bool ``(n_layers, n_heads)``, True where ``coords`` holds a projection.
        present: bool ``(n_layers, n_heads)``, True where the head exists (False = removed).
        seconds: time spent projecting (all sessions that contributed heads).
    """

    method: str
    params: dict[str, Any]
    seed: int
    normalise: bool
    sample: TokenSample
    coords: np.ndarray
    projected: np.ndarray
    present: np.ndarray
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """True when every present head is projected."""
        return bool(self.projected[self.present].all())

    @property
    def heads_done(self) -> int:
        return int((self.projected & self.present).sum())


def project_grid(
    points: JointPoints,
    method: str,
    *,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    normalise: bool = True,
    on_head: HeadCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    initial: EmbeddingGrid | None = None,
) -> EmbeddingGrid:
    """Project every present head, layer by layer; removed heads are skipped.

    Args:
        points: the joint point sets (:mod:`pruning.embeddings`).
        method, seed, params: as :func:`project`.
        normalise: align keys to queries per head first (:func:`pruning.embeddings.normalise_qk`).
        on_head: called as ``on_head(layer, head, coords)`` with float32 ``(2M, 2)`` for every
            head that has coordinates, in order (heads taken from ``initial`` too).
        should_stop: checked before each head; when it returns True the partial grid is
            returned (``projected`` says which heads are done).
        initial: a partial grid of the same points and settings to continue.

    Raises:
        ValueError: bad method or parameters, or an ``initial`` grid of other settings.
    """
    full = projection_params(method, params)
    n_layers, n_heads = points.grid
    n_points = points.sample.n_points
    coords = np.full((n_layers, n_heads, n_points, 2), np.nan, dtype=np.float32)
    projected = np.zeros((n_layers, n_heads), dtype=bool)
    seconds = 0.0
    if initial is not None:
        same = (initial.method, initial.params, initial.seed, initial.normalise) == (
            method,
            full,
            seed,
            normalise,
        )
        if not same or initial.coords.shape != coords.shape:
            raise ValueError("The initial grid was made with other settings; start a new one.")
        coords[initial.projected] = initial.coords[initial.projected]
        projected |= initial.projected & points.present
        seconds = initial.seconds
    for layer in range(n_layers):
        for head in range(n_heads):
            if not points.present[layer, head]:
                continue
            if not projected[layer, head]:
                if should_stop is not None and should_stop():
                    return _grid(points, method, full, seed, normalise, coords, projected, seconds)
                head_points = points.head_points(layer, head, normalise=normalise)
                if head_points is None:
                    continue
                started = time.perf_counter()
                coords[layer, head] = project(head_points, method, seed=seed, params=full)
                seconds += time.perf_counter() - started
                projected[layer, head] = True
            if on_head is not None:
                on_head(layer, head, coords[layer, head])
    return _grid(points, method, full, seed, normalise, coords, projected, seconds)


def _grid(
    points: JointPoints,
    method: str,
    params: dict[str, Any],
    seed: int,
    normalise: bool,
    coords: np.ndarray,
    projected: np.ndarray,
    seconds: float,
) -> EmbeddingGrid:
    return EmbeddingGrid(
        method=method,
        params=params,
        seed=seed,
        normalise=normalise,
        sample=points.sample,
        coords=coords,
        projected=projected.copy(),
        present=points.present.copy(),
        seconds=seconds,
    )
