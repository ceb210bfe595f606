"""``headscope attention``: offline bertviz views and head roles of the original and pruned models.

Examples::

    headscope attention "A gorgeous, witty, seductive movie."
    headscope attention "..." --run 3f2a9c --view model --out views/attention.html
    headscope attention "..." --run 3f2a9c --roles cls
    headscope attention "..." --run 3f2a9c --no-original --json

For each model (the prepared classifier unless ``--no-original``, then every ``--run``) the
command writes bertviz's head (or model) view as a self-contained HTML file named after ``--out``
with the model as suffix (``attention-original.html``, ``attention-half-3f2a9c.html``), and with
``--roles`` prints the head-role tables (:mod:`pruning.head_roles`). ``--roles`` without
``--out`` writes no HTML. The classifier is chosen as for ``headscope explain``
(:func:`pruning.cli_explain.resolve_models`). Errors about the input print one line on stderr
and exit with status 2 (``pruning.cli``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruning.cli_common import add_common_args, add_data_args, add_model_args, emit_json
from pruning.head_roles import HEAD_ROLES, SEP_TOKENS

if TYPE_CHECKING:
    import numpy as np

    from pruning.capture import SentenceCapture
    from pruning.run_models import ModelRef

__all__ = ["add_attention_command", "cmd_attention", "output_path", "role_table"]

DEFAULT_OUT = "attention.html"


def add_attention_command(commands: Any) -> None:
    """Register ``headscope attention`` on the ``headscope`` subparsers object."""
    attention = commands.add_parser(
        "attention", help="bertviz attention views (offline HTML) and head roles of the models"
    )
    attention.add_argument("text", help="the sentence to show attention for (quote it)")
    attention.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="KEY",
        help="a stored run to show as well (repeatable; `headscope runs` lists keys)",
    )
    attention.add_argument(
        "--original",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show the unpruned prepared model too (default: yes)",
    )
    attention.add_argument(
        "--view", choices=("head", "model"), default="head", help="bertviz view to write (head)"
    )
    attention.add_argument(
        "--out",
        metavar="FILE.html",
        help=f"HTML file name; one file per model, suffixed with it (default {DEFAULT_OUT}; "
        "with --roles and no --out, no HTML is written)",
    )
    attention.add_argument(
        "--roles",
        nargs="?",
        const="all",
        choices=("all", *HEAD_ROLES),
        help="print the layer x head table of one head role, or of all (the default)",
    )
    add_model_args(attention, prepared=True)
    add_data_args(attention, default="rotten_tomatoes")
    add_common_args(attention)


def output_path(out: Path, ref: ModelRef) -> Path:
    """``out`` with the model as suffix: ``attention-original.html``, ``attention-half-3f2a9c``."""
    slug = re.sub(r"[^a-z0-9]+", "-", ref.label.lower()).strip("-") or ref.key[:6]
    return out.with_name(f"{out.stem}-{slug}{out.suffix or '.html'}")


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def role_table(values: np.ndarray, *, digits: int = 2) -> list[str]:
    """Rows of a layer x head table: ``"L0   0.12  0.50     ×"`` (× = removed head)."""
    n_heads = values.shape[1]
    width = max(5, digits + 4)
    rows = ["    " + "".join(f"{f'H{h}':>{width}}" for h in range(n_heads))]
    for layer, row in enumerate(values):
        cells = "".join(
            f"{'×':>{width}}" if math.isnan(v) else f"{v:>{width}.{digits}f}" for v in row
        )
        rows.append(f"{f'L{layer}':<4}{cells}")
    return rows


def _capture(ref: ModelRef, text: str, device: Any) -> tuple[SentenceCapture, int, int, Any]:
    """(capture, untruncated token count, max length, tokenizer) of ``text`` on one model."""
    from pruning.capture import capture_sentences
    from pruning.predictor import model_max_length
    from pruning.run_models import load_ref

    loaded = load_ref(ref, device=device)
    limit = model_max_length(loaded.model, loaded.tokenizer)
    (capture,) = capture_sentences(
        loaded.model, loaded.tokenizer, [text], max_length=limit, with_qk=False
    )
    total = len(loaded.tokenizer(text, truncation=False, verbose=False)["input_ids"])
    return capture, total, limit, loaded.tokenizer


def cmd_attention(args: argparse.Namespace) -> int:
    """``headscope attention``: HTML views per model and, with --roles, head-role tables."""
    from pruning.cli_explain import resolve_models
    from pruning.data import check_text
    from pruning.head_roles import head_roles
    from pruning.models import pick_device

    check_text(args.text, "show attention for (quote it)")
    write_html = args.out is not None or args.roles is None
    build, scripts = _html_builder(args.view) if write_html else (None, {})
    prepared, refs = resolve_models(args)
    device = pick_device(args.device)
    out = Path(args.out or DEFAULT_OUT)
    report: list[dict[str, Any]] = []
    for ref in refs:
        capture, total, limit, tokenizer = _capture(ref, args.text, device)
        separators = {t for t in (tokenizer.sep_token, tokenizer.eos_token) if isinstance(t, str)}
        roles = head_roles([capture], sep_tokens=separators or SEP_TOKENS)
        present = capture.present.numpy()
        path = None
        if build is not None:
            path = output_path(out, ref)
            page = build(
                capture.tokens, capture.attentions.numpy(), present, scripts, title=ref.label
            )
            _write_atomically(path, page)
        if total > limit and not args.json:
            print(f"note: {ref.label} reads the first {limit} of {total} tokens", file=sys.stderr)
        report.append(
            {"ref": ref, "tokens": list(capture.tokens), "total": total, "limit": limit,
             "present": present, "roles": roles, "file": path}
        )  # fmt: skip
    if args.json:
        emit_json(_json_report(args, prepared.key, report))
        return 0
    _print_report(report, args.roles)
    return 0


def _html_builder(view: str) -> tuple[Any, dict[str, str]]:
    """The bertviz builder of ``view`` and the scripts it inlines.

    Raises:
        OSError: the scripts or the builders are not installed (the message says what to do:
            `headscope assets install` for the scripts).
    """
    try:
        from pruning.assets import load_asset_scripts
        from viz.bertviz_html import build_head_view_html, build_model_view_html
    except ImportError as error:
        raise OSError(
            f"The attention views need {error.name or 'a module'}, which this installation lacks; "
            "update HeadScope (or use --roles alone)."
        ) from error
    scripts = load_asset_scripts()
    return (build_head_view_html if view == "head" else build_model_view_html), scripts


def _nan_to_none(values: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in values]


def _json_report(
    args: argparse.Namespace, prepared_key: str, report: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "text": args.text,
        "view": args.view,
        "prepared_key": prepared_key,
        "roles": dict(HEAD_ROLES),
        "models": [
            {
                "label": item["ref"].label,
                "kind": item["ref"].kind,
                "key": item["ref"].key,
                "tokens": item["tokens"],
                "n_tokens": item["total"],
                "max_length": item["limit"],
                "truncated": item["total"] > item["limit"],
                "present": item["present"].tolist(),
                "file": None if item["file"] is None else str(item["file"]),
                "roles": {name: _nan_to_none(v) for name, v in item["roles"].items()},
            }
            for item in report
        ],
    }


def _print_report(report: list[dict[str, Any]], role: str | None) -> None:
    names = list(HEAD_ROLES) if role == "all" else [] if role is None else [role]
    for item in report:
        present = item["present"]
        print(
            f"{item['ref'].label}: {len(item['tokens'])} tokens, "
            f"{int(present.sum())} of {present.size} heads"
        )
        if item["file"] is not None:
            print(f"  wrote {item['file']}")
        for name in names:
            print(f"\n  {HEAD_ROLES[name]} (× = removed head)")
            for row in role_table(item["roles"][name]):
                print(f"  {row}")
        if names:
            print()
