"""Hostile bodies in what this area added (compress_certificate, status_request,
CompressedCertificate, fallback and legacy versions): always a TlsError naming an
alert the RFCs give for bad input, the alert queued, never internal_error."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from looming.tls import AlertDescription, TlsConfig, TlsConnection, TlsError, TlsProtocolError
from looming.tls.client import ClientHandshake
from looming.tls.constants import HandshakeType
from looming.tls.states import ClientState
from looming.tls.wire import handshake
from looming.unix.clock import UnixClock

from .memory import seeded
from .pki import Pki
from .test_edges import _join_hello, _split_hello

FUZZ = settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _server(pki: Pki) -> TlsConnection:
    certified = pki.leaves["p256"].certified
    config = TlsConfig(
        certificates=[certified], client_trust=pki.trust, random=seeded(11), clock=UnixClock()
    )
    return TlsConnection(config, server_side=True)


def _expect_clean_failure(conn: TlsConnection, data: bytes) -> None:
    try:
        conn.receive(data)
    except TlsProtocolError as exc:
        assert exc.description != AlertDescription.INTERNAL_ERROR, exc
        assert conn.bytes_to_send()  # the alert
        assert conn.closed
    except TlsError:
        pass


@FUZZ
@given(
    ext_type=st.sampled_from([27, 5, 13, 43, 10, 28]),
    body=st.binary(max_size=40),
    legacy_version=st.integers(0, 0xFFFF),
    extra_suite=st.sampled_from([None, 0x5600, 0x00FF]),
)
def test_hostile_client_hello_extensions(
    pki: Pki, ext_type: int, body: bytes, legacy_version: int, extra_suite: int | None
) -> None:
    def rewrite(msg_type: int, hello: bytes) -> bytes:
        if msg_type != HandshakeType.CLIENT_HELLO:
            return hello
        head, suites, compression, exts = _split_hello(hello)
        head = legacy_version.to_bytes(2, "big") + head[2:]
        exts = [(t, d) for t, d in exts if t != ext_type] + [(ext_type, body)]
        return _join_hello(head, suites + ([extra_suite] if extra_suite else []), compression, exts)

    client = TlsConnection(
        TlsConfig(
            trust=pki.trust, random=seeded(12), handshake_rewriter=rewrite, clock=UnixClock()
        ),
        server_side=False,
        server_name="localhost",
    )
    _expect_clean_failure(_server(pki), client.bytes_to_send())


@FUZZ
@given(body=st.binary(max_size=200))
def test_hostile_compressed_certificate_body(pki: Pki, body: bytes) -> None:
    client = TlsConnection(
        TlsConfig(trust=pki.trust, random=seeded(13), clock=UnixClock()),
        server_side=False,
        server_name="localhost",
    )
    server = _server(pki)
    server.receive(client.bytes_to_send())
    client.receive(server.bytes_to_send())
    handler = client._handshake
    assert isinstance(handler, ClientHandshake)
    handler.state = ClientState.WAIT_CERT
    message = handshake(HandshakeType.COMPRESSED_CERTIFICATE, body)
    with pytest.raises(TlsProtocolError) as info:
        client._run(lambda: handler.handle(HandshakeType.COMPRESSED_CERTIFICATE, body, message))
    assert info.value.description in (
        AlertDescription.BAD_CERTIFICATE,
        AlertDescription.DECODE_ERROR,
    ), info.value
