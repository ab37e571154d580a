"""The handshake state machines: typed states, and one refusal for a message out of turn."""

from __future__ import annotations

import enum

import pytest

from looming.tls import (
    TLS12,
    AlertDescription,
    TlsConfig,
    TlsConnection,
    client,
    client12,
    server,
    server12,
)
from looming.tls.constants import ContentType, HandshakeType
from looming.tls.states import (
    Client12State,
    ClientState,
    Server12State,
    ServerState,
)
from looming.tls.wire import handshake
from looming.unix.clock import UnixClock

from .memory import connect, seeded
from .pki import Pki
from .test_bad_input import expect_alert

# States that take no handshake message: before the first flight, handed over to the
# TLS 1.2 machine, waiting for ChangeCipherSpec (a record, not a handshake message), or
# (a TLS 1.3 server) connected, where the engine takes KeyUpdate.
_NO_TRANSITIONS: set[enum.Enum] = {
    ClientState.START,
    ClientState.TLS12,
    ServerState.TLS12,
    ServerState.CONNECTED,
    Server12State.WAIT_CCS,
}


def _plain_handshake_record(msg_type: int, body: bytes = b"\x00" * 4) -> bytes:
    message = handshake(msg_type, body)
    return bytes((ContentType.HANDSHAKE, 3, 3)) + len(message).to_bytes(2, "big") + message


@pytest.mark.parametrize(
    ("states", "table"),
    [
        (ClientState, client._HANDLERS13),
        (Client12State, client12._HANDLERS12),
        (ServerState, server._HANDLERS13),
        (Server12State, server12._HANDLERS12),
    ],
)
def test_every_state_has_transitions(
    states: type[enum.Enum], table: dict[tuple[enum.Enum, int], object]
) -> None:
    """Each table is keyed by its own enum, and every other state takes some message
    (a waiting state with no entry would refuse everything and fail every handshake)."""
    assert {type(state) for state, _ in table} == {states}
    left = {state for state, _ in table}
    assert set(states) - left <= _NO_TRANSITIONS


@pytest.mark.parametrize("msg_type", [t for t in HandshakeType if t != HandshakeType.CLIENT_HELLO])
def test_server_refuses_anything_but_client_hello(pki: Pki, msg_type: HandshakeType) -> None:
    conn = TlsConnection(
        TlsConfig(certificates=[pki.leaves["p256"].certified], random=seeded(1), clock=UnixClock()),
        server_side=True,
    )
    error = expect_alert(
        conn, _plain_handshake_record(msg_type), AlertDescription.UNEXPECTED_MESSAGE
    )
    assert "wait_client_hello" in str(error)


@pytest.mark.parametrize("msg_type", [t for t in HandshakeType if t != HandshakeType.SERVER_HELLO])
def test_client_refuses_anything_but_server_hello(pki: Pki, msg_type: HandshakeType) -> None:
    conn = TlsConnection(
        TlsConfig(trust=pki.trust, random=seeded(2), clock=UnixClock()),
        server_side=False,
        server_name="localhost",
    )
    assert conn.bytes_to_send()  # the ClientHello
    error = expect_alert(
        conn, _plain_handshake_record(msg_type), AlertDescription.UNEXPECTED_MESSAGE
    )
    assert "wait_server_hello" in str(error)


def test_tls12_server_refuses_renegotiation(pki: Pki) -> None:
    """After a TLS 1.2 handshake any handshake message is a renegotiation: refused."""
    pair = connect(
        TlsConfig(trust=pki.trust, random=seeded(3), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["p256"].certified],
            versions=[TLS12],
            random=seeded(4),
            clock=UnixClock(),
        ),
    )
    pair.client.send_handshake(HandshakeType.CLIENT_HELLO, b"\x03\x03", add_to_transcript=False)
    expect_alert(pair.server, pair.client.bytes_to_send(), AlertDescription.NO_RENEGOTIATION)


def test_tls12_client_declines_hello_request(pki: Pki) -> None:
    """A HelloRequest after a TLS 1.2 handshake gets a warning no_renegotiation
    (RFC 5746 section 4.2) and the connection carries on."""
    pair = connect(
        TlsConfig(trust=pki.trust, random=seeded(5), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["p256"].certified],
            versions=[TLS12],
            random=seeded(6),
            clock=UnixClock(),
        ),
    )
    pair.server.send_handshake(HandshakeType.HELLO_REQUEST, b"", add_to_transcript=False)
    assert pair.client.receive(pair.server.bytes_to_send()) == []
    answer = pair.client.bytes_to_send()
    assert answer[0] == ContentType.ALERT
    assert len(answer) == 5 + 2 + 8 + 16  # one alert record: two bytes under AES-GCM
    assert pair.server.receive(answer) == []  # a warning: the server carries on too
    assert [e.data for e in pair.server_sends(b"still here")] == [b"still here"]  # type: ignore[attr-defined]
