"""Checkpoints of unfinished runs: a long search resumes where it was cut off.

A method that works in iterations (A* and its baselines, random trials) saves its progress after
each finished iteration as one JSON document under ``$HEADSCOPE_HOME/checkpoints/<run key>.json``.
Each save goes to a temporary name, is flushed to disk and renamed into place, so a checkpoint is
always a whole document: the one before the last save or the last save itself. When the same run
(same key: same model, data, method, config and seed) is started again after a restart, a killed
worker or a cancel, the method reads the checkpoint and continues after its last iteration; once
the run is stored, its checkpoint is deleted. JSON only: nothing is ever unpickled, and a
damaged or foreign file is ignored (the run starts afresh) rather than trusted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from cache.paths import headscope_home
from cache.run_format import fsync_dir, write_text_durably

__all__ = ["CHECKPOINT_DIR", "RunCheckpoints"]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_KEY = re.compile(r"^[0-9a-f]{16,64}$")
_FORMAT = 1


class RunCheckpoints:
    """The checkpoint folder of a HeadScope home (``root`` for tests and other stores)."""

    def __init__(self, root: Path | None = None) -> None:
        self._root = root

    @property
    def folder(self) -> Path:
        folder = (self._root or headscope_home()) / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def path_for(self, key: str) -> Path:
        """The checkpoint file of run ``key``.

        Raises:
            ValueError: ``key`` is not a run key (16-64 lowercase hex digits).
        """
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"{key!r} is not a run key (16-64 lowercase hex digits).")
        return self.folder / f"{key}.json"

    def _document(self, key: str) -> dict[str, Any] | None:
        """Run ``key``'s checkpoint document, or None (none saved, unreadable or foreign)."""
        path = self.path_for(key)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning("ignoring the unreadable checkpoint %s (%s)", path, error)
            return None
        if (
            not isinstance(document, dict)
            or document.get("format") != _FORMAT
            or document.get("key") != key
            or not isinstance(document.get("state"), dict)
        ):
            log.warning("ignoring the checkpoint %s: not a HeadScope checkpoint of this run", path)
            return None
        return document

    def load(self, key: str) -> dict[str, Any] | None:
        """The saved progress of run ``key``, or None (none saved, or unreadable: start afresh)."""
        document = self._document(key)
        return None if document is None else dict(document["state"])

    def save(self, key: str, state: dict[str, Any], *, meta: dict[str, Any] | None = None) -> None:
        """Replace run ``key``'s checkpoint by ``state`` (JSON-ready), atomically.

        Args:
            meta: what the run is (e.g. its request), for listing and resuming it.
        """
        path = self.path_for(key)
        document = {"format": _FORMAT, "key": key, "state": state, "meta": meta or {}}
        text = json.dumps(document, allow_nan=False)
        handle, temporary = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
        try:
            write_text_durably(Path(temporary), text)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)

    def meta(self, key: str) -> dict[str, Any]:
        """What run ``key``'s checkpoint says the run is (``{}`` without a usable checkpoint)."""
        document = self._document(key)
        meta = None if document is None else document.get("meta")
        return dict(meta) if isinstance(meta, dict) else {}

    def delete(self, key: str) -> None:
        """Forget run ``key``'s checkpoint (after the run is stored); no error when none."""
        self.path_for(key).unlink(missing_ok=True)

    def run_keys(self) -> list[str]:
        """Keys of the runs with a checkpoint, sorted."""
        return sorted(
            path.stem for path in self.folder.glob("*.json") if _KEY.match(path.stem) is not None
        )
