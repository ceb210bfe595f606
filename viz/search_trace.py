"""The search events of a pruning run's trace: A* (and its local / global baselines), random trials.

A search records ``search_start``, one ``search_iteration`` per iteration (the heads pruned, the
candidates evaluated with their cost and status, the mask after it) and ``search_done``; random
pruning records ``random_trial`` events. :func:`parse_search_trace` picks them out of a stored
trace, skipping every other kind, and checks them, so the figures in :mod:`viz.search` can trust
them. Masks are bool ``(n_layers, n_heads)``, **True = keep**.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from viz.grid import check_mask

__all__ = [
    "STATUSES",
    "SearchTrace",
    "Trace",
    "check_trial",
    "iteration_position",
    "parse_search_trace",
    "search_iterations",
    "zero_budget_iteration",
]

STATUSES = ("pruned", "eliminated", "searched")  # what an iteration did with a candidate
_ALGORITHMS = {"astar": "A*", "local": "Local", "global": "Global", "random": "Random"}
_METRICS = {"accuracy": "Accuracy", "mcc": "MCC", "f1": "F1"}
# As pruning.methods.search_core: a metric equal to the baseline is not a drop below it.
TOLERANCE = 1e-9
_ITERATION_KEYS = (
    "iteration",
    "pruned",
    "candidates",
    "mask",
    "metric",
    "budget_used",
    "budget_remaining",
    "evaluations_this_iteration",
)

Trace = Sequence[Any]


@dataclass(frozen=True)
class SearchTrace:
    """The search events of one run: the ``data`` dicts of its search events, in order.

    Attributes:
        start: ``search_start`` data, or None (random trials alone may have none).
        iterations: ``search_iteration`` data, iteration numbers strictly increasing.
        done: ``search_done`` data, or None while the search runs.
        trials: random trials (``trial``, ``heads_pruned``, ``budget_used``, ...) by trial number.
    """

    start: dict[str, Any] | None
    iterations: tuple[dict[str, Any], ...]
    done: dict[str, Any] | None
    trials: tuple[dict[str, Any], ...]

    def info(self, key: str) -> Any:
        """``key`` from the first search event that has it (start, iterations, done), or None."""
        for source in (self.start, *self.iterations, self.done):
            if source is not None and key in source:
                return source[key]
        return None

    @property
    def algorithm(self) -> str:
        """Display name of the search: "A*", "Local", "Global" or "Random"."""
        name = str(self.info("algorithm"))
        return _ALGORITHMS.get(name, name)

    @property
    def metric(self) -> str:
        """Display name of the metric the costs are measured in."""
        name = str(self.info("metric") or "metric")
        return _METRICS.get(name, name)

    @property
    def shape(self) -> tuple[int, int] | None:
        """``(n_layers, n_heads)``, or None when no event says."""
        if self.start is not None and "n_layers" in self.start:
            return int(self.start["n_layers"]), int(self.start["n_heads"])
        return np.asarray(self.iterations[0]["mask"]).shape if self.iterations else None


def event_fields(event: Any, index: int) -> tuple[str, Mapping[str, Any]]:
    """``(kind, data)`` of a stored trace event (a dict) or a TraceEvent; ValueError otherwise."""
    if isinstance(event, Mapping):
        kind, data = event.get("kind"), event.get("data", {})
    else:  # a TraceEvent
        kind, data = getattr(event, "kind", None), getattr(event, "data", None)
    if not isinstance(kind, str) or not isinstance(data, Mapping):
        raise ValueError(
            f"trace[{index}] is not a trace event; pass the stored trace: a list of dicts with "
            "'kind' (str) and 'data' (dict), or TraceEvent objects."
        )
    return kind, data


def check_trial(trial: Any, where: str) -> dict[str, Any]:
    """``trial`` as a dict; ValueError when it lacks ``heads_pruned`` or ``budget_used``."""
    keys = ("heads_pruned", "budget_used")
    missing = [k for k in keys if not isinstance(trial, Mapping) or k not in trial]
    if missing:
        raise ValueError(
            f"{where} is not a random trial: it lacks {', '.join(map(repr, missing))}. Pass the "
            "trace of a random run, or its trial dicts (trial, heads_pruned, budget_used, ...)."
        )
    return dict(trial)


def _check_iteration(data: Mapping[str, Any], index: int) -> dict[str, Any]:
    missing = [k for k in _ITERATION_KEYS if k not in data]
    if missing:
        raise ValueError(
            f"The search_iteration event at trace[{index}] lacks {', '.join(map(repr, missing))}; "
            "the trace was written by another version of the search. Re-run the search."
        )
    for candidate in data["candidates"]:
        if candidate.get("status") not in STATUSES:
            raise ValueError(
                f"Iteration {data['iteration']}: candidate {candidate.get('label')!r} has status "
                f"{candidate.get('status')!r}; expected one of {', '.join(STATUSES)}."
            )
    return dict(data)


def parse_search_trace(trace: SearchTrace | Trace) -> SearchTrace:
    """The search events of a stored trace; events of other kinds are skipped.

    Args:
        trace: the run's trace, a list of event dicts (``kind``, ``step``, ``fraction``,
            ``message``, ``data``) or ``TraceEvent`` objects; a :class:`SearchTrace` is returned
            as is.

    Raises:
        ValueError: when the trace has no search events (the run used a method that does not
            search), or its search events are malformed (missing keys, iterations out of order,
            masks that disagree with the pruned heads, heads off the grid).
    """
    if isinstance(trace, SearchTrace):
        return trace
    if isinstance(trace, str | bytes) or not isinstance(trace, Sequence):
        raise ValueError(f"trace must be a list of trace events; got {type(trace).__name__}.")
    start = done = None
    iterations: list[dict[str, Any]] = []
    trials: dict[int, dict[str, Any]] = {}
    kinds: set[str] = set()
    for index, event in enumerate(trace):
        kind, data = event_fields(event, index)
        kinds.add(kind)
        if kind == "search_start":
            start = dict(data)
        elif kind == "search_iteration":
            iterations.append(_check_iteration(data, index))
        elif kind == "search_done":
            done = dict(data)
        elif kind == "random_trial":
            trial = check_trial(data, f"The random_trial event at trace[{index}]")
            trials[int(trial.get("trial", len(trials)))] = trial
    for number, item in enumerate((done or {}).get("trials", [])):
        trial = check_trial(item, f"search_done trials[{number}]")
        trials[int(trial.get("trial", number))] = trial
    if start is None and done is None and not iterations and not trials:
        raise ValueError(
            f"This trace has no search events (event kinds: {', '.join(sorted(kinds)) or 'none'}); "
            "it was made by a method that does not search. Search figures need a run of the "
            "astar, local or global search, or of random pruning trials."
        )
    if iterations and start is None:
        raise ValueError("The trace has search_iteration events but no search_start event.")
    parsed = SearchTrace(start, tuple(iterations), done, tuple(trials[k] for k in sorted(trials)))
    _check_iterations(parsed)
    return parsed


def _check_iterations(parsed: SearchTrace) -> None:
    numbers = [int(it["iteration"]) for it in parsed.iterations]
    if any(b <= a for a, b in itertools.pairwise(numbers)):
        raise ValueError(f"Search iterations must increase strictly; got {numbers}.")
    removed: set[tuple[int, int]] = set()
    for it in parsed.iterations:
        mask = check_mask(np.asarray(it["mask"]), f"iteration {it['iteration']}'s mask")
        if mask.shape != parsed.shape:
            raise ValueError(
                f"Iteration {it['iteration']}'s mask has shape {mask.shape}, but the search runs "
                f"on a {parsed.shape} (n_layers, n_heads) grid."
            )
        off_grid = [
            (layer, head)
            for candidate in it["candidates"]
            for layer, head in candidate["heads"]
            if not (0 <= layer < mask.shape[0] and 0 <= head < mask.shape[1])
        ]
        if off_grid:
            raise ValueError(
                f"Iteration {it['iteration']} has candidate heads off the {parsed.shape} grid: "
                f"{off_grid}; heads are [layer, head] pairs counted from 0."
            )
        removed |= {(int(layer), int(head)) for layer, head in it["pruned"]}
        if removed != set(zip(*map(np.ndarray.tolist, np.nonzero(~mask)), strict=True)):
            raise ValueError(
                f"Iteration {it['iteration']}'s mask (True = keep) does not remove exactly the "
                "heads pruned so far; the trace is inconsistent."
            )


def search_iterations(trace: SearchTrace | Trace) -> list[int]:
    """The iteration numbers of a search (1-based), for a replay slider; [] when there are none."""
    return [int(it["iteration"]) for it in parse_search_trace(trace).iterations]


def iteration_position(parsed: SearchTrace, iteration: int | None) -> int | None:
    """Index into ``parsed.iterations`` (None = the last; None when there are no iterations)."""
    numbers = [int(it["iteration"]) for it in parsed.iterations]
    if iteration is None:
        return len(numbers) - 1 if numbers else None
    if isinstance(iteration, bool) or iteration not in numbers:
        available = f"{numbers[0]}..{numbers[-1]}" if numbers else "none: it has no iterations"
        raise ValueError(
            f"iteration={iteration!r} is not in this search trace; pick one of {available} "
            "(search_iterations(trace)), or None for the last one."
        )
    return numbers.index(iteration)


def zero_budget_iteration(parsed: SearchTrace) -> int | None:
    """Table 3's "with zero budget" point: the last state before the metric first falls below A.

    ``A`` is the unpruned baseline. A* prunes for free while the metric stays at or above ``A``
    (the costs from ``A`` are <= 0); the budget is first used by the first iteration whose metric
    is below ``A``. Read from the payloads' ``metric`` alone, so it works for old traces too.

    Returns:
        The iteration number of that state (0 = the unpruned model, when the first iteration
        already falls below ``A``), or None when no iteration falls below ``A`` (the budget is
        never used), there are no iterations, or the trace has no baseline.
    """
    baseline = parsed.info("baseline")
    if baseline is None:
        return None
    last = 0
    for it in parsed.iterations:
        if float(it["metric"]) < float(baseline) - TOLERANCE:
            return last
        last = int(it["iteration"])
    return None
