"""Browser test of the whole flow on a tiny model: choose model and data, prune, list, compare,
export, and reload the exported model outside the app."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from browser_support import ARTIFACTS, chromium_page, external_requests, streamlit_server
from cache.run_export import export_file_name
from cache.run_store import RunStore
from conftest import prepared_tiny_setup

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LONG = 90_000  # ms: Streamlit reruns, first imports of torch and transformers in the server


def snap(page: Page, name: str) -> None:
    """Screenshot the whole page: Streamlit scrolls inside its main block, so the viewport is
    stretched to the content's height for the shot (a full-page shot would cut it off)."""
    size = page.viewport_size or {"width": 1400, "height": 1000}
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
        "[data-testid=stSidebarContent]')].map(e => e.scrollHeight), 0)"
    )
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height + 40)})
    page.wait_for_timeout(300)  # let plotly charts resize to the new viewport
    page.screenshot(path=str(ARTIFACTS / name))
    page.set_viewport_size(size)


def assert_no_error(page: Page) -> None:
    """No raw traceback and no Streamlit exception box on the page."""
    assert page.get_by_text("Traceback").count() == 0
    assert page.get_by_test_id("stException").count() == 0


def wait_idle(page: Page) -> None:
    """Wait until the script run that the last interaction started has finished.

    The short pause lets the rerun request reach the server first (Streamlit's own browser tests
    wait the same way); the Prune page's 1 s progress fragment may start runs of its own.
    """
    page.wait_for_timeout(200)
    app = page.get_by_test_id("stApp")
    expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=LONG)


def go_to(page: Page, title: str) -> None:
    """Click a page in the sidebar navigation and wait for its title."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=LONG)


def choose_model_and_data(page: Page, model_folder: str, csv_path: Path) -> None:
    """Model & data: a local folder model and an uploaded CSV, then 'Use this model and dataset'."""
    go_to(page, "Model & data")
    page.get_by_text("Local folder", exact=True).click()
    folder = page.get_by_label("Folder with config.json and weights")
    folder.fill(model_folder)
    folder.press("Enter")
    # The folder's rerun (it reads the model's config) must land first, or it swallows the click.
    wait_idle(page)
    page.get_by_text("CSV / TSV file", exact=True).click()
    wait_idle(page)
    uploader = page.get_by_test_id("stFileUploader")
    expect(uploader).to_be_visible(timeout=LONG)
    uploader.locator("input[type=file]").set_input_files(csv_path)
    expect(page.get_by_text("Text column", exact=True)).to_be_visible(timeout=LONG)
    expect(page.get_by_text("Label column", exact=True)).to_be_visible()
    expect(page.get_by_text("120 unique texts", exact=False)).to_be_visible(timeout=LONG)
    page.get_by_role("button", name="Use this model and dataset").click()
    expect(page.get_by_text("Selected: the other pages now use")).to_be_visible(timeout=LONG)
    # The classifier prepared before the server started is found for the uploaded copy.
    expect(page.get_by_text("A classifier is prepared for this pair")).to_be_visible(timeout=LONG)
    assert_no_error(page)


def pick(page: Page, label: str, option: str) -> None:
    """Choose an option of a select box; a rerun that lands while the list is open closes it,
    so the list is opened again until the option can be clicked."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=label).get_by_role("combobox")
    for _ in range(5):
        box.click()
        choice = page.get_by_role("option", name=option)
        try:
            choice.click(timeout=3_000)
            break
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")
    expect(box).to_have_value(option, timeout=LONG)


def run_method(page: Page, option: str, sparsity: str = "0.5") -> None:
    """Prune: pick a method, set the head sparsity, press Run, wait for the stored result."""
    go_to(page, "Prune")
    expect(page.get_by_text("test accuracy", exact=False).first).to_be_visible(timeout=LONG)
    pick(page, "Method", option)
    wait_idle(page)
    page.get_by_role("spinbutton", name="Head sparsity", exact=True).fill(sparsity)
    page.get_by_role("button", name="Run", exact=True).click()
    heads_kept = page.get_by_test_id("stMetric").filter(has_text="Heads kept")
    # Tiny runs may finish before the first progress poll: the bar or the result is fine.
    expect(page.get_by_test_id("stProgress").or_(heads_kept)).to_be_visible(timeout=LONG)
    expect(heads_kept).to_contain_text("4 / 8", timeout=LONG)
    chart = page.get_by_test_id("stPlotlyChart")
    expect(chart).to_have_count(1)
    expect(chart.locator(".main-svg").first).to_be_visible(timeout=LONG)
    assert_no_error(page)


def dataframe_cells(page: Page) -> list[str]:
    """The texts of the Runs table's cells (glide-data-grid mirrors them in an a11y table)."""
    grid = page.get_by_test_id("stDataFrame")
    return [text.strip() for text in grid.locator("td").all_inner_texts()]


def toggle_row(page: Page, row: int) -> None:
    """Click the selection checkbox of a data row (0 = first row below the header).

    The grid is drawn on a canvas, so the click goes to the row-marker column's coordinates:
    Streamlit's header and rows are 35 px high and the marker column is the first ~30 px.
    """
    grid = page.get_by_test_id("stDataFrame")
    grid.click(position={"x": 15, "y": 35 + 35 * row + 17})


def test_flow_choose_prune_compare_export(tmp_path: Path) -> None:
    from cache.model_store import ModelStore
    from cache.run_store import RunStore
    from pruning.heads import remove_heads
    from pruning.models import load_pruned

    model_spec, data_spec = prepared_tiny_setup(tmp_path / "setup")
    csv_path = Path(str(data_spec.path))
    home = os.environ["HEADSCOPE_HOME"]
    with (
        streamlit_server(tmp_path / "streamlit.log", HEADSCOPE_HOME=home) as url,
        chromium_page(accept_downloads=True) as (page, requests),
    ):
        try:
            page.goto(url)
            choose_model_and_data(page, str(model_spec.path), csv_path)
            snap(page, "model-data.png")

            run_method(page, "Head importance (HISP) (hisp)")
            snap(page, "prune.png")

            page.reload()
            go_to(page, "Runs")
            expect(page.get_by_test_id("stDataFrame")).to_be_visible(timeout=LONG)
            expect(page.get_by_test_id("stDataFrame")).to_contain_text("hisp", timeout=LONG)
            assert_no_error(page)
            snap(page, "runs.png")

            # A reload starts a new session: the model and dataset are chosen again.
            choose_model_and_data(page, str(model_spec.path), csv_path)
            run_method(page, "Random heads (random)")
            go_to(page, "Runs")
            expect(page.get_by_test_id("stDataFrame")).to_contain_text("random", timeout=LONG)
            # Newest first: row 0 is the random run, row 1 the HISP run.
            toggle_row(page, 0)
            toggle_row(page, 1)
            expect(page.get_by_test_id("stPlotlyChart")).to_have_count(2, timeout=LONG)
            assert_no_error(page)
            snap(page, "runs-compare.png")

            toggle_row(page, 0)
            export = page.get_by_role("button", name="Build export")
            expect(export).to_be_visible(timeout=LONG)
            expect(page.get_by_test_id("stPlotlyChart")).to_have_count(1)
            export.click()
            download_button = page.get_by_role("button", name="Download zip")
            expect(download_button).to_be_visible(timeout=LONG)
            with page.expect_download(timeout=LONG) as download_info:
                download_button.click()
            archive = tmp_path / "export.zip"
            download_info.value.save_as(archive)
            archive_name = download_info.value.suggested_filename
            assert_no_error(page)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "flow-failure.png"))
            (ARTIFACTS / "flow-failure.html").write_text(page.content())
            raise

    summaries, problems = RunStore().list()
    assert not problems
    assert sorted(s.method for s in summaries) == ["hisp", "random"]
    hisp = RunStore().get(next(s.key for s in summaries if s.method == "hisp"))
    assert archive_name == export_file_name(hisp.key, str(hisp.info["name"]))
    prepared = ModelStore().find(model_spec, data_spec)[0]
    assert hisp.model.get("prepared_key") == prepared.key
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(tmp_path / "export")
    (exported_folder,) = (tmp_path / "export").iterdir()
    exported = load_pruned(exported_folder / "model", device="cpu")
    base = prepared.load(device="cpu")
    rebuilt = remove_heads(base.model, hisp.mask)
    inputs = base.tokenizer(
        ["a wonderful film, really lovely", "a boring plot, really clumsy and dreadful"],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        expected = rebuilt(**inputs).logits
        actual = exported.model(**inputs).logits
    assert int(hisp.mask.sum()) == 4
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)

    assert not external_requests(requests)


def test_astar_page_runs_a_search_and_replays_it(tmp_path: Path) -> None:
    model_spec, data_spec = prepared_tiny_setup(tmp_path / "setup")
    home = os.environ["HEADSCOPE_HOME"]
    with (
        streamlit_server(tmp_path / "streamlit.log", HEADSCOPE_HOME=home) as url,
        chromium_page() as (page, requests),
    ):
        try:
            page.goto(url)
            choose_model_and_data(page, str(model_spec.path), Path(str(data_spec.path)))
            go_to(page, "A* search")
            expect(page.get_by_text("No search stored yet")).to_be_visible(timeout=LONG)
            page.get_by_role("spinbutton", name="Budget (metric points)").fill("5")
            page.get_by_role("button", name="Run search").click()
            heads = page.get_by_test_id("stMetric").filter(has_text="Heads pruned")
            expect(heads).to_be_visible(timeout=LONG)
            expect(page.get_by_test_id("stMetric").filter(has_text="Evaluations")).to_be_visible()
            # Figure 8 panels of the replay: mask, sorted costs, progress; then the candidates.
            expect(page.get_by_test_id("stPlotlyChart")).to_have_count(4, timeout=LONG)
            expect(page.get_by_text("Search progress")).to_be_visible(timeout=LONG)
            expect(page.get_by_text("sorted costs").first).to_be_visible(timeout=LONG)
            assert_no_error(page)
            snap(page, "astar.png")
            page.get_by_role("button", name="Open in Runs").click()
            expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible(timeout=LONG)
            expect(page.get_by_test_id("stDataFrame")).to_contain_text("astar", timeout=LONG)
            assert_no_error(page)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "astar-failure.png"))
            raise
    (summary,) = RunStore().list()[0]
    assert summary.method == "astar"
    assert not external_requests(requests)
