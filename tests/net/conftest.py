"""Fixtures for testing looming's direct stack against the Linux kernel.

``kernel_peer`` (stable, used by the TCP tests too) yields a
:class:`tests.net.kernel.KernelPeer`: a fresh network namespace whose kernel
answers at ``peer_address`` (10.77.0.1) over a TAP device; looming's stack
gets ``stack_address`` (10.77.0.2/24).  See ``tests/net/kernel.py``.
"""

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
