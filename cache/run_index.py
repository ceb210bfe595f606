"""The run store's index: one SQLite row (WAL) per run folder, holding the summary of its
``run.json`` and a stamp of its files.

The folders are the truth and the index is a cache of their summaries: a row is trusted only
while its folder's stamp is unchanged and settled (see :func:`stamp_trusted`), a damaged index
file (truncated, garbled, not a database) is deleted and rebuilt from the folders, and a failed
update is logged, never raised, because the next listing repairs it.
:class:`cache.run_store.RunStore` decides when to read and write it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Mapping
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

from cache.run_format import MODEL_DIR, RACY_NS, RUN_FILE, TENSORS_FILE, RunSummary

__all__ = [
    "INDEX_FILE",
    "connect",
    "flat_metrics",
    "read_index",
    "stamp_files",
    "stamp_trusted",
    "summarize",
    "write_index",
]

log = logging.getLogger(__name__)

INDEX_FILE = "index.sqlite"
_INDEX_VERSION = 1
_BUSY_TIMEOUT_S = 5.0
_MAIN_METRICS = ("accuracy", "mcc", "macro_f1", "loss")


# ---------------------------------------------------------------------------------------------
# Rows: a run's summary and the stamp of its files


def summarize(document: Mapping[str, Any]) -> RunSummary:
    """The list row of a checked ``run.json`` document."""
    run = document["run"]
    info, model, data = run["info"], run["model"], run["data"]
    layers, heads = document["tensors"]["mask"]["shape"]
    kept = int(document["tensors"]["mask"]["kept"])
    data_spec = data.get("spec") if isinstance(data.get("spec"), dict) else {}
    return RunSummary(
        key=document["key"],
        method=run["method"],
        name=str(info.get("name") or run["method"]),
        created=str(info.get("created", "")),
        seed=run["seed"],
        model_label=str(model.get("label") or model.get("prepared_key") or ""),
        data_label=str(data.get("description") or data_spec.get("name") or ""),
        head_sparsity=1.0 - kept / (layers * heads),
        metrics=flat_metrics(run["metrics"]),
        has_model=run["has_model"],
        model_fingerprint=str(model.get("fingerprint", "")),
        data_fingerprint=str(data.get("fingerprint", "")),
        kept=kept,
        total_heads=layers * heads,
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def flat_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Flat main numbers of a run's metrics.

    ``accuracy``, ``mcc``, ``macro_f1``, ``loss``: the pruned model's (also as ``pruned_*``);
    ``dense_*`` and ``recovered_*``; ``delta_*`` = pruned - dense and ``recovered_delta_*`` =
    recovered - dense; the numeric ``cost`` entries (``params_pruned``, ...) and
    ``params_reduction`` / ``flops_reduction`` (share removed); ``weight_sparsity`` (share of all
    parameters that are exact zeros) for weight-level runs.
    """
    flat: dict[str, float] = {}
    for section in ("dense", "pruned", "recovered"):
        values = metrics.get(section)
        if isinstance(values, Mapping):
            flat.update({f"{section}_{k}": v for k, v in values.items() if _number(v)})
    for name in _MAIN_METRICS:
        if f"pruned_{name}" in flat:
            flat[name] = flat[f"pruned_{name}"]
        dense = flat.get(f"dense_{name}")
        for section, label in (("pruned", "delta"), ("recovered", "recovered_delta")):
            value = flat.get(f"{section}_{name}")
            if dense is not None and value is not None:
                flat[f"{label}_{name}"] = value - dense
    cost = metrics.get("cost")
    if isinstance(cost, Mapping):
        flat.update({k: v for k, v in cost.items() if _number(v) and k not in flat})
        for kind in ("params", "flops"):
            dense, pruned = cost.get(f"{kind}_dense"), cost.get(f"{kind}_pruned")
            if _number(dense) and _number(pruned) and dense:
                flat[f"{kind}_reduction"] = 1.0 - pruned / dense
        nonzero, total = cost.get("params_nonzero"), cost.get("params_dense")
        if _number(nonzero) and _number(total) and total:
            flat["weight_sparsity"] = 1.0 - nonzero / total
    flat.update({k: v for k, v in metrics.items() if _number(v) and k not in flat})
    return flat


def stamp_files(folder: Path) -> list[list[Any]]:
    """Name, size, mtime and inode of a run folder's main files (-1 size when missing)."""
    stamp: list[list[Any]] = []
    for name in (RUN_FILE, TENSORS_FILE, f"{MODEL_DIR}/model.safetensors"):
        try:
            stat = (folder / name).stat()
            stamp.append([name, stat.st_size, stat.st_mtime_ns, stat.st_ino])
        except OSError:
            stamp.append([name, -1, 0, 0])
    return stamp


def _summary_digest(summary_json: str) -> str:
    return hashlib.sha256(summary_json.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def stamp_trusted(stamp_json: str, current: list[list[Any]], summary_json: str) -> bool:
    """True when the folder is unchanged since it was checked and was settled by then, and the
    row's summary is the one written with the stamp (SQLite has no checksums of its own: a
    garbled byte in a row must not show up as a wrong number in the run list)."""
    try:
        stamp = json.loads(stamp_json)
        newest = max(int(entry[2]) for entry in current)
        return bool(
            stamp["files"] == current
            and int(stamp["verified_ns"]) - newest > RACY_NS
            and stamp["summary"] == _summary_digest(summary_json)
        )
    except (ValueError, KeyError, TypeError, IndexError):
        return False


# ---------------------------------------------------------------------------------------------
# SQLite


def _damaged(error: BaseException) -> bool:
    """True for errors that mean the index file is damaged (not merely busy or unwritable).

    A garbled file can fail as "malformed", "not a database", or bytes that are not UTF-8 text;
    ``OperationalError`` (locked, read-only, disk full) is not damage and is never repaired.
    """
    if isinstance(error, sqlite3.OperationalError):
        return False
    return isinstance(error, sqlite3.DatabaseError | UnicodeDecodeError)


def _discard(path: Path, error: BaseException) -> None:
    """Delete a damaged index (and its WAL files) so that it is rebuilt from the run folders."""
    log.warning("run index %s is damaged (%s); rebuilding it from the run folders", path, error)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def connect(path: Path) -> sqlite3.Connection:
    """Open the index at ``path`` (created, or deleted and rebuilt when damaged)."""
    try:
        return _open_index(path)
    except Exception as error:
        if not _damaged(error):
            raise
        _discard(path, error)
        return _open_index(path)


def read_index(path: Path) -> dict[str, tuple[str, str]]:
    """Every row as ``{key: (stamp_json, summary_json)}``.

    A damaged index is deleted and an empty one returned (the caller re-derives the rows).

    Raises:
        sqlite3.OperationalError: the index is locked or cannot be read for another reason.
    """
    try:
        with closing(connect(path)) as connection:
            rows = connection.execute("SELECT key, stamp, summary_json FROM runs").fetchall()
        return {str(key): (str(stamp), str(summary)) for key, stamp, summary in rows}
    except Exception as error:
        if not _damaged(error):
            raise
        _discard(path, error)
        return {}


def write_index(
    path: Path,
    upserts: list[tuple[RunSummary, Path]],
    *,
    delete: list[str],
    replace_all: bool = False,
) -> bool:
    """Upsert and delete rows in one transaction; True when a deleted row existed.

    A failure is logged, not raised: the folders are the truth and the next listing repairs
    the index.
    """
    verified = time.time_ns()
    summaries = [json.dumps(dataclasses.asdict(s), sort_keys=True) for s, _ in upserts]
    rows = [
        (
            s.key,
            s.method,
            s.name,
            s.created,
            min(max(s.seed, -(2**63)), 2**63 - 1),  # SQLite integers are 64-bit; only for queries
            s.model_fingerprint,
            s.data_fingerprint,
            s.model_label,
            s.data_label,
            s.head_sparsity,
            int(s.has_model),
            json.dumps(
                {
                    "files": stamp_files(folder),
                    "verified_ns": verified,
                    "summary": _summary_digest(summary),
                }
            ),
            summary,
        )
        for (s, folder), summary in zip(upserts, summaries, strict=True)
    ]
    try:
        return _write_rows(path, rows, delete, replace_all) > 0
    except Exception as error:
        if not _damaged(error) and not isinstance(error, sqlite3.Error):
            raise
        failure: BaseException = error
        if _damaged(error):
            _discard(path, error)
            try:
                return _write_rows(path, rows, delete, replace_all) > 0
            except sqlite3.Error as again:
                failure = again
        log.warning("could not update the run index (%s); it is repaired on the next list", failure)
        return False


def _write_rows(
    path: Path, rows: list[tuple[Any, ...]], delete: list[str], replace_all: bool
) -> int:
    """One transaction of deletes and upserts; returns how many deleted rows existed."""
    with closing(connect(path)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        try:
            if replace_all:
                connection.execute("DELETE FROM runs")
            removed = sum(
                connection.execute("DELETE FROM runs WHERE key = ?", (key,)).rowcount
                for key in delete
            )
            connection.executemany(
                f"INSERT OR REPLACE INTO runs VALUES ({', '.join('?' * 13)})", rows
            )
            connection.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):  # a damaged file may have no transaction to roll back
                connection.execute("ROLLBACK")
            raise
    return int(removed)


def _open_index(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        if connection.execute("PRAGMA user_version").fetchone()[0] != _INDEX_VERSION:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("DROP TABLE IF EXISTS runs")
            connection.execute(
                "CREATE TABLE runs (key TEXT PRIMARY KEY, method TEXT NOT NULL, "
                "name TEXT NOT NULL, created TEXT NOT NULL, seed INTEGER NOT NULL, "
                "model_fingerprint TEXT NOT NULL, data_fingerprint TEXT NOT NULL, "
                "model_label TEXT NOT NULL, data_label TEXT NOT NULL, head_sparsity REAL NOT NULL, "
                "has_model INTEGER NOT NULL, stamp TEXT NOT NULL, summary_json TEXT NOT NULL)"
            )
            connection.execute("CREATE INDEX runs_method ON runs (method)")
            connection.execute("CREATE INDEX runs_created ON runs (created)")
            connection.execute(f"PRAGMA user_version = {_INDEX_VERSION}")
            connection.execute("COMMIT")
    except BaseException:
        connection.close()
        raise
    return connection
