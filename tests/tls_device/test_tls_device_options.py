"""The tls device's client authentication, extended master secret key and start-up checks."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from looming.devices import TcpFlow
from looming.errors import UsageError
from looming.tls.device import TlsStack
from looming.unix.clock import UnixClock
from looming.unix.kv import DirectoryKv
from looming.unix.random import UnixRandom
from looming.unix.socket_stack import SocketStack
from tests.config.tooling import looming
from tests.tls.pki import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pki = Pki(tmp_path_factory.mktemp("device-pki"))
    pki.leaf("server", ec.generate_private_key(ec.SECP256R1()), ["localhost"])
    pki.leaf("cn-only", ec.generate_private_key(ec.SECP256R1()), [], client=True)
    pki.leaf("other", ec.generate_private_key(ec.SECP256R1()), ["localhost"])
    return pki


def _store(pki: Pki, directory: Path, key_label: str = "server") -> Path:
    directory.mkdir()
    shutil.copy(pki.leaves["server"].cert_path, directory / "server.pem")
    shutil.copy(pki.leaves[key_label].key_path, directory / "server.key")
    shutil.copy(pki.ca_path, directory / "client-ca.pem")
    return directory


async def _python_client(port: int, pki: Pki, with_certificate: bool) -> bytes:
    context = ssl.create_default_context(cafile=str(pki.ca_path))
    if with_certificate:
        client = pki.leaves["cn-only"]
        context.load_cert_chain(client.cert_path, client.key_path)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        writer.write(b"who\n")
        await writer.drain()
        return await reader.read(200)
    finally:
        writer.close()


@pytest.mark.parametrize("mode", ["required", "optional"])
def test_client_auth_through_the_device(pki: Pki, tmp_path: Path, mode: str) -> None:
    store = _store(pki, tmp_path / "tls")

    async def scenario() -> tuple[bytes, bytes | BaseException]:
        stack = await TlsStack.connect(
            await SocketStack.connect("127.0.0.1"),
            DirectoryKv(store),
            UnixRandom(),
            UnixClock(),
            client_auth=mode,
        )

        async def answer(flow: TcpFlow) -> None:
            await flow.read()
            peer = getattr(flow, "peer_certificates", [])
            await flow.write(peer[0].subject.rfc4514_string().encode() if peer else b"anonymous")

        listener = await stack.tcp.listen(0, answer, host="127.0.0.1")
        with_cert = await _python_client(listener.port, pki, True)
        try:
            without: bytes | BaseException = await _python_client(listener.port, pki, False)
        except (ssl.SSLError, ConnectionError) as exc:
            without = exc
        await listener.close()
        await stack.disconnect()
        return with_cert, without

    with_cert, without = asyncio.run(scenario())
    assert with_cert == b"CN=cn-only"
    if mode == "required":
        # TLS 1.3: the client learns of the refusal on its first read.
        assert isinstance(without, BaseException) or without == b"", without
    else:
        assert without == b"anonymous"


def test_mismatched_key_stops_start_up(pki: Pki, tmp_path: Path) -> None:
    store = _store(pki, tmp_path / "tls", key_label="other")

    async def scenario() -> None:
        await TlsStack.connect(
            await SocketStack.connect("127.0.0.1"), DirectoryKv(store), UnixRandom(), UnixClock()
        )

    with pytest.raises(UsageError, match="private key does not match the certificate"):
        asyncio.run(scenario())


def _app(tmp_path: Path, call: str) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "config.py").write_text(
        textwrap.dedent(
            f"""\
            from looming.config import kv_ro, main, register, stack, tls
            secure = {call}
            register("app", [main("unikernel:App", [secure])])
            """
        )
    )
    (app / "unikernel.py").write_text(
        "class App:\n    def __init__(self, stack):\n        pass\n"
        "    async def start(self):\n        pass\n"
    )
    return app


def test_bad_client_auth_names_the_line(tmp_path: Path) -> None:
    app = _app(tmp_path, "tls(stack(), kv_ro('tls'), client_auth='sometimes')")
    proc = looming(app, "configure", check=False)
    assert proc.returncode == 2
    assert f"{app / 'config.py'}:2:" in proc.stderr and "client_auth must be" in proc.stderr


def test_client_auth_and_ems_are_keys_of_the_unikernel(tmp_path: Path) -> None:
    app = _app(tmp_path, "tls(stack(), kv_ro('tls'), client_auth='optional', require_ems=False)")
    looming(app, "configure", "-t", "unix")
    main_py = (app / "_build" / "unix" / "main.py").read_text()
    assert "KeySpec('tls_client_auth', 'str', 'optional'" in main_py
    assert "KeySpec('tls_require_ems', 'bool', False" in main_py
    assert "client_auth=keys.tls_client_auth" in main_py
    assert "require_ems=keys.tls_require_ems" in main_py


def _tlslite_without_ems(port: int) -> BaseException | bytes:
    import socket

    from tlslite.api import HandshakeSettings, TLSConnection

    settings = HandshakeSettings()
    settings.minVersion = settings.maxVersion = (3, 3)
    settings.useExtendedMasterSecret = False
    settings.requireExtendedMasterSecret = False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            conn = TLSConnection(raw)
            conn.handshakeClientCert(settings=settings, serverName="localhost")
            conn.write(b"no ems\n")
            reply = bytes(conn.read())
            conn.close()
            return reply
    except Exception as exc:  # recorded and asserted by the test
        return exc


@pytest.mark.parametrize("require_ems", [True, False])
def test_require_ems_switch_of_the_device(pki: Pki, tmp_path: Path, require_ems: bool) -> None:
    store = _store(pki, tmp_path / "tls")

    async def scenario() -> BaseException | bytes:
        stack = await TlsStack.connect(
            await SocketStack.connect("127.0.0.1"),
            DirectoryKv(store),
            UnixRandom(),
            UnixClock(),
            require_ems=require_ems,
        )

        async def answer(flow: TcpFlow) -> None:
            await flow.write((await flow.read()).upper())

        listener = await stack.tcp.listen(0, answer, host="127.0.0.1")
        result = await asyncio.to_thread(_tlslite_without_ems, listener.port)
        await listener.close()
        await stack.disconnect()
        return result

    result = asyncio.run(scenario())
    if require_ems:
        assert isinstance(result, BaseException) and "handshake_failure" in str(result)
    else:
        assert result == b"NO EMS\n"
