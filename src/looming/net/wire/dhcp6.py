"""DHCPv6 client-server messages (RFC 8415 section 8) with the options a
client for stateful addresses needs: client and server identifiers, IA_NA
with its IA addresses (21.4, 21.6), the option request (21.7), preference,
elapsed time, status codes (21.13), rapid commit and DNS servers (RFC 3646).

A message is its type, its 24-bit transaction id and the options in one
:class:`Dhcp6Message`; options looming does not interpret are kept as
``(code, data)`` pairs.  :func:`parse` trusts nothing: lengths are checked
at every level and the number of options is bounded.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, replace
from ipaddress import IPv6Address

from looming.errors import Malformed

CLIENT_PORT = 546
SERVER_PORT = 547
ALL_SERVERS_AND_RELAYS = IPv6Address("ff02::1:2")
MAX_OPTIONS = 64  # per level; a reply for one IA holds fewer than 10
STATUS_SUCCESS = 0

_OPTION = struct.Struct("!HH")
_IA_NA = struct.Struct("!III")
_IAADDR = struct.Struct("!16sII")

_Buffer = bytes | bytearray | memoryview


class Dhcp6Type(enum.IntEnum):
    SOLICIT = 1
    ADVERTISE = 2
    REQUEST = 3
    CONFIRM = 4
    RENEW = 5
    REBIND = 6
    REPLY = 7
    RELEASE = 8
    DECLINE = 9
    RECONFIGURE = 10
    INFORMATION_REQUEST = 11


class OptionCode(enum.IntEnum):
    CLIENTID = 1
    SERVERID = 2
    IA_NA = 3
    IAADDR = 5
    ORO = 6
    PREFERENCE = 7
    ELAPSED_TIME = 8
    STATUS_CODE = 13
    RAPID_COMMIT = 14
    DNS_SERVERS = 23


@dataclass(frozen=True, slots=True)
class Status:
    code: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class IaAddress:
    """Lifetimes in seconds (0xFFFFFFFF: infinity)."""

    address: IPv6Address
    preferred_lifetime: int
    valid_lifetime: int
    status: Status | None = None


@dataclass(frozen=True, slots=True)
class IaNa:
    """An identity association for non-temporary addresses."""

    iaid: int
    t1: int = 0
    t2: int = 0
    addresses: tuple[IaAddress, ...] = ()
    status: Status | None = None


@dataclass(frozen=True, slots=True)
class Dhcp6Message:
    type: int
    transaction_id: int
    client_id: bytes | None = None
    server_id: bytes | None = None
    ia_na: tuple[IaNa, ...] = ()
    requested: tuple[int, ...] = ()
    preference: int | None = None
    elapsed_time: int | None = None  # in hundredths of a second
    status: Status | None = None
    rapid_commit: bool = False
    dns_servers: tuple[IPv6Address, ...] = ()
    others: tuple[tuple[int, bytes], ...] = ()


def duid_ll(mac: bytes) -> bytes:
    """DUID-LL (RFC 8415 11.4): type 3, hardware type 1 (Ethernet), the MAC."""
    return b"\x00\x03\x00\x01" + bytes(mac)


# --- parsing -----------------------------------------------------------------


def _options(data: memoryview) -> list[tuple[int, memoryview]]:
    options: list[tuple[int, memoryview]] = []
    offset = 0
    while offset < len(data):
        if len(options) >= MAX_OPTIONS:
            raise Malformed(f"DHCPv6 message with more than {MAX_OPTIONS} options at one level")
        if offset + 4 > len(data):
            raise Malformed("DHCPv6 option header truncated")
        code, length = _OPTION.unpack_from(data, offset)
        end = offset + 4 + length
        if end > len(data):
            raise Malformed(f"DHCPv6 option {code} of {length} bytes runs past its container")
        options.append((code, data[offset + 4 : end]))
        offset = end
    return options


def _status(value: memoryview) -> Status:
    if len(value) < 2:
        raise Malformed("DHCPv6 status code option shorter than 2 bytes")
    return Status(int.from_bytes(value[:2], "big"), bytes(value[2:]).decode("utf-8", "replace"))


def _ia_address(value: memoryview) -> IaAddress:
    if len(value) < _IAADDR.size:
        raise Malformed(f"DHCPv6 IA address option of {len(value)} bytes, not at least 24")
    raw, preferred, valid = _IAADDR.unpack_from(value)
    status = None
    for code, inner in _options(value[_IAADDR.size :]):
        if code == OptionCode.STATUS_CODE:
            status = _status(inner)
    return IaAddress(IPv6Address(raw), preferred, valid, status)


def _ia_na(value: memoryview) -> IaNa:
    if len(value) < _IA_NA.size:
        raise Malformed(f"DHCPv6 IA_NA option of {len(value)} bytes, not at least 12")
    iaid, t1, t2 = _IA_NA.unpack_from(value)
    addresses: list[IaAddress] = []
    status = None
    for code, inner in _options(value[_IA_NA.size :]):
        if code == OptionCode.IAADDR:
            addresses.append(_ia_address(inner))
        elif code == OptionCode.STATUS_CODE:
            status = _status(inner)
    return IaNa(iaid, t1, t2, tuple(addresses), status)


def parse(buf: _Buffer) -> Dhcp6Message:
    """One client-server message (relay messages are refused)."""
    view = memoryview(buf)
    if len(view) < 4:
        raise Malformed(f"DHCPv6 message of {len(view)} bytes is shorter than its header")
    kind = view[0]
    if kind in (12, 13):
        raise Malformed("DHCPv6 relay message: a client takes none")
    message = Dhcp6Message(kind, int.from_bytes(view[1:4], "big"))
    for code, value in _options(view[4:]):
        message = _with_option(message, code, value)
    return message


def _with_option(message: Dhcp6Message, code: int, value: memoryview) -> Dhcp6Message:
    if code == OptionCode.CLIENTID:
        return replace(message, client_id=bytes(value))
    if code == OptionCode.SERVERID:
        return replace(message, server_id=bytes(value))
    if code == OptionCode.IA_NA:
        return replace(message, ia_na=(*message.ia_na, _ia_na(value)))
    if code == OptionCode.ORO:
        if len(value) % 2:
            raise Malformed("DHCPv6 option request of an odd length")
        codes = tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2))
        return replace(message, requested=codes)
    if code == OptionCode.PREFERENCE:
        if len(value) != 1:
            raise Malformed("DHCPv6 preference option not 1 byte")
        return replace(message, preference=value[0])
    if code == OptionCode.ELAPSED_TIME:
        if len(value) != 2:
            raise Malformed("DHCPv6 elapsed time option not 2 bytes")
        return replace(message, elapsed_time=int.from_bytes(value, "big"))
    if code == OptionCode.STATUS_CODE:
        return replace(message, status=_status(value))
    if code == OptionCode.RAPID_COMMIT:
        return replace(message, rapid_commit=True)
    if code == OptionCode.DNS_SERVERS:
        if len(value) % 16:
            raise Malformed("DHCPv6 DNS servers option not a multiple of 16 bytes")
        servers = tuple(IPv6Address(bytes(value[i : i + 16])) for i in range(0, len(value), 16))
        return replace(message, dns_servers=servers)
    return replace(message, others=(*message.others, (code, bytes(value))))


# --- emitting ----------------------------------------------------------------


def _option(code: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"DHCPv6 option {code} of {len(value)} bytes exceeds 65535")
    return _OPTION.pack(code, len(value)) + value


def _emit_status(status: Status) -> bytes:
    return _option(OptionCode.STATUS_CODE, status.code.to_bytes(2, "big") + status.message.encode())


def _emit_ia_na(ia: IaNa) -> bytes:
    body = _IA_NA.pack(ia.iaid, ia.t1, ia.t2)
    for entry in ia.addresses:
        inner = _IAADDR.pack(entry.address.packed, entry.preferred_lifetime, entry.valid_lifetime)
        if entry.status is not None:
            inner += _emit_status(entry.status)
        body += _option(OptionCode.IAADDR, inner)
    if ia.status is not None:
        body += _emit_status(ia.status)
    return _option(OptionCode.IA_NA, body)


def emit(message: Dhcp6Message) -> bytes:
    if not 0 <= message.transaction_id <= 0xFFFFFF:
        raise ValueError(f"DHCPv6 transaction id {message.transaction_id} is not 24 bits")
    out = bytearray((message.type,)) + message.transaction_id.to_bytes(3, "big")
    if message.client_id is not None:
        out += _option(OptionCode.CLIENTID, message.client_id)
    if message.server_id is not None:
        out += _option(OptionCode.SERVERID, message.server_id)
    for ia in message.ia_na:
        out += _emit_ia_na(ia)
    if message.requested:
        out += _option(OptionCode.ORO, b"".join(c.to_bytes(2, "big") for c in message.requested))
    if message.preference is not None:
        out += _option(OptionCode.PREFERENCE, bytes((message.preference,)))
    if message.elapsed_time is not None:
        out += _option(OptionCode.ELAPSED_TIME, message.elapsed_time.to_bytes(2, "big"))
    if message.status is not None:
        out += _emit_status(message.status)
    if message.rapid_commit:
        out += _option(OptionCode.RAPID_COMMIT, b"")
    if message.dns_servers:
        out += _option(OptionCode.DNS_SERVERS, b"".join(s.packed for s in message.dns_servers))
    for code, value in message.others:
        out += _option(code, value)
    return bytes(out)
