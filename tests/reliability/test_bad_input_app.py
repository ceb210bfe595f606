"""Bad input in the dashboard (Streamlit AppTest): a clear st.error or st.warning, no exception,
nothing started and nothing stored.

Pages: Model & data (model folder, dataset name), Prune (method settings), Explanations and
Attention (empty, over-long, 10,000-character, mixed-script and HTML sentences). AppTest cannot
upload files, so the CSV upload path is covered in test_bad_data.py through
``pruning.data.store_upload``, the function the Model & data page hands every upload to.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest
from transformers import GPT2Config, GPT2ForSequenceClassification

from cache.model_store import ModelStore
from cache.paths import headscope_home
from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from pruning.data import MAX_TEXT_CHARS

APP = str(Path(__file__).resolve().parents[2] / "app.py")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("server_navigation_mode", "no_autoprepare")]

LONG_TEXT = ("The film was wonderful and the acting superb. " * 250)[:10_000]
MIXED = "Ein großartiger Film 🎬🍿 — 素晴らしい映画！ فيلم رائع 👍🏽 Привет"
HTML_TEXT = '<script>alert("x")</script><img src=x onerror=alert(1)> good film'
TOO_LONG = "x" * (MAX_TEXT_CHARS + 1)


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A prepared tiny BERT (2 layers x 4 heads, 128 tokens) in its own HEADSCOPE_HOME."""
    home = tmp_path_factory.mktemp("app_bad_input_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(home))
    model, data = prepared_tiny_setup(home / "setup")
    yield {"home": home, "model": model, "data": data}
    patch.undo()


@pytest.fixture
def tiny(tiny_home: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("HEADSCOPE_HOME", str(tiny_home["home"]))
    return tiny_home


@pytest.fixture
def views(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Stand-ins for the bertviz builders and their scripts; records the tokens of each call."""
    calls: list[list[str]] = []

    def build(tokens: Any, attentions: Any, present: Any, scripts: Any, **kw: Any) -> str:
        calls.append(list(tokens))
        return "<div>view</div>"

    html = types.ModuleType("viz.bertviz_html")
    html.build_head_view_html = build  # type: ignore[attr-defined]
    html.build_model_view_html = build  # type: ignore[attr-defined]
    assets = types.ModuleType("pruning.assets")
    assets.load_asset_scripts = lambda: {"d3": "//d3"}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "viz.bertviz_html", html)
    monkeypatch.setitem(sys.modules, "pruning.assets", assets)
    return calls


def _open(page: str, tiny: dict[str, Any] | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    if tiny is not None:
        app.session_state["model_spec"] = tiny["model"]
        app.session_state["data_spec"] = tiny["data"]
    return app.run().switch_page(page).run()


def _ok(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]


def _errors(app: AppTest) -> str:
    return "\n".join(e.value for e in app.error)


def _stored() -> tuple[list[str], list[str], list[str]]:
    home = headscope_home()
    files = sorted(
        str(p.relative_to(home))
        for folder in ("explanations", "uploads")
        for p in (home / folder).rglob("*")
        if p.is_file()
    )
    return sorted(e.key for e in ModelStore().list()), [s.key for s in RunStore().list()[0]], files


# Model & data --------------------------------------------------------------------------------


def _gpt2(folder: Path) -> Path:
    """A 2-layer GPT-2 classifier saved from a config in code (no download)."""
    config = GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=100, n_positions=32)
    config.bos_token_id = config.eos_token_id = 99
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_model_page_refuses_missing_empty_and_unsupported_model_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "nowhere"): "does not exist",
        str(tmp_path / "empty"): "has no config.json",
        str(_gpt2(tmp_path / "gpt2")): "Model type 'gpt2' is not supported",
    }
    app = _open("pages/model_data.py")
    app.radio[0].set_value("local").run()
    for folder, message in cases.items():
        app.text_input[0].set_value(folder).run()
        _ok(app)
        assert message in _errors(app)
        assert not any(b.label == "Use this model and dataset" for b in app.button)
        assert "model_spec" not in app.session_state
    assert _stored() == ([], [], [])


def test_model_page_refuses_an_unknown_dataset_name() -> None:
    app = _open("pages/model_data.py")
    app.radio[1].set_value("hf").run()
    app.text_input[0].set_value("not-a-dataset").run()
    _ok(app)
    assert "Unknown dataset 'not-a-dataset'" in _errors(app)
    assert "data_spec" not in app.session_state


def test_model_page_states_the_upload_limits() -> None:
    app = _open("pages/model_data.py")
    app.radio[1].set_value("csv").run()
    _ok(app)
    (uploader,) = app.get("file_uploader")
    assert "UTF-8 CSV or TSV, up to 100 MB and 1,000,000 rows, 2 to 20 classes" in (
        uploader.proto.help
    )


# Prune ---------------------------------------------------------------------------------------


def _fake_form(settings: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    """config_form's stand-in: the defaults with ``settings`` over them, as if typed."""

    def form(config_class: type, key: str) -> dict[str, Any]:
        defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
        return {**defaults, **settings}

    return form


@pytest.mark.parametrize(
    ("method", "settings", "message"),
    [
        ("astar", {"budget": -1.0}, "Budget (metric points) must be between 0.0 and 100.0"),
        ("random", {"sparsity": 1.5}, "Head sparsity must be between 0.0 and 1.0 (got 1.5)"),
        ("random", {"sparsity": -0.1}, "Head sparsity must be between 0.0 and 1.0"),
        ("random", {"n_prune": 99}, "Cannot remove 99 heads: the model has 8."),
        ("random", {"min_heads_per_layer": 5}, "Minimum heads per layer (5) exceeds"),
    ],
)
def test_prune_page_refuses_out_of_range_settings_and_starts_nothing(
    tiny: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    settings: dict[str, Any],
    message: str,
) -> None:
    # The form's widgets carry the bounds (the browser refuses values outside them, and
    # Streamlit resets them to the default): this stands in for a value past those bounds.
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["model_spec"] = tiny["model"]
    app.session_state["data_spec"] = tiny["data"]
    app.run()
    monkeypatch.setattr(sys.modules["pages.support.common"], "config_form", _fake_form(settings))
    app = app.switch_page("pages/prune.py").run()
    app.selectbox[0].set_value(method).run()
    app.button[0].click().run()  # the form's Run button
    _ok(app)
    assert message in _errors(app) and "Nothing was started" in _errors(app)
    assert "prune_jobs" not in app.session_state  # no job was submitted
    assert RunStore().list()[0] == []


def test_prune_form_widgets_carry_the_setting_bounds(tiny: dict[str, Any]) -> None:
    app = _open("pages/prune.py", tiny)
    app.selectbox[0].set_value("astar").run()
    budget = next(n for n in app.number_input if n.label.startswith("Budget"))
    assert (budget.min, budget.max) == (0.0, 100.0)
    app.selectbox[0].set_value("random").run()
    sparsity = next(n for n in app.number_input if n.label == "Head sparsity")
    assert (sparsity.min, sparsity.max) == (0.0, 1.0)


# Explanations --------------------------------------------------------------------------------


def _explain(app: AppTest, text: str) -> AppTest:
    app.text_area[0].set_value(text)
    next(n for n in app.number_input if n.label == "LIME samples").set_value(10)
    return next(b for b in app.button if b.label == "Explain").click().run()


def _pending(app: AppTest) -> dict[str, str]:
    return (
        dict(app.session_state["explain_pending"]) if "explain_pending" in app.session_state else {}
    )


@pytest.mark.parametrize(
    ("text", "element", "message"),
    [
        ("  \n \t ", "warning", "Type at least one sentence"),
        (
            f"a fine film\n{TOO_LONG}",
            "error",
            "Sentence 2: The text has 20,001 characters; at most 20,000 are accepted",
        ),
    ],
)
def test_explanations_refuse_empty_and_over_long_sentences(
    tiny: dict[str, Any], text: str, element: str, message: str
) -> None:
    before = _stored()
    app = _explain(_open("pages/explanations.py", tiny), text)
    _ok(app)
    assert any(message in e.value for e in getattr(app, element))
    assert not _pending(app)
    assert _stored() == before


def test_explanations_of_long_mixed_script_and_html_sentences(tiny: dict[str, Any]) -> None:
    app = _explain(_open("pages/explanations.py", tiny), "\n".join([LONG_TEXT, MIXED, HTML_TEXT]))
    _ok(app)
    assert not app.error
    note = "Sentence 1 has 1,960 tokens but the model reads at most 128: it is truncated there"
    assert any(note in i.value for i in app.info)
    assert len(_pending(app)) == 1
    deadline = time.monotonic() + 120
    while not app.html and time.monotonic() < deadline:
        time.sleep(0.5)
        app.run()
    _ok(app)
    assert app.html, "the explanations did not finish in time"
    assert not app.error
    assert any(note in i.value for i in app.info)  # shown again next to the result
    next(r for r in app.radio if r.label == "Sentence").set_value(1).run()
    _ok(app)
    assert list(app.dataframe[0].value["word"][:-1]) == MIXED.split()
    next(r for r in app.radio if r.label == "Sentence").set_value(2).run()
    _ok(app)
    assert list(app.dataframe[0].value["word"][:-1]) == HTML_TEXT.split()
    assert "<script>alert" not in app.html[0].proto.body


# Attention -----------------------------------------------------------------------------------


def _heatmap_ticks(app: AppTest) -> list[str]:
    specs = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
    return next(
        s["layout"]["xaxis"]["ticktext"] for s in specs if "ticktext" in s["layout"]["xaxis"]
    )


def test_attention_refuses_empty_and_over_long_texts(
    tiny: dict[str, Any], views: list[list[str]]
) -> None:
    app = _open("pages/attention.py", tiny)
    views.clear()
    app.text_input[0].set_value("   ").run()
    _ok(app)
    assert any("Type a sentence" in w.value for w in app.warning)
    app.text_input[0].set_value(TOO_LONG).run()
    _ok(app)
    assert "20,001 characters; at most 20,000 are accepted" in _errors(app)
    assert not app.get("plotly_chart") and not views


def test_attention_of_long_mixed_script_and_html_texts(
    tiny: dict[str, Any], views: list[list[str]]
) -> None:
    app = _open("pages/attention.py", tiny)
    app.text_input[0].set_value(LONG_TEXT).run()
    _ok(app)
    assert not app.error
    assert any("1960 tokens but the model reads at most 128" in i.value for i in app.info)

    app.text_input[0].set_value(MIXED).run()
    _ok(app)
    assert not app.error
    assert views[-1][:3] == ["[CLS]", "ein", "gr"] and "[UNK]" in views[-1]
    assert len(_heatmap_ticks(app)) == len(views[-1])

    app.text_input[0].set_value(HTML_TEXT).run()
    _ok(app)
    assert not app.error
    assert views[-1][1:4] == ["<", "script", ">"]  # the markup is split into plain tokens
