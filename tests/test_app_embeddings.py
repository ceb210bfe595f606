"""App tests of the Embeddings page: no model, the PCA grids, bad input, a background t-SNE."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import prepared_tiny_setup

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/embeddings.py"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("server_navigation_mode", "no_autoprepare")]


def _prepared_with_run(folder: Path) -> tuple[Any, Any, str]:
    from pruning.pipeline import RunRequest, run_pruning

    model, data = prepared_tiny_setup(folder)
    record = run_pruning(
        RunRequest(method="random", config={"sparsity": 0.5}, model=model, data=data,
                   score_examples=8, eval_examples=8, device="cpu", name="half")
    )  # fmt: skip
    return model, data, record.key


def _open(specs: tuple[Any, Any] | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    if specs is not None:
        app.session_state["model_spec"], app.session_state["data_spec"] = specs
    return app.run().switch_page(PAGE).run()


def _charts(app: AppTest) -> list[dict[str, Any]]:
    return [json.loads(c.proto.spec) for c in app.get("plotly_chart")]


def _titles(app: AppTest) -> list[str]:
    return [c["layout"]["title"]["text"] for c in _charts(app)]


def _cell_notes(chart: dict[str, Any]) -> list[str]:
    return [a["text"] for a in chart["layout"]["annotations"] if a["xref"].endswith("domain")]


def _wait(app: AppTest, done: Callable[[], bool], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.5)
        app.run()


def test_without_a_prepared_classifier_the_page_says_to_prepare_one() -> None:
    app = _open()
    assert not app.exception
    assert "Embeddings" in [t.value for t in app.title]
    assert any("No classifier is prepared" in w.value for w in app.warning)
    assert not app.get("plotly_chart")


def test_pca_grids_of_the_original_and_a_run_then_a_background_tsne(tmp_path: Path) -> None:
    model, data, run_key = _prepared_with_run(tmp_path / "setup")
    app = _open((model, data))
    assert not app.exception and not app.error
    run_label = f"half · {run_key[:6]}"
    assert _titles(app)[:2] == ["original · PCA", f"{run_label} · PCA"]
    original, pruned = _charts(app)[:2]
    assert len([k for k in original["layout"] if k.startswith("xaxis")]) == 8  # 2 x 4 heads
    assert _cell_notes(original) == [] and _cell_notes(pruned).count("removed") == 4
    assert any("Each head shows" in c.value and "cap: 1,000" in c.value for c in app.caption)
    zoomed = _titles(app)[2:]
    assert zoomed[0] == "original · L0 H0 · PCA"
    next(s for s in app.selectbox if s.label == "Layer").set_value(1).run()
    next(s for s in app.selectbox if s.label == "Head").set_value(2).run()
    next(r for r in app.radio if r.label == "Colour by").set_value("token").run()
    assert not app.exception and not app.error
    assert "original · L1 H2 · PCA" in _titles(app)
    pruned_head = f"{run_label} · L1 H2 · PCA" in _titles(app)
    removed_note = any("L1 H2 was removed by pruning" in i.value for i in app.info)
    assert pruned_head != removed_note  # drawn, or said to be removed

    next(n for n in app.number_input if n.label == "Points per head (cap)").set_value(100)
    next(b for b in app.button if b.label == "Show embeddings").click().run()
    assert not app.exception and not app.error
    assert any("Each head shows 100 points" in c.value for c in app.caption)

    app.radio(key="embeddings-projection").set_value("tsne").run()
    assert not app.exception and not app.error
    start = next(b for b in app.button if b.label.startswith("Compute t-SNE"))
    assert start.label == "Compute t-SNE (2 model(s))"
    assert not app.get("plotly_chart") or all("pending" not in _cell_notes(c) for c in _charts(app))
    start.click().run()
    _wait(app, lambda: f"{run_label} · t-SNE" in _titles(app) and not _running(app))
    assert not app.exception and not app.error
    grids = _charts(app)[:2]  # then the zoomed heads
    assert [g["layout"]["title"]["text"] for g in grids] == ["original · t-SNE",
                                                              f"{run_label} · t-SNE"]  # fmt: skip
    assert "pending" not in _cell_notes(grids[0]) + _cell_notes(grids[1])
    assert not any(b.label.startswith("Compute") for b in app.button)

    app.radio(key="embeddings-projection").set_value("pca").run()  # views switch, nothing redone
    app.radio(key="embeddings-projection").set_value("tsne").run()
    assert not app.exception and not app.error
    assert not any(b.label.startswith(("Compute", "Cancel")) for b in app.button)
    assert "original · t-SNE" in _titles(app)


def _running(app: AppTest) -> bool:
    return any(b.label == "Cancel" for b in app.button)


def test_blank_own_sentences_warn_and_compute_nothing(tmp_path: Path) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["model_spec"], app.session_state["data_spec"] = model, data
    app.run().switch_page(PAGE).run()
    app.radio(key="embeddings-source").set_value("My own sentences").run()
    app.text_area[0].set_value("  \n\n   ")
    next(b for b in app.button if b.label == "Show embeddings").click().run()
    assert not app.exception and not app.error
    assert any("Type at least one sentence" in w.value for w in app.warning)


class _StopAfter:
    """A stand-in for pruning.jobs.Progress that asks to stop after ``heads`` head events."""

    def __init__(self, heads: int) -> None:
        self.heads = heads
        self.events: list[Any] = []

    def update(self, fraction: float, message: str = "", event: object = None) -> None:
        if event is not None:
            self.events.append(event)

    def should_stop(self) -> bool:
        return len(self.events) >= self.heads

    def check(self) -> None:
        from pruning.jobs import JobCancelled

        if self.should_stop():
            raise JobCancelled()


def test_a_cancelled_job_keeps_its_heads_and_the_next_one_continues(tmp_path: Path) -> None:
    from cache.model_store import ModelStore
    from pages.support.embeddings_work import embedding_work, job_id, job_payload, partial_grid
    from pruning.embedding_cache import EmbeddingRequest, ProjectionCache, load_points
    from pruning.jobs import JobCancelled
    from pruning.run_models import prepared_ref, ref_fingerprint

    model, data = prepared_tiny_setup(tmp_path / "setup")
    ref = prepared_ref(ModelStore().find(model, data)[0])
    request = EmbeddingRequest.make(["a lovely film", "an awful plot"], "tsne", max_points=20)
    payload = job_payload(ref, request)
    assert job_id(payload) == job_id(json.loads(json.dumps(payload)))

    first = _StopAfter(3)
    with pytest.raises(JobCancelled):
        embedding_work(payload)(first)  # type: ignore[arg-type]
    points = load_points(ref, request, cache=ProjectionCache())
    coords, projected = partial_grid(first.events, points)
    assert projected.sum() == 3 and projected[0, :3].all()
    stored = ProjectionCache().get_grid(request.grid_key(ref_fingerprint(ref)))
    assert stored is not None and stored.heads_done == 3 and not stored.complete

    second = _StopAfter(100)
    result = embedding_work(payload)(second)  # type: ignore[arg-type]
    assert result["heads"] == 8 and len(second.events) == 8  # 3 reused + 5 new
    coords, projected = partial_grid(second.events, points)
    assert projected.all() and coords.shape == (2, 4, points.sample.n_points, 2)
    assert np.array_equal(coords[0, :3], stored.coords[0, :3])
