"""Security settings, checked on the configuration and on a server started as `make run` starts it.

* loopback only: `.streamlit/config.toml` and `make run` bind 127.0.0.1; `make run HOST=...` is the
  documented way to bind elsewhere; the WebSocket refuses unknown Host names (DNS rebinding);
* XSRF: an upload without the XSRF cookie's token is refused (403);
* upload size: an upload over ``server.maxUploadSize`` is refused (413);
* file names: user text (run names) never makes a path; run imports refuse paths out of the
  import folder.
"""

from __future__ import annotations

import base64
import http.client
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import torch

from browser_support import free_port
from cache.run_export import export_file_name
from cache.run_format import RunRecord
from cache.run_store import RunStore
from cache.safe_names import safe_filename
from conftest import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / ".streamlit/config.toml").read_text(encoding="utf-8"))
XSRF_COOKIE = "_streamlit_xsrf"
UPLOAD_LIMIT_MB = 100  # a CSV dataset, or a run export with the default model (~90 MB)
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


# ---------------------------------------------------------------------------------------------
# A server started with the command `make run` runs


def make_run_command(**variables: str) -> list[str]:
    """The `streamlit run` command of `make run` (read with `make -n`), on this interpreter."""
    if shutil.which("make") is None:
        pytest.fail("`make` is missing: apt-get install make")
    arguments = [f"{name}={value}" for name, value in {"PY": sys.executable, **variables}.items()]
    dry_run = subprocess.run(
        ["make", "-n", "run", *arguments], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.replace("\\\n", " ")
    line = next(line for line in dry_run.splitlines() if " -m streamlit run " in line)
    return shlex.split(line)


@dataclass(frozen=True)
class Server:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def serving(
    command: list[str], port: int, folder: Path, host: str = "127.0.0.1"
) -> Iterator[Server]:
    """Run ``command`` (a streamlit server on ``host``:``port``) until the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "streamlit.log"
    env = {**os.environ, "HEADSCOPE_AUTOPREPARE": "0", "HEADSCOPE_HOME": str(folder / "home")}
    with log.open("w") as stream:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stream, stderr=stream)
        try:
            deadline = time.monotonic() + 60
            while listening_addresses(port) == set():
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"streamlit did not start:\n{log.read_text()}")
                time.sleep(0.2)
            with socket.create_connection((host, port), timeout=10):
                pass
            yield Server(port, log)
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()


def _decode_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/tcp6 writes the address as four little-endian 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (Linux /proc/net)."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        pytest.skip("reading listening sockets needs Linux's /proc/net/tcp")
    found = set()
    for table in tables:
        if not table.exists():
            continue
        for row in table.read_text().splitlines()[1:]:
            fields = row.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                found.add(_decode_address(address))
    return found


def non_loopback_address() -> str | None:
    """This machine's address toward the network, when it has one (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.fixture(scope="module")
def make_run_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    folder = tmp_path_factory.mktemp("make_run_server")
    with serving(make_run_command(PORT=str(port)), port, folder) as server:
        yield server


@contextmanager
def session(server: Server) -> Iterator[tuple[str, str]]:
    """An open browser-like session: (XSRF cookie value, session id) while the block runs."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect
    from websockets.typing import Origin, Subprotocol

    health = requests.get(f"{server.url}/_stcore/health", timeout=30)
    cookie = str(health.cookies[XSRF_COOKIE])
    with connect(
        f"ws://127.0.0.1:{server.port}/_stcore/stream",
        # Streamlit's page sends the XSRF token as the second subprotocol.
        subprotocols=[Subprotocol("streamlit"), Subprotocol(cookie)],
        additional_headers={"Cookie": f"{XSRF_COOKIE}={cookie}"},
        origin=Origin(server.url),
        open_timeout=30,
    ) as stream:
        rerun = BackMsg()
        rerun.rerun_script.query_string = ""
        stream.send(rerun.SerializeToString())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = ForwardMsg()
            message.ParseFromString(stream.recv(timeout=60))
            if message.HasField("new_session"):
                yield cookie, message.new_session.initialize.session_id
                return
        pytest.fail("the server never started a session")


# ---------------------------------------------------------------------------------------------
# Loopback only, unless exposed on purpose


def test_config_binds_loopback_and_names_the_allowed_hosts() -> None:
    assert CONFIG["server"]["address"] == "127.0.0.1"
    assert CONFIG["browser"]["serverAddress"] == "127.0.0.1"
    assert sorted(CONFIG["server"]["allowedHosts"]) == ["127.0.0.1", "localhost"]


def test_make_run_binds_loopback_and_host_is_the_documented_switch() -> None:
    command = make_run_command(PORT="8501")
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    exposed = make_run_command(PORT="8501", HOST="0.0.0.0", ALLOWED_HOSTS="mybox.lan")
    assert exposed[exposed.index("--server.address") + 1] == "0.0.0.0"
    hosts = [exposed[i + 1] for i, part in enumerate(exposed) if part == "--server.allowedHosts"]
    assert hosts == ["mybox.lan"]


@pytest.mark.slow
def test_the_make_run_server_listens_on_loopback_only(make_run_server: Server) -> None:
    assert listening_addresses(make_run_server.port) <= LOOPBACK
    outside = non_loopback_address()
    if outside is not None:
        with socket.socket() as sock:
            sock.settimeout(3)
            assert sock.connect_ex((outside, make_run_server.port)) != 0


@pytest.mark.slow
def test_plain_streamlit_run_takes_loopback_and_host_names_from_the_config(tmp_path: Path) -> None:
    """`streamlit run app.py` without flags (as app.py's docstring says) is guarded as well."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    with serving(command, port, tmp_path) as server:
        assert listening_addresses(port) <= LOOPBACK
        assert_rebound_host_names_are_refused(server)


@pytest.mark.slow
def test_host_moves_the_listening_address(tmp_path: Path) -> None:
    """HOST reaches the bind address (127.0.0.2 stays on this machine, so nothing is exposed)."""
    if sys.platform != "linux":
        pytest.skip("127.0.0.2 is a loopback address on Linux only")
    port = free_port()
    command = make_run_command(PORT=str(port), HOST="127.0.0.2")
    with serving(command, port, tmp_path, host="127.0.0.2"):
        assert listening_addresses(port) == {"127.0.0.2"}


def _websocket_status(server: Server, host: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: streamlit\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request.encode())
        return sock.recv(4096).split(b"\r\n", 1)[0]


def assert_rebound_host_names_are_refused(server: Server) -> None:
    """A page whose domain was re-pointed at 127.0.0.1 cannot open a session (DNS rebinding)."""
    assert b" 101 " in _websocket_status(server, f"127.0.0.1:{server.port}")
    assert b" 101 " in _websocket_status(server, f"localhost:{server.port}")
    assert b" 403 " in _websocket_status(server, f"attacker.example:{server.port}")


@pytest.mark.slow
def test_a_rebound_host_name_cannot_open_a_session(make_run_server: Server) -> None:
    assert_rebound_host_names_are_refused(make_run_server)


# ---------------------------------------------------------------------------------------------
# XSRF and upload size


def test_config_turns_xsrf_on_and_limits_uploads() -> None:
    assert CONFIG["server"]["enableXsrfProtection"] is True
    assert CONFIG["server"]["enableCORS"] is True  # Streamlit drops XSRF when CORS is off
    assert CONFIG["server"]["maxUploadSize"] == UPLOAD_LIMIT_MB


def _upload(server: Server, session_id: str, **request: Any) -> int:
    url = f"{server.url}/_stcore/upload_file/{session_id}/file-1"
    files = {"file": ("reviews.csv", b"text,label\ngreat film,positive\n", "text/csv")}
    return requests.put(url, files=files, timeout=30, **request).status_code


@pytest.mark.slow
def test_an_upload_without_the_xsrf_token_is_refused(make_run_server: Server) -> None:
    with session(make_run_server) as (cookie, session_id):
        assert _upload(make_run_server, session_id) == 403
        assert _upload(make_run_server, session_id, cookies={XSRF_COOKIE: cookie}) == 403
        assert _upload(make_run_server, session_id, headers={"X-Xsrftoken": cookie}) == 403
        forged = cookie.rsplit("|", 2)[0] + "|" + "0" * 32 + "|" + cookie.rsplit("|", 1)[1]
        refused = _upload(
            make_run_server,
            session_id,
            cookies={XSRF_COOKIE: cookie},
            headers={"X-Xsrftoken": forged},
        )
        assert refused == 403
        # The same upload with the token is taken: the refusals above were the XSRF check.
        accepted = _upload(
            make_run_server,
            session_id,
            cookies={XSRF_COOKIE: cookie},
            headers={"X-Xsrftoken": cookie},
        )
        assert accepted == 204


@pytest.mark.slow
def test_an_upload_over_the_size_limit_is_refused_before_it_is_read(
    make_run_server: Server,
) -> None:
    with session(make_run_server) as (cookie, session_id):
        # A server without the limit would wait for the body: the timeout fails the test.
        connection = http.client.HTTPConnection("127.0.0.1", make_run_server.port, timeout=15)
        try:
            connection.putrequest("PUT", f"/_stcore/upload_file/{session_id}/big")
            connection.putheader("Content-Type", "multipart/form-data; boundary=headscope")
            connection.putheader("Content-Length", str((UPLOAD_LIMIT_MB + 1) << 20))
            connection.putheader("Cookie", f"{XSRF_COOKIE}={cookie}")
            connection.putheader("X-Xsrftoken", cookie)
            connection.endheaders()  # no body is sent: the server answers from the header
            response = connection.getresponse()
            assert response.status == 413
        finally:
            connection.close()


# ---------------------------------------------------------------------------------------------
# File names from user text, and paths in imported archives


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("../../x", "x"),
        ("/etc/passwd", "etc-passwd"),
        ("..\\..\\windows\\system32", "windows-system32"),
        ("C:\\evil.zip", "C-evil.zip"),
        ("run\x00name\n", "run-name"),
        (".hidden", "hidden"),
        ("...", "headscope"),
        ("", "headscope"),
        ("Réseau élagué 50 %", "Reseau-elague-50"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("a" * 500, "a" * 80),
    ],
)
def test_safe_filename_keeps_user_text_inside_its_folder(text: str, expected: str) -> None:
    name = safe_filename(text)
    assert name == expected
    assert "/" not in name and "\\" not in name and ".." not in name and not name.startswith(".")
    assert Path("/exports", name).resolve().parent == Path("/exports").resolve()


def test_safe_filename_refuses_an_unsafe_fallback() -> None:
    with pytest.raises(ValueError, match="fallback"):
        safe_filename("", fallback="../x")


def test_export_file_names_carry_a_sanitised_run_name() -> None:
    key = "0123456789abcdef"
    assert export_file_name(key, "../../x") == f"headscope-run-x-{key}.zip"
    assert (
        export_file_name(key, "/etc/cron.d/job", as_zip=False)
        == f"headscope-run-etc-cron.d-job-{key}"
    )
    assert export_file_name(key, "") == f"headscope-run-{key}.zip"
    assert export_file_name(key, "..") == f"headscope-run-{key}.zip"
    with pytest.raises(ValueError, match="not a run key"):
        export_file_name("../../etc", "name")


def stored_run(store: RunStore) -> RunRecord:
    mask = torch.tensor([[True, False, True, True]] * 3)
    key = RunStore.key_for(
        model_fingerprint="m", data_fingerprint="d", method="magnitude", config={}, seed=0
    )
    record = RunRecord(
        key=key,
        method="magnitude",
        config={},
        seed=0,
        model={"spec": {"source": "local"}, "fingerprint": "m", "label": "tiny"},
        data={"spec": {"name": "csv"}, "fingerprint": "d", "label_names": ["LABEL_0", "LABEL_1"]},
        metrics={"pruned": {"accuracy": 0.5}},
        trace=[],
        info={"name": "../../evil"},
        mask=mask,
        scores=torch.rand(3, 4),
    )
    return store.save(record)


@pytest.mark.parametrize("member", ["../../evil.txt", "/tmp/evil.txt", "run/../../evil.txt"])
def test_an_import_with_a_member_outside_its_folder_is_refused(tmp_path: Path, member: str) -> None:
    store = RunStore()
    record = stored_run(store)
    archive = store.export(
        record.key, tmp_path / "exports", as_zip=True, base_model=build_tiny_model("bert")
    )
    with zipfile.ZipFile(archive, "a") as bundle:
        bundle.writestr(member, "pwned")
    fresh = RunStore(tmp_path / "fresh" / "store")
    with pytest.raises(ValueError, match="outside the import folder"):
        fresh.import_run(archive)
    assert not list(tmp_path.rglob("evil.txt")) and not Path("/tmp/evil.txt").exists()
    assert fresh.list() == ([], [])
