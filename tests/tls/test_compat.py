"""The ssl-shaped API: asyncio streams, httpx and websockets over looming TLS, against
OpenSSL's s_server and a Python ssl server; looming as the server behind asyncio."""

from __future__ import annotations

import asyncio
import ssl

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from looming.tls import TlsConfig
from looming.tls.compat import TlsContext
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .peers import free_port, server_process
from .pki import Pki


def _s_server_www(pki: Pki, port: int, *extra: str) -> list[str]:
    leaf = pki.leaves["rsa"]
    return ["openssl", "s_server", "-accept", str(port), "-cert", str(leaf.cert_path),
            "-key", str(leaf.key_path), "-www", *extra]  # fmt: skip


def test_asyncio_open_connection_against_s_server(pki: Pki) -> None:
    context = TlsContext(TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()))

    async def scenario() -> tuple[bytes, dict[str, object]]:
        port = free_port()
        async with server_process(_s_server_www(pki, port), port, "ACCEPT"):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost"
            )
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            body = await reader.read()
            info = {key: writer.get_extra_info(key) for key in ("cipher", "peercert", "ssl_object")}
            writer.close()
            await writer.wait_closed()
            return body, info

    body, info = asyncio.run(scenario())
    assert body.startswith(b"HTTP/1.0 200 ok")
    assert b"Protocol  : TLSv1.3" in body  # s_server -www describes the session it saw
    assert info["cipher"] == ("TLS_AES_128_GCM_SHA256", "TLSv1.3", 128)
    peercert = info["peercert"]
    assert isinstance(peercert, dict) and peercert["subject"] == ((("commonName", "localhost"),),)
    assert ("DNS", "localhost") in peercert["subjectAltName"]


def test_httpx_against_s_server_resumes(pki: Pki) -> None:
    context = TlsContext(TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()))

    async def scenario() -> list[httpx.Response]:
        port = free_port()
        responses = []
        async with server_process(_s_server_www(pki, port), port, "ACCEPT"):
            for _ in range(2):  # two clients: the second resumes from the context's cache
                async with httpx.AsyncClient(verify=context) as client:
                    responses.append(await client.get(f"https://localhost:{port}/"))
        return responses

    first, second = asyncio.run(scenario())
    assert first.status_code == 200 and "Reused, TLSv1.3" not in first.text
    assert second.status_code == 200 and "Reused, TLSv1.3" in second.text, second.text
    assert first.extensions["http_version"] == b"HTTP/1.0"


def test_httpx_refuses_an_untrusted_server(pki: Pki) -> None:
    context = TlsContext(TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()))

    async def scenario() -> None:
        port = free_port()
        leaf = pki.leaves["untrusted"]
        args = ["openssl", "s_server", "-accept", str(port), "-cert", str(leaf.cert_path),
                "-key", str(leaf.key_path), "-www"]  # fmt: skip
        async with server_process(args, port, "ACCEPT"), httpx.AsyncClient(verify=context) as c:
            await c.get(f"https://localhost:{port}/")

    with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
        asyncio.run(scenario())


def test_websockets_against_python_ssl_server(pki: Pki) -> None:
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf = pki.leaves["p256"]
    server_context.load_cert_chain(leaf.cert_path, leaf.key_path)
    context = TlsContext(TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()))

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(f"echo {message}")

    async def scenario() -> list[str | bytes]:
        async with ws_serve(echo, "127.0.0.1", 0, ssl=server_context) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            async with ws_connect(
                f"wss://localhost:{port}/", ssl=context, host="127.0.0.1"
            ) as websocket:
                replies = []
                for text in ("one", "two" * 5000):
                    await websocket.send(text)
                    replies.append(await websocket.recv())
                return replies

    assert asyncio.run(scenario()) == ["echo one", "echo " + "two" * 5000]


def test_looming_server_context_behind_asyncio_start_server(pki: Pki) -> None:
    server_context = TlsContext(
        TlsConfig(
            certificates=[pki.leaves["p256"].certified],
            alpn_protocols=[b"http/1.1"],
            random=UnixRandom(),
            clock=UnixClock(),
        ),
        server_side=True,
    )
    client_context = ssl.create_default_context(cafile=str(pki.ca_path))
    client_context.set_alpn_protocols(["http/1.1"])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        ssl_object = writer.get_extra_info("ssl_object")
        writer.write(line.upper() + ssl_object.selected_alpn_protocol().encode())
        await writer.drain()
        writer.close()

    async def scenario() -> bytes:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context, server_hostname="localhost"
            )
            writer.write(b"python ssl client\n")
            reply = await reader.read()
            writer.close()
            return reply

    assert asyncio.run(scenario()) == b"PYTHON SSL CLIENT\nhttp/1.1"


def test_tls_object_turns_bad_input_into_ssl_errors_with_an_alert(pki: Pki) -> None:
    context = TlsContext(
        TlsConfig(
            certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
        ),
        server_side=True,
    )
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    incoming.write(b"\x16\x03\x01\x00\x05hello")
    with pytest.raises(ssl.SSLError) as info:
        tls.do_handshake()
    assert info.value.reason == "DECODE_ERROR"
    assert outgoing.read() == b"\x15\x03\x03\x00\x02\x02\x32"  # fatal decode_error


def test_tls_object_reports_eof_without_close_notify(pki: Pki) -> None:
    context = TlsContext(
        TlsConfig(
            certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
        ),
        server_side=True,
    )
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write_eof()
    with pytest.raises(ssl.SSLEOFError):
        tls.do_handshake()
