"""The pages/ layout that Streamlit's first-load page list depends on (fast: nothing runs).

Until app.py first calls ``st.navigation`` in a server process, Streamlit treats ``pages/`` as a
legacy multipage folder and lists every ``pages/*.py`` file in the sidebar, linked as
``/<file name>``. So every file directly in ``pages/`` must be one of app.py's pages, at that URL;
helpers live in ``pages/support/``, which that list leaves out. tests/test_browser.py checks the
list a browser actually shows.
"""

from __future__ import annotations

from pathlib import Path

from conftest import APP_PY, app_pages

PAGES_DIR = APP_PY.parent / "pages"


def test_every_file_directly_in_pages_is_a_page_of_the_app() -> None:
    files = {f"pages/{path.name}" for path in PAGES_DIR.glob("*.py")}
    registered = [page.script for page in app_pages()]
    assert len(registered) == len(set(registered)), f"a page is registered twice: {registered}"
    not_pages = sorted(files - set(registered))
    assert not not_pages, (
        f"{not_pages} sit directly in pages/ but app.py registers no st.Page for them: Streamlit "
        "lists them on a first load as links to pages that do not exist. Move helpers to "
        "pages/support/."
    )
    missing = sorted(set(registered) - files)
    assert not missing, f"app.py registers pages that are not files directly in pages/: {missing}"


def test_helpers_live_in_a_package_streamlit_does_not_list() -> None:
    support = PAGES_DIR / "support"
    assert (support / "__init__.py").is_file()
    helpers = {path.name for path in support.glob("*.py")}
    assert {"common.py", "embeddings_work.py", "explain_work.py"} <= helpers
    assert not any(Path(page.script).parent.name == "support" for page in app_pages())


def test_each_page_is_served_where_the_first_load_list_links_it() -> None:
    pages = app_pages()
    assert [page.default for page in pages].count(True) == 1
    # The first-load list links pages/x.py as /x; an explicit url_path would move the page away.
    moved = [page.script for page in pages if page.url_path is not None]
    assert not moved, f"these pages set url_path, so the first-load link misses them: {moved}"
