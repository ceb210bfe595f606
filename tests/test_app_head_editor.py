"""App tests of the Head editor page on a prepared tiny BERT: toggle, undo, runs, save, explain."""

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
from cache.run_store import RunStore
from conftest import real_tokenizer, sentiment_rows, small_bert, write_csv
from pruning.data import DataSpec, load_dataset
from pruning.head_editor import SliceEvaluator, editor_slice
from pruning.models import ModelSpec, save_pruned

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/head_editor.py"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("server_navigation_mode", "no_autoprepare")]


def sensitive_setup(folder: Path) -> tuple[ModelSpec, DataSpec]:
    """A tiny 2 x 4-head BERT whose large random weights make every head matter (so metrics and
    probabilities move visibly when one is switched off), prepared with 2 steps on a CSV."""
    from pruning.prepare import prepare_model
    from pruning.train import TrainConfig

    model = small_bert()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    spec = ModelSpec.local(save_pruned(model, real_tokenizer(), folder / "tiny-bert"))
    data = DataSpec(name="csv", path=str(write_csv(folder / "reviews.csv", sentiment_rows(120))))
    prepare_model(spec, data, TrainConfig(max_steps=2, batch_size=16), device="cpu")
    return spec, data


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The sensitive tiny BERT, prepared, with one random 50% run, in its own HEADSCOPE_HOME."""
    from pruning.pipeline import RunRequest, run_pruning

    home = tmp_path_factory.mktemp("app_editor_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(home))
    model, data = sensitive_setup(home / "setup")
    run = run_pruning(
        RunRequest(method="random", config={"sparsity": 0.5}, model=model, data=data,
                   score_examples=8, eval_examples=8, device="cpu", name="half")
    )  # fmt: skip
    yield {"home": home, "model": model, "data": data, "run": run}
    patch.undo()


@pytest.fixture
def tiny(tiny_home: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("HEADSCOPE_HOME", str(tiny_home["home"]))
    return tiny_home


def _open(tiny: dict[str, Any] | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    if tiny is not None:
        app.session_state["model_spec"] = tiny["model"]
        app.session_state["data_spec"] = tiny["data"]
    return app.run().switch_page(PAGE).run()


def _expected(tiny: dict[str, Any], mask: list[list[bool]]) -> Any:
    """Metrics and probabilities of the prepared model under ``mask``, computed independently."""
    entry = ModelStore().find(tiny["model"], tiny["data"])[0]
    loaded = entry.load(device="cpu")
    dataset = load_dataset(tiny["data"])
    evaluator = SliceEvaluator(loaded.model, loaded.tokenizer, editor_slice(dataset))
    return evaluator.evaluate(torch.tensor(mask))


def _metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def _grid_title(app: AppTest) -> str:
    spec = json.loads(app.get("plotly_chart")[0].proto.spec)
    return str(spec["layout"]["title"]["text"])


def _toggle(app: AppTest, layer: int, head: int) -> AppTest:
    app.selectbox(key="editor-layer").set_value(layer)
    app.selectbox(key="editor-head").set_value(head)
    app.run()
    return app.button(key="editor-toggle").click().run()


def _edited_column(app: AppTest) -> list[str]:
    return [str(v) for v in app.table[0].value["edited"].tolist()]


def test_without_a_prepared_classifier_the_page_says_to_prepare_one() -> None:
    app = _open()
    assert not app.exception
    assert "Head editor" in [t.value for t in app.title]
    assert any("No classifier is prepared" in w.value for w in app.warning)
    assert not app.get("plotly_chart")


def test_toggling_heads_updates_metrics_and_predictions_with_undo_and_redo(
    tiny: dict[str, Any],
) -> None:
    app = _open(tiny)
    assert not app.exception and not app.error
    assert "8 of 8 heads kept · 0 switched off here" in _grid_title(app)
    assert app.button(key="editor-undo").disabled and app.button(key="editor-reset").disabled
    unedited_loss = _metric(app, "Loss")
    unedited_predictions = _edited_column(app)
    assert unedited_predictions == [str(v) for v in app.table[0].value["unedited"].tolist()]

    for layer, head in ((0, 0), (0, 1), (1, 2)):
        app = _toggle(app, layer, head)
        assert not app.exception and not app.error
    mask = [[False, False, True, True], [True, True, False, True]]
    assert "5 of 8 heads kept · 3 switched off here" in _grid_title(app)
    expected = _expected(tiny, mask)
    assert _metric(app, "Loss") == f"{expected.loss:.3f}" != unedited_loss
    assert _metric(app, "Accuracy") == f"{expected.accuracy:.1%}"
    edited = _edited_column(app)
    assert edited != unedited_predictions  # the probabilities moved
    assert any("updated in" in c.value for c in app.caption)

    app = app.button(key="editor-undo").click().run()
    assert "6 of 8 heads kept" in _grid_title(app)
    assert any("shown from memory" in c.value for c in app.caption)  # undo: no recomputation
    assert (
        _metric(app, "Loss")
        == f"{_expected(tiny, [[False, False, True, True], [True] * 4]).loss:.3f}"
    )
    app = app.button(key="editor-redo").click().run()
    assert "5 of 8 heads kept" in _grid_title(app) and _edited_column(app) == edited
    assert app.button(key="editor-redo").disabled
    app = app.button(key="editor-reset").click().run()
    assert "8 of 8 heads kept" in _grid_title(app) and _metric(app, "Loss") == unedited_loss
    app = app.button(key="editor-undo").click().run()  # reset is undoable
    assert "5 of 8 heads kept" in _grid_title(app)


def test_run_mask_top_k_and_save_as_run(tiny: dict[str, Any]) -> None:
    app = _open(tiny)
    run_mask = tiny["run"].mask
    app = app.button(key="editor-apply").click().run()
    assert not app.exception
    assert f"{int(run_mask.sum())} of 8 heads kept" in _grid_title(app)
    app.number_input(key="editor-k").set_value(3)
    app = app.run().button(key="editor-topk").click().run()
    assert "3 of 8 heads kept" in _grid_title(app)
    scores = RunStore().get(tiny["run"].key).scores
    assert scores is not None
    top3 = scores.flatten().argsort(descending=True)[:3]
    app.text_input(key="editor-run-name").input("my three heads")
    app = app.run().button(key="editor-save").click().run()
    assert not app.exception and not app.error
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        manual = [s for s in RunStore().list()[0] if s.method == "manual"]
        if manual:
            break
        time.sleep(0.3)
    assert len(manual) == 1 and manual[0].name == "my three heads"
    record = RunStore().get(manual[0].key)
    assert sorted(record.mask.flatten().nonzero().flatten().tolist()) == sorted(top3.tolist())
    for _ in range(20):  # the job panel notices the finished job and reruns the page
        app.run()
        if any("Saved as run" in s.value for s in app.success):
            break
        time.sleep(0.3)
    assert any(manual[0].key in s.value and "Runs page" in s.value for s in app.success)
    RunStore().delete(manual[0].key)


def test_a_run_model_keeps_its_removed_heads_off(tiny: dict[str, Any]) -> None:
    app = _open(tiny)
    app.selectbox(key="editor-base").select_index(1)  # the random run, newest first
    app.run()
    assert not app.exception and not app.error
    run_mask = tiny["run"].mask
    kept = int(run_mask.sum())
    assert f"{kept} of {kept} heads kept" in _grid_title(app)
    layer, head = (~run_mask).nonzero()[0].tolist()
    app = _toggle(app, layer, head)
    assert any("not in this model" in w.value for w in app.warning)
    assert f"{kept} of {kept} heads kept" in _grid_title(app)


def test_explanations_run_on_request_for_both_models(tiny: dict[str, Any]) -> None:
    app = _open(tiny)
    app = _toggle(app, 0, 0)
    assert not app.get("html") or all("edited (" not in h.proto.body for h in app.get("html"))
    app.number_input(key="editor-exp-samples").set_value(20)
    app = app.run().button(key="editor-explain").click().run()
    assert not app.exception and not app.error
    deadline = time.monotonic() + 90
    bodies: list[str] = []
    while time.monotonic() < deadline and not bodies:
        time.sleep(0.5)
        app.run()
        bodies = [h.proto.body for h in app.get("html") if "edited (1 head off)" in h.proto.body]
    assert bodies and "original" in bodies[0]
