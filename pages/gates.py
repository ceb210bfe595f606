"""Gates: learn a gate per head (AutoAttention's STE gates or L0 hard-concrete gates), watch the
gates open and close while they train, replay and compare stored gate runs.

Runs go through the same pipeline as every method (a background job, a stored run); the page draws
the latest gate snapshot while one trains and replays a stored run snapshot by snapshot afterwards.
Methods are looked up in the registry at run time, so the page works (and says what is missing)
whichever gating methods this installation has.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import streamlit as st

from cache.run_store import RunRecord
from pages.support.common import (
    config_form,
    current_specs,
    ensure_app_navigation,
    job_status,
    require_prepared,
    run_settings_ui,
    run_store,
    submit_run,
    tracked_jobs,
)
from pages.support.figures import show_chart
from pruning.methods.base import MethodConfig, PruningMethod, get_method
from pruning.pipeline import RunRequest
from viz.gates import (
    GateHistory,
    build_gate_animation,
    build_gate_comparison,
    build_gate_curves,
    build_gate_heatmap,
    build_open_gate_map,
    parse_gate_trace,
    reopened_heads,
)

GATE_METHODS = {
    "autoattention": "AutoAttention (STE gates)",
    "l0_gates": "L0 (hard-concrete gates)",
}
BOTH = "both"
CHOICES = {**GATE_METHODS, BOTH: "Run both (STE and L0, same settings)"}
# Settings shown first; the rest sit in expanders.
PRIMARY_FIELDS = ("mu", "gate_lr", "steps", "fixed_sparsity", "snapshot_every")
# Run both: everything the two configs have in common is set once, except these, which mean
# different things for STE and L0 gates (and have different defaults).
PER_METHOD_FIELDS = ("gate_lr", "gate_optimizer")
SESSION_JOBS = "gates_jobs"
EXPLANATION = (
    "Both learn one gate per attention head next to a sparsity penalty weighted by μ, and a gate "
    "may close and open again while it trains. **AutoAttention** (*AutoAttention: Automatic "
    "Attention Head Selection Through Differentiable Pruning*, 2022) uses deterministic 0/1 gates, "
    "open while their parameter W′ > 0, trained through a straight-through estimator whose "
    "backward pass uses σ(W′), the derivative of Softplus, by default, or Softplus(W′) itself, "
    "the paper's eq. 10 as printed (setting *Eq. 10 gradient*). **L0 gates** "
    "(Voita et al., *Analyzing Multi-Head Self-Attention*, 2019, after Louizos et al., 2018) "
    "sample stochastic hard-concrete gates under an expected-L0 penalty; at test time each gate is "
    "fixed from log α, so the heads kept can differ from what training saw."
)


def installed_methods() -> dict[str, type[PruningMethod]]:
    """The gating methods this installation registers, by registry name."""
    found = {}
    for name in GATE_METHODS:
        try:
            found[name] = get_method(name)
        except ValueError:
            continue
    return found


def config_part(config_class: type[MethodConfig], names: list[str]) -> type[MethodConfig] | None:
    """A stand-in of ``config_class`` with only the fields ``names`` (in that order), so
    ``config_form`` draws part of a config; None when it has none of them."""
    hints = typing.get_type_hints(config_class)
    fields = {spec.name: spec for spec in dataclasses.fields(config_class)}
    chosen = [fields[name] for name in names if name in fields]
    if not chosen:
        return None
    part = dataclasses.make_dataclass(
        f"{config_class.__name__}Part",
        [
            (
                spec.name,
                hints[spec.name],
                dataclasses.field(default=spec.default, metadata=spec.metadata)
                if spec.default is not dataclasses.MISSING
                else dataclasses.field(
                    default_factory=spec.default_factory, metadata=spec.metadata
                ),
            )
            for spec in chosen
        ],
        bases=(MethodConfig,),
        frozen=True,
    )
    return typing.cast(type[MethodConfig], part)


def field_names(method: type[PruningMethod]) -> list[str]:
    return [spec.name for spec in dataclasses.fields(method.config_class)]


def draw_fields(method: type[PruningMethod], names: list[str], key: str) -> dict[str, Any]:
    """``config_form`` for the fields ``names`` of a method's config (nothing when empty)."""
    part = config_part(method.config_class, names)
    return config_form(part, key=key) if part is not None else {}


def settings_form(methods: dict[str, type[PruningMethod]], choice: str) -> list[RunRequest]:
    """The gate settings; returns one request per chosen method when Run is pressed (else [])."""
    chosen = {name: methods[name] for name in methods if choice in (name, BOTH)}
    first = next(iter(chosen.values()))
    shared = [
        n
        for n in field_names(first)
        if all(n in field_names(m) for m in chosen.values())
        and (len(chosen) == 1 or n not in PER_METHOD_FIELDS)
    ]
    primary = [n for n in PRIMARY_FIELDS if n in shared]
    model_spec, data_spec = current_specs()
    configs: dict[str, dict[str, Any]] = {}
    with st.form(f"gates-form-{choice}"):
        # Keys carry the choice: the same field has other defaults in the other method.
        common = draw_fields(first, primary, f"gates-{choice}-main")
        with st.expander("More settings" if len(chosen) == 1 else "More shared settings"):
            common |= draw_fields(
                first, [n for n in shared if n not in primary], f"gates-{choice}-shared"
            )
        for name, method in chosen.items():
            own = [n for n in field_names(method) if n not in shared]
            configs[name] = dict(common)
            if not own:
                continue
            st.markdown(f"**{GATE_METHODS[name]}**")
            first_own = [n for n in PRIMARY_FIELDS if n in own]
            configs[name] |= draw_fields(method, first_own, f"gates-{choice}-{name}-main")
            with st.expander(f"More {GATE_METHODS[name]} settings"):
                configs[name] |= draw_fields(
                    method, [n for n in own if n not in first_own], f"gates-{choice}-{name}"
                )
        settings = run_settings_ui(
            "Validation texts", "Validation texts the gate snapshots measure accuracy on."
        )
        label = st.text_input("Run name", value="", placeholder="optional label").strip()
        submitted = st.form_submit_button("Run both" if choice == BOTH else "Run", type="primary")
    if not submitted:
        return []
    requests = []
    for name, config in configs.items():
        mu = config.get("mu")
        default_name = GATE_METHODS[name] + ("" if mu is None else f" · μ {mu:g}")
        if config.get("ste_gradient") == "softplus":
            default_name += " · Softplus gradient"
        try:
            request = RunRequest(
                method=name,
                config=config,
                model=model_spec,
                data=data_spec,
                seed=settings.seed,
                score_examples=settings.examples,
                eval_split=settings.eval_split,
                recovery_steps=settings.recovery_steps,
                name=f"{label} · {GATE_METHODS[name]}" if label else default_name,
            )
            request.method_config()
        except ValueError as error:
            st.error(f"{GATE_METHODS[name]}: {error}")
            return []
        requests.append(request)
    return requests


@st.fragment(run_every=1.0)
def live_panel() -> None:
    """Progress of gate jobs and, while one trains, its latest gate snapshot."""
    jobs = tracked_jobs("gates", SESSION_JOBS)
    if not jobs:
        st.info(
            "Set μ and the steps and press Run: progress, the open-gate count and the gate values "
            "of the latest snapshot appear here while the gates train; stored runs replay below."
        )
    for job, snap in jobs:
        job_status(job, snap)
        if snap.status != "running":
            continue
        events = [e for e in snap.events if isinstance(e, dict)]
        try:
            history = parse_gate_trace(events)
        except ValueError:
            continue  # no snapshot yet (loading, or the method's first steps)
        last = history.n_snapshots - 1
        st.metric(
            f"Open gates at step {int(history.steps[last])} of {history.total_steps}",
            f"{int(history.open_gates[last])} / {history.n_gates}",
        )
        gradient_caption(history)
        show_chart(
            build_gate_heatmap(history),
            "gate-values-live",
            width="stretch",
            key=f"live-gates-{job.job_id}",
        )


def stored_gate_runs() -> list[Any]:
    summaries, _ = run_store().list()
    return [s for s in summaries if s.method in GATE_METHODS]


@st.cache_data(max_entries=32, show_spinner=False)
def gate_history(key: str) -> GateHistory:
    """The parsed gate snapshots of a stored run (its key fixes its content).

    Raises:
        ValueError: the run cannot be read, or its trace has no usable gate snapshots.
    """
    return parse_gate_trace(run_store().get(key).trace)


def gradient_caption(history: GateHistory) -> None:
    """Which reading of the paper's eq. 10 an AutoAttention run's backward pass used."""
    if history.gradient_label:
        st.caption(f"Eq. 10 reading: {history.gradient_label}.")


def metrics_row(record: RunRecord, history: GateHistory) -> None:
    reopened = reopened_heads(history)
    cols = st.columns(4)
    removed = int((~record.mask).sum())
    cols[0].metric("Heads removed", f"{removed} / {record.mask.numel()}")
    cols[1].metric("Heads reopened", f"{len({(r.layer, r.head) for r in reopened})}")
    first, last = history.val_metric[0], history.val_metric[-1]
    name = history.val_metric_name
    cols[2].metric(f"Validation {name} (gates)", f"{last:.4f}", f"{last - first:+.4f} since step 0")
    split = record.info.get("settings", {}).get("eval_split", "test")
    dense = record.metrics.get("dense", {}).get("accuracy")
    pruned = (record.metrics.get("recovered") or record.metrics.get("pruned", {})).get("accuracy")
    if pruned is not None:
        label = f"{split.title()} accuracy" + (
            " (recovered)" if "recovered" in record.metrics else ""
        )
        delta = None if dense is None else f"{pruned - dense:+.4f} vs dense {dense:.4f}"
        cols[3].metric(label, f"{pruned:.4f}", delta)
    gradient_caption(history)
    info = record.info.get("method_info", {})
    soft, hard = info.get("val_metric_gates"), info.get("val_metric_mask")
    if history.gate_kind == "l0" and soft is not None and hard is not None:
        st.caption(
            f"Validation {name} with the soft test-time gates {soft:.4f}, with the hard mask "
            f"that removes the heads {hard:.4f}: the gap is what rounding the L0 gates costs."
        )


def reopened_table(history: GateHistory) -> None:
    reopened = reopened_heads(history)
    if not reopened:
        st.caption("No gate closed and opened again during this run.")
        return
    rows = [
        {
            "Layer": f"L{r.layer}",
            "Head": f"H{r.head}",
            "Closed at step": r.closed_at,
            "Reopened at step": r.reopened_at,
            "Open at the end": bool(history.open[-1, r.layer, r.head]),
        }
        for r in reopened
    ]
    st.dataframe(rows, hide_index=True, width="stretch")


def replay(record: RunRecord) -> None:
    """Replay a stored gate run: metrics, step slider, gate grids, curves, animation, table."""
    try:
        history = gate_history(record.key)
    except ValueError as error:
        st.error(f"This run's gate trace cannot be replayed: {error}")
        return
    metrics_row(record, history)
    steps = [int(s) for s in history.steps]
    if len(steps) > 1:
        step = st.select_slider(
            "Training step", options=steps, value=steps[-1], key=f"gates-step-{record.key}"
        )
    else:
        step = steps[0]
    index = steps.index(step)
    left, right = st.columns(2)
    show_chart(build_gate_heatmap(history, index), "gate-values", container=left, width="stretch")
    show_chart(build_open_gate_map(history, index), "open-gates", container=right, width="stretch")
    if history.final_mask is not None and history.fixed_sparsity is not None:
        st.caption(
            f"Fixed sparsity {history.fixed_sparsity:.0%}: the final mask keeps the "
            f"{int(history.final_mask.sum())} heads with the largest gate values, whatever the "
            "gates say at the last step."
        )
    curves, animation, table = st.tabs(["Training curves", "Animation", "Closed and reopened"])
    with curves:
        show_chart(build_gate_curves(history, index), "gate-curves", width="stretch")
    with animation:
        show_chart(build_gate_animation(history), "gate-animation", width="stretch")
    with table:
        reopened_table(history)


def default_comparison(runs: list[Any]) -> list[str]:
    """The newest run of each gating method when both are stored, else the two newest runs."""
    newest = {}
    for summary in runs:
        newest.setdefault(summary.method, summary.key)
    return list(newest.values()) if len(newest) >= 2 else [s.key for s in runs[:2]]


def comparison(runs: list[Any]) -> None:
    """Pick two or more stored gate runs; their open gates and metric on shared axes."""
    st.subheader("Compare gate runs")
    if len(runs) < 2:
        st.info("Store two or more gate runs (Run both does it in one go) to compare them here.")
        return
    labels = {s.key: f"{s.name} · {s.key[:8]}" for s in runs}
    chosen = st.multiselect(
        "Runs to compare",
        list(labels),
        default=default_comparison(runs),
        format_func=labels.__getitem__,
    )
    if len(chosen) < 2:
        st.caption("Pick at least two runs.")
        return
    histories = {}
    for key in chosen:
        try:
            histories[labels[key]] = gate_history(key)
        except ValueError as error:
            st.warning(f"{labels[key]} is left out: {error}")
    if len(histories) >= 2:
        show_chart(build_gate_comparison(histories), "gate-comparison", width="stretch")


def main() -> None:
    st.title("Gates")
    st.caption(EXPLANATION)
    prepared = require_prepared()
    if prepared is None:
        return
    methods = installed_methods()
    settings, live = st.columns([2, 3], gap="large")
    with settings:
        options = [name for name in CHOICES if name != BOTH or len(methods) == len(GATE_METHODS)]
        choice = st.radio("Method", options, format_func=CHOICES.__getitem__, key="gates-method")
        missing = [n for n in GATE_METHODS if choice in (n, BOTH) and n not in methods]
        for name in missing:
            st.error(
                f"The {GATE_METHODS[name]} method is not installed (no method is registered as "
                f"'{name}'). Update HeadScope, or pick the other method."
            )
        if not missing:
            for name in (n for n in methods if choice in (n, BOTH)):
                if methods[name].paper:
                    st.caption(methods[name].paper)
            requests = settings_form(methods, choice)
            for request in requests:
                submit_run(request, prefix="gates", session_key=SESSION_JOBS)
    with live:
        live_panel()

    st.subheader("Replay a stored gate run")
    runs = stored_gate_runs()
    if not runs:
        st.info("No gate run stored yet: run one above (Run both stores one of each method).")
        return
    keys = [s.key for s in runs]
    labels = {s.key: f"{s.name} · {s.key[:8]} · {s.created}" for s in runs}
    last = st.session_state.get(f"last_run_{SESSION_JOBS}")
    default = last if last in keys else keys[0]
    chosen = st.selectbox("Gate run", keys, index=keys.index(default), format_func=labels.get)
    try:
        record = run_store().get(chosen)
    except ValueError as error:
        st.error(f"This run cannot be read: {error}")
        return
    replay(record)
    if st.button("Open in Runs"):
        st.session_state["runs-filter"] = record.key
        st.switch_page("pages/runs.py")
    comparison(runs)


ensure_app_navigation()
main()
