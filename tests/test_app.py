"""App tests: every page renders through streamlit.testing.v1.AppTest without exceptions."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cache.model_store import ModelStore
from pruning.data import DataSpec
from pruning.models import ModelSpec
from pruning.train import TrainConfig, prepare_model

APP = str(Path(__file__).resolve().parents[1] / "app.py")
pytestmark = pytest.mark.slow


@pytest.fixture
def no_autoprepare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADSCOPE_AUTOPREPARE", "0")


def _texts(app: AppTest) -> str:
    parts = [e.value for e in app.markdown] + [e.value for e in app.caption]
    parts += [e.value for e in app.info] + [e.value for e in app.title]
    parts += [str(m.label) + " " + str(m.value) for m in app.metric]
    return "\n".join(str(p) for p in parts)


def test_overview_without_a_prepared_model_offers_preparation(no_autoprepare: None) -> None:
    app = AppTest.from_file(APP, default_timeout=120).run()
    assert not app.exception
    text = _texts(app)
    assert "HeadScope" in text
    assert "Layers × heads 6 × 12" in text
    assert "Rotten Tomatoes" in text
    assert any("Prepare the default classifier" in b.label for b in app.button)
    assert not app.error


def test_overview_shows_the_stored_classifier_metrics(no_autoprepare: None) -> None:
    # A real (two-step) preparation of the default model on the default data fills the store.
    prepared = prepare_model(ModelSpec(), DataSpec(), TrainConfig(max_steps=2), device="cpu")
    assert ModelStore().find(ModelSpec(), DataSpec())
    app = AppTest.from_file(APP, default_timeout=120).run()
    assert not app.exception
    labels = {m.label: m.value for m in app.metric}
    expected = f"{prepared.metric('accuracy'):.3f}"
    assert labels["Test accuracy"] == expected
    assert not any("Prepare the default classifier" in b.label for b in app.button)
