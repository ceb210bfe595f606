"""The run store: pruning runs on disk under ``$HEADSCOPE_HOME/runs``, indexed in SQLite.

Each run is a folder ``<root>/<key>/`` in the format of :mod:`cache.run_format` (``run.json``,
``tensors.safetensors`` and optionally ``model/``, every file checksummed).

The folders are the truth; ``index.sqlite`` (WAL, :mod:`cache.run_index`) is a cache of their
summaries that :meth:`RunStore.list` keeps in step with them and :meth:`RunStore.reindex`
rebuilds. A run is written in a staging folder (``.staging-*``), checked, and renamed into place
under the store's lock file; only then is its index row upserted, in one transaction. A writer
killed at any point leaves either the old run, the new run, or (for a new key) nothing: staging
folders are ignored and removed once stale, a run moved aside while being replaced
(``.replaced-*``) is put back, and index rows are re-derived from the folders. A save that fails
(a full disk included, reported as :class:`DiskFullError` with the folder and what to do) removes
its staging folder and leaves the store as it was. Checksums are verified on read, and the
tensors file must have a safetensors header: a damaged entry, or a ``run.json`` that passes its
checksum but holds values of the wrong type, raises :class:`CorruptRunError` from
:meth:`RunStore.get` and is reported, never raised, by :meth:`RunStore.list`. Nothing is ever
unpickled: JSON and safetensors only.

Export and import (folder or zip) live in :mod:`cache.run_export`.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cache.paths import runs_dir
from cache.run_format import (
    KEY_PATTERN,
    MODEL_DIR,
    RUN_FILE,
    RUN_SCHEMA_VERSION,
    TENSORS_FILE,
    CorruptRunError,
    RunRecord,
    RunSummary,
    UnknownRunError,
    canonical_json,
    check_folder,
    document_checksum,
    fsync_dir,
    json_ready,
    read_document,
    read_run_folder,
    write_run,
    write_text_durably,
)
from cache.run_index import (
    INDEX_FILE,
    read_index,
    stamp_files,
    stamp_trusted,
    summarize,
    write_index,
)

if sys.platform != "win32":
    import fcntl

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

    from pruning.models import LoadedClassifier

__all__ = ["DiskFullError", "RunStore", "disk_full_error", "is_disk_full", "store_lock"]

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
KEY_LENGTH = 16
STAGING_PREFIX = ".staging-"
REPLACED_PREFIX = ".replaced-"
TRASH_PREFIX = ".trash-"
# A staging folder untouched this long belongs to a writer that died.
_STALE_STAGING_S = 3600.0


# ---------------------------------------------------------------------------------------------
# Locking: one lock file per store; readers share it, installs and deletes take it alone.

_FALLBACK_LOCK = threading.RLock()


@contextmanager
def store_lock(root: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold the store's lock (shared for readers, exclusive for changes to run folders).

    ``flock`` locks belong to an open file, so threads of one process exclude each other too.
    On Windows only threads of one process are excluded.
    """
    if sys.platform == "win32":
        with _FALLBACK_LOCK:
            yield
        return
    handle = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(handle)


# ---------------------------------------------------------------------------------------------
# A full disk: said plainly, with where and what to do.

_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# safetensors (Rust) reports I/O errors as SafetensorError text, not as OSError.
_DISK_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "storagefull")


class DiskFullError(OSError):
    """The disk holding the store is full; nothing was stored (``errno`` is ``ENOSPC``)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(error: BaseException) -> bool:
    """True when ``error`` (or an error it was raised from) says the disk or quota is full."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return True
        text = str(current).lower().replace(" ", "")
        if any(marker.replace(" ", "") in text for marker in _DISK_FULL_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


def disk_full_error(what: str, where: Path) -> DiskFullError:
    """The error to raise when storing ``what`` under ``where`` failed on a full disk."""
    try:
        free = f"{shutil.disk_usage(where).free / 1e6:,.0f} MB free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(
        f"The disk is full: could not store {what} in {where} ({free}). Nothing was stored and "
        "what was stored before is unchanged. Free some space, or point HEADSCOPE_HOME at a "
        "larger disk, then try again."
    )


def _aside(root: Path, prefix: str, key: str) -> Path:
    return root / f"{prefix}{key}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------
# The store


class RunStore:
    """Pruning runs on disk, keyed by everything that determines them.

    Safe to use from several threads and processes at once: each call opens its own SQLite
    connection, and folder changes are serialised by a lock file.

    Args:
        root: the store's folder (default ``$HEADSCOPE_HOME/runs``), created on first use.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._root = None if root is None else Path(root).expanduser()

    @property
    def root(self) -> Path:
        """The store's folder (created when missing)."""
        if self._root is None:
            return runs_dir()
        self._root.mkdir(parents=True, exist_ok=True)
        return self._root

    @staticmethod
    def key_for(
        *,
        model_fingerprint: str,
        data_fingerprint: str,
        method: str,
        config: Mapping[str, Any],
        seed: int,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """The key of the run these inputs produce: 16 hex digits of a SHA-256.

        Args:
            model_fingerprint: identifies the classifier (weights and config).
            data_fingerprint: ``LabelledDataset.fingerprint``.
            method: registry name.
            config: the method config (``to_dict()``; a config dataclass works too).
            seed: the run's seed.
            extra: any further settings that change the result (splits, recovery, ...).
        """
        payload = {
            "schema": RUN_SCHEMA_VERSION,
            "model": str(model_fingerprint),
            "data": str(data_fingerprint),
            "method": str(method),
            "config": json_ready(config, "config"),
            "seed": int(seed),
            "extra": json_ready(dict(extra or {}), "extra"),
        }
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:KEY_LENGTH]

    def path_for(self, key: str) -> Path:
        """The folder of the run with this key.

        Raises:
            UnknownRunError: when ``key`` is not a run key (16-64 lowercase hex digits).
        """
        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            raise UnknownRunError(
                f"{key!r} is not a run key; keys are the 16 hex digits shown in the run list."
            )
        return self.root / key

    def exists(self, key: str) -> bool:
        """True when a complete, undamaged run with this key is stored (model size-checked)."""
        try:
            folder = self.path_for(key)
        except UnknownRunError:
            return False
        with store_lock(self.root, exclusive=False):
            return folder.is_dir() and not _check(folder, key, check_model=False)[0]

    def get(self, key: str) -> RunRecord:
        """The stored run, with every checksum verified.

        Raises:
            UnknownRunError: no run has this key (a ``KeyError`` and a ``ValueError``).
            CorruptRunError: the run is damaged; the message says what and how to delete it.
        """
        folder = self.path_for(key)
        with store_lock(self.root, exclusive=False):
            if not folder.is_dir():
                raise UnknownRunError(
                    f"No stored run has key {key!r}; it was deleted or never stored. "
                    "The Runs page lists the stored runs."
                )
            try:
                return read_run_folder(folder, key=key)
            except CorruptRunError:
                raise
            except _MALFORMED as error:
                raise CorruptRunError(key, [_malformed(error)]) from None

    def save(
        self,
        record: RunRecord,
        *,
        model: nn.Module | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> RunRecord:
        """Store a run (replacing any run with the same key) and return it as stored.

        ``info`` gains ``created`` and ``versions`` when missing. The run is written in a staging
        folder and renamed into place, so readers see the old run or the new one, never a mix.

        Args:
            record: the run; ``record.key`` from :meth:`key_for`.
            model: the pruned (and recovered) classifier to keep with the run, if any.
            tokenizer: its tokenizer (saved with it).

        Raises:
            ValueError: a malformed record (the message says which field and how to fix it).
            DiskFullError: the disk is full; nothing was stored and no staging files are left.
        """
        if not isinstance(record.key, str) or not KEY_PATTERN.match(record.key):
            raise ValueError(
                f"Run key {record.key!r} is not 16-64 lowercase hex digits; use "
                "RunStore.key_for(...)."
            )
        root = self.root
        try:
            staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{record.key}-", dir=root))
        except OSError as error:
            if is_disk_full(error):
                raise disk_full_error(f"run {record.key}", root) from error
            raise
        try:
            document = write_run(staging, record, model, tokenizer)
            self.install(staging, document)
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(error, Exception) and is_disk_full(error):
                raise disk_full_error(f"run {record.key}", root) from error
            raise
        log.info("stored run %s (%s)", record.key, record.method)
        return self.get(record.key)

    def install(self, staging: Path, document: Mapping[str, Any]) -> None:
        """Rename a complete staging folder (inside :attr:`root`) into place and index it."""
        root, key = self.root, str(document["key"])
        target = root / key
        summary = summarize(document)  # before anything moves: a bad document is refused here
        trash = None
        with store_lock(root, exclusive=True):
            if target.exists():
                replaced = _aside(root, REPLACED_PREFIX, key)
                os.rename(target, replaced)
                os.rename(staging, target)
                trash = _aside(root, TRASH_PREFIX, key)
                os.rename(replaced, trash)
            else:
                os.rename(staging, target)
            fsync_dir(root)
            self._write_index([(summary, target)], delete=[])
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def delete(self, key: str) -> bool:
        """Remove a run (damaged ones too); True when something was removed."""
        folder = self.path_for(key)
        root = self.root
        trash = _aside(root, TRASH_PREFIX, key)
        with store_lock(root, exclusive=True):
            existed = folder.exists()
            if existed:
                os.rename(folder, trash)
            had_row = self._write_index([], delete=[key])
        shutil.rmtree(trash, ignore_errors=True)
        if existed:
            log.info("deleted run %s", key)
        return existed or had_row

    def rename(self, key: str, name: str) -> None:
        """Set the user's label of a run (in ``run.json`` and the index).

        Raises:
            ValueError: an empty or over-long name.
            UnknownRunError / CorruptRunError: no such run, or its ``run.json`` is damaged.
        """
        label = str(name).strip()
        if not label or len(label) > 200:
            raise ValueError("A run name must have 1 to 200 characters; type a short label.")
        folder = self.path_for(key)
        with store_lock(self.root, exclusive=True):
            if not folder.is_dir():
                raise UnknownRunError(f"No stored run has key {key!r}; nothing to rename.")
            try:
                document = read_document(folder)
                document["run"]["info"]["name"] = label
                document["checksum"] = document_checksum(document)
                summary = summarize(document)
            except ValueError as error:
                raise CorruptRunError(key, [str(error)]) from None
            except _MALFORMED as error:
                raise CorruptRunError(key, [_malformed(error)]) from None
            temporary = folder / f".{RUN_FILE}.{uuid.uuid4().hex[:8]}"
            try:
                write_text_durably(temporary, json.dumps(document, sort_keys=True, indent=1))
                os.replace(temporary, folder / RUN_FILE)
            except BaseException as error:
                temporary.unlink(missing_ok=True)
                if isinstance(error, Exception) and is_disk_full(error):
                    raise disk_full_error(f"the new name of run {key}", folder) from error
                raise
            self._write_index([(summary, folder)], delete=[])

    def list(
        self,
        *,
        method: str | None = None,
        model_fingerprint: str | None = None,
        data_fingerprint: str | None = None,
        text: str | None = None,
    ) -> tuple[builtins.list[RunSummary], builtins.list[str]]:
        """Stored runs, newest first, and the problems found on the way (never raises for those).

        Damaged or incomplete run folders are skipped and reported; the index is brought in step
        with the folders (new folders indexed, rows of vanished folders dropped).

        Args:
            method, model_fingerprint, data_fingerprint: exact filters.
            text: case-insensitive search in key, name, method, model and data labels.
        """
        summaries, problems = self._reconcile(use_index=True)
        chosen = [
            summary
            for summary in summaries
            if (method is None or summary.method == method)
            and (model_fingerprint is None or summary.model_fingerprint == model_fingerprint)
            and (data_fingerprint is None or summary.data_fingerprint == data_fingerprint)
            and (text is None or summary.matches(text))
        ]
        chosen.sort(key=lambda summary: (summary.created, summary.key), reverse=True)
        return chosen, problems

    def reindex(self) -> builtins.list[str]:
        """Rebuild the index from the run folders; returns the problems found."""
        return self._reconcile(use_index=False)[1]

    def load_model(self, key: str, *, device: Any = None) -> LoadedClassifier:
        """Load the pruned model stored with a run.

        Raises:
            ValueError: the run has no stored model (rebuild it with ``remove_heads``).
        """
        from pruning.models import load_pruned

        record = self.get(key)
        if not record.has_model:
            raise ValueError(
                f"Run {key} has no stored model; build it with "
                "pruning.heads.remove_heads(base_model, record.mask)."
            )
        return load_pruned(self.path_for(key) / MODEL_DIR, device=device)

    def export(
        self,
        key: str,
        dest: str | os.PathLike[str],
        *,
        as_zip: bool = False,
        base_model: nn.Module | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> Path:
        """Export a run as a folder or zip; see :func:`cache.run_export.export_run`."""
        from cache.run_export import export_run

        return export_run(
            self, key, Path(dest), as_zip=as_zip, base_model=base_model, tokenizer=tokenizer
        )

    def import_run(self, source: str | os.PathLike[str]) -> RunRecord:
        """Import an exported run (folder or zip); see :func:`cache.run_export.import_run`."""
        from cache.run_export import import_run

        return import_run(self, Path(source))

    @contextmanager
    def reading(self) -> Iterator[Path]:
        """Hold the shared lock while reading run folders directly; yields :attr:`root`."""
        root = self.root
        with store_lock(root, exclusive=False):
            yield root

    # -- index ---------------------------------------------------------------------------------

    def _write_index(
        self,
        upserts: builtins.list[tuple[RunSummary, Path]],
        *,
        delete: builtins.list[str],
        replace_all: bool = False,
    ) -> bool:
        """Upsert and delete index rows; see :func:`cache.run_index.write_index`."""
        return write_index(self.root / INDEX_FILE, upserts, delete=delete, replace_all=replace_all)

    def _reconcile(
        self, *, use_index: bool
    ) -> tuple[builtins.list[RunSummary], builtins.list[str]]:
        """Summaries of every valid run folder, problems, and the index updated to match."""
        root = self.root
        problems: list[str] = []
        rows: dict[str, tuple[str, str]] = {}
        if use_index:
            try:
                rows = read_index(root / INDEX_FILE)
            except sqlite3.Error as error:
                problems.append(f"The run index could not be read ({error}); listed the folders.")
        summaries: list[RunSummary] = []
        upserts: list[tuple[RunSummary, Path]] = []
        with store_lock(root, exclusive=False):
            _recover_and_clean(root)
            folders = {
                path.name: path
                for path in root.iterdir()
                if KEY_PATTERN.match(path.name) and not path.is_symlink() and path.is_dir()
            }
            for key, folder in sorted(folders.items()):
                row = rows.get(key)
                if row is not None and stamp_trusted(row[0], stamp_files(folder), row[1]):
                    try:
                        summaries.append(RunSummary(**json.loads(row[1])))
                        continue
                    except (ValueError, TypeError):
                        pass
                found, document = _check(folder, key, check_model=False)
                summary = None
                if document is not None:
                    try:
                        summary = summarize(document)
                    except _MALFORMED as error:
                        found = [_malformed(error)]
                if document is None or summary is None:
                    problems.append(
                        f"Run {key} is damaged and was skipped: {'; '.join(found)}. Delete it "
                        f"(RunStore().delete({key!r}) or the Runs page) and run it again."
                    )
                    continue
                summaries.append(summary)
                upserts.append((summary, folder))
            valid = {summary.key for summary in summaries}
            gone = sorted(set(rows) - set(folders))
            problems.extend(
                f"Run {key} was in the index but its folder is gone; removed it from the index."
                for key in gone
            )
            stale = sorted(set(rows) - valid)
            if upserts or stale or not use_index:
                self._write_index(upserts, delete=stale, replace_all=not use_index)
        return summaries, problems


# A run.json that passes its checksum can still hold values of the wrong type or range (edited
# and re-checksummed, or written by a buggy tool): reading it must report it, never crash.
_MALFORMED = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)


def _malformed(error: BaseException) -> str:
    return f"{RUN_FILE} is malformed ({type(error).__name__}: {error})"


def _check(folder: Path, key: str, *, check_model: bool) -> tuple[list[str], dict[str, Any] | None]:
    """:func:`check_folder` that reports a malformed ``run.json`` instead of raising, plus a look
    at the safetensors header (a file re-checksummed after it was replaced is caught here)."""
    try:
        problems, document = check_folder(folder, key=key, check_model=check_model)
    except _MALFORMED as error:
        return [_malformed(error)], None
    if document is not None:
        problem = _safetensors_header_problem(folder / TENSORS_FILE)
        if problem:
            return [problem], None
    return problems, document


_MAX_HEADER = 100_000_000


def _safetensors_header_problem(path: Path) -> str:
    """Why ``path`` is not a safetensors file ("" when its header is sound); reads the header only.

    A safetensors file starts with the length of its JSON header (8 bytes, little-endian) and
    the header, a JSON object; anything else (a pickle, zeros, text) is refused without loading.
    """
    try:
        with open(path, "rb") as stream:
            size = path.stat().st_size
            length = int.from_bytes(stream.read(8), "little")
            if not 2 <= length <= min(size - 8, _MAX_HEADER):
                return f"{TENSORS_FILE} is not a safetensors file (bad header length)"
            header = json.loads(stream.read(length).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return f"{TENSORS_FILE} is not a safetensors file (unreadable header)"
    if not isinstance(header, dict):
        return f"{TENSORS_FILE} is not a safetensors file (the header is not an object)"
    return ""


def _recover_and_clean(root: Path) -> None:
    """Put back runs a killed writer moved aside; remove trash and stale staging folders.

    Called under the shared lock: a ``.replaced-*`` folder exists only while a writer holds the
    exclusive lock, so one seen now belongs to a writer that died.
    """
    now = time.time()
    for path in sorted(root.iterdir()):
        name = path.name
        if name.startswith(REPLACED_PREFIX):
            key = name[len(REPLACED_PREFIX) :].rsplit("-", 1)[0]
            target = root / key
            if KEY_PATTERN.match(key) and not target.exists():
                try:
                    os.rename(path, target)
                    log.warning("restored run %s left aside by an interrupted save", key)
                    continue
                except OSError:
                    pass
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(TRASH_PREFIX) or (
            name.startswith(STAGING_PREFIX) and _age(path, now) > _STALE_STAGING_S
        ):
            shutil.rmtree(path, ignore_errors=True)


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return 0.0
