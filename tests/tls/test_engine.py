"""The engine against itself, in memory: every version, suite, group and key type."""

from __future__ import annotations

import pytest

from looming.tls import (
    TLS12,
    TLS13,
    ApplicationData,
    CipherSuite,
    ClientSessionCache,
    ConnectionClosed,
    HandshakeComplete,
    KeyUpdated,
    NamedGroup,
    TlsConfig,
)
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .memory import connect
from .pki import Pki

SUITES13 = [
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
]
SUITES12 = {
    "rsa": [
        CipherSuite.ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite.ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuite.ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ],
    "p256": [
        CipherSuite.ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite.ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite.ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ],
}
GROUPS = [NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1, NamedGroup.X25519MLKEM768]


def _complete(events: list[object]) -> HandshakeComplete:
    done = [e for e in events if isinstance(e, HandshakeComplete)]
    assert len(done) == 1, events
    return done[0]


@pytest.mark.parametrize("leaf", ["rsa", "p256", "p384", "ed25519"])
@pytest.mark.parametrize("suite", SUITES13, ids=lambda s: s.name)
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_tls13_matrix(pki: Pki, leaf: str, suite: CipherSuite, group: NamedGroup) -> None:
    server = TlsConfig(
        certificates=[pki.leaves[leaf].certified], random=UnixRandom(), clock=UnixClock()
    )
    client = TlsConfig(
        trust=pki.trust,
        cipher_suites=[suite],
        groups=[group],
        key_share_groups=[group],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    pair = connect(client, server)
    done = _complete(pair.client_events)
    assert (done.version, done.cipher_suite) == (TLS13, suite)
    assert _complete(pair.server_events).cipher_suite == suite
    assert pair.client_sends(b"ping") == [ApplicationData(b"ping")]
    assert pair.server_sends(b"pong" * 5000) == [
        ApplicationData(b"pong" * 4096),
        ApplicationData(b"pong" * 904),
    ]
    assert pair.client.export_keying_material(
        "EXPORTER-test", b"ctx", 32
    ) == pair.server.export_keying_material("EXPORTER-test", b"ctx", 32)


@pytest.mark.parametrize("leaf", ["rsa", "p256", "p384"])
@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize(
    "group", [NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1], ids=lambda g: g.name
)
def test_tls12_matrix(pki: Pki, leaf: str, index: int, group: NamedGroup) -> None:
    suite = SUITES12["rsa" if leaf == "rsa" else "p256"][index]
    server = TlsConfig(
        certificates=[pki.leaves[leaf].certified],
        versions=[TLS12],
        groups=[group],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    # RFC 8422: a client must list the curve of the server's ECDSA key.
    key_curve = {"p256": NamedGroup.SECP256R1, "p384": NamedGroup.SECP384R1}.get(leaf, group)
    groups = [group] if key_curve == group else [group, key_curve]
    client = TlsConfig(
        trust=pki.trust,
        cipher_suites=[suite],
        groups=groups,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    pair = connect(client, server)
    done = _complete(pair.client_events)
    assert (done.version, done.cipher_suite) == (TLS12, suite)
    assert pair.client_sends(b"ping") == [ApplicationData(b"ping")]
    assert pair.client.export_keying_material(
        "EXPORTER-test", None, 20
    ) == pair.server.export_keying_material("EXPORTER-test", None, 20)
    assert pair.client.export_keying_material(
        "EXPORTER-test", b"", 20
    ) != pair.client.export_keying_material("EXPORTER-test", None, 20)


def test_hello_retry_request(pki: Pki) -> None:
    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        groups=[NamedGroup.SECP384R1],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    client = TlsConfig(
        trust=pki.trust,
        key_share_groups=[NamedGroup.X25519],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    pair = connect(client, server)
    assert _complete(pair.client_events).version == TLS13
    assert pair.client_sends(b"after hrr") == [ApplicationData(b"after hrr")]


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_resumption(pki: Pki, version: int) -> None:
    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        versions=[version],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    client = TlsConfig(
        trust=pki.trust, session_cache=ClientSessionCache(), random=UnixRandom(), clock=UnixClock()
    )
    first = connect(client, server)
    assert not _complete(first.client_events).resumed
    second = connect(client, server)
    done = _complete(second.client_events)
    assert done.resumed and _complete(second.server_events).resumed
    assert done.peer_certificates == _complete(first.client_events).peer_certificates
    assert second.client_sends(b"resumed") == [ApplicationData(b"resumed")]


def test_key_update_both_ways(pki: Pki) -> None:
    pair = connect(
        TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
        ),
    )
    pair.client.key_update(request_peer_update=True)
    events = pair.server.receive(pair.client.bytes_to_send())
    assert events == [KeyUpdated(peer_requested=True)]
    assert pair.client.receive(pair.server.bytes_to_send()) == [KeyUpdated(peer_requested=False)]
    assert pair.client_sends(b"a") == [ApplicationData(b"a")]
    assert pair.server_sends(b"b") == [ApplicationData(b"b")]


def test_automatic_key_update_before_limit(pki: Pki) -> None:
    client = TlsConfig(
        trust=pki.trust, key_update_after_records=3, random=UnixRandom(), clock=UnixClock()
    )
    pair = connect(
        client,
        TlsConfig(
            certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
        ),
    )
    received = []
    for i in range(10):
        received += pair.client_sends(b"x%d" % i)
    updates = [e for e in received if isinstance(e, KeyUpdated)]
    assert len(updates) >= 2
    assert [e.data for e in received if isinstance(e, ApplicationData)] == [
        b"x%d" % i for i in range(10)
    ]


def test_close_notify(pki: Pki) -> None:
    pair = connect(
        TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
        ),
    )
    pair.client.close()
    assert pair.server.receive(pair.client.bytes_to_send()) == [ConnectionClosed()]
    assert pair.server.peer_closed
