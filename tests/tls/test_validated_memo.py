"""Bounded TLS memos: a trust store remembers at most VALIDATED_CACHE_SIZE
validated chains, least recently used forgotten first; HKDF label prefixes
stay bounded and right when exporters bring labels of their own."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.x509.oid import NameOID

from looming.tls.certs import VALIDATED_CACHE_SIZE, TrustStore


def _self_signed() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "memo test CA")])
    start = datetime.datetime(2020, 1, 1)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def test_the_chain_in_use_outlives_the_bound() -> None:
    cert = _self_signed()
    trust = TrustStore([cert])
    now = datetime.datetime(2024, 6, 1)
    trust.remember_validated("in use", [cert])
    for n in range(VALIDATED_CACHE_SIZE + 10):
        assert trust.validated("in use", now)  # read between others: most recent
        trust.remember_validated(("other", n), [cert])
        assert len(trust._validated) <= VALIDATED_CACHE_SIZE
    assert trust.validated("in use", now)
    assert not trust.validated(("other", 0), now)  # least recently used: forgotten
    assert trust.validated(("other", VALIDATED_CACHE_SIZE + 9), now)
    assert not trust.validated("in use", datetime.datetime(2040, 1, 1))  # past its dates


def test_exporter_labels_beyond_the_label_memo_stay_right_and_bounded() -> None:
    from looming.tls import suites

    secret = bytes(range(32))
    for n in range(suites._LABEL_PREFIX.bound + 50):
        label = b"EXPORTER-%d" % n
        info = (16).to_bytes(2, "big") + bytes((6 + len(label),)) + b"tls13 " + label + b"\x00"
        expected = HKDFExpand(hashes.SHA256(), 16, info).derive(secret)
        assert suites.hkdf_expand_label("sha256", secret, label, b"", 16) == expected
        assert len(suites._LABEL_PREFIX) <= suites._LABEL_PREFIX.bound
