"""Fixtures for running ``--net direct`` unikernels against the Linux kernel
(see ``tests/direct/unikernel.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.direct.unikernel import Namespace, namespace
from tests.net.kernel import have_root


def need_root() -> None:
    if not have_root():
        pytest.fail("this test needs root and /dev/net/tun (it is marked root; CI runs as root)")


@pytest.fixture
def kernel_namespace() -> Iterator[Namespace]:
    need_root()
    with namespace() as ns:
        yield ns
