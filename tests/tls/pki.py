"""A small test PKI: one CA, and RSA, ECDSA (P-256, P-384) and Ed25519 leaves."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from looming.tls import CertifiedKey, TrustStore

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


@dataclass
class Leaf:
    name: str
    cert_path: Path
    key_path: Path
    certified: CertifiedKey


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def ca_builder(
    subject: x509.Name, issuer: x509.Name, public_key: object, *, days: int
) -> x509.CertificateBuilder:
    """A CA certificate to be signed: basic constraints, keyCertSign and
    cRLSign, a subject key identifier, valid from yesterday for ``days``."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key),  # type: ignore[arg-type]
            critical=False,
        )
    )


def write_key(path: Path, key: object) -> None:
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class Pki:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_cert = self._ca("looming test CA", self.ca_key)
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        self.trust = TrustStore([self.ca_cert])
        self.other_ca_key = ec.generate_private_key(ec.SECP256R1())
        self.other_ca_cert = self._ca("some other CA", self.other_ca_key)
        self.leaves: dict[str, Leaf] = {}
        self.rsa_root: x509.Certificate | None = None
        self.rsa_root_path = directory / "rsa-root.pem"

    def _ca(
        self, label: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ) -> x509.Certificate:
        subject = name(label)
        return ca_builder(subject, subject, key.public_key(), days=3650).sign(key, hashes.SHA256())

    def leaf(
        self,
        label: str,
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
        names: list[str],
        *,
        client: bool = False,
        days_valid: int = 365,
        expired: bool = False,
        issuer: str = "ca",
    ) -> Leaf:
        ca_key = self.ca_key if issuer == "ca" else self.other_ca_key
        ca_cert = self.ca_cert if issuer == "ca" else self.other_ca_cert
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        start = NOW - datetime.timedelta(days=400 if expired else 1)
        end = (
            NOW - datetime.timedelta(days=2)
            if expired
            else NOW + datetime.timedelta(days=days_valid)
        )
        eku = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(names[0] if names else label))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path = self.directory / f"{label}.pem"
        key_path = self.directory / f"{label}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key_path, key)
        leaf = Leaf(label, cert_path, key_path, CertifiedKey([cert], key))
        self.leaves[label] = leaf
        return leaf


def add_rsa_root_chain(pki: Pki) -> Leaf:
    """An RSA root (PKCS#1 v1.5 signatures) -> ECDSA intermediate -> ECDSA leaf, sent as a chain."""
    root_key = rsa.generate_private_key(65537, 2048)
    root = pki._ca("looming RSA root", root_key)
    inter_key = ec.generate_private_key(ec.SECP384R1())
    inter = (
        x509.CertificateBuilder()
        .subject_name(name("looming intermediate"))
        .issuer_name(root.subject)
        .public_key(inter_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=1000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(inter_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(inter.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(inter_key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(inter_key, hashes.SHA384())
    )
    pki.rsa_root = root
    pki.rsa_root_path = pki.directory / "rsa-root.pem"
    pki.rsa_root_path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    cert_path = pki.directory / "chain.pem"
    key_path = pki.directory / "chain.key"
    cert_path.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + inter.public_bytes(serialization.Encoding.PEM)
    )
    write_key(key_path, leaf_key)
    chained = Leaf("chain", cert_path, key_path, CertifiedKey([leaf, inter], leaf_key))
    pki.leaves["chain"] = chained
    return chained


def build_pki(directory: Path) -> Pki:
    pki = Pki(directory)
    names = ["localhost", "127.0.0.1"]
    pki.leaf("rsa", rsa.generate_private_key(65537, 2048), names)
    pki.leaf("p256", ec.generate_private_key(ec.SECP256R1()), names)
    pki.leaf("p384", ec.generate_private_key(ec.SECP384R1()), names)
    pki.leaf("ed25519", ed25519.Ed25519PrivateKey.generate(), names)
    pki.leaf("other-name", ec.generate_private_key(ec.SECP256R1()), ["other.example"])
    pki.leaf("expired", ec.generate_private_key(ec.SECP256R1()), names, expired=True)
    pki.leaf("untrusted", ec.generate_private_key(ec.SECP256R1()), names, issuer="other")
    pki.leaf(
        "client-p256", ec.generate_private_key(ec.SECP256R1()), ["client.example"], client=True
    )
    pki.leaf("client-rsa", rsa.generate_private_key(65537, 2048), ["client.example"], client=True)
    add_rsa_root_chain(pki)
    return pki
