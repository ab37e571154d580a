"""Session-scoped test PKI for the TLS tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .pki import Pki, build_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory: Path = tmp_path_factory.mktemp("looming-tls-pki")
    return build_pki(directory)
