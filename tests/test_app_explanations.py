"""App tests of the Explanations page: no model, the form, bad input, a real tiny explanation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import prepared_tiny_setup

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/explanations.py"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("server_navigation_mode", "no_autoprepare")]


def _open(tmp_path: Path | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    if tmp_path is not None:
        model, data = prepared_tiny_setup(tmp_path / "setup")
        app.session_state["model_spec"] = model
        app.session_state["data_spec"] = data
    return app.run().switch_page(PAGE).run()


def _button(app: AppTest, label: str) -> object:
    return next(b for b in app.button if b.label == label)


def _chart_titles(app: AppTest) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in app.get("plotly_chart")]


def _wait(app: AppTest, done: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.5)
        app.run()


def _pending(app: AppTest) -> dict[str, str]:
    return (
        dict(app.session_state["explain_pending"]) if "explain_pending" in app.session_state else {}
    )


def test_without_a_prepared_classifier_the_page_says_to_prepare_one() -> None:
    app = _open()
    assert not app.exception
    assert "Explanations" in [t.value for t in app.title]
    assert any("No classifier is prepared" in w.value for w in app.warning)
    assert not app.multiselect and not app.text_area


def test_the_form_defaults_and_an_empty_sentence_submits_nothing(tmp_path: Path) -> None:
    app = _open(tmp_path)
    assert not app.exception and not app.error
    assert [m.label for m in app.multiselect] == ["Models", "Methods"]
    models, methods = app.multiselect
    assert models.value == [0] and models.options == ["original"]
    assert methods.value == ["lime"]
    assert [n.value for n in app.number_input][:3] == [1000, 500, 0]

    app.text_area[0].set_value("   \n  ")
    _button(app, "Explain").click().run()
    assert not app.exception
    assert any("Type at least one sentence" in w.value for w in app.warning)
    assert not _pending(app)

    app.radio[0].set_value("Pick from the test split").run()
    assert not app.exception and not app.error
    picks = next(m for m in app.multiselect if m.label.startswith("Test texts"))
    assert picks.value == [0]
    assert picks.options[0].startswith(("[positive] ", "[negative] "))


def test_a_tiny_explanation_runs_as_a_job_and_shows_highlighted_text(tmp_path: Path) -> None:
    app = _open(tmp_path)
    lines = ["a <script>alert(1)</script> good film", *(f"film number {i}" for i in range(5))]
    app.text_area[0].set_value("\n".join(lines))
    next(n for n in app.number_input if n.label == "LIME samples").set_value(20)
    _button(app, "Explain").click().run()
    assert not app.exception and not app.error
    assert any("Only the first 5 of 6 sentences" in i.value for i in app.info)
    assert len(_pending(app)) == 1

    _wait(app, lambda: bool(app.html))
    assert not app.exception and not app.error
    assert app.html, "the explanation did not finish in time"
    body = app.html[0].proto.body
    assert "original · LIME" in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script" not in body
    sentence = next(r for r in app.radio if r.label == "Sentence")
    assert len(sentence.options) == 5
    table = app.dataframe[0].value
    assert list(table.columns) == ["word", "original"]
    assert list(table["word"][:-1]) == ["a", "<script>alert(1)</script>", "good", "film"]
    assert table["word"].iloc[-1].startswith("P(")
    assert not _pending(app)

    sentence.set_value(1).run()  # another sentence: shown from the session, no new job
    assert not app.exception and not app.error and not _pending(app)
    assert list(app.dataframe[0].value["word"][:-1]) == ["film", "number", "0"]
    assert ">number</span>" in app.html[0].proto.body

    _button(app, "Run 3 seeds").click().run()
    _wait(app, lambda: any(m.label == "Mean Spearman" for m in app.metric))
    assert not app.exception and not app.error
    assert {m.label for m in app.metric} >= {"Mean Spearman", "Min Spearman", "Mean top-5 overlap"}
    columns = [json.loads(c.proto.spec)["data"][0].get("x") for c in app.get("plotly_chart")]
    assert ["seed 0", "seed 1", "seed 2"] in columns

    _button(app, "Measure faithfulness").click().run()
    faithful = "Faithfulness of the explanations"
    _wait(app, lambda: faithful in _chart_titles(app))
    assert not app.exception and not app.error
    assert _chart_titles(app).count(faithful) == 1
    rows = next(d.value for d in app.dataframe if "comprehensiveness" in d.value.columns)
    assert list(rows["model"]) == ["original"] and list(rows["method"]) == ["lime"]

    next(n for n in app.number_input if n.label == "Test texts").set_value(2)
    _button(app, "Measure over the test split").click().run()
    _wait(app, lambda: _chart_titles(app).count(faithful) == 2)
    assert not app.exception and not app.error
    rows = next(d.value for d in app.dataframe if "n_texts" in d.value.columns)
    assert list(rows["n_texts"]) == [2]
