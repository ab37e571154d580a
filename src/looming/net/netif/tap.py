"""A TAP device (``/dev/net/tun`` with ``IFF_TAP | IFF_NO_PI``).

With ``offload=True`` the device is opened with ``IFF_VNET_HDR``: every
frame carries a virtio-net header, and the kernel is told (``TUNSETOFFLOAD``)
that looming accepts checksum-less and TSO frames.  The kernel then hands over
TCP segments of up to 64 KB in one read, with the checksum left for us to
finish (it is then filled in here, so the layers above see ordinary,
checksummed packets).  Frames looming sends carry an empty header, except
IPv4/TCP packets larger than the MTU: those go out as one TSO frame that the
kernel cuts into MSS-sized segments (see :attr:`TapNetwork.capabilities`
and ``Ipv4Layer.segment_limit``).
Opened without offloads, the device's offloads are set to none: they belong
to the device, and a persistent TAP keeps those an earlier open left on it.

The kernel side of the TAP is an ordinary interface: give it an address (in
the root namespace or after moving it into a network namespace with
``ip link set NAME netns NS``) and the kernel becomes looming's peer on a
point-to-point Ethernet.  The file descriptor keeps working when the device
moves between namespaces.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket
import struct
from collections.abc import Awaitable
from typing import Protocol

from looming.devices.net import Capabilities, MacAddress
from looming.errors import DeviceError, UsageError
from looming.net.netif._fd import FrameDevice, FrameDeviceNetwork
from looming.net.wire.checksum import internet_checksum, packed_pseudo_header_sum

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
VIRTIO_NET_HDR_F_NEEDS_CSUM = 0x01
VIRTIO_NET_HDR_F_DATA_VALID = 0x02
VIRTIO_NET_HDR_GSO_TCPV4 = 1
MAX_OFFLOAD_PACKET = 65535
VNET_HEADER = struct.Struct("<BBHHHH")  # flags, gso type, hdr len, gso size, csum start/offset
EMPTY_VNET_HEADER = bytes(VNET_HEADER.size)
IFF_UP = 0x1
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFMTU = 0x8922
SIOCGIFTXQLEN = 0x8942
SIOCSIFTXQLEN = 0x8943
# Frames the kernel holds for us (the TAP's txqueuelen, 1,000 by default):
# enough for a burst of a few thousand spoofed SYNs to be read and policed
# rather than overflow the queue and drop established connections' segments.
QUEUE_FRAMES = 8192
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
        queue = fcntl.ioctl(control, SIOCGIFTXQLEN, struct.pack("16si", raw_name, 0))
        if struct.unpack("16si", queue)[1] < QUEUE_FRAMES:
            fcntl.ioctl(control, SIOCSIFTXQLEN, struct.pack("16si", raw_name, QUEUE_FRAMES))
        if up:
            current = fcntl.ioctl(control, SIOCGIFFLAGS, struct.pack("16sH", raw_name, 0))
            flags = struct.unpack("16sH", current[:18])[1] | IFF_UP
            fcntl.ioctl(control, SIOCSIFFLAGS, struct.pack("16sH", raw_name, flags))


class BadInterfaceName(UsageError, DeviceError):
    """A TAP name the kernel would refuse: the user's input was wrong (a
    unikernel stops with exit code 2), not the device."""


def name_problem(name: str) -> str | None:
    """Why the kernel would refuse ``name`` as an interface name (it only
    says "invalid argument"), or None."""
    if not name or len(name.encode()) >= IFNAMSIZ:
        return f"TAP name {name!r} must have 1 to {IFNAMSIZ - 1} bytes"
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        return (
            f"TAP name {name!r} is not a valid interface name: no '/', ':' or "
            "white space, and not '.' or '..'"
        )
    return None


def _check_name(name: str) -> None:
    problem = name_problem(name)
    if problem is not None:
        raise BadInterfaceName(problem)


def _attach_failure(name: str, error: OSError) -> str:
    """What went wrong attaching TAP ``name``, and what to do about it."""
    if error.errno in (errno.EPERM, errno.EACCES):
        return (
            f"not allowed to create TAP device {name!r} ({error.strerror}): run as root "
            "or with CAP_NET_ADMIN, or have it created for your user beforehand with "
            f"'ip tuntap add dev {name} mode tap user $USER'"
        )
    if error.errno == errno.EBUSY:
        return (
            f"TAP device {name!r} is busy ({error.strerror}): another process has it "
            "open, or it exists with other settings; stop that process or choose "
            "another interface name"
        )
    if error.errno == errno.EINVAL:
        return (
            f"cannot attach TAP device {name!r} ({error.strerror}): an interface of "
            "that name probably exists and is not a TAP device; choose another name"
        )
    return f"cannot attach TAP device {name!r} ({error.strerror})"


class OffloadsKept(UsageError, DeviceError):
    """``offload=False`` asked of a TAP whose offloads cannot be turned off:
    the choice cannot be honoured on that device (exit code 2)."""


def _clear_offloads(fd: int, name: str) -> None:
    """Tell the kernel this side takes no partial checksums or TSO frames.

    The offloads are a property of the device, not of the open file: a
    persistent TAP that an earlier open (ours with offloads, qemu's,
    libvirt's) left with ``TUN_F_CSUM`` would go on handing over segments
    whose checksum is only the pseudo-header sum, and without a vnet header
    nothing says so; every TCP segment would fail its checksum."""
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
    except OSError as error:
        if error.errno == errno.ENOTTY:
            return  # a kernel without the ioctl has no offloads to clear
        os.close(fd)
        raise OffloadsKept(
            f"cannot turn off the offloads of TAP device {name!r} ({error.strerror}): "
            "frames with partial checksums would be dropped; use --offload true, or "
            f"delete the device ('ip link del {name}') so that it is created afresh"
        ) from error


def complete_checksum(frame: bytes, start: int, offset: int) -> bytes:
    """Finish a checksum the sender left partial (CHECKSUM_PARTIAL): the
    field at ``start + offset`` holds the pseudo-header sum, and the final
    value is the checksum of everything from ``start`` on."""
    field = start + offset
    if field + 2 > len(frame) or start > len(frame):
        return frame  # nonsense offsets: leave it for the parsers to reject
    checksum = internet_checksum(memoryview(frame)[start:]) or 0xFFFF
    return frame[:field] + checksum.to_bytes(2, "big") + frame[field + 2 :]


class CountsChecksums(Protocol):
    """A network that counts the checksums it completed."""

    checksums_completed: int


def vnet_frame(
    network: CountsChecksums, header: bytes | bytearray, frame: bytes
) -> tuple[bytes, bool]:
    """The frame behind virtio-net ``header`` (its bytes from the start), and
    whether its checksum is known to be right: the kernel checked it, or it
    was left for us to complete and we did (counted on ``network``).
    Offsets outside the frame leave it as it was, unverified."""
    flags, _gso_type, _header_length, _gso_size, start, offset = VNET_HEADER.unpack_from(header)
    if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        completed = complete_checksum(frame, start, offset)
        if completed is frame:
            return frame, False
        network.checksums_completed += 1
        return completed, True
    return frame, bool(flags & VIRTIO_NET_HDR_F_DATA_VALID)


def tso_frame(
    frame: bytes, segment_size: int
) -> tuple[bytes, memoryview, bytes, memoryview] | None:
    """The buffers to write for an oversized IPv4/TCP frame as one TSO frame:
    a virtio-net header asking the kernel to cut it into segments of
    ``segment_size`` payload bytes and finish each one's checksum, and the
    frame with its TCP checksum field replaced by the pseudo-header sum (as
    CHECKSUM_PARTIAL wants).  ``None`` for anything else."""
    if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ip_length = (frame[14] & 0x0F) * 4
    tcp_start = 14 + ip_length
    total_length = int.from_bytes(frame[16:18], "big")
    if total_length + 14 > len(frame) or tcp_start + 20 > len(frame):
        return None
    tcp_header_length = (frame[tcp_start + 12] >> 4) * 4
    tcp_length = total_length - ip_length
    if tcp_header_length < 20 or tcp_length < tcp_header_length or segment_size <= 0:
        return None
    header = VNET_HEADER.pack(
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        VIRTIO_NET_HDR_GSO_TCPV4,
        tcp_start + tcp_header_length,
        segment_size,
        tcp_start,
        16,
    )
    partial = packed_pseudo_header_sum(frame[26:34], 6, tcp_length).to_bytes(2, "big")
    view = memoryview(frame)
    field = tcp_start + 16
    return header, view[:field], partial, view[field + 2 : 14 + total_length]


class OffloadingNetwork(FrameDeviceNetwork):
    """A :class:`FrameDeviceNetwork` whose device takes virtio-net headers
    (``offload``): it hands the kernel IPv4/TCP frames of up to 64 KB to
    cut into segments (TCP segmentation offload). Subclasses send the
    pieces :func:`tso_frame` gives in :meth:`_send_pieces`."""

    offload: bool
    segments_offloaded: int

    def _send_pieces(self, pieces: tuple[bytes, memoryview, bytes, memoryview]) -> int:
        raise NotImplementedError

    async def write_segmented(self, frame: bytes, segment_size: int) -> None:
        """Send an IPv4/TCP frame of up to 64 KB that the kernel cuts into
        segments of ``segment_size`` payload bytes."""
        pending = self.write_segmented_now(frame, segment_size)
        if pending is not None:
            await pending

    def write_segmented_now(self, frame: bytes, segment_size: int) -> Awaitable[None] | None:
        """:meth:`write_segmented` without a coroutine while the device
        takes frames at once (see :meth:`FrameDevice.write_now`)."""
        if "write_segmented" in self.__dict__:
            return self.write_segmented(frame, segment_size)  # (a wrapper sees every frame)
        pieces = tso_frame(frame, segment_size) if self.offload else None
        if pieces is None:
            raise ValueError(
                "only an interface opened with offloads segments, and only IPv4/TCP frames"
            )
        self.segments_offloaded += 1
        send = self._send_pieces
        return self._device.write_now(frame, lambda _frame: send(pieces))


class TapNetwork(OffloadingNetwork):
    """:class:`looming.devices.net.Network` on a TAP device."""

    def __init__(
        self, fd: int, name: str, mac: MacAddress, mtu: int, *, offload: bool = False
    ) -> None:
        self._fd = fd
        self.name = name
        self._mac = mac
        self._mtu = mtu
        self.offload = offload
        self.checksums_completed = 0
        self.segments_offloaded = 0
        if offload:
            # Received frames come with whether their checksum is known to
            # be right: one this side just completed (the kernel left it
            # partial) or one the kernel already checked; the layers above
            # then skip verifying it again, as a virtio-net driver does.
            self._capabilities = Capabilities(
                mtu=mtu, rx_checksum=True, tx_checksum=True, segmentation=MAX_OFFLOAD_PACKET
            )
            self._device = FrameDevice(fd, receive_checked=self._read_vnet, send=self._write_vnet)
        else:
            self._capabilities = Capabilities(mtu=mtu)
            self._device = FrameDevice(fd, read_size=mtu + 18 + 64)

    @property
    def capabilities(self) -> Capabilities:
        """With offloads: received checksums vouched for, and IPv4/TCP
        packets of up to 64 KB segmented and checksummed by the kernel."""
        return self._capabilities

    def _read_vnet(self) -> tuple[bytes, bool]:
        data = os.read(self._fd, 65536 + 128)
        if len(data) < VNET_HEADER.size:
            return b"", False
        return vnet_frame(self, data, data[VNET_HEADER.size :])

    def _write_vnet(self, frame: bytes) -> int:
        return os.writev(self._fd, (EMPTY_VNET_HEADER, frame))

    def _send_pieces(self, pieces: tuple[bytes, memoryview, bytes, memoryview]) -> int:
        return os.writev(self._fd, pieces)

    @classmethod
    async def connect(
        cls,
        name: str,
        *,
        mtu: int = 1500,
        mac: MacAddress | None = None,
        bring_up: bool = True,
        offload: bool = False,
    ) -> TapNetwork:
        """Open (creating it if needed, which needs CAP_NET_ADMIN) TAP ``name``.

        With ``bring_up`` the kernel side gets ``mtu`` and is set up, when the
        device lives in our namespace (best effort otherwise).
        """
        _check_name(name)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            raise DeviceError(
                f"cannot open /dev/net/tun ({error.strerror}): load the tun module "
                "('modprobe tun') and run as root or with CAP_NET_ADMIN"
            ) from error
        try:
            flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
            answer = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
            if offload:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HEADER.size))
                fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)
        except OSError as error:
            os.close(fd)
            if offload and error.errno in (errno.EINVAL, errno.ENOTTY, errno.EOPNOTSUPP):
                # This kernel or device has no vnet offloads: run without.
                return await cls.connect(name, mtu=mtu, mac=mac, bring_up=bring_up)
            raise DeviceError(_attach_failure(name, error)) from error
        # The kernel fills in a template such as "tap%d"; use the real name.
        name = answer[:IFNAMSIZ].split(b"\0", 1)[0].decode() or name
        if not offload:
            _clear_offloads(fd, name)
        if bring_up:
            try:
                _set_link(name, mtu=mtu)
            except OSError:
                pass  # not in our namespace, or not allowed: the caller sets it up
        return cls(fd, name, mac if mac is not None else mac_for_name(name), mtu, offload=offload)

    def _release(self) -> None:
        os.close(self._fd)
