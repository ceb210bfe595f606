"""The model store: prepared (fine-tuned, evaluated) classifiers under ``$HEADSCOPE_HOME/models``.

Each entry is a folder ``<root>/<key>/`` written by :func:`pruning.models.save_pruned` (config,
safetensors weights, tokenizer, ``headscope.json``) plus ``entry.json`` with everything known about
it: model and data specs, training config, label names, validation/test metrics, timings and
library versions. The whole entry, ``entry.json`` included, is written in a staging folder
(``.staging-*``) and renamed into place under the store's lock file; an entry it replaces is moved
aside (``.replaced-*``) first and deleted after. A writer killed or stopped by a full disk at any
point leaves the old entry or the new one, never a mix: staging folders are removed (at once on an
error, once stale after a kill), and an entry left aside by a killed writer is put back. A folder
without a readable ``entry.json`` is incomplete and is ignored. Nothing is ever unpickled: JSON
and safetensors only.

The key is the first 16 hex digits of a SHA-256 over the schema version, the base model's
fingerprint (:func:`cache.fingerprints.base_model_fingerprint`), the data fingerprint, the
training config (sorted JSON) and the label names: the same inputs always find the same entry,
and any change trains a new one.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cache.fingerprints import software_versions, spec_to_dict
from cache.paths import models_dir
from cache.run_store import disk_full_error, is_disk_full, store_lock

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from torch import nn
    from transformers import PreTrainedTokenizerBase

    from pruning.models import LoadedClassifier, ModelSpec

__all__ = [
    "ENTRY_FILE",
    "SCHEMA_VERSION",
    "ModelStore",
    "PreparedModel",
    "check_label_compatibility",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ENTRY_FILE = "entry.json"
KEY_LENGTH = 16
_MIN_PREFIX = 4
_KEY_PATTERN = re.compile(r"^[0-9a-f]+$")
STAGING_PREFIX = ".staging-"
REPLACED_PREFIX = ".replaced-"
# A staging folder untouched this long belongs to a writer that died.
_STALE_STAGING_S = 3600.0


def check_label_compatibility(
    model_label_names: Sequence[str], dataset_label_names: Sequence[str]
) -> None:
    """Refuse to evaluate a model on a dataset whose classes differ from the model's.

    A classifier's outputs only mean something for the classes it was trained on, in the same
    order; evaluating it elsewhere would report meaningless numbers.

    Raises:
        ValueError: when the names (or their order) differ; the message says how to prepare a
            model for the dataset.
    """
    model_names = [str(name) for name in model_label_names]
    data_names = [str(name) for name in dataset_label_names]
    if model_names == data_names:
        return
    if sorted(model_names) == sorted(data_names):
        detail = "the same classes in a different order"
    elif len(model_names) == len(data_names):
        detail = "different class names"
    else:
        detail = f"{len(model_names)} vs {len(data_names)} classes"
    raise ValueError(
        f"The model's classes {model_names} do not match the dataset's classes {data_names} "
        f"({detail}), so it cannot be evaluated on this dataset. Prepare a model for it first: "
        "`headscope prepare --data <the dataset>` (or prepare_model(...) in Python)."
    )


@dataclass(frozen=True)
class PreparedModel:
    """One entry of the model store.

    Attributes:
        key: the entry's key (16 hex digits).
        path: its folder; ``ModelSpec.local(path)`` loads it as well.
        label_names: class names in class-id order.
        metrics: ``{"validation": {...}, "test": {...}}`` (``Metrics.to_dict()`` each).
        info: the whole ``entry.json`` record.
    """

    key: str
    path: Path
    label_names: tuple[str, ...]
    metrics: dict[str, dict[str, Any]]
    info: dict[str, Any]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def created(self) -> str:
        """ISO 8601 UTC time the entry was written."""
        return str(self.info.get("created", ""))

    def metric(self, name: str = "accuracy", split: str = "test") -> float | None:
        """One stored metric (e.g. test accuracy), or None when it was not measured."""
        value = self.metrics.get(split, {}).get(name)
        return None if value is None else float(value)

    def load(self, device: Any = None) -> LoadedClassifier:
        """Load the stored classifier and tokenizer (``None`` device picks CUDA, MPS or CPU)."""
        from pruning.models import load_pruned

        return load_pruned(self.path, device=device)


class ModelStore:
    """Prepared classifiers on disk, keyed by everything that determines them.

    Args:
        root: the store's folder (default ``$HEADSCOPE_HOME/models``), created on first use.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._root = None if root is None else Path(root).expanduser()

    @property
    def root(self) -> Path:
        """The store's folder (created when missing)."""
        if self._root is None:
            return models_dir()
        self._root.mkdir(parents=True, exist_ok=True)
        return self._root

    @staticmethod
    def key_for(
        base_fingerprint: str,
        data_fingerprint: str,
        train_config: Any,
        label_names: Sequence[str],
    ) -> str:
        """The key of the entry these inputs produce.

        Args:
            base_fingerprint: see :func:`cache.fingerprints.base_model_fingerprint`.
            data_fingerprint: ``LabelledDataset.fingerprint``.
            train_config: a ``TrainConfig`` (or its ``to_dict()``).
            label_names: the dataset's class names in class-id order.
        """
        if dataclasses.is_dataclass(train_config) and not isinstance(train_config, type):
            config = dataclasses.asdict(train_config)
        else:
            config = dict(train_config)
        payload = {
            "schema": SCHEMA_VERSION,
            "base": base_fingerprint,
            "data": data_fingerprint,
            "config": config,
            "labels": [str(name) for name in label_names],
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:KEY_LENGTH]

    def path_for(self, key: str) -> Path:
        """The folder an entry with this key lives in.

        Raises:
            ValueError: when ``key`` is not a lowercase hex string.
        """
        if not isinstance(key, str) or not _KEY_PATTERN.match(key) or len(key) > 64:
            raise ValueError(
                f"{key!r} is not a model key; keys are hex strings such as the ones "
                "`headscope models` lists."
            )
        return self.root / key

    def get(self, key: str) -> PreparedModel | None:
        """The complete entry with this exact key, or None (missing, incomplete or damaged)."""
        folder = self.path_for(key)
        if not (folder / ENTRY_FILE).is_file():
            return None
        try:
            return _read_entry(folder)
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("ignoring damaged model store entry %s: %s", folder, error)
            return None

    def resolve(self, key_or_prefix: str) -> PreparedModel:
        """The entry whose key is ``key_or_prefix`` or starts with it (at least 4 digits).

        Raises:
            ValueError: when no entry or more than one matches (the message lists what exists).
        """
        text = key_or_prefix.strip().lower()
        exact = self.get(text) if _KEY_PATTERN.match(text) else None
        if exact is not None:
            return exact
        matches = (
            [entry for entry in self.list() if entry.key.startswith(text)]
            if len(text) >= _MIN_PREFIX and _KEY_PATTERN.match(text)
            else []
        )
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(entry.key for entry in self.list()) or "none yet"
        if matches:
            raise ValueError(
                f"{key_or_prefix!r} matches {len(matches)} prepared models; give more digits "
                f"of the key. Prepared models: {known}."
            )
        raise ValueError(
            f"No prepared model has key {key_or_prefix!r}. Prepared models: {known}. "
            "Run `headscope models` to list them or `headscope prepare` to make one."
        )

    def list(self) -> builtins.list[PreparedModel]:
        """All complete entries, newest first; damaged ones are logged and skipped."""
        root = self.root
        with store_lock(root, exclusive=False):
            _recover_and_clean(root)
        entries = []
        for folder in sorted(root.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            if not _KEY_PATTERN.match(folder.name):
                continue
            entry = self.get(folder.name)
            if entry is None:
                if not (folder / ENTRY_FILE).is_file():
                    log.info("skipping incomplete model store entry %s", folder)
                continue
            entries.append(entry)
        return sorted(entries, key=lambda entry: entry.created, reverse=True)

    def find(
        self, model_spec: ModelSpec, data_spec: Any, data_fingerprint: str | None = None
    ) -> builtins.list[PreparedModel]:
        """Entries prepared from this model spec on this data, newest first.

        The data matches when its spec is the same or, given ``data_fingerprint``
        (``LabelledDataset.fingerprint``), when the content is the same: the same CSV uploaded
        again under another name finds the classifier prepared on it.
        """
        wanted_model = spec_to_dict(model_spec)
        wanted_data = spec_to_dict(data_spec)
        return [
            entry
            for entry in self.list()
            if entry.info.get("model_spec") == wanted_model
            and (
                entry.info.get("data_spec") == wanted_data
                or (
                    data_fingerprint is not None
                    and entry.info.get("data_fingerprint") == data_fingerprint
                )
            )
        ]

    def delete(self, key: str) -> bool:
        """Remove an entry; True when something was removed.

        ``entry.json`` goes first, so an interrupted delete leaves an ignored incomplete folder.
        """
        folder = self.path_for(key)
        if not folder.exists():
            return False
        (folder / ENTRY_FILE).unlink(missing_ok=True)
        shutil.rmtree(folder)
        log.info("deleted model store entry %s", key)
        return True

    def save(
        self,
        key: str,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase | None,
        *,
        metrics: Mapping[str, Mapping[str, Any]],
        info: Mapping[str, Any],
    ) -> PreparedModel:
        """Write (or overwrite) the entry ``key``, staged and renamed into place whole.

        Args:
            key: from :meth:`key_for`.
            model: the classifier to store (its ``id2label`` gives the label names).
            tokenizer: its tokenizer.
            metrics: per split, e.g. ``{"test": Metrics.to_dict()}``.
            info: further JSON-ready provenance (specs, config, timings) kept in ``entry.json``.

        Raises:
            DiskFullError: the disk is full; nothing was stored, no staging files are left and
                an earlier entry with this key is unchanged.
        """
        from pruning.models import label_names_of, save_pruned

        folder = self.path_for(key)
        root = self.root
        label_names = list(label_names_of(model))
        record = {
            **dict(info),
            "schema_version": SCHEMA_VERSION,
            "key": key,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "label_names": label_names,
            "metrics": {split: dict(values) for split, values in metrics.items()},
            "versions": software_versions(),
        }
        provenance = {k: record[k] for k in ("key", "model_spec", "data_spec") if k in record}
        staging: Path | None = None
        try:
            staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{key}-", dir=root))
            staged = staging / key
            save_pruned(model, tokenizer, staged, extra={"headscope_entry": provenance})
            _write_json_atomically(staged / ENTRY_FILE, record)
            _read_entry(staged)  # what is renamed into place must read back
            _install(root, staged, folder)
        except Exception as error:
            if is_disk_full(error):
                raise disk_full_error(f"prepared model {key}", root) from error
            raise
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        log.info("stored prepared model %s in %s", key, folder)
        return _read_entry(folder)


def _install(root: Path, staged: Path, target: Path) -> None:
    """Rename a complete staged entry into place (under the lock), replacing any old one."""
    with store_lock(root, exclusive=True):
        if target.exists():
            aside = root / f"{REPLACED_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
            os.rename(target, aside)
            os.rename(staged, target)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(staged, target)


def _recover_and_clean(root: Path) -> None:
    """Put back entries a killed writer moved aside; remove stale staging folders.

    Called under the shared lock: a ``.replaced-*`` folder exists only while a writer holds the
    exclusive lock, so one seen now belongs to a writer that died.
    """
    now = time.time()
    for path in sorted(root.iterdir()):
        name = path.name
        if name.startswith(REPLACED_PREFIX):
            key = name[len(REPLACED_PREFIX) :].rsplit("-", 1)[0]
            target = root / key
            if _KEY_PATTERN.match(key) and not target.exists():
                try:
                    os.rename(path, target)
                    log.warning("restored model entry %s left aside by an interrupted save", key)
                    continue
                except OSError:
                    pass
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(STAGING_PREFIX):
            try:
                stale = now - path.stat().st_mtime > _STALE_STAGING_S
            except OSError:
                stale = False
            if stale:
                shutil.rmtree(path, ignore_errors=True)


def _write_json_atomically(target: Path, data: Mapping[str, Any]) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=2, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read_entry(folder: Path) -> PreparedModel:
    """Parse and check ``entry.json``.

    Raises:
        ValueError: when it is not valid JSON, belongs to another key, or the weights are missing.
    """
    data = json.loads((folder / ENTRY_FILE).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{ENTRY_FILE} is not a JSON object")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"schema version {data.get('schema_version')!r} != {SCHEMA_VERSION}")
    if data.get("key") != folder.name:
        raise ValueError(f"entry key {data.get('key')!r} does not match its folder")
    if not (folder / "model.safetensors").is_file():
        raise ValueError("model.safetensors is missing")
    names = data["label_names"]
    metrics = data.get("metrics") or {}
    if not isinstance(names, list) or len(names) < 2 or not isinstance(metrics, dict):
        raise ValueError("label_names or metrics are malformed")
    return PreparedModel(
        key=folder.name,
        path=folder,
        label_names=tuple(str(name) for name in names),
        metrics=metrics,
        info=data,
    )
