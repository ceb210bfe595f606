"""App tests of the Gates page: no classifier, the form, a gate run submitted and replayed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from test_viz_gates import gate_trace

from cache.run_format import RunRecord
from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from pruning.heads import head_grid
from pruning.methods import base
from pruning.methods.base import (
    MethodConfig,
    PruneResult,
    PruningContext,
    PruningMethod,
    load_builtin_methods,
    ui,
)

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/gates.py"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("server_navigation_mode", "no_autoprepare")]


@dataclass(frozen=True)
class FakeGateConfig(MethodConfig):
    """The gate settings the page puts first, plus one setting of the method's own."""

    mu: float = field(default=0.01, metadata=ui("Penalty weight (mu)", "μ.", min=0.0, max=10.0))
    gate_lr: float = field(default=1.0, metadata=ui("Gate learning rate", "lr.", min=1e-6))
    steps: int = field(default=20, metadata=ui("Training steps", "Steps.", min=1, max=1000))
    snapshot_every: int = field(
        default=5, metadata=ui("Snapshot every", "Snapshots.", min=1, max=1000)
    )
    fixed_sparsity: float | None = field(
        default=None, metadata=ui("Fixed sparsity", "Share removed.", min=0.0, max=1.0)
    )
    init_value: float = field(default=1.0, metadata=ui("Initial gate value", "Start.", min=0.1))


class FakeGates(PruningMethod):
    """Scripted gates: W' falls linearly per head; head (0, 1) closes mid-run and reopens."""

    title = "Fake STE gates"
    config_class = FakeGateConfig
    kind = "ste"

    def run(self, context: PruningContext) -> PruneResult:
        config = self.config
        assert isinstance(config, FakeGateConfig)
        n_layers, n_heads = head_grid(context.model)
        slopes = np.linspace(0.0, 2.0 / config.steps, n_layers * n_heads).reshape(n_layers, -1)
        steps = [*range(0, config.steps, config.snapshot_every), config.steps]
        for step in steps:
            w = config.init_value - slopes * step
            w[0, 1] = -0.5 if 0 < step < config.steps else 0.5
            opened = w > 0
            data: dict[str, Any] = {
                "train_step": step,
                "total_steps": config.steps,
                "w": w.tolist(),
                "open": opened.astype(int).tolist(),
                "task_loss": None if step == 0 else 0.5,
                "penalty": config.mu * float(opened.sum()),
                "open_gates": int(opened.sum()),
                "val_metric": 0.5,
                "val_metric_name": "accuracy",
                "gate_kind": self.kind,
            }
            if self.kind == "l0":
                prob = 1 / (1 + np.exp(-w))
                data |= {"prob": prob.tolist(), "expected_open": float(prob.sum())}
            context.emit("gates", step / config.steps, f"step {step}", **data)
        mask = torch.as_tensor(opened)
        context.emit("final", 1.0, "done", mask=mask.tolist(), fixed_sparsity=None, reopened=[])
        return PruneResult(mask=mask, scores=torch.as_tensor(w), trace=tuple(context.trace))


class FakeL0Gates(FakeGates):
    title = "Fake L0 gates"
    kind = "l0"


@pytest.fixture
def fake_gate_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register scripted stand-ins under the gating methods' names for this test only."""
    load_builtin_methods()  # first, so that a later import cannot collide with the stand-ins
    for name, cls in (("autoattention", FakeGates), ("l0_gates", FakeL0Gates)):
        monkeypatch.setitem(base.REGISTRY, name, cls)


@pytest.fixture
def no_gate_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    load_builtin_methods()
    for name in ("autoattention", "l0_gates"):
        monkeypatch.delitem(base.REGISTRY, name, raising=False)


def _open_gates_page(tmp_path: Path | None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    if tmp_path is not None:
        model, data = prepared_tiny_setup(tmp_path / "setup")
        app.session_state["model_spec"] = model
        app.session_state["data_spec"] = data
    app.run()
    return app.switch_page(PAGE).run()


def _wait_for_runs(count: int, timeout: float = 90) -> list[Any]:
    deadline = time.monotonic() + timeout
    while len(RunStore().list()[0]) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return RunStore().list()[0]


def _chart_specs(app: AppTest) -> list[str]:
    return [chart.proto.spec for chart in app.get("plotly_chart")]


def test_without_a_prepared_classifier_the_page_warns_and_shows_no_form() -> None:
    app = _open_gates_page(None)
    assert not app.exception
    assert "Gates" in [t.value for t in app.title]
    assert any("No classifier is prepared" in w.value for w in app.warning)
    assert not app.button and not app.radio


def test_form_runs_both_methods_and_the_runs_replay_and_compare(
    tmp_path: Path, fake_gate_methods: None
) -> None:
    app = _open_gates_page(tmp_path)
    assert not app.exception and not app.error
    assert any("No gate run stored yet" in i.value for i in app.info)
    app.radio(key="gates-method").set_value("both").run()
    assert not app.exception
    labels = [n.label for n in app.number_input]
    assert labels.count("Penalty weight (mu)") == 1  # shared when both run
    assert labels.count("Gate learning rate") == 2  # one per method
    next(n for n in app.number_input if n.label == "Training steps").set_value(6)
    next(n for n in app.number_input if n.label == "Snapshot every").set_value(2)
    next(b for b in app.button if b.label == "Run both").click().run()
    assert not app.exception and not app.error
    runs = _wait_for_runs(2)
    assert sorted(s.method for s in runs) == ["autoattention", "l0_gates"]

    app = app.switch_page(PAGE).run()
    assert not app.exception and not app.error
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Heads reopened"] == "1"
    assert {"Heads removed", "Validation accuracy (gates)", "Test accuracy"} <= set(metrics)
    # Gate values, open map, curves, animation, and the comparison of the two runs.
    specs = _chart_specs(app)
    assert len(specs) == 5
    assert '"frames"' in specs[3]
    assert "Gate runs compared" in specs[4]
    assert "step 6 of 6" in specs[0]
    app.select_slider(key=next(s.key for s in app.select_slider)).set_value(2).run()
    assert not app.exception
    moved = _chart_specs(app)
    assert "step 2 of 6" in moved[0] and moved[0] != specs[0] and moved[1] != specs[1]
    assert any(d.value.shape[0] == 1 for d in app.dataframe)  # the reopened head's row


def _record(method: str, trace: list[dict[str, Any]], name: str, **settings: Any) -> RunRecord:
    config = {"mu": 0.01, "steps": 40, **settings}
    key = RunStore.key_for(
        model_fingerprint="model-a",
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
        model={"spec": {"source": "local"}, "fingerprint": "model-a", "label": "tiny"},
        data={"spec": {"name": "csv"}, "fingerprint": "data-a", "label_names": ["neg", "pos"]},
        metrics={"dense": {"accuracy": 0.8}, "pruned": {"accuracy": 0.75}},
        trace=trace,
        info={"name": name, "settings": {"eval_split": "validation"}},
        mask=torch.tensor([[True, True, True], [True, True, False]]),
    )


def _captions(app: AppTest) -> list[str]:
    return [c.value for c in app.caption]


def test_a_stored_gate_run_replays_and_a_broken_one_shows_an_error(
    tmp_path: Path, no_gate_methods: None
) -> None:
    store = RunStore()
    store.save(_record("autoattention", gate_trace("ste"), "synthetic STE"))
    literal = gate_trace("ste")
    for event in literal:
        if event["kind"] == "gates":
            event["data"]["ste_gradient"] = "softplus"
    softplus = store.save(
        _record("autoattention", literal, "synthetic Softplus", ste_gradient="softplus")
    )
    broken = store.save(_record("l0_gates", [{"kind": "progress", "data": {}}], "broken L0"))
    app = _open_gates_page(tmp_path)
    assert not app.exception
    assert any("not installed" in e.value for e in app.error)  # for the default method
    assert not [b for b in app.button if b.label in ("Run", "Run both")]
    chooser = next(s for s in app.selectbox if s.label == "Gate run")
    chooser.set_value(next(s.key for s in store.list()[0] if s.name == "synthetic STE")).run()
    assert not app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Heads removed"] == "1 / 6"
    assert metrics["Validation accuracy"] == "0.7500"
    # A trace written before the eq. 10 choice existed ran the sigmoid reading.
    assert "Eq. 10 reading: dG/dW′ = σ(W′), the derivative of Softplus (coarse-gradient STE)." in (
        _captions(app)
    )
    assert not any("Softplus(W′), eq. 10 as printed" in c for c in _captions(app))
    before = _chart_specs(app)
    assert "step 40 of 40" in before[0]
    slider = next(s for s in app.select_slider if s.label == "Training step")
    assert list(slider.options) == ["0", "10", "20", "30", "40"]
    slider.set_value(20).run()
    assert not app.exception
    after = _chart_specs(app)
    assert "step 20 of 40" in after[0] and after[0] != before[0]

    next(s for s in app.selectbox if s.label == "Gate run").set_value(softplus.key).run()
    assert not app.exception
    assert "Eq. 10 reading: dG/dW′ = Softplus(W′), eq. 10 as printed." in _captions(app)

    next(s for s in app.selectbox if s.label == "Gate run").set_value(broken.key).run()
    assert not app.exception
    assert any("cannot be replayed" in e.value for e in app.error)


def test_the_installed_gating_methods_run_both_from_the_form(tmp_path: Path) -> None:
    pytest.importorskip("pruning.methods.autoattention")
    pytest.importorskip("pruning.methods.l0_gates")
    app = _open_gates_page(tmp_path)
    app.radio(key="gates-method").set_value("both").run()
    assert not app.exception and not app.error
    reading = next(s for s in app.selectbox if s.label == "Eq. 10 gradient")
    assert list(reading.options) == ["sigmoid", "softplus"] and reading.value == "sigmoid"
    next(n for n in app.number_input if n.label == "Training steps").set_value(4)
    next(n for n in app.number_input if n.label == "Snapshot every").set_value(2)
    next(n for n in app.number_input if n.label == "Validation texts").set_value(16)
    next(b for b in app.button if b.label == "Run both").click().run()
    assert not app.exception and not app.error
    runs = _wait_for_runs(2, timeout=180)
    assert sorted(s.method for s in runs) == ["autoattention", "l0_gates"]
    app = app.switch_page(PAGE).run()
    assert not app.exception and not app.error
    assert len(_chart_specs(app)) == 5  # grids, curves, animation, comparison
    stored = {s.method: s for s in runs}
    record = RunStore().get(stored["autoattention"].key)
    assert record.info["method_info"]["ste_gradient"] == "sigmoid"
    assert "ste_gradient" not in record.config  # the default is left out of the run key
