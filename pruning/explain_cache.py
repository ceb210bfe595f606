"""Explanations on disk: one JSON file per attribution under ``$HEADSCOPE_HOME/explanations``.

The key (:func:`explanation_key`) hashes everything that determines an attribution: the model's
fingerprint (``"prepared:<key>"`` / ``"run:<key>"``, both content keys), the text, the method,
the sample count, the seed, the target (``None`` = the model's own predicted class) and the
versions of lime, shap and this module's algorithm. Files are written to a temporary name and
renamed into place; a file that cannot be read back is moved aside (``*.corrupt-*``) and treated
as missing. JSON only, nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cache.paths import headscope_home
from pruning.attribution import Attribution

if TYPE_CHECKING:
    from pruning.run_models import ModelRef

__all__ = ["EXPLAIN_ALGORITHM_VERSION", "ExplanationCache", "explanation_key"]

log = logging.getLogger(__name__)

# Bump when the word segmentation, the maskers or the SHAP batch size change.
EXPLAIN_ALGORITHM_VERSION = 1
_KEY_LENGTH = 64


def explainer_versions() -> dict[str, str]:
    """Versions of lime and shap (``"missing"`` when not installed)."""
    import importlib.metadata

    versions = {}
    for name in ("lime", "shap"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def explanation_key(
    model: ModelRef | str,
    text: str,
    method: str,
    samples: int,
    seed: int,
    target: int | None,
) -> str:
    """The cache key (64 hex digits) of one attribution.

    Args:
        model: a :class:`~pruning.run_models.ModelRef` or its ``ref_fingerprint``.
        target: the explained class, or ``None`` for "the model's own predicted class".
    """
    if isinstance(model, str):
        fingerprint = model
    else:
        from pruning.run_models import ref_fingerprint

        fingerprint = ref_fingerprint(model)
    payload = {
        "algorithm": EXPLAIN_ALGORITHM_VERSION,
        "model": fingerprint,
        "text": text,
        "method": method,
        "samples": int(samples),
        "seed": int(seed),
        "target": None if target is None else int(target),
        "versions": explainer_versions(),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


class ExplanationCache:
    """Attributions by :func:`explanation_key`, as JSON files.

    Args:
        root: the folder (default ``$HEADSCOPE_HOME/explanations``), created on first use.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._root = None if root is None else Path(root).expanduser()

    @property
    def root(self) -> Path:
        """The cache's folder (created when missing)."""
        root = self._root if self._root is not None else headscope_home() / "explanations"
        root.mkdir(parents=True, exist_ok=True)
        return root

    def path_for(self, key: str) -> Path:
        """The file of a key.

        Raises:
            ValueError: ``key`` is not 64 lowercase hex digits.
        """
        valid = isinstance(key, str) and len(key) == _KEY_LENGTH
        if not valid or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"{key!r} is not an explanation key; make one with explanation_key().")
        return self.root / f"{key}.json"

    def get(self, key: str) -> Attribution | None:
        """The stored attribution, or None (missing, or damaged: then moved aside)."""
        path = self.path_for(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning("could not read cached explanation %s: %s", path, error)
            return None
        try:
            document = json.loads(text)
            if document.get("key") != key:
                raise ValueError("the file belongs to another key")
            return Attribution.from_dict(document["attribution"])
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            self._move_aside(path, error)
            return None

    def put(self, key: str, attribution: Attribution) -> Path:
        """Store an attribution atomically (temporary file, then rename); returns the file."""
        path = self.path_for(key)
        document: dict[str, Any] = {"key": key, "attribution": attribution.to_dict()}
        handle, temporary = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(document, stream, sort_keys=True)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.path_for(key).is_file()

    def _move_aside(self, path: Path, error: BaseException) -> None:
        aside = path.with_name(f"{path.name}.corrupt-{uuid.uuid4().hex[:8]}")
        log.warning("cached explanation %s is damaged (%s); moved it to %s", path, error, aside)
        try:
            os.replace(path, aside)
        except OSError:
            path.unlink(missing_ok=True)
