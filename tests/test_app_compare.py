"""App tests of the Compare page: no classifier, no runs, runs on Pareto plots with the IoU
matrix and the masked-vs-removed badges, bad selections, measured latency."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from streamlit.testing.v1 import AppTest

from cache.model_store import ModelStore
from cache.run_format import RunRecord
from cache.run_store import RunStore
from conftest import prepared_tiny_setup

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGE = "pages/compare.py"
# Until app.py lists the page, the tests route to it through a one-page navigation that marks
# the run as routed by the app, as app.py does.
ENTRY = f"""
import sys

import streamlit as st

if {str(ROOT)!r} not in sys.path:  # app.py's folder, which streamlit puts on the path for app.py
    sys.path.insert(0, {str(ROOT)!r})
from pages.support.common import routed_by_app

page = st.navigation([st.Page({str(ROOT / PAGE)!r}, title="Compare")])
with routed_by_app():
    page.run()
"""
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("server_navigation_mode", "no_autoprepare")]


def _app(specs: tuple[Any, Any] | None = None) -> AppTest:
    if PAGE in Path(APP).read_text(encoding="utf-8"):
        app = AppTest.from_file(APP, default_timeout=120)
    else:
        app = AppTest.from_string(ENTRY, default_timeout=120)
    if specs is not None:
        app.session_state["model_spec"], app.session_state["data_spec"] = specs
    app.run()
    if PAGE in Path(APP).read_text(encoding="utf-8"):
        app = app.switch_page(PAGE).run()
    return app


def _specs(app: AppTest) -> list[str]:
    """Each chart's figure as JSON text with plotly's \\u003c escapes decoded."""
    specs = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    return [json.dumps(spec, ensure_ascii=False) for spec in specs]


def _table(app: AppTest) -> Any:
    return next(d.value for d in app.dataframe if "masked vs removed" in d.value.columns)


@pytest.fixture(scope="module")
def stored_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A prepared tiny BERT with two head runs, a recovered run and a weight-level run."""
    from pruning.pipeline import RunRequest, run_pruning

    home = tmp_path_factory.mktemp("compare_app_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(home))
    model, data = prepared_tiny_setup(home / "setup")
    common: dict[str, Any] = {"model": model, "data": data, "score_examples": 8}
    common["eval_examples"] = 16
    common["device"] = "cpu"
    requests = [
        RunRequest(method="random", config={"sparsity": 0.5}, name="<b>half</b>", **common),
        RunRequest(method="random", config={"sparsity": 0.25}, seed=1, name="quarter", **common),
        RunRequest(
            method="random", config={"sparsity": 0.25}, recovery_steps=2, name="tuned", **common
        ),
        RunRequest(method="unstructured", config={"sparsity": 0.5}, name="weights", **common),
    ]
    runs = [run_pruning(request) for request in requests]
    yield {"home": home, "specs": (model, data), "runs": runs}
    patch.undo()


@pytest.fixture
def home(stored_runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("HEADSCOPE_HOME", str(stored_runs["home"]))
    return stored_runs


def test_without_a_prepared_classifier_the_page_warns() -> None:
    app = _app()
    assert not app.exception
    assert "Compare" in [t.value for t in app.title]
    assert any("No classifier is prepared" in w.value for w in app.warning)
    assert not app.get("plotly_chart") and not app.multiselect


def test_without_runs_the_page_says_how_to_make_some(tmp_path: Path) -> None:
    app = _app(prepared_tiny_setup(tmp_path / "setup"))
    assert not app.exception and not app.error
    assert any("No runs of this classifier are stored yet" in i.value for i in app.info)
    assert not app.get("plotly_chart")


def _until(app: AppTest, done: Any, timeout: float = 90) -> AppTest:
    """Rerun the page until ``done(app)`` holds (a background job finished) or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done(app):
        time.sleep(0.5)
        app.run()
    return app


def test_runs_show_pareto_plots_iou_and_badges(home: dict[str, Any]) -> None:
    app = _app(home["specs"])
    assert not app.exception and not app.error, [e.value for e in app.error]
    # The first visit finds no verdicts: the runs' checks run in the background (⏳ until then).
    pending = _table(app)["masked vs removed"].tolist()
    assert pending.count("⏳ checking") == 3 and "➖ n/a" in pending
    app = _until(app, lambda a: "⏳ checking" not in _table(a)["masked vs removed"].tolist())
    assert not app.exception and not app.error
    specs = _specs(app)
    # Head sparsity, speed-up (FLOPs-predicted), weight-level runs, IoU matrix.
    assert len(specs) == 4
    assert "heads removed" in specs[0] and "FLOPs-predicted" in specs[1]
    assert "weights removed (weight-level runs)" in specs[2]
    assert "IoU of removed heads" in specs[3]
    assert all("<b>half</b>" not in spec for spec in specs)
    assert "&lt;b&gt;half&lt;/b&gt;" in specs[0] and "&lt;b&gt;half&lt;/b&gt;" in specs[3]
    table = _table(app)
    by_name = {row["run"].split(" · ")[0]: row for row in table.to_dict("records")}
    assert set(by_name) == {"<b>half</b>", "quarter", "tuned", "weights"}
    assert by_name["<b>half</b>"]["masked vs removed"].startswith("✅ match")
    assert by_name["quarter"]["masked vs removed"].startswith("✅ match")
    assert by_name["weights"]["masked vs removed"].startswith("✅ match")
    assert by_name["tuned"]["masked vs removed"] == "➖ n/a"
    assert "keeps its own fine-tuned model" in by_name["tuned"]["check details"]
    assert by_name["tuned"]["recovered"] and not by_name["quarter"]["recovered"]
    half = home["runs"][0]
    cost = half.metrics["cost"]
    assert by_name["<b>half</b>"]["predicted ×"] == pytest.approx(
        cost["flops_dense"] / cost["flops_pruned"]
    )
    assert by_name["weights"]["weights removed"] == pytest.approx(0.5, abs=0.01)
    folder = Path(home["home"]) / "consistency"
    assert {p.stem for p in folder.glob("*.json")} == {r.key for r in home["runs"]}
    assert any("3 ✅ match · 0 ❌ mismatch · 1 ➖" in c.value for c in app.caption)

    # Cached verdicts: a rerun reads them instead of checking again.
    for path in folder.glob("*.json"):
        document = json.loads(path.read_text())
        for entry in document["entries"].values():
            entry["result"]["reason"] = "from the cache"
        path.write_text(json.dumps(document))
    app.radio(key="compare-metric").set_value("mcc").run()
    assert not app.exception
    assert "MCC" in _specs(app)[0]
    assert all(text == "from the cache" for text in _table(app)["check details"])


def test_bad_selections_say_what_to_do(home: dict[str, Any]) -> None:
    app = _app(home["specs"])
    runs = next(m for m in app.multiselect if m.label.startswith("Runs"))
    weights = next(r.key for r in home["runs"] if r.method == "unstructured")
    runs.set_value([weights]).run()
    assert not app.exception and not app.error
    assert any("at least two head-level runs" in i.value for i in app.info)
    assert len(_specs(app)) == 1  # the weight-level plot only
    runs = next(m for m in app.multiselect if m.label.startswith("Runs"))
    runs.set_value([]).run()
    assert not app.exception
    assert any("Select at least one run" in i.value for i in app.info)
    assert not app.get("plotly_chart")
    methods = next(m for m in app.multiselect if m.label == "Methods")
    methods.set_value([]).run()
    assert not app.exception
    assert any("Select at least one run" in i.value for i in app.info)


def test_runs_of_other_classifiers_are_not_mixed(home: dict[str, Any]) -> None:
    record = home["runs"][1]
    other = RunRecord(
        key="f" * 16,
        method=record.method,
        config=record.config,
        seed=record.seed,
        model={**record.model, "prepared_key": "e" * 16, "fingerprint": f"prepared:{'e' * 16}"},
        data=record.data,
        metrics=record.metrics,
        trace=[],
        info={"name": "elsewhere"},
        mask=torch.ones_like(record.mask),
    )
    RunStore().save(other)
    try:
        app = _app(home["specs"])
        assert not app.exception
        assert any("1 stored run(s) of other classifiers" in c.value for c in app.caption)
        assert all("elsewhere" not in row for row in _table(app)["run"])
    finally:
        RunStore().delete(other.key)


def test_measured_latency_fills_the_table_and_the_speed_plot(home: dict[str, Any]) -> None:
    app = _app(home["specs"])
    for label, value in (("Batch size", 1), ("Sequence length", 8), ("Rounds", 3)):
        next(n for n in app.number_input if n.label == label).set_value(value)
    next(b for b in app.button if b.label == "Measure latency of the selected runs").click().run()
    app = _until(app, lambda a: not _table(a)["measured ×"].isna().any())
    assert not app.exception and not app.error
    table = _table(app)
    assert table["measured ×"].notna().all() and (table["latency ms"] > 0).all()
    assert app.radio(key="compare-speed").value == "measured"
    assert "measured" in _specs(app)[1]
    prepared = ModelStore().find(*home["specs"])[0]
    assert prepared.key == home["runs"][0].model["prepared_key"]
    assert list((Path(home["home"]) / "latency").glob("*.json"))


def test_a_removal_that_changes_the_logits_shows_a_mismatch(
    home: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pruning.heads as heads

    original = heads.remove_heads

    def shifted(model: torch.nn.Module, mask: torch.Tensor) -> torch.nn.Module:
        removed = original(model, mask)
        with torch.no_grad():
            classifier: Any = removed.classifier
            classifier.bias += 1.0  # what a removal that broke a layer would do
        return removed

    monkeypatch.setattr(heads, "remove_heads", shifted)
    record = home["runs"][1]
    broken = RunRecord(
        key="e" * 16,
        method=record.method,
        config=record.config,
        seed=7,
        model=record.model,
        data=record.data,
        metrics=record.metrics,
        trace=[],
        info={"name": "broken", "granularity": "head"},
        mask=record.mask,
    )
    RunStore().save(broken)
    try:
        app = _app(home["specs"])
        app = _until(app, lambda a: "⏳ checking" not in _table(a)["masked vs removed"].tolist())
        assert not app.exception
        rows = {row["run"].split(" · ")[0]: row for row in _table(app).to_dict("records")}
        assert rows["broken"]["masked vs removed"].startswith("❌ mismatch")
        assert "differ by up to" in rows["broken"]["check details"]
        assert any("does not reproduce its gated model" in e.value for e in app.error)
    finally:
        RunStore().delete(broken.key)


def test_runs_evaluated_on_other_texts_are_flagged(home: dict[str, Any]) -> None:
    record = home["runs"][0]
    metrics = json.loads(json.dumps(record.metrics))
    metrics["dense"] |= {"n_examples": 99, "accuracy": 0.123}
    other = RunRecord(
        key="d" * 16,
        method=record.method,
        config=record.config,
        seed=11,
        model=record.model,
        data=record.data,
        metrics=metrics,
        trace=[],
        info={"name": "other texts", "granularity": "head"},
        mask=torch.ones_like(record.mask),
    )
    RunStore().save(other)
    try:
        app = _app(home["specs"])
        assert not app.exception
        texts = int(record.metrics["dense"]["n_examples"])
        flagged = f"evaluated on different texts ({texts} test texts: 4 run(s); 99 test texts: 1"
        assert any(flagged in c.value for c in app.caption)
        dense = home["runs"][0].metrics["dense"]["accuracy"]
        assert f"dense ({100 * dense:.1f}%)" in _specs(app)[0]
    finally:
        RunStore().delete(other.key)
