"""The tls device: config.py wraps a stack in TLS, checked against curl and Python's ssl."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import textwrap
import urllib.request
from pathlib import Path

import pytest

from looming.devices import Stack, TcpFlow
from looming.tls.device import TlsStack
from looming.unix.clock import UnixClock
from looming.unix.kv import DirectoryKv
from looming.unix.random import UnixRandom
from looming.unix.socket_stack import SocketStack
from tests.config.tooling import EXAMPLES, copy_example, looming, running

EXAMPLE = EXAMPLES / "https_website"


def test_https_website_serves_curl_and_python_ssl(tmp_path: Path) -> None:
    app = copy_example("https_website", tmp_path)
    looming(app, "configure", "-t", "unix")
    main_py = (app / "_build" / "unix" / "main.py").read_text()
    assert "tls_stack = await TlsStack.connect(stack, tls, random, clock" in main_py
    looming(app, "build")
    with running(app, "--port", "0", ready=r"serving https://(?:localhost|127\.0\.0\.1):(\d+)") as (
        _,
        match,
    ):
        port = match.group(1)
        curl = subprocess.run(
            [
                "curl",
                "-sS",
                "--cacert",
                str(app / "ca.pem"),
                "-w",
                "\n%{http_version} %{http_code}",
                f"https://localhost:{port}/",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert curl.returncode == 0, curl.stderr
        body, _, status = curl.stdout.rpartition("\n")
        assert status == "1.1 200"
        assert body.encode() == (app / "htdocs" / "index.html").read_bytes()
        context = ssl.create_default_context(cafile=str(app / "ca.pem"))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/", context=context, timeout=10
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        # A client that does not trust the certificate is refused by the client side,
        # and the server carries on serving.
        untrusting = subprocess.run(
            ["curl", "-sS", f"https://localhost:{port}/"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert untrusting.returncode != 0
        # Plain HTTP to the TLS port fails the handshake without harming the server.
        plain = subprocess.run(
            ["curl", "-sS", "--max-time", "15", f"http://localhost:{port}/"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert plain.returncode != 0
        again = subprocess.run(
            ["curl", "-sS", "--cacert", str(app / "ca.pem"), f"https://localhost:{port}/"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert again.returncode == 0 and "Served over TLS by looming" in again.stdout


async def tls_stack(store_dir: Path) -> Stack:
    return await TlsStack.connect(
        await SocketStack.connect("127.0.0.1"), DirectoryKv(store_dir), UnixRandom(), UnixClock()
    )


def test_looming_client_and_server_through_the_device(tmp_path: Path) -> None:
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    (client_dir / "ca.pem").write_bytes((EXAMPLE / "ca.pem").read_bytes())

    async def scenario() -> bytes:
        server = await tls_stack(EXAMPLE / "tls")
        client = await tls_stack(client_dir)

        async def echo(flow: TcpFlow) -> None:
            while data := await flow.read():
                await flow.write(data.upper())

        listener = await server.tcp.listen(0, echo, host="127.0.0.1")
        flow = await client.tcp.connect("127.0.0.1", listener.port, timeout=10)
        assert flow.remote_address == ("127.0.0.1", listener.port)
        await flow.write(b"over tls")
        reply = await flow.read()
        await flow.close()
        await listener.close()
        await client.disconnect()
        await server.disconnect()
        return reply

    assert asyncio.run(scenario()) == b"OVER TLS"


def test_looming_client_against_python_ssl_server(tmp_path: Path) -> None:
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    (client_dir / "ca.pem").write_bytes((EXAMPLE / "ca.pem").read_bytes())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(EXAMPLE / "tls" / "server.pem", EXAMPLE / "tls" / "server.key")

    async def scenario() -> bytes:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"hello " + await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        client = await tls_stack(client_dir)
        flow = await client.tcp.connect("localhost", port, timeout=10)
        await flow.write(b"python")
        reply = await flow.read()
        await flow.close()
        await client.disconnect()
        server.close()
        await server.wait_closed()
        return reply

    assert asyncio.run(scenario()) == b"hello python"


def test_listening_without_a_certificate_is_a_clear_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        stack = await tls_stack(tmp_path)
        with pytest.raises(Exception, match="cannot listen without a certificate"):
            await stack.tcp.listen(0, lambda flow: asyncio.sleep(0))
        await stack.disconnect()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("tls(console(), kv_ro('tls'))", "tls() needs a stack device"),
        ("tls(stack(), 'tls')", "tls() needs a key-value store"),
        ("tls(stack(), kv_ro('tls'), alpn='h2')", "alpn must be a tuple"),
    ],
)
def test_bad_tls_device_names_the_line(tmp_path: Path, call: str, message: str) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "config.py").write_text(
        textwrap.dedent(
            f"""\
            from looming.config import console, kv_ro, main, register, stack, tls
            secure = {call}
            register("app", [main("unikernel:App", [secure])])
            """
        )
    )
    (app / "unikernel.py").write_text("class App:\n    def __init__(self, stack):\n        pass\n")
    proc = looming(app, "configure", check=False)
    assert proc.returncode == 2
    assert f"{app / 'config.py'}:2:" in proc.stderr and message in proc.stderr
