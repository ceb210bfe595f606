"""Browser test: an exported HTML report opens in headless Chromium with every network request
aborted, and all of its plotly figures render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_report import stored  # noqa: F401  (the module fixture: a home with one run per method)

from browser_support import ARTIFACTS, chromium_page
from cache.run_store import RunStore
from pruning.report import write_report

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RENDERED = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).filter(
    (div) => div.classList.contains('js-plotly-plot') && div.querySelector('.main-svg')).length"""


def test_the_report_renders_every_figure_offline(
    stored: tuple[Path, dict[str, str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    home, keys = stored
    path = write_report(list(keys.values()), tmp_path / "report.html", RunStore(home / "runs"))
    figures = path.read_text(encoding="utf-8").count('class="plotly-graph-div"')
    assert figures >= len(keys)
    with chromium_page(viewport={"width": 1300, "height": 1000}) as (page, requests):
        attempted: list[str] = []
        errors: list[str] = []

        def route(handler: Any) -> None:
            url = handler.request.url
            if url == path.as_uri():
                handler.continue_()
            else:  # anything else would need the network (or another file): refused
                attempted.append(url)
                handler.abort()

        page.route("**/*", route)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(path.as_uri())
        page.wait_for_function(f"({RENDERED})() >= {figures}", timeout=60_000)
        assert page.evaluate(RENDERED) == figures
        assert page.locator(".js-plotly-plot").count() == figures
        # Each figure draws its main SVG (plotly adds 2-3 .main-svg layers per figure).
        assert page.locator(".js-plotly-plot .main-svg").count() >= figures
        # The gate animation's play button works without a network too.
        page.get_by_text("Play", exact=False).first.click()
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=False)
    assert not errors, errors
    assert not attempted, attempted
    assert requests == [path.as_uri()]
