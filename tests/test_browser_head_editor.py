"""Browser test of the Head editor on the default encoder (6 x 12 heads), offline: click three
heads in the grid, see the metrics and the predictions change, save the mask as a run and find it
on the Runs page. Screenshots go to bench/screenshots/head_editor_*.png."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, expect

from browser_support import ARTIFACTS, LOCAL_PREFIXES, chromium_page, streamlit_server
from test_browser_flow import LONG, assert_no_error, snap, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOTS = Path(__file__).resolve().parents[1] / "bench" / "screenshots"
HEADS = ((0, 3), (1, 7), (2, 1))  # (layer, head) clicked in this order
N_HEADS = 12


def _block_outside(route: Route) -> None:
    if route.request.url.startswith(LOCAL_PREFIXES):
        route.continue_()
    else:
        route.abort()


def _open(page: Page, title: str) -> None:
    """The sidebar link named exactly ``title``; a collapsed navigation ("View N more", past ten
    pages) is expanded first."""
    link = page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True)
    more = page.get_by_test_id("stSidebarNavViewButton")
    if link.count() == 0 and more.count() and "more" in more.inner_text():
        more.click()
    link.click()
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=LONG)
    wait_idle(page)


def _shot(page: Page, name: str) -> None:
    """A full-height screenshot in test-artifacts, copied to bench/screenshots."""
    snap(page, name)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ARTIFACTS / name, SHOTS / name)


def _numbers(page: Page) -> tuple[str, str]:
    """The three metric tiles and the prediction table, as shown."""
    metrics = " | ".join(page.get_by_test_id("stMetric").all_inner_texts())
    return metrics, page.get_by_test_id("stTable").first.inner_text()


def _click_head(page: Page, layer: int, head: int) -> None:
    """Click a head's square. Plotly takes pointer events on its drag layer above the markers,
    so the mouse goes to the centre of the marker's box rather than to the element."""
    grid = page.get_by_test_id("stPlotlyChart").first
    square = grid.locator("g.trace.scatter").first.locator("path.point").nth(layer * N_HEADS + head)
    box = square.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


@pytest.fixture(scope="module")
def default_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The default encoder prepared on the default data in a HEADSCOPE_HOME of its own, trained
    for 30 steps: enough for its heads to matter, so an edit moves the shown numbers."""
    from pruning.data import DataSpec
    from pruning.models import ModelSpec
    from pruning.prepare import prepare_model
    from pruning.train import TrainConfig

    home = tmp_path_factory.mktemp("editor_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(home))
    try:
        prepare_model(ModelSpec(), DataSpec(), TrainConfig(max_steps=30), device="cpu")
    finally:
        patch.undo()
    return str(home)


def test_toggle_three_heads_then_save_the_mask_as_a_run(default_home: str, tmp_path: Path) -> None:
    with (
        streamlit_server(tmp_path / "streamlit.log", HEADSCOPE_HOME=default_home) as url,
        chromium_page() as (page, requests),
    ):
        page.route("**/*", _block_outside)
        try:
            page.goto(url)
            wait_idle(page)
            _open(page, "Head editor")
            grid = page.get_by_test_id("stPlotlyChart").first
            expect(grid).to_contain_text("72 of 72 heads kept · 0 switched off here", timeout=LONG)
            expect(page.get_by_text("Unedited: accuracy", exact=False)).to_be_visible(timeout=LONG)
            wait_idle(page)
            assert_no_error(page)
            before = _numbers(page)
            _shot(page, "head_editor_unedited.png")

            for count, (layer, head) in enumerate(HEADS, start=1):
                _click_head(page, layer, head)
                expect(page.get_by_test_id("stPlotlyChart").first).to_contain_text(
                    f"{72 - count} of 72 heads kept · {count} switched off here", timeout=LONG
                )
                wait_idle(page)
            assert_no_error(page)
            expect(page.get_by_text("updated in", exact=False)).to_be_visible(timeout=LONG)
            after = _numbers(page)
            assert after[0] != before[0], "the metrics did not change"
            assert after[1] != before[1], "the predictions did not change"
            # The squares clicked are the ones marked: "×" on exactly three of them.
            marks = grid.locator("g.trace.scatter").first.locator("g.textpoint text")
            assert [t for t in marks.all_text_contents() if t.strip()] == ["×"] * 3
            _shot(page, "head_editor_edited.png")

            page.get_by_role("textbox", name="Run name").fill("Three heads by hand")
            page.get_by_role("button", name="Save as run", exact=True).click()
            expect(page.get_by_text("Saved as run", exact=False)).to_be_visible(timeout=LONG)
            saved = page.get_by_text("Saved as run", exact=False).inner_text()
            key = re.search(r"[0-9a-f]{16}", saved)
            assert key is not None and "Three heads by hand" in saved
            assert_no_error(page)
            _shot(page, "head_editor_saved.png")

            _open(page, "Runs")
            runs = page.get_by_test_id("stDataFrame")
            expect(runs).to_contain_text("Three heads by hand", timeout=LONG)
            expect(runs).to_contain_text(key[0])
            expect(runs).to_contain_text("manual")
            assert_no_error(page)
            _shot(page, "head_editor_runs.png")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "head-editor-failure.png"))
            raise
    outside = [url for url in requests if not url.startswith(LOCAL_PREFIXES)]
    assert not outside, outside
