"""OCSP stapling from a file (RFC 6066 section 8, RFC 8446 section 4.4.2.1).

An operator fetches the OCSP response for a certificate (``openssl ocsp ...
-respout leaf.ocsp``) and gives it with the certificate (``--ocsp FILE``,
:attr:`CertifiedKey.ocsp_response`); a client that sends ``status_request``
gets it stapled: in TLS 1.3 as an extension of the leaf's CertificateEntry, in
TLS 1.2 as a CertificateStatus message after Certificate. The response is
checked when loaded (a successful response about that certificate, not past
its nextUpdate), not on every handshake: refreshing the file and restarting
(or re-loading) is the operator's schedule, as with nginx's
``ssl_stapling_file``.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from cryptography.x509 import ocsp

from looming.errors import UsageError

from .constants import ExtensionType, HandshakeType
from .wire import extension, vec24

if TYPE_CHECKING:
    from .certs import CertifiedKey
    from .link import HandshakeConnection as TlsConnection

_OCSP = 1  # CertificateStatusType.ocsp


def check_response(
    der: bytes, certified: CertifiedKey, now: datetime.datetime, where: str
) -> bytes:
    """``der`` if it is a good, current OCSP response for ``certified``'s leaf."""
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise UsageError(f"{where} is not a DER OCSP response: {exc}") from exc
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise UsageError(f"{where}: the OCSP response says {response.response_status.name}")
    leaf = certified.chain[0]
    if response.serial_number != leaf.serial_number:
        raise UsageError(
            f"{where} is about serial number {response.serial_number:x}, not the "
            f"certificate's {leaf.serial_number:x}; give the response for this certificate"
        )
    if response.certificate_status != ocsp.OCSPCertStatus.GOOD:
        raise UsageError(f"{where}: the certificate's status is {response.certificate_status.name}")
    aware = now if now.tzinfo is not None else now.replace(tzinfo=datetime.UTC)
    next_update = response.next_update_utc
    if next_update is not None and next_update < aware:
        raise UsageError(f"{where} expired at {next_update:%Y-%m-%d %H:%M} UTC; fetch a fresh one")
    return der


def certificate_status(response: bytes) -> bytes:
    """A CertificateStatus body: status_type ocsp and the response."""
    return bytes((_OCSP,)) + vec24(response)


def wanted(extensions: dict[int, bytes]) -> bool:
    """Whether a ClientHello asks for an OCSP staple (status_request, type ocsp)."""
    body = extensions.get(ExtensionType.STATUS_REQUEST)
    return body is not None and body[:1] == bytes((_OCSP,))


def leaf_extensions13(extensions: dict[int, bytes], certified: CertifiedKey) -> bytes:
    """The TLS 1.3 leaf CertificateEntry's extensions: the staple, when asked and held."""
    if certified.ocsp_response is None or not wanted(extensions):
        return b""
    return extension(ExtensionType.STATUS_REQUEST, certificate_status(certified.ocsp_response))


def server_hello_extension12(
    extensions: dict[int, bytes], certified: CertifiedKey | None
) -> list[bytes]:
    """TLS 1.2: the empty status_request in ServerHello announcing a CertificateStatus."""
    if certified is None or certified.ocsp_response is None or not wanted(extensions):
        return []
    return [extension(ExtensionType.STATUS_REQUEST, b"")]


def send_status12(
    conn: TlsConnection, extensions: dict[int, bytes], certified: CertifiedKey
) -> None:
    if certified.ocsp_response is not None and wanted(extensions):
        conn.send_handshake(
            HandshakeType.CERTIFICATE_STATUS, certificate_status(certified.ocsp_response)
        )
