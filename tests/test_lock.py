"""The install lock: what `make setup` installs is exactly what requirements.lock pins."""

from __future__ import annotations

import importlib.metadata
import re
import sysconfig
import tomllib
from pathlib import Path

import pytest

from cache.fingerprints import LOCK_PATH, lock_fingerprint, software_versions

ROOT = Path(__file__).resolve().parent.parent
# torch has its own install step (the CPU wheel here, a CUDA build for GPU users); HeadScope is
# the editable project itself.
UNPINNED = {"torch", "headscope"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock_pins(text: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock line {raw!r} is not an exact pin"
        pins[_normalise(name)] = version.strip()
    return pins


def _requirement_name(requirement: str) -> str:
    return _normalise(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def test_every_installed_package_is_pinned_by_the_lock() -> None:
    pins = _lock_pins(LOCK_PATH.read_text())
    # The environment's own site-packages: other tests may put further folders on sys.path.
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {
        _normalise(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions(path=site)
    }
    if set(installed) & {"pytest", "ruff", "mypy"} != {"pytest", "ruff", "mypy"}:
        pytest.skip("not running in the environment that `make setup` built")
    unpinned = {name: v for name, v in installed.items() if name not in pins}
    drifted = {
        name: (v, pins[name]) for name, v in installed.items() if name in pins and pins[name] != v
    }
    for name in UNPINNED:
        unpinned.pop(name, None)
        drifted.pop(name, None)
    assert not unpinned, f"installed without a pin in requirements.lock: {unpinned} (make lock)"
    assert not drifted, f"installed version differs from the lock (installed, lock): {drifted}"


def test_lock_pins_every_requirement_of_pyproject_and_the_assets() -> None:
    pins = _lock_pins(LOCK_PATH.read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted.extend(extra)
    missing = sorted(
        name for name in map(_requirement_name, wanted) if name not in pins and name != "torch"
    )
    assert not missing, f"pyproject requirements missing from requirements.lock: {missing}"
    assert "torch" not in pins, "torch has its own install step and must stay out of the lock"
    makefile = (ROOT / "Makefile").read_text()
    assets = re.search(r"^ASSETS := (.+)$", makefile, re.MULTILINE)
    assert assets is not None
    for pin in assets.group(1).split():
        name, _, version = pin.partition("==")
        assert pins.get(_normalise(name)) == version, f"{pin} differs from requirements.lock"


def test_lock_fingerprint_names_the_lock(tmp_path: Path) -> None:
    first = tmp_path / "a.lock"
    first.write_text("numpy==2.0.0\n")
    second = tmp_path / "b.lock"
    second.write_text("numpy==2.0.1\n")
    assert re.fullmatch(r"[0-9a-f]{16}", lock_fingerprint(first))
    assert lock_fingerprint(first) != lock_fingerprint(second)
    assert lock_fingerprint(tmp_path / "missing.lock") == "none"
    assert software_versions()["lock"] == lock_fingerprint(LOCK_PATH) != "none"
