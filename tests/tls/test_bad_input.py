"""Bad input gets the alert RFC 8446 section 6.2 names and a TlsError, never a crash."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from looming.tls import (
    TLS12,
    TLS13,
    AlertDescription,
    CertificateError,
    CipherSuite,
    TlsAlertReceived,
    TlsClosed,
    TlsConfig,
    TlsConnection,
    TlsError,
    TlsProtocolError,
    TlsTruncated,
)
from looming.tls.constants import ContentType
from looming.tls.flow import StreamFlow, tls_client
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .memory import connect, seeded
from .pki import Pki


def alert_record(description: AlertDescription) -> bytes:
    return bytes((ContentType.ALERT, 3, 3, 0, 2, 2, description))


def server(pki: Pki, leaf: str = "p256", **kw: object) -> TlsConnection:
    return TlsConnection(
        TlsConfig(
            certificates=[pki.leaves[leaf].certified], random=seeded(1), **kw, clock=UnixClock()
        ),
        server_side=True,
    )  # type: ignore[arg-type]


def client_hello(pki: Pki, **kw: object) -> bytes:
    client = TlsConnection(
        TlsConfig(trust=pki.trust, random=seeded(2), **kw, clock=UnixClock()),
        server_side=False,
        server_name="localhost",
    )  # type: ignore[arg-type]
    return client.bytes_to_send()


def expect_alert(
    conn: TlsConnection, data: bytes, description: AlertDescription
) -> TlsProtocolError:
    with pytest.raises(TlsProtocolError) as info:
        conn.receive(data)
    assert info.value.description == description, info.value
    if conn.records.write is None:
        assert conn.bytes_to_send() == alert_record(description)
    else:
        assert conn.bytes_to_send()  # the alert, encrypted
    # The connection stays failed: the same error again, no crash.
    with pytest.raises(TlsProtocolError):
        conn.receive(b"\x17\x03\x03\x00\x01x")
    return info.value


def test_unknown_record_type(pki: Pki) -> None:
    expect_alert(server(pki), b"\x63\x03\x03\x00\x01x", AlertDescription.UNEXPECTED_MESSAGE)


def test_bad_record_version(pki: Pki) -> None:
    expect_alert(server(pki), b"\x16\x07\x03\x00\x01x", AlertDescription.DECODE_ERROR)


def test_oversized_plaintext_record(pki: Pki) -> None:
    length = (1 << 14) + 1
    expect_alert(
        server(pki), b"\x16\x03\x01" + length.to_bytes(2, "big"), AlertDescription.RECORD_OVERFLOW
    )


def test_application_data_before_handshake(pki: Pki) -> None:
    expect_alert(server(pki), b"\x17\x03\x03\x00\x03abc", AlertDescription.UNEXPECTED_MESSAGE)


def test_server_hello_sent_to_a_server(pki: Pki) -> None:
    message = b"\x02\x00\x00\x04" + b"\x03\x03\x00\x00"
    expect_alert(
        server(pki), b"\x16\x03\x03\x00\x08" + message, AlertDescription.UNEXPECTED_MESSAGE
    )


def test_truncated_client_hello_body(pki: Pki) -> None:
    hello = client_hello(pki)
    body = hello[5:]
    # Keep the handshake header's length but cut the body: the parser runs out.
    short = body[:4] + body[4:60]
    short = short[:1] + (len(short) - 4).to_bytes(3, "big") + short[4:]
    expect_alert(
        server(pki),
        b"\x16\x03\x01" + len(short).to_bytes(2, "big") + short,
        AlertDescription.DECODE_ERROR,
    )


def test_partial_record_waits_for_more(pki: Pki) -> None:
    conn = server(pki)
    hello = client_hello(pki)
    assert conn.receive(hello[:10]) == []
    assert conn.bytes_to_send() == b""
    conn.receive(hello[10:])
    assert conn.bytes_to_send().startswith(b"\x16\x03\x03")


def test_no_common_cipher_suite(pki: Pki) -> None:
    conn = server(pki, cipher_suites=[CipherSuite.TLS_AES_256_GCM_SHA384])
    expect_alert(
        conn,
        client_hello(pki, cipher_suites=[CipherSuite.TLS_AES_128_GCM_SHA256], versions=[TLS13]),
        AlertDescription.HANDSHAKE_FAILURE,
    )


def test_no_common_version(pki: Pki) -> None:
    conn = server(pki, versions=[TLS12])
    expect_alert(conn, client_hello(pki, versions=[TLS13]), AlertDescription.PROTOCOL_VERSION)


def test_alpn_mismatch(pki: Pki) -> None:
    conn = server(pki, alpn_protocols=[b"h2"])
    expect_alert(
        conn,
        client_hello(pki, alpn_protocols=[b"http/1.1"]),
        AlertDescription.NO_APPLICATION_PROTOCOL,
    )


def test_wrong_mac_after_handshake(pki: Pki) -> None:
    pair = connect(
        TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
        ),
    )
    pair.client.send_application_data(b"secret")
    record = bytearray(pair.client.bytes_to_send())
    record[-1] ^= 1
    expect_alert(pair.server, bytes(record), AlertDescription.BAD_RECORD_MAC)


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_fatal_alert_reaches_peer(pki: Pki, version: int) -> None:
    pair = connect(
        TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["p256"].certified],
            versions=[version],
            random=UnixRandom(),
            clock=UnixClock(),
        ),
    )
    pair.client.send_application_data(b"x")
    record = bytearray(pair.client.bytes_to_send())
    record[-3] ^= 0x40
    with pytest.raises(TlsProtocolError):
        pair.server.receive(bytes(record))
    with pytest.raises(TlsAlertReceived) as info:
        pair.client.receive(pair.server.bytes_to_send())
    assert info.value.description == AlertDescription.BAD_RECORD_MAC


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_unexpected_handshake_message_after_handshake(pki: Pki, version: int) -> None:
    pair = connect(
        TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["p256"].certified],
            versions=[version],
            random=UnixRandom(),
            clock=UnixClock(),
        ),
    )
    # The client sends a stray Finished after the handshake.
    pair.client.send_handshake(20, b"\x00" * 32, add_to_transcript=False)
    expected = (
        AlertDescription.UNEXPECTED_MESSAGE
        if version == TLS13
        else AlertDescription.NO_RENEGOTIATION
    )
    expect_alert(pair.server, pair.client.bytes_to_send(), expected)


def test_malformed_key_update(pki: Pki) -> None:
    pair = connect(
        TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
        ),
    )
    pair.client.send_handshake(24, b"\x07", add_to_transcript=False)
    expect_alert(pair.server, pair.client.bytes_to_send(), AlertDescription.ILLEGAL_PARAMETER)


def test_send_after_close_is_refused(pki: Pki) -> None:
    pair = connect(
        TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
        ),
    )
    pair.client.close()
    with pytest.raises(TlsClosed):
        pair.client.send_application_data(b"late")


# --- certificates -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leaf", "name", "description", "words"),
    [
        ("expired", "localhost", AlertDescription.CERTIFICATE_EXPIRED, "expired"),
        ("untrusted", "localhost", AlertDescription.UNKNOWN_CA, ""),
        ("p256", "wrong.example", AlertDescription.BAD_CERTIFICATE, "wrong.example"),
        (
            "client-p256",
            "client.example",
            AlertDescription.BAD_CERTIFICATE,
            "",
        ),  # EKU clientAuth only
    ],
)
def test_certificate_failures(
    pki: Pki, leaf: str, name: str, description: AlertDescription, words: str
) -> None:
    server_config = TlsConfig(
        certificates=[pki.leaves[leaf].certified], random=UnixRandom(), clock=UnixClock()
    )
    with pytest.raises(CertificateError) as info:
        connect(
            TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
            server_config,
            server_name=name,
        )
    assert info.value.description == description, info.value
    assert words in str(info.value)


def test_ip_address_identity_and_no_verification(pki: Pki) -> None:
    pair = connect(
        TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["rsa"].certified], random=UnixRandom(), clock=UnixClock()
        ),
        server_name="127.0.0.1",
    )
    assert pair.client.handshake_complete
    pair = connect(
        TlsConfig(verify_peer=False, random=UnixRandom(), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["untrusted"].certified], random=UnixRandom(), clock=UnixClock()
        ),
    )
    assert pair.client.handshake_complete


def test_client_certificate_from_unknown_ca_is_refused(pki: Pki) -> None:
    client = TlsConfig(
        trust=pki.trust,
        certificates=[pki.leaves["untrusted"].certified],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    with pytest.raises(CertificateError):
        connect(
            client,
            TlsConfig(
                certificates=[pki.leaves["p256"].certified],
                client_trust=pki.trust,
                random=UnixRandom(),
                clock=UnixClock(),
            ),
        )


# --- truncation -----------------------------------------------------------------------


def test_flow_detects_truncation(pki: Pki) -> None:
    async def main() -> None:
        engine_config = TlsConfig(
            certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
        )

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = TlsConnection(engine_config, server_side=True)
            while not conn.handshake_complete:
                data = await reader.read(65536)
                conn.receive(data)
                writer.write(conn.bytes_to_send())
            conn.send_application_data(b"partial")
            writer.write(conn.bytes_to_send())
            await writer.drain()
            writer.close()  # no close_notify: a truncation

        listener = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        flow = await tls_client(
            StreamFlow(reader, writer),
            TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
            server_name="localhost",
        )
        assert await flow.read() == b"partial"
        with pytest.raises(TlsTruncated):
            await flow.read()
        await flow.close()
        listener.close()
        await listener.wait_closed()

    asyncio.run(main())


# --- fuzzing --------------------------------------------------------------------------


@settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_mutated_client_hello_never_crashes_server(pki: Pki, data: st.DataObject) -> None:
    hello = bytearray(client_hello(pki, versions=[TLS13, TLS12]))
    for _ in range(data.draw(st.integers(1, 6))):
        index = data.draw(st.integers(0, len(hello) - 1))
        hello[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(hello)))
    conn = server(pki)
    try:
        conn.receive(bytes(hello[:cut]))
    except TlsError:
        pass
    conn.bytes_to_send()


@settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), version=st.sampled_from([TLS13, TLS12]))
def test_mutated_server_flight_never_crashes_client(
    pki: Pki, data: st.DataObject, version: int
) -> None:
    client = TlsConnection(
        TlsConfig(trust=pki.trust, random=seeded(3), clock=UnixClock()),
        server_side=False,
        server_name="localhost",
    )
    srv = server(
        pki, "rsa" if version == TLS12 else "ed25519", versions=[version]
    )  # deterministic flight length
    srv.receive(client.bytes_to_send())
    flight = bytearray(srv.bytes_to_send())
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(flight) - 1))
        flight[index] ^= data.draw(st.integers(1, 255))
    try:
        client.receive(bytes(flight))
    except TlsError:
        pass
    client.bytes_to_send()


@settings(
    derandomize=True,
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(junk=st.binary(min_size=1, max_size=300))
def test_random_bytes_never_crash_either_side(pki: Pki, junk: bytes) -> None:
    for conn in (
        server(pki),
        TlsConnection(
            TlsConfig(trust=pki.trust, random=seeded(4), clock=UnixClock()),
            server_side=False,
            server_name="localhost",
        ),
    ):
        try:
            conn.receive(junk)
        except TlsError:
            pass


def test_downgrade_sentinel_is_detected(pki: Pki) -> None:
    server_conn = server(pki, versions=[TLS13, TLS12])
    client = TlsConnection(
        TlsConfig(trust=pki.trust, versions=[TLS12], random=UnixRandom(), clock=UnixClock()),
        server_side=False,
        server_name="localhost",
    )
    server_conn.receive(client.bytes_to_send())
    # A client that can do TLS 1.3 (say its hello was rewritten on the way) sees
    # the server's "DOWNGRD\x01" in ServerHello.random and aborts.
    client.config.versions = (TLS13, TLS12)
    with pytest.raises(TlsProtocolError) as info:
        client.receive(server_conn.bytes_to_send())
    assert info.value.description == AlertDescription.ILLEGAL_PARAMETER and "downgrade" in str(
        info.value
    )


def test_server_over_tcp_answers_garbage_with_an_alert_and_keeps_serving(pki: Pki) -> None:
    from .peers import EchoServer, run

    async def main() -> tuple[bytes, bytes, str, EchoServer]:
        async with EchoServer(
            TlsConfig(
                certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
            )
        ) as server:
            replies = []
            # An unknown record type; a complete ClientHello whose body stops after its version.
            for garbage in (
                b"\x63\x03\x03\x00\x01x",
                b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x03\x03",
            ):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(garbage)
                await writer.drain()
                replies.append(await asyncio.wait_for(reader.read(100), 10))  # the alert
                writer.close()
                await writer.wait_closed()
            _, out, _ = await run(
                [
                    "openssl",
                    "s_client",
                    "-connect",
                    f"127.0.0.1:{server.port}",
                    "-ign_eof",
                    "-CAfile",
                    str(pki.ca_path),
                    "-servername",
                    "localhost",
                ],
                b"still here\n",
            )
        return replies[0], replies[1], out, server

    unknown_type, bad_hello, out, server = asyncio.run(main())
    assert unknown_type == alert_record(AlertDescription.UNEXPECTED_MESSAGE)
    assert bad_hello == alert_record(AlertDescription.DECODE_ERROR)
    assert "echo:still here" in out
    assert len(server.errors) == 2 and all(isinstance(e, TlsProtocolError) for e in server.errors)
