"""README's paper-claims table: written from results files by the shared rules, never by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pruning.claims_table import BEGIN, END, claims_rows, claims_table, update_readme

ROOT = Path(__file__).resolve().parent.parent


def _write(folder: Path, name: str, content: dict) -> None:
    (folder / name).write_text(json.dumps({"date": "2026-12-08", "command": "x", **content}))


def _gate_row(method: str, seed: int, accuracy: float, **config: float) -> dict:
    recovered = accuracy if method != "autoattention" else None
    return {"method": method, "seed": seed, "accuracy": accuracy, "config": config,
            "recovered_accuracy": recovered}  # fmt: skip


def test_every_claim_is_open_without_files(tmp_path: Path) -> None:
    rows = claims_rows(tmp_path)
    assert len(rows) == 5 and {r["verdict"] for r in rows} == {"open"}
    assert "not run" in rows[0]["numbers"]


def test_verdicts_come_from_the_files_with_the_shared_rules(tmp_path: Path) -> None:
    trials = [3] * 10 + [10] * 9 + [21]
    _write(tmp_path, "astar_paper_cpu.json", {"budgets": [{
        "budget": 1.0,
        "astar": {"heads_pruned": 22},
        "random": {"heads_mean": 7.05, "heads_sd": 5.1, "heads_min": 3, "heads_max": 21,
                   "trials": len(trials), "share_at_least_astar": 0.0, "verdict": "holds"},
    }], "missing": [{"label": "A* budget 2"}]})  # fmt: skip
    gates = [_gate_row("autoattention", s, a, fixed_sparsity=0.5) for s, a in
             enumerate((0.80, 0.81, 0.80))]  # fmt: skip
    gates += [_gate_row("hisp", s, a, sparsity=0.5) for s, a in enumerate((0.83, 0.84, 0.83))]
    gates += [_gate_row("random", s, a, sparsity=0.5) for s, a in enumerate((0.81, 0.80, 0.82))]
    _write(tmp_path, "gates_cpu.json", {"rows": gates})
    astar, autoattention, mcap, deepcuts, hisp = claims_rows(tmp_path)
    assert astar["verdict"] == "holds" and "p = 0.00" in astar["numbers"]
    assert "not stored yet: A* budget 2" in astar["note"]
    # below HISP at every seed (does not hold) outweighs random (not distinguishable)
    assert autoattention["verdict"] == "does not hold"
    assert "HISP 83.33% ± 0.58 (3 seeds) (does not hold)" in autoattention["numbers"]
    assert mcap["verdict"] == deepcuts["verdict"] == hisp["verdict"] == "open"
    table = claims_table(tmp_path)
    assert table.count("\n| ") == 5 and "**holds**" in table


def test_update_readme_rewrites_only_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold table\n{END}\noutro\n")
    assert update_readme(readme, "| new |\n") is True
    assert readme.read_text() == f"intro\n{BEGIN}\n| new |\n{END}\noutro\n"
    assert update_readme(readme, "| new |\n") is False
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="no claims-table markers"):
        update_readme(readme, "| new |\n")
    assert readme.read_text() == "no markers\n"


def test_the_readme_table_is_the_one_the_results_files_give() -> None:
    text = (ROOT / "README.md").read_text()
    written = text[text.index(BEGIN) + len(BEGIN) + 1 : text.index(END)]
    assert written == claims_table(ROOT / "bench" / "results"), (
        "README's claims table is stale: run `headscope bench claims-table --readme README.md`"
    )
