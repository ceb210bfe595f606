"""Model fingerprints: a folder's hash follows its content; a hub model's its id and revision."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cache.fingerprints import base_model_fingerprint, folder_fingerprint
from cache.model_store import ENTRY_FILE
from conftest import save_small_bert
from pruning.models import ModelSpec


def test_folder_fingerprint_follows_content(tmp_path: Path) -> None:
    folder = save_small_bert(tmp_path / "m")
    first = folder_fingerprint(folder)
    assert first == base_model_fingerprint(ModelSpec.local(folder))
    copied = tmp_path / "copy"
    shutil.copytree(folder, copied)
    assert folder_fingerprint(copied) == first
    (copied / ENTRY_FILE).write_text("{}")  # store metadata does not change the model
    assert folder_fingerprint(copied) == first
    config = json.loads((copied / "config.json").read_text())
    config["hidden_dropout_prob"] = 0.5
    (copied / "config.json").write_text(json.dumps(config))
    assert folder_fingerprint(copied) != first
    with pytest.raises(FileNotFoundError, match="no model weights"):
        folder_fingerprint(tmp_path)


def test_hub_fingerprint_uses_id_and_revision() -> None:
    a = base_model_fingerprint(ModelSpec.hub("bert-base-uncased"))
    b = base_model_fingerprint(ModelSpec.hub("bert-base-uncased", revision="abc"))
    assert a != b and a == base_model_fingerprint(ModelSpec.hub("bert-base-uncased"))
