"""Browser test of the Attention and Embeddings pages on the default encoder (6 x 12 heads) and a
pruned run, with every request that leaves 127.0.0.1 blocked: bertviz must draw from the scripts
HeadScope serves itself, and the Q/K grids must show removed heads greyed."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, expect

from browser_support import ARTIFACTS, LOCAL_PREFIXES, chromium_page, streamlit_server
from test_browser_flow import LONG, assert_no_error, snap, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _block_outside(route: Route) -> None:
    if route.request.url.startswith(LOCAL_PREFIXES):
        route.continue_()
    else:
        route.abort()


def _open(page: Page, title: str) -> None:
    """The sidebar link whose name is exactly ``title`` (pages named alike share a prefix)."""
    nav = page.get_by_test_id("stSidebarNav")
    nav.get_by_role("link", name=title, exact=True).click()
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=LONG)
    wait_idle(page)


@pytest.fixture(scope="module")
def default_with_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The default encoder prepared on the default data (a few steps: the pages only need its
    shape and weights) and one random 50% run, in a HEADSCOPE_HOME of their own."""
    from pruning.assets import AssetsMissing, load_asset_scripts
    from pruning.data import DataSpec
    from pruning.models import ModelSpec
    from pruning.pipeline import RunRequest, run_pruning
    from pruning.prepare import prepare_model
    from pruning.train import TrainConfig

    try:
        load_asset_scripts()
    except AssetsMissing as error:
        pytest.fail(f"{error} (make setup installs them)")
    home = tmp_path_factory.mktemp("attention_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HEADSCOPE_HOME", str(home))
    try:
        prepare_model(ModelSpec(), DataSpec(), TrainConfig(max_steps=2), device="cpu")
        run_pruning(
            RunRequest(method="random", config={"sparsity": 0.5}, model=ModelSpec(),
                       data=DataSpec(), score_examples=16, eval_examples=32, device="cpu",
                       name="Random half")
        )  # fmt: skip
    finally:
        patch.undo()
    return str(home)


def test_attention_and_embeddings_pages_render_offline(
    default_with_run: str, tmp_path: Path
) -> None:
    with (
        streamlit_server(tmp_path / "streamlit.log", HEADSCOPE_HOME=default_with_run) as url,
        chromium_page() as (page, requests),
    ):
        page.route("**/*", _block_outside)
        blocked: list[str] = []
        page.on("requestfailed", lambda request: blocked.append(request.url))
        try:
            page.goto(url)
            wait_idle(page)

            _open(page, "Attention")
            # Head view (frames 0, 1) and model view (2, 3; every tab is rendered): the original
            # and the run, each drawn by bertviz into an SVG inside its component frame.
            frames = page.frame_locator("iframe[title='st.iframe']")
            expect(page.locator("iframe[title='st.iframe']")).to_have_count(4, timeout=LONG)
            for index in range(2):
                frame = page.frame_locator("iframe[title='st.iframe']").nth(index)
                expect(frame.locator("#vis svg").first).to_be_visible(timeout=LONG)
                assert frame.locator("#vis svg line, #vis svg path").count() > 0
            assert frames.nth(1).get_by_text("Removed heads", exact=False).count() > 0
            assert_no_error(page)
            snap(page, "attention-head-view.png")

            page.get_by_role("tab", name="Model view").click()
            wait_idle(page)
            run_view = page.frame_locator("iframe[title='st.iframe']").nth(3)
            expect(run_view.locator("svg").first).to_be_visible(timeout=LONG)
            assert run_view.get_by_text("Removed heads", exact=False).count() > 0

            page.get_by_role("tab", name="Head roles").click()
            wait_idle(page)
            roles = page.get_by_role("tabpanel", name="Head roles").get_by_test_id("stPlotlyChart")
            expect(roles.nth(1)).to_be_visible(timeout=LONG)
            assert_no_error(page)
            snap(page, "attention-roles.png")

            _open(page, "Embeddings")
            # PCA is the first view: a grid per model, the pruned one with removed heads.
            expect(page.get_by_text("Each head shows", exact=False)).to_be_visible(timeout=LONG)
            charts = page.get_by_test_id("stPlotlyChart")
            expect(charts.nth(1)).to_be_visible(timeout=LONG)
            expect(charts.nth(1).get_by_text("removed").first).to_be_visible(timeout=LONG)
            assert charts.nth(0).get_by_text("removed").count() == 0
            assert_no_error(page)
            snap(page, "embeddings-pca.png")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "attention-failure.png"))
            raise
    outside = [url for url in requests if not url.startswith(LOCAL_PREFIXES)]
    # Nothing tried to leave, so nothing had to be blocked.
    assert not outside, outside
    assert not [url for url in blocked if not url.startswith(LOCAL_PREFIXES)]
