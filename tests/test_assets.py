"""The bertviz scripts installed from the npm registry: integrity, extraction, idempotence, CLI."""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import sys
import tarfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

import pruning.assets as assets_module
from pruning.assets import (
    ASSETS,
    MANIFEST,
    Asset,
    AssetsMissing,
    asset_status,
    assets_dir,
    install_assets,
    load_asset_scripts,
)
from pruning.cli_assets import add_assets_command, cmd_assets


def make_tarball(members: dict[str, bytes]) -> bytes:
    """A gzipped npm-style tarball holding ``members`` (path -> bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def script_of(asset: Asset) -> bytes:
    return f"/* {asset.package} {asset.version} */ var {asset.name}_loaded = true;\n".encode()


class FakeRegistry:
    """Serves one test tarball per asset and counts the downloads."""

    def __init__(self, extra: dict[str, bytes] | None = None) -> None:
        self.tarballs: dict[str, bytes] = {}
        self.calls: list[str] = []
        self.fake_assets: list[Asset] = []
        for asset in ASSETS:
            members = {"package/package.json": b"{}", asset.member: script_of(asset)}
            tarball = make_tarball({**members, **(extra or {})})
            url = asset.tarball_url("https://registry.test")
            self.tarballs[url] = tarball
            self.fake_assets.append(replace(asset, integrity=integrity_of(tarball)))

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        return self.tarballs[url]


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    """A fake registry whose tarballs the module's ASSETS trust (their integrities swapped in)."""
    fake = FakeRegistry()
    monkeypatch.setattr(assets_module, "ASSETS", tuple(fake.fake_assets))
    return fake


def install(folder: Path, fetch: Callable[[str], bytes], *, force: bool = False) -> list[Path]:
    return install_assets(folder=folder, fetch=fetch, registry="https://registry.test", force=force)


def test_assets_are_the_versions_bertviz_needs() -> None:
    by_name = {asset.name: asset for asset in ASSETS}
    assert set(by_name) == {"requirejs", "d3", "jquery"}
    assert by_name["requirejs"].version == "2.3.6"
    assert by_name["d3"].version == "5.7.0"
    assert by_name["jquery"].version == "2.1.0"
    assert by_name["d3"].tarball_url() == "https://registry.npmjs.org/d3/-/d3-5.7.0.tgz"
    assert all(asset.integrity.startswith("sha512-") for asset in ASSETS)


def test_assets_dir_defaults_to_the_environment_and_honours_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HEADSCOPE_ASSETS", raising=False)
    default = assets_dir()
    assert default == Path(sys.prefix) / "share" / "headscope" / "js"
    assert not default.is_relative_to(os.environ["HEADSCOPE_HOME"])
    monkeypatch.setenv("HEADSCOPE_ASSETS", str(tmp_path))
    assert assets_dir() == tmp_path


def test_install_writes_only_the_member_and_a_manifest(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    folder = tmp_path / "js"
    written = install(folder, registry)
    assert [p.name for p in written] == [f"{a.name}-{a.version}.js" for a in ASSETS]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MANIFEST, *(p.name for p in written)]
    )
    manifest = json.loads((folder / MANIFEST).read_text())["assets"]
    for asset in assets_module.ASSETS:
        data = (folder / asset.filename).read_bytes()
        assert data == script_of(asset)
        record = manifest[asset.name]
        assert record["version"] == asset.version
        assert record["integrity"] == asset.integrity
        assert record["source"] == asset.tarball_url("https://registry.test")
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert all(
        (folder / name).stat().st_mode & 0o777 == 0o644 for name in (MANIFEST, "d3-5.7.0.js")
    )
    assert asset_status(folder) == {"requirejs": True, "d3": True, "jquery": True}
    scripts = load_asset_scripts(folder)
    assert scripts["d3"] == script_of(assets_module.ASSETS[1]).decode()


def test_install_is_idempotent_and_force_reinstalls(registry: FakeRegistry, tmp_path: Path) -> None:
    install(tmp_path, registry)
    assert len(registry.calls) == 3
    assert install(tmp_path, registry) == []
    assert len(registry.calls) == 3
    assert len(install(tmp_path, registry, force=True)) == 3
    assert len(registry.calls) == 6


def test_integrity_mismatch_is_refused_and_nothing_written(
    registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tampered = list(assets_module.ASSETS)
    tampered[2] = replace(tampered[2], integrity=integrity_of(b"something else"))
    monkeypatch.setattr(assets_module, "ASSETS", tuple(tampered))
    folder = tmp_path / "js"
    with pytest.raises(ValueError, match="jquery 2.1.0 tarball does not match npm's integrity"):
        install(folder, registry)
    assert not folder.exists() or list(folder.iterdir()) == []


def test_real_integrities_reject_a_forged_tarball(tmp_path: Path) -> None:
    forged = make_tarball({ASSETS[0].member: b"alert('forged')"})
    with pytest.raises(ValueError, match="requirejs 2.3.6 tarball does not match"):
        install_assets(folder=tmp_path, fetch=lambda url: forged)
    assert list(tmp_path.iterdir()) == []


def test_archive_paths_are_never_destinations(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    evil = {"../evil.js": b"evil", "package/../../evil2.js": b"evil", "/tmp/evil3.js": b"evil"}
    fake = FakeRegistry(extra=evil)
    monkeypatch.setattr(assets_module, "ASSETS", tuple(fake.fake_assets))
    folder = tmp_path / "deep" / "js"
    install(folder, fake)
    everything = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    expected_files = [f"deep/js/{a.filename}" for a in fake.fake_assets] + [f"deep/js/{MANIFEST}"]
    assert everything == sorted(["deep", "deep/js", *expected_files])
    assert not Path("/tmp/evil3.js").exists()


def test_missing_member_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tarball = make_tarball({"package/other.js": b"x"})
    asset = replace(ASSETS[1], integrity=integrity_of(tarball))
    monkeypatch.setattr(assets_module, "ASSETS", (asset,))
    with pytest.raises(ValueError, match=r"has no package/dist/d3\.min\.js"):
        install_assets(folder=tmp_path, fetch=lambda url: tarball)


def test_damaged_file_or_manifest_is_detected(registry: FakeRegistry, tmp_path: Path) -> None:
    install(tmp_path, registry)
    d3 = next(a for a in assets_module.ASSETS if a.name == "d3")
    (tmp_path / d3.filename).write_text("tampered")
    assert asset_status(tmp_path) == {"requirejs": True, "d3": False, "jquery": True}
    with pytest.raises(AssetsMissing, match=r"d3 5\.7\.0.*headscope assets install"):
        load_asset_scripts(tmp_path)
    assert [p.name for p in install(tmp_path, registry)] == [d3.filename]
    assert load_asset_scripts(tmp_path)["d3"] == script_of(d3).decode()
    (tmp_path / MANIFEST).write_text("{not json")
    assert asset_status(tmp_path) == {"requirejs": False, "d3": False, "jquery": False}


def test_missing_assets_say_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(AssetsMissing) as caught:
        load_asset_scripts(tmp_path / "nowhere")
    message = str(caught.value)
    assert isinstance(caught.value, OSError)
    assert "headscope assets install" in message and "make setup" in message
    assert "registry.npmjs.org" in message


def test_plain_http_registry_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="https://"):
        install_assets(folder=tmp_path, registry="http://registry.npmjs.org")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="headscope")
    add_assets_command(root.add_subparsers(dest="command", required=True))
    return root


def test_cli_status_and_install(
    registry: FakeRegistry,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HEADSCOPE_ASSETS", str(tmp_path))
    assert cmd_assets(parser().parse_args(["assets", "status", "--json"])) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ready"] is False and report["folder"] == str(tmp_path)
    assert [a["installed"] for a in report["assets"]] == [False, False, False]

    args = parser().parse_args(["assets", "install", "--registry", "https://registry.test"])
    assert (args.force, args.registry) == (False, "https://registry.test")
    monkeypatch.setattr(assets_module, "_download", registry)
    assert cmd_assets(args) == 0
    assert capsys.readouterr().out.count("installed ") == 3
    assert cmd_assets(args) == 0
    assert "already installed" in capsys.readouterr().out

    assert cmd_assets(parser().parse_args(["assets", "status"])) == 0
    assert capsys.readouterr().out.count(": ok") == 3
    assert parser().parse_args(["assets", "install", "--force"]).force is True
    with pytest.raises(SystemExit):
        parser().parse_args(["assets"])
