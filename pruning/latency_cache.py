"""Measured latency of stored runs' models on this machine, kept for the Compare page and the CLI.

:func:`measure_runs` times each run's model against the dense prepared classifier it was made
from, in interleaved rounds (:func:`pruning.cost.interleaved_latency`: same random tokens, order
alternating every round, warm-up discarded), one pair per run so that drift during a long
measurement hits both models of a pair alike. The run's model is its stored model when it keeps
one (recovered, weight-level, ...), else the prepared classifier with the run's heads physically
removed (:func:`pruning.heads.remove_heads`, mask bool ``(n_layers, n_heads)``, True = keep): the
model :func:`pruning.run_models.load_ref` loads.

Results live in ``$HEADSCOPE_HOME/latency/<machine fingerprint>.json`` (JSON, written to a
temporary file and renamed into place), one entry per run key + batch size + sequence length +
device, so numbers of different machines or shapes never mix. A damaged file is ignored (logged)
and replaced by the next measurement.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cache.paths import headscope_home
from pruning.consistency import write_json_atomically

if TYPE_CHECKING:
    from torch import nn

    from cache.model_store import ModelStore
    from cache.run_store import RunStore

__all__ = [
    "LATENCY_FORMAT",
    "cached_latencies",
    "device_label",
    "entry_key",
    "latency_path",
    "machine_description",
    "machine_fingerprint",
    "measure_runs",
]

log = logging.getLogger(__name__)

LATENCY_FORMAT = "headscope-latency"
# Bump when how latency is measured changes: older entries are then ignored.
LATENCY_VERSION = 1
ProgressCallback = Callable[[float, str], None]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> dict[str, Any]:
    """What identifies this machine's speed: host, CPU, core count, torch and GPU names."""
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return {
        "host": platform.node(),
        "system": platform.system(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": str(torch.__version__),
        "gpus": gpus,
    }


def machine_fingerprint() -> str:
    """16 hex digits over :func:`machine_description` (the latency file's name)."""
    text = json.dumps(machine_description(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def latency_path(*, create: bool = True) -> Path:
    """This machine's latency file (``create``: make its folder when missing)."""
    folder = headscope_home() / "latency"
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{machine_fingerprint()}.json"


def device_label(device: str | torch.device | None = None) -> str:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... (``None`` = the device HeadScope picks)."""
    from pruning.models import pick_device

    resolved = pick_device() if device is None else torch.device(device)
    return resolved.type if resolved.index is None else str(resolved)


def entry_key(run_key: str, batch_size: int, seq_len: int, device: str) -> str:
    """The file's key of one measurement: run key, batch, length and device."""
    return f"{run_key}|b{int(batch_size)}|t{int(seq_len)}|{device}"


def _read(path: Path) -> dict[str, Any]:
    """The file's entries, or {} when it is missing or damaged (logged)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        log.warning("ignoring the damaged latency file %s: %s", path, error)
        return {}
    if (
        not isinstance(document, dict)
        or document.get("format") != LATENCY_FORMAT
        or document.get("version") != LATENCY_VERSION
        or not isinstance(document.get("entries"), dict)
    ):
        log.warning("ignoring the latency file %s: not a %s file", path, LATENCY_FORMAT)
        return {}
    return {k: v for k, v in document["entries"].items() if _valid_entry(v)}


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    for name in ("latency_ms", "dense_ms", "speedup"):
        value = entry.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            return False
    predicted = entry.get("predicted_speedup")
    return predicted is None or (isinstance(predicted, int | float) and predicted > 0)


def _write(path: Path, entries: dict[str, Any]) -> None:
    document = {
        "format": LATENCY_FORMAT,
        "version": LATENCY_VERSION,
        "machine": machine_description(),
        "entries": entries,
    }
    write_json_atomically(path, document)


def cached_latencies(
    keys: Iterable[str],
    *,
    batch_size: int,
    seq_len: int,
    device: str | torch.device | None = None,
) -> dict[str, dict[str, Any]]:
    """Stored measurements of these runs on this machine for this shape and device.

    Returns:
        ``{run key: entry}`` for the runs measured so far (see :func:`measure_runs`).
    """
    entries = _read(latency_path(create=False))
    label = device_label(device)
    found = {}
    for key in keys:
        entry = entries.get(entry_key(key, batch_size, seq_len, label))
        if entry is not None:
            found[key] = entry
    return found


def _check_shape(batch_size: int, seq_len: int, repeats: int, warmup: int) -> None:
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("seq_len", seq_len, 1),
        ("repeats", repeats, 1),
        ("warmup", warmup, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be a whole number >= {low}; got {value!r}.")


def measure_runs(
    keys: Sequence[str],
    *,
    batch_size: int = 32,
    seq_len: int = 128,
    repeats: int = 10,
    warmup: int = 2,
    device: str | torch.device | None = None,
    on_progress: ProgressCallback | None = None,
    run_store: RunStore | None = None,
    model_store: ModelStore | None = None,
) -> dict[str, dict[str, Any]]:
    """Time every run's model against its dense prepared classifier and store the results.

    Args:
        keys: run keys (duplicates are measured once).
        batch_size, seq_len: the shape of the random input (every row full length).
        repeats: interleaved rounds per run (each round times the dense and the pruned model).
        device: where to time (None: CUDA, then MPS, else CPU).
        on_progress: called as ``on_progress(fraction, message)``; it may raise to cancel (what
            was measured before is kept).

    Returns:
        ``{run key: entry}``. A measured entry holds ``latency_ms`` (median of the run's model),
        ``dense_ms`` (median of the dense classifier in the same rounds), ``speedup``
        (``dense_ms / latency_ms``), ``predicted_speedup`` (analytic FLOPs ratio at ``seq_len``,
        :func:`pruning.cost.flops_per_example`), ``p10_ms``, ``p90_ms``, ``repeats``,
        ``threads``, ``device``, ``measured`` (ISO UTC time) and ``prepared_key``. A run that
        could not be timed (deleted, damaged, its prepared classifier gone) gets
        ``{"error": reason}`` instead and is not stored.

    Raises:
        ValueError: non-positive sizes, or a sequence length above a model's position limit.
    """
    from cache.model_store import ModelStore
    from cache.run_store import RunStore
    from pruning.cost import flops_per_example, interleaved_latency
    from pruning.heads import remove_heads

    _check_shape(batch_size, seq_len, repeats, warmup)
    run_store = run_store or RunStore()
    model_store = model_store or ModelStore()
    target = torch.device(device_label(device))
    label = device_label(device)
    unique = list(dict.fromkeys(keys))
    results: dict[str, dict[str, Any]] = {}
    report = on_progress or (lambda _fraction, _message: None)
    records = {}
    for key in unique:
        try:
            records[key] = run_store.get(key)
        except (KeyError, ValueError, OSError) as error:
            results[key] = {"error": str(error)}
    # Grouped by prepared classifier so each dense model is loaded once.
    order = sorted(records, key=lambda k: str(records[k].model.get("prepared_key") or ""))
    dense: dict[str, nn.Module] = {}  # the current prepared classifier only
    path = latency_path()
    for index, key in enumerate(order):
        record = records[key]
        prepared_key = str(record.model.get("prepared_key") or "")
        done = index / max(1, len(order))
        report(done, f"loading the models of run {index + 1} of {len(order)}")
        try:
            if prepared_key not in dense:
                dense.clear()
                entry = model_store.get(prepared_key) if prepared_key else None
                if entry is None:
                    raise ValueError(
                        f"its prepared classifier {prepared_key[:8] or '(none)'} is no longer "
                        "stored; prepare it again to time this run."
                    )
                dense[prepared_key] = entry.load(device=target).model
            base = dense[prepared_key]
            pruned = (
                run_store.load_model(key, device=target).model
                if record.has_model
                else remove_heads(base, record.mask)
            )
        except (KeyError, ValueError, OSError) as error:
            results[key] = {"error": f"Run {key[:8]} was not timed: {error}"}
            continue
        predicted = flops_per_example(base, seq_len) / flops_per_example(pruned, seq_len)

        def on_round(
            done_rounds: int, total: int, start: float = done, number: int = index
        ) -> None:
            message = f"run {number + 1} of {len(order)}: round {done_rounds} of {total}"
            report(start + (done_rounds / total) / max(1, len(order)), message)

        timed_dense, timed_pruned = interleaved_latency(
            [base, pruned],
            batch_size=batch_size,
            seq_len=seq_len,
            repeats=repeats,
            warmup=warmup,
            on_round=on_round,
        )
        del pruned
        results[key] = {
            "latency_ms": timed_pruned.median_ms,
            "dense_ms": timed_dense.median_ms,
            "speedup": timed_dense.median_ms / timed_pruned.median_ms,
            "predicted_speedup": predicted,
            "p10_ms": timed_pruned.p10_ms,
            "p90_ms": timed_pruned.p90_ms,
            "repeats": repeats,
            "threads": timed_pruned.threads,
            "device": label,
            "measured": datetime.now(UTC).isoformat(timespec="seconds"),
            "prepared_key": prepared_key,
        }
        stored = _read(path)
        stored[entry_key(key, batch_size, seq_len, label)] = results[key]
        _write(path, stored)
    report(1.0, f"timed {sum('latency_ms' in r for r in results.values())} of {len(unique)} runs")
    return results
