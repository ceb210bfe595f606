"""Export a stored run as a self-contained folder or zip, and import one back.

An export holds the run exactly as stored (``run.json`` with its checksums and
``tensors.safetensors``) plus files for people and other tools:

* ``mask.json``: ``{"mask": [[true, ...], ...], "convention": "True = keep", "layers", "heads"}``;
* ``metrics.json`` and ``trace.json``;
* ``model/``: the pruned classifier, reloadable with :func:`pruning.models.load_pruned`: the
  model stored with the run (recovered weights) or, when none is stored, the base model with the
  mask's heads removed.

Import reads only ``run.json`` and the files it lists, checks every checksum and refuses unsafe
archives (absolute paths, ``..``, links, oversized files) before anything reaches the store.
Nothing is unpickled. A file name offered for an export (a download) comes from
:func:`export_file_name`, which passes the run's name through
:func:`cache.safe_names.safe_filename`.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cache.run_format import (
    KEY_PATTERN,
    MODEL_DIR,
    RUN_FILE,
    TENSORS_FILE,
    CorruptRunError,
    RunRecord,
    read_document,
    read_run_folder,
    safe_relative_path,
)
from cache.run_store import STAGING_PREFIX, RunStore
from cache.safe_names import safe_filename

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "MAX_IMPORT_FILE_BYTES",
    "MAX_IMPORT_TOTAL_BYTES",
    "MAX_RUN_JSON_BYTES",
    "export_file_name",
    "export_run",
    "import_run",
]

# Refuse imports beyond these sizes (a bert-large model is ~1.3 GB).
MAX_IMPORT_FILE_BYTES = 8 << 30
MAX_IMPORT_TOTAL_BYTES = 32 << 30
MAX_IMPORT_ENTRIES = 10_000
# run.json is read into memory before anything else is trusted.
MAX_RUN_JSON_BYTES = 256 << 20
EXPORT_PREFIX = "headscope-run-"
# Fixed timestamp so the same run always exports to the same zip bytes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_README = """HeadScope run {key} ({method}, {kept}/{total} heads kept)

run.json             the run as stored: config, metrics, trace, provenance, checksums
tensors.safetensors  mask (bool, True = keep), scores, extra tensors
mask.json            the head mask as JSON (True = keep)
metrics.json         dense / pruned / recovered metrics and costs
trace.json           the method's trace events, in order
model/               the pruned classifier: pruning.models.load_pruned("model")

Import it into a run store with RunStore().import_run(<this folder or zip>).
"""


def export_file_name(key: str, name: str = "", *, as_zip: bool = True) -> str:
    """The file name to offer for a run's export: ``headscope-run-<name>-<key>.zip``.

    The run name is user text, so it goes through :func:`cache.safe_names.safe_filename`: a name
    like ``../../x`` can never make the download (or a file written under this name) leave its
    folder. Without a usable name the result is ``headscope-run-<key>.zip``.

    Args:
        key: the run's key (16-64 lowercase hex digits).
        name: the run's name as the user gave it (may be empty).
        as_zip: append ``.zip`` (a zip export) or not (a folder export).

    Raises:
        ValueError: ``key`` is not a run key.
    """
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise ValueError(
            f"{key!r} is not a run key; keys are the hex digits shown in the run list."
        )
    label = safe_filename(name, fallback="", max_chars=60)
    stem = f"{EXPORT_PREFIX}{label}-{key}" if label else f"{EXPORT_PREFIX}{key}"
    return f"{stem}.zip" if as_zip else stem


def export_run(
    store: RunStore,
    key: str,
    dest: Path,
    *,
    as_zip: bool = False,
    base_model: nn.Module | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Path:
    """Write a run as a folder (or zip) that :func:`import_run` and ``load_pruned`` read.

    Args:
        store: the store holding the run.
        key: the run's key.
        dest: an existing folder to export into (as ``headscope-run-<key>[.zip]``, replacing
            an earlier export of that name), or the path to create (``.zip`` is appended to a
            zip path without it).
        as_zip: write one zip file instead of a folder.
        base_model: the classifier the run pruned; needed when no model is stored with the run
            (the exported model is then ``remove_heads(base_model, mask)``).
        tokenizer: saved with a model built from ``base_model``.

    Returns:
        The folder or zip written.

    Raises:
        ValueError: no stored model and no ``base_model``, or a base model that does not fit.
        UnknownRunError / CorruptRunError: from :meth:`RunStore.get`.
    """
    record = store.get(key)
    if not record.has_model and base_model is None:
        raise ValueError(
            f"Run {key} has no stored model, so the export needs the classifier it pruned: pass "
            "base_model=<the prepared model> (and tokenizer=...) to export(); the pruned model "
            "is rebuilt from it with the run's mask."
        )
    dest = Path(dest).expanduser()
    if dest.is_dir():
        target = dest / f"{EXPORT_PREFIX}{key}{'.zip' if as_zip else ''}"
    elif dest.exists() and not as_zip:
        raise ValueError(f"{dest} is a file; give a folder to export the run into.")
    else:
        target = dest if not as_zip or dest.suffix == ".zip" else dest.with_name(f"{dest.name}.zip")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".headscope-export-", dir=target.parent))
    try:
        folder = work / f"{EXPORT_PREFIX}{key}"
        folder.mkdir()
        _copy_stored_run(store, key, folder)
        # Re-read the copy: a concurrent save of the same key may have replaced the run.
        record = read_run_folder(folder, key=key)
        _write_readable_files(folder, record)
        if not record.has_model:
            _write_rebuilt_model(folder / MODEL_DIR, record, base_model, tokenizer)
        if as_zip:
            archive = work / "export.zip"
            _write_zip(folder, archive)
            os.replace(archive, target)
        else:
            _replace_folder(folder, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _copy_stored_run(store: RunStore, key: str, folder: Path) -> None:
    with store.reading():
        source = store.path_for(key)
        names = [RUN_FILE, TENSORS_FILE]
        if (source / MODEL_DIR).is_dir():
            names.append(MODEL_DIR)
        for name in names:
            if (source / name).is_dir():
                shutil.copytree(source / name, folder / name)
            else:
                shutil.copyfile(source / name, folder / name)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_readable_files(folder: Path, record: RunRecord) -> None:
    layers, heads = record.mask.shape
    _write_json(
        folder / "mask.json",
        {
            "mask": record.mask.tolist(),
            "convention": "True = keep",
            "layers": int(layers),
            "heads": int(heads),
            "kept": record.kept,
            "key": record.key,
            "method": record.method,
        },
    )
    _write_json(folder / "metrics.json", record.metrics)
    _write_json(folder / "trace.json", record.trace)
    (folder / "README.txt").write_text(
        _README.format(
            key=record.key, method=record.method, kept=record.kept, total=record.mask.numel()
        ),
        encoding="utf-8",
    )


def _write_rebuilt_model(
    folder: Path,
    record: RunRecord,
    base_model: nn.Module | None,
    tokenizer: PreTrainedTokenizerBase | None,
) -> None:
    from pruning.heads import remove_heads
    from pruning.models import label_names_of, save_pruned

    if base_model is None:
        raise ValueError(f"Run {record.key} needs base_model to export a model.")
    wanted = record.data.get("label_names")
    have = list(label_names_of(base_model))
    if wanted and list(wanted) != have:
        raise ValueError(
            f"base_model predicts {have} but run {record.key} was made for {list(wanted)}; pass "
            "the classifier the run pruned."
        )
    pruned = remove_heads(base_model, record.mask)
    provenance = {"key": record.key, "method": record.method, "rebuilt_from_mask": True}
    save_pruned(pruned, tokenizer, folder, extra={"headscope_run": provenance})


def _write_zip(folder: Path, archive: Path) -> None:
    """Zip ``folder`` under its own name, entries sorted, fixed times: same run, same bytes."""
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            info = zipfile.ZipInfo(
                f"{folder.name}/{path.relative_to(folder).as_posix()}", _ZIP_TIME
            )
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            with path.open("rb") as source, bundle.open(info, "w", force_zip64=True) as target:
                shutil.copyfileobj(source, target)


def _replace_folder(folder: Path, target: Path) -> None:
    if not target.exists():
        os.rename(folder, target)
        return
    if not target.is_dir():
        raise ValueError(f"{target} exists and is not a folder; choose another destination.")
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    os.rename(folder, target)
    shutil.rmtree(old, ignore_errors=True)


def import_run(store: RunStore, source: Path) -> RunRecord:
    """Store a run exported by :func:`export_run` (keeping its key) and return it.

    Args:
        store: the store to import into (a run with the same key is replaced).
        source: the exported folder or zip.

    Raises:
        ValueError: not an export, or an unsafe archive (entries outside the folder, links,
            files over :data:`MAX_IMPORT_FILE_BYTES`).
        CorruptRunError: a file is missing or fails its checksum.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise ValueError(f"{source} does not exist; give the folder or zip written by export().")
    work = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}import-", dir=store.root))
    try:
        staging = work / "run"
        staging.mkdir()
        if source.is_dir():
            _copy_from_folder(source, staging)
        elif zipfile.is_zipfile(source):
            _extract_from_zip(source, staging)
        else:
            raise ValueError(
                f"{source} is neither a folder nor a zip archive; give what export() wrote."
            )
        try:
            record = read_run_folder(staging)
        except (AttributeError, TypeError, KeyError) as error:
            # Checksums can be recomputed by whoever edited the file: wrong types inside a
            # well-formed document are damage too, not a crash.
            raise ValueError(
                f"{source} holds a damaged run ({type(error).__name__}: {error}); export it again."
            ) from error
        store.install(staging, read_document(staging))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return store.get(record.key)


def _listed_files(text: bytes, source: Path) -> list[str]:
    """The files ``run.json`` lists (names checked), before its checksum is verified."""
    try:
        document = json.loads(text)
        files = document["files"]
        names = [str(name) for name in files] if isinstance(files, Mapping) else None
    except (ValueError, KeyError, TypeError):
        names = None
    if names is None:
        raise CorruptRunError(str(source), [f"{RUN_FILE} is not a readable run description"])
    for name in names:
        safe_relative_path(name)
    return names


def _copy_from_folder(source: Path, staging: Path) -> None:
    base = _run_folder_in(source)
    run_file = base / RUN_FILE
    names = _listed_files(_read_capped(run_file), source)
    total = 0
    for name in [RUN_FILE, *names]:
        path = base / name
        relative = safe_relative_path(name)
        for parent in [path, *path.parents[: len(relative.parts) - 1]]:
            if parent.is_symlink():
                raise ValueError(f"{name} in {source} is a link; refusing to import it.")
        if not path.is_file():
            raise CorruptRunError(str(source), [f"{name} is missing"])
        size = path.stat().st_size
        total += size
        _check_size(name, size, total)
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, staging / relative)


def _run_folder_in(source: Path) -> Path:
    if (source / RUN_FILE).is_file():
        return source
    candidates = [p for p in source.iterdir() if p.is_dir() and (p / RUN_FILE).is_file()]
    if len(candidates) != 1:
        raise ValueError(f"{source} holds no exported run ({RUN_FILE} not found).")
    return candidates[0]


def _check_size(name: str, size: int, total: int) -> None:
    limit = min(MAX_IMPORT_FILE_BYTES, MAX_RUN_JSON_BYTES) if name == RUN_FILE else None
    limit = MAX_IMPORT_FILE_BYTES if limit is None else limit
    if size > limit or total > MAX_IMPORT_TOTAL_BYTES:
        raise ValueError(
            f"{name} is too large to import ({size} bytes; limits: {limit} for this file, "
            f"{MAX_IMPORT_TOTAL_BYTES} in all)."
        )


def _read_capped(path: Path) -> bytes:
    size = path.stat().st_size
    _check_size(path.name, size, size)
    return path.read_bytes()


def _extract_from_zip(source: Path, staging: Path) -> None:
    try:
        with zipfile.ZipFile(source) as bundle:
            entries = _checked_entries(bundle, source)
            runs = [name for name in entries if name.rsplit("/", 1)[-1] == RUN_FILE]
            top = [name for name in runs if name.count("/") <= 1]
            if len(top) != 1:
                raise ValueError(f"{source} holds no single exported run ({RUN_FILE} not found).")
            prefix = top[0][: -len(RUN_FILE)]
            with bundle.open(entries[top[0]]) as stream:
                text = _read_stream(stream, RUN_FILE, entries[top[0]].file_size, None)
            total = len(text)
            (staging / RUN_FILE).write_bytes(text)
            for name in _listed_files(text, source):
                info = entries.get(prefix + name)
                if info is None:
                    raise CorruptRunError(str(source), [f"{name} is missing from the archive"])
                total += info.file_size
                _check_size(name, info.file_size, total)
                target = staging / safe_relative_path(name)
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(info) as stream, target.open("wb") as out:
                    _read_stream(stream, name, info.file_size, out)
    except (zipfile.BadZipFile, EOFError, RuntimeError) as error:
        # RuntimeError: encrypted entries; BadZipFile/EOFError: truncated or CRC errors.
        raise CorruptRunError(str(source), [f"the archive is damaged: {error}"]) from None


def _checked_entries(bundle: zipfile.ZipFile, source: Path) -> dict[str, zipfile.ZipInfo]:
    """Every entry by name, after refusing unsafe ones (the whole archive is refused)."""
    infos = bundle.infolist()
    if len(infos) > MAX_IMPORT_ENTRIES:
        raise ValueError(f"{source} has {len(infos)} entries; an export has far fewer.")
    entries = {}
    for info in infos:
        name = info.filename
        try:
            safe_relative_path(name.rstrip("/") if info.is_dir() else name)
        except ValueError:
            raise ValueError(
                f"Refused {source}: entry {name!r} would be written outside the import folder "
                "(absolute path or '..'); it was not written by HeadScope's export."
            ) from None
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ValueError(f"Refused {source}: entry {name!r} is a symbolic link.")
        if not info.is_dir():
            entries[name] = info
    return entries


def _read_stream(stream: IO[bytes], name: str, declared: int, out: IO[bytes] | None) -> bytes:
    """Copy or read at most the size cap, whatever the archive declares (zip bombs)."""
    _check_size(name, declared, declared)
    chunks, seen = [], 0
    while chunk := stream.read(1 << 20):
        seen += len(chunk)
        _check_size(name, seen, seen)
        if out is None:
            chunks.append(chunk)
        else:
            out.write(chunk)
    return b"".join(chunks)
