"""The gate snapshots of a head-gating run's trace (AutoAttention's STE gates, L0 hard-concrete).

A gating method records a ``gates`` event every few training steps (plus step 0 and the end): the
per-head gate parameters ``w`` (``W'`` for the straight-through gates, ``log_alpha`` for L0), the
deterministic gate ``open`` (1 = the head is used), the losses and the validation metric; L0 runs
add ``prob`` = P(gate != 0); AutoAttention runs add ``ste_gradient``, the reading of the paper's
eq. 10 their backward pass used (``"sigmoid"``: ``dG/dW' = sigmoid(W')``, the derivative of
Softplus; ``"softplus"``: ``Softplus(W')`` as printed; absent in runs made before the choice
existed, which all used ``"sigmoid"``). A ``final`` event carries the resulting mask.
:func:`parse_gate_trace` stacks the snapshots into a :class:`GateHistory` of numpy arrays,
skipping every other event kind (``progress``, pipeline ``stage`` events), and checks them, so
:mod:`viz.gates` can trust them.
:func:`reopened_heads` finds the heads whose gate closed and later opened again.
Masks are bool ``(n_layers, n_heads)``, **True = keep** (= gate open).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from viz.search_trace import Trace, event_fields

__all__ = [
    "GATE_KINDS",
    "STE_GRADIENTS",
    "GateHistory",
    "ReopenedHead",
    "parse_gate_trace",
    "reopened_heads",
    "snapshot_position",
]

GateKind = Literal["ste", "l0"]
GATE_KINDS: tuple[GateKind, ...] = ("ste", "l0")
SteGradient = Literal["sigmoid", "softplus"]
STE_GRADIENTS: tuple[SteGradient, ...] = ("sigmoid", "softplus")
# What each reading of eq. 10 puts in place of dG/dW' in the backward pass.
_GRADIENT_LABELS: dict[str, str] = {
    "sigmoid": "dG/dW′ = σ(W′), the derivative of Softplus (coarse-gradient STE)",
    "softplus": "dG/dW′ = Softplus(W′), eq. 10 as printed",
}
_REQUIRED = ("train_step", "total_steps", "w", "open", "penalty", "val_metric", "gate_kind")


@dataclass(frozen=True, eq=False)
class GateHistory:
    """Gate snapshots of one run, stacked over time (``T`` snapshots of an ``L x H`` head grid).

    Attributes:
        steps: int ``(T,)``, the training step of each snapshot, strictly increasing.
        total_steps: training steps the run planned.
        w: float ``(T, L, H)``, the gate parameters (``W'`` for STE, ``log_alpha`` for L0).
        open: bool ``(T, L, H)``, the deterministic gate, True = open (the head is kept).
        prob: float ``(T, L, H)``, P(gate != 0) of L0 gates; None for STE gates.
        task_loss: float ``(T,)``, NaN where the snapshot has none (step 0).
        penalty: float ``(T,)``, the sparsity penalty as the method reports it.
        open_gates: int ``(T,)``, open gates counted from ``open``.
        val_metric: float ``(T,)``, validation metric (NaN where missing).
        val_metric_name: e.g. "accuracy".
        gate_kind: "ste" (AutoAttention) or "l0" (hard-concrete).
        expected_open: float ``(T,)``, sum of ``prob`` (the open count training sees); None for STE.
        train_gate_mean: float ``(T,)``, mean stochastic gate in training; None for STE.
        threshold: the value of ``w`` where a gate switches (0 unless the trace says otherwise).
        final_mask: bool ``(L, H)`` of the ``final`` event (True = keep), or None while running.
        fixed_sparsity: the share of heads the final mask removes when it was fixed, else None.
        ste_gradient: the reading of eq. 10 an STE run's backward pass used, ``"sigmoid"`` or
            ``"softplus"`` (``"sigmoid"`` for traces written before the choice existed); None
            for L0 gates.
    """

    steps: np.ndarray
    total_steps: int
    w: np.ndarray
    open: np.ndarray
    prob: np.ndarray | None
    task_loss: np.ndarray
    penalty: np.ndarray
    open_gates: np.ndarray
    val_metric: np.ndarray
    val_metric_name: str
    gate_kind: GateKind
    expected_open: np.ndarray | None = None
    train_gate_mean: np.ndarray | None = None
    threshold: float = 0.0
    final_mask: np.ndarray | None = None
    fixed_sparsity: float | None = None
    ste_gradient: SteGradient | None = None

    @property
    def n_snapshots(self) -> int:
        return int(self.steps.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_layers, n_heads)``."""
        return int(self.w.shape[1]), int(self.w.shape[2])

    @property
    def n_gates(self) -> int:
        return int(self.w.shape[1] * self.w.shape[2])

    @property
    def value_label(self) -> str:
        """Display name of ``w``: "W′" for STE gates, "log α" for L0 gates."""
        return "W′" if self.gate_kind == "ste" else "log α"

    @property
    def method_label(self) -> str:
        """The method, and for AutoAttention the literal eq. 10 reading when that one ran."""
        if self.gate_kind == "l0":
            return "L0 (hard-concrete)"
        if self.ste_gradient == "softplus":
            return "AutoAttention (STE, Softplus gradient)"
        return "AutoAttention (STE)"

    @property
    def gradient_label(self) -> str:
        """What the backward pass used for ``dG/dW'`` (eq. 10); "" for L0 gates."""
        return "" if self.ste_gradient is None else _GRADIENT_LABELS[self.ste_gradient]


@dataclass(frozen=True)
class ReopenedHead:
    """A head whose gate closed at snapshot step ``closed_at`` and was open again at
    ``reopened_at`` (the first later snapshot that saw it open)."""

    layer: int
    head: int
    closed_at: int
    reopened_at: int


def _number(value: Any, where: str) -> float:
    """A float from a JSON number; None becomes NaN."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{where} must be a number, got {value!r}.")
    return float(value)


def _grid(value: Any, where: str, shape: tuple[int, ...] | None) -> np.ndarray:
    """A 2-D float array of ``shape`` (any shape when None)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{where} must be a (n_layers, n_heads) list of numbers; it holds something else."
        ) from None
    if array.ndim != 2 or array.size == 0:
        raise ValueError(
            f"{where} must be a non-empty (n_layers, n_heads) list of lists; got shape "
            f"{array.shape}."
        )
    if shape is not None and array.shape != shape:
        raise ValueError(
            f"{where} has shape {array.shape} but the first snapshot's gates have shape {shape}; "
            "every snapshot must cover the same (n_layers, n_heads) grid."
        )
    return array


def _open_grid(value: Any, where: str, shape: tuple[int, ...]) -> np.ndarray:
    array = _grid(value, where, shape)
    if not np.isin(array, (0.0, 1.0)).all():
        raise ValueError(f"{where} must hold 0 (closed) or 1 (open) for every head.")
    return array.astype(bool)


def _check_snapshot(data: Mapping[str, Any], index: int) -> None:
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(
            f"The gates event at trace[{index}] lacks {', '.join(map(repr, missing))}; the trace "
            "was written by another version of the gating method. Run it again."
        )
    if data["gate_kind"] not in GATE_KINDS:
        raise ValueError(
            f"The gates event at trace[{index}] has gate_kind {data['gate_kind']!r}; expected "
            f"one of {', '.join(GATE_KINDS)}."
        )


def _collect(trace: Trace) -> tuple[list[tuple[int, Mapping[str, Any]]], Mapping[str, Any] | None]:
    """The gates events (with their trace positions) and the final event's data."""
    if isinstance(trace, str | bytes) or not isinstance(trace, Sequence):
        raise ValueError(f"trace must be a list of trace events; got {type(trace).__name__}.")
    snapshots: list[tuple[int, Mapping[str, Any]]] = []
    final = None
    kinds: set[str] = set()
    for index, event in enumerate(trace):
        kind, data = event_fields(event, index)
        kinds.add(kind)
        if kind == "gates":
            _check_snapshot(data, index)
            snapshots.append((index, data))
        elif kind == "final":
            final = data
    if not snapshots:
        raise ValueError(
            f"This trace has no gate snapshots (event kinds: {', '.join(sorted(kinds)) or 'none'});"
            " it was made by a method that does not learn head gates. Gate figures need a run of "
            "autoattention or l0_gates."
        )
    # A snapshot repeating the previous step (the end falling on a snapshot step) replaces it.
    kept: list[tuple[int, Mapping[str, Any]]] = []
    for index, data in snapshots:
        step = int(_number(data["train_step"], f"trace[{index}].data.train_step"))
        if kept and step < int(kept[-1][1]["train_step"]):
            raise ValueError(
                f"Gate snapshots must go forward in training steps; trace[{index}] is at step "
                f"{step} after step {kept[-1][1]['train_step']}."
            )
        if kept and step == int(kept[-1][1]["train_step"]):
            kept.pop()
        kept.append((index, data))
    return kept, final


def parse_gate_trace(trace: Trace) -> GateHistory:
    """The gate snapshots of a stored (or live) trace as a :class:`GateHistory`.

    Args:
        trace: the run's trace, a list of event dicts (``kind``, ``step``, ``fraction``,
            ``message``, ``data``) or ``TraceEvent`` objects. Events other than ``gates`` and
            ``final`` are skipped.

    Raises:
        ValueError: when the trace has no ``gates`` events, or they are malformed (missing keys,
            steps going backwards, gate kinds mixed, grids of different shapes, ``open`` not 0/1,
            L0 probabilities missing from some snapshots only).
    """
    snapshots, final = _collect(trace)
    first = snapshots[0][1]
    gate_kind: GateKind = first["gate_kind"]
    shape = _grid(first["w"], f"trace[{snapshots[0][0]}].data.w", None).shape
    w, gates, probs = [], [], []
    series: dict[str, list[float]] = {
        k: [] for k in ("task_loss", "penalty", "val_metric", "expected_open", "train_gate_mean")
    }
    for index, data in snapshots:
        where = f"trace[{index}].data"
        if data["gate_kind"] != gate_kind:
            raise ValueError(
                f"{where} has gate_kind {data['gate_kind']!r} but earlier snapshots are "
                f"{gate_kind!r}; one run has one kind of gate."
            )
        w.append(_grid(data["w"], f"{where}.w", shape))
        gates.append(_open_grid(data["open"], f"{where}.open", shape))
        if data.get("prob") is not None:
            probs.append(_grid(data["prob"], f"{where}.prob", shape))
        for name, values in series.items():
            values.append(_number(data.get(name), f"{where}.{name}"))
    ste_gradient = _ste_gradient(snapshots) if gate_kind == "ste" else None
    if gate_kind == "l0" and probs and len(probs) != len(snapshots):
        raise ValueError(
            "Some L0 gate snapshots carry 'prob' (P(gate != 0)) and others do not; the trace is "
            "inconsistent. Run it again."
        )
    prob = np.stack(probs) if gate_kind == "l0" and probs else None
    expected = np.asarray(series["expected_open"])
    if prob is not None:
        # Trust the stored sum where it is there; fill gaps from the probabilities.
        expected = np.where(np.isnan(expected), prob.sum(axis=(1, 2)), expected)
    open_array = np.stack(gates)
    return GateHistory(
        steps=np.asarray([int(d["train_step"]) for _, d in snapshots], dtype=np.int64),
        total_steps=int(_number(snapshots[-1][1]["total_steps"], "total_steps")),
        w=np.stack(w),
        open=open_array,
        prob=prob,
        task_loss=np.asarray(series["task_loss"]),
        penalty=np.asarray(series["penalty"]),
        open_gates=open_array.sum(axis=(1, 2)).astype(np.int64),
        val_metric=np.asarray(series["val_metric"]),
        val_metric_name=str(first.get("val_metric_name") or "accuracy"),
        gate_kind=gate_kind,
        expected_open=expected if gate_kind == "l0" else None,
        train_gate_mean=np.asarray(series["train_gate_mean"]) if gate_kind == "l0" else None,
        threshold=_number(first.get("threshold", 0.0), "threshold"),
        final_mask=_final_mask(final, shape),
        fixed_sparsity=_fixed_sparsity(final),
        ste_gradient=ste_gradient,
    )


def _ste_gradient(snapshots: list[tuple[int, Mapping[str, Any]]]) -> SteGradient:
    """The eq. 10 reading of an STE run: one per run, ``"sigmoid"`` where none is recorded."""
    found: set[str] = set()
    for index, data in snapshots:
        value = data.get("ste_gradient", "sigmoid")
        if value not in STE_GRADIENTS:
            raise ValueError(
                f"trace[{index}].data.ste_gradient is {value!r}; expected one of "
                f"{', '.join(STE_GRADIENTS)}."
            )
        found.add(value)
    if len(found) > 1:
        raise ValueError(
            "The gate snapshots mix eq. 10 gradients "
            f"({', '.join(sorted(found))}); one run uses one. Run it again."
        )
    reading: SteGradient = "softplus" if found == {"softplus"} else "sigmoid"
    return reading


def _final_mask(final: Mapping[str, Any] | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if final is None or final.get("mask") is None:
        return None
    mask = np.asarray(final["mask"])
    if mask.shape != shape or mask.dtype != np.bool_:
        raise ValueError(
            f"The final event's mask must be a bool {shape} grid (True = keep); got "
            f"{mask.dtype} {mask.shape}."
        )
    return mask


def _fixed_sparsity(final: Mapping[str, Any] | None) -> float | None:
    value = None if final is None else final.get("fixed_sparsity")
    return None if value is None else _number(value, "final.fixed_sparsity")


def reopened_heads(history: GateHistory) -> list[ReopenedHead]:
    """Every time a head's gate was closed at one snapshot and open at a later one.

    Computed from the snapshots (the method's own list in the final event may miss reopenings
    between its checks). A head that closes and reopens twice appears twice. A head closed from
    the first snapshot on counts too (``closed_at`` = that snapshot's step).

    Returns:
        :class:`ReopenedHead` items ordered by ``reopened_at``, then layer and head.
    """
    found = []
    _, n_layers, n_heads = history.open.shape
    for layer in range(n_layers):
        for head in range(n_heads):
            closed_since: int | None = None
            for position, is_open in enumerate(history.open[:, layer, head]):
                step = int(history.steps[position])
                if not is_open and closed_since is None:
                    closed_since = step
                elif is_open and closed_since is not None:
                    found.append(ReopenedHead(layer, head, closed_since, step))
                    closed_since = None
    return sorted(found, key=lambda r: (r.reopened_at, r.layer, r.head))


def snapshot_position(history: GateHistory, index: int | None) -> int:
    """``index`` checked against the snapshots (0-based; None = the last one).

    Raises:
        ValueError: when the history has no snapshot ``index``.
    """
    if index is None:
        return history.n_snapshots - 1
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise ValueError(f"index must be an int snapshot number, got {index!r}.")
    if not 0 <= index < history.n_snapshots:
        raise ValueError(
            f"index={index} is not a snapshot of this run; pick 0..{history.n_snapshots - 1} "
            "(snapshot number, not training step), or None for the last one."
        )
    return int(index)
