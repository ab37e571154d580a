"""TLS 1.3 resumption by psk_ke (no (EC)DHE), an opt-in beside psk_dhe_ke.

Checked between looming's own client and server (both preferences, the
fallback when a server refuses psk_ke) and against OpenSSL both ways
(``-allow_no_dhe_kex``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from looming.tls import ClientSessionCache, TlsConfig, TlsConnection
from looming.tls.constants import ExtensionType as X
from looming.tls.constants import HandshakeType as H
from looming.tls.constants import PskKeyExchangeMode as Mode
from looming.tls.flow import TlsFlow, open_connection
from looming.tls.wire import Reader, parse_extensions
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .interop import s_client_base, s_server_args
from .peers import EchoServer, free_port, run, server_process
from .pki import Pki
from .test_openssl import exchange


def hello_extensions(hello_body: bytes, server: bool) -> dict[int, bytes]:
    r = Reader(hello_body)
    r.u16()
    r.take(32)
    r.vector(1)
    if server:
        r.u16()
        r.u8()
    else:
        r.vector(2)
        r.vector(1)
    return dict(parse_extensions(r))


class HelloRecorder:
    """A handshake rewriter that changes nothing and keeps the hellos it saw."""

    def __init__(self) -> None:
        self.hellos: list[dict[int, bytes]] = []

    def __call__(self, msg_type: int, body: bytes) -> bytes:
        if msg_type in (H.CLIENT_HELLO, H.SERVER_HELLO):
            self.hellos.append(hello_extensions(body, server=msg_type == H.SERVER_HELLO))
        return body


def handshake(client_config: TlsConfig, server_config: TlsConfig) -> TlsConnection:
    client = TlsConnection(client_config, server_side=False, server_name="localhost")
    server = TlsConnection(server_config, server_side=True)
    for _ in range(8):
        server.receive(client.bytes_to_send())
        client.receive(server.bytes_to_send())
    assert client.handshake_complete and server.handshake_complete
    assert client.resumed == server.resumed
    assert client.resumption_mode == server.resumption_mode
    return client


def configs(
    pki: Pki, client_modes: tuple[int, ...], server_modes: tuple[int, ...]
) -> tuple[TlsConfig, TlsConfig, HelloRecorder, HelloRecorder]:
    client_hellos, server_hellos = HelloRecorder(), HelloRecorder()
    client = TlsConfig(
        trust=pki.trust,
        session_cache=ClientSessionCache(),
        psk_key_exchange_modes=client_modes,
        handshake_rewriter=client_hellos,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        psk_key_exchange_modes=server_modes,
        handshake_rewriter=server_hellos,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    return client, server, client_hellos, server_hellos


def test_psk_ke_only_client_resumes_without_any_key_share(pki: Pki) -> None:
    client, server, client_hellos, server_hellos = configs(
        pki, (Mode.PSK_KE,), (Mode.PSK_KE, Mode.PSK_DHE_KE)
    )
    first = handshake(client, server)
    assert not first.resumed and client_hellos.hellos[0][X.KEY_SHARE] != b"\x00\x00"
    second = handshake(client, server)
    assert second.resumed and second.resumption_mode == Mode.PSK_KE
    resumed_hello, resumed_server_hello = client_hellos.hellos[1], server_hellos.hellos[1]
    assert resumed_hello[X.KEY_SHARE] == b"\x00\x00"  # an empty list of shares
    assert resumed_hello[X.PSK_KEY_EXCHANGE_MODES] == b"\x01\x00"
    assert X.KEY_SHARE not in resumed_server_hello and X.PRE_SHARED_KEY in resumed_server_hello
    assert second.export_keying_material("x", b"", 16) != first.export_keying_material("x", b"", 16)


def test_server_preference_decides_between_both_modes(pki: Pki) -> None:
    both = (Mode.PSK_DHE_KE, Mode.PSK_KE)
    client, server, _, server_hellos = configs(pki, both, (Mode.PSK_KE, Mode.PSK_DHE_KE))
    handshake(client, server)
    second = handshake(client, server)
    assert second.resumption_mode == Mode.PSK_KE and X.KEY_SHARE not in server_hellos.hellos[1]
    client, server, _, server_hellos = configs(pki, both, both)
    handshake(client, server)
    second = handshake(client, server)
    assert second.resumption_mode == Mode.PSK_DHE_KE and X.KEY_SHARE in server_hellos.hellos[1]


def test_server_refusing_psk_ke_asks_for_a_share_and_runs_a_full_handshake(pki: Pki) -> None:
    client, server, client_hellos, _ = configs(pki, (Mode.PSK_KE,), (Mode.PSK_DHE_KE,))
    handshake(client, server)
    second = handshake(client, server)
    assert second.hello_retried and not second.resumed and second.resumption_mode is None
    assert client_hellos.hellos[1][X.KEY_SHARE] == b"\x00\x00"
    assert client_hellos.hellos[2][X.KEY_SHARE] != b"\x00\x00"


def test_client_resumes_by_psk_ke_with_openssl_s_server(pki: Pki) -> None:
    async def main() -> tuple[TlsFlow, TlsFlow, HelloRecorder]:
        port = free_port()
        recorder = HelloRecorder()
        config = TlsConfig(
            trust=pki.trust,
            session_cache=ClientSessionCache(),
            psk_key_exchange_modes=(Mode.PSK_KE,),
            handshake_rewriter=recorder,
            random=UnixRandom(),
            clock=UnixClock(),
        )
        args = s_server_args(pki, "p256", port, "-rev", "-naccept", "2", "-allow_no_dhe_kex")
        async with server_process(args, port, "ACCEPT") as peer:
            flows = []
            for line in (b"first\n", b"second\n"):
                flow = await open_connection("127.0.0.1", port, config, server_name="localhost")
                assert await exchange(flow, line) == line[::-1][1:] + b"\n"
                await flow.close()
                flows.append(flow)
            await peer.finish()
        return flows[0], flows[1], recorder

    first, second, recorder = asyncio.run(main())
    assert not first.resumed
    assert second.resumed and second.connection.resumption_mode == Mode.PSK_KE
    assert recorder.hellos[1][X.KEY_SHARE] == b"\x00\x00"


def test_openssl_s_client_resumes_by_psk_ke_with_server(pki: Pki, tmp_path: Path) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        psk_key_exchange_modes=(Mode.PSK_KE, Mode.PSK_DHE_KE),
        random=UnixRandom(),
        clock=UnixClock(),
    )
    session_file = tmp_path / "session.pem"

    async def main() -> tuple[str, str, EchoServer]:
        async with EchoServer(config) as server:
            base = [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{server.port}",
                "-ign_eof",
                "-allow_no_dhe_kex",
                *s_client_base(pki),
            ]
            _, first, _ = await run([*base, "-sess_out", str(session_file)], b"one\n")
            _, second, _ = await run([*base, "-sess_in", str(session_file)], b"two\n")
        return first, second, server

    first, second, server = asyncio.run(main())
    assert "New," in first and "echo:one" in first
    assert "Reused," in second and "echo:two" in second
    assert [f.connection.resumption_mode for f in server.flows] == [None, Mode.PSK_KE]
