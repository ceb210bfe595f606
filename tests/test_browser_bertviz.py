"""The offline bertviz views in Chromium with every network request blocked.

The real require.js, d3 and jQuery are installed from the npm registry into a temporary folder
first (the test skips, saying why, when the registry cannot be reached).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from browser_support import ARTIFACTS, CHROMIUM, chromium_page
from conftest import real_tokenizer, tiny_config
from pruning.assets import install_assets, load_asset_scripts
from pruning.capture import SentenceCapture, capture_sentences
from pruning.heads import remove_heads
from viz.bertviz_html import build_head_view_html, build_model_view_html

pytestmark = pytest.mark.browser

# Layer 0 loses every head, layer 1 keeps only head 2, layer 2 keeps all four.
KEEP = torch.tensor([[False] * 4, [False, False, True, False], [True] * 4])
SENTENCE = "A gorgeous, witty, seductive movie."
LOCAL = ("file:", "data:", "about:")


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("js")
    try:
        install_assets(folder=folder)
    except OSError as error:
        pytest.skip(f"registry.npmjs.org is unreachable, cannot install the real scripts: {error}")
    return load_asset_scripts(folder)


@pytest.fixture(scope="module")
def sentence() -> SentenceCapture:
    """A pruned tiny BERT with queries and keys scaled up: attention sharp enough to see."""
    config = tiny_config("bert", layers=3, heads=4)
    config.vocab_size = real_tokenizer().vocab_size
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    suffixes = ("self.query.weight", "self.key.weight")
    weights = [p for name, p in model.named_parameters() if name.endswith(suffixes)]
    assert len(weights) == 6
    with torch.no_grad():
        for weight in weights:
            weight.mul_(20.0)
    pruned = remove_heads(model, KEEP)
    return capture_sentences(pruned, real_tokenizer(), [SENTENCE], with_qk=False)[0]


@contextmanager
def offline_page(document: str, path: Path) -> Iterator[tuple[Any, list[str], list[str]]]:
    """The document opened as file:// with every other request aborted.

    Yields the page, the aborted URLs and the console errors (page errors included).
    """
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is missing: apt-get install chromium chromium-driver")
    path.write_text(document, encoding="utf-8")
    aborted: list[str] = []
    errors: list[str] = []
    with chromium_page() as (page, _requests):

        def route(request_route: Any) -> None:
            url = request_route.request.url
            if url.startswith(LOCAL):
                request_route.continue_()
            else:
                aborted.append(url)
                request_route.abort()

        page.route("**/*", route)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(path.as_uri())
        yield page, aborted, errors


def test_head_view_renders_offline_and_marks_removed_heads(
    scripts: dict[str, str], sentence: SentenceCapture, tmp_path: Path
) -> None:
    document = build_head_view_html(
        sentence.tokens, sentence.attentions, sentence.present, scripts, title="Pruned model"
    )
    with offline_page(document, tmp_path / "head.html") as (page, aborted, errors):
        page.wait_for_selector("#vis svg .hs-removed-heads", timeout=15_000)
        assert page.input_value("#layer") == "1"
        assert page.locator("#vis svg #attention line").count() > 0
        assert page.locator(".hs-removed-head").count() == 3
        opacity = "els => Math.max(0, ...els.map(e => +e.getAttribute('stroke-opacity')))"
        kept = page.eval_on_selector_all("g.headAttention[head-index='2'] line", opacity)
        gone = page.eval_on_selector_all("g.headAttention[head-index='0'] line", opacity)
        # Only the surviving head counts: its strongest line is its largest weight, not 1/4 of it.
        assert kept == pytest.approx(float(sentence.attentions[1, 2].max()), abs=1e-3)
        assert kept > 0.5 and gone == 0
        assert "layer 0: all · layer 1: 0, 1, 3" in page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "bertviz_head.png"), full_page=True)

        page.select_option("#layer", "0")
        page.wait_for_selector("text=all heads of this layer removed", timeout=5_000)
        assert page.locator(".hs-removed-head").count() == 4
        page.select_option("#layer", "2")
        page.wait_for_selector("#vis svg .hs-removed-heads", state="attached", timeout=5_000)
        assert page.locator(".hs-removed-head").count() == 0
        assert page.locator("#vis svg #attention line").count() > 0
    assert aborted == []
    assert errors == []


def test_model_view_renders_offline_and_crosses_out_removed_heads(
    scripts: dict[str, str], sentence: SentenceCapture, tmp_path: Path
) -> None:
    document = build_model_view_html(
        sentence.tokens, sentence.attentions, sentence.present, scripts, title="Pruned model"
    )
    with offline_page(document, tmp_path / "model.html") as (page, aborted, errors):
        page.wait_for_selector("#vis svg .hs-removed-heads", timeout=15_000)
        assert page.locator("#vis svg .attn_background").count() == 12
        marked = page.eval_on_selector_all(
            ".hs-removed-head", "els => els.map(e => [+e.dataset.layer, +e.dataset.head])"
        )
        assert marked == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [1, 3]]
        drawn = page.eval_on_selector_all(
            "#vis svg line[stroke-opacity]",
            "els => els.filter(e => +e.getAttribute('stroke-opacity') > 0.01).length",
        )
        assert drawn > 0
        page.screenshot(path=str(ARTIFACTS / "bertviz_model.png"), full_page=True)
        box = page.locator("#attn_background_1_2").bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        assert page.locator("#vis svg .detail").count() > 0
    assert aborted == []
    assert errors == []
