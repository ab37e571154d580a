"""DHCP messages (RFC 2131) with their options (RFC 2132)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address

from looming.devices.net import MacAddress
from looming.errors import Malformed

FIXED_LENGTH = 236
MAGIC_COOKIE = b"\x63\x82\x53\x63"
SERVER_PORT = 67
CLIENT_PORT = 68
FLAG_BROADCAST = 0x8000

_Buffer = bytes | bytearray | memoryview
_ZERO = IPv4Address(0)


class DhcpOp(enum.IntEnum):
    BOOTREQUEST = 1
    BOOTREPLY = 2


class DhcpMessageType(enum.IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class DhcpOption(enum.IntEnum):
    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS_SERVERS = 6
    HOST_NAME = 12
    DOMAIN_NAME = 15
    BROADCAST_ADDRESS = 28
    REQUESTED_ADDRESS = 50
    LEASE_TIME = 51
    MESSAGE_TYPE = 53
    SERVER_IDENTIFIER = 54
    PARAMETER_REQUEST_LIST = 55
    MAXIMUM_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    CLIENT_IDENTIFIER = 61
    END = 255


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    """A BOOTP/DHCP message. ``options`` keeps the order and repetition seen
    on the wire as (code, value) pairs; PAD and END are not listed."""

    op: int
    xid: int
    client_mac: MacAddress
    options: tuple[tuple[int, bytes], ...] = ()
    secs: int = 0
    flags: int = 0
    client_address: IPv4Address = _ZERO
    your_address: IPv4Address = _ZERO
    server_address: IPv4Address = _ZERO
    relay_address: IPv4Address = _ZERO
    hops: int = 0

    def option(self, code: int) -> bytes | None:
        """The value of the first option ``code`` (RFC 3396 concatenation of
        repeated options is applied)."""
        values = [value for c, value in self.options if c == code]
        return b"".join(values) if values else None

    @property
    def message_type(self) -> int | None:
        value = self.option(DhcpOption.MESSAGE_TYPE)
        return value[0] if value and len(value) == 1 else None

    def address_option(self, code: int) -> IPv4Address | None:
        value = self.option(code)
        return IPv4Address(value[:4]) if value is not None and len(value) >= 4 else None

    @property
    def server_identifier(self) -> IPv4Address | None:
        return self.address_option(DhcpOption.SERVER_IDENTIFIER)

    def addresses_option(self, code: int) -> list[IPv4Address]:
        value = self.option(code) or b""
        return [IPv4Address(value[i : i + 4]) for i in range(0, len(value) - 3, 4)]

    def seconds_option(self, code: int) -> int | None:
        value = self.option(code)
        return int.from_bytes(value, "big") if value is not None and len(value) == 4 else None


def parse(buf: _Buffer) -> DhcpMessage:
    view = memoryview(buf)
    if len(view) < FIXED_LENGTH + len(MAGIC_COOKIE):
        raise Malformed(f"DHCP message of {len(view)} bytes is too short")
    if view[1] != 1 or view[2] != 6:
        raise Malformed("DHCP message is not for Ethernet addresses")
    if view[FIXED_LENGTH : FIXED_LENGTH + 4] != MAGIC_COOKIE:
        raise Malformed("DHCP magic cookie missing")
    op = view[0]
    if op not in (1, 2):
        raise Malformed(f"unknown BOOTP op {op}")
    options: list[tuple[int, bytes]] = []
    index = FIXED_LENGTH + 4
    end = len(view)
    while index < end:
        code = view[index]
        if code == DhcpOption.PAD:
            index += 1
            continue
        if code == DhcpOption.END:
            break
        if index + 1 >= end:
            raise Malformed("DHCP option truncated before its length")
        length = view[index + 1]
        if index + 2 + length > end:
            raise Malformed(f"DHCP option {code} runs past the message")
        options.append((code, bytes(view[index + 2 : index + 2 + length])))
        index += 2 + length
    return DhcpMessage(
        op=op,
        hops=view[3],
        xid=int.from_bytes(view[4:8], "big"),
        secs=int.from_bytes(view[8:10], "big"),
        flags=int.from_bytes(view[10:12], "big"),
        client_address=IPv4Address(bytes(view[12:16])),
        your_address=IPv4Address(bytes(view[16:20])),
        server_address=IPv4Address(bytes(view[20:24])),
        relay_address=IPv4Address(bytes(view[24:28])),
        client_mac=MacAddress(bytes(view[28:34])),
        options=tuple(options),
    )


def emit(message: DhcpMessage) -> bytes:
    out = bytearray()
    out += bytes((message.op, 1, 6, message.hops))
    out += message.xid.to_bytes(4, "big")
    out += message.secs.to_bytes(2, "big")
    out += message.flags.to_bytes(2, "big")
    for address in (
        message.client_address,
        message.your_address,
        message.server_address,
        message.relay_address,
    ):
        out += address.packed
    out += message.client_mac + bytes(10)  # chaddr is 16 bytes
    out += bytes(64 + 128)  # sname and file, unused
    out += MAGIC_COOKIE
    for code, value in message.options:
        # Values over 255 bytes are split into repeated options (RFC 3396).
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [b""]
        for chunk in chunks:
            out += bytes((code, len(chunk))) + chunk
    out.append(DhcpOption.END)
    # Some servers and relays drop BOOTP messages shorter than 300 bytes.
    if len(out) < 300:
        out += bytes(300 - len(out))
    return bytes(out)
