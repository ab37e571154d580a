"""An AF_PACKET raw socket on an existing interface (a veth end, a NIC).

looming uses its own MAC address beside the kernel's, so the interface is
put in promiscuous mode; frames the kernel itself sends on the interface
(PACKET_OUTGOING) are skipped.  Packets that other parts of the same host
sent with checksum offload (veth, bridges) arrive with their TCP or UDP
checksum unfinished; PACKET_AUXDATA flags them, and the checksum is completed
here so the layers above see ordinary packets.  The kernel must not own an IPv4 address on
the interface, or both would answer.

With ``offload=True`` the socket carries a virtio-net header with every
frame (``PACKET_VNET_HDR``), as an offloading TAP does: received frames say
whether their checksum was checked or left partial, and an IPv4/TCP packet of
up to 64 KB leaves in one ``send`` that the kernel cuts into segments (in
software when the device cannot), so a window of segments costs one system
call and one wake-up of whatever reads the interface, not one per segment.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct

from looming.devices.net import Capabilities, MacAddress
from looming.errors import DeviceError
from looming.net.netif._fd import FrameDevice
from looming.net.netif.tap import (
    EMPTY_VNET_HEADER,
    MAX_OFFLOAD_PACKET,
    VNET_HEADER,
    OffloadingNetwork,
    complete_checksum,
    mac_for_name,
    vnet_frame,
)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4
PACKET_AUXDATA = 8
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23  # Linux 4.20
SO_RCVBUFFORCE = 33
RECEIVE_QUEUE_BYTES = 8 << 20
TP_STATUS_CSUMNOTREADY = 1 << 3
AUXDATA = struct.Struct("IIIHHHH")
_AUXDATA_SPACE = socket.CMSG_SPACE(AUXDATA.size)
_CHECKSUM_OFFSETS = {6: 16, 17: 6}  # TCP and UDP: where the checksum field is
SIOCGIFMTU = 0x8921


def _widen_receive_queue(sock: socket.socket) -> None:
    """A burst of a full TCP window must not overflow the socket's queue
    (the default holds about 100 frames): ask for RECEIVE_QUEUE_BYTES
    (beyond rmem_max with CAP_NET_ADMIN), and leave the copies of our own
    frames out of it where the kernel can."""
    for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, RECEIVE_QUEUE_BYTES)
            break
        except OSError:
            continue
    with contextlib.suppress(OSError):
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)


def _ignores_outgoing(sock: socket.socket) -> bool:
    """Whether the kernel leaves the copies of our own frames out."""
    try:
        return bool(sock.getsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING))
    except OSError:
        return False


def finish_checksum(frame: bytes) -> bytes:
    """Complete the TCP or UDP checksum of an untagged frame whose checksum
    field holds only the pseudo-header sum (the kernel's CHECKSUM_PARTIAL):
    an unfragmented IPv4 packet, or an IPv6 packet whose first header is
    TCP or UDP. Anything else is returned as it is (and so not vouched for)."""
    kind = frame[12:14]
    if kind == b"\x08\x00" and len(frame) >= 34:
        header_length = (frame[14] & 0x0F) * 4
        offset = _CHECKSUM_OFFSETS.get(frame[23])
        fragment = int.from_bytes(frame[20:22], "big") & 0x3FFF
        if offset is None or fragment or header_length < 20:
            return frame
        return complete_checksum(frame, 14 + header_length, offset)
    if kind == b"\x86\xdd" and len(frame) >= 54:
        offset = _CHECKSUM_OFFSETS.get(frame[20])
        if offset is None:
            return frame
        return complete_checksum(frame, 54, offset)
    return frame


class PacketNetwork(OffloadingNetwork):
    """:class:`looming.devices.net.Network` on an AF_PACKET socket."""

    def __init__(
        self,
        sock: socket.socket,
        interface: str,
        mac: MacAddress,
        mtu: int,
        *,
        offload: bool = False,
    ) -> None:
        """``offload``: ``sock`` has ``PACKET_VNET_HDR`` set."""
        self._socket = sock
        self.interface = interface
        self._mac = mac
        self._mtu = mtu
        self.offload = offload
        self.checksums_completed = 0
        self.segments_offloaded = 0
        if offload:
            # Without our own frames to skip, a frame is read into one
            # buffer, with no address to build and no 64 KB bytes object.
            receive = self._receive_vnet_into if _ignores_outgoing(sock) else self._receive_vnet
            self._buffer = bytearray(65536 + VNET_HEADER.size)
            self._view = memoryview(self._buffer)
            self._device = FrameDevice(sock.fileno(), receive_checked=receive, send=self._send_vnet)
            self._capabilities = Capabilities(
                mtu=mtu, rx_checksum=True, tx_checksum=True, segmentation=MAX_OFFLOAD_PACKET
            )
        else:
            self._device = FrameDevice(sock.fileno(), receive_checked=self._receive, send=sock.send)
            # A frame whose checksum this side completed is vouched for.
            self._capabilities = Capabilities(mtu=mtu, rx_checksum=True)

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @classmethod
    async def connect(
        cls,
        interface: str,
        *,
        mac: MacAddress | None = None,
        promiscuous: bool = True,
        offload: bool = False,
    ) -> PacketNetwork:
        """Open an AF_PACKET socket on ``interface``; with ``offload``,
        virtio-net headers (checksum state in, segmentation out) where the
        kernel has them, plain frames where not."""
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except OSError as error:
            raise DeviceError(
                f"cannot open an AF_PACKET socket ({error.strerror}): it needs CAP_NET_RAW"
            ) from error
        try:
            sock.bind((interface, ETH_P_ALL))
            index = socket.if_nametoindex(interface)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            _widen_receive_queue(sock)
            if promiscuous:
                request = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, request)
            answer = fcntl.ioctl(sock, SIOCGIFMTU, struct.pack("16si", interface.encode(), 0))
            mtu = struct.unpack("16si", answer[:20])[1]
        except OSError as error:
            sock.close()
            raise DeviceError(f"cannot use interface {interface!r}: {error.strerror}") from error
        if offload:
            try:
                sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            except OSError:
                offload = False  # an old kernel: plain frames
        sock.setblocking(False)
        chosen = mac if mac is not None else mac_for_name(interface)
        return cls(sock, interface, chosen, mtu, offload=offload)

    def _receive(self) -> tuple[bytes, bool]:
        """The next frame not sent by this host, and whether its checksum
        was completed here (and so is known to be right)."""
        while True:
            frame, ancillary, _flags, address = self._socket.recvmsg(65536, _AUXDATA_SPACE)
            if address[2] == PACKET_OUTGOING:
                continue
            for level, kind, data in ancillary:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= AUXDATA.size:
                    status = AUXDATA.unpack_from(data)[0]
                    if status & TP_STATUS_CSUMNOTREADY:
                        completed = finish_checksum(frame)
                        if completed is not frame:
                            self.checksums_completed += 1
                            return completed, True
            return frame, False

    def _receive_vnet(self) -> tuple[bytes, bool]:
        """:meth:`_receive` with a virtio-net header in front of each frame
        (which says what AUXDATA says, and more)."""
        header_size = VNET_HEADER.size
        while True:
            data, address = self._socket.recvfrom(65536 + header_size)
            if address[2] == PACKET_OUTGOING:
                continue
            if len(data) < header_size:
                return b"", False
            return vnet_frame(self, data, data[header_size:])

    def _receive_vnet_into(self) -> tuple[bytes, bool]:
        """:meth:`_receive_vnet` on a socket that never hands us our own frames."""
        size = self._socket.recv_into(self._buffer)
        header_size = VNET_HEADER.size
        if size < header_size:
            return b"", False
        return vnet_frame(self, self._buffer, bytes(self._view[header_size:size]))

    def _send_vnet(self, frame: bytes) -> int:
        return self._socket.sendmsg((EMPTY_VNET_HEADER, frame))

    def _send_pieces(self, pieces: tuple[bytes, memoryview, bytes, memoryview]) -> int:
        return self._socket.sendmsg(pieces)

    def _release(self) -> None:
        self._socket.close()
