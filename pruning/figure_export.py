"""PNG and SVG files of plotly figures, rendered offline by kaleido in the system's Chromium.

kaleido 1.x renders a figure in a headless Chrome/Chromium that it drives through the
``choreographer`` package. HeadScope never lets it download a browser: it hands kaleido the path
of an installed one (:func:`find_browser`: ``$HEADSCOPE_CHROMIUM``, else Debian's
``/usr/bin/chromium``, ``/usr/bin/chromium-browser`` or ``google-chrome`` on ``PATH``), turns
MathJax off (kaleido would load it from a CDN) and lets kaleido take plotly.js from the installed
plotly package, so an export makes no network request. choreographer starts the browser headless
and with ``--no-sandbox`` by default, which is what running as root (CI, containers) needs.

Starting Chromium takes seconds, so one browser is started on the first export and kept for the
life of the process (on a private event-loop thread, one export at a time); a browser that dies
or hangs is closed and the next export starts a fresh one. Every wait has a time limit: kaleido's
own ``start_sync_server`` waits forever when the browser fails to start, so it is not used.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import importlib.util
import logging
import os
import shutil
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pruning.assets import _write_atomic

__all__ = [
    "BROWSER_ENV",
    "FORMATS",
    "FigureExportError",
    "close_exporter",
    "export_available",
    "figure_bytes",
    "find_browser",
    "write_figure",
]

logger = logging.getLogger(__name__)

BROWSER_ENV = "HEADSCOPE_CHROMIUM"
FORMATS = ("png", "svg")
# Debian/Ubuntu install paths first, then Google's build wherever PATH finds it.
_BROWSER_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
_BROWSER_NAMES = ("google-chrome",)
START_TIMEOUT_S = 60.0
RENDER_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 10.0
# The page kaleido renders in: no MathJax (its default loads it from a CDN); plotly.js is then
# the installed plotly package's file, kaleido's default when plotly is importable.
PAGE_OPTIONS: dict[str, Any] = {"mathjax": False}
RETRY_AFTER_S = 300.0  # a browser that failed to start is tried again after this

_T = TypeVar("_T")


class FigureExportError(RuntimeError):
    """A figure could not be rendered (no browser, the browser failed, or it timed out)."""


def find_browser() -> str | None:
    """The Chrome/Chromium executable exports use, or None when there is none.

    ``$HEADSCOPE_CHROMIUM`` wins when set (even when it names no executable, so that a wrong
    setting is reported rather than silently replaced); then ``/usr/bin/chromium``,
    ``/usr/bin/chromium-browser`` and ``google-chrome`` on ``PATH``.
    """
    override = os.environ.get(BROWSER_ENV, "").strip()
    if override:
        return override
    for path in _BROWSER_PATHS:
        if _is_executable(path):
            return path
    for name in _BROWSER_NAMES:
        if found := shutil.which(name):
            return found
    return None


def export_available() -> tuple[bool, str]:
    """Whether PNG/SVG export can work here, and a sentence that says why (not).

    Cheap (no browser is started): kaleido must be installed and a browser found; a browser that
    failed to start in this process in the last few minutes counts as unavailable, with the reason.
    """
    try:
        _usable_browser()
    except FigureExportError as error:
        return False, str(error)
    return True, f"PNG and SVG are rendered offline by {find_browser()}."


def figure_bytes(
    fig: Any,
    fmt: str,
    *,
    scale: float = 2,
    width: int | None = None,
    height: int | None = None,
) -> bytes:
    """A plotly figure as PNG or SVG bytes.

    Args:
        fig: a ``plotly.graph_objects.Figure`` or its dict.
        fmt: ``"png"`` or ``"svg"`` (any case).
        scale: pixel density of a PNG (2 = twice the layout's pixels); SVG ignores it.
        width, height: the layout size in pixels; default: the figure's own, else 700 x 500.

    Raises:
        ValueError: an unknown format or a scale that is not positive.
        FigureExportError: no browser, or the browser failed or timed out.
    """
    fmt = _check_format(fmt)
    if not scale > 0:
        raise ValueError(f"scale must be > 0 (got {scale}); 1 keeps the layout's pixels.")
    browser = _usable_browser()
    spec = fig.to_dict() if hasattr(fig, "to_dict") else fig
    options: dict[str, Any] = {"format": fmt, "scale": scale}
    if width is not None:
        options["width"] = width
    if height is not None:
        options["height"] = height
    with _LOCK:
        renderer = _renderer(browser)
        try:
            data = renderer.render(spec, options)
        except Exception as error:
            # A browser that failed once may be wedged: the next export starts a fresh one.
            _close_renderer()
            raise FigureExportError(f"Chromium could not render the figure: {error!r}") from error
    return data if isinstance(data, bytes) else str(data).encode()


def write_figure(
    fig: Any,
    path: str | os.PathLike[str],
    *,
    scale: float = 2,
    width: int | None = None,
    height: int | None = None,
) -> Path:
    """Write ``fig`` to ``path`` as PNG or SVG, chosen by the suffix; atomic (temp file + rename).

    Returns:
        The path written.

    Raises:
        ValueError: the suffix is neither ``.png`` nor ``.svg``.
        FigureExportError: as :func:`figure_bytes`.
    """
    target = Path(path)
    fmt = _check_format(target.suffix.lstrip("."), what=f"the suffix of {target.name!r}")
    _write_atomic(target, figure_bytes(fig, fmt, scale=scale, width=width, height=height))
    return target


def close_exporter() -> None:
    """Close the export browser, if one runs (the next export starts a fresh one)."""
    with _LOCK:
        _close_renderer()


def _check_format(fmt: str, *, what: str = "the format") -> str:
    normal = fmt.lower()
    if normal not in FORMATS:
        raise ValueError(
            f"{what} is {fmt!r}: figures export as 'png' or 'svg' only (e.g. chart.png)."
        )
    return normal


def _usable_browser() -> str:
    """The browser to export with; FigureExportError with the reason when there is none."""
    if importlib.util.find_spec("kaleido") is None:
        raise FigureExportError(
            "PNG/SVG export needs the kaleido package (`make setup` installs it)."
        )
    browser = find_browser()
    if browser is None:
        raise FigureExportError(
            "PNG/SVG export needs Chromium: install Debian's chromium (apt-get install chromium) "
            f"or set {BROWSER_ENV} to a Chrome or Chromium executable."
        )
    if not _is_executable(browser):
        raise FigureExportError(
            f"{BROWSER_ENV}={browser} is not an executable file, so PNG/SVG export is off."
        )
    failure = _FAILURES.get(browser)
    if failure is not None and time.monotonic() - failure[1] < RETRY_AFTER_S:
        raise FigureExportError(
            f"Chromium at {browser} did not start ({failure[0]}), so PNG/SVG export is off; "
            f"it is tried again after {RETRY_AFTER_S:g} s."
        )
    return browser


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


class _Renderer:
    """One kaleido browser on a private event-loop thread, reused across exports."""

    def __init__(self, browser: str) -> None:
        self.browser = browser
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="headscope-figure-export", daemon=True
        )
        self._kaleido: Any = None

    def start(self) -> None:
        self._thread.start()
        self._call(self._open(), START_TIMEOUT_S)

    def alive(self) -> bool:
        process = getattr(self._kaleido, "subprocess", None)
        return process is not None and process.poll() is None

    def render(self, spec: Any, options: dict[str, Any]) -> Any:
        return self._call(self._kaleido.calc_fig(spec, opts=options), RENDER_TIMEOUT_S)

    def close(self) -> None:
        if self._kaleido is not None:
            try:
                self._call(self._kaleido.close(), CLOSE_TIMEOUT_S)
            except Exception as error:
                logger.warning("closing the export browser failed: %r", error)
            self._kaleido = None
        if self._thread.is_alive():
            try:
                self._call(_cancel_pending(), CLOSE_TIMEOUT_S)
            except Exception as error:
                logger.warning("stopping the export browser's tasks failed: %r", error)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    async def _open(self) -> None:
        from kaleido import Kaleido

        # Kept before open() so that close() also ends a browser whose start timed out.
        self._kaleido = Kaleido(path=self.browser, n=1, timeout=RENDER_TIMEOUT_S, **PAGE_OPTIONS)
        await self._kaleido.open()

    def _call(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer from Chromium within {timeout:g} s") from None


async def _cancel_pending() -> None:
    """Cancel and await the loop's other tasks (choreographer's watchdog) before it stops."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _first_line(error: BaseException) -> str:
    """A short reason: choreographer's errors carry several sentences as separate arguments."""
    first = error.args[0] if error.args else ""
    text = str(first).strip().splitlines()[0] if str(first).strip() else type(error).__name__
    return f"{type(error).__name__}: {text}"[:200]


_LOCK = threading.Lock()
_RENDERERS: list[_Renderer] = []  # at most one: the running browser
# browser path -> (why it failed to start, time.monotonic() then)
_FAILURES: dict[str, tuple[str, float]] = {}
_EXIT_HOOK: list[bool] = []  # one atexit hook, registered with the first browser


def _renderer(browser: str) -> _Renderer:
    """The running renderer for ``browser``, started when needed (call under ``_LOCK``)."""
    if _RENDERERS and (_RENDERERS[0].browser != browser or not _RENDERERS[0].alive()):
        _close_renderer()
    if not _RENDERERS:
        renderer = _Renderer(browser)
        try:
            renderer.start()
        except Exception as error:
            renderer.close()
            reason = _first_line(error)
            _FAILURES[browser] = (reason, time.monotonic())
            raise FigureExportError(f"Chromium at {browser} did not start: {reason}") from error
        _FAILURES.pop(browser, None)
        _RENDERERS.append(renderer)
        if not _EXIT_HOOK:
            atexit.register(close_exporter)
            _EXIT_HOOK.append(True)
        logger.info("figure export: started %s", browser)
    return _RENDERERS[0]


def _close_renderer() -> None:
    while _RENDERERS:
        _RENDERERS.pop().close()
