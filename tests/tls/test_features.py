"""Features between two looming engines in memory: 0-RTT, SNI, limits, padding, client auth."""

from __future__ import annotations

import pytest

from looming.tls import (
    TLS13,
    AlertDescription,
    ApplicationData,
    ClientSessionCache,
    EarlyData,
    HandshakeComplete,
    NamedGroup,
    NewSession,
    Session,
    TlsConfig,
    TlsProtocolError,
)
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .memory import FakeClock, connect, seeded
from .pki import Pki


def _done(events: list[object]) -> HandshakeComplete:
    return next(e for e in events if isinstance(e, HandshakeComplete))


def _zero_rtt_configs(pki: Pki, clock: FakeClock) -> tuple[TlsConfig, TlsConfig]:
    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        max_early_data=1000,
        clock=clock,
        random=seeded(10),
    )
    client = TlsConfig(
        trust=pki.trust,
        session_cache=ClientSessionCache(),
        enable_early_data=True,
        clock=clock,
        random=seeded(11),
    )
    return client, server


def test_zero_rtt_accepted_once_then_replay_refused(pki: Pki) -> None:
    clock = FakeClock()
    client, server = _zero_rtt_configs(pki, clock)
    first = connect(client, server)
    session = next(e.session for e in first.client_events if isinstance(e, NewSession))
    assert isinstance(session, Session) and session.max_early_data == 1000
    clock.now_s += 1
    second = connect(client, server, session=session, early_data=b"GET /0rtt")
    assert _done(second.client_events).early_data_accepted
    assert [e for e in second.server_events if isinstance(e, EarlyData)] == [
        EarlyData(b"GET /0rtt")
    ]
    # The same ticket again (a replay): no 0-RTT, no resumption; the data still arrives, after the handshake.
    replay = connect(client, server, session=session, early_data=b"GET /0rtt")
    done = _done(replay.client_events)
    assert not done.early_data_accepted and not done.resumed
    assert [e for e in replay.server_events if isinstance(e, EarlyData)] == []
    assert ApplicationData(b"GET /0rtt") in replay.server_events


def test_zero_rtt_needs_opt_in_on_both_sides(pki: Pki) -> None:
    clock = FakeClock()
    client, server = _zero_rtt_configs(pki, clock)
    client.enable_early_data = False
    first = connect(client, server)
    session = next(e.session for e in first.client_events if isinstance(e, NewSession))
    second = connect(client, server, session=session, early_data=b"not early")
    assert (
        not _done(second.client_events).early_data_accepted and _done(second.client_events).resumed
    )
    assert ApplicationData(b"not early") in second.server_events
    # A server without max_early_data issues tickets that do not allow 0-RTT.
    client.enable_early_data = True
    server.max_early_data = 0
    third = connect(client, server)
    assert (
        next(e.session for e in third.client_events if isinstance(e, NewSession)).max_early_data
        == 0
    )  # type: ignore[attr-defined]


def test_zero_rtt_rejected_when_server_turns_it_off(pki: Pki) -> None:
    clock = FakeClock()
    client, server = _zero_rtt_configs(pki, clock)
    first = connect(client, server)
    session = next(e.session for e in first.client_events if isinstance(e, NewSession))
    server.max_early_data = 0
    second = connect(client, server, session=session, early_data=b"resend me")
    done = _done(second.client_events)
    assert done.resumed and not done.early_data_accepted
    assert ApplicationData(b"resend me") in second.server_events


def test_zero_rtt_refused_for_a_stale_ticket_age(pki: Pki) -> None:
    clock = FakeClock()
    client, server = _zero_rtt_configs(pki, clock)
    first = connect(client, server)
    session = next(e.session for e in first.client_events if isinstance(e, NewSession))
    assert isinstance(session, Session)
    session.received_at_ms -= 60_000  # the client believes the ticket is a minute older
    second = connect(client, server, session=session, early_data=b"late")
    assert not _done(second.client_events).early_data_accepted


def test_sni_picks_certificate(pki: Pki) -> None:
    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified, pki.leaves["other-name"].certified],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    pair = connect(
        TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
        server,
        server_name="other.example",
    )
    assert (
        _done(pair.client_events).peer_certificates[0]
        == pki.leaves["other-name"].certified.chain[0]
    )
    assert pair.server.server_name == "other.example"


def test_signature_algorithms_pick_certificate(pki: Pki) -> None:
    server = TlsConfig(
        certificates=[pki.leaves["rsa"].certified, pki.leaves["ed25519"].certified],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    pair = connect(
        TlsConfig(
            trust=pki.trust, signature_schemes=[0x0807], random=UnixRandom(), clock=UnixClock()
        ),
        server,
    )
    assert (
        _done(pair.client_events).peer_certificates[0] == pki.leaves["ed25519"].certified.chain[0]
    )


@pytest.mark.parametrize("limit", [64, 1000])
def test_record_size_limit_both_ways(pki: Pki, limit: int) -> None:
    pair = connect(
        TlsConfig(trust=pki.trust, record_size_limit=limit, random=UnixRandom(), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["p256"].certified],
            record_size_limit=limit,
            random=UnixRandom(),
            clock=UnixClock(),
        ),
    )
    pair.client.send_application_data(b"x" * 5000)
    wire = pair.client.bytes_to_send()
    events = pair.server.receive(wire)
    assert b"".join(e.data for e in events if isinstance(e, ApplicationData)) == b"x" * 5000
    # Each record carries at most limit-1 bytes of content, plus type byte and tag.
    assert len(wire) >= (5000 // (limit - 1)) * (5 + 17)
    assert all(len(e.data) <= limit - 1 for e in events if isinstance(e, ApplicationData))


def test_oversized_record_against_our_limit(pki: Pki) -> None:
    pair = connect(
        TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["p256"].certified],
            record_size_limit=100,
            random=UnixRandom(),
            clock=UnixClock(),
        ),
    )
    assert pair.server.records.receive_plaintext_limit == (
        1 << 14
    )  # the client did not offer the extension
    pair = connect(
        TlsConfig(trust=pki.trust, record_size_limit=100, random=UnixRandom(), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["p256"].certified],
            record_size_limit=100,
            random=UnixRandom(),
            clock=UnixClock(),
        ),
    )
    pair.client.records.send_limit = None  # a misbehaving peer ignoring our limit
    pair.client.send_application_data(b"y" * 500)
    with pytest.raises(TlsProtocolError) as info:
        pair.server.receive(pair.client.bytes_to_send())
    assert info.value.description == AlertDescription.RECORD_OVERFLOW


def test_padding_hides_lengths(pki: Pki) -> None:
    pair = connect(
        TlsConfig(trust=pki.trust, padding_block=256, random=UnixRandom(), clock=UnixClock()),
        TlsConfig(
            certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
        ),
    )
    sizes = set()
    for n in (1, 17, 200):
        pair.client.send_application_data(b"z" * n)
        record = pair.client.bytes_to_send()
        sizes.add(len(record))
        assert pair.server.receive(record) == [ApplicationData(b"z" * n)]
    assert sizes == {5 + 256 + 16}


def test_client_certificate_required_but_missing(pki: Pki) -> None:
    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        client_trust=pki.trust,
        require_client_certificate=True,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    with pytest.raises(TlsProtocolError) as info:
        connect(TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()), server)
    assert info.value.description == AlertDescription.CERTIFICATE_REQUIRED


def test_optional_client_certificate(pki: Pki) -> None:
    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        client_trust=pki.trust,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    pair = connect(TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()), server)
    assert _done(pair.server_events).peer_certificates == []
    pair = connect(
        TlsConfig(
            trust=pki.trust,
            certificates=[pki.leaves["client-rsa"].certified],
            random=UnixRandom(),
            clock=UnixClock(),
        ),
        server,
    )
    assert (
        _done(pair.server_events).peer_certificates[0]
        == pki.leaves["client-rsa"].certified.chain[0]
    )


def test_hybrid_post_quantum_group_with_hello_retry(pki: Pki) -> None:
    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        groups=[NamedGroup.X25519MLKEM768],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    pair = connect(TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()), server)
    assert pair.client.hello_retried and _done(pair.client_events).version == TLS13
    assert pair.client_sends(b"pq") == [ApplicationData(b"pq")]


def test_seeded_randomness_makes_the_client_hello_reproducible(pki: Pki) -> None:
    from looming.tls import TlsConnection

    hellos = [
        TlsConnection(
            TlsConfig(
                trust=pki.trust,
                random=seeded(99),
                key_share_groups=[NamedGroup.X25519, NamedGroup.SECP256R1],
                clock=UnixClock(),
            ),
            server_side=False,
            server_name="localhost",
        ).bytes_to_send()
        for _ in range(2)
    ]
    assert hellos[0] == hellos[1]


@pytest.mark.parametrize("version", [TLS13, 0x0303])
def test_handshake_fed_one_byte_at_a_time(pki: Pki, version: int) -> None:
    from looming.tls import TlsConnection

    server = TlsConnection(
        TlsConfig(
            certificates=[pki.leaves["rsa"].certified],
            versions=[version],
            random=UnixRandom(),
            clock=UnixClock(),
        ),
        server_side=True,
    )
    client = TlsConnection(
        TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
        server_side=False,
        server_name="localhost",
    )
    client_events: list[object] = []
    server_events: list[object] = []
    for _ in range(6):
        for byte in client.bytes_to_send():
            server_events += server.receive(bytes((byte,)))
        for byte in server.bytes_to_send():
            client_events += client.receive(bytes((byte,)))
    assert _done(client_events).version == version and _done(server_events).version == version
    client.send_application_data(b"tiny steps")
    received = []
    for byte in client.bytes_to_send():
        received += server.receive(bytes((byte,)))
    assert received == [ApplicationData(b"tiny steps")]


@pytest.mark.parametrize(
    ("cert_schemes", "expected"),
    [
        ([0x0403], "p256"),  # ECDSA-SHA256 signatures only: the leaf under the ECDSA CA
        (
            [0x0401, 0x0503],
            "chain",
        ),  # RSA-PKCS1 root signature and ECDSA-SHA384: the RSA-rooted chain
        ([0x0806], "p256"),  # nothing fits: the server's first choice
    ],
)
def test_signature_algorithms_cert_picks_chain(
    pki: Pki, cert_schemes: list[int], expected: str
) -> None:
    from looming.tls import TrustStore

    assert pki.rsa_root is not None
    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified, pki.leaves["chain"].certified],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    client = TlsConfig(
        trust=TrustStore([pki.ca_cert, pki.rsa_root]),
        certificate_signature_schemes=cert_schemes,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    pair = connect(client, server)
    assert _done(pair.client_events).peer_certificates[0] == pki.leaves[expected].certified.chain[0]


def test_resumption_and_early_data_through_hello_retry(pki: Pki) -> None:
    clock = FakeClock()
    client, server = _zero_rtt_configs(pki, clock)
    first = connect(client, server)
    session = next(e.session for e in first.client_events if isinstance(e, NewSession))
    # Now the server wants P-384, for which the client sent no share: HRR. The PSK
    # binder is recomputed over the new transcript; 0-RTT is abandoned and resent.
    server.groups = [NamedGroup.SECP384R1]
    second = connect(client, server, session=session, early_data=b"after retry")
    done = _done(second.client_events)
    assert second.client.hello_retried and done.resumed and not done.early_data_accepted
    assert [e for e in second.server_events if isinstance(e, EarlyData)] == []
    assert ApplicationData(b"after retry") in second.server_events


def test_resumption_keeps_the_ticket_suite(pki: Pki) -> None:
    from looming.tls import CipherSuite

    server = TlsConfig(
        certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
    )
    cache = ClientSessionCache()
    first_client = TlsConfig(
        trust=pki.trust,
        session_cache=cache,
        cipher_suites=[CipherSuite.TLS_AES_256_GCM_SHA384],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    connect(first_client, server)
    # The client now offers every suite; the server would prefer AES-128 (SHA-256),
    # but the ticket's PSK is bound to SHA-384, so it resumes with AES-256.
    second = connect(
        TlsConfig(trust=pki.trust, session_cache=cache, random=UnixRandom(), clock=UnixClock()),
        server,
    )
    done = _done(second.client_events)
    assert done.resumed and done.cipher_suite == CipherSuite.TLS_AES_256_GCM_SHA384


def test_too_much_early_data_is_refused(pki: Pki) -> None:
    clock = FakeClock()
    client, server = _zero_rtt_configs(pki, clock)
    first = connect(client, server)
    session = next(e.session for e in first.client_events if isinstance(e, NewSession))
    assert isinstance(session, Session)
    session.max_early_data = 5000  # a client that ignores the server's limit of 1000
    with pytest.raises(TlsProtocolError) as info:
        connect(client, server, session=session, early_data=b"x" * 3000)
    assert info.value.description == AlertDescription.UNEXPECTED_MESSAGE
