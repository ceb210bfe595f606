"""The run store: round trips, keys, listing, damage handling, crash safety, export and import."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from cache import run_export
from cache.run_format import (
    RUN_SCHEMA_VERSION,
    CorruptRunError,
    RunRecord,
    UnknownRunError,
    verify_run_folder,
)
from cache.run_index import INDEX_FILE
from cache.run_store import RunStore
from conftest import build_tiny_model, random_inputs, real_tokenizer, small_bert
from pruning.heads import remove_heads
from pruning.methods.base import TraceEvent
from pruning.models import load_pruned

REPO = Path(__file__).resolve().parents[1]


def make_record(
    *,
    method: str = "magnitude",
    seed: int = 0,
    name: str = "first run",
    accuracy: float = 0.8,
    model_fp: str = "model-a",
    data_fp: str = "data-a",
    created: str | None = None,
    shape: tuple[int, int] = (3, 4),
    label_names: tuple[str, ...] = ("LABEL_0", "LABEL_1"),
) -> RunRecord:
    """A realistic record on a ``shape`` head grid (tiny models: 3 layers x 4 heads)."""
    config = {"sparsity": 0.25, "layers": (0, 2)}
    key = RunStore.key_for(
        model_fingerprint=model_fp,
        data_fingerprint=data_fp,
        method=method,
        config=config,
        seed=seed,
    )
    generator = torch.Generator().manual_seed(seed + len(method))
    scores = torch.rand(shape, generator=generator)
    mask = scores > scores.flatten().kthvalue(max(1, scores.numel() // 4)).values
    trace = [
        TraceEvent(kind="scores", step=0, fraction=0.5, message="scored", data={"s": [1.5]}),
        TraceEvent(kind="prune_step", step=1, fraction=1.0, data={"mask": mask.tolist()}),
    ]
    info: dict[str, Any] = {"name": name, "method_seconds": 1.25}
    if created is not None:
        info["created"] = created
    return RunRecord(
        key=key,
        method=method,
        config=config,
        seed=seed,
        model={"spec": {"source": "local"}, "fingerprint": model_fp, "label": f"tiny {model_fp}"},
        data={
            "spec": {"name": "csv"},
            "fingerprint": data_fp,
            "description": f"reviews {data_fp}",
            "label_names": list(label_names),
        },
        metrics={
            "dense": {"accuracy": 0.9, "mcc": 0.8, "macro_f1": 0.9, "loss": 0.3},
            "pruned": {"accuracy": accuracy, "mcc": 0.6, "macro_f1": 0.8, "loss": 0.5},
            "cost": {"params_dense": 1000, "params_pruned": 800},
        },
        trace=[event.to_dict() for event in trace],
        info=info,
        mask=mask,
        scores=scores,
        extra_tensors={"gate_history": torch.rand(2, *shape, generator=generator)},
    )


def _index_keys(store: RunStore) -> set[str]:
    with sqlite3.connect(store.root / INDEX_FILE) as connection:
        return {row[0] for row in connection.execute("SELECT key FROM runs")}


def _leftovers(store: RunStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir() if p.name.startswith((".s", ".r", ".t")))


def test_save_then_get_returns_the_same_run() -> None:
    store = RunStore()
    record = make_record()
    weight_mask = torch.rand(8, 4) > 0.5
    record = RunRecord(
        **{**record.__dict__, "extra_tensors": {**record.extra_tensors, "w.weight": weight_mask}}
    )
    saved = store.save(record)
    loaded = store.get(record.key)
    assert loaded == saved
    assert torch.equal(loaded.mask, record.mask) and loaded.mask.dtype == torch.bool
    assert loaded.scores is not None and torch.equal(loaded.scores, record.scores)
    assert torch.equal(loaded.extra_tensors["w.weight"], weight_mask)
    assert torch.equal(loaded.extra_tensors["gate_history"], record.extra_tensors["gate_history"])
    assert loaded.trace == record.trace
    assert [TraceEvent.from_dict(e).kind for e in loaded.trace] == ["scores", "prune_step"]
    assert loaded.metrics == record.metrics
    assert loaded.config == {"sparsity": 0.25, "layers": [0, 2]}  # tuples come back as lists
    assert loaded.name == "first run" and loaded.created.endswith("+00:00")
    assert loaded.info["versions"]["torch"] == torch.__version__
    assert loaded.kept == int(record.mask.sum()) and not loaded.has_model
    assert loaded.head_sparsity == pytest.approx(1 - loaded.kept / 12)
    assert store.exists(record.key) and not store.exists("0" * 16) and not store.exists("nope")
    assert verify_run_folder(store.path_for(record.key), key=record.key) == []
    assert json.loads((store.path_for(record.key) / "run.json").read_text())["schema_version"] == (
        RUN_SCHEMA_VERSION
    )


def test_key_is_deterministic_and_changes_with_every_input() -> None:
    base: dict[str, Any] = {
        "model_fingerprint": "m",
        "data_fingerprint": "d",
        "method": "astar",
        "config": {"a": 1, "b": [1, 2]},
        "seed": 0,
        "extra": {"eval_split": "test"},
    }
    key = RunStore.key_for(**base)
    assert len(key) == 16 and set(key) <= set("0123456789abcdef")
    reordered = {**base, "config": {"b": (1, 2), "a": 1}}
    assert RunStore.key_for(**reordered) == key
    assert RunStore.key_for(**{**base, "extra": None}) == RunStore.key_for(**{**base, "extra": {}})
    changes = [
        {"model_fingerprint": "m2"},
        {"data_fingerprint": "d2"},
        {"method": "random"},
        {"config": {"a": 2, "b": [1, 2]}},
        {"seed": 1},
        {"extra": {"eval_split": "validation"}},
    ]
    keys = {RunStore.key_for(**{**base, **change}) for change in changes}
    assert key not in keys and len(keys) == len(changes)


def test_list_orders_newest_first_and_filters() -> None:
    store = RunStore()
    a = store.save(make_record(method="magnitude", name="Alpha", created="2025-01-01T00:00:00"))
    b = store.save(
        make_record(method="astar", name="beta", model_fp="model-b", created="2025-01-03T00:00:00")
    )
    c = store.save(
        make_record(method="astar", name="gamma", data_fp="data-b", created="2025-01-02T00:00:00")
    )
    runs, problems = store.list()
    assert problems == [] and [r.key for r in runs] == [b.key, c.key, a.key]
    assert {r.key for r in store.list(method="astar")[0]} == {b.key, c.key}
    assert [r.key for r in store.list(model_fingerprint="model-b")[0]] == [b.key]
    assert [r.key for r in store.list(data_fingerprint="data-b")[0]] == [c.key]
    assert [r.key for r in store.list(text="ALPHA")[0]] == [a.key]
    assert store.list(method="astar", text="alpha")[0] == []
    summary = store.list(text="alpha")[0][0]
    assert summary.name == "Alpha" and summary.model_label == "tiny model-a"
    assert summary.data_label == "reviews data-a" and summary.seed == 0
    assert summary.metrics["pruned_accuracy"] == summary.metrics["accuracy"] == 0.8
    assert summary.metrics["delta_accuracy"] == pytest.approx(-0.1)
    assert summary.metrics["params_reduction"] == pytest.approx(0.2)
    assert summary.head_sparsity == pytest.approx(a.head_sparsity)
    assert _index_keys(store) == {a.key, b.key, c.key}


def test_rename_and_delete() -> None:
    store = RunStore()
    record = store.save(make_record())
    other = store.save(make_record(seed=1))
    store.rename(record.key, "  my favourite  ")
    assert store.get(record.key).name == "my favourite"
    assert store.list(text="favourite")[0][0].key == record.key
    with pytest.raises(ValueError, match="1 to 200"):
        store.rename(record.key, "   ")
    assert store.delete(record.key) is True
    assert not store.exists(record.key) and store.delete(record.key) is False
    with pytest.raises(UnknownRunError, match="No stored run") as caught:
        store.get(record.key)
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, ValueError)
    with pytest.raises(UnknownRunError):
        store.rename(record.key, "gone")
    with pytest.raises(ValueError, match="not a run key"):
        store.get("../etc")
    assert [r.key for r in store.list()[0]] == [other.key] and _leftovers(store) == []
    assert _index_keys(store) == {other.key}


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _broken_json(path: Path) -> None:
    path.write_text(path.read_text()[:-40])


def _edited_json(path: Path) -> None:
    document = json.loads(path.read_text())
    document["run"]["metrics"]["pruned"]["accuracy"] = 0.99
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("file", "damage", "expected"),
    [
        ("tensors.safetensors", _flip_byte, "does not match its checksum"),
        ("tensors.safetensors", _truncate, "truncated"),
        ("run.json", _broken_json, "not readable JSON"),
        ("run.json", _edited_json, "does not match its checksum"),
    ],
)
def test_a_damaged_run_is_reported_and_skipped(file: str, damage: Any, expected: str) -> None:
    store = RunStore()
    good = store.save(make_record(seed=1))
    bad = store.save(make_record(seed=2))
    store.list()  # both indexed before the damage
    damage(store.path_for(bad.key) / file)
    with pytest.raises(CorruptRunError, match=expected) as caught:
        store.get(bad.key)
    assert bad.key in str(caught.value) and "delete" in str(caught.value)
    runs, problems = store.list()
    assert [r.key for r in runs] == [good.key]
    assert len(problems) == 1 and bad.key in problems[0] and expected in problems[0]
    assert not store.exists(bad.key) and store.get(good.key) == good
    assert store.delete(bad.key) is True
    runs, problems = store.list()
    assert problems == [] and [r.key for r in runs] == [good.key]
    assert _index_keys(store) == {good.key}


def test_half_written_folders_are_never_listed_as_runs() -> None:
    store = RunStore()
    good = store.save(make_record(seed=1))
    key = make_record(seed=2).key
    staging = store.root / f".staging-{key}-dead"  # a writer killed mid-write
    staging.mkdir()
    (staging / "tensors.safetensors").write_bytes(b"\x08\x00\x00")
    (staging / "run.json").write_text('{"format": "headscope-run", "sche')
    old = store.root / f".staging-{key}-old"
    shutil.copytree(staging, old)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    incomplete = store.root / key  # a key folder without run.json
    incomplete.mkdir()
    (incomplete / "tensors.safetensors").write_bytes(b"partial")
    runs, problems = store.list()
    assert [r.key for r in runs] == [good.key]
    assert len(problems) == 1 and key in problems[0] and "run.json is missing" in problems[0]
    assert staging.exists() and not old.exists()  # fresh staging kept, stale one cleaned
    assert _index_keys(store) == {good.key}
    with pytest.raises(CorruptRunError):
        store.get(key)


_KILLED_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import torch
    from cache.run_store import RunRecord, RunStore

    root, key = Path(sys.argv[1]), sys.argv[2]
    real_rename = os.rename

    def rename(src, dst):
        real_rename(src, dst)
        if Path(src).name == key:  # the old run has just been moved aside: die here
            os.kill(os.getpid(), signal.SIGKILL)

    os.rename = rename
    RunStore(root).save(RunRecord(
        key=key, method="magnitude", config={}, seed=0, model={}, data={}, metrics={},
        trace=[], info={"name": "second"}, mask=torch.ones(3, 4, dtype=torch.bool),
    ))
    """
)


def test_a_writer_killed_while_replacing_a_run_leaves_the_store_consistent() -> None:
    store = RunStore()
    first = store.save(make_record(name="first"))
    other = store.save(make_record(seed=5))
    result = subprocess.run(
        [sys.executable, "-c", _KILLED_SAVE, str(store.root), first.key],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == -9, result.stderr
    assert not (store.root / first.key).exists()  # killed between the two renames
    runs, problems = store.list()
    assert problems == [] and {r.key for r in runs} == {first.key, other.key}
    assert store.get(first.key) == first
    # Only the dead writer's own staging folder is left; it is ignored, and removed once stale.
    leftovers = _leftovers(store)
    assert len(leftovers) == 1 and leftovers[0].startswith(f".staging-{first.key}-")
    assert _index_keys(store) == {first.key, other.key}


class _Killed(BaseException):
    pass


def test_a_writer_killed_before_indexing_is_indexed_by_the_next_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = RunStore()
    record = make_record()

    def die(*args: Any, **kwargs: Any) -> bool:
        raise _Killed

    with monkeypatch.context() as patch, pytest.raises(_Killed):
        patch.setattr(RunStore, "_write_index", die)
        store.save(record)
    assert store.root.joinpath(record.key).is_dir() and _leftovers(store) == []
    runs, problems = store.list()
    assert problems == [] and [r.key for r in runs] == [record.key]
    assert _index_keys(store) == {record.key}


def test_index_is_rebuilt_from_the_folders() -> None:
    store = RunStore()
    kept = store.save(make_record(seed=1))
    removed = store.save(make_record(seed=2))
    (store.root / INDEX_FILE).write_bytes(b"this is not a database" * 100)
    assert {r.key for r in store.list()[0]} == {kept.key, removed.key}
    shutil.rmtree(store.path_for(removed.key))  # removed by hand
    runs, problems = store.list()
    assert [r.key for r in runs] == [kept.key]
    assert len(problems) == 1 and removed.key in problems[0] and "folder is gone" in problems[0]
    assert store.list()[1] == [] and _index_keys(store) == {kept.key}
    (store.root / INDEX_FILE).unlink()
    assert store.reindex() == [] and _index_keys(store) == {kept.key}


def test_concurrent_saves_of_one_key_leave_one_whole_run(monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore()
    variants = {
        name: make_record(name=name, accuracy=acc) for name, acc in [("A", 0.1), ("B", 0.2)]
    }
    key = variants["A"].key
    store.save(variants["A"])
    real_rename = os.rename

    def slow_rename(src: Any, dst: Any) -> None:
        time.sleep(0.002)  # widen the window between the renames of a replace
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", slow_rename)
    barrier = threading.Barrier(len(variants) + 1)
    errors: list[BaseException] = []
    seen: list[str] = []

    def save_many(record: RunRecord) -> None:
        barrier.wait()
        try:
            for _ in range(6):
                store.save(record)
        except BaseException as error:
            errors.append(error)

    def read_many() -> None:
        barrier.wait()
        try:
            for _ in range(30):
                stored = store.get(key)
                assert stored.metrics == variants[stored.name].metrics
                seen.append(stored.name)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=save_many, args=(r,)) for r in variants.values()]
    threads.append(threading.Thread(target=read_many))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(seen) == 30  # readers always found a whole run
    stored = store.get(key)
    assert stored.metrics == variants[stored.name].metrics  # never a mix of the two
    runs, problems = store.list()
    assert problems == [] and len(runs) == 1 and runs[0].name == stored.name
    assert _leftovers(store) == []


def test_damage_that_keeps_size_and_time_is_still_found() -> None:
    """File times can be coarse: a change right after a save may leave mtime unchanged."""
    store = RunStore()
    record = store.save(make_record())
    store.list()
    path = store.path_for(record.key) / "tensors.safetensors"
    before = path.stat()
    _flip_byte(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    runs, problems = store.list()
    assert runs == [] and len(problems) == 1 and "checksum" in problems[0]


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**random_inputs()).logits


@pytest.mark.parametrize("as_zip", [False, True])
def test_export_and_import_round_trip(tmp_path: Path, as_zip: bool) -> None:
    store = RunStore()
    base = build_tiny_model("bert")
    record = store.save(make_record())
    exported = store.export(record.key, tmp_path, as_zip=as_zip, base_model=base)
    assert exported.parent == tmp_path and exported.name.startswith("headscope-run-")
    if as_zip:
        again = store.export(record.key, tmp_path / "second.zip", as_zip=True, base_model=base)
        assert again.read_bytes() == exported.read_bytes()  # deterministic archive
        unpacked = tmp_path / "unpacked"
        zipfile.ZipFile(exported).extractall(unpacked)
        folder = next(unpacked.iterdir())
    else:
        folder = exported
        assert store.export(record.key, tmp_path, base_model=base) == exported  # replaced
    mask_json = json.loads((folder / "mask.json").read_text())
    assert mask_json["mask"] == record.mask.tolist() and mask_json["convention"] == "True = keep"
    assert (mask_json["layers"], mask_json["heads"]) == (3, 4)
    assert json.loads((folder / "metrics.json").read_text()) == record.metrics
    assert json.loads((folder / "trace.json").read_text()) == record.trace
    reloaded = load_pruned(folder / "model", device="cpu")
    assert torch.allclose(_logits(reloaded.model), _logits(remove_heads(base, record.mask)))
    fresh = RunStore(tmp_path / "other_store")
    imported = fresh.import_run(exported)
    assert imported == record and fresh.get(record.key) == record
    assert fresh.list()[0][0].key == record.key and _leftovers(fresh) == []


def test_a_stored_model_is_exported_and_imported(tmp_path: Path) -> None:
    store = RunStore()
    base = small_bert()
    record = make_record(shape=(2, 4), label_names=("negative", "positive"))
    pruned = remove_heads(base, record.mask)
    saved = store.save(record, model=pruned, tokenizer=real_tokenizer())
    assert saved.has_model and store.list()[0][0].has_model
    archive = store.export(record.key, tmp_path / "run", as_zip=True)
    assert archive.name == "run.zip"
    fresh = RunStore(tmp_path / "other_store")
    assert fresh.import_run(archive) == saved
    loaded = fresh.load_model(record.key, device="cpu")
    assert loaded.tokenizer is not None
    assert torch.allclose(_logits(loaded.model), _logits(pruned), atol=1e-6)
    with pytest.raises(ValueError, match="base_model"):
        store.export(store.save(make_record(seed=3)).key, tmp_path)
    with pytest.raises(ValueError, match="classifier the run pruned"):
        store.export(make_record(seed=3).key, tmp_path, base_model=small_bert(("a", "b", "c")))


def test_import_refuses_unsafe_or_damaged_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RunStore()
    base = build_tiny_model("bert")
    record = store.save(make_record())
    archive = store.export(record.key, tmp_path, as_zip=True, base_model=base)
    fresh = RunStore(tmp_path / "fresh")
    for evil in ("../evil.txt", "/tmp/evil.txt", "headscope-run-x/../../evil.txt"):
        bad = tmp_path / "evil.zip"
        shutil.copyfile(archive, bad)
        with zipfile.ZipFile(bad, "a") as bundle:
            bundle.writestr(evil, "pwned")
        with pytest.raises(ValueError, match="outside the import folder"):
            fresh.import_run(bad)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()
    folder = store.export(record.key, tmp_path / "folder", base_model=base)
    _flip_byte(folder / "tensors.safetensors")
    with pytest.raises(CorruptRunError, match="checksum"):
        fresh.import_run(folder)
    monkeypatch.setattr(run_export, "MAX_IMPORT_FILE_BYTES", 200)
    with pytest.raises(ValueError, match="too large"):
        fresh.import_run(archive)
    with pytest.raises(ValueError, match="neither a folder nor a zip"):
        fresh.import_run(folder / "mask.json")
    assert fresh.list() == ([], []) and _leftovers(fresh) == []


def test_save_refuses_malformed_records() -> None:
    store = RunStore()
    record = make_record()
    fields = record.__dict__
    bad_records = [
        RunRecord(**{**fields, "mask": record.mask.float()}),
        RunRecord(**{**fields, "key": "not-a-key"}),
        RunRecord(**{**fields, "scores": torch.rand(2, 2)}),
        RunRecord(**{**fields, "info": {"when": object()}}),
        RunRecord(**{**fields, "has_model": True}),
    ]
    messages = ["bool", "hex digits", "shape", "cannot be stored as JSON", "has_model=True"]
    for bad, message in zip(bad_records, messages, strict=True):
        with pytest.raises(ValueError, match=message):
            store.save(bad)
    with pytest.raises(ValueError, match="head grid"):
        store.save(make_record(shape=(2, 4)), model=build_tiny_model("bert"))
    assert store.list() == ([], []) and _leftovers(store) == []
