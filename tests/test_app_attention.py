"""App tests of the Attention page: no model, a prepared tiny model with a run, bad input."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from conftest import prepared_tiny_setup

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/attention.py"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("server_navigation_mode", "no_autoprepare")]


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A prepared tiny BERT with one random-pruning run, in its own HEADSCOPE_HOME."""
    from pruning.pipeline import RunRequest, run_pruning

    home = tmp_path_factory.mktemp("app_attention_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(home))
    model, data = prepared_tiny_setup(home / "setup")
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


@pytest.fixture
def views(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str], Any]]:
    """Stand-ins for the bertviz builders and the asset loader; records every call."""
    calls: list[tuple[str, list[str], Any]] = []

    def builder(view: str) -> Any:
        def build(tokens: Any, attentions: Any, present: Any, scripts: Any, **kw: Any) -> str:
            assert scripts == {"d3": "//d3"} and attentions.shape[:2] == present.shape
            calls.append((view, list(tokens), present))
            return f"<div>{view} view of {kw['title']}</div>"

        return build

    html = types.ModuleType("viz.bertviz_html")
    html.build_head_view_html = builder("head")  # type: ignore[attr-defined]
    html.build_model_view_html = builder("model")  # type: ignore[attr-defined]
    assets = types.ModuleType("pruning.assets")
    assets.load_asset_scripts = lambda: {"d3": "//d3"}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "viz.bertviz_html", html)
    monkeypatch.setitem(sys.modules, "pruning.assets", assets)
    return calls


def _open(tiny: dict[str, Any] | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    if tiny is not None:
        app.session_state["model_spec"] = tiny["model"]
        app.session_state["data_spec"] = tiny["data"]
    return app.run().switch_page(PAGE).run()


def _titles(app: AppTest) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in app.get("plotly_chart")]


def _iframes(app: AppTest) -> list[str]:
    return [e.proto.srcdoc for e in app.get("iframe")]


def _select(app: AppTest, label: str) -> Any:
    return next(s for s in app.selectbox if s.label == label)


def test_without_a_prepared_classifier_the_page_says_to_prepare_one() -> None:
    app = _open()
    assert not app.exception
    assert "Attention" in [t.value for t in app.title]
    assert any("No classifier is prepared" in w.value for w in app.warning)
    assert not app.text_input and not app.get("plotly_chart")


def test_original_and_run_side_by_side_in_every_view(
    tiny: dict[str, Any], views: list[tuple[str, list[str], Any]]
) -> None:
    app = _open(tiny)
    assert not app.exception and not app.error
    run_label = f"half · {tiny['run'].key[:6]}"
    assert _select(app, "Compare the original with").value == 1  # the newest run
    assert [t.label for t in app.tabs] == ["Head view", "Model view", "Per-head heatmap",
                                           "Head roles"]  # fmt: skip
    assert _iframes(app) == [
        "<div>head view of original</div>",
        f"<div>head view of {run_label}</div>",
        "<div>model view of original</div>",
        f"<div>model view of {run_label}</div>",
    ]
    tokens = views[0][1]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "wonderful" in tokens
    assert views[0][2].all() and not views[1][2].all()  # the run lost heads
    titles = _titles(app)
    if tiny["run"].mask[0, 0]:
        assert titles[:2] == ["original · L0 H0", f"{run_label} · L0 H0"]
    else:
        assert titles[0] == "original · L0 H0"
        assert any("Head L0 H0 was removed in half" in i.value for i in app.info)
    assert any(t.startswith("original · entropy (bits)") for t in titles)
    assert any(t.startswith(f"{run_label} · entropy (bits)") for t in titles)

    app.text_input[0].set_value("a dull film").run()
    assert not app.exception and not app.error
    assert views[-1][1] == ["[CLS]", "a", "dull", "film", "[SEP]"]
    heatmap = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert heatmap["layout"]["xaxis"]["ticktext"] == ["[CLS]", "a", "dull", "film", "[SEP]"]

    _select(app, "Head role").set_value("cls").run()
    assert not app.exception
    assert any(t.startswith("original · share to [CLS]") for t in _titles(app))


def test_a_removed_head_shows_a_note_and_switching_views_reuses_the_capture(
    tiny: dict[str, Any], views: list[tuple[str, list[str], Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pruning.capture

    calls = []
    original = pruning.capture.capture_sentences

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(pruning.capture, "capture_sentences", counting)
    app = _open(tiny)
    app.text_input[0].set_value("the cast is superb and lovely").run()
    assert not app.exception and not app.error
    mask = tiny["run"].mask
    layer, head = (int(i) for i in (~mask).nonzero()[0])
    _select(app, "Layer").set_value(layer).run()
    _select(app, "Head").set_value(head).run()
    assert not app.exception and not app.error
    assert any(f"Head L{layer} H{head} was removed in half" in i.value for i in app.info)
    assert (
        _select(app, "Head").options[head] == f"H{head} (removed in half · {tiny['run'].key[:6]})"
    )
    assert f"original · L{layer} H{head}" in _titles(app)
    _select(app, "Head role").set_value("previous").run()
    assert not app.exception
    # Each model captured each sentence once, whatever was switched afterwards.
    assert calls.count(["the cast is superb and lovely"]) == 2


def test_empty_sentence_warns_and_computes_nothing(
    tiny: dict[str, Any], views: list[tuple[str, list[str], Any]]
) -> None:
    app = _open(tiny)
    views.clear()
    app.text_input[0].set_value("   ").run()
    assert not app.exception and not app.error
    assert any("Type a sentence" in w.value for w in app.warning)
    assert not app.get("plotly_chart") and not views


def test_a_test_text_can_be_picked_and_long_text_is_truncated(
    tiny: dict[str, Any], views: list[tuple[str, list[str], Any]]
) -> None:
    app = _open(tiny)
    app.radio[0].set_value("Pick from the test split").run()
    assert not app.exception and not app.error
    picker = _select(app, "Test text (the label is the dataset's)")
    assert picker.value == 0 and picker.format_func(0).startswith(("[positive] ", "[negative] "))
    assert _iframes(app)

    app.radio[0].set_value("Type one").run()
    app.text_input[0].set_value(" ".join(["film"] * 300)).run()
    assert not app.exception and not app.error
    assert any("302 tokens but the model reads at most 128" in i.value for i in app.info)
    assert any("draw at most 100 tokens and this text has 128" in i.value for i in app.info)


def test_missing_assets_leave_the_rest_of_the_page_working(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assets = types.ModuleType("pruning.assets")

    def missing() -> dict[str, str]:
        raise OSError("The attention views' scripts are missing; run `headscope assets install`.")

    assets.load_asset_scripts = missing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pruning.assets", assets)
    app = _open(tiny)
    assert not app.exception and not app.error
    assert sum("headscope assets install" in i.value for i in app.info) == 2
    assert not _iframes(app) and _titles(app)


def test_real_asset_loader_reports_an_empty_asset_folder(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("pruning.assets")
    pytest.importorskip("viz.bertviz_html")
    monkeypatch.setenv("HEADSCOPE_ASSETS", str(tmp_path / "no-assets"))
    app = _open(tiny)
    assert not app.exception and not app.error
    assert any("headscope assets install" in i.value for i in app.info)
    assert _titles(app)
