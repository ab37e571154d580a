"""Certificates as found in the wild: CN-only client certificates, RSA-PSS and
Ed448 keys, a chain with two intermediates, a self-signed leaf.

RSA-PSS keys and certificates are made by the OpenSSL CLI (``cryptography``
cannot generate id-RSASSA-PSS keys), so what is tested is what operators have.
"""

from __future__ import annotations

import datetime
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from looming.tls import CertifiedKey, TrustStore

from .pki import NOW, ca_builder, name, write_key

AnyKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


@dataclass
class Issued:
    cert: x509.Certificate
    key: AnyKey
    cert_path: Path
    key_path: Path
    # The chain sent by its owner, leaf first (the leaf and any intermediates).
    chain: list[x509.Certificate]

    @property
    def certified(self) -> CertifiedKey:
        return CertifiedKey(list(self.chain), self.key)  # type: ignore[arg-type]


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class WildPki:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = self.ca_cert("wild root", self.ca_key, None, None)
        self.ca_path = directory / "wild-ca.pem"
        self.ca_path.write_bytes(_pem([self.ca]))
        self.ca_key_path = directory / "wild-ca.key"
        write_key(self.ca_key_path, self.ca_key)
        self.trust = TrustStore([self.ca])

    def ca_cert(
        self,
        label: str,
        key: AnyKey,
        issuer: x509.Certificate | None,
        issuer_key: AnyKey | None,
    ) -> x509.Certificate:
        builder = ca_builder(
            name(label), issuer.subject if issuer else name(label), key.public_key(), days=1000
        )
        signer = issuer_key or key
        if issuer is not None and issuer_key is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]

    def leaf(
        self,
        label: str,
        key: AnyKey,
        sans: list[str],
        *,
        client: bool,
        issuer: tuple[x509.Certificate, AnyKey] | None = None,
        intermediates: list[x509.Certificate] = (),  # type: ignore[assignment]
    ) -> Issued:
        issuer_cert, issuer_key = issuer or (self.ca, self.ca_key)
        eku = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(sans[0] if sans else label))
            .issuer_name(issuer_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=300))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False
            )
        cert = builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
        return self._save(label, cert, key, [cert, *intermediates])

    def _save(
        self, label: str, cert: x509.Certificate, key: AnyKey, chain: list[x509.Certificate]
    ) -> Issued:
        cert_path = self.directory / f"{label}.pem"
        key_path = self.directory / f"{label}.key"
        cert_path.write_bytes(_pem(chain))
        write_key(key_path, key)
        return Issued(cert, key, cert_path, key_path, chain)

    def rsa_pss_leaf(self, label: str, sans: list[str], *, client: bool) -> Issued:
        """An id-RSASSA-PSS key and certificate, made by the OpenSSL CLI."""
        key_path = self.directory / f"{label}.key"
        cert_path = self.directory / f"{label}.pem"
        ext_path = self.directory / f"{label}.ext"
        eku = "clientAuth" if client else "serverAuth"
        lines = [
            "basicConstraints=critical,CA:FALSE",
            f"extendedKeyUsage={eku}",
            "authorityKeyIdentifier=keyid",
        ]
        if sans:
            lines.append("subjectAltName=" + ",".join(f"DNS:{n}" for n in sans))
        ext_path.write_text("\n".join(lines) + "\n")
        subject = f"/CN={sans[0] if sans else label}"
        commands = [
            ["openssl", "genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", str(key_path)],
            ["openssl", "req", "-new", "-key", str(key_path), "-subj", subject,
             "-out", str(self.directory / f"{label}.csr")],
            ["openssl", "x509", "-req", "-in", str(self.directory / f"{label}.csr"),
             "-CA", str(self.ca_path), "-CAkey", str(self.ca_key_path), "-set_serial", "7",
             "-days", "300", "-extfile", str(ext_path), "-out", str(cert_path)],
        ]  # fmt: skip
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        return Issued(cert, key, cert_path, key_path, [cert])  # type: ignore[arg-type]

    def deep_chain(self, label: str) -> Issued:
        """root -> intermediate 1 -> intermediate 2 -> leaf, the leaf's file holding all
        three below the root in order."""
        key1 = ec.generate_private_key(ec.SECP384R1())
        inter1 = self.ca_cert("wild intermediate 1", key1, self.ca, self.ca_key)
        key2 = rsa.generate_private_key(65537, 2048)
        inter2 = self.ca_cert("wild intermediate 2", key2, inter1, key1)
        return self.leaf(
            label,
            ec.generate_private_key(ec.SECP256R1()),
            ["localhost"],
            client=False,
            issuer=(inter2, key2),
            intermediates=[inter2, inter1],
        )

    def self_signed(self, label: str, sans: list[str]) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(sans[0]))
            .issuer_name(name(sans[0]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=300))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return self._save(label, cert, key, [cert])
