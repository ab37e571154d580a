"""A TAP device (``/dev/net/tun`` with ``IFF_TAP | IFF_NO_PI``).

The kernel side of the TAP is an ordinary interface: give it an address (in
the root namespace or after moving it into a network namespace with
``ip link set NAME netns NS``) and the kernel becomes looming's peer on a
point-to-point Ethernet.  The file descriptor keeps working when the device
moves between namespaces.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import struct

from looming.devices.net import FrameHandler, MacAddress, NetworkStats
from looming.errors import DeviceError
from looming.net.netif._fd import FrameDevice

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_UP = 0x1
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFMTU = 0x8922
IFNAMSIZ = 16


def mac_for_name(name: str) -> MacAddress:
    """A stable, locally administered unicast MAC derived from ``name``, so
    the same TAP gets the same looming address on every run."""
    digest = hashlib.sha256(b"looming-tap:" + name.encode()).digest()
    return MacAddress(bytes((0x02,)) + digest[:5])


def _set_link(name: str, *, mtu: int | None = None, up: bool = True) -> None:
    """Set the kernel side's MTU and bring it up (in our own namespace)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
        raw_name = name.encode()
        if mtu is not None:
            fcntl.ioctl(control, SIOCSIFMTU, struct.pack("16si", raw_name, mtu))
        if up:
            current = fcntl.ioctl(control, SIOCGIFFLAGS, struct.pack("16sH", raw_name, 0))
            flags = struct.unpack("16sH", current[:18])[1] | IFF_UP
            fcntl.ioctl(control, SIOCSIFFLAGS, struct.pack("16sH", raw_name, flags))


class TapNetwork:
    """:class:`looming.devices.net.Network` on a TAP device."""

    def __init__(self, fd: int, name: str, mac: MacAddress, mtu: int) -> None:
        self._fd = fd
        self.name = name
        self._mac = mac
        self._mtu = mtu
        self._device = FrameDevice(fd, read_size=mtu + 18 + 64)

    @classmethod
    async def connect(
        cls, name: str, *, mtu: int = 1500, mac: MacAddress | None = None, bring_up: bool = True
    ) -> TapNetwork:
        """Open (creating it if needed, which needs CAP_NET_ADMIN) TAP ``name``.

        With ``bring_up`` the kernel side gets ``mtu`` and is set up, when the
        device lives in our namespace (best effort otherwise).
        """
        if not name or len(name.encode()) >= IFNAMSIZ:
            raise DeviceError(f"TAP name {name!r} must have 1 to {IFNAMSIZ - 1} bytes")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            raise DeviceError(
                f"cannot open /dev/net/tun ({error.strerror}): load the tun module "
                "and run as root or with CAP_NET_ADMIN"
            ) from error
        try:
            request = struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI)
            fcntl.ioctl(fd, TUNSETIFF, request)
        except OSError as error:
            os.close(fd)
            raise DeviceError(
                f"cannot attach TAP device {name!r} ({error.strerror}): it needs "
                "CAP_NET_ADMIN, or create it first with "
                f"'ip tuntap add dev {name} mode tap user $USER'"
            ) from error
        if bring_up:
            try:
                _set_link(name, mtu=mtu)
            except OSError:
                pass  # not in our namespace, or not allowed: the caller sets it up
        return cls(fd, name, mac if mac is not None else mac_for_name(name), mtu)

    @property
    def mac(self) -> MacAddress:
        return self._mac

    @property
    def mtu(self) -> int:
        return self._mtu

    def stats(self) -> NetworkStats:
        return self._device.stats()

    async def write(self, frame: bytes) -> None:
        await self._device.write(frame)

    async def listen(self, handler: FrameHandler) -> None:
        await self._device.listen(handler)

    async def disconnect(self) -> None:
        if self._device.closed:
            return
        self._device.close()
        os.close(self._fd)
