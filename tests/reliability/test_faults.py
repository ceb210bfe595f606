"""Faults: a worker killed mid-run, a full disk, damaged store files, two writers of one key.

Each test exercises the protection itself (staging and rename, clean-up on error, checksums and
repair, the store's lock), so it fails when that protection is taken away.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import SafetensorError

import cache.model_store as model_store_module
import cache.run_format as run_format
from cache.model_store import ModelStore
from cache.run_format import RUN_FILE, TENSORS_FILE, CorruptRunError, RunRecord, document_checksum
from cache.run_index import INDEX_FILE
from cache.run_store import DiskFullError, RunStore
from conftest import prepared_tiny_setup, real_tokenizer, small_bert
from pruning.cli import main
from pruning.methods.base import TraceEvent

REPO = Path(__file__).resolve().parents[2]
NO_SPACE = "No space left on device"


def make_record(*, seed: int = 0, name: str = "run", accuracy: float = 0.8) -> RunRecord:
    """A small but complete run on a 3 x 4 head grid; the key depends on ``seed`` only."""
    config = {"sparsity": 0.25}
    key = RunStore.key_for(
        model_fingerprint="model-a", data_fingerprint="data-a", method="magnitude",
        config=config, seed=seed,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(3, 4, generator=generator)
    mask = scores > scores.flatten().kthvalue(3).values
    return RunRecord(
        key=key,
        method="magnitude",
        config=config,
        seed=seed,
        model={"fingerprint": "model-a", "label": "tiny"},
        data={"fingerprint": "data-a", "description": "reviews", "label_names": ["neg", "pos"]},
        metrics={
            "dense": {"accuracy": 0.9, "mcc": 0.8, "macro_f1": 0.9, "loss": 0.3},
            "pruned": {"accuracy": accuracy, "mcc": 0.6, "macro_f1": 0.8, "loss": 0.5},
        },
        trace=[TraceEvent(kind="scores", step=0, fraction=1.0, message="scored").to_dict()],
        info={"name": name},
        mask=mask,
        scores=scores,
    )


def _index_keys(store: RunStore) -> set[str]:
    with sqlite3.connect(store.root / INDEX_FILE) as connection:
        return {row[0] for row in connection.execute("SELECT key FROM runs")}


def _leftovers(root: Path) -> list[str]:
    """Staging, replaced, trash or temporary names left in a store folder."""
    return sorted(
        path.name for path in root.iterdir() if path.name.startswith(".") and path.name != ".lock"
    )


def _key_folders(store: RunStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir() if p.is_dir() and p.name[0] != ".")


# ---------------------------------------------------------------------------------------------
# The worker killed mid-run


_KILLABLE_PRUNE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import cache.run_format as run_format
    import pruning.pipeline as pipeline
    from pruning.cli import main

    point, marker, *argv = sys.argv[1:]

    def hold():  # tell the test where we are, then wait for its SIGKILL
        Path(marker).write_text(point)
        time.sleep(600)

    if point == "pruning":
        pipeline.remove_heads = lambda *args, **kwargs: hold()
    elif point == "saving":
        real_save = run_format.save_file

        def save_file(*args, **kwargs):  # the run's tensors are in staging, run.json is not
            real_save(*args, **kwargs)
            hold()

        run_format.save_file = save_file
    sys.exit(main(argv))
    """
)


def _prune_killed_at(point: str, argv: list[str], marker: Path) -> None:
    marker.unlink(missing_ok=True)
    worker = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE_PRUNE, point, str(marker), *argv],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert worker.poll() is None, worker.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the worker never reached the kill point"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    assert worker.returncode == -signal.SIGKILL


def test_a_prune_worker_killed_mid_run_leaves_the_store_consistent(tmp_path: Path) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    argv = ["prune", "--method", "random", "--sparsity", "0.25", "--model", str(model.path),
            "--data", str(data.path), "--score-examples", "16", "--eval-examples", "16",
            "--device", "cpu", "--no-progress", "--json"]  # fmt: skip
    store = RunStore()
    marker = tmp_path / "reached"

    _prune_killed_at("pruning", argv, marker)
    assert store.list() == ([], []) and _key_folders(store) == []

    _prune_killed_at("saving", argv, marker)
    [staging] = _leftovers(store.root)  # the dead writer's half-written staging folder
    assert staging.startswith(".staging-")
    assert sorted(p.name for p in (store.root / staging).iterdir()) == [TENSORS_FILE]
    assert store.list() == ([], []) and _key_folders(store) == []  # never listed as a run

    # The same request then runs and is stored; the stale staging folder is cleaned up later.
    assert main(argv) == 0
    runs, problems = store.list()
    assert problems == [] and len(runs) == 1 and _key_folders(store) == [runs[0].key]
    assert store.get(runs[0].key).method == "random" and _index_keys(store) == {runs[0].key}
    hour_ago = time.time() - 7200
    os.utime(store.root / staging, (hour_ago, hour_ago))
    assert store.list()[0] == runs and _leftovers(store.root) == []


# ---------------------------------------------------------------------------------------------
# The disk full while saving (simulated)


def _no_space(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, NO_SPACE)


def _half_then_no_space(path: Path, text: str) -> None:
    Path(path).write_text(text[: len(text) // 2], encoding="utf-8")
    raise OSError(errno.ENOSPC, NO_SPACE)


def _safetensors_no_space(*args: Any, **kwargs: Any) -> None:
    raise SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
        'left on device" })'
    )


@pytest.mark.parametrize(
    ("target", "fault"),
    [
        ("save_file", _no_space),  # the tensors
        ("save_file", _safetensors_no_space),  # safetensors reports it as its own error
        ("write_text_durably", _half_then_no_space),  # run.json, half written
    ],
    ids=["tensors", "safetensors-error", "run-json"],
)
def test_a_full_disk_while_saving_a_run_stores_nothing_and_says_so(
    monkeypatch: pytest.MonkeyPatch, target: str, fault: Callable[..., None]
) -> None:
    store = RunStore()
    earlier = store.save(make_record(seed=1, name="earlier"))
    same_key = store.save(make_record(seed=2, name="kept"))
    monkeypatch.setattr(run_format, target, fault)
    for record in (make_record(seed=3), make_record(seed=2, name="replacement", accuracy=0.1)):
        with pytest.raises(DiskFullError) as caught:
            store.save(record)
        message = str(caught.value)
        assert message.startswith("The disk is full") and str(store.root) in message
        assert "Free some space" in message and "HEADSCOPE_HOME" in message
        assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    monkeypatch.undo()
    assert _leftovers(store.root) == []  # no staging folder, no temporary file
    assert _index_keys(store) == {earlier.key, same_key.key}
    assert not store.exists(make_record(seed=3).key)
    assert store.get(earlier.key) == earlier and store.get(same_key.key) == same_key
    runs, problems = store.list()
    assert problems == [] and len(runs) == 2


def test_a_full_disk_while_renaming_a_run_keeps_its_old_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = RunStore()
    record = store.save(make_record(name="old name"))
    monkeypatch.setattr("cache.run_store.write_text_durably", _half_then_no_space)
    with pytest.raises(DiskFullError, match="The disk is full"):
        store.rename(record.key, "new name")
    monkeypatch.undo()
    assert store.get(record.key) == record and store.list()[1] == []
    assert [p.name for p in store.path_for(record.key).iterdir() if p.name.startswith(".")] == []


def _tokenizer_that_fills_the_disk() -> Any:
    tokenizer = real_tokenizer()

    class Filling:
        def save_pretrained(self, folder: Any, **kwargs: Any) -> None:
            tokenizer.save_pretrained(folder, **kwargs)
            Path(folder, "tokenizer.json").write_text("{ half")
            raise OSError(errno.ENOSPC, NO_SPACE)

    return Filling()


def _entry_json_fills_the_disk(target: Path, data: Any) -> None:
    Path(target.parent, f".{target.name}.partial").write_text(json.dumps(data)[:20])
    raise OSError(errno.ENOSPC, NO_SPACE)


@pytest.mark.parametrize("where", ["weights", "tokenizer", "entry.json"])
def test_a_full_disk_while_saving_a_prepared_model_stores_nothing_and_says_so(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    store = ModelStore()
    model = small_bert()
    other = store.save("aa" * 8, model, real_tokenizer(), metrics={"test": {"accuracy": 0.5}},
                       info={"note": "other"})  # fmt: skip
    old = store.save("bb" * 8, model, real_tokenizer(), metrics={"test": {"accuracy": 0.7}},
                     info={"note": "old"})  # fmt: skip
    tokenizer = real_tokenizer()
    if where == "weights":
        monkeypatch.setattr("pruning.models.save_file", _no_space)
    elif where == "tokenizer":
        tokenizer = _tokenizer_that_fills_the_disk()
    else:
        monkeypatch.setattr(
            model_store_module, "_write_json_atomically", _entry_json_fills_the_disk
        )
    for key in ("cc" * 8, old.key):  # a new entry, and one replacing an entry
        with pytest.raises(DiskFullError) as caught:
            store.save(key, model, tokenizer, metrics={"test": {"accuracy": 0.1}}, info={})
        assert str(caught.value).startswith("The disk is full") and str(store.root) in str(
            caught.value
        )
    monkeypatch.undo()
    assert _leftovers(store.root) == []
    assert not (store.root / ("cc" * 8)).exists() and store.get("cc" * 8) is None
    assert {entry.key: entry.info["note"] for entry in store.list()} == {
        other.key: "other",
        old.key: "old",
    }
    assert store.get(old.key) == old  # the entry it would have replaced is untouched


# ---------------------------------------------------------------------------------------------
# Corrupted or truncated store files


class _Armed:
    """Unpickling this creates a file: proof that something unpickled store content."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(0, len(data), 7):
        data[i] = (data[i] * 31 + 7) % 256
    path.write_bytes(bytes(data))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _refit(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit run.json and recompute every checksum, as a careless tool (or an attacker) would."""
    document = json.loads((folder / RUN_FILE).read_text())
    change(document)
    for name in document["files"]:
        data = (folder / name).read_bytes()
        document["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    document["checksum"] = document_checksum(document)
    (folder / RUN_FILE).write_text(json.dumps(document))


def _pickle_for_tensors(marker: Path) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.write_bytes(pickle.dumps({"mask": _Armed(marker)}))
        _refit(path.parent, lambda document: None)

    return damage


def _wrong_types(path: Path) -> None:
    def change(document: dict[str, Any]) -> None:
        document["tensors"]["mask"] = True
        document["tensors"]["extra"] = 7
        document["run"]["metrics"]["pruned"] = "high"

    _refit(path.parent, change)


DAMAGE: dict[str, tuple[str, Callable[[Path], None]]] = {
    "json-truncated": (RUN_FILE, _truncate),
    "json-garbled": (RUN_FILE, _garble),
    "json-empty": (RUN_FILE, _empty),
    "json-wrong-types-checksummed": (RUN_FILE, _wrong_types),
    "tensors-truncated": (TENSORS_FILE, _truncate),
    "tensors-garbled": (TENSORS_FILE, _garble),
    "tensors-empty": (TENSORS_FILE, _empty),
}


@pytest.mark.parametrize("damage", [*DAMAGE, "tensors-pickle-checksummed"])
def test_a_damaged_run_is_reported_others_are_listed_nothing_crashes_or_unpickles(
    damage: str, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    file, harm = DAMAGE.get(damage, (TENSORS_FILE, _pickle_for_tensors(marker)))
    store = RunStore()
    good = [store.save(make_record(seed=seed)) for seed in (1, 2)]
    bad = store.save(make_record(seed=3))
    store.list()  # indexed before the damage
    harm(store.path_for(bad.key) / file)

    runs, problems = store.list()
    assert sorted(r.key for r in runs) == sorted(r.key for r in good)
    assert len(problems) == 1 and bad.key in problems[0] and "Delete it" in problems[0]
    with pytest.raises(CorruptRunError) as caught:
        store.get(bad.key)
    assert bad.key in str(caught.value)
    assert not store.exists(bad.key)
    assert not marker.exists()  # nothing was unpickled
    assert _index_keys(store) == {r.key for r in good}
    assert store.reindex() == problems and [store.get(r.key) for r in good] == good
    assert store.delete(bad.key) and store.list()[1] == []


@pytest.mark.parametrize(
    "harm", [_truncate, _garble, _empty], ids=["truncated", "garbled", "empty"]
)
def test_a_damaged_index_is_rebuilt_from_the_run_folders(harm: Callable[[Path], None]) -> None:
    store = RunStore()
    records = [store.save(make_record(seed=seed)) for seed in range(12)]
    store.list()
    for suffix in ("-wal", "-shm"):  # checkpointed: the damage is in the main file
        Path(f"{store.root / INDEX_FILE}{suffix}").unlink(missing_ok=True)
    harm(store.root / INDEX_FILE)
    runs, problems = store.list()
    assert problems == [] and {r.key for r in runs} == {r.key for r in records}
    assert _index_keys(store) == {r.key for r in records}  # repaired, readable again
    assert store.list() == (runs, [])


def test_a_garbled_index_row_never_shows_a_wrong_number() -> None:
    store = RunStore()
    record = store.save(make_record(accuracy=0.8))
    settled = time.time() - 60  # files this old are settled: their index row is trusted
    for path in store.path_for(record.key).iterdir():
        os.utime(path, (settled, settled))
    [summary] = store.list()[0]
    assert summary.metrics["accuracy"] == pytest.approx(0.8)
    with sqlite3.connect(store.root / INDEX_FILE) as connection:
        [(text,)] = connection.execute("SELECT summary_json FROM runs").fetchall()
        flipped = text.replace('"accuracy": 0.8', '"accuracy": 0.3')
        assert flipped != text
        connection.execute("UPDATE runs SET summary_json = ?", (flipped,))
    [listed] = store.list()[0]
    assert listed.metrics["accuracy"] == pytest.approx(0.8) and listed.key == record.key


# ---------------------------------------------------------------------------------------------
# Two runs writing the same key at once


def _slow_renames(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.rename

    def slow(src: Any, dst: Any) -> None:
        time.sleep(0.003)  # widen the window between the two renames of a replace
        real(src, dst)

    monkeypatch.setattr(os, "rename", slow)


def test_two_threads_saving_one_key_leave_one_whole_run(monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore()
    variants = {
        name: make_record(name=name, accuracy=acc) for name, acc in (("A", 0.1), ("B", 0.2))
    }
    key = variants["A"].key
    _slow_renames(monkeypatch)
    barrier = threading.Barrier(len(variants))
    errors: list[BaseException] = []

    def save_many(record: RunRecord) -> None:
        barrier.wait()
        try:
            for _ in range(8):
                store.save(record)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=save_many, args=(r,)) for r in variants.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = store.get(key)
    assert stored.metrics == variants[stored.name].metrics  # whole, never a mix of the two
    runs, problems = store.list()
    assert problems == [] and [r.key for r in runs] == [key] and _leftovers(store.root) == []


_SAVER = textwrap.dedent(
    """
    import os, sys, time
    import torch
    from cache.run_store import RunRecord, RunStore

    root, key, name, start_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    real = os.rename

    def slow(src, dst):
        time.sleep(0.003)
        real(src, dst)

    os.rename = slow
    record = RunRecord(
        key=key, method="magnitude", config={}, seed=0, model={}, data={},
        metrics={"writer": name}, trace=[], info={"name": name},
        mask=torch.ones(3, 4, dtype=torch.bool),
    )
    while time.time() < start_at:
        time.sleep(0.001)
    for _ in range(8):
        RunStore(root).save(record)
    """
)


def test_two_processes_saving_one_key_leave_one_whole_run() -> None:
    store = RunStore()
    key = make_record().key
    start_at = time.time() + 6.0  # both have imported torch by then
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(store.root), key, name, str(start_at)],
            cwd=REPO,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    errors = [writer.communicate(timeout=120)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors
    stored = store.get(key)
    assert stored.info["name"] in ("first", "second")
    assert stored.metrics == {"writer": stored.info["name"]}
    runs, problems = store.list()
    assert problems == [] and [r.key for r in runs] == [key] and _leftovers(store.root) == []
    assert _index_keys(store) == {key}


def test_two_identical_requests_at_once_both_get_the_stored_run(tmp_path: Path) -> None:
    from pruning.pipeline import RunRequest, run_pruning

    model, data = prepared_tiny_setup(tmp_path / "setup")
    request = RunRequest(method="random", config={"sparsity": 0.25}, model=model, data=data,
                         score_examples=16, eval_examples=16, device="cpu")  # fmt: skip
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        try:
            results.append(run_pruning(request))
        except BaseException as error:
            results.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(result, RunRecord) for result in results), results
    assert results[0].key == results[1].key
    runs, problems = RunStore().list()
    assert problems == [] and [r.key for r in runs] == [results[0].key]
    assert run_pruning(request) == RunStore().get(results[0].key)  # now simply found


def test_importing_a_rechecksummed_run_with_wrong_types_is_refused_cleanly(
    tmp_path: Path,
) -> None:
    """An export edited with its checksums recomputed but wrong types inside: a clear
    ValueError (the CLI's one-line error), nothing installed, the store unchanged."""
    source = RunStore(tmp_path / "elsewhere")
    record = source.save(make_record(seed=5))
    exported = tmp_path / "export"
    shutil.copytree(source.path_for(record.key), exported)
    _wrong_types(exported / RUN_FILE)
    store = RunStore()
    before = store.list()
    with pytest.raises(ValueError, match="damaged"):
        store.import_run(exported)
    assert store.list() == before
