"""Fixtures for the TCP tests: the Linux kernel as a peer (see tests/net/kernel.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.net.kernel import KernelPeer, have_root, kernel_peer_namespace


@pytest.fixture
def kernel_peer() -> Iterator[KernelPeer]:
    if not have_root():
        pytest.fail("this test needs root and /dev/net/tun (it is marked root; CI runs as root)")
    with kernel_peer_namespace() as peer:
        yield peer
