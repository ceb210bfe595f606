"""README's "Which paper claims hold" table, written from the committed bench results files.

No figure of that table is typed by hand: ``headscope bench claims-table`` reads the results
files below from ``bench/results/`` (or ``--results``), judges every claim with the shared rules
of :mod:`pruning.claim_rules`, and rewrites the table between the README markers
:data:`BEGIN` and :data:`END`. Each row names the file, its date and command, whether it was
measured in the paper's regime (seeds, split, ratio definition, method revision), and the
verdict. A claim whose file is missing, or holds only rows of a superseded method revision, is
"open" with the reason.

Sources (first existing file wins where two are listed):

* A* vs random (Parnami et al., Figures 9-10): ``astar_paper_cpu.json`` (``bench astar-paper``).
* AutoAttention vs HISP and random at 50% (Zhang et al.): ``gates_paper_cpu.json`` (``bench gates
  --fixed-only --seeds 0,1,2``), else ``gates_cpu.json``.
* MCAP vs random heads and entropy at 20% (Rajapaksha and Crespi, Table I): ``table1_cpu.json``
  (``bench table1``); a file without paired comparisons is the revision-1 bench (the circular
  CNN), reported as a record, the claim staying open.
* DeepCuts (Grover et al., Sections 4.3-4.4): ``deepcuts_paper_cpu.json`` (the paper's
  BERT-base-equivalent ratios), else ``deepcuts_cpu.json`` (HeadScope's prunable ratios).
* HISP vs random at 50% (Michel et al.): ``heads50_cpu.json`` (``bench quality`` sweep rows).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pruning.bench_runs_table import deepcuts_claims
from pruning.claim_rules import HOLDS, MIN_SEEDS, accuracy_by_seed, combine, paired

__all__ = ["BEGIN", "END", "claims_rows", "claims_table", "update_readme"]

BEGIN = "<!-- claims-table:begin (written by `headscope bench claims-table`; do not edit) -->"
END = "<!-- claims-table:end -->"
OPEN = "open"


def _load(folder: Path, *names: str) -> tuple[str, dict[str, Any]] | None:
    for name in names:
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as error:
                raise ValueError(f"{path} is not a readable results file ({error}).") from error
            if not isinstance(data, dict):
                raise ValueError(f"{path} is not a bench results file (expected a JSON object).")
            return name, data
    return None


def _source(name: str, data: Mapping[str, Any]) -> str:
    return f"`{name}` ({data.get('date', 'undated')}; `{data.get('command', '?')}`)"


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _seed_text(values: Mapping[int, float]) -> str:
    if len(values) == 1:
        return _pct(next(iter(values.values())))
    mean = statistics.fmean(values.values())
    sd = statistics.stdev(values.values())
    return f"{_pct(mean)} ± {100 * sd:.2f} ({len(values)} seeds)"


def _row(claim: str, source: str, numbers: str, verdict: str | None, note: str = "") -> dict:
    return {
        "claim": claim,
        "source": source,
        "numbers": numbers,
        "verdict": verdict or OPEN,
        "note": note,
    }


def _astar(folder: Path) -> dict[str, Any]:
    claim = "A* prunes more heads than random pruning under the same budget (Figures 9-10)"
    found = _load(folder, "astar_paper_cpu.json")
    if found is None:
        return _row(claim, "–", "not run: `headscope bench astar-paper`", None)
    name, data = found
    parts, verdicts = [], []
    for entry in data.get("budgets", []):
        astar, random = entry.get("astar"), entry.get("random")
        if not astar or not random or "verdict" not in random:
            continue
        verdicts.append(random["verdict"])
        parts.append(
            f"budget {entry['budget']:g}: A* {astar['heads_pruned']} heads, random "
            f"{random['heads_mean']:.1f} ± {random['heads_sd']:.1f} (min {random['heads_min']}, "
            f"max {random['heads_max']}) over {random['trials']} trials, p = "
            f"{random['share_at_least_astar']:.2f}"
        )
    missing = [m["label"] for m in data.get("missing", [])]
    note = f"not stored yet: {', '.join(missing)}" if missing else ""
    if not parts:
        return _row(claim, _source(name, data), "no budget has both A* and random", None, note)
    return _row(claim, _source(name, data), "; ".join(parts), combine(verdicts), note)


def _by_seed(rows: Sequence[Mapping[str, Any]], keep: Callable[[Mapping[str, Any]], bool]) -> dict:
    return accuracy_by_seed(r for r in rows if keep(r))


def _config(row: Mapping[str, Any]) -> Mapping[str, Any]:
    return row.get("config") or {}


def _paired_claim(
    claim: str,
    source: str,
    mine_name: str,
    mine: Mapping[int, float],
    baselines: Sequence[tuple[str, Mapping[int, float]]],
    note: str = "",
) -> dict[str, Any]:
    if not mine or not all(values for _, values in baselines):
        return _row(claim, source, "the file lacks a row the claim needs", None, note)
    verdicts, parts = [], [f"{mine_name} {_seed_text(mine)}"]
    for name, values in baselines:
        result = paired(mine, values)
        verdicts.append(result["verdict"])
        parts.append(f"{name} {_seed_text(values)} ({result['verdict']})")
    seeds = min(len(mine), *(len(v) for _, v in baselines))
    if seeds < MIN_SEEDS:
        note = f"{seeds} seed(s): the rule needs {MIN_SEEDS}. {note}".strip()
    return _row(claim, source, "; ".join(parts), combine(verdicts), note)


def _autoattention(folder: Path) -> dict[str, Any]:
    claim = "AutoAttention beats HISP and random heads at 50% of heads"
    found = _load(folder, "gates_paper_cpu.json", "gates_cpu.json")
    if found is None:
        return _row(claim, "–", "not run: `headscope bench gates`", None)
    name, data = found
    rows = [r for r in data.get("rows", []) if r.get("accuracy") is not None]
    gates = _by_seed(
        rows,
        lambda r: r.get("method") == "autoattention" and _config(r).get("fixed_sparsity") == 0.5,
    )

    def recovered(method: str) -> Callable[[Mapping[str, Any]], bool]:
        return lambda r: (
            r.get("method") == method
            and _config(r).get("sparsity") == 0.5
            and r.get("recovered_accuracy") is not None
        )

    return _paired_claim(
        claim,
        _source(name, data),
        "AutoAttention fixed 50%",
        gates,
        [
            ("HISP", _by_seed(rows, recovered("hisp"))),
            ("random", _by_seed(rows, recovered("random"))),
        ],
        "HISP and random fine-tuned for as many steps as the gates trained.",
    )


def _mcap(folder: Path) -> dict[str, Any]:
    claim = (
        "MCAP beats random heads and attention entropy at 20% of heads, pruned before "
        "fine-tuning (Table I)"
    )
    found = _load(folder, "table1_cpu.json")
    if found is None:
        return _row(claim, "–", "not run: `headscope bench table1`", None)
    name, data = found
    paired_rows = data.get("paired")
    if not paired_rows:
        rows = data.get("rows", [])
        mcap = {
            i: float(r["mcc"])
            for i, r in enumerate(r for r in rows if r["label"].startswith("MCAP"))
        }
        random = {
            i: float(r["mcc"])
            for i, r in enumerate(r for r in rows if r["label"].startswith("Random heads"))
        }
        entropy = {
            i: float(r["mcc"])
            for i, r in enumerate(r for r in rows if r["label"].startswith("Attention entropy"))
        }

        def listed(values: Mapping[int, float]) -> str:
            return ", ".join(f"{v:.3f}" for v in values.values())

        numbers = (
            f"revision 1 (the circular CNN), MCC: MCAP {listed(mcap)}; random heads "
            f"{listed(random)} ({paired(mcap, random)['verdict']}); entropy {listed(entropy)}"
        )
        return _row(
            claim,
            _source(name, data),
            numbers,
            None,
            "the current MCAP (revision 2, the pattern CNN) in the paper's protocol is not "
            "measured yet: `headscope bench table1` (about 11 CPU hours)",
        )
    wanted = [p for p in paired_rows if p.get("metric") == "mcc"]
    chosen = [p for p in wanted if p["baseline"] in ("Random heads", "Attention entropy")]
    if not chosen:
        return _row(claim, _source(name, data), "no MCC comparison with the baselines", None)
    parts = [
        f"{p['baseline']}: MCC differences {', '.join(f'{d:+.3f}' for d in p['differences'])} "
        f"({p['verdict']})"
        for p in chosen
    ]
    return _row(claim, _source(name, data), "; ".join(parts), combine(p["verdict"] for p in chosen))


def _deepcuts(folder: Path) -> dict[str, Any]:
    claim = (
        "DeepCuts: every strategy ties at ratio 2; Cam-Cut and Smooth-Cut beat LayerMagWeight "
        "at 3-4"
    )
    found = _load(folder, "deepcuts_paper_cpu.json", "deepcuts_cpu.json")
    if found is None:
        return _row(claim, "–", "not run: `headscope bench deepcuts`", None)
    name, data = found
    tie, beat = deepcuts_claims(data.get("rows", []))
    parts = []
    for c in tie["comparisons"]:
        listed = ", ".join(f"{k} {_pct(v)}" for k, v in c["accuracies"].items())
        parts.append(f"paper ratio {c['paper_ratio']:.2f}: {listed} (tie {c['verdict']})")
    for c in beat["comparisons"]:
        parts.append(
            f"paper ratio {c['paper_ratio']:.2f}: {c['method']} {_pct(c['accuracy'])} vs "
            f"{c['baseline']} {_pct(c['baseline_accuracy'])} ({c['verdict']})"
        )
    note = ""
    if name == "deepcuts_cpu.json":
        note = "HeadScope's prunable ratios (the paper's 1.6-2.4), not the paper's regime."
    verdict = combine([v for v in (tie["verdict"], beat["verdict"]) if v is not None])
    seeds = [c["seeds"] for c in tie["comparisons"] + beat["comparisons"]]
    if seeds and min(seeds) < MIN_SEEDS:
        note = f"{min(seeds)} seed(s): the rule needs {MIN_SEEDS}. {note}".strip()
    numbers = "; ".join(parts) or (
        "no rows at the paper's ratios 2 or 3-4 (rows written before the ratio definitions "
        "carry no BERT-base-equivalent ratio)"
    )
    return _row(claim, _source(name, data), numbers, verdict, note)


def _hisp(folder: Path) -> dict[str, Any]:
    claim = "HISP keeps more accuracy than random heads at 50% (Michel et al.)"
    found = _load(folder, "heads50_cpu.json")
    if found is None:
        return _row(claim, "–", "not run", None)
    name, data = found
    rows = [r for r in data.get("rows", []) if r.get("accuracy") is not None]

    def plain(method: str) -> Callable[[Mapping[str, Any]], bool]:
        return lambda r: (
            r.get("method") == method
            and _config(r).get("sparsity") == 0.5
            and not r.get("recovered")
        )

    return _paired_claim(
        claim,
        _source(name, data),
        "HISP",
        _by_seed(rows, plain("hisp")),
        [("random", _by_seed(rows, plain("random")))],
    )


def claims_rows(folder: Path) -> list[dict[str, Any]]:
    """The five claims' rows (``claim``, ``source``, ``numbers``, ``verdict``, ``note``)."""
    return [_astar(folder), _autoattention(folder), _mcap(folder), _deepcuts(folder), _hisp(folder)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def claims_table(folder: Path) -> str:
    """The markdown table of :func:`claims_rows`, with the rule it applied."""
    lines = [
        "| Paper's claim | Our numbers | Verdict | Source and notes |",
        "|---|---|---|---|",
    ]
    for row in claims_rows(folder):
        verdict = f"**{row['verdict']}**" if row["verdict"] == HOLDS else row["verdict"]
        source = row["source"] + (f". {row['note']}" if row["note"] else "")
        lines.append(
            f"| {_cell(row['claim'])} | {_cell(row['numbers'])} | {verdict} | {_cell(source)} |"
        )
    lines += [
        "",
        "Verdicts (`pruning/claim_rules.py`): seed-paired comparisons hold when every difference "
        "favours the paper's method and their mean exceeds twice their standard deviation over at "
        "least 3 seeds; A* holds when fewer than 5% of the random trials prune as many heads, and "
        "does not hold when half of them do; otherwise *not distinguishable*. *open*: not "
        "measured in a file yet.",
    ]
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, table: str) -> bool:
    """Replace the text between the markers with ``table``; True when the file changed.

    Raises:
        ValueError: when the markers are missing or out of order (the file is left as it was).
    """
    from pruning.bench_quality import write_atomic

    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(
            f"{readme} has no claims-table markers; put the lines\n{BEGIN}\n{END}\nwhere the "
            "table belongs."
        )
    new = text[: start + len(BEGIN)] + "\n" + table + text[end:]
    if new == text:
        return False
    write_atomic(readme, new)
    return True
