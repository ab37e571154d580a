"""Conformance at the edges: each rejection gets the RFC's alert, before ServerHello when
nothing fits; SSL 3.0 hellos, a second CCS, TLS_FALLBACK_SCSV, early data after a
HelloRetryRequest, Finished errors, empty and plaintext alerts, and the extended
master secret switch (against tlslite-ng and OpenSSL)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from looming.tls import (
    TLS12,
    TLS13,
    AlertDescription,
    NamedGroup,
    SignatureScheme,
    TlsAlertReceived,
    TlsConfig,
    TlsConnection,
    TlsProtocolError,
)
from looming.tls.constants import HandshakeType
from looming.tls.wire import Reader, u16, vec8, vec16
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .interop import TlsliteServer, looming_client, settings
from .memory import seeded
from .pki import Pki
from .test_bad_input import alert_record, expect_alert
from .test_openssl import s_client_against_looming
from .test_tlslite import tlslite_clients_against_looming

Rewriter = Callable[[int, bytes], bytes]


def _split_hello(body: bytes) -> tuple[bytes, list[int], bytes, list[tuple[int, bytes]]]:
    """(version + random + session id, suites, compression, extensions) of a ClientHello."""
    r = Reader(body)
    head = body[:34]
    r.take(34)
    session_id = r.vector(1)
    suites = r.u16_list(2)
    compression = r.vector(1)
    exts = []
    block = r.sub(2)
    while not block.at_end():
        exts.append((block.u16(), block.vector(2)))
    return head + vec8(session_id), suites, compression, exts


def _join_hello(
    head: bytes, suites: list[int], compression: bytes, exts: list[tuple[int, bytes]]
) -> bytes:
    return (
        head
        + vec16(b"".join(u16(s) for s in suites))
        + vec8(compression)
        + vec16(b"".join(u16(t) + vec16(d) for t, d in exts))
    )


def hello_rewriter(
    *, version: int | None = None, extra_suite: int | None = None, add_early_data_from: int = 0
) -> Rewriter:
    """Rewrite ClientHellos: legacy_version, an extra suite, early_data in the n-th hello."""
    count = 0

    def rewrite(msg_type: int, body: bytes) -> bytes:
        nonlocal count
        if msg_type != HandshakeType.CLIENT_HELLO:
            return body
        count += 1
        head, suites, compression, exts = _split_hello(body)
        if version is not None:
            head = u16(version) + head[2:]
        if extra_suite is not None:
            suites = [*suites, extra_suite]
        if add_early_data_from and count >= add_early_data_from:
            exts = [*exts, (42, b"")]
        return _join_hello(head, suites, compression, exts)

    return rewrite


def _server(pki: Pki, **kw: object) -> TlsConnection:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified], random=seeded(3), **kw, clock=UnixClock()
    )  # type: ignore[arg-type]
    return TlsConnection(config, server_side=True)


def _client(pki: Pki, **kw: object) -> TlsConnection:
    config = TlsConfig(trust=pki.trust, random=seeded(4), **kw, clock=UnixClock())  # type: ignore[arg-type]
    return TlsConnection(config, server_side=False, server_name="localhost")


@pytest.mark.parametrize("version", [0x0300, 0x0200, 0x0002])
def test_ssl3_and_older_client_hello_refused(pki: Pki, version: int) -> None:
    hello = _client(pki, handshake_rewriter=hello_rewriter(version=version)).bytes_to_send()
    server = _server(pki)
    expect_alert(server, hello, AlertDescription.PROTOCOL_VERSION)


def test_no_signature_scheme_fits_alert_before_server_hello(pki: Pki) -> None:
    client = _client(pki, signature_schemes=[SignatureScheme.RSA_PSS_RSAE_SHA256])
    server = _server(pki)
    with pytest.raises(Exception, match="no certificate fits"):
        server.receive(client.bytes_to_send())
    # Nothing but the plaintext alert: no ServerHello went first.
    assert server.bytes_to_send() == alert_record(AlertDescription.HANDSHAKE_FAILURE)


def test_no_group_in_common_alert_before_server_hello(pki: Pki) -> None:
    client = _client(pki, groups=[NamedGroup.X25519], key_share_groups=[NamedGroup.X25519])
    server = _server(pki, groups=[NamedGroup.SECP384R1])
    expect_alert(server, client.bytes_to_send(), AlertDescription.HANDSHAKE_FAILURE)


def test_fallback_scsv_refused_when_a_higher_version_is_shared(pki: Pki) -> None:
    rewriter = hello_rewriter(extra_suite=0x5600)
    client = _client(pki, versions=[TLS12], handshake_rewriter=rewriter)
    expect_alert(_server(pki), client.bytes_to_send(), AlertDescription.INAPPROPRIATE_FALLBACK)


def test_fallback_scsv_accepted_at_the_server_highest_version(pki: Pki) -> None:
    rewriter = hello_rewriter(extra_suite=0x5600)
    client = _client(pki, versions=[TLS12], handshake_rewriter=rewriter)
    server = _server(pki, versions=[TLS12])
    server.receive(client.bytes_to_send())
    client.receive(server.bytes_to_send())
    server.receive(client.bytes_to_send())
    client.receive(server.bytes_to_send())
    assert server.handshake_complete and client.handshake_complete


def test_fallback_scsv_from_openssl_s_client(pki: Pki) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
    )
    args = ["-tls1_2", "-fallback_scsv", "-servername", "localhost"]
    rc, out, server = asyncio.run(s_client_against_looming(config, args))
    assert rc != 0 and "inappropriate fallback" in out, out
    assert server.errors and "RFC 7507" in str(server.errors[0])


def _to_client_flight(pki: Pki, **server_kw: object) -> tuple[TlsConnection, TlsConnection, bytes]:
    """Run to the point where the client's second flight (CCS, Finished) is ready."""
    client, server = _client(pki), _server(pki, **server_kw)
    server.receive(client.bytes_to_send())
    client.receive(server.bytes_to_send())
    return client, server, client.bytes_to_send()


def test_second_change_cipher_spec_refused(pki: Pki) -> None:
    ccs = b"\x14\x03\x03\x00\x01\x01"
    client, server = _client(pki), _server(pki)
    hello = client.bytes_to_send()
    server.receive(hello)
    client.receive(server.bytes_to_send())
    flight = client.bytes_to_send()
    flight = flight.replace(ccs, b"")
    # One is accepted (middlebox compatibility, RFC 8446 appendix D.4), a second is not.
    expect_alert(server, ccs + ccs + flight, AlertDescription.UNEXPECTED_MESSAGE)
    once = _server(pki)
    client = _client(pki)
    once.receive(client.bytes_to_send())
    client.receive(once.bytes_to_send())
    once.receive(ccs + client.bytes_to_send().replace(ccs, b""))
    assert once.handshake_complete
    assert hello


def test_empty_plaintext_alert_is_unexpected_message(pki: Pki) -> None:
    expect_alert(_server(pki), b"\x15\x03\x03\x00\x00", AlertDescription.UNEXPECTED_MESSAGE)


def test_empty_encrypted_alert_is_unexpected_message(pki: Pki) -> None:
    client, server, flight = _to_client_flight(pki)
    server.receive(flight)
    client.receive(server.bytes_to_send())
    client.records.write_records(21, b"")  # a protected record carrying no alert
    expect_alert(server, client.bytes_to_send(), AlertDescription.UNEXPECTED_MESSAGE)


def test_plaintext_alert_right_after_server_hello_is_the_peer_alert(pki: Pki) -> None:
    # A client that refuses the ServerHello has no keys yet: its alert is plaintext.
    client, server = _client(pki), _server(pki)
    server.receive(client.bytes_to_send())
    server.bytes_to_send()
    with pytest.raises(TlsAlertReceived) as info:
        server.receive(alert_record(AlertDescription.ILLEGAL_PARAMETER))
    assert info.value.description == AlertDescription.ILLEGAL_PARAMETER


def test_plaintext_alert_after_protected_records_is_refused(pki: Pki) -> None:
    _client_conn, server, flight = _to_client_flight(pki)
    server.receive(flight)
    expect_alert(
        server,
        alert_record(AlertDescription.ILLEGAL_PARAMETER),
        AlertDescription.UNEXPECTED_MESSAGE,
    )


@pytest.mark.parametrize(
    ("change", "alert"),
    [
        (lambda body: body[:-1], AlertDescription.DECODE_ERROR),
        (lambda body: body + b"\x00", AlertDescription.DECODE_ERROR),
        (lambda body: bytes([body[0] ^ 1]) + body[1:], AlertDescription.DECRYPT_ERROR),
    ],
    ids=["short", "long", "wrong"],
)
@pytest.mark.parametrize("version", [TLS13, TLS12], ids=["1.3", "1.2"])
def test_bad_client_finished(
    pki: Pki, change: Callable[[bytes], bytes], alert: AlertDescription, version: int
) -> None:
    def rewrite(msg_type: int, body: bytes) -> bytes:
        return change(body) if msg_type == HandshakeType.FINISHED else body

    client = _client(pki, versions=[version], handshake_rewriter=rewrite)
    server = _server(pki)
    server.receive(client.bytes_to_send())
    client.receive(server.bytes_to_send())
    expect_alert(server, client.bytes_to_send(), alert)


def test_early_data_in_the_second_client_hello_refused(pki: Pki) -> None:
    client = _client(pki, handshake_rewriter=hello_rewriter(add_early_data_from=2))
    server = _server(pki, groups=[NamedGroup.SECP256R1])
    server.receive(client.bytes_to_send())  # HelloRetryRequest for P-256
    client.receive(server.bytes_to_send())
    expect_alert(server, client.bytes_to_send(), AlertDescription.ILLEGAL_PARAMETER)


def test_undecryptable_records_after_the_second_hello_are_not_skipped(pki: Pki) -> None:
    client = _client(pki, handshake_rewriter=hello_rewriter(add_early_data_from=1))
    server = _server(pki, groups=[NamedGroup.SECP256R1])
    server.receive(client.bytes_to_send())  # the first hello offers early data: HRR, skipping
    assert server.records.skip_early_data
    client.receive(server.bytes_to_send())
    # The retry without early_data, as a correct client sends it.
    retry = client.bytes_to_send()
    head, suites, compression, exts = _split_hello(retry[9:])
    body = _join_hello(head, suites, compression, [(t, d) for t, d in exts if t != 42])
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    server.receive(b"\x16\x03\x03" + len(message).to_bytes(2, "big") + message)
    assert not server.records.skip_early_data
    # Early data arriving now cannot be told from garbage: bad_record_mac at once.
    expect_alert(server, b"\x17\x03\x03\x00\x20" + bytes(32), AlertDescription.BAD_RECORD_MAC)


# --- the extended master secret switch, against tlslite-ng --------------------------------


def test_ems_required_by_default(pki: Pki) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
    )
    hs = settings(TLS12, useExtendedMasterSecret=False, requireExtendedMasterSecret=False)
    (result,), server = asyncio.run(tlslite_clients_against_looming(config, hs))
    assert "handshake_failure" in str(result.get("error")), result
    assert server.errors and "extended master secret" in str(server.errors[0])


def test_ems_optional_with_a_warning(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        require_extended_master_secret=False,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    hs = settings(TLS12, useExtendedMasterSecret=False, requireExtendedMasterSecret=False)
    with caplog.at_level(logging.WARNING, logger="looming.tls"):
        (result,), server = asyncio.run(tlslite_clients_against_looming(config, hs))
    assert "error" not in result, result.get("error")
    assert result["received"] == b"echo:hello\n" and not server.errors
    assert any("without the extended master secret" in r.getMessage() for r in caplog.records)


def test_client_without_ems_against_tlslite(pki: Pki) -> None:
    hs = settings(TLS12, useExtendedMasterSecret=False, requireExtendedMasterSecret=False)
    strict = TlsConfig(trust=pki.trust, versions=[TLS12], random=UnixRandom(), clock=UnixClock())
    with (
        TlsliteServer(pki, "p256", hs) as server,
        pytest.raises(TlsProtocolError, match="extended master secret"),
    ):
        asyncio.run(looming_client(server.port, strict))
    lenient = TlsConfig(
        trust=pki.trust,
        versions=[TLS12],
        require_extended_master_secret=False,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    with TlsliteServer(pki, "p256", hs) as server:
        _flow, reply = asyncio.run(looming_client(server.port, lenient))
    assert reply == b"lite:hi\n" and "error" not in server.results[0]
