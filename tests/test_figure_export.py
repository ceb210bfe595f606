"""PNG and SVG export of plotly figures: kaleido driving the system Chromium, offline.

The rendering tests need Debian's chromium (CI installs it before the tests, `make browser-deps`).
Outside CI they are skipped on a machine without Chromium; in CI (``CI`` set) an export that does
not work fails them.
"""

from __future__ import annotations

import os
import re
import struct
import time
from pathlib import Path

import plotly.graph_objects as go
import pytest

from pruning import figure_export
from pruning.figure_export import (
    BROWSER_ENV,
    FigureExportError,
    export_available,
    figure_bytes,
    find_browser,
    write_figure,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def require_export() -> None:
    """Skip without Chromium outside CI; fail in CI when export does not work."""
    available, why = export_available()
    if available:
        return
    browser = find_browser()
    if not os.environ.get("CI") and (browser is None or not os.access(browser, os.X_OK)):
        pytest.skip(why)
    pytest.fail(f"figure export must work here (CI installs chromium): {why}")


@pytest.fixture
def exporter() -> None:
    require_export()


def small_figure() -> go.Figure:
    return go.Figure(
        go.Bar(x=["L0H0", "L0H1", "L1H0"], y=[0.3, 0.1, 0.2]),
        layout={"title": {"text": "Head importance"}, "width": 300, "height": 200},
    )


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_png_bytes_start_with_the_png_signature_at_the_asked_scale(exporter: None) -> None:
    data = figure_bytes(small_figure(), "png", scale=2)
    assert data.startswith(PNG_SIGNATURE)
    assert png_size(data) == (600, 400)  # the layout's 300 x 200 at twice the pixels
    resized = figure_bytes(small_figure(), "PNG", scale=1, width=500, height=250)
    assert png_size(resized) == (500, 250)


def test_svg_is_svg_text_with_the_figure_in_it(exporter: None) -> None:
    text = figure_bytes(small_figure(), "svg").decode("utf-8")
    assert "<svg" in text and "</svg>" in text
    assert "Head importance" in text and "L0H1" in text


def test_the_second_export_reuses_the_running_browser(exporter: None) -> None:
    figure_bytes(small_figure(), "svg")
    [renderer] = figure_export._RENDERERS
    figure_bytes(small_figure(), "png")
    assert len(figure_export._RENDERERS) == 1 and figure_export._RENDERERS[0] is renderer
    assert renderer.alive()


def test_write_figure_picks_the_format_from_the_suffix(exporter: None, tmp_path: Path) -> None:
    png = write_figure(small_figure(), tmp_path / "out" / "heads.png")
    svg = write_figure(small_figure(), tmp_path / "out" / "heads.SVG")
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert b"<svg" in svg.read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["heads.SVG", "heads.png"]


def test_write_figure_renames_a_temporary_file_into_place(
    exporter: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "heads.svg"
    target.write_text("the old figure")
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def replace(source: str | Path, destination: str | Path) -> None:
        renames.append((Path(source), Path(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    write_figure(small_figure(), target)
    [(source, destination)] = renames
    assert destination == target and source.parent == target.parent and source != target
    assert b"<svg" in target.read_bytes()

    def failing_replace(source: str | Path, destination: str | Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_figure(small_figure(), tmp_path / "other.svg")
    # A failed write leaves neither a partial target nor its temporary file behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heads.svg"]


def test_the_page_kaleido_renders_in_loads_nothing_from_the_network() -> None:
    from kaleido import PageGenerator

    page = PageGenerator(**figure_export.PAGE_OPTIONS).generate_index()
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert len(scripts) == 2  # plotly.js and kaleido's own script, both local files
    assert all(src.startswith("file://") for src in scripts), scripts
    assert "mathjax" not in page.lower()


def test_an_unknown_format_is_refused_with_the_formats_that_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'pdf'.*'png' or 'svg'"):
        figure_bytes(small_figure(), "pdf")
    with pytest.raises(ValueError, match=r"heads\.jpg.*'png' or 'svg'"):
        write_figure(small_figure(), tmp_path / "heads.jpg")
    with pytest.raises(ValueError, match=r"suffix of 'heads'"):
        write_figure(small_figure(), tmp_path / "heads")
    with pytest.raises(ValueError, match="scale must be > 0"):
        figure_bytes(small_figure(), "png", scale=0)
    assert not list(tmp_path.iterdir())


def test_a_missing_browser_is_reported_in_a_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-chromium"
    monkeypatch.setenv(BROWSER_ENV, str(missing))
    available, why = export_available()
    assert not available
    assert why == f"{BROWSER_ENV}={missing} is not an executable file, so PNG/SVG export is off."
    with pytest.raises(FigureExportError, match="not an executable file"):
        figure_bytes(small_figure(), "png")


def test_a_browser_that_fails_to_start_is_reported_not_waited_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken-chromium"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv(BROWSER_ENV, str(broken))
    assert export_available()[0]  # nothing is started to answer that
    started = time.monotonic()
    with pytest.raises(FigureExportError, match="did not start"):
        figure_bytes(small_figure(), "png")
    assert time.monotonic() - started < figure_export.START_TIMEOUT_S
    available, why = export_available()
    assert not available and "did not start" in why and str(broken) in why
    assert not figure_export._RENDERERS


def test_the_browser_is_found_by_setting_then_install_path_then_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def executable(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
        return path

    installed = executable(tmp_path / "usr" / "chromium")
    on_path = executable(tmp_path / "bin" / "google-chrome")
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.delenv(BROWSER_ENV, raising=False)
    monkeypatch.setattr(figure_export, "_BROWSER_PATHS", (str(tmp_path / "none"), str(installed)))
    assert find_browser() == str(installed)
    monkeypatch.setattr(figure_export, "_BROWSER_PATHS", (str(tmp_path / "none"),))
    assert find_browser() == str(on_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_browser() is None
    assert not export_available()[0] and "apt-get install chromium" in export_available()[1]
    monkeypatch.setenv(BROWSER_ENV, "/opt/my-chromium")
    assert find_browser() == "/opt/my-chromium"
