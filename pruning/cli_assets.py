"""``headscope assets``: install or check the JavaScript of the bertviz attention views.

Examples::

    headscope assets install                 # once, needs registry.npmjs.org (make setup runs it)
    headscope assets install --force --registry https://npm.example.org
    headscope assets status --json

``status`` exits with 0 when every script is installed and intact, 1 otherwise. Errors about the
input print one line on stderr and exit with status 2 (``pruning.cli``).
"""

from __future__ import annotations

import argparse
from typing import Any

from pruning.assets import ASSETS, DEFAULT_REGISTRY, asset_status, assets_dir, install_assets
from pruning.cli_common import emit_json

__all__ = ["add_assets_command", "cmd_assets"]


def add_assets_command(commands: Any) -> None:
    """Register ``headscope assets {install,status}`` on the ``headscope`` subparsers object."""
    assets = commands.add_parser(
        "assets", help="install or check the JavaScript of the attention views (offline bertviz)"
    )
    actions = assets.add_subparsers(dest="assets_command", metavar="ACTION", required=True)
    install = actions.add_parser(
        "install", help="download require.js, d3 and jQuery from the npm registry (once)"
    )
    install.add_argument(
        "--force", action="store_true", help="reinstall even when present and intact"
    )
    install.add_argument(
        "--registry",
        default=DEFAULT_REGISTRY,
        metavar="URL",
        help=f"npm registry or mirror ({DEFAULT_REGISTRY})",
    )
    status = actions.add_parser("status", help="which scripts are installed and intact")
    status.add_argument("--json", action="store_true", help="print as JSON")


def cmd_assets(args: argparse.Namespace) -> int:
    """``headscope assets install|status``."""
    folder = assets_dir()
    if args.assets_command == "install":
        written = install_assets(force=args.force, registry=args.registry, folder=folder)
        for path in written:
            print(f"installed {path}")
        if not written:
            print(f"all {len(ASSETS)} scripts already installed in {folder}")
        return 0
    status = asset_status(folder)
    ready = all(status.values())
    if getattr(args, "json", False):
        emit_json(
            {
                "folder": str(folder),
                "ready": ready,
                "assets": [
                    {
                        "name": asset.name,
                        "package": asset.package,
                        "version": asset.version,
                        "path": str(folder / asset.filename),
                        "installed": status[asset.name],
                    }
                    for asset in ASSETS
                ],
            }
        )
    else:
        print(f"folder: {folder}")
        for asset in ASSETS:
            state = "ok" if status[asset.name] else "missing or damaged"
            print(f"  {asset.package} {asset.version}: {state}")
        if not ready:
            print("run `headscope assets install` (needs registry.npmjs.org once)")
    return 0 if ready else 1
