"""File names built from user text (run names, labels) that cannot leave their folder.

A run name such as ``../../.bashrc`` or ``C:\\evil`` must never become a path: every file name
that carries user text goes through :func:`safe_filename`, which keeps letters, digits, ``-``,
``_`` and single dots, and nothing that a file system or a browser's download dialog reads as a
folder, a drive, a device or a hidden file.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_NAME_CHARS", "safe_filename"]

MAX_NAME_CHARS = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")
_DASHES = re.compile(r"-{2,}")
# Names Windows reserves for devices, with or without an extension ("con.txt" is a device too).
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)


def safe_filename(
    text: str, *, fallback: str = "headscope", max_chars: int = MAX_NAME_CHARS
) -> str:
    """A file name (no folder part) made from ``text``.

    Accents are folded to ASCII; every run of other characters (``/``, ``\\``, ``:``, spaces,
    control characters, ...) becomes one ``-``; runs of dots become one dot; leading and trailing
    ``.``, ``-`` and ``_`` go, so the result is never ``..``, hidden or empty.

    Args:
        text: user text, e.g. a run name.
        fallback: returned when nothing usable is left: a safe name, or ``""`` to let the caller
            decide what to do then.
        max_chars: the longest result, in characters.

    Returns:
        A name of ``A-Z a-z 0-9 . _ -`` that starts with a letter or digit (``_`` before a
        Windows device name such as ``CON``), or ``fallback``.

    Raises:
        ValueError: ``fallback`` is not a safe name or ``max_chars`` is below 1.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1; got {max_chars}.")
    if _clean(fallback, max_chars) != fallback:
        raise ValueError(f"fallback {fallback!r} is not a safe file name; use e.g. 'headscope'.")
    name = _clean(str(text), max_chars)
    return name if name else fallback


def _clean(text: str, max_chars: int) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    name = _DASHES.sub("-", _DOTS.sub(".", _UNSAFE.sub("-", ascii_text)))
    name = name.strip("._-")[:max_chars].rstrip("._-")
    if name.split(".", 1)[0].upper() in _RESERVED:
        name = f"_{name}"
    return name
