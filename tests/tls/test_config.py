"""Bad configuration is a UsageError with a message that says what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from looming.errors import UsageError
from looming.tls import CertifiedKey, TlsConfig, TrustStore
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"alpn_protocols": [b""]}, "ALPN"),
        ({"alpn_protocols": ["x" * 300]}, "ALPN"),
        ({"versions": [0x0302]}, "versions"),
        ({"versions": []}, "versions"),
        ({"record_size_limit": 10}, "record_size_limit"),
        ({"cipher_suites": [0x0005]}, "cipher suites"),
        ({"groups": [0x0019]}, "groups"),
        ({"require_client_certificate": True}, "client_trust"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        TlsConfig(**kwargs, random=UnixRandom(), clock=UnixClock())  # type: ignore[arg-type]


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot load certificate"):
        CertifiedKey.from_pem_files(tmp_path / "no.pem", tmp_path / "no.key")
    with pytest.raises(UsageError, match="cannot load CA certificates"):
        TrustStore.from_pem_file(tmp_path / "no-ca.pem")
    with pytest.raises(UsageError, match="at least one"):
        TrustStore([])


def test_string_alpn_is_encoded() -> None:
    assert TlsConfig(
        alpn_protocols=["h2", b"http/1.1"], random=UnixRandom(), clock=UnixClock()
    ).alpn_protocols == [b"h2", b"http/1.1"]  # type: ignore[list-item]
