"""Channels between the caller and the isolated backend's helper process.

A channel carries whole messages both ways. The default is a socketpair
(``AF_UNIX``, stream, each message preceded by its 32-bit length:
:mod:`looming.ffi.framing`). Other
transports plug in through :class:`Transport`: the client side opens the
channel and says how the helper reaches its end, as an import path
``"module:function:argument"`` that the helper calls with the argument to
get its :class:`Channel`. A shared-memory transport (vchan) can be given to
the isolated backend as ``transport=`` (``"vchan"``, or ``"auto"`` to take it
when :mod:`looming.vchan` is installed; see :mod:`looming.ffi.vchan_transport`).
"""

from __future__ import annotations

import importlib
import socket
from typing import Protocol

from looming.devices.time import Time
from looming.ffi.framing import MAX_MESSAGE, ChannelClosed, MessageReader, frame

__all__ = [
    "MAX_MESSAGE",
    "Channel",
    "ChannelClosed",
    "SocketChannel",
    "SocketpairTransport",
    "Transport",
    "connect",
    "connect_socketpair",
    "default_transport",
]


class Channel(Protocol):
    def send(self, message: bytes | bytearray) -> None: ...

    def recv(self) -> bytes: ...

    def close(self) -> None: ...


class Transport(Protocol):
    """Opens a channel for one helper process."""

    name: str

    def open(self) -> tuple[Channel, str, tuple[int, ...]]:
        """(client end, the helper's connect spec, file descriptors the helper inherits)."""
        ...

    def after_spawn(self) -> None:
        """Called once the helper has started (close what only the helper needs)."""
        ...


class SocketChannel:
    """Length-prefixed messages over a connected stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = MessageReader(262144)

    def send(self, message: bytes | bytearray) -> None:
        try:
            self.sock.sendall(frame(message))
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ChannelClosed(f"channel closed while sending: {exc}") from exc

    def recv(self) -> bytes:
        message = self._reader.read(self._read_into)
        if message is None:
            raise ChannelClosed("channel closed by the other end")
        return message

    def _read_into(self, chunk: memoryview) -> int:
        try:
            return self.sock.recv_into(chunk)
        except (ConnectionResetError, OSError) as exc:
            raise ChannelClosed(f"channel closed while receiving: {exc}") from exc

    def close(self) -> None:
        self.sock.close()


class SocketpairTransport:
    """The default transport: an AF_UNIX socketpair, one end inherited by the helper."""

    name = "socketpair"

    def __init__(self) -> None:
        self._helper_end: socket.socket | None = None

    def open(self) -> tuple[Channel, str, tuple[int, ...]]:
        client_end, helper_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._helper_end = helper_end
        spec = f"looming.ffi.channel:connect_socketpair:{helper_end.fileno()}"
        return SocketChannel(client_end), spec, (helper_end.fileno(),)

    def after_spawn(self) -> None:
        if self._helper_end is not None:
            self._helper_end.close()
            self._helper_end = None


def connect_socketpair(argument: str, time: Time) -> Channel:
    """Helper side of :class:`SocketpairTransport`: the inherited descriptor."""
    return SocketChannel(socket.socket(fileno=int(argument)))


def connect(spec: str, *, time: Time) -> Channel:
    """Helper side: resolve ``module:function:argument`` to a channel whose
    waits are measured on ``time`` (the helper process's time device)."""
    module_name, function_name, argument = spec.split(":", 2)
    function = getattr(importlib.import_module(module_name), function_name)
    channel: Channel = function(argument, time)
    return channel


def default_transport(choice: str | Transport | None, *, time: Time) -> Transport:
    """The transport for ``choice``: a Transport, "socketpair", "vchan" or "auto".

    "auto" takes vchan when :mod:`looming.vchan` is installed, else the socketpair;
    vchan's waits are measured on ``time``.
    """
    if choice is None or choice == "socketpair":
        return SocketpairTransport()
    if choice in ("vchan", "auto"):
        try:
            from looming.ffi.vchan_transport import VchanTransport
        except ImportError:
            if choice == "vchan":
                raise
            return SocketpairTransport()
        return VchanTransport(time=time)
    if isinstance(choice, str):
        raise ValueError(
            f"unknown transport {choice!r}: use 'socketpair', 'vchan', 'auto' or a Transport"
        )
    return choice
