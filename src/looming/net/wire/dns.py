"""DNS messages (RFC 1035): enough for a stub resolver asking for A records.

Names are compared and returned lower-cased without the trailing dot.
Compression pointers are followed with a bound so a loop cannot hang us.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from looming.errors import Malformed

HEADER_LENGTH = 12
MAX_NAME_LENGTH = 255
_MAX_POINTERS = 32

_Buffer = bytes | bytearray | memoryview


class DnsType(enum.IntEnum):
    A = 1
    NS = 2
    CNAME = 5
    SOA = 6
    PTR = 12
    MX = 15
    TXT = 16
    AAAA = 28


class DnsRcode(enum.IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5


CLASS_IN = 1
FLAG_RESPONSE = 0x8000
FLAG_RECURSION_DESIRED = 0x0100


@dataclass(frozen=True, slots=True)
class DnsQuestion:
    name: str
    type: int = DnsType.A
    klass: int = CLASS_IN


@dataclass(frozen=True, slots=True)
class DnsRecord:
    name: str
    type: int
    klass: int
    ttl: int
    data: bytes


@dataclass(frozen=True, slots=True)
class DnsMessage:
    id: int
    flags: int
    questions: tuple[DnsQuestion, ...] = ()
    answers: tuple[DnsRecord, ...] = ()
    authorities: tuple[DnsRecord, ...] = ()
    additionals: tuple[DnsRecord, ...] = ()

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    @property
    def rcode(self) -> int:
        return self.flags & 0x000F


def _read_name(view: memoryview, offset: int) -> tuple[str, int]:
    """The name at ``offset`` and the offset just after it in the message."""
    labels: list[str] = []
    total = 0
    after: int | None = None
    pointers = 0
    while True:
        if offset >= len(view):
            raise Malformed("DNS name runs past the message")
        length = view[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(view):
                raise Malformed("DNS compression pointer truncated")
            pointers += 1
            if pointers > _MAX_POINTERS:
                raise Malformed("DNS compression pointers loop")
            if after is None:
                after = offset + 2
            offset = ((length & 0x3F) << 8) | view[offset + 1]
            continue
        if length & 0xC0:
            raise Malformed(f"DNS label type {length >> 6} is not supported")
        offset += 1
        if length == 0:
            break
        if offset + length > len(view):
            raise Malformed("DNS label runs past the message")
        total += length + 1
        if total > MAX_NAME_LENGTH:
            raise Malformed("DNS name longer than 255 bytes")
        labels.append(bytes(view[offset : offset + length]).decode("ascii", "replace").lower())
        offset += length
    return ".".join(labels), (after if after is not None else offset)


def encode_name(name: str) -> bytes:
    """The uncompressed wire form of ``name`` (ValueError if it cannot be one)."""
    name = name.rstrip(".")
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.encode("idna") if not label.isascii() else label.encode("ascii")
            if not 1 <= len(raw) <= 63:
                raise ValueError(f"DNS label {label!r} must have 1 to 63 bytes")
            out += bytes((len(raw),)) + raw
    out.append(0)
    if len(out) > MAX_NAME_LENGTH:
        raise ValueError(f"DNS name {name!r} is longer than 255 bytes")
    return bytes(out)


def _read_records(view: memoryview, offset: int, count: int) -> tuple[list[DnsRecord], int]:
    records: list[DnsRecord] = []
    for _ in range(count):
        name, offset = _read_name(view, offset)
        if offset + 10 > len(view):
            raise Malformed("DNS resource record truncated")
        rtype = int.from_bytes(view[offset : offset + 2], "big")
        klass = int.from_bytes(view[offset + 2 : offset + 4], "big")
        ttl = int.from_bytes(view[offset + 4 : offset + 8], "big")
        length = int.from_bytes(view[offset + 8 : offset + 10], "big")
        offset += 10
        if offset + length > len(view):
            raise Malformed("DNS record data runs past the message")
        data = bytes(view[offset : offset + length])
        if rtype == DnsType.CNAME:
            # Keep CNAME targets uncompressed so they read on their own.
            target, _ = _read_name(view, offset)
            data = encode_name(target) if target else b"\x00"
        records.append(DnsRecord(name=name, type=rtype, klass=klass, ttl=ttl, data=data))
        offset += length
    return records, offset


def parse(buf: _Buffer) -> DnsMessage:
    view = memoryview(buf)
    if len(view) < HEADER_LENGTH:
        raise Malformed(f"DNS message of {len(view)} bytes is shorter than its header")
    message_id = int.from_bytes(view[0:2], "big")
    flags = int.from_bytes(view[2:4], "big")
    counts = [int.from_bytes(view[i : i + 2], "big") for i in range(4, 12, 2)]
    # Every question takes at least 5 bytes and every record 11: a count that
    # cannot fit is rejected before any work is spent on it.
    if counts[0] * 5 + sum(counts[1:]) * 11 > len(view) - HEADER_LENGTH:
        raise Malformed("DNS section counts exceed the message size")
    offset = HEADER_LENGTH
    questions: list[DnsQuestion] = []
    for _ in range(counts[0]):
        name, offset = _read_name(view, offset)
        if offset + 4 > len(view):
            raise Malformed("DNS question truncated")
        qtype = int.from_bytes(view[offset : offset + 2], "big")
        klass = int.from_bytes(view[offset + 2 : offset + 4], "big")
        questions.append(DnsQuestion(name=name, type=qtype, klass=klass))
        offset += 4
    answers, offset = _read_records(view, offset, counts[1])
    authorities, offset = _read_records(view, offset, counts[2])
    additionals, offset = _read_records(view, offset, counts[3])
    return DnsMessage(
        id=message_id,
        flags=flags,
        questions=tuple(questions),
        answers=tuple(answers),
        authorities=tuple(authorities),
        additionals=tuple(additionals),
    )


def emit(message: DnsMessage) -> bytes:
    """The message without name compression."""
    out = bytearray()
    out += message.id.to_bytes(2, "big") + message.flags.to_bytes(2, "big")
    for section in (message.questions, message.answers, message.authorities, message.additionals):
        out += len(section).to_bytes(2, "big")
    for question in message.questions:
        out += encode_name(question.name)
        out += question.type.to_bytes(2, "big") + question.klass.to_bytes(2, "big")
    for record in (*message.answers, *message.authorities, *message.additionals):
        out += encode_name(record.name)
        out += record.type.to_bytes(2, "big") + record.klass.to_bytes(2, "big")
        out += record.ttl.to_bytes(4, "big") + len(record.data).to_bytes(2, "big")
        out += record.data
    return bytes(out)
