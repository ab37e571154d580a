"""The record layer and key exchange in isolation."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.tls import AlertDescription, NamedGroup, TlsProtocolError
from looming.tls.constants import ContentType
from looming.tls.keyexchange import KeyShare, server_exchange
from looming.tls.record import Protection, RecordLayer
from looming.tls.suites import SUITES, TLS12_SUITES, TLS13_SUITES

from .memory import seeded

ALL_SUITES = [*TLS13_SUITES, *TLS12_SUITES]


def _layers(suite_id: int, padding_block: int = 0) -> tuple[RecordLayer, RecordLayer]:
    suite = SUITES[suite_id]
    tls13 = suite.version == 0x0304
    key = bytes(range(suite.key_length))
    iv = bytes(range(12 if tls13 or suite.is_chacha else 4))
    sender, receiver = RecordLayer(), RecordLayer()
    sender.write = Protection(suite, key, iv, tls13)
    receiver.read = Protection(suite, key, iv, tls13)
    sender.padding_block = padding_block
    return sender, receiver


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    suite_id=st.sampled_from(ALL_SUITES),
    content_type=st.sampled_from(
        [ContentType.HANDSHAKE, ContentType.APPLICATION_DATA, ContentType.ALERT]
    ),
    payload=st.binary(min_size=1, max_size=40000),
    padding_block=st.sampled_from([0, 1, 32, 4096]),
)
def test_seal_open_round_trip(
    suite_id: int, content_type: int, payload: bytes, padding_block: int
) -> None:
    sender, receiver = _layers(suite_id, padding_block)
    sender.write_records(content_type, payload)
    receiver.feed(sender.take_outgoing())
    out = b""
    while (record := receiver.next_record()) is not None:
        assert record[0] == content_type
        out += record[1]
    assert out == payload
    assert receiver.read is not None and receiver.read.seq == sender.write.seq  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    suite_id=st.sampled_from(ALL_SUITES),
    payloads=st.lists(st.binary(min_size=1, max_size=20000), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=90000), max_size=8),
    as_bytearray=st.lists(st.booleans(), min_size=9, max_size=9),
)
def test_records_split_across_feeds_of_any_kind(
    suite_id: int, payloads: list[bytes], cuts: list[int], as_bytearray: list[bool]
) -> None:
    """Feeds of bytes (kept without a copy) and of bytearrays (copied, then
    overwritten by the caller) cut records anywhere; records are taken between feeds."""
    sender, receiver = _layers(suite_id)
    for payload in payloads:
        sender.write_records(ContentType.APPLICATION_DATA, payload)
    wire = sender.take_outgoing()
    bounds = sorted({0, len(wire), *(cut % (len(wire) + 1) for cut in cuts)})
    out = b""
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        piece: bytes | bytearray = wire[start:end]
        if as_bytearray[index]:
            piece = bytearray(piece)
        receiver.feed(piece)
        if isinstance(piece, bytearray):
            piece[:] = bytes(len(piece))  # the caller reuses its buffer
        while (record := receiver.next_record()) is not None:
            out += record[1]
    assert out == b"".join(payloads)
    assert receiver.buffered == 0


@pytest.mark.parametrize("suite_id", ALL_SUITES)
def test_replayed_or_reordered_record_fails_authentication(suite_id: int) -> None:
    sender, receiver = _layers(suite_id)
    sender.write_records(ContentType.APPLICATION_DATA, b"first")
    first = sender.take_outgoing()
    sender.write_records(ContentType.APPLICATION_DATA, b"second")
    second = sender.take_outgoing()
    receiver.feed(second)  # out of order: sequence number 1 where 0 is expected
    with pytest.raises(TlsProtocolError) as info:
        receiver.next_record()
    assert info.value.description == AlertDescription.BAD_RECORD_MAC
    del first


def test_all_padding_record_is_unexpected() -> None:
    sender, receiver = _layers(TLS13_SUITES[0])
    assert sender.write is not None
    # An inner plaintext of only zeros has no content type (RFC 8446 5.4).
    record = sender.write.seal(0, b"", 10)
    receiver.feed(record)
    with pytest.raises(TlsProtocolError) as info:
        receiver.next_record()
    assert info.value.description == AlertDescription.UNEXPECTED_MESSAGE


@pytest.mark.parametrize(
    ("group", "share"),
    [
        (NamedGroup.X25519, b"\x01" * 31),
        (NamedGroup.X25519, bytes(32)),  # the all-zero point: a zero shared secret
        (NamedGroup.SECP256R1, b"\x04" + b"\x01" * 64),  # not on the curve
        (NamedGroup.SECP256R1, b"\x02" + b"\x01" * 32),  # compressed: not allowed in TLS 1.3
        (NamedGroup.SECP384R1, b"\x04" * 10),
        (NamedGroup.X25519MLKEM768, b"\x00" * 100),
    ],
)
def test_bad_key_shares_are_illegal_parameters(group: NamedGroup, share: bytes) -> None:
    with pytest.raises(TlsProtocolError) as info:
        server_exchange(group, share, seeded(1))
    assert info.value.description == AlertDescription.ILLEGAL_PARAMETER
    client = KeyShare(group, seeded(2))
    with pytest.raises(TlsProtocolError):
        client.shared_secret(share)


@pytest.mark.parametrize(
    "group",
    [NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1, NamedGroup.X25519MLKEM768],
)
def test_key_exchange_agrees(group: NamedGroup) -> None:
    client = KeyShare(group, seeded(5))
    server_share, server_secret = server_exchange(group, client.public, seeded(6))
    assert client.shared_secret(server_share) == server_secret
    expected = {
        NamedGroup.X25519: 32,
        NamedGroup.SECP256R1: 32,
        NamedGroup.SECP384R1: 48,
        NamedGroup.X25519MLKEM768: 64,
    }
    assert len(server_secret) == expected[group]
