"""App tests of the Overview page: the gallery of stored runs and the guided first run."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from cache.model_store import ModelStore
from cache.run_store import RunStore
from conftest import prepared_tiny_setup, save_small_bert, sentiment_rows, write_csv
from pruning.attribution import Attribution, split_words
from pruning.data import DataSpec
from pruning.explain_cache import ExplanationCache, explanation_key
from pruning.models import ModelSpec
from pruning.pipeline import RunRequest, run_pruning

APP = str(Path(__file__).resolve().parents[1] / "app.py")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("server_navigation_mode", "no_autoprepare")]
TILES = {
    "pareto": "**Best accuracy at each sparsity**",
    "mask": "**Newest head mask**",
    "astar": "**A\\* search replay**",
    "gates": "**Gate evolution**",
    "explanation": "**One explanation side by side**",
}
START = "Start the first run"
# What the first run scores and evaluates on: the offer and the result both say it.
FIRST_RUN_TEXTS = re.compile(
    r"scoring every head on ([\d,]+) validation texts and comparing accuracy before and after "
    r"on ([\d,]+) validation texts"
)


def _open(model: ModelSpec, data: DataSpec) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["model_spec"] = model
    app.session_state["data_spec"] = data
    return app.run()


def _run(
    model: ModelSpec, data: DataSpec, method: str, config: dict[str, object], name: str
) -> str:
    request = RunRequest(
        method=method,
        config=config,
        model=model,
        data=data,
        score_examples=16,
        eval_examples=16,
        name=name,
        device="cpu",
    )
    return run_pruning(request).key


def _tiles(app: AppTest) -> set[str]:
    shown = {m.value for m in app.markdown}
    return {kind for kind, title in TILES.items() if title in shown}


def _texts(app: AppTest) -> str:
    parts = [e.value for e in app.markdown] + [e.value for e in app.caption]
    parts += [e.value for e in app.info] + [e.value for e in app.success]
    parts += [e.value for e in app.subheader]
    return "\n".join(str(p) for p in parts)


def _first_run_texts(texts: Sequence[str], marker: str) -> tuple[int, int]:
    """(texts scored, texts evaluated) as the element of `texts` containing `marker` says."""
    [said] = [text for text in texts if marker in text]
    found = FIRST_RUN_TEXTS.search(said)
    assert found, said
    scored, evaluated = (int(group.replace(",", "")) for group in found.groups())
    return scored, evaluated


def _explain(model_key: str, label: str, values: tuple[float, ...]) -> None:
    """Store a LIME attribution of one sentence in the explanation cache."""
    text = "a great film"
    spans = tuple(split_words(text))
    attribution = Attribution(
        method="lime",
        model_label=label,
        model_key=model_key,
        text=text,
        words=tuple(text[a:b] for a, b in spans),
        spans=spans,
        values=values,
        target=1,
        label_names=("negative", "positive"),
        probabilities=(0.3, 0.7),
        samples=20,
        seed=0,
        seconds=0.1,
    )
    ExplanationCache().put(explanation_key(model_key, text, "lime", 20, 0, None), attribution)


def _wait(app: AppTest, done: Callable[[], bool], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.5)
    app.run()


def test_the_gallery_shows_a_tile_per_kind_of_stored_result_and_links_to_its_page(
    tmp_path: Path,
) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    hisp = _run(model, data, "hisp", {"sparsity": 0.5}, "<b>HISP</b> half")
    app = _open(model, data)
    assert not app.exception and not app.error and not app.warning
    # Only tiles of the kinds stored: every run on the accuracy chart, the newest mask.
    assert _tiles(app) == {"pareto", "mask"}
    assert len(app.get("plotly_chart")) == 2
    assert not any(b.label == START for b in app.button)

    prepared = ModelStore().find(model, data)[0]
    astar = _run(model, data, "astar", {"budget": 5.0}, "A* five")
    _run(model, data, "autoattention", {"steps": 4, "snapshot_every": 2, "batch_size": 8}, "AA")
    _explain(f"prepared:{prepared.key}", "original", (0.1, 0.5, -0.2))
    _explain(f"run:{hisp}", "<b>HISP</b> half · run", (0.0, 0.4, 0.3))
    app.run()  # new runs, new keys: the cached gallery is rebuilt
    assert not app.exception and not app.error and not app.warning
    assert _tiles(app) == set(TILES)
    charts = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
    assert len(charts) == 4
    names = [trace.get("name") for trace in charts[0]["data"]]
    assert "Pareto front" in names and {"hisp", "astar", "autoattention"} <= set(names)
    assert "frames" in charts[3] and len(charts[3]["frames"]) == 3  # the gate animation
    body = app.html[0].proto.body
    assert "original" in body and "&lt;b&gt;HISP&lt;/b&gt; half · run" in body
    assert "<b>HISP</b>" not in body

    next(b for b in app.button if b.label == "Replay on the A* page").click().run()
    assert not app.exception
    assert [t.value for t in app.title] == ["A* search"]
    assert next(s for s in app.selectbox if s.label == "Search run").value == astar


def test_without_runs_the_first_run_button_runs_hisp_and_shows_the_result(
    tmp_path: Path,
) -> None:
    # 300 validation texts: more than the first run scores on or evaluates on.
    model, data = prepared_tiny_setup(tmp_path / "setup", rows=3000)
    app = _open(model, data)
    assert not app.exception and not app.error
    assert "First run" in _texts(app) and "Gallery" not in _texts(app)
    assert "prepares the classifier" not in _texts(app)  # it is prepared already
    offered = _first_run_texts([m.value for m in app.markdown], START)
    next(b for b in app.button if b.label == START).click().run()
    assert not app.exception and not app.error
    assert str(app.session_state["first_run_job"]).startswith("prune-")

    _wait(app, lambda: bool(RunStore().list()[0]))
    assert not app.exception and not app.error
    [summary] = RunStore().list()[0]
    assert (summary.method, summary.name, summary.head_sparsity) == (
        "hisp",
        "First run · HISP 50%",
        0.5,
    )
    record = RunStore().get(summary.key)
    assert record.info["settings"]["eval_split"] == "validation"
    assert "Your first run is stored" in _texts(app)
    # The offer and the result say the same counts, and they are what the run used.
    told = _first_run_texts([s.value for s in app.success], "Your first run is stored")
    assert offered == told
    settings = record.info["settings"]
    assert told == (settings["score_examples"], record.metrics["pruned"]["n_examples"])
    assert told == (settings["score_examples"], settings["eval_examples"])
    assert told[0] != told[1]
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Heads removed"] == "4 / 8"
    assert "Validation accuracy, pruned" in metrics
    assert _tiles(app) == {"pareto", "mask"}  # the new run fills the gallery too


def test_the_first_run_prepares_the_classifier_first_when_there_is_none(tmp_path: Path) -> None:
    model = ModelSpec.local(save_small_bert(tmp_path / "tiny-bert"))
    data = DataSpec(name="csv", path=str(write_csv(tmp_path / "reviews.csv", sentiment_rows(80))))
    app = _open(model, data)
    assert not app.exception and not app.error
    assert any("has no classification head" in i.value for i in app.info)
    assert "prepares the classifier, then" in _texts(app)
    next(b for b in app.button if b.label == START).click().run()
    assert not app.exception and not app.error

    _wait(app, lambda: bool(RunStore().list()[0]), seconds=120)
    assert not app.exception and not app.error
    assert ModelStore().find(model, data), "the classifier was not prepared"
    [summary] = RunStore().list()[0]
    assert summary.method == "hisp"
    # 8 validation texts: the run scores and evaluates on all of them, and the page says so.
    evaluated = RunStore().get(summary.key).metrics["pruned"]["n_examples"]
    assert evaluated == 8
    told = _first_run_texts([s.value for s in app.success], "Your first run is stored")
    assert told == (evaluated, evaluated)


DeferredDownloads = dict[str, tuple[str, str, Callable[[], object]]]


@pytest.fixture
def deferred_downloads(monkeypatch: pytest.MonkeyPatch) -> DeferredDownloads:
    """Deferred downloads registered while the app runs, by file id: (file name, MIME type,
    the callable a click runs). AppTest drops its media manager after each run."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    registered: DeferredDownloads = {}
    original = MediaFileManager.add_deferred

    def spy(
        self: MediaFileManager,
        data: Any,
        mimetype: str | None,
        *args: Any,
        **kwargs: Any,
    ) -> str:
        file_id = original(self, data, mimetype, *args, **kwargs)
        registered[file_id] = (str(kwargs.get("file_name")), str(mimetype), data)
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", spy)
    return registered


def _report_download(app: AppTest, downloads: DeferredDownloads) -> tuple[str, str]:
    """Click the Runs page's report download as a browser would: (file name, content)."""
    [button] = [e for e in app.get("download_button") if e.proto.label == "Download HTML report"]
    name, mimetype, build = downloads[button.proto.deferred_file_id]
    assert mimetype == "text/html"
    content = build()
    assert isinstance(content, str)
    return name, content


def test_the_runs_page_downloads_a_report_of_the_selected_runs(
    tmp_path: Path, deferred_downloads: DeferredDownloads
) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    first = _run(model, data, "hisp", {"sparsity": 0.5}, "../../<b>evil</b> name")
    second = _run(model, data, "random", {"sparsity": 0.25}, "random quarter")
    app = _open(model, data).switch_page("pages/runs.py").run()
    assert not app.get("download_button")  # nothing selected, nothing to report
    order = [s.key for s in RunStore().list()[0]]  # the table lists runs newest first

    app.session_state["runs-table"] = {"selection": {"rows": [order.index(first)], "columns": []}}
    app.run()
    assert not app.exception and not app.error
    name, text = _report_download(app, deferred_downloads)
    assert name == f"headscope-report-b-evil-b-name-{first}.html"
    assert text.startswith("<!DOCTYPE html>") and f"id='run-{first}'" in text
    assert "&lt;b&gt;evil&lt;/b&gt;" in text and f"id='run-{second}'" not in text

    app.session_state["runs-table"] = {"selection": {"rows": [0, 1], "columns": []}}
    app.run()
    assert not app.exception and not app.error
    name, text = _report_download(app, deferred_downloads)
    assert name.startswith("headscope-report-2-runs-") and name.endswith(".html")
    assert "<section id='comparison'>" in text
    assert f"id='run-{first}'" in text and f"id='run-{second}'" in text
