"""Every chart of the dashboard carries its "Save figure" menu (PNG and SVG, rendered on click).

A static check that pages draw plotly figures only through pages.support.figures.show_chart, app
tests of show_chart itself, and the Overview page with a stored run: each chart is followed by
its menu, whose downloads name the files after the chart and render the page's own figure.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from conftest import prepared_tiny_setup
from pruning.figure_export import BROWSER_ENV
from pruning.pipeline import RunRequest, run_pruning
from test_figure_export import PNG_SIGNATURE, require_export

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
FIGURES = ROOT / "pages" / "support" / "figures.py"


def _calls(path: Path, name: str) -> Iterator[ast.Call]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called == name:
                yield node


def test_pages_draw_plotly_figures_only_through_show_chart() -> None:
    sources = sorted((ROOT / "pages").rglob("*.py"))
    direct = [
        f"{path.relative_to(ROOT)}:{call.lineno}"
        for path in sources
        if path != FIGURES
        for call in _calls(path, "plotly_chart")
    ]
    assert not direct, (
        f"plotly_chart called directly at {direct}: draw with pages.support.figures.show_chart "
        "so that the chart gets its PNG/SVG Save menu"
    )
    shown = [(path, call) for path in sources for call in _calls(path, "show_chart")]
    assert len(shown) >= 40, "the pages' charts are no longer found: is this check still valid?"
    unnamed = [
        f"{path.relative_to(ROOT)}:{call.lineno}"
        for path, call in shown
        if len(call.args) != 2 or ast.unparse(call.args[1]) in ("''", '""')
    ]
    assert not unnamed, f"show_chart needs (figure, name) at {unnamed}"


def _chart_script() -> None:
    import plotly.graph_objects as go
    import streamlit as st

    from pages.support.figures import show_chart

    bars = go.Figure(go.Bar(y=[1, 2]))
    left, _ = st.columns(2)
    show_chart(bars, "Pareto / accuracy: 50%", container=left)
    state = show_chart(
        go.Figure(go.Bar(y=[2, 1])),
        "grid",
        key="grid-chart",
        width="content",
        on_select="rerun",
        selection_mode="points",
        config={"displayModeBar": False},
    )
    st.session_state["returned"] = type(state).__name__


def _deferred(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, Callable[[], Any]]]:
    """file name -> (mime type, callable) of every deferred download the app registers."""
    registered: dict[str, tuple[str, Callable[[], Any]]] = {}
    real = MediaFileManager.add_deferred

    def add_deferred(self: Any, data: Any, mimetype: Any, *args: Any, **kwargs: Any) -> Any:
        registered[kwargs.get("file_name") or ""] = (mimetype, data)
        return real(self, data, mimetype, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    return registered


def test_show_chart_keeps_the_chart_arguments_and_adds_the_menu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = _deferred(monkeypatch)
    app = AppTest.from_function(_chart_script, default_timeout=30).run()
    assert not app.exception
    charts = app.get("plotly_chart")
    assert len(charts) == 2
    assert json.loads(charts[0].proto.config) == {
        "toImageButtonOptions": {"filename": "headscope-pareto-accuracy-50"}
    }
    assert json.loads(charts[1].proto.config) == {
        "displayModeBar": False,
        "toImageButtonOptions": {"filename": "headscope-grid"},
    }
    assert list(charts[1].proto.selection_mode) and charts[1].proto.id.endswith("grid-chart")
    assert app.session_state["returned"] == "PlotlyState"  # the selection, as plotly_chart gives
    assert [p.proto.popover.label for p in app.get("popover")] == ["Save figure"] * 2
    keys = [b.key for b in app.get("download_button")]
    assert keys == [
        "save-headscope-pareto-accuracy-50-png",
        "save-headscope-pareto-accuracy-50-svg",
        "save-grid-chart-png",
        "save-grid-chart-svg",
    ]
    assert {name: mime for name, (mime, _) in files.items()} == {
        "headscope-pareto-accuracy-50.png": "image/png",
        "headscope-pareto-accuracy-50.svg": "image/svg+xml",
        "headscope-grid.png": "image/png",
        "headscope-grid.svg": "image/svg+xml",
    }


def test_without_a_browser_the_menu_says_why_in_one_caption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BROWSER_ENV, str(tmp_path / "no-chromium"))
    app = AppTest.from_function(_chart_script, default_timeout=30).run()
    assert not app.exception and not app.error
    assert len(app.get("plotly_chart")) == 2 and not app.get("download_button")
    captions = [c.value for c in app.caption]
    assert len(captions) == 2
    assert all("PNG/SVG export is off" in c and "camera icon" in c for c in captions)
    assert all("Traceback" not in c for c in captions)


def _siblings(node: Any) -> Iterator[list[Any]]:
    """The children of every block of an AppTest tree, in page order."""
    children = getattr(node, "children", None)
    if not children:
        return
    ordered = [children[i] for i in sorted(children)]
    yield ordered
    for child in ordered:
        yield from _siblings(child)


@pytest.mark.slow
@pytest.mark.usefixtures("server_navigation_mode", "no_autoprepare")
def test_the_overview_charts_each_have_their_save_menu_below(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, data = prepared_tiny_setup(tmp_path / "setup")
    request = RunRequest(
        method="hisp",
        config={"sparsity": 0.5},
        model=model,
        data=data,
        score_examples=16,
        eval_examples=16,
        name="half",
        device="cpu",
    )
    run_pruning(request)
    files = _deferred(monkeypatch)
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["model_spec"] = model
    app.session_state["data_spec"] = data
    app.run()
    assert not app.exception and not app.error
    pairs = [
        (children[i], children[i + 1])
        for children in _siblings(app._tree)
        for i in range(len(children))
        if getattr(children[i], "type", None) == "plotly_chart"
    ]
    assert len(pairs) == 2  # the gallery's accuracy chart and newest mask
    for chart, menu in pairs:
        assert menu.type == "popover" and menu.proto.popover.label == "Save figure"
        stem = json.loads(chart.proto.config)["toImageButtonOptions"]["filename"]
        labels = [button.label for button in menu.children.values()]
        assert labels == ["PNG (2× pixels)", "SVG (vector)"]
        assert files[f"{stem}.png"][0] == "image/png"
        assert files[f"{stem}.svg"][0] == "image/svg+xml"
    assert {"headscope-gallery-pareto.png", "headscope-gallery-mask.png"} <= set(files)

    require_export()
    # A click runs the deferred callable: the page's own mask figure, rendered offline.
    png = files["headscope-gallery-mask.png"][1]()
    assert png.startswith(PNG_SIGNATURE)
    svg = files["headscope-gallery-mask.svg"][1]().decode()
    assert "<svg" in svg and "half" in svg  # the run's name titles the mask
