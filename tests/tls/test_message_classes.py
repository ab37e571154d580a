"""The typed handshake messages: what emit writes, parse reads back; bad lengths are refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from looming.errors import Malformed
from looming.tls import TlsProtocolError
from looming.tls.messages import CertificateRequest13, NewSessionTicket13, ServerHello
from looming.tls.tls12 import CertificateRequest12, NewSessionTicket12, ServerKeyExchange12

u8s = st.integers(0, 0xFF)
u16s = st.integers(0, 0xFFFF)
u32s = st.integers(0, 0xFFFF_FFFF)
extensions = st.dictionaries(u16s, st.binary(max_size=40), max_size=6)

MESSAGES: dict[type[Any], st.SearchStrategy[Any]] = {
    ServerHello: st.builds(
        ServerHello,
        st.binary(min_size=32, max_size=32),
        st.binary(max_size=32),
        u16s,
        extensions,
        u16s,
        u8s,
    ),
    CertificateRequest13: st.builds(CertificateRequest13, st.binary(max_size=255), extensions),
    NewSessionTicket13: st.builds(
        NewSessionTicket13,
        u32s,
        u32s,
        st.binary(max_size=255),
        st.binary(min_size=1, max_size=300),
        extensions,
    ),
    ServerKeyExchange12: st.builds(
        ServerKeyExchange12,
        u16s,
        st.binary(min_size=1, max_size=133),
        u16s,
        st.binary(max_size=600),
    ),
    CertificateRequest12: st.builds(
        CertificateRequest12,
        st.lists(u16s, min_size=1, max_size=20),
        st.binary(min_size=1, max_size=8),
    ),
    NewSessionTicket12: st.builds(NewSessionTicket12, u32s, st.binary(max_size=300)),
}


@pytest.mark.parametrize("cls", list(MESSAGES), ids=lambda c: c.__name__)
@given(data=st.data())
def test_emit_then_parse(cls: type[Any], data: st.DataObject) -> None:
    message = data.draw(MESSAGES[cls])
    body = message.emit()
    assert cls.parse(body) == message
    with pytest.raises((Malformed, TlsProtocolError)):
        cls.parse(body + b"\x00")  # trailing bytes
    with pytest.raises((Malformed, TlsProtocolError)):
        cls.parse(body[:-1])  # cut short


def test_server_hello_keeps_extension_order() -> None:
    hello = ServerHello(bytes(32), b"", 0x1301, {43: b"\x03\x04", 51: b"\x00\x1d"})
    body = hello.emit()
    exts = b"\x00\x2b\x00\x02\x03\x04" + b"\x00\x33\x00\x02\x00\x1d"
    assert body == b"\x03\x03" + bytes(32) + b"\x00" + b"\x13\x01" + b"\x00" + b"\x00\x0c" + exts
    assert list(ServerHello.parse(body).extensions) == [43, 51]


def test_server_key_exchange_refuses_explicit_curves() -> None:
    body = ServerKeyExchange12(29, b"\x04" * 32, 0x0403, b"sig").emit()
    with pytest.raises(TlsProtocolError, match="named curve"):
        ServerKeyExchange12.parse(b"\x01" + body[1:])
