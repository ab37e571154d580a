"""The handshake states of each role and the one way a message is dispatched.

Each role's handshake is a state machine in the manner of OCaml-TLS: a state
from one of the enums below, and a table from (state, handshake message type)
to the handler for that transition. A message with no entry in the table is
refused in one place, ``dispatch``, with the alert RFC 8446 section 6.2 names
(unexpected_message).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import TypeVar

from .constants import AlertDescription
from .errors import TlsProtocolError


class _State(enum.Enum):
    """A state: hashed by identity (members are singletons), as cheap as an int in the
    dispatch tables, where Enum's own hash is a Python-level call."""

    __hash__ = object.__hash__


class ClientState(_State):
    """The TLS 1.3 client (RFC 8446 appendix A.1); 1.2 continues in ``Client12State``."""

    START = "start"
    WAIT_SERVER_HELLO = "wait_server_hello"
    WAIT_EE = "wait_ee"
    WAIT_CERT_CR = "wait_cert_cr"
    WAIT_CERT = "wait_cert"
    WAIT_CV = "wait_cv"
    WAIT_FINISHED = "wait_finished"
    CONNECTED = "connected"
    TLS12 = "tls12"  # the server chose TLS 1.2: the Client12 machine has taken over


class Client12State(_State):
    """The TLS 1.2 client (RFC 5246 section 7.3, RFC 5077 section 3.1)."""

    WAIT_CERTIFICATE = "wait_certificate"
    WAIT_SKE = "wait_ske"
    WAIT_CR_OR_DONE = "wait_cr_or_done"
    WAIT_DONE = "wait_done"
    WAIT_TICKET_OR_CCS = "wait_ticket_or_ccs"  # resuming: ticket (optional), then CCS
    WAIT_CCS = "wait_ccs"
    WAIT_FINISHED = "wait_finished"
    CONNECTED = "connected"


class ServerState(_State):
    """The TLS 1.3 server (RFC 8446 appendix A.2); 1.2 continues in ``Server12State``."""

    WAIT_CLIENT_HELLO = "wait_client_hello"
    WAIT_EOED = "wait_eoed"
    WAIT_CERT = "wait_cert"
    WAIT_CV = "wait_cv"
    WAIT_FINISHED = "wait_finished"
    CONNECTED = "connected"
    TLS12 = "tls12"  # TLS 1.2 was negotiated: the Server12 machine has taken over


class Server12State(_State):
    """The TLS 1.2 server (RFC 5246 section 7.3, RFC 5077 section 3.1)."""

    WAIT_CERTIFICATE = "wait_certificate"
    WAIT_CKE = "wait_cke"
    WAIT_CV = "wait_cv"
    WAIT_CCS = "wait_ccs"
    WAIT_FINISHED = "wait_finished"
    CONNECTED = "connected"


_M = TypeVar("_M")
_S = TypeVar("_S", bound=enum.Enum)

Handler = Callable[[_M, bytes, bytes], None]
"""A transition: the machine, the message body and the whole message as sent."""


def unexpected(what: str) -> TlsProtocolError:
    """The error for a message or record the current state does not allow."""
    return TlsProtocolError(AlertDescription.UNEXPECTED_MESSAGE, what)


def dispatch(
    table: Mapping[tuple[_S, int], Handler[_M]],
    machine: _M,
    state: _S,
    msg_type: int,
    body: bytes,
    raw: bytes,
) -> None:
    """Run the handler for ``msg_type`` in ``state``, or refuse the message."""
    handler = table.get((state, msg_type))
    if handler is None:
        raise unexpected(f"handshake message {msg_type} in state {state.value}")
    handler(machine, body, raw)
