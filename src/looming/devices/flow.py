"""Flows: reliable, ordered byte streams (TCP, TLS, vchan, pipes)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Flow(Protocol):
    """A bidirectional byte stream.

    ``read`` returns the next chunk of received bytes, of whatever size
    arrived, and ``b""`` once the peer has shut down its side (end of file).
    ``write`` returns once the bytes are accepted by the flow's buffer (it
    applies back-pressure); after :meth:`shutdown` or :meth:`close`, writing
    raises :class:`~looming.errors.Closed`. A reset by the peer raises
    :class:`~looming.errors.ConnectionReset` from ``read`` and ``write``.
    """

    @property
    def local_address(self) -> tuple[str, int] | None:
        """This end's (host, port), or None when the flow has none that an
        address names (a pipe, a vchan) or does not know it."""
        ...

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's (host, port), or None as for :attr:`local_address`."""
        ...

    async def read(self) -> bytes:
        """The next received bytes; ``b""`` at end of stream."""
        ...

    async def write(self, data: bytes) -> None:
        """Send ``data``; returns when it has been accepted for sending."""
        ...

    async def writev(self, buffers: Iterable[bytes]) -> None:
        """Send several buffers as one write, in order."""
        ...

    async def shutdown(self) -> None:
        """Close the sending direction (send FIN); reading still works."""
        ...

    async def close(self) -> None:
        """Close both directions and release the flow. Idempotent."""
        ...
