"""An AF_PACKET raw socket on an existing interface (a veth end, a NIC).

looming uses its own MAC address beside the kernel's, so the interface is
put in promiscuous mode; frames the kernel itself sends on the interface
(PACKET_OUTGOING) are skipped.  The kernel must not own an IPv4 address on
the interface, or both would answer.
"""

from __future__ import annotations

import fcntl
import socket
import struct

from looming.devices.net import FrameHandler, MacAddress, NetworkStats
from looming.errors import DeviceError
from looming.net.netif._fd import FrameDevice
from looming.net.netif.tap import mac_for_name

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4
SIOCGIFMTU = 0x8921


class PacketNetwork:
    """:class:`looming.devices.net.Network` on an AF_PACKET socket."""

    def __init__(self, sock: socket.socket, interface: str, mac: MacAddress, mtu: int) -> None:
        self._socket = sock
        self.interface = interface
        self._mac = mac
        self._mtu = mtu
        self._device = FrameDevice(sock.fileno(), receive=self._receive, send=sock.send)

    @classmethod
    async def connect(
        cls, interface: str, *, mac: MacAddress | None = None, promiscuous: bool = True
    ) -> PacketNetwork:
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except OSError as error:
            raise DeviceError(
                f"cannot open an AF_PACKET socket ({error.strerror}): it needs CAP_NET_RAW"
            ) from error
        try:
            sock.bind((interface, ETH_P_ALL))
            index = socket.if_nametoindex(interface)
            if promiscuous:
                request = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, request)
            answer = fcntl.ioctl(sock, SIOCGIFMTU, struct.pack("16si", interface.encode(), 0))
            mtu = struct.unpack("16si", answer[:20])[1]
        except OSError as error:
            sock.close()
            raise DeviceError(f"cannot use interface {interface!r}: {error.strerror}") from error
        sock.setblocking(False)
        return cls(sock, interface, mac if mac is not None else mac_for_name(interface), mtu)

    def _receive(self) -> bytes:
        while True:
            frame, address = self._socket.recvfrom(65536)
            if address[2] != PACKET_OUTGOING:
                return frame

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
        self._socket.close()
