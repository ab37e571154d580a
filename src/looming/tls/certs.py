"""Certificates: the keys we present, the anchors we trust, and chain validation.

Path building and policy checks (hostname or IP, key usage, extended key
usage, validity, basic constraints) are done by ``cryptography.x509.verification``;
this module maps each failure to the alert RFC 8446 section 6.2 names and a
message that says what was wrong.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.general_name import DNSName, IPAddress
from cryptography.x509.oid import ExtendedKeyUsageOID, PublicKeyAlgorithmOID, SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from looming.bounded import LruMemo
from looming.errors import UsageError

from .constants import AlertDescription
from .errors import CertificateError
from .signing import PrivateKey


@dataclass
class CertifiedKey:
    """A certificate chain (leaf first) and the leaf's private key."""

    chain: list[x509.Certificate]
    key: PrivateKey
    # A DER OCSP response for the leaf, stapled when a client asks (see looming.tls.ocsp).
    ocsp_response: bytes | None = None
    chain_der: list[bytes] = field(init=False)
    _pss_only: bool = field(init=False, repr=False)
    # CompressedCertificate bodies of this chain by algorithm (RFC 8879), made once.
    compressed: dict[int, bytes] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not self.chain:
            raise UsageError("a certificate chain needs at least the leaf certificate")
        self.chain_der = [c.public_bytes(Encoding.DER) for c in self.chain]
        self._pss_only = is_pss_certificate(self.chain[0])

    @classmethod
    def from_pem_files(
        cls, cert_path: str | Path, key_path: str | Path, password: bytes | None = None
    ) -> CertifiedKey:
        """Load without the start-up checks of :func:`looming.tls.keyload.load_identity_files`."""
        from .keyload import load_chain, load_private_key

        try:
            cert_data, key_data = Path(cert_path).read_bytes(), Path(key_path).read_bytes()
        except OSError as exc:
            raise UsageError(
                f"cannot load certificate {cert_path} / key {key_path}: {exc}"
            ) from exc
        chain = load_chain(cert_data, str(cert_path))
        return cls(chain, load_private_key(key_data, password, str(key_path)))

    @property
    def pss_only(self) -> bool:
        """Whether the leaf is an RSA-PSS (id-RSASSA-PSS) certificate: rsa_pss_pss_* only."""
        return self._pss_only

    def chain_signed_with(self, schemes: Sequence[int]) -> bool:
        """Whether every signature in the chain (self-signed roots aside) uses one of ``schemes``."""
        allowed = set(schemes)
        for cert in self.chain:
            if cert.issuer == cert.subject:
                continue
            if not allowed & certificate_signature_schemes(cert):
                return False
        return True

    def matches_name(self, server_name: str) -> bool:
        """Whether the leaf's subjectAltName covers ``server_name`` (exact or one-label wildcard)."""
        return names_match(self.chain[0], server_name)


class TrustStore:
    """Trust anchors for chain validation."""

    def __init__(self, anchors: Iterable[x509.Certificate]) -> None:
        self.anchors = list(anchors)
        if not self.anchors:
            raise UsageError("a trust store needs at least one CA certificate")
        self.store = Store(self.anchors)
        self.anchor_set = frozenset(self.anchors)
        # Chains already validated against these anchors: (chain, name, role) -> the
        # window in which every certificate of the path built is valid. A client
        # reconnecting to a server skips the path building (the same input gives
        # the same answer; the dates are checked again on every use). The least
        # recently used is forgotten first, so the servers in use stay.
        self._validated: LruMemo[object, tuple[datetime.datetime, datetime.datetime]] = LruMemo(
            VALIDATED_CACHE_SIZE
        )

    def validated(self, key: object, now: datetime.datetime) -> bool:
        window = self._validated.get(key)
        return window is not None and window[0] <= now <= window[1]

    def remember_validated(self, key: object, path: Sequence[x509.Certificate]) -> None:
        start = max(c.not_valid_before_utc for c in path).replace(tzinfo=None)
        end = min(c.not_valid_after_utc for c in path).replace(tzinfo=None)
        self._validated.put(key, (start, end))

    @classmethod
    def from_pem_file(cls, path: str | Path) -> TrustStore:
        try:
            return cls(x509.load_pem_x509_certificates(Path(path).read_bytes()))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load CA certificates from {path}: {exc}") from exc

    @classmethod
    def system(cls) -> TrustStore:
        """The host's CA bundle (the file OpenSSL is configured to use).

        Certificates in the bundle that do not parse (some old roots break
        RFC 5280) are skipped rather than failing the whole store.
        """
        global _SYSTEM_STORE
        if _SYSTEM_STORE is not None:
            return _SYSTEM_STORE  # read once per process: it is hundreds of certificates
        paths = ssl.get_default_verify_paths()
        candidates = [paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"]
        for candidate in candidates:
            if candidate and Path(candidate).is_file():
                _SYSTEM_STORE = cls(_load_each(Path(candidate).read_bytes()))
                return _SYSTEM_STORE
        raise UsageError("no system CA bundle found; pass a CA file instead")


_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
VALIDATED_CACHE_SIZE = 256
_SYSTEM_STORE: TrustStore | None = None


def _load_each(bundle: bytes) -> list[x509.Certificate]:
    out = []
    for block in bundle.split(_PEM_BEGIN)[1:]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            try:
                out.append(x509.load_pem_x509_certificate(_PEM_BEGIN + block))
            except ValueError:
                continue
    return out


_SIGNATURE_OIDS: dict[x509.ObjectIdentifier, frozenset[int]] = {
    SignatureAlgorithmOID.RSA_WITH_SHA256: frozenset({0x0401}),
    SignatureAlgorithmOID.RSA_WITH_SHA384: frozenset({0x0501}),
    SignatureAlgorithmOID.RSA_WITH_SHA512: frozenset({0x0601}),
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: frozenset({0x0403}),
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: frozenset({0x0503}),
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: frozenset({0x0603}),
    SignatureAlgorithmOID.ED25519: frozenset({0x0807}),
    SignatureAlgorithmOID.ED448: frozenset({0x0808}),
}
_PSS_BY_HASH = {
    "sha256": frozenset({0x0804, 0x0809}),
    "sha384": frozenset({0x0805, 0x080A}),
    "sha512": frozenset({0x0806, 0x080B}),
}


def certificate_signature_schemes(cert: x509.Certificate) -> frozenset[int]:
    """The TLS signature schemes that name the algorithm ``cert`` is signed with."""
    oid = cert.signature_algorithm_oid
    if oid == SignatureAlgorithmOID.RSASSA_PSS:
        digest = cert.signature_hash_algorithm
        return _PSS_BY_HASH.get(digest.name if digest is not None else "", frozenset())
    return _SIGNATURE_OIDS.get(oid, frozenset())


def is_pss_certificate(cert: x509.Certificate) -> bool:
    """Whether ``cert``'s key is an RSA-PSS key (RFC 4055), limited to PSS signatures."""
    return cert.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS


def spki_sha256(cert: x509.Certificate) -> bytes:
    """The pin of a certificate: SHA-256 of its SubjectPublicKeyInfo (RFC 7469 style)."""
    return hashlib.sha256(
        cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).digest()


def parse_chain(chain_der: Sequence[bytes]) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError as exc:
        raise CertificateError(
            AlertDescription.BAD_CERTIFICATE, f"certificate does not parse: {exc}"
        ) from exc


def _alert_for(message: str) -> AlertDescription:
    lowered = message.lower()
    if "expired" in lowered or "not yet valid" in lowered or "validation time" in lowered:
        return AlertDescription.CERTIFICATE_EXPIRED
    if "candidates exhausted" in lowered or "no valid chain" in lowered or "issuer" in lowered:
        return AlertDescription.UNKNOWN_CA
    if "unsupported" in lowered:
        return AlertDescription.UNSUPPORTED_CERTIFICATE
    return AlertDescription.BAD_CERTIFICATE


def client_certificate_policy() -> ExtensionPolicy:
    """The end-entity policy for client certificates.

    The Web PKI defaults require a subjectAltName, which most client
    certificates (enterprise, internal CAs) do not have: they name their
    subject in the CN. Here the SAN may be absent; when present it is still
    checked to be well formed, as are key usage and the clientAuth EKU (the
    client verifier insists on that). Matching names is left to the
    application, which finds the subject in the peer certificates.
    """
    return ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )


def _subject_for(server_name: str) -> DNSName | IPAddress:
    try:
        return IPAddress(ipaddress.ip_address(server_name))
    except ValueError:
        return DNSName(server_name)


def validate_chain(
    chain: Sequence[x509.Certificate],
    trust: TrustStore,
    now: datetime.datetime,
    server_name: str | None,
    as_server_cert: bool,
    chain_der: Sequence[bytes] | None = None,
) -> None:
    """Build a path from ``chain[0]`` to an anchor and check policy; raise CertificateError.

    With ``chain_der`` (the chain as received) a success is remembered by the
    trust store and the same chain for the same name is not validated again
    while the dates of its path allow.
    """
    leaf = chain[0]
    if as_server_cert and server_name is None:
        raise CertificateError(
            AlertDescription.BAD_CERTIFICATE, "no server name to check the certificate against"
        )
    if leaf in trust.anchor_set:
        check_anchored_leaf(leaf, now, server_name if as_server_cert else None, as_server_cert)
        return
    key = (tuple(chain_der), server_name, as_server_cert) if chain_der is not None else None
    if key is not None and trust.validated(key, now):
        return
    path = _build_path(chain, trust, now, server_name, as_server_cert)
    if key is not None:
        trust.remember_validated(key, path)


def _build_path(
    chain: Sequence[x509.Certificate],
    trust: TrustStore,
    now: datetime.datetime,
    server_name: str | None,
    as_server_cert: bool,
) -> list[x509.Certificate]:
    leaf, intermediates = chain[0], list(chain[1:])
    builder = PolicyBuilder().store(trust.store).time(now)
    try:
        if as_server_cert:
            assert server_name is not None
            verifier = builder.build_server_verifier(_subject_for(server_name))
            return verifier.verify(leaf, intermediates)
        builder = builder.extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=client_certificate_policy(),
        )
        return builder.build_client_verifier().verify(leaf, intermediates).chain
    except VerificationError as exc:
        if leaf.issuer == leaf.subject and not intermediates:
            raise CertificateError(
                AlertDescription.UNKNOWN_CA,
                f"self-signed certificate {leaf.subject.rfc4514_string()!r} is not a trust "
                "anchor; give that exact certificate as a CA to trust it",
            ) from exc
        message = str(exc).split(" (encountered processing", 1)[0]
        if as_server_cert and server_name is not None and "subjectaltname" in message.lower():
            raise CertificateError(
                AlertDescription.BAD_CERTIFICATE,
                f"certificate is not valid for {server_name!r}: {message}",
            ) from exc
        raise CertificateError(_alert_for(message), message) from exc
    except ValueError as exc:
        raise CertificateError(AlertDescription.BAD_CERTIFICATE, str(exc)) from exc


def check_anchored_leaf(
    leaf: x509.Certificate, now: datetime.datetime, server_name: str | None, as_server_cert: bool
) -> None:
    """A leaf that is itself a trust anchor (``-CAfile self.pem``): trusted as that exact
    certificate, so no path is built, but its validity period, its extended key usage
    and (for a server) the name are still checked."""
    if not leaf.not_valid_before_utc.replace(tzinfo=None) <= now:
        raise CertificateError(AlertDescription.CERTIFICATE_EXPIRED, "certificate is not yet valid")
    if not now <= leaf.not_valid_after_utc.replace(tzinfo=None):
        raise CertificateError(AlertDescription.CERTIFICATE_EXPIRED, "certificate has expired")
    wanted = ExtendedKeyUsageOID.SERVER_AUTH if as_server_cert else ExtendedKeyUsageOID.CLIENT_AUTH
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    except ValueError as exc:
        raise CertificateError(AlertDescription.BAD_CERTIFICATE, str(exc)) from exc
    if (
        usages is not None
        and wanted not in usages
        and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages
    ):
        raise CertificateError(
            AlertDescription.UNSUPPORTED_CERTIFICATE,
            "certificate's extended key usage does not allow "
            + ("serverAuth" if as_server_cert else "clientAuth"),
        )
    if server_name is not None and not names_match(leaf, server_name):
        raise CertificateError(
            AlertDescription.BAD_CERTIFICATE,
            f"certificate is not valid for {server_name!r}: no subjectAltName matches",
        )


def names_match(cert: x509.Certificate, server_name: str) -> bool:
    """Whether ``cert``'s subjectAltName covers ``server_name`` (DNS: exact or one-label
    wildcard; IP: equal address)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    try:
        address = ipaddress.ip_address(server_name)
    except ValueError:
        address = None
    if address is not None:
        return address in san.get_values_for_type(x509.IPAddress)
    wanted = server_name.lower().rstrip(".")
    for name in san.get_values_for_type(x509.DNSName):
        pattern = name.lower().rstrip(".")
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def check_pins(chain: Sequence[x509.Certificate], pins: Iterable[bytes]) -> None:
    wanted = set(pins)
    if not any(spki_sha256(cert) in wanted for cert in chain):
        raise CertificateError(
            AlertDescription.BAD_CERTIFICATE,
            "no certificate in the chain matches a pinned public key",
        )
