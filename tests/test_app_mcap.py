"""App tests of the MCAP page: no classifier, the form, a stored run replayed, Table I."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from streamlit.testing.v1 import AppTest
from test_viz_mcap import mcap_trace

from cache.model_store import ModelStore
from cache.run_format import RunRecord
from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from pruning.methods import base
from pruning.methods.base import load_builtin_methods

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/mcap.py"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("server_navigation_mode", "no_autoprepare")]


@pytest.fixture
def mcap_installed() -> None:
    load_builtin_methods()
    pytest.importorskip("pruning.methods.mcap")  # registers "mcap" when __init__ does not yet


@pytest.fixture
def no_mcap_method(monkeypatch: pytest.MonkeyPatch) -> None:
    load_builtin_methods()
    monkeypatch.delitem(base.REGISTRY, "mcap", raising=False)


def _open_page(tmp_path: Path | None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    if tmp_path is not None:
        model, data = prepared_tiny_setup(tmp_path / "setup")
        app.session_state["model_spec"] = model
        app.session_state["data_spec"] = data
    app.run()
    return app.switch_page(PAGE).run()


def _specs(app: AppTest) -> list[str]:
    return [chart.proto.spec for chart in app.get("plotly_chart")]


def test_without_a_prepared_classifier_the_page_warns_and_shows_no_form() -> None:
    app = _open_page(None)
    assert not app.exception
    assert "MCAP" in [t.value for t in app.title]
    assert any("No classifier is prepared" in w.value for w in app.warning)
    assert not app.button and not app.radio


def test_settings_show_and_recovery_steps_are_refused_before_fine_tuning(
    tmp_path: Path, mcap_installed: None
) -> None:
    app = _open_page(tmp_path)
    assert not app.exception and not app.error
    assert app.radio(key="mcap-protocol").value == "before"
    labels = [n.label for n in app.number_input]
    assert {"Episode size (k)", "Seed", "Recovery fine-tuning steps"} <= set(labels)
    buttons = [b.label for b in app.button]
    assert "Run MCAP" in buttons and "Run the Table I baselines" in buttons
    assert any("No MCAP run of this classifier" in i.value for i in app.info)
    assert any("No run pruned before fine-tuning" in i.value for i in app.info)
    next(n for n in app.number_input if n.label == "Recovery fine-tuning steps").set_value(10)
    next(b for b in app.button if b.label == "Run MCAP").click().run()
    assert not app.exception
    assert any("Set Recovery fine-tuning steps to 0" in e.value for e in app.error)
    assert not RunStore().list()[0]


def test_the_baselines_button_queues_the_six_table_one_baselines(
    tmp_path: Path, mcap_installed: None
) -> None:
    pytest.importorskip("pruning.methods.unstructured")
    from pages.support.common import executor

    app = _open_page(tmp_path)
    next(b for b in app.button if b.label == "Run the Table I baselines").click().run()
    assert not app.exception and not app.error and not app.warning
    jobs = [job for job in executor().jobs() if not job.snapshot().finished]
    try:
        titles = sorted(job.snapshot().meta["title"] for job in jobs)
        assert titles == sorted(
            [
                "Random heads · 20% heads",
                "Attention entropy · 20% heads",
                "[SEP] attention · 20% heads",
                "IMP · 20% weights",
                "L1 unstructured · 20% weights",
                "Random weights · 20% weights",
            ]
        )
        shown = [p.text for p in app.get("progress")] + [i.value for i in app.info]
        assert sum(any(t in text for text in shown) for t in titles) == 6
    finally:
        for job in jobs:  # nothing of them may run on into the next test's store
            job.cancel()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(j.snapshot().finished for j in jobs):
            time.sleep(0.2)


def _record(prepared_key: str, method: str, name: str, **extra: Any) -> RunRecord:
    config = extra.pop("config", {"sparsity": 0.25})
    granularity = extra.pop("granularity", "head")
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[2, 1:] = False
    cost = {"params_dense": 4_000_000, "params_pruned": 3_500_000, "head_sparsity": 0.25}
    cost |= {"flops_dense": 9_000_000_000, "flops_pruned": 8_000_000_000}
    if granularity == "weight":
        mask[:] = True
        cost |= {"params_pruned": 4_000_000, "params_nonzero": 3_000_000, "head_sparsity": 0.0}
    fingerprint = f"prepared:{prepared_key}"
    key = RunStore.key_for(
        model_fingerprint=fingerprint,
        data_fingerprint="data-a",
        method=method,
        config=config,
        seed=0,
    )
    return RunRecord(
        key=key,
        method=method,
        config=config,
        seed=0,
        model={"spec": {"source": "local"}, "fingerprint": fingerprint, "label": "tiny"},
        data={"spec": {"name": "csv"}, "fingerprint": "data-a", "label_names": ["neg", "pos"]},
        metrics={
            "dense": {"accuracy": 0.8, "mcc": 0.6, "loss": 0.5},
            "pruned": {"accuracy": 0.75, "mcc": 0.5, "loss": 0.55},
            "cost": cost,
        },
        trace=extra.pop("trace", []),
        info={
            "name": name,
            "granularity": granularity,
            "settings": {"eval_split": "test", "protocol": "before"},
        },
        mask=mask,
    )


def test_a_stored_mcap_run_replays_and_fills_table_one(
    tmp_path: Path, no_mcap_method: None
) -> None:
    app = AppTest.from_file(APP, default_timeout=120)
    model, data = prepared_tiny_setup(tmp_path / "setup")
    prepared = ModelStore().find(model, data)[0]
    store = RunStore()
    store.save(_record(prepared.key, "mcap", "MCAP · 25%", trace=mcap_trace()))
    weight = {"sparsity": 0.25, "criterion": "l1"}
    store.save(_record(prepared.key, "unstructured", "IMP", config=weight, granularity="weight"))
    app.session_state["model_spec"] = model
    app.session_state["data_spec"] = data
    app.run()
    app = app.switch_page(PAGE).run()
    assert not app.exception
    # Without the method the form is replaced by a message; stored runs still replay.
    assert [e.value for e in app.error] == [
        "The MCAP method is not installed (no method is registered as 'mcap'). Update "
        "HeadScope; stored runs still replay below."
    ]
    assert not [b for b in app.button if b.label == "Run MCAP"]
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Heads removed"] == "3 / 12"
    assert metrics["Episodes"] == "25" and metrics["Controller updates"] == "3"
    assert metrics["Test MCC"] == "0.5000"
    before = _specs(app)
    # Curves, importance over episodes, keep map, final importance, the pattern CNN's confusion
    # matrix, head patterns and examples, Table I chart.
    assert len(before) == 8
    assert "MCAP controller training" in before[0] and "episode 25 of 25" in before[2]
    assert "9 of 12 heads kept" in before[3]
    assert "held-out confusion matrix" in before[4] and "accuracy 92.0% on 50" in before[4]
    assert "most frequent pattern" in before[5] and "generated examples" in before[6]
    assert metrics["Pattern CNN accuracy (held out)"] == "92.0%"
    assert metrics["… on model's maps (unseen heads)"] == "85.0%"
    table = app.dataframe[0].value
    assert table["Method"].tolist() == ["Unpruned (fine-tuned)", "MCAP · 25%", "IMP"]
    assert table["Weights removed %"].tolist() == [0.0, 12.5, 25.0]

    slider = next(s for s in app.select_slider if s.label == "Episode")
    assert list(slider.options) == [str(e) for e in range(25)]
    slider.set_value(4).run()
    assert not app.exception
    moved = _specs(app)
    assert "episode 5 of 25" in moved[2] and moved[1] != before[1]
    app.radio(key="mcap-value").set_value("cnn_score").run()
    assert not app.exception
    assert "CNN score" in _specs(app)[1]

    next(s for s in app.selectbox if s.label == "Target share").set_value(None).run()
    assert not app.exception and len(app.dataframe[0].value) == 3
    # No stored model behind the fake runs: the latency job says so instead of failing.
    next(b for b in app.button if b.label == "Measure latency").click().run()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("was not timed" in w.value for w in app.warning):
        time.sleep(0.5)
        app.run()
    assert not app.exception
    assert sum("was not timed" in w.value for w in app.warning) == 2
    latency = app.dataframe[0].value["Latency ms (p10–p90)"].tolist()
    assert latency[0] != "—" and latency[1:] == ["—", "—"]


def _wait_for_runs(count: int, timeout: float = 120) -> list[Any]:
    deadline = time.monotonic() + timeout
    while len(RunStore().list()[0]) < count and time.monotonic() < deadline:
        time.sleep(0.3)
    return RunStore().list()[0]


def test_a_real_mcap_run_from_the_form_replays_and_is_timed(
    tmp_path: Path, mcap_installed: None
) -> None:
    app = _open_page(tmp_path)
    small = {"Episode size (k)": 10, "Training instances": 40, "Map size": 8, "Update every": 2}
    small |= {"Maps per episode": 2, "Scoring texts": 16, "Generated maps per pattern": 40}
    for label, value in small.items():
        next(n for n in app.number_input if n.label == label).set_value(value)
    next(b for b in app.button if b.label == "Run MCAP").click().run()
    assert not app.exception and not app.error
    (run,) = _wait_for_runs(1)
    assert run.method == "mcap" and run.has_model

    app = app.switch_page(PAGE).run()
    assert not app.exception and not app.error
    shown = {m.label: m.value for m in app.metric}
    assert shown["Episodes"] == "4"  # 40 instances / k = 10
    assert shown["Pattern CNN accuracy (held out)"].endswith("%")  # the default: pattern CNN
    assert len(_specs(app)) == 8
    assert app.dataframe[0].value["Method"].tolist() == [
        "Unpruned (fine-tuned)",
        "MCAP · 20% heads",
    ]
    next(n for n in app.number_input if n.label == "Rounds").set_value(3)
    next(n for n in app.number_input if n.label == "Batch size").set_value(2)
    next(b for b in app.button if b.label == "Measure latency").click().run()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "—" in app.dataframe[0].value.iloc[1].tolist():
        time.sleep(0.5)
        app.run()
    assert not app.exception and not app.warning
    latency = app.dataframe[0].value["Latency ms (p10–p90)"].tolist()
    assert all(text != "—" and "(" in text for text in latency)
