"""The on-disk format of one pruning run: its record types, and reading, checking and writing a
run folder.

A run folder holds

* ``tensors.safetensors``: the head mask (bool ``(n_layers, n_heads)``, True = keep), the head
  scores (float, same shape) when the method has them, and extra tensors under ``extra/<name>``
  (weight masks of weight-level methods, gate histories, ...);
* ``run.json``: everything else (method, config, seed, model and data provenance, metrics, trace,
  info) plus the size and SHA-256 of every other file and a SHA-256 of its own content;
* ``model/`` (optional): the pruned, recovered classifier, written by
  :func:`pruning.models.save_pruned`.

Checksums are verified on read: a damaged folder raises :class:`CorruptRunError`. Nothing is ever
unpickled: JSON and safetensors only. Where the folders live, and how they are replaced safely,
is :mod:`cache.run_store`'s job.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cache.fingerprints import software_versions

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "EXTRA_PREFIX",
    "KEY_PATTERN",
    "MODEL_DIR",
    "RACY_NS",
    "RUN_FILE",
    "RUN_FORMAT",
    "RUN_SCHEMA_VERSION",
    "TENSORS_FILE",
    "CorruptRunError",
    "RunRecord",
    "RunSummary",
    "UnknownRunError",
    "canonical_json",
    "check_folder",
    "document_checksum",
    "file_sha256",
    "fsync_dir",
    "json_ready",
    "read_document",
    "read_run_folder",
    "safe_relative_path",
    "verify_run_folder",
    "write_run",
    "write_text_durably",
]

RUN_SCHEMA_VERSION = 1
RUN_FORMAT = "headscope-run"
RUN_FILE = "run.json"
TENSORS_FILE = "tensors.safetensors"
MODEL_DIR = "model"
EXTRA_PREFIX = "extra/"
KEY_PATTERN = re.compile(r"^[0-9a-f]{16,64}$")
_SHA_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# File times can be as coarse as 2 s: a cached check is only trusted for files older than this
# when they were checked (the "racy clean" rule of git's index).
RACY_NS = 2_000_000_000
_CHUNK = 1 << 20
_RUN_FIELDS = {
    "method": str,
    "config": dict,
    "seed": int,
    "model": dict,
    "data": dict,
    "metrics": dict,
    "trace": list,
    "info": dict,
    "has_model": bool,
}


class CorruptRunError(ValueError):
    """A stored (or imported) run is damaged: missing files, failed checksums, broken JSON.

    Attributes:
        key: the run's key (or folder name).
        problems: one line per problem found.
    """

    def __init__(self, key: str, problems: list[str]) -> None:
        self.key = key
        self.problems = list(problems)
        super().__init__(
            f"Run {key} is damaged: {'; '.join(self.problems)}. It cannot be used; delete it "
            f"(RunStore().delete({key!r}) or the delete button on the Runs page) and run it again."
        )


class UnknownRunError(KeyError, ValueError):
    """No run with this key is stored (a ``KeyError`` and a ``ValueError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True, eq=False)
class RunRecord:
    """One pruning run: what went in, what came out, and how it got there.

    Attributes:
        key: hex key from :meth:`RunStore.key_for` (16 digits).
        method: registry name of the pruning method.
        config: the method's config as a JSON dict.
        seed: the run's seed.
        model: ``{"spec", "fingerprint", "prepared_key", "label"}``.
        data: ``{"spec", "fingerprint", "description", "label_names"}``.
        metrics: ``{"dense": {...}, "pruned": {...}, "cost": {...}}`` (+ ``"recovered"``).
        trace: ``TraceEvent.to_dict()`` of every event, in order.
        info: method facts, timings, ``versions``, ``created`` (ISO UTC), ``name`` (user label).
        mask: bool ``(n_layers, n_heads)``, True = keep.
        scores: float ``(n_layers, n_heads)``, higher = more important, or None.
        extra_tensors: further tensors by name (weight masks, gate histories, ...).
        has_model: a pruned (and recovered) model folder is stored with the run.
    """

    key: str
    method: str
    config: dict[str, Any]
    seed: int
    model: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, Any]
    trace: list[dict[str, Any]]
    info: dict[str, Any]
    mask: torch.Tensor
    scores: torch.Tensor | None = None
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    has_model: bool = False

    @property
    def created(self) -> str:
        """ISO 8601 UTC time the run was stored ("" before it is stored)."""
        return str(self.info.get("created", ""))

    @property
    def name(self) -> str:
        """The user's label for the run (the method name when none was given)."""
        return str(self.info.get("name") or self.method)

    @property
    def head_sparsity(self) -> float:
        """Share of heads the mask removes, in [0, 1]."""
        return 1.0 - self.kept / max(1, self.mask.numel())

    @property
    def kept(self) -> int:
        """Number of heads the mask keeps."""
        return int(self.mask.to(torch.bool).sum())

    def json_fields(self) -> dict[str, Any]:
        """The JSON part of the record (everything but the tensors)."""
        return {name: getattr(self, name) for name in _RUN_FIELDS}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunRecord):
            return NotImplemented
        return (
            self.key == other.key
            and self.json_fields() == other.json_fields()
            and _same_tensor(self.mask, other.mask)
            and _same_tensor(self.scores, other.scores)
            and self.extra_tensors.keys() == other.extra_tensors.keys()
            and all(_same_tensor(t, other.extra_tensors[k]) for k, t in self.extra_tensors.items())
        )

    __hash__ = None  # type: ignore[assignment]


def _same_tensor(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a.cpu(), b.cpu()))


@dataclass(frozen=True)
class RunSummary:
    """A row of the run list: enough to show, filter and sort runs without loading them.

    Attributes:
        metrics: flat main numbers (see :func:`cache.run_index.flat_metrics`), e.g.
            ``accuracy`` (pruned), ``delta_accuracy`` (pruned - dense), ``recovered_delta_mcc``,
            ``flops_reduction``.
    """

    key: str
    method: str
    name: str
    created: str
    seed: int
    model_label: str
    data_label: str
    head_sparsity: float
    metrics: dict[str, float]
    has_model: bool
    model_fingerprint: str = ""
    data_fingerprint: str = ""
    kept: int = 0
    total_heads: int = 0

    def matches(self, text: str) -> bool:
        """Case-insensitive search over key, name, method and the model and data labels."""
        needle = text.strip().lower()
        haystack = (self.key, self.name, self.method, self.model_label, self.data_label)
        return not needle or any(needle in value.lower() for value in haystack)


# ---------------------------------------------------------------------------------------------
# JSON and checksums


def json_ready(value: Any, where: str = "value") -> Any:
    """``value`` as plain JSON types (tuples, numpy, tensors, paths, dataclasses converted).

    Raises:
        ValueError: for anything else; the message names where it was found.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        converted = {}
        for name, item in value.items():
            if isinstance(name, bool) or not isinstance(name, str | int):
                raise ValueError(f"{where} has a {type(name).__name__} key; JSON keys are strings.")
            converted[str(name)] = json_ready(item, f"{where}.{name}")
        return converted
    if isinstance(value, list | tuple):
        return [json_ready(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        array = value.detach().cpu() if isinstance(value, torch.Tensor) else value
        return json_ready(array.tolist(), where)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return json_ready(value.value, where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_ready(dataclasses.asdict(value), where)
    raise ValueError(
        f"{where} holds a {type(value).__name__}, which cannot be stored as JSON; convert it to "
        "numbers, strings, lists or dicts first."
    )


def canonical_json(value: Any) -> str:
    """The one text of a JSON value that checksums and keys are computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def document_checksum(document: Mapping[str, Any]) -> str:
    body = {name: value for name, value in document.items() if name != "checksum"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


@functools.lru_cache(maxsize=512)
def _settled_digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    del size, mtime_ns, inode  # part of the cache key only
    return _digest(path)


def _digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, memoised for files that have not changed for a while."""
    stat = path.stat()
    if time.time_ns() - stat.st_mtime_ns < RACY_NS:
        return _digest(str(path))
    return _settled_digest(str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def fsync_dir(folder: Path) -> None:
    if sys.platform == "win32":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_text_durably(path: Path, text: str) -> None:
    """Write a file and flush it to disk (the caller renames it into place)."""
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())


def safe_relative_path(name: str) -> PurePosixPath:
    """A relative POSIX path that stays inside its folder.

    Raises:
        ValueError: for absolute paths, drive letters, backslashes, ``..`` or empty parts.
    """
    path = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or path.is_absolute()
        or ":" in path.parts[0]
        or any(part in ("..", ".", "") for part in name.split("/"))
    ):
        raise ValueError(
            f"{name!r} is not a plain relative path (absolute, '..' or a drive); refusing to "
            "write outside the target folder."
        )
    return path


# ---------------------------------------------------------------------------------------------
# Reading and checking


def _check_document(document: Any) -> dict[str, Any]:
    """Check the structure of a parsed ``run.json`` (checksum included).

    Raises:
        ValueError: one line saying what is wrong.
    """
    if not isinstance(document, dict) or document.get("format") != RUN_FORMAT:
        raise ValueError(f"{RUN_FILE} is not a HeadScope run description")
    schema = document.get("schema_version")
    if isinstance(schema, int) and schema > RUN_SCHEMA_VERSION:
        raise ValueError(
            f"{RUN_FILE} was written by a newer HeadScope (schema {schema}, this one reads "
            f"{RUN_SCHEMA_VERSION}); update HeadScope to read it"
        )
    if schema != RUN_SCHEMA_VERSION:
        raise ValueError(f"{RUN_FILE} has unsupported schema version {schema!r}")
    if document.get("checksum") != document_checksum(document):
        raise ValueError(f"{RUN_FILE} does not match its checksum (edited or damaged)")
    key = document.get("key")
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise ValueError(f"{RUN_FILE} holds an invalid key {key!r}")
    run = document.get("run")
    if not isinstance(run, dict):
        raise ValueError(f"{RUN_FILE} has no run section")
    for name, kind in _RUN_FIELDS.items():
        value = run.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{RUN_FILE}: field {name!r} is missing or not a {kind.__name__}")
    if not all(isinstance(event, dict) for event in run["trace"]):
        raise ValueError(f"{RUN_FILE}: the trace holds something other than events")
    mask = (document.get("tensors") or {}).get("mask") or {}
    shape = mask.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(n, int) and n > 0 for n in shape)
        or not isinstance(mask.get("kept"), int)
    ):
        raise ValueError(f"{RUN_FILE}: the mask description is malformed")
    files = document.get("files")
    if not isinstance(files, dict) or TENSORS_FILE not in files:
        raise ValueError(f"{RUN_FILE} lists no {TENSORS_FILE}")
    for name, meta in files.items():
        safe_relative_path(name)
        if (
            not isinstance(meta, dict)
            or not isinstance(meta.get("size"), int)
            or not _SHA_PATTERN.match(str(meta.get("sha256")))
        ):
            raise ValueError(f"{RUN_FILE}: the entry for {name} is malformed")
    if run["has_model"] and f"{MODEL_DIR}/model.safetensors" not in files:
        raise ValueError(f"{RUN_FILE} says a model is stored but lists no model weights")
    return document


def read_document(folder: Path) -> dict[str, Any]:
    """Read and check ``run.json`` of a run folder (not the other files).

    Raises:
        ValueError: missing, unreadable, not JSON, wrong checksum or malformed.
    """
    path = folder / RUN_FILE
    if not path.is_file():
        raise ValueError(f"{RUN_FILE} is missing (the run was not completely written)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{RUN_FILE} is not readable JSON (truncated or edited): {error}"
        ) from None
    return _check_document(document)


def check_folder(
    folder: Path, *, key: str | None, check_model: bool
) -> tuple[list[str], dict[str, Any] | None]:
    """Problems of a run folder, and its document when there are none."""
    if folder.is_symlink() or not folder.is_dir():
        return [f"{folder} is not a folder"], None
    try:
        document = read_document(folder)
    except ValueError as error:
        return [str(error)], None
    problems = []
    if key is not None and document["key"] != key:
        problems.append(f"{RUN_FILE} belongs to run {document['key']}, not to folder {key}")
    for name, meta in sorted(document["files"].items()):
        path = folder / name
        if path.is_symlink() or not path.is_file():
            problems.append(f"{name} is missing")
            continue
        size = path.stat().st_size
        if size != meta["size"]:
            problems.append(
                f"{name} is truncated or resized ({size} bytes, expected {meta['size']})"
            )
        elif (check_model or not name.startswith(f"{MODEL_DIR}/")) and file_sha256(path) != meta[
            "sha256"
        ]:
            problems.append(f"{name} does not match its checksum (damaged or changed on disk)")
    return problems, (None if problems else document)


def verify_run_folder(
    folder: str | os.PathLike[str], *, key: str | None = None, check_model: bool = True
) -> list[str]:
    """Problems found in a run folder (empty when it is complete and undamaged).

    Args:
        folder: a run folder of the store or of an export.
        key: the key the run must have (a store folder's name), or None for any.
        check_model: hash the model files too; False checks only their sizes (fast listing).
    """
    return check_folder(Path(folder), key=key, check_model=check_model)[0]


def read_run_folder(folder: Path, *, key: str | None = None) -> RunRecord:
    """Verify a run folder fully and load its record.

    Raises:
        CorruptRunError: anything missing, damaged or inconsistent.
    """
    name = key or folder.name
    problems, document = check_folder(folder, key=key, check_model=True)
    if document is None:
        raise CorruptRunError(name, problems)
    try:
        tensors = load_file(str(folder / TENSORS_FILE))
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise CorruptRunError(name, [f"{TENSORS_FILE} cannot be read: {error}"]) from None
    meta = document["tensors"]
    mask = tensors.get("mask")
    if mask is None or list(mask.shape) != meta["mask"]["shape"]:
        raise CorruptRunError(name, [f"{TENSORS_FILE} holds no mask of the recorded shape"])
    mask = mask.to(torch.bool)
    if int(mask.sum()) != meta["mask"]["kept"]:
        raise CorruptRunError(name, [f"{TENSORS_FILE}: the mask disagrees with {RUN_FILE}"])
    scores = tensors.get("scores")
    if (scores is None) != (meta.get("scores") is None) or (
        scores is not None and scores.shape != mask.shape
    ):
        raise CorruptRunError(name, [f"{TENSORS_FILE}: scores missing or of the wrong shape"])
    extras = {n[len(EXTRA_PREFIX) :]: t for n, t in tensors.items() if n.startswith(EXTRA_PREFIX)}
    if sorted(extras) != sorted(meta.get("extra") or {}):
        raise CorruptRunError(name, [f"{TENSORS_FILE}: extra tensors differ from {RUN_FILE}"])
    run = document["run"]
    return RunRecord(
        key=document["key"],
        mask=mask,
        scores=scores,
        extra_tensors=dict(sorted(extras.items())),
        **{field_name: run[field_name] for field_name in _RUN_FIELDS},
    )


# ---------------------------------------------------------------------------------------------
# Writing


def write_run(
    staging: Path,
    record: RunRecord,
    model: nn.Module | None,
    tokenizer: PreTrainedTokenizerBase | None,
) -> dict[str, Any]:
    """Write a record's files into an empty staging folder; returns its ``run.json`` document."""
    if record.has_model and model is None:
        raise ValueError(
            "The record says has_model=True but no model was given; pass model=... to save() "
            "or set has_model=False."
        )
    tensors, tensor_meta = _tensor_payload(record)
    info = dict(record.info)
    # Microseconds: runs stored within one second still list newest first.
    info.setdefault("created", datetime.now(UTC).isoformat(timespec="microseconds"))
    info.setdefault("versions", software_versions())
    if not isinstance(record.seed, int) or isinstance(record.seed, bool):
        raise ValueError(f"seed must be an int, not {record.seed!r}.")
    if not isinstance(record.method, str) or not record.method:
        raise ValueError("method must be the registry name of a pruning method.")
    run = json_ready(
        {**record.json_fields(), "info": info, "has_model": model is not None}, "record"
    )
    for name in ("config", "model", "data", "metrics", "info"):
        if not isinstance(run[name], dict):
            raise ValueError(f"{name} must be a dict, not {type(getattr(record, name)).__name__}.")
    if not all(isinstance(event, dict) for event in run["trace"]):
        raise ValueError("trace must be a list of TraceEvent.to_dict() dicts.")

    save_file(tensors, str(staging / TENSORS_FILE), metadata={"format": "pt", "run": record.key})
    if model is not None:
        from pruning.heads import head_grid
        from pruning.models import save_pruned

        if tuple(head_grid(model)) != tuple(record.mask.shape):
            raise ValueError(
                f"The model has a {head_grid(model)} head grid but the mask is "
                f"{tuple(record.mask.shape)}; pass the model the mask was made for."
            )
        provenance = {"key": record.key, "method": record.method}
        save_pruned(model, tokenizer, staging / MODEL_DIR, extra={"headscope_run": provenance})
    files = {
        path.relative_to(staging).as_posix(): {
            "size": path.stat().st_size,
            "sha256": file_sha256(path),
        }
        for path in sorted(staging.rglob("*"))
        if path.is_file()
    }
    document: dict[str, Any] = {
        "format": RUN_FORMAT,
        "schema_version": RUN_SCHEMA_VERSION,
        "key": record.key,
        "run": run,
        "tensors": tensor_meta,
        "files": files,
    }
    document["checksum"] = document_checksum(document)
    write_text_durably(staging / RUN_FILE, json.dumps(document, sort_keys=True, indent=1))
    fsync_dir(staging)
    return _check_document(json.loads((staging / RUN_FILE).read_text(encoding="utf-8")))


def _tensor_payload(record: RunRecord) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors to save and their description in ``run.json``."""
    mask = record.mask
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.numel() == 0:
        raise ValueError("mask must be a bool tensor of shape (n_layers, n_heads), True = keep.")
    if mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be bool (True = keep), not {mask.dtype}; threshold it and call .bool()."
        )
    tensors = {"mask": mask.detach().to("cpu").contiguous().clone()}
    meta: dict[str, Any] = {
        "mask": {"shape": list(mask.shape), "kept": int(mask.sum())},
        "scores": None,
        "extra": {},
    }
    if record.scores is not None:
        scores = record.scores
        if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != tuple(mask.shape):
            raise ValueError(f"scores must be a tensor of the mask's shape {tuple(mask.shape)}.")
        if not scores.dtype.is_floating_point:
            raise ValueError(f"scores must be floating point, not {scores.dtype}.")
        tensors["scores"] = scores.detach().to("cpu").contiguous().clone()
        meta["scores"] = {"shape": list(scores.shape), "dtype": str(scores.dtype)}
    for name, tensor in sorted(record.extra_tensors.items()):
        if not isinstance(name, str) or not name or not isinstance(tensor, torch.Tensor):
            raise ValueError(f"extra_tensors must map non-empty names to tensors ({name!r}).")
        tensors[f"{EXTRA_PREFIX}{name}"] = tensor.detach().to("cpu").contiguous().clone()
        meta["extra"][name] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype)}
    return tensors, meta
