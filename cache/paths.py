"""Where HeadScope keeps what it stores: ``$HEADSCOPE_HOME`` (default ``~/.cache/headscope``)."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "HEADSCOPE_HOME"


def headscope_home() -> Path:
    """The storage root, created on first use; never inside the source tree."""
    root = Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "headscope").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    """Folder of the model store (prepared and fine-tuned classifiers)."""
    path = headscope_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Folder of the run store."""
    path = headscope_home() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path
