"""App tests: every page renders through streamlit.testing.v1.AppTest without exceptions."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cache.model_store import ModelStore
from cache.run_store import RunStore
from conftest import prepared_tiny_setup
from pruning.data import DataSpec
from pruning.models import ModelSpec
from pruning.prepare import prepare_model
from pruning.train import TrainConfig

APP = str(Path(__file__).resolve().parents[1] / "app.py")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("server_navigation_mode")]


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


def _switch(app: AppTest, page: str) -> AppTest:
    return app.switch_page(page).run()


def test_model_and_data_page_lists_sources_and_refuses_a_missing_folder(
    no_autoprepare: None,
) -> None:
    app = _switch(AppTest.from_file(APP, default_timeout=120).run(), "pages/model_data.py")
    assert not app.exception
    assert "Model & data" in [t.value for t in app.title]
    app.radio[0].set_value("local").run()
    app.text_input[0].set_value("/no/such/folder").run()
    assert any("does not exist" in e.value for e in app.error)
    assert not app.exception


def test_prune_page_runs_a_method_and_runs_page_lists_it(
    no_autoprepare: None, tmp_path: Path
) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["model_spec"] = model
    app.session_state["data_spec"] = data
    app = _switch(app.run(), "pages/prune.py")
    assert not app.exception
    app.selectbox[0].set_value("random").run()
    app.button[0].click().run()  # the form's Run button
    assert not app.exception
    deadline = time.monotonic() + 60
    while not RunStore().list()[0] and time.monotonic() < deadline:
        time.sleep(0.2)
    summaries = RunStore().list()[0]
    assert len(summaries) == 1 and summaries[0].method == "random"
    app = _switch(app, "pages/runs.py")
    assert not app.exception
    assert not app.warning


def test_runs_page_without_runs_says_how_to_start(no_autoprepare: None) -> None:
    app = _switch(AppTest.from_file(APP, default_timeout=120).run(), "pages/runs.py")
    assert not app.exception
    assert any("No runs stored yet" in i.value for i in app.info)


def _wait_for_runs(count: int, timeout: float = 90) -> list:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while len(RunStore().list()[0]) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return RunStore().list()[0]


def test_search_page_runs_astar_and_replays_it_next_to_random_trials(
    no_autoprepare: None, tmp_path: Path
) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["model_spec"] = model
    app.session_state["data_spec"] = data
    app = _switch(app.run(), "pages/search.py")
    assert not app.exception
    assert any("No search stored yet" in i.value for i in app.info)
    budget = next(n for n in app.number_input if n.label.startswith("Budget"))
    budget.set_value(5.0)
    app.button[0].click().run()  # the form's Run search button
    assert not app.exception
    summaries = _wait_for_runs(1)
    assert [s.method for s in summaries] == ["astar"]
    app.selectbox[0].set_value("random_budget")  # inside the form: sent with the submit
    app.button[0].click().run()
    assert sorted(s.method for s in _wait_for_runs(2)) == ["astar", "random_budget"]
    app = _switch(app, "pages/search.py")
    assert not app.exception
    chooser = next(s for s in app.selectbox if s.label == "Search run")
    astar = next(s for s in RunStore().list()[0] if s.method == "astar")
    chooser.set_value(astar.key).run()
    assert not app.exception
    assert not app.error
    labels = {m.label for m in app.metric}
    assert {"Heads pruned", "Evaluations", "Budget used"} <= labels
    charts = app.get("plotly_chart")
    # Mask, cost chart, progress panels and the random-vs-A* distribution.
    assert len(charts) >= 4
    assert "Random pruning" in charts[-1].proto.spec or "random" in charts[-1].proto.spec.lower()


def test_search_page_offers_to_resume_a_cut_off_search(
    no_autoprepare: None, tmp_path: Path
) -> None:
    from cache.checkpoints import RunCheckpoints
    from pruning.jobs import JobCancelled
    from pruning.pipeline import RunRequest, plan_run, run_pruning

    model, data = prepared_tiny_setup(tmp_path / "setup")
    request = RunRequest(
        method="astar",
        config={"budget": 40.0},
        model=model,
        data=data,
        score_examples=16,
        name="long search",
    )
    seen = {"iterations": 0}

    def count(event: object) -> None:
        seen["iterations"] += getattr(event, "kind", "") == "search_iteration"

    with pytest.raises(JobCancelled):
        run_pruning(request, on_event=count, should_stop=lambda: seen["iterations"] >= 2)
    key = plan_run(request).key
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["model_spec"] = model
    app.session_state["data_spec"] = data
    app = _switch(app.run(), "pages/search.py")
    assert not app.exception
    assert any("were cut off" in w.value for w in app.warning)
    assert any("long search" in m.value and "2 iterations done" in m.value for m in app.markdown)
    assert any("Expected work for A* on 8 heads" in c.value for c in app.caption)
    resume = next(b for b in app.button if b.label == "Resume")
    resume.click().run()
    assert not app.exception
    summaries = _wait_for_runs(1)
    assert [s.key for s in summaries] == [key]
    assert RunCheckpoints().load(key) is None
    app = _switch(app, "pages/search.py")
    assert not any("were cut off" in w.value for w in app.warning)
    # A discarded checkpoint is forgotten without running anything.
    other = RunRequest(**{**request.__dict__, "seed": 1})
    seen["iterations"] = 0
    with pytest.raises(JobCancelled):
        run_pruning(other, on_event=count, should_stop=lambda: seen["iterations"] >= 1)
    app = _switch(app, "pages/search.py")
    next(b for b in app.button if b.label == "Discard").click().run()
    assert RunCheckpoints().run_keys() == [] and len(RunStore().list()[0]) == 1
