"""Session-scoped test PKI for the TLS tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519

from .pki import Pki, build_pki
from .wild_pki import Issued, WildPki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory: Path = tmp_path_factory.mktemp("looming-tls-pki")
    return build_pki(directory)


@pytest.fixture(scope="session")
def wild(tmp_path_factory: pytest.TempPathFactory) -> WildPki:
    return WildPki(tmp_path_factory.mktemp("wild-pki"))


@pytest.fixture(scope="session")
def issued(wild: WildPki) -> dict[str, Issued]:
    return {
        "server-p256": wild.leaf(
            "server-p256", ec.generate_private_key(ec.SECP256R1()), ["localhost"], client=False
        ),
        "server-pss": wild.rsa_pss_leaf("server-pss", ["localhost"], client=False),
        "server-ed25519": wild.leaf(
            "server-ed25519", ed25519.Ed25519PrivateKey.generate(), ["localhost"], client=False
        ),
        "server-ed448": wild.leaf(
            "server-ed448", ed448.Ed448PrivateKey.generate(), ["localhost"], client=False
        ),
        "client-cn-only": wild.leaf(
            "client-cn-only", ec.generate_private_key(ec.SECP256R1()), [], client=True
        ),
        "client-san": wild.leaf(
            "client-san", ec.generate_private_key(ec.SECP256R1()), ["alice.example"], client=True
        ),
        "client-pss-cn-only": wild.rsa_pss_leaf("client-pss-cn-only", [], client=True),
        "client-ed25519": wild.leaf(
            "client-ed25519", ed25519.Ed25519PrivateKey.generate(), [], client=True
        ),
        "deep": wild.deep_chain("deep"),
        "self-signed": wild.self_signed("self-signed", ["localhost"]),
        "other-self-signed": wild.self_signed("other-self-signed", ["localhost"]),
    }
