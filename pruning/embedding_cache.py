"""Joint Q/K embeddings on disk, and the two steps that fill them: capture, then project.

An :class:`EmbeddingRequest` names everything that determines a result besides the model: the
sentences, ``max_length``, the cap on points per head and its seed, and (for a grid) the
projection, its parameters and the normalisation. Keys hash the request, the model's
fingerprint (``"prepared:<key>"`` / ``"run:<key>"``, content keys), this module's algorithm
version and, for UMAP / t-SNE, the umap-learn / scikit-learn version.

:class:`ProjectionCache` keeps two kinds of entries under ``$HEADSCOPE_HOME/embeddings``:

* points (:class:`pruning.embeddings.JointPoints`): so switching projection never recaptures;
* grids (:class:`pruning.projections.EmbeddingGrid`), complete or partial (a cancelled job
  leaves the heads it finished; the next job continues from them).

Each entry is ``<key>.safetensors`` (arrays) plus ``<key>.json`` (metadata and the SHA-256 of the
arrays file), each written to a temporary name and renamed into place, arrays first. An entry
that cannot be read back, or whose arrays do not match its digest, is moved aside
(``*.corrupt-*``) and treated as missing. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cache.paths import headscope_home
from pruning.embeddings import DEFAULT_MAX_POINTS, JointPoints, TokenSample, capture_points
from pruning.projections import EmbeddingGrid, HeadCallback, project_grid, projection_params

if TYPE_CHECKING:
    from pruning.run_models import ModelRef

__all__ = [
    "EMBEDDING_ALGORITHM_VERSION",
    "EmbeddingRequest",
    "ProjectionCache",
    "compute_grid",
    "load_points",
]

log = logging.getLogger(__name__)

# Bump when token sampling, normalisation or a projection's use of its library changes.
EMBEDDING_ALGORITHM_VERSION = 1
MAX_SENTENCES = 200
_KEY_LENGTH = 64
_LIBRARIES = {"umap": "umap-learn", "tsne": "scikit-learn"}


@dataclass(frozen=True)
class EmbeddingRequest:
    """What to embed and how, besides the model.

    Attributes:
        sentences: the non-empty texts.
        method: ``"pca"``, ``"umap"`` or ``"tsne"``.
        params: the projection's parameters as sorted ``(name, value)`` pairs, defaults filled
            in (build with :meth:`make` to pass a dict).
        max_points: cap on points per head (queries + keys); tokens are sampled with ``seed``.
        seed: token sampling and projection seed.
        normalise: align keys to queries per head (AttentionViz; on by default).
        max_length: tokens per sentence before truncation.
    """

    sentences: tuple[str, ...]
    method: str = "pca"
    params: tuple[tuple[str, Any], ...] = ()
    max_points: int = DEFAULT_MAX_POINTS
    seed: int = 0
    normalise: bool = True
    max_length: int = 128

    def __post_init__(self) -> None:
        sentences = tuple(str(s) for s in self.sentences)
        if not sentences or any(not s.strip() for s in sentences):
            raise ValueError("Give at least one sentence, and no empty ones, to embed.")
        if len(sentences) > MAX_SENTENCES:
            raise ValueError(
                f"{len(sentences)} sentences is too many; use at most {MAX_SENTENCES} (the cap "
                "on points per head samples tokens from them anyway)."
            )
        if self.max_points < 2:
            raise ValueError(f"max_points is {self.max_points}; use at least 2.")
        if not 4 <= self.max_length <= 4096:
            raise ValueError(f"max_length is {self.max_length}; use 4 to 4096 tokens.")
        full = projection_params(self.method, dict(self.params))
        object.__setattr__(self, "sentences", sentences)
        object.__setattr__(self, "params", tuple(sorted(full.items())))

    @classmethod
    def make(
        cls, sentences: Any, method: str = "pca", params: Mapping[str, Any] | None = None, **kw: Any
    ) -> EmbeddingRequest:
        """A request from a params dict (``None`` = the method's defaults)."""
        return cls(tuple(sentences), method, tuple((params or {}).items()), **kw)

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (inverse of :meth:`from_dict`)."""
        return {
            "sentences": list(self.sentences),
            "method": self.method,
            "params": self.param_dict,
            "max_points": self.max_points,
            "seed": self.seed,
            "normalise": self.normalise,
            "max_length": self.max_length,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbeddingRequest:
        fields = dict(data)
        return cls.make(
            fields.pop("sentences"), fields.pop("method"), fields.pop("params"), **fields
        )

    def points_key(self, fingerprint: str) -> str:
        """The key of the captured points (independent of the projection)."""
        return _digest(
            {
                "kind": "points",
                "algorithm": EMBEDDING_ALGORITHM_VERSION,
                "model": fingerprint,
                "sentences": list(self.sentences),
                "max_length": self.max_length,
                "max_points": self.max_points,
                "seed": self.seed,
            }
        )

    def grid_key(self, fingerprint: str) -> str:
        """The key of the projected grid."""
        return _digest(
            {
                "kind": "grid",
                "points": self.points_key(fingerprint),
                "method": self.method,
                "params": self.param_dict,
                "normalise": self.normalise,
                "library": _library_version(self.method),
            }
        )


def _digest(payload: dict[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _library_version(method: str) -> str:
    import importlib.metadata

    name = _LIBRARIES.get(method)
    if name is None:
        return "numpy"
    try:
        return f"{name} {importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{name} missing"


class ProjectionCache:
    """Captured points and projected grids by key, as safetensors + JSON pairs.

    Args:
        root: the folder (default ``$HEADSCOPE_HOME/embeddings``), created on first use.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._root = None if root is None else Path(root).expanduser()

    @property
    def root(self) -> Path:
        """The cache's folder (created when missing)."""
        root = self._root if self._root is not None else headscope_home() / "embeddings"
        root.mkdir(parents=True, exist_ok=True)
        return root

    def paths_for(self, key: str) -> tuple[Path, Path]:
        """The arrays file and the metadata file of a key.

        Raises:
            ValueError: ``key`` is not 64 lowercase hex digits.
        """
        valid = isinstance(key, str) and len(key) == _KEY_LENGTH
        if not valid or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"{key!r} is not an embedding key; make one with EmbeddingRequest.")
        return self.root / f"{key}.safetensors", self.root / f"{key}.json"

    def get_points(self, key: str) -> JointPoints | None:
        """Stored points, or None (missing, or damaged: then moved aside)."""
        found = self._read(key, "points")
        if found is None:
            return None
        arrays, meta = found
        try:
            sample = TokenSample.from_dict(meta["sample"])
            points = JointPoints(
                sample=sample,
                queries=arrays["queries"],
                keys=arrays["keys"],
                present=arrays["present"].astype(bool),
            )
            shape = (*points.grid, sample.n_tokens)
            if points.queries.shape[:3] != shape or points.keys.shape != points.queries.shape:
                raise ValueError("the arrays do not match the token sample")
        except (ValueError, KeyError, TypeError) as error:
            self._move_aside(key, error)
            return None
        return points

    def put_points(self, key: str, points: JointPoints) -> None:
        """Store points atomically."""
        arrays: dict[str, np.ndarray] = {
            "queries": points.queries,
            "keys": points.keys,
            "present": points.present.astype(np.uint8),
        }
        self._write(key, "points", arrays, {"sample": points.sample.to_dict()})

    def get_grid(self, key: str) -> EmbeddingGrid | None:
        """A stored grid (complete or partial), or None (missing, or damaged: moved aside)."""
        found = self._read(key, "grid")
        if found is None:
            return None
        arrays, meta = found
        try:
            sample = TokenSample.from_dict(meta["sample"])
            grid = EmbeddingGrid(
                method=str(meta["method"]),
                params=dict(meta["params"]),
                seed=int(meta["seed"]),
                normalise=bool(meta["normalise"]),
                sample=sample,
                coords=arrays["coords"],
                projected=arrays["projected"].astype(bool),
                present=arrays["present"].astype(bool),
                seconds=float(meta["seconds"]),
            )
            n_layers, n_heads = grid.present.shape
            if grid.coords.shape != (n_layers, n_heads, sample.n_points, 2):
                raise ValueError("the coordinates do not match the token sample")
            if grid.projected.shape != grid.present.shape:
                raise ValueError("the projected and present masks differ in shape")
        except (ValueError, KeyError, TypeError) as error:
            self._move_aside(key, error)
            return None
        return grid

    def put_grid(self, key: str, grid: EmbeddingGrid) -> None:
        """Store a grid (complete or partial) atomically."""
        arrays: dict[str, np.ndarray] = {
            "coords": grid.coords.astype(np.float32),
            "projected": grid.projected.astype(np.uint8),
            "present": grid.present.astype(np.uint8),
        }
        meta = {
            "method": grid.method,
            "params": grid.params,
            "seed": grid.seed,
            "normalise": grid.normalise,
            "seconds": grid.seconds,
            "sample": grid.sample.to_dict(),
        }
        self._write(key, "grid", arrays, meta)

    def _write(
        self, key: str, kind: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> None:
        from safetensors.numpy import save

        arrays_path, meta_path = self.paths_for(key)
        blob = save({name: np.ascontiguousarray(a) for name, a in arrays.items()})
        document = {"key": key, "kind": kind, "digest": hashlib.sha256(blob).hexdigest(), **meta}
        _atomic_write(arrays_path, blob)
        _atomic_write(meta_path, json.dumps(document, sort_keys=True).encode())

    def _read(self, key: str, kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        from safetensors.numpy import load

        arrays_path, meta_path = self.paths_for(key)
        try:
            text = meta_path.read_text(encoding="utf-8")
            blob = arrays_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning("could not read cached embedding %s: %s", key, error)
            return None
        try:
            meta = json.loads(text)
            if meta.get("key") != key or meta.get("kind") != kind:
                raise ValueError(f"the file is not the {kind} entry of this key")
            if hashlib.sha256(blob).hexdigest() != meta.get("digest"):
                raise ValueError("the arrays do not match their digest")
            return load(blob), meta
        except Exception as error:  # also safetensors' own error type for a bad header
            self._move_aside(key, error)
            return None

    def _move_aside(self, key: str, error: BaseException) -> None:
        tag = uuid.uuid4().hex[:8]
        log.warning("cached embedding %s is damaged (%s); moved it aside", key, error)
        for path in self.paths_for(key):
            try:
                os.replace(path, path.with_name(f"{path.name}.corrupt-{tag}"))
            except FileNotFoundError:
                pass
            except OSError:
                path.unlink(missing_ok=True)


def _atomic_write(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.stem[:16]}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_points(
    ref: ModelRef,
    request: EmbeddingRequest,
    *,
    cache: ProjectionCache | None = None,
    device: Any = None,
    loaded: Any = None,
) -> JointPoints:
    """The request's points for a model: from the cache, else captured and stored.

    Args:
        ref: the model (:mod:`pruning.run_models`).
        cache: the disk cache (None: capture without caching).
        device: where to load the model (``None`` picks one).
        loaded: an already loaded :class:`~pruning.models.LoadedClassifier` of ``ref``.
    """
    from pruning.run_models import load_ref, ref_fingerprint

    key = request.points_key(ref_fingerprint(ref))
    points = cache.get_points(key) if cache is not None else None
    if points is not None:
        return points
    loaded = loaded if loaded is not None else load_ref(ref, device=device)
    points = capture_points(
        loaded.model,
        loaded.tokenizer,
        request.sentences,
        max_length=request.max_length,
        max_points=request.max_points,
        seed=request.seed,
    )
    if cache is not None:
        cache.put_points(key, points)
    return points


def compute_grid(
    ref: ModelRef,
    request: EmbeddingRequest,
    *,
    cache: ProjectionCache | None = None,
    points: JointPoints | None = None,
    device: Any = None,
    on_head: HeadCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EmbeddingGrid:
    """The request's projected grid for a model: from the cache, continued, or computed.

    A complete cached grid is returned as is (``on_head`` is not called); a partial one is
    continued. The result is stored, partial when ``should_stop`` ended it early.

    Args:
        points: the request's points when already at hand (else :func:`load_points`).
        on_head, should_stop: as :func:`pruning.projections.project_grid`.
    """
    from pruning.run_models import ref_fingerprint

    key = request.grid_key(ref_fingerprint(ref))
    stored = cache.get_grid(key) if cache is not None else None
    if stored is not None and stored.complete:
        return stored
    if points is None:
        points = load_points(ref, request, cache=cache, device=device)
    if stored is not None and stored.coords.shape[:3] != (*points.grid, points.sample.n_points):
        stored = None  # made from other points (cannot happen for one key unless tampered with)
    grid = project_grid(
        points,
        request.method,
        seed=request.seed,
        params=request.param_dict,
        normalise=request.normalise,
        on_head=on_head,
        should_stop=should_stop,
        initial=stored,
    )
    if cache is not None and grid.heads_done:
        cache.put_grid(key, grid)
    return grid
