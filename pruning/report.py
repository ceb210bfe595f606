"""A self-contained HTML report of stored runs: figures, metrics, cost, configuration, versions.

:func:`build_report` turns run keys into one HTML document that opens offline in any browser:
plotly.js (the copy bundled with the installed plotly, ``plotly.offline.get_plotlyjs()``) is
inlined once in the head and every figure is a ``fig.to_html(full_html=False,
include_plotlyjs=False)`` fragment, so the figures stay interactive (hover, zoom, the gate
animation's play button) without a network. The document references no external resource: no
``src``/``href``/``url(...)`` outside the inlined library, whose own strings (SVG namespaces,
map-tile defaults of map traces a report never draws) are never fetched.

Per run: the head mask heatmap (for weight-level runs the share of weights each head keeps),
the method's key figures where :mod:`viz` has a builder for a stored record (A* / greedy / global
search replay, random trials under a budget, gate curves and animation, MCAP episode curves and
final importance, DeepCuts honest size), the metrics (dense / pruned / recovered), cost, the full
configuration and the software versions the run was made with. With two or more runs a
comparison section comes first (metrics side by side, metric changes, masks side by side).

Every piece of user text (run names, dataset descriptions and labels, config strings) is
HTML-escaped; the figure builders escape the names they put in titles and hovers.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from cache.fingerprints import software_versions
from cache.run_format import RunRecord
from cache.run_index import flat_metrics
from cache.run_store import RunStore
from cache.safe_names import safe_filename

__all__ = ["build_report", "load_records", "report_file_name", "write_report"]

METRIC_COLUMNS = ("accuracy", "mcc", "macro_f1", "loss", "n_examples")
METRIC_TITLES = {
    "accuracy": "Accuracy",
    "mcc": "MCC",
    "macro_f1": "Macro-F1",
    "loss": "Loss",
    "n_examples": "Texts",
}
SECTIONS = (("dense", "Unpruned"), ("pruned", "Pruned"), ("recovered", "Pruned + recovered"))
SEARCH_METHODS = ("astar", "local_greedy", "global_heads")
GATE_METHODS = ("autoattention", "l0_gates")
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1300px;
margin:24px auto;padding:0 18px;color:#1a1a1a;line-height:1.45}
h1{margin-bottom:4px}h2{border-bottom:2px solid #1f77b4;padding-bottom:4px;margin-top:42px}
h3{margin-top:26px}.note{color:#555}.meta{color:#444;font-size:.95em}
table{border-collapse:collapse;margin:8px 0 14px}td,th{border:1px solid #d0d0d0;
padding:4px 9px;text-align:left;vertical-align:top}th{background:#f3f5f8}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f6f8fa;padding:10px;overflow-x:auto;white-space:pre-wrap}
.figure{margin:10px 0 18px;overflow-x:auto;max-width:100%}nav ul{columns:2}
.figure.wide{flex:1 1 100%}.figures{display:flex;flex-wrap:wrap;gap:0 28px;align-items:flex-start}
.row{display:flex;flex-wrap:wrap;gap:0 36px;align-items:flex-start}
table.kv td:first-child{white-space:nowrap;color:#333}table.kv{max-width:100%}
details summary{cursor:pointer;color:#1f4e79}.scroll{overflow-x:auto;max-width:100%}
.verdict{font-size:.7em;padding:2px 8px;border-radius:10px;background:#e6e6e6;color:#333;
vertical-align:middle}.verdict.good{background:#d8f0dc;color:#1b5e20}
.verdict.bad{background:#f8d7d7;color:#8b1a1a}
"""


def esc(value: object) -> str:
    """``value`` as text safe inside HTML (quotes escaped too, so attributes are safe)."""
    return html.escape(str(value), quote=True)


def load_records(keys: Sequence[str], store: RunStore | None = None) -> list[RunRecord]:
    """The stored runs of ``keys`` in the given order (repeated keys once).

    Raises:
        ValueError: no keys, or keys that no stored run has (all of them named), or a damaged
            run (:class:`cache.run_format.CorruptRunError` says how to delete it).
    """
    chosen = list(dict.fromkeys(str(key).strip() for key in keys))
    if not chosen:
        raise ValueError("Pass at least one run key; `headscope runs` lists the stored runs.")
    store = store or RunStore()
    missing = [key for key in chosen if not store.exists(key)]
    if missing:
        raise ValueError(
            f"No stored run has the key{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(repr, missing))}; `headscope runs` (or the Runs page) lists the "
            "stored runs and their keys."
        )
    return [store.get(key) for key in chosen]


def report_file_name(keys: Sequence[str], names: Sequence[str] = ()) -> str:
    """The file name to offer for a report: ``headscope-report-<name>-<key>.html`` for one run,
    ``headscope-report-<n>-runs-<digest of the keys>.html`` for several.

    Run names are user text: they go through :func:`cache.safe_names.safe_filename`, so a name
    like ``../../x`` can never make the file leave its folder.

    Raises:
        ValueError: no keys.
    """
    chosen = list(dict.fromkeys(keys))
    if not chosen:
        raise ValueError("Pass at least one run key to name a report.")
    key = safe_filename(chosen[0], fallback="run", max_chars=64)
    if len(chosen) > 1:
        digest = hashlib.sha256(",".join(chosen).encode()).hexdigest()[:10]
        return f"headscope-report-{len(chosen)}-runs-{digest}.html"
    label = safe_filename(names[0], fallback="", max_chars=60) if names else ""
    return f"headscope-report-{label}-{key}.html" if label else f"headscope-report-{key}.html"


# ---------------------------------------------------------------------------------------------
# Figures


class _Figures:
    """Renders figures as HTML fragments and counts them (the library is inlined once)."""

    def __init__(self) -> None:
        self.count = 0

    def html(self, figure: go.Figure, caption: str = "") -> str:
        self.count += 1
        fragment = figure.to_html(
            full_html=False, include_plotlyjs=False, config=_PLOTLY_CONFIG, default_width="100%"
        )
        note = f"<p class='note'>{esc(caption)}</p>" if caption else ""
        # A figure without a fixed width fills the row (plotly sizes it to its container).
        wide = " wide" if figure.layout.width is None else ""
        return f"<div class='figure{wide}'>{fragment}{note}</div>"


FigureList = list[tuple[go.Figure, str]]


def _search_figures(record: RunRecord) -> FigureList:
    from viz.search import build_search_mask, build_search_progress, search_iterations
    from viz.search_figure8 import build_sorted_costs

    if not search_iterations(record.trace):
        return []
    return [
        (build_search_mask(record.trace), "The head grid after the last iteration."),
        (
            build_sorted_costs(record.trace),
            "Costs (drop from the unpruned model) of the pruned and eliminated heads, sorted.",
        ),
        (
            build_search_progress(record.trace),
            "Metric, budget used and heads searched per iteration.",
        ),
    ]


def _random_budget_figures(record: RunRecord) -> FigureList:
    from viz.search import build_random_vs_search

    return [(build_random_vs_search(record.trace, {}), "")]


def _gate_figures(record: RunRecord) -> FigureList:
    from viz.gates import build_gate_animation, build_gate_curves, parse_gate_trace

    history = parse_gate_trace(record.trace)
    return [
        (build_gate_curves(history), "Open gates and the validation metric while the gates train."),
        (build_gate_animation(history), "Press play to watch the gates open and close."),
    ]


def _mcap_figures(record: RunRecord) -> FigureList:
    """The controller's training curves (the mask heatmap already shows the final importance)."""
    from viz.mcap import build_episode_curves

    return [(build_episode_curves(record.trace), "The controller's losses per episode.")]


def _deepcuts_figures(record: RunRecord) -> FigureList:
    from viz.deepcuts import CostRow, build_cost_table

    cost = record.metrics.get("cost", {})
    if not all(k in cost for k in ("params_nonzero", "dense_bytes", "sparse_bytes")):
        return []
    row = CostRow(
        name=record.name,
        params_nonzero=int(cost["params_nonzero"]),
        dense_bytes=int(cost["dense_bytes"]),
        sparse_bytes=int(cost["sparse_bytes"]),
        params_total=int(cost["params_dense"]) if cost.get("params_dense") else None,
    )
    return [(build_cost_table([row], title="Honest size"), "")]


METHOD_FIGURES: dict[str, Callable[[RunRecord], FigureList]] = {
    **{name: _search_figures for name in SEARCH_METHODS},
    "random_budget": _random_budget_figures,
    **{name: _gate_figures for name in GATE_METHODS},
    "mcap": _mcap_figures,
    "deepcuts": _deepcuts_figures,
}


def _is_weight_level(record: RunRecord) -> bool:
    return record.info.get("granularity") == "weight" or "params_nonzero" in record.metrics.get(
        "cost", {}
    )


def _mask_figure(record: RunRecord) -> go.Figure:
    """The head mask heatmap; for weight-level runs the kept share of each head's weights."""
    from viz.deepcuts import build_density_heatmap
    from viz.heads import build_mask_heatmap

    scores = None if record.scores is None else record.scores.numpy().astype(np.float64)
    if _is_weight_level(record) and scores is not None:
        try:
            return build_density_heatmap(scores, title=f"Weight density per head · {record.name}")
        except ValueError:
            pass  # scores that are not shares: the plain mask heatmap below
    return build_mask_heatmap(record.mask.numpy().astype(bool), scores, title=record.name)


def _figures_html(record: RunRecord, figures: _Figures) -> str:
    parts = [figures.html(_mask_figure(record))]
    builder = METHOD_FIGURES.get(record.method)
    if builder is not None:
        try:
            made = builder(record)
        except ValueError as error:
            parts.append(f"<p class='note'>The method's figures cannot be drawn: {esc(error)}</p>")
        else:
            parts += [figures.html(figure, caption) for figure, caption in made]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Tables


def _number(value: Any, name: str = "") -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else esc(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if name.endswith(("sparsity", "reduction", "fraction")):
            return f"{value:.1%}"
        if abs(value) < 5e-5:
            value = 0.0  # no "-0.0000"
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:,.0f}"
    return esc(value)


def _table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], *, names: Sequence[str] = ()
) -> str:
    """An HTML table; numbers right-aligned and formatted, everything else escaped."""
    head = "".join(f"<th>{esc(title)}</th>" for title in header)
    body = []
    for row in rows:
        cells = []
        for index, value in enumerate(row):
            name = names[index] if index < len(names) else ""
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            css = " class='num'" if numeric else ""
            cells.append(f"<td{css}>{_number(value, name) if numeric else _cell(value)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    rows_html = "".join(body)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>"
    return f"<div class='scroll'>{table}</div>"


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, Mapping | list | tuple):
        return f"<code>{esc(json.dumps(value, sort_keys=True, default=str))}</code>"
    return esc(value)


def _metrics_html(record: RunRecord) -> str:
    sections = [(name, title) for name, title in SECTIONS if record.metrics.get(name)]
    if not sections:
        return "<p class='note'>This run stored no metrics.</p>"
    columns = [c for c in METRIC_COLUMNS if any(c in record.metrics[s] for s, _ in sections)]
    dense = record.metrics.get("dense", {})
    rows: list[list[Any]] = []
    for section, title in sections:
        values = record.metrics[section]
        rows.append([title, *(values.get(c) for c in columns)])
        if section != "dense" and dense:
            rows.append(
                [
                    f"{title} − unpruned",
                    *(
                        None
                        if c == "n_examples" or c not in values or c not in dense
                        else float(values[c]) - float(dense[c])
                        for c in columns
                    ),
                ]
            )
    settings = record.info.get("settings", {})
    split = settings.get("eval_split", "test")
    note = f"Evaluated on the {esc(split)} split"
    if settings.get("eval_examples"):
        note += f" ({int(settings['eval_examples']):,} texts)"
    return _table(["", *(METRIC_TITLES.get(c, c) for c in columns)], rows) + (
        f"<p class='note'>{note}.</p>"
    )


_COST_LABELS = {
    "head_sparsity": "Head sparsity",
    "params_dense": "Parameters, unpruned",
    "params_pruned": "Parameters, pruned",
    "params_nonzero": "Non-zero parameters",
    "params_reduction": "Parameters removed",
    "flops_dense": "FLOPs / example, unpruned",
    "flops_pruned": "FLOPs / example, pruned",
    "flops_reduction": "FLOPs removed",
    "flops_seq_len": "FLOPs counted at tokens",
    "weight_sparsity": "Weight sparsity (zeros)",
    "dense_bytes": "Size, dense",
    "sparse_bytes": "Size, sparse CSR",
    "method_seconds": "Method time",
    "total_seconds": "Total time",
}


def _cost_value(name: str, value: Any) -> str:
    """One cost figure as text: shares in %, FLOPs in G, bytes in MB, times in s."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return _cell(value)
    if name.endswith(("sparsity", "reduction")):
        return f"{value:.1%}"
    if name.startswith("flops_") and name != "flops_seq_len":
        return f"{value / 1e9:.3g} G"
    if name.endswith("_bytes"):
        return f"{value / 1e6:.2f} MB"
    if name.endswith("_seconds"):
        return f"{value:.1f} s"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _cost_html(record: RunRecord) -> str:
    cost = dict(record.metrics.get("cost", {}))
    flat = flat_metrics(record.metrics)
    for derived in ("params_reduction", "flops_reduction", "weight_sparsity"):
        if derived in flat:
            cost[derived] = flat[derived]
    for name in ("method_seconds", "total_seconds"):
        if isinstance(record.info.get(name), int | float):
            cost[name] = float(record.info[name])
    if not cost:
        return "<p class='note'>This run stored no cost figures.</p>"
    rows = "".join(
        f"<tr><td>{esc(_COST_LABELS.get(name, name.replace('_', ' ')))}</td>"
        f"<td class='num'>{_cost_value(name, value)}</td></tr>"
        for name, value in cost.items()
    )
    return f"<table><tbody>{rows}</tbody></table>"


def _setting(value: Any) -> str:
    """A configuration value exactly as stored (JSON for non-strings: 5e-05 stays 5e-05)."""
    if isinstance(value, str):
        return esc(value)
    return f"<code>{esc(json.dumps(value, sort_keys=True, default=str))}</code>"


def _config_html(record: RunRecord) -> str:
    rows: list[tuple[str, Any]] = [("Method", record.method), ("Seed", record.seed)]
    rows += [(f"config · {name}", value) for name, value in sorted(record.config.items())]
    rows += [
        (f"setting · {name}", value)
        for name, value in sorted(record.info.get("settings", {}).items())
    ]
    rows += [
        ("Model", record.model.get("label", "")),
        ("Model fingerprint", record.model.get("fingerprint", "")),
        ("Model spec", record.model.get("spec", {})),
        ("Data", record.data.get("description", "")),
        ("Data fingerprint", record.data.get("fingerprint", "")),
        ("Data spec", record.data.get("spec", {})),
        ("Class names", record.data.get("label_names", [])),
        ("Device", record.info.get("device", "")),
    ]
    method_info = record.info.get("method_info", {})
    rows += [(f"method result · {name}", value) for name, value in sorted(method_info.items())]
    full = {
        **record.json_fields(),
        "trace": f"{len(record.trace)} events",
        "mask": record.mask.int().tolist(),
    }
    document = json.dumps(full, indent=1, sort_keys=True, default=str)
    table = "".join(
        f"<tr><td>{esc(name)}</td><td>{_setting(value)}</td></tr>" for name, value in rows
    )
    return (
        f"<table class='kv'><tbody>{table}</tbody></table>"
        + "<details><summary>The full run record (JSON, trace summarised)</summary>"
        + f"<pre>{esc(document)}</pre></details>"
    )


def _versions_html(record: RunRecord) -> str:
    versions = record.info.get("versions", {})
    if not isinstance(versions, Mapping) or not versions:
        return "<p class='note'>This run stored no software versions.</p>"
    return _table(["Software", "Version"], [[k, v] for k, v in sorted(versions.items())])


def _run_html(record: RunRecord, figures: _Figures) -> str:
    title = record.info.get("method_title") or record.method
    created = record.created[:19].replace("T", " ")
    meta = (
        f"{esc(title)} · key <code>{esc(record.key)}</code> · stored {esc(created)} UTC · "
        f"{record.kept} of {record.mask.numel()} heads kept ({record.head_sparsity:.1%} removed)"
        f"<br>{esc(record.model.get('label', ''))} · {esc(record.data.get('description', ''))}"
    )
    return "\n".join(
        [
            f"<section id='run-{esc(record.key)}'><h2>{esc(record.name)}</h2>",
            f"<p class='meta'>{meta}</p>",
            f"<div class='figures'>{_figures_html(record, figures)}</div>",
            "<div class='row'>",
            f"<div><h3>Metrics</h3>{_metrics_html(record)}</div>",
            f"<div><h3>Cost</h3>{_cost_html(record)}</div>",
            "</div>",
            "<h3>Configuration</h3>",
            _config_html(record),
            "<h3>Software versions of the run</h3>",
            _versions_html(record),
            "</section>",
        ]
    )


# ---------------------------------------------------------------------------------------------
# Comparison


def _label(record: RunRecord) -> str:
    return f"{record.name} · {record.key[:8]}"


def _final(record: RunRecord) -> Mapping[str, Any]:
    return record.metrics.get("recovered") or record.metrics.get("pruned") or {}


def _pareto_figure(records: Sequence[RunRecord]) -> go.Figure | None:
    """Accuracy against head sparsity of the head-level runs, with their Pareto front."""
    from viz.pareto import ParetoPoint, build_pareto_figure

    points = []
    for record in records:
        if _is_weight_level(record):
            continue
        final = _final(record)
        points.append(
            ParetoPoint(
                label=record.name,
                method=record.method,
                key=record.key,
                head_sparsity=record.head_sparsity,
                accuracy=final.get("accuracy"),
                mcc=final.get("mcc"),
                recovered="recovered" in record.metrics,
            )
        )
    if len(points) < 2:
        return None
    # The unpruned line only when every run was measured against the same unpruned accuracy.
    denses = {r.metrics.get("dense", {}).get("accuracy") for r in records}
    dense = denses.pop() if len(denses) == 1 else None
    return build_pareto_figure(points, title="Accuracy against head sparsity", dense=dense)


def _comparison_html(records: Sequence[RunRecord], figures: _Figures) -> str:
    from viz.compare import build_mask_comparison
    from viz.metrics import build_metric_deltas

    header = ["Run", "Method", "Head sparsity", "Weight sparsity", "Accuracy (unpruned)"]
    header += ["Accuracy", "Δ accuracy", "MCC", "Δ MCC", "Macro-F1", "Loss"]
    header += ["Params removed", "FLOPs removed", "Recovered"]
    names = ["", "", "head_sparsity", "weight_sparsity", "", "", "", "", "", "", ""]
    names += ["params_reduction", "flops_reduction", ""]
    rows = []
    for record in records:
        flat = flat_metrics(record.metrics)
        recovered = "recovered" in record.metrics
        value = "recovered_{}" if recovered else "{}"
        delta = "recovered_delta_{}" if recovered else "delta_{}"
        rows.append(
            [
                record.name,
                record.method,
                record.head_sparsity,
                flat.get("weight_sparsity"),
                flat.get("dense_accuracy"),
                flat.get(value.format("accuracy")),
                flat.get(delta.format("accuracy")),
                flat.get(value.format("mcc")),
                flat.get(delta.format("mcc")),
                flat.get(value.format("macro_f1")),
                flat.get(value.format("loss")),
                flat.get("params_reduction"),
                flat.get("flops_reduction"),
                "yes" if recovered else "no",
            ]
        )
    # Columns no run has (weight sparsity of head-level runs, ...) are left out.
    used = [i for i in range(len(header)) if any(row[i] is not None for row in rows)]
    table = _table(
        [header[i] for i in used],
        [[row[i] for i in used] for row in rows],
        names=[names[i] for i in used],
    )
    parts = ["<section id='comparison'><h2>Comparison</h2>", table]
    parts.append(
        "<p class='note'>Accuracy, MCC, macro-F1 and loss are the recovered model's where the run "
        "fine-tuned after pruning, else the pruned model's; Δ = against the unpruned model.</p>"
    )
    sources = {(r.model.get("fingerprint"), r.data.get("fingerprint")) for r in records}
    if len(sources) > 1:
        parts.append(
            "<p class='note'><b>These runs come from different classifiers or datasets</b>: "
            "their numbers are not measured on the same model and texts.</p>"
        )
    pareto = _pareto_figure(records)
    if pareto is not None:
        parts.append(figures.html(pareto))
    labels = [_label(r) for r in records]
    finals = [_final(r) for r in records]
    shared = [m for m in ("accuracy", "mcc", "macro_f1", "loss") if all(m in f for f in finals)]
    if shared:
        parts.append(figures.html(build_metric_deltas(finals, labels, metrics=shared)))
    head_level = [r for r in records if not _is_weight_level(r)]
    if len(head_level) >= 2 and len({tuple(r.mask.shape) for r in head_level}) == 1:
        same_method = len({r.method for r in head_level}) == 1
        parts.append(
            figures.html(
                build_mask_comparison(
                    [r.mask.numpy().astype(bool) for r in head_level],
                    [_label(r) for r in head_level],
                    [None if r.scores is None else r.scores.numpy() for r in head_level],
                    shared_range=same_method,
                ),
                "" if same_method else "Each run's scores are coloured on their own range.",
            )
        )
    parts.append("</section>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# The document


_VERDICT_CLASS = {"holds": "good", "does not hold": "bad"}


def claims_html(claims: Sequence[Mapping[str, Any]], figures: _Figures) -> str:
    """The "Paper claims" section: one block per claim of
    :func:`pruning.claims_report.live_claims` (verdict, statement, source, protocol, notes, its
    figure and the run keys it judged)."""
    from viz.claims import build_claim_figure

    parts = ["<section id='claims'><h2>Paper claims</h2>"]
    for claim in claims:
        verdict = claim.get("verdict") or "not measured"
        notes = "".join(f"<li>{esc(n)}</li>" for n in claim.get("fewer_than_paper") or [])
        keys = ", ".join(f"<code>{esc(k)}</code>" for k in claim.get("run_keys") or [])
        parts += [
            f"<h3>{esc(claim.get('title', claim.get('id', 'claim')))} "
            f"<span class='verdict {_VERDICT_CLASS.get(verdict, 'open')}'>{esc(verdict)}"
            "</span></h3>",
            f"<p><b>The paper:</b> {esc(claim.get('claim', ''))}</p>",
            f"<p class='note'>Source: {esc(claim.get('reference', ''))}</p>",
            f"<p><b>Protocol:</b> {esc(claim.get('protocol', ''))}</p>",
            f"<p><b>Our numbers:</b> {esc(claim.get('statement', ''))}</p>",
            f"<p class='note'>Rule: {esc(claim.get('rule', ''))}</p>",
        ]
        if notes:
            parts.append(f"<p>Smaller than the paper:</p><ul>{notes}</ul>")
        parts.append(figures.html(build_claim_figure(claim)))
        if keys:
            parts.append(f"<p class='note'>Runs judged: {keys}</p>")
    parts.append("</section>")
    return "\n".join(parts)


def build_report(
    keys: Sequence[str],
    store: RunStore | None = None,
    *,
    title: str = "HeadScope report",
    claims: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """A self-contained HTML document of the stored runs ``keys`` (in that order).

    Args:
        keys: run keys (16 hex digits, as the Runs page and ``headscope runs`` show them);
            repeated keys appear once.
        store: the run store (default: ``$HEADSCOPE_HOME/runs``).
        title: the document's title and heading (escaped).
        claims: the Paper claims page's claims (:func:`pruning.claims_report.live_claims`): a
            "Paper claims" section comes first; ``keys`` may then be empty.

    Returns:
        The HTML text: plotly.js inlined once, one interactive figure fragment per figure, no
        external URL outside the inlined library.

    Raises:
        ValueError: no keys, unknown keys (named in the message) or a damaged run.
    """
    from plotly.offline import get_plotlyjs

    records = load_records(keys, store) if keys or not claims else []
    figures = _Figures()
    body = [f"<h1>{esc(title)}</h1>"]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = software_versions()
    what = f"{len(records)} run{'s' if len(records) != 1 else ''}"
    if claims:
        what = f"{len(claims)} paper claim{'s' if len(claims) != 1 else ''}, {what}"
    body.append(
        f"<p class='meta'>{what} · made {now} with "
        f"HeadScope {esc(versions.get('headscope', 'unknown'))}. Figures are interactive: hover "
        "for values, drag to zoom, double-click to reset.</p>"
    )
    if len(records) > 1:
        links = "".join(
            f"<li><a href='#run-{esc(r.key)}'>{esc(r.name)}</a> "
            f"<span class='note'>({esc(r.method)}, <code>{esc(r.key)}</code>)</span></li>"
            for r in records
        )
        body.append(f"<nav><ul><li><a href='#comparison'>Comparison</a></li>{links}</ul></nav>")
        body.append(_comparison_html(records, figures))
    if claims:
        body.append(claims_html(claims, figures))
    body += [_run_html(record, figures) for record in records]
    import plotly

    generator = {**versions, "plotly": plotly.__version__}
    body.append("<h2>Report made with</h2>")
    body.append(_table(["Software", "Version"], [[k, v] for k, v in sorted(generator.items())]))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<meta name='generator' content='HeadScope'><title>{esc(title)}</title>"
        f"<style>{_STYLE}</style>\n"
        f"<script type='text/javascript'>{get_plotlyjs()}</script>\n</head><body>\n"
        + "\n".join(body)
        + f"\n<!-- figures: {figures.count} -->\n</body></html>\n"
    )


def write_report(
    keys: Sequence[str],
    path: str | os.PathLike[str],
    store: RunStore | None = None,
    *,
    title: str = "HeadScope report",
) -> Path:
    """Write :func:`build_report` to ``path`` atomically and return the path.

    The report is written to a temporary file in the target folder and renamed into place, so
    ``path`` holds the old file or the complete new one, never a part. Missing parent folders
    are created.

    Raises:
        ValueError: see :func:`build_report` (nothing is written then).
        OSError: the folder cannot be written.
    """
    target = Path(path).expanduser()
    document = build_report(keys, store, title=title)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(document)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it owner-only; a report is for sharing
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
