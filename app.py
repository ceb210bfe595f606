"""HeadScope dashboard entry point: navigation and the shared sidebar.

Start with ``make run`` (or ``streamlit run app.py``); pages live in ``pages/`` and are wired here
explicitly with ``st.navigation`` (automatic discovery of ``pages/`` is off).
"""

from __future__ import annotations

import logging

import streamlit as st

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

st.set_page_config(page_title="HeadScope", page_icon=":material/psychology:", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
]

navigation = st.navigation(PAGES)
with st.sidebar:
    st.markdown("**HeadScope**: prune attention heads, see what changed.")
navigation.run()
