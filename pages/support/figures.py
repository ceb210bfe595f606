"""Every chart of the dashboard with its "Save figure" menu: PNG and SVG, rendered on the server.

Pages draw plotly figures through :func:`show_chart` instead of ``st.plotly_chart``: the chart
comes first, then a small "Save figure" popover with two downloads. The image is rendered only
when a download is clicked (a deferred ``st.download_button``), offline, by
:mod:`pruning.figure_export`; the chart's own camera button saves a PNG in the browser under the
same file name.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from cache.safe_names import safe_filename
from pruning.figure_export import export_available, figure_bytes

MIMES = {"png": "image/png", "svg": "image/svg+xml"}


def figure_file_stem(name: str) -> str:
    """``headscope-<name>``, slugified: lower case, ``A-Z a-z 0-9 . _ -`` only."""
    return f"headscope-{safe_filename(name.lower(), fallback='figure', max_chars=60)}"


def show_chart(fig: Any, name: str, *, container: Any = None, **plotly_chart_kwargs: Any) -> Any:
    """Draw ``fig`` with ``container.plotly_chart`` and offer it as PNG and SVG below.

    Args:
        fig: the plotly figure.
        name: what the chart shows, for the file names (``headscope-<name>.png``); unique on its
            page among charts drawn without a ``key``.
        container: where to draw (a column, a tab, ...); default ``st``.
        plotly_chart_kwargs: passed to ``plotly_chart`` unchanged (``key``, ``width``,
            ``on_select``, ...); a ``config`` is kept, with the camera button's file name added.

    Returns:
        What ``plotly_chart`` returns (the selection state when ``on_select`` is set).
    """
    target = st if container is None else container
    stem = figure_file_stem(name)
    config = dict(plotly_chart_kwargs.pop("config", None) or {})
    config["toImageButtonOptions"] = {
        **config.get("toImageButtonOptions", {}),
        "filename": stem,
    }
    result = target.plotly_chart(fig, config=config, **plotly_chart_kwargs)
    key = plotly_chart_kwargs.get("key")
    save_menu(target, fig, stem, key=f"save-{key if key is not None else stem}")
    return result


def save_menu(target: Any, fig: Any, stem: str, *, key: str) -> None:
    """The "Save figure" popover: PNG and SVG downloads, or one caption saying why not."""
    ok, why = export_available()
    with target.popover("Save figure", icon=":material/download:", type="tertiary"):
        if not ok:
            st.caption(f"{why} The camera icon in the chart's toolbar saves a PNG in the browser.")
            return
        for fmt, label in (("png", "PNG (2× pixels)"), ("svg", "SVG (vector)")):
            st.download_button(
                label,
                data=lambda fmt=fmt: figure_bytes(fig, fmt),
                file_name=f"{stem}.{fmt}",
                mime=MIMES[fmt],
                key=f"{key}-{fmt}",
                on_click="ignore",
                width="stretch",
            )
