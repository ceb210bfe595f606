"""``headscope bench astar-paper``: the A* paper's own experiment on a prepared classifier.

Parnami, Singh and Joshi (2021) report, per budget (their Table 3): the budget given and used, the
heads pruned and the accuracy "with zero budget" (before the metric first falls below the
unpruned model's A) and at the end, and the number of evaluations ("# Search"); Figures 9-10 put
A* next to 100 random pruning trials under the same budget, and Section 3.2 compares A* with
local pruning, which evaluates every remaining head at every iteration.

This bench runs that comparison on our model as ordinary stored runs of the pipeline: for each
budget an ``astar`` run and a ``random_budget`` run (100 trials), and ``local_greedy`` at the
budgets asked for (budget 1 by default), all searching on the whole validation split and
evaluated on the test split. Every row is stored when done and every search checkpoints after
each iteration (random: each trial), so the bench resumes across sessions: run it again and it
fetches what is stored and continues what was cut off. ``--report-only`` writes the report from
what is stored, listing the missing rows and how far their checkpoints got.

Verdict of "A* prunes more heads than random under the same budget", per budget: with ``p`` the
share of random trials that prune at least as many heads as A*, it holds when ``p < 0.05``, does
not hold when ``p >= 0.5`` (A* is no better than a typical random order), and is not
distinguishable in between (:func:`pruning.claim_rules.trials_verdict`, the rule every claim
bench shares).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from pruning.claim_rules import TRIALS_RULE, trials_verdict
from pruning.cli_bench_runs import (
    _floats,
    add_shared_bench_args,
    base_request,
    bench_report,
    run_plan,
    write_report,
)

HELP = "the A* paper's experiment: Table 3 per budget, local greedy, 100 random trials"


def add_astar_paper_bench(kinds: Any) -> None:
    """Register ``bench astar-paper`` on the ``bench`` subparsers object."""
    parser = kinds.add_parser("astar-paper", help=HELP)
    add_shared_bench_args(parser)
    parser.set_defaults(examples=0)
    for action in parser._actions:
        if action.dest == "examples":
            action.help = "validation texts A* searches on (0, the default: the whole split)"
    parser.add_argument(
        "--budgets", type=_floats, default=[1.0, 2.0, 3.0], help="budgets in points (1,2,3)"
    )
    parser.add_argument(
        "--local-budgets",
        type=_floats,
        default=[1.0],
        help="budgets of the local greedy baseline (1); an empty run list needs --no-local",
    )
    parser.add_argument("--no-local", action="store_true", help="leave out local greedy")
    parser.add_argument(
        "--random-trials", type=int, default=100, help="random trials per budget (100)"
    )
    parser.add_argument(
        "--metric", choices=("accuracy", "mcc", "f1"), default="accuracy", help="budget metric"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="compute nothing: report the stored rows and list the missing ones",
    )


def astar_paper_plan(args: argparse.Namespace, validation_size: int) -> list[dict[str, Any]]:
    """The runs of the bench in the order they are computed: budget by budget.

    Args:
        validation_size: texts in the validation split (``--examples 0`` searches on all).
    """
    if args.random_trials < 1:
        raise ValueError("--random-trials must be at least 1.")
    if args.examples < 0:
        raise ValueError("--examples must be 0 (the whole validation split) or more.")
    sized = argparse.Namespace(**{**vars(args), "examples": args.examples or validation_size})
    shared = {"metric": args.metric}
    local = [] if args.no_local else list(args.local_budgets)
    rows: list[dict[str, Any]] = []
    for budget in args.budgets:
        entries = [
            ("astar", f"A* budget {budget:g}", {**shared, "budget": budget}),
            (
                "random_budget",
                f"Random x{args.random_trials} budget {budget:g}",
                {**shared, "budget": budget, "trials": args.random_trials},
            ),
        ]
        if budget in local:
            label = f"Local greedy budget {budget:g}"
            entries.append(("local_greedy", label, {**shared, "budget": budget}))
        for method, label, config in entries:
            request = base_request(sized, method=method, config=config, name=label)
            rows.append({"method": method, "budget": budget, "label": label, "request": request})
    return rows


def _stored_rows(plan: list[dict[str, Any]]) -> None:
    """Attach to each planned row its stored record (``record``) or its checkpoint progress."""
    from cache.checkpoints import RunCheckpoints
    from cache.run_store import RunStore
    from pruning.pipeline import plan_run

    store, checkpoints = RunStore(), RunCheckpoints()
    for row in plan:
        key = plan_run(row["request"]).key
        row["key"] = key
        row["record"] = store.get(key) if store.exists(key) else None
        saved = checkpoints.load(key) if row["record"] is None else None
        row["checkpoint"] = (
            {
                "iterations": len(saved.get("iterations", [])),
                "trials": len(saved.get("trials", [])),
            }
            if saved
            else None
        )


def _events(record: Any, kind: str) -> list[dict[str, Any]]:
    return [dict(event["data"]) for event in record.trace if event["kind"] == kind]


def _search_row(record: Any) -> dict[str, Any]:
    """Table 3's columns for an A* or local greedy run."""
    from pruning.methods.search_core import zero_budget_point

    info = record.info.get("method_info", {})
    iterations = _events(record, "search_iteration")
    heads = int(record.mask.numel())
    zero = zero_budget_point(iterations) or (0, float(info.get("baseline", 0.0)))
    pruned = int((~record.mask).sum())
    metric = info.get("metric", "accuracy")
    return {
        "key": record.key,
        "baseline": info.get("baseline"),
        "budget_used": info.get("budget_used"),
        "zero_budget_heads": zero[0],
        "zero_budget_share": zero[0] / heads,
        "zero_budget_metric": zero[1],
        "heads_pruned": pruned,
        "share_pruned": pruned / heads,
        "final_metric": info.get("final_metric"),
        "evaluations": info.get("evaluations"),
        "iterations": info.get("iterations"),
        "stop_reason": info.get("stop_reason"),
        "test_dense": record.metrics["dense"].get(metric),
        "test_pruned": record.metrics["pruned"].get(metric),
        "seconds": record.info.get("total_seconds"),
    }


def _random_row(record: Any, astar_heads: int | None) -> dict[str, Any]:
    """The distribution of heads pruned over the random trials (Figures 9-10)."""
    trials = [t for event in _events(record, "random_trial") for t in [event]]
    counts = [int(t["heads_pruned"]) for t in trials]
    used = [float(t["budget_used"]) for t in trials]
    row: dict[str, Any] = {
        "key": record.key,
        "trials": len(trials),
        "heads_mean": statistics.fmean(counts),
        "heads_sd": statistics.stdev(counts) if len(counts) > 1 else 0.0,
        "heads_min": min(counts),
        "heads_median": statistics.median(counts),
        "heads_max": max(counts),
        "budget_used_mean": statistics.fmean(used),
        "heads_histogram": {str(k): counts.count(k) for k in sorted(set(counts))},
        "evaluations": record.info.get("method_info", {}).get("evaluations"),
        "seconds": record.info.get("total_seconds"),
    }
    if astar_heads is not None:
        row["verdict"], row["share_at_least_astar"] = trials_verdict(astar_heads, counts)
    return row


def astar_paper_report(plan: list[dict[str, Any]]) -> dict[str, Any]:
    """Per budget: the A* row, the random distribution and local greedy, where stored."""
    budgets: dict[float, dict[str, Any]] = {}
    missing = []
    for row in plan:
        entry = budgets.setdefault(row["budget"], {"budget": row["budget"]})
        if row["record"] is None:
            missing.append(
                {
                    "label": row["label"],
                    "key": row["key"],
                    "checkpoint": row["checkpoint"],
                }
            )
            continue
        if row["method"] == "astar":
            entry["astar"] = _search_row(row["record"])
        elif row["method"] == "local_greedy":
            entry["local"] = _search_row(row["record"])
    for row in plan:
        if row["method"] == "random_budget" and row["record"] is not None:
            astar = budgets[row["budget"]].get("astar")
            heads = None if astar is None else int(astar["heads_pruned"])
            budgets[row["budget"]]["random"] = _random_row(row["record"], heads)
    for entry in budgets.values():
        if "astar" in entry and "local" in entry and entry["local"]["evaluations"]:
            entry["astar_over_local_evaluations"] = (
                entry["astar"]["evaluations"] / entry["local"]["evaluations"]
            )
    return {"budgets": list(budgets.values()), "missing": missing}


def _cell(value: Any, pattern: str = "{}") -> str:
    return "–" if value is None else pattern.format(value)


def astar_paper_markdown(report: dict[str, Any], examples: int) -> str:
    """Table 3 as the paper lays it out, then local greedy and random pruning per budget."""
    lines = [
        f"A* on {examples} validation texts (costs, budget); test accuracy of the pruned model.",
        "",
        "| budget B | used X | B - X | zero budget: heads (%) | P | with budget: heads (%) "
        "| P | test (dense -> pruned) | # search |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in report["budgets"]:
        a = entry.get("astar")
        if a is None:
            lines.append(f"| {entry['budget']:g} | not run yet |||||||")
            continue
        lines.append(
            f"| {entry['budget']:g} | {a['budget_used']:.2f} | "
            f"{entry['budget'] - a['budget_used']:.2f} | {a['zero_budget_heads']} "
            f"({a['zero_budget_share']:.1%}) | {a['zero_budget_metric']:.2f} | "
            f"{a['heads_pruned']} ({a['share_pruned']:.1%}) | {a['final_metric']:.2f} | "
            f"{a['test_dense']:.4f} -> {a['test_pruned']:.4f} | {a['evaluations']} |"
        )
    lines += [
        "",
        "| budget | A* heads | random heads: mean ± sd (min-median-max) | trials >= A* "
        "| verdict | local greedy heads | local evaluations | A* / local evaluations |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in report["budgets"]:
        a, r, local = entry.get("astar"), entry.get("random"), entry.get("local")
        random_text = (
            "not run yet"
            if r is None
            else f"{r['heads_mean']:.1f} ± {r['heads_sd']:.1f} ({r['heads_min']}-"
            f"{r['heads_median']:g}-{r['heads_max']}), {r['trials']} trials"
        )
        lines.append(
            f"| {entry['budget']:g} | {_cell(a and a['heads_pruned'])} | {random_text} | "
            f"{_cell(r and r.get('share_at_least_astar'), '{:.0%}')} | "
            f"{_cell(r and r.get('verdict'))} | {_cell(local and local['heads_pruned'])} | "
            f"{_cell(local and local['evaluations'])} | "
            f"{_cell(entry.get('astar_over_local_evaluations'), '{:.0%}')} |"
        )
    if report["missing"]:
        lines += ["", "Not stored yet (run the same command again to continue):", ""]
        for row in report["missing"]:
            progress = row["checkpoint"]
            done = (
                ""
                if not progress
                else f" (checkpoint: {progress['iterations']} iterations, "
                f"{progress['trials']} trials)"
            )
            lines.append(f"- {row['label']}{done}")
    return "\n".join(lines) + "\n"


def bench_astar_paper(args: argparse.Namespace) -> int:
    """``headscope bench astar-paper``."""
    from pruning.cli_common import data_spec_from_args
    from pruning.data import load_dataset

    started = time.perf_counter()
    dataset = load_dataset(data_spec_from_args(args))
    plan = astar_paper_plan(args, len(dataset.split("validation")))
    if not args.report_only:
        run_plan([(row["label"], row["request"]) for row in plan], progress=not args.no_progress)
    _stored_rows(plan)
    report = astar_paper_report(plan)
    examples = plan[0]["request"].score_examples
    table = astar_paper_markdown(report, examples)
    content = {
        **report,
        "validation_examples": examples,
        "random_trials": args.random_trials,
        "verdict_rule": TRIALS_RULE,
    }
    return write_report(args, bench_report(args, started, **content), table)
