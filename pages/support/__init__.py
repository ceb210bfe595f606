"""Helpers shared by the pages: widgets, cached resources and background work (no pages here).

They live in this subpackage, not directly in ``pages/``: before ``st.navigation`` first runs,
Streamlit lists every ``pages/*.py`` file as a page, so a helper there would show up in the
sidebar as a link to a page that does not exist.
"""
