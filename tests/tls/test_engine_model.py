"""A client and a server engine against a model of two byte streams
(hypothesis, stateful).

The engines are joined in memory; the rules write random amounts from
either side, deliver what is pending cut at random points, update keys
(TLS 1.3), send close_notify from either side and corrupt one byte in
flight. The model is what each side wrote and whether it closed; the
checks are that each side receives a prefix of what the other wrote, in
order and complete once everything is delivered, that nothing is reported
after the peer's close_notify, and that a corrupted byte ends the
connection with an alert and never yields corrupted plaintext.

Keys, nonces and certificates come from fixed seeds and the clock is fake,
so a failing example replays byte for byte.
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass, field
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from looming.tls import (
    TLS12,
    TLS13,
    ApplicationData,
    CertifiedKey,
    ClientSessionCache,
    ConnectionClosed,
    HandshakeComplete,
    KeyUpdated,
    TlsConfig,
    TlsConnection,
    TrustStore,
)
from looming.tls.errors import TlsAlertReceived, TlsClosed, TlsError
from looming.tls.events import Event, NewSession
from looming.unix.random import UnixRandom

from .memory import FakeClock

STREAMS = (random.Random(3).randbytes(1 << 20), random.Random(4).randbytes(1 << 20))
SIDES = (0, 1)  # 0 is the client, 1 the server
CLIENT, SERVER = SIDES


@cache
def _credentials() -> tuple[TrustStore, CertifiedKey]:
    """A CA and a localhost leaf from fixed keys, valid 2020-2100."""
    ca_key = ec.derive_private_key(0xC0FFEE, ec.SECP256R1())
    leaf_key = ec.derive_private_key(0x1EAF, ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "model CA")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    end = datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(2)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(ca_key, hashes.SHA256())
    )
    return TrustStore([ca]), CertifiedKey([leaf], leaf_key)


@dataclass
class Side:
    """One engine and the model of what its application did and saw."""

    conn: TlsConnection
    written: int = 0
    received: bytearray = field(default_factory=bytearray)
    closed: bool = False  # this side sent close_notify
    peer_closed: bool = False  # ConnectionClosed arrived here
    failed: TlsError | None = None  # the engine raised: the connection is over
    key_updates: int = 0


class EnginePair(RuleBasedStateMachine):
    """Two engines, a cuttable, corruptible wire; see the module docs."""

    def __init__(self) -> None:
        super().__init__()
        self.sides: list[Side] = []
        self.wire: tuple[bytearray, bytearray] = (bytearray(), bytearray())  # by receiver
        self.corrupted = [False, False]  # by receiver: a flipped byte is on its way
        self.version = TLS13

    @initialize(
        version=st.sampled_from([TLS13, TLS12]), resume=st.booleans(), seed=st.integers(0, 9)
    )
    def connect(self, version: int, resume: bool, seed: int) -> None:
        trust, certified = _credentials()
        clock = FakeClock()
        self.version = version
        server_config = TlsConfig(
            certificates=[certified], random=UnixRandom(2 * seed), clock=clock
        )
        client_config = TlsConfig(
            trust=trust,
            versions=(version,),
            session_cache=ClientSessionCache(),
            random=UnixRandom(2 * seed + 1),
            clock=clock,
        )
        if resume:
            # A first connection leaves a ticket in the client's cache.
            first = self._handshake(client_config, server_config)
            first.sides[CLIENT].conn.close()
            first._deliver_all()
        self.sides = self._handshake(client_config, server_config).sides
        assert self.sides[CLIENT].conn.resumed == resume
        assert self.sides[CLIENT].conn.version == version

    @staticmethod
    def _handshake(client_config: TlsConfig, server_config: TlsConfig) -> EnginePair:
        pair = EnginePair()
        pair.sides = [
            Side(TlsConnection(client_config, server_side=False, server_name="localhost")),
            Side(TlsConnection(server_config, server_side=True)),
        ]
        pair._collect(CLIENT)
        events = pair._deliver_all()
        assert [e for e in events[CLIENT] if isinstance(e, HandshakeComplete)]
        assert [e for e in events[SERVER] if isinstance(e, HandshakeComplete)]
        return pair

    # ------------------------------------------------------------ plumbing

    def _collect(self, index: int) -> None:
        self.wire[1 - index].extend(self.sides[index].conn.bytes_to_send())

    def _deliver(self, to: int, length: int) -> list[Event]:
        side = self.sides[to]
        chunk = bytes(self.wire[to][:length])
        del self.wire[to][:length]
        if side.failed is not None:
            return []
        try:
            events = side.conn.receive(chunk)
        except TlsError as error:
            side.failed = error
            self._on_failure(to, error)
            return []
        self._observe(to, events)
        self._collect(to)
        return events

    def _on_failure(self, index: int, error: TlsError) -> None:
        """The engine gave up: it must say so to its peer with an alert,
        unless the peer's alert is what ended it."""
        alert = self.sides[index].conn.bytes_to_send()
        if isinstance(error, TlsAlertReceived):
            return
        assert self.corrupted[index], f"a failure without corruption: {error!r}"
        assert alert, "a connection failed without sending an alert"
        self.wire[1 - index].extend(alert)
        self.wire[index].clear()

    def _observe(self, index: int, events: list[Event]) -> None:
        side = self.sides[index]
        for event in events:
            assert not side.peer_closed, f"{event!r} after the peer's close_notify"
            if isinstance(event, ApplicationData):
                side.received += event.data
            elif isinstance(event, ConnectionClosed):
                side.peer_closed = True
            elif isinstance(event, KeyUpdated):
                side.key_updates += 1
            else:
                assert isinstance(event, (HandshakeComplete, NewSession)), event

    def _deliver_all(self) -> tuple[list[Event], list[Event]]:
        seen: tuple[list[Event], list[Event]] = ([], [])
        for _ in range(100):
            busy = [to for to in SIDES if self.wire[to]]
            if not busy:
                return seen
            for to in busy:
                seen[to].extend(self._deliver(to, len(self.wire[to])))
        raise AssertionError("the engines never stopped talking")

    def _alive(self, index: int) -> bool:
        return self.sides[index].failed is None

    # ------------------------------------------------------------ rules

    @rule(index=st.sampled_from(SIDES), size=st.integers(0, 70_000))
    def write(self, index: int, size: int) -> None:
        side = self.sides[index]
        if not self._alive(index):
            return
        chunk = STREAMS[index][side.written : side.written + size]
        if side.closed:
            with pytest.raises(TlsClosed):
                side.conn.send_application_data(chunk)
            return
        side.conn.send_application_data(chunk)
        side.written += len(chunk)
        self._collect(index)

    @precondition(lambda self: self.wire[0] or self.wire[1])
    @rule(data=st.data())
    def deliver_part(self, data: st.DataObject) -> None:
        to = data.draw(st.sampled_from([i for i in SIDES if self.wire[i]]))
        self._deliver(to, data.draw(st.integers(1, len(self.wire[to]))))

    @rule()
    def deliver_everything(self) -> None:
        self._deliver_all()

    @precondition(lambda self: self.version == TLS13)
    @rule(index=st.sampled_from(SIDES), request=st.booleans())
    def key_update(self, index: int, request: bool) -> None:
        side = self.sides[index]
        if side.closed or not self._alive(index):
            return
        side.conn.key_update(request)
        self._collect(index)

    @rule(index=st.sampled_from(SIDES))
    def close(self, index: int) -> None:
        side = self.sides[index]
        side.conn.close()
        if self._alive(index):
            side.closed = True
            self._collect(index)

    def _corruptible(self) -> list[int]:
        """Receivers with bytes in flight and none flipped yet: a second flip
        could land on the first one's byte and undo it."""
        return [i for i in SIDES if self.wire[i] and not self.corrupted[i]]

    # Bytes after a close_notify are rightly ignored: corrupt only before one.
    @precondition(
        lambda self: bool(self._corruptible()) and not any(s.closed or s.failed for s in self.sides)
    )
    @rule(data=st.data(), mask=st.integers(1, 255))
    def corrupt(self, data: st.DataObject, mask: int) -> None:
        """Flip bits of one byte in flight."""
        to = data.draw(st.sampled_from(self._corruptible()))
        position = data.draw(st.integers(0, len(self.wire[to]) - 1))
        self.wire[to][position] ^= mask
        self.corrupted[to] = True

    # ------------------------------------------------------------ invariants

    @invariant()
    def received_is_a_prefix_of_what_the_peer_wrote(self) -> None:
        for index, side in enumerate(self.sides):
            peer = self.sides[1 - index]
            assert len(side.received) <= peer.written
            assert bytes(side.received) == STREAMS[1 - index][: len(side.received)]

    @invariant()
    def close_notify_only_when_sent(self) -> None:
        for index, side in enumerate(self.sides):
            assert not side.peer_closed or self.sides[1 - index].closed

    def teardown(self) -> None:
        if not self.sides:
            return
        self._deliver_all()
        for index in SIDES:
            if self.corrupted[index] and self._alive(index):
                # The flipped byte sits in a record whose length grew: the
                # rest of it arrives, and it must not open.
                self.wire[index].extend(bytes(1 << 15))
                self._deliver_all()
                assert not self._alive(index), "a corrupted record was accepted"
        if any(self.corrupted):
            for index in SIDES:
                side, peer = self.sides[index], self.sides[1 - index]
                if side.failed is not None and not isinstance(side.failed, TlsAlertReceived):
                    # Its alert ends the peer, unless the peer has had its
                    # close_notify already (then it reads nothing more).
                    assert peer.failed is not None or peer.peer_closed, "the alert went unheard"
            return
        for index in SIDES:
            side, peer = self.sides[index], self.sides[1 - index]
            assert bytes(side.received) == STREAMS[1 - index][: peer.written], "data lost"
            assert side.peer_closed == peer.closed
            assert side.conn.closed == (side.closed and peer.closed)


TestEnginePair = EnginePair.TestCase
TestEnginePair.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
