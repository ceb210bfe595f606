"""A journal of unfinished background jobs on disk: a restarted app can say what was cut off.

Jobs run in threads of the server process (:class:`pruning.jobs.LocalExecutor`): when that process
dies (killed, crashed, restarted) its jobs die with it, silently. With a journal, every unfinished
job has a JSON file under ``$HEADSCOPE_HOME/jobs/``, written atomically (temporary name, then
rename) when it is submitted, when its status changes and, at most every few seconds, as it
reports progress; it is deleted when the job ends. A file still saying "queued" or "running"
whose owner process is gone therefore belongs to a job that was interrupted:
:meth:`JobJournal.interrupted` marks it so and lists it, and the app shows it until dismissed.

The owner is recorded as a pid plus a marker of that process's identity (the boot id and the
process's start time on Linux), so a new process that happens to get the same pid, after a
reboot or in a restarted container, is not taken for the owner. Elsewhere only the pid is
checked. Nothing here is ever unpickled: JSON only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cache.paths import headscope_home

__all__ = [
    "JOURNAL_DIR",
    "JobJournal",
    "JournalEntry",
    "owner_alive",
    "process_marker",
]

log = logging.getLogger(__name__)

JOURNAL_DIR = "jobs"
ACTIVE = ("queued", "running")
INTERRUPTED = "interrupted"
_SUFFIX = ".json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_FORMAT = 1


@dataclass(frozen=True)
class JournalEntry:
    """One unfinished (or interrupted) job as the journal records it.

    Attributes:
        job_id, name: the executor's job id and name.
        status: ``"queued"``, ``"running"`` or ``"interrupted"``.
        pid, owner: the process that ran the job and its identity marker (see
            :func:`process_marker`; empty where none is available).
        started: ISO 8601 UTC time the job was submitted; ``updated``: of the last write.
        message, fraction: the last progress report.
        meta: the job's metadata (e.g. ``{"title": ...}``), as JSON.
    """

    job_id: str
    name: str
    status: str
    pid: int
    owner: str
    started: str
    updated: str
    message: str = ""
    fraction: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """What the UI calls the job: its ``title`` metadata, else its name."""
        return str(self.meta.get("title") or self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Any) -> JournalEntry:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: not a journal entry (wrong format or field types).
        """
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError("not a HeadScope job journal entry")
        try:
            entry = cls(
                job_id=_text(data["job_id"]),
                name=_text(data["name"]),
                status=_text(data["status"]),
                pid=int(data["pid"]),
                owner=_text(data["owner"]),
                started=_text(data["started"]),
                updated=_text(data["updated"]),
                message=_text(data.get("message", "")),
                fraction=float(data.get("fraction", 0.0)),
                meta=dict(data.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"malformed job journal entry ({error})") from None
        if entry.status not in (*ACTIVE, INTERRUPTED):
            raise ValueError(f"unknown job status {entry.status!r} in the journal")
        return entry


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Is the owner still alive?


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time in clock ticks since boot)`` of a Linux process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]


def process_marker(pid: int | None = None) -> str:
    """What identifies a process beyond its pid: ``"<boot id>:<start ticks>"`` on Linux, else "".

    A pid is reused once its process is gone; the boot id and start time of the new process
    differ from the recorded ones.
    """
    stat = _proc_stat(os.getpid() if pid is None else pid)
    if stat is None:
        return ""
    return f"{_boot_id()}:{stat[1]}"


def owner_alive(pid: int, marker: str) -> bool:
    """True when process ``pid`` exists, is not a zombie and (with a marker) is the same process.

    On Windows, where a safe liveness check needs more than the standard library, only this
    process counts as alive.
    """
    if pid <= 0:
        return False
    if pid == os.getpid():
        return not marker or marker == process_marker()
    if sys.platform == "win32":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:
        return False
    stat = _proc_stat(pid)
    if stat is not None and stat[0] in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    if marker:
        current = process_marker(pid)
        return not current or current == marker
    return True


# ---------------------------------------------------------------------------------------------
# The journal


class JobJournal:
    """Unfinished jobs on disk, one JSON file each (see the module docstring).

    Safe to use from several threads and processes: each write goes to a unique temporary name
    and is renamed into place. Failures to write are logged, never raised: a job must not fail
    because its journal could not be written.

    Args:
        root: the journal's folder (default ``$HEADSCOPE_HOME/jobs``), created on first use.
        progress_interval_s: progress reports of one job are written at most this often.
    """

    def __init__(
        self, root: str | os.PathLike[str] | None = None, *, progress_interval_s: float = 2.0
    ) -> None:
        self._root = None if root is None else Path(root).expanduser()
        self.progress_interval_s = progress_interval_s
        self._last_write: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The journal's folder (created when missing)."""
        root = self._root if self._root is not None else headscope_home() / JOURNAL_DIR
        root.mkdir(parents=True, exist_ok=True)
        return root

    def path_for(self, job_id: str) -> Path:
        """The file of a job: a readable prefix of its id plus a hash (ids may hold any text)."""
        digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        readable = _UNSAFE.sub("_", job_id)[:48].strip("._") or "job"
        return self.root / f"{readable}-{digest}{_SUFFIX}"

    # -- writing ---------------------------------------------------------------------------------

    def record(
        self,
        job_id: str,
        *,
        name: str,
        status: str,
        started: str,
        message: str = "",
        fraction: float = 0.0,
        meta: Mapping[str, Any] | None = None,
        throttle: bool = False,
    ) -> bool:
        """Write a job's state as owned by this process; True when it was written.

        Args:
            status: ``"queued"`` or ``"running"``.
            started: ISO 8601 time the job was submitted.
            throttle: a progress report: skipped when this job's last write is more recent than
                ``progress_interval_s`` (status changes are always written).
        """
        if status not in ACTIVE:
            raise ValueError(f"A journal records queued or running jobs, not {status!r}.")
        now = time.monotonic()
        with self._lock:
            last = self._last_write.get(job_id)
            if throttle and last is not None and now - last < self.progress_interval_s:
                return False
            self._last_write[job_id] = now
        entry = JournalEntry(
            job_id=str(job_id),
            name=str(name),
            status=status,
            pid=os.getpid(),
            owner=process_marker(),
            started=started,
            updated=_now(),
            message=str(message)[:500],
            fraction=min(1.0, max(0.0, float(fraction))),
            meta=_json_ready(meta or {}),
        )
        return self._write(entry)

    def remove(self, job_id: str) -> None:
        """Forget a job (it ended: its result, if any, is in the stores)."""
        with self._lock:
            self._last_write.pop(job_id, None)
        try:
            self.path_for(job_id).unlink(missing_ok=True)
        except OSError as error:
            log.warning("could not remove job %s from the journal: %s", job_id, error)

    def _write(self, entry: JournalEntry) -> bool:
        try:
            target = self.path_for(entry.job_id)
            temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                with open(temporary, "w", encoding="utf-8") as stream:
                    json.dump(entry.to_dict(), stream, sort_keys=True)
                    stream.flush()
                    os.fsync(stream.fileno())
                os.replace(temporary, target)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
        except OSError as error:
            log.warning("could not write job %s to the journal: %s", entry.job_id, error)
            return False
        return True

    # -- reading ---------------------------------------------------------------------------------

    def entries(self) -> list[JournalEntry]:
        """Every readable entry, oldest first; unreadable files are logged and removed."""
        found = []
        for path in sorted(self.root.glob(f"*{_SUFFIX}")):
            try:
                entry = JournalEntry.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except FileNotFoundError:
                continue  # removed by its job meanwhile
            except (OSError, UnicodeDecodeError, ValueError) as error:
                log.warning("removing unreadable job journal file %s (%s)", path.name, error)
                path.unlink(missing_ok=True)
                continue
            if path != self.path_for(entry.job_id):
                log.warning("removing job journal file %s: it names another job", path.name)
                path.unlink(missing_ok=True)
                continue
            found.append(entry)
        return sorted(found, key=lambda entry: (entry.started, entry.job_id))

    def interrupted(self) -> list[JournalEntry]:
        """Jobs cut off by the end of their process, oldest first.

        Queued or running entries whose owner process is gone (see :func:`owner_alive`) are
        rewritten as interrupted first; entries of live processes are left alone.
        """
        result = []
        for entry in self.entries():
            if entry.status in ACTIVE and not owner_alive(entry.pid, entry.owner):
                entry = dataclasses.replace(entry, status=INTERRUPTED)
                log.warning(
                    "job %s (%s) was interrupted: its process %d is gone",
                    entry.job_id,
                    entry.title,
                    entry.pid,
                )
                self._write(entry)
            if entry.status == INTERRUPTED:
                result.append(entry)
        return result

    def dismiss(self, job_ids: Iterable[str]) -> int:
        """Delete interrupted entries (the user has seen them); returns how many were deleted.

        Entries that are not interrupted (a job submitted again meanwhile) are kept.
        """
        wanted = set(job_ids)
        removed = 0
        for entry in self.entries():
            if entry.job_id in wanted and entry.status == INTERRUPTED:
                self.path_for(entry.job_id).unlink(missing_ok=True)
                removed += 1
        return removed


def _json_ready(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as plain JSON (anything else as its text)."""
    try:
        ready = json.loads(json.dumps(dict(meta), default=str, skipkeys=True))
    except (TypeError, ValueError):
        return {}
    return ready if isinstance(ready, dict) else {}
