"""``headscope report``: a self-contained HTML report of stored runs that opens offline.

Examples::

    headscope report 3f2a9c0d11aa42e1 --out report.html
    headscope report 3f2a9c 8b1e07 --out reports/hisp-vs-astar.html --title "HISP against A*"

Keys may be shortened to any unique prefix of at least 4 hex digits (``headscope runs`` lists
them). Errors about the input print one line on stderr and exit with status 2 (``pruning.cli``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_report_command", "cmd_report", "resolve_keys"]

MIN_PREFIX = 4
_HEX = re.compile(r"^[0-9a-f]+$")


def add_report_command(commands: Any) -> None:
    """Register ``headscope report`` on the ``headscope`` subparsers object."""
    report = commands.add_parser(
        "report", help="write a self-contained HTML report of stored runs (opens offline)"
    )
    report.add_argument(
        "keys", nargs="+", metavar="KEY", help="run keys or unique prefixes (`headscope runs`)"
    )
    report.add_argument("--out", required=True, help="the HTML file to write, e.g. report.html")
    report.add_argument("--title", default="HeadScope report", help="the report's title")


def resolve_keys(keys: Sequence[str], known: Sequence[str]) -> list[str]:
    """Full run keys for ``keys``, each a full key or a unique prefix of one in ``known``.

    Raises:
        ValueError: a key that is not hex, a prefix shorter than 4 digits, a prefix that
            matches no run or several (the message names them).
    """
    resolved = []
    for raw in keys:
        key = raw.strip().lower()
        if not _HEX.match(key):
            raise ValueError(
                f"{raw!r} is not a run key; keys are the hex digits `headscope runs` shows."
            )
        if key in known:
            resolved.append(key)
            continue
        if len(key) < MIN_PREFIX:
            raise ValueError(
                f"Run key prefix {raw!r} is too short; give at least {MIN_PREFIX} hex digits."
            )
        matches = [full for full in known if full.startswith(key)]
        if not matches:
            raise ValueError(
                f"No stored run has a key starting with {raw!r}; `headscope runs` lists them."
            )
        if len(matches) > 1:
            raise ValueError(
                f"Run key prefix {raw!r} matches {len(matches)} runs ({', '.join(matches[:5])}); "
                "give more digits."
            )
        resolved.append(matches[0])
    return resolved


def cmd_report(args: argparse.Namespace) -> int:
    """Write the report of ``args.keys`` to ``args.out``; prints where it went.

    Raises:
        ValueError: unknown or ambiguous keys, an output path that is a folder or not ``.html``
            / ``.htm`` (caught by ``pruning.cli.main``: one line on stderr, exit status 2).
    """
    from cache.run_store import RunStore
    from pruning.report import write_report

    out = Path(args.out).expanduser()
    if out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a file name such as report.html.")
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {args.out} should end in .html (the report is one HTML file).")
    store = RunStore()
    summaries, _ = store.list()
    keys = resolve_keys(args.keys, [summary.key for summary in summaries])
    target = write_report(keys, out, store, title=str(args.title))
    size = target.stat().st_size / 1e6
    print(f"wrote the report of {len(keys)} run(s) to {target} ({size:.1f} MB)")
    return 0
