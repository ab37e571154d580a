"""A client session written to a file and read back, so a later process resumes it.

``looming tls connect --resume FILE`` uses this as ``openssl s_client``
uses ``-sess_out``/``-sess_in``. The file holds the session's secret (the
resumption PSK or TLS 1.2 master secret): it is written readable by its
owner only, and whole or not at all.
"""

from __future__ import annotations

import base64
import os
import struct
from pathlib import Path

from looming.errors import Malformed, UsageError

from .session import Session
from .wire import Reader, u8, u16, vec8, vec16, vec24

_BEGIN = b"-----BEGIN LOOMING TLS SESSION-----\n"
_END = b"-----END LOOMING TLS SESSION-----\n"
_FORMAT = 1
_FIXED = struct.Struct(">IIqI")


def encode_session(session: Session) -> bytes:
    body = (
        u8(_FORMAT)
        + u16(session.version)
        + u16(session.cipher_suite)
        + vec16((session.server_name or "").encode())
        + vec8(session.alpn_protocol or b"")
        + vec16(session.ticket)
        + vec8(session.secret)
        + _FIXED.pack(
            session.ticket_age_add, session.lifetime_s, session.received_at_ms,
            session.max_early_data,
        )
        + u8(len(session.peer_chain_der))
        + b"".join(vec24(der) for der in session.peer_chain_der)
    )  # fmt: skip
    return _BEGIN + base64.encodebytes(body) + _END


def decode_session(data: bytes) -> Session:
    """The session in ``data``; Malformed if it is not one this module wrote."""
    start, end = data.find(_BEGIN), data.find(_END)
    if start < 0 or end < start:
        raise Malformed("not a looming TLS session file")
    try:
        body = base64.decodebytes(data[start + len(_BEGIN) : end])
    except ValueError as exc:
        raise Malformed(f"session file is not base64: {exc}") from exc
    r = Reader(body)
    if r.u8() != _FORMAT:
        raise Malformed("session file format is not one this version reads")
    version, suite = r.u16(), r.u16()
    server_name = r.vector(2).decode("ascii", "strict") or None
    alpn = r.vector(1) or None
    ticket, secret = r.vector(2), r.vector(1)
    age_add, lifetime, received_at_ms, max_early = _FIXED.unpack(r.take(_FIXED.size))
    chain = [r.vector(3) for _ in range(r.u8())]
    r.expect_end("session file")
    return Session(
        version=version,
        cipher_suite=suite,
        server_name=server_name,
        alpn_protocol=alpn,
        ticket=ticket,
        secret=secret,
        ticket_age_add=age_add,
        lifetime_s=lifetime,
        received_at_ms=received_at_ms,
        max_early_data=max_early,
        peer_chain_der=chain,
    )


def read_session_file(path: str | Path) -> Session | None:
    """The session saved in ``path``, None when the file does not exist yet."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read the session file {path}: {exc.strerror}") from exc
    try:
        return decode_session(data)
    except (Malformed, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{path} is not a session this program saved ({exc}); delete it to start afresh"
        ) from exc


def write_session_file(path: str | Path, session: Session) -> None:
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(encode_session(session))
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
