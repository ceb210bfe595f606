"""App tests of the Paper claims page: no classifier, five cards from stored runs, the queue."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from cache.model_store import ModelStore
from conftest import prepared_tiny_setup
from pruning.claims_live import claim_plan
from pruning.jobs import Progress
from pruning.pipeline import run_pruning

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/claims.py"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("server_navigation_mode", "no_autoprepare")]
TITLES = [
    "A* vs random pruning at the same budget",
    "AutoAttention vs HISP and random heads at 50%",
    "MCAP vs random heads and attention entropy at 20%",
    "Cam-Cut / Smooth-Cut vs LayerMagWeight at ratios 3-4",
    "HISP vs random heads at 50%",
]


def _open(app: AppTest) -> AppTest:
    app.run()
    return app.switch_page(PAGE).run()


def _markdown(app: AppTest) -> list[str]:
    return [m.value for m in app.markdown]


def test_without_a_prepared_classifier_the_page_warns() -> None:
    app = _open(AppTest.from_file(APP, default_timeout=120))
    assert not app.exception
    assert [t.value for t in app.title] == ["Paper claims"]
    assert any("No classifier is prepared" in w.value for w in app.warning)
    assert not app.button and not app.radio


def test_cards_verdicts_missing_rows_and_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pages.support.common as common

    model, data = prepared_tiny_setup(tmp_path / "setup")
    prepared = ModelStore().find(model, data)[0]
    plan = claim_plan(prepared, scale="paper")
    for label in ("HISP 50% · seed 0", "Random heads 50% · seed 0"):
        run_pruning(next(p for p in plan if p.label == label).request)

    queued: list[int] = []

    def sweep_work(requests: list[Any], executor: Any = None) -> Any:
        """Stands in for the real runs: waits until cancelled, stores nothing."""
        queued.append(len(requests))

        def work(progress: Progress) -> str:
            while True:
                progress.update(0.5, "pretending to run")
                progress.check()
                time.sleep(0.05)

        return work

    monkeypatch.setattr(common, "sweep_work", sweep_work)
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["model_spec"] = model
    app.session_state["data_spec"] = data
    app = _open(app)
    assert not app.exception and not app.error
    assert app.radio(key="claims-scale").value == "paper"
    assert [s.value for s in app.subheader] == [*TITLES, "Rows not stored yet"]
    badges = [m for m in _markdown(app) if "-badge[" in m]
    assert len(badges) == 5
    # HISP vs random: one seed of each, so the paired rule cannot decide; the rest not measured.
    assert sum("not distinguishable" in b for b in badges) == 1
    assert sum("not measured" in b for b in badges) == 4
    assert not any(c.value.startswith("Smaller than the paper") for c in app.caption)
    assert any("Source: Michel, Levy and Neubig" in c.value for c in app.caption)
    assert any(
        f"2 of the {len(plan)} rows of this scale are stored" in c.value for c in app.caption
    )
    assert len(app.get("plotly_chart")) == 5
    assert [b.label for b in app.button].count("Open in Runs") == 1  # only HISP has runs
    missing = next(d for d in app.dataframe if "estimated time" in d.value.columns)
    assert len(missing.value) == len(plan) - 2
    assert missing.value["how it was estimated"].str.len().min() > 0
    assert any(m.startswith("**Total estimate: about") for m in _markdown(app))
    button = next(b for b in app.button if b.label == f"Run the {len(plan) - 2} missing rows")
    button.click().run()
    assert not app.exception
    jobs = [j for j in common.executor().jobs() if j.job_id.startswith("claims-")]
    try:
        assert queued == [len(plan) - 2] and len(jobs) == 1
        assert any(f"Job `{jobs[0].job_id}`" in c.value for c in app.caption)
        # The quick scale says it cannot judge.
        app.radio(key="claims-scale").set_value("quick").run()
        assert not app.exception
        assert any("too noisy to judge any paper" in w.value for w in app.warning)
        smaller = [c.value for c in app.caption if c.value.startswith("Smaller than the paper")]
        assert any("10 random orders; the paper drew 100" in c for c in smaller)
    finally:
        for job in jobs:
            job.cancel()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(j.snapshot().finished for j in jobs):
            time.sleep(0.1)


def test_a_claims_runs_open_in_runs_and_in_compare(tmp_path: Path) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    prepared = ModelStore().find(model, data)[0]
    plan = claim_plan(prepared, scale="quick")
    record = run_pruning(next(p for p in plan if p.label == "HISP 50% · seed 0").request)
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["model_spec"] = model
    app.session_state["data_spec"] = data
    app = _open(app)
    app.radio(key="claims-scale").set_value("quick").run()
    assert app.selectbox(key="claims-run-hisp_vs_random").value == record.key
    next(b for b in app.button if b.label == "Open in Runs").click().run()
    assert not app.exception
    assert [t.value for t in app.title] == ["Runs"]
    assert app.text_input(key="runs-filter").value == record.key

    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["model_spec"] = model
    app.session_state["data_spec"] = data
    app = _open(app)
    app.radio(key="claims-scale").set_value("quick").run()
    next(b for b in app.button if b.label == "Open in Compare").click().run()
    assert not app.exception
    assert [t.value for t in app.title] == ["Compare"]
    assert app.multiselect(key="compare-methods").value == ["hisp"]
    chosen = next(m for m in app.multiselect if m.key and m.key.startswith("compare-runs-"))
    assert chosen.value == [record.key]
