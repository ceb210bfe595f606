"""HeadScope dashboard entry point: navigation and the shared sidebar.

Start with ``make run`` (or ``streamlit run app.py``); pages live in ``pages/`` and are wired here
explicitly with ``st.navigation``. Until that first runs in a server process, Streamlit lists every
``pages/*.py`` file as a page, so only pages sit directly in ``pages/``; their helpers are in
``pages/support/`` (tests/test_app_layout.py checks both).
"""

from __future__ import annotations

import logging

import streamlit as st
import torch
from PIL import Image, ImageDraw

from cache.paths import headscope_home
from pages.support.common import (
    JOB_PANEL_PREFIXES,
    executor_settings_ui,
    interrupted_jobs_notice,
    routed_by_app,
)
from pruning.models import pick_device

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _favicon() -> Image.Image:
    """A 6 x 6 head grid drawn in code: Streamlit serves it from 127.0.0.1 (an emoji or
    material icon favicon would be fetched from a public CDN)."""
    icon = Image.new("RGB", (48, 48), "white")
    draw = ImageDraw.Draw(icon)
    for row in range(6):
        for col in range(6):
            colour = "#1f77b4" if (row + col) % 3 else "#d62728"
            draw.rectangle([col * 8 + 1, row * 8 + 1, col * 8 + 6, row * 8 + 6], fill=colour)
    return icon


def device_label() -> str:
    """Where computation runs: the GPU's name, or the CPU with its thread count."""
    device = pick_device()
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


st.set_page_config(page_title="HeadScope", page_icon=_favicon(), layout="wide")

# Sections keep 13 pages readable; expanded=True lists every page (Streamlit otherwise folds
# the list after a few entries behind "View more", which hides Runs and Compare).
PAGES = {
    "Start": [
        st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("pages/model_data.py", title="Model & data", icon=":material/dataset:"),
    ],
    "Prune": [
        st.Page("pages/prune.py", title="Prune", icon=":material/content_cut:"),
        st.Page("pages/search.py", title="A* search", icon=":material/travel_explore:"),
        st.Page("pages/gates.py", title="Gates", icon=":material/toggle_on:"),
        st.Page("pages/deepcuts.py", title="DeepCuts", icon=":material/grain:"),
        st.Page("pages/mcap.py", title="MCAP", icon=":material/psychology:"),
    ],
    "Inspect": [
        st.Page("pages/head_editor.py", title="Head editor", icon=":material/edit:"),
        st.Page("pages/explanations.py", title="Explanations", icon=":material/lightbulb:"),
        st.Page("pages/attention.py", title="Attention", icon=":material/visibility:"),
        st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    ],
    "Results": [
        st.Page("pages/runs.py", title="Runs", icon=":material/table_view:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("pages/claims.py", title="Paper claims", icon=":material/fact_check:"),
    ],
}

navigation = st.navigation(PAGES, expanded=True)
with st.sidebar:
    st.markdown("**HeadScope**: prune attention heads, see what changed.")
    st.caption(f"Device: {device_label()} · store: `{headscope_home()}`")
    executor_settings_ui()
    # Jobs without a panel of their own (explanations, embeddings) that a restart interrupted.
    interrupted_jobs_notice(exclude=JOB_PANEL_PREFIXES)
with routed_by_app():
    navigation.run()
