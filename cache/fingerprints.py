"""Fingerprints and provenance for the model store: what a prepared model was made from.

* :func:`folder_fingerprint` hashes a model folder's config, weights and tokenizer files
  (memoised while the files are unchanged); :func:`base_model_fingerprint` applies it to a
  :class:`pruning.models.ModelSpec` (a hub model is identified by id and revision instead).
* :func:`spec_to_dict` turns a ModelSpec / DataSpec into a comparable JSON dict.
* :func:`software_versions` records the library versions an entry was made with.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pruning.models import ModelSpec

__all__ = [
    "base_model_fingerprint",
    "folder_fingerprint",
    "lock_fingerprint",
    "software_versions",
    "spec_to_dict",
]

# Files of a model folder that determine the model's function (weights, config, tokenizer).
_FINGERPRINT_NAMES = frozenset(
    {
        "config.json",
        "headscope.json",
        "merges.txt",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "vocab.txt",
    }
)
_FINGERPRINT_SUFFIXES = (".safetensors", ".bin")
_CHUNK = 1 << 20


# The lock that `make setup` installs from: requirements.lock beside the source tree.
LOCK_PATH = Path(__file__).resolve().parent.parent / "requirements.lock"


def lock_fingerprint(path: Path | None = None) -> str:
    """First 16 hex digits of the lock file's SHA-256, or ``"none"`` without a lock.

    A result that records it says which pinned set of packages made it (``make setup`` installs
    from that lock; a plain ``pip install headscope`` has none).
    """
    where = LOCK_PATH if path is None else path
    try:
        data = where.read_bytes()
    except OSError:
        return "none"
    return hashlib.sha256(data).hexdigest()[:16]


def software_versions() -> dict[str, str]:
    """Versions of Python, torch, transformers and HeadScope (``"unknown"`` when not installed),
    and the hash of the install lock (``"lock"``, see :func:`lock_fingerprint`)."""
    import importlib.metadata

    import torch
    import transformers

    try:
        headscope = importlib.metadata.version("headscope")
    except importlib.metadata.PackageNotFoundError:
        headscope = "unknown"
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "transformers": str(transformers.__version__),
        "headscope": headscope,
        "lock": lock_fingerprint(),
    }


def spec_to_dict(spec: Any) -> dict[str, Any]:
    """A ModelSpec / DataSpec as a JSON dict with local paths made absolute (for comparison)."""
    data = dataclasses.asdict(spec)
    local = data.get("source") == "local" or data.get("name") == "csv"
    if local and data.get("path"):
        data["path"] = str(Path(str(data["path"])).expanduser().resolve())
    return data


@functools.lru_cache(maxsize=32)
def _folder_digest(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    """SHA-256 of the named files' names, sizes and bytes (memoised by size and mtime)."""
    digest = hashlib.sha256()
    for name, size, _ in stamp:
        digest.update(f"{name}\x00{size}\x00".encode())
        with open(Path(folder) / name, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def folder_fingerprint(folder: str | os.PathLike[str]) -> str:
    """Content hash of a model folder: config, weights and tokenizer files (not ``entry.json``).

    About 0.2 s for the default encoder the first time, then memoised while files are unchanged.

    Raises:
        FileNotFoundError: when the folder holds no weights file.
    """
    root = Path(folder).expanduser().resolve()
    files = sorted(
        path
        for path in root.iterdir()
        if path.is_file()
        and (path.name in _FINGERPRINT_NAMES or path.name.endswith(_FINGERPRINT_SUFFIXES))
    )
    if not any(path.name.endswith(_FINGERPRINT_SUFFIXES) for path in files):
        raise FileNotFoundError(
            f"{root} holds no model weights (*.safetensors); give a folder with a saved model."
        )
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _folder_digest(str(root), stamp)


def base_model_fingerprint(spec: ModelSpec) -> str:
    """A fingerprint of the model a spec names, computed without loading it.

    The default encoder and local folders are hashed from their files (weights, config,
    tokenizer). A hub model is identified by its id and revision: pin ``revision`` for an exact
    match, since a moving branch is not detected.
    """
    if spec.source == "hub":
        ident = {"hub": spec.path, "revision": spec.revision}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    return folder_fingerprint(spec.resolve())
