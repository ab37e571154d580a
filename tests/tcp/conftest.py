"""Fixtures for the TCP tests: the Linux kernel as a peer (see tests/net/kernel.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.register_assert_rewrite("tests.tcp.script", "tests.tcp.ipv4_pair")

from tests.net.kernel import KernelPeer, have_root, kernel_peer_namespace  # noqa: E402  (after the rewrite hook)


@pytest.fixture
def kernel_peer() -> Iterator[KernelPeer]:
    if not have_root():
        pytest.fail("this test needs root and /dev/net/tun (it is marked root; CI runs as root)")
    with kernel_peer_namespace() as peer:
        yield peer
