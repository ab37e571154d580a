"""vchan between two VMs: the shared page in an ivshmem PCI device's memory.

Inside a VM of the ``vm`` target, ``vchan(port)`` is backed by qemu's
``ivshmem-plain`` device (PCI vendor 0x1af4, device 0x1110), whose BAR 2 is
a file in the host's ``/dev/shm`` that qemu maps into both VMs (see
:mod:`looming.vm.ivshmem` for the host's side). The guest maps that BAR
through ``/sys/bus/pci/devices/<address>/resource2`` and lays out the same
page as the ``process`` target (:mod:`looming.vchan.layout`, libxenvchan's
layout) at its start; the :class:`~looming.vchan.endpoint.Endpoint` and the
asyncio shell over it are the process target's, unchanged.

The region (:data:`REGION_SIZE` bytes) ends with a header page of its own::

    offset  size  field
         0     8  magic  b"LOOMVCH1"  (the host writes it)
         8     4  version, 1          (the host)
        12     4  state: 0 not ready, 1 the ring is initialised (the server VM)
        16     4  generation: the server bumps it at each initialisation
        20     4  server heartbeat    (the server VM counts)
        24     4  client heartbeat    (the client VM counts)
        32    64  the serving unikernel's name, NUL-padded (the host)
        96    64  the port, NUL-padded (the host)

Plain ivshmem has no interrupts, so notification is polling: a thread of
the guest (the *doorbell*) watches the words the peer writes (its ring
index and its liveness byte) and, when one changes, signals this end's
own eventfd, which is what the process target's peer would have done. It
checks every 0.2 ms while the peer is busy (a change within the last
20 ms), backing off to every 4 ms, and after a second without a change to
every 20 ms (measured under TCG here: the idle, connected store VM of
examples/vchan_store took 13.7 % of a host core polling every 4 ms, 7.4 %
every 20 ms, and 3.6 % waiting for a client with no channel). Kicks this end sends go nowhere (an eventfd nobody
reads); the peer's doorbell sees the index move. A peer VM that stops
counting its heartbeat for :data:`DEAD_AFTER` seconds is dead: the
endpoint's control socket is closed under it, as a process peer's death
closes it, and the next operation raises ``ConnectionReset``.

A server publishes a port by initialising the ring, then setting state 1;
a client waits for state 1, checks the layout, and says it is connected in
the liveness byte as on the process target. When the client leaves, the
server initialises the ring again (a new generation) for the next client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from looming.devices.time import Time
from looming.errors import ConfigError, ConnectionRefused, ConnectionTimeout
from looming.vchan import aio, layout
from looming.vchan.device import NAME_ENV, VchanDevice
from looming.vchan.endpoint import DEFAULT_RING_SIZE, Endpoint
from looming.vchan.errors import VchanCorrupt
from looming.vchan.notify import EVENTFD, Notifier
from looming.vchan.registry import check_name
from looming.vchan.ring import RingEnd
from looming.vchan.segment import Segment

log = logging.getLogger("looming.vchan")

PCI_DEVICES = Path("/sys/bus/pci/devices")
VENDOR = "0x1af4"  # Red Hat, Inc. (qemu's virtual devices)
DEVICE = "0x1110"  # Inter-VM shared memory
REGION_SIZE = 4 << 20  # a power of two, as ivshmem wants; holds two 1 MiB rings
HEADER_OFFSET = REGION_SIZE - layout.PAGE_SIZE
SEGMENT_LIMIT = HEADER_OFFSET
MAGIC = b"LOOMVCH1"
VERSION = 1
NAME_FIELD = 64
STATE, GENERATION, SERVER_BEAT, CLIENT_BEAT = 12, 16, 20, 24
NAME_AT, PORT_AT = 32, 96
NOT_READY, READY = 0, 1
FAST_POLL = 0.0002
SLOW_POLL = 0.004
HOT = 0.02  # polls stay fast this long after the last change
DROWSY = 1.0  # and are at most SLOW_POLL apart this long
IDLE_POLL = 0.02  # then at most this: an idle VM's polling costs little under emulation
BEAT_EVERY = 0.25
DEAD_AFTER = 15.0
_U32 = struct.Struct("=I")


def header(name: str, port: str) -> bytes:
    """The header page the host writes before the VMs start."""
    page = bytearray(layout.PAGE_SIZE)
    page[0:8] = MAGIC
    _U32.pack_into(page, 8, VERSION)
    for at, text in ((NAME_AT, name), (PORT_AT, port)):
        raw = text.encode("ascii")
        if len(raw) >= NAME_FIELD:
            raise ValueError(f"vchan name {text!r} is longer than {NAME_FIELD - 1} bytes")
        page[at : at + len(raw)] = raw
    return bytes(page)


def _field(page: memoryview | bytes, at: int) -> str:
    return bytes(page[at : at + NAME_FIELD]).split(b"\0", 1)[0].decode("ascii", "replace")


@dataclass
class Region:
    """One ivshmem device's memory, mapped, with the names the host gave it."""

    segment: Segment
    name: str
    port: str
    address: str

    def word(self, at: int) -> int:
        return int(_U32.unpack_from(self.segment.mapping, HEADER_OFFSET + at)[0])

    def set_word(self, at: int, value: int) -> None:
        _U32.pack_into(self.segment.mapping, HEADER_OFFSET + at, value & 0xFFFFFFFF)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _map(device: Path) -> Region | None:
    """Map the device's BAR 2 when it holds a looming vchan region."""
    if not (device / "resource2").exists():
        return None
    with contextlib.suppress(OSError):
        # Turns memory decoding on when nothing did (no driver binds ivshmem).
        (device / "enable").write_text("1")
    fd = os.open(device / "resource2", os.O_RDWR | os.O_SYNC | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size < REGION_SIZE:
            os.close(fd)
            return None
        segment = Segment(fd, REGION_SIZE, None)
    except BaseException:
        os.close(fd)
        raise
    page = segment.mapping[HEADER_OFFSET : HEADER_OFFSET + layout.PAGE_SIZE]
    if page[0:8] != MAGIC or _U32.unpack_from(page, 8)[0] != VERSION:
        segment.close()
        return None
    return Region(segment, _field(page, NAME_AT), _field(page, PORT_AT), device.name)


def find_region(name: str, port: str, devices: Path | None = None) -> Region:
    """The ivshmem region the host made for ``name``/``port``, mapped."""
    devices = devices or PCI_DEVICES
    seen: list[str] = []
    for device in sorted(devices.iterdir()) if devices.is_dir() else []:
        if _read(device / "vendor") != VENDOR or _read(device / "device") != DEVICE:
            continue
        region = _map(device)
        if region is None:
            continue
        if (region.name, region.port) == (name, port):
            return region
        seen.append(f"{region.name}/{region.port}")
        region.segment.close()
    raise ConnectionRefused(
        f"this VM has no ivshmem region for vchan {name}/{port} (it has: "
        f"{', '.join(seen) or 'none'}); 'looming run' attaches one per vchan of the image"
    )


class Doorbell:
    """The polling thread standing in for the event channel (see the module)."""

    def __init__(self, region: Region, ring: RingEnd, wake_fd: int, dead: socket.socket) -> None:
        self._region = region
        self._is_server = ring.is_server
        self._wake_fd = wake_fd
        self._dead = dead
        self._stop = threading.Event()
        self._words = region.segment.view()[0:16].cast("I")
        # The peer's producer index (what it wrote) and consumer index (what it read).
        self._watched = (1, 2) if ring.is_server else (3, 0)
        self._live = layout.CLI_LIVE if ring.is_server else layout.SRV_LIVE
        self._thread = threading.Thread(
            target=self._run, name="looming-vchan-doorbell", daemon=True
        )
        self._thread.start()

    def _look(self) -> tuple[int, int, int]:
        first, second = self._watched
        return self._words[first], self._words[second], self._region.segment.mapping[self._live]

    def _run(self) -> None:
        own, peer = (SERVER_BEAT, CLIENT_BEAT) if self._is_server else (CLIENT_BEAT, SERVER_BEAT)
        last, pause = self._look(), FAST_POLL
        beat_at = heard_at = changed_at = _time.monotonic()
        peer_beat = self._region.word(peer)
        while not self._stop.wait(pause):
            now, clock = self._look(), _time.monotonic()
            if now != last:
                last, pause, changed_at = now, FAST_POLL, clock
                with contextlib.suppress(OSError):
                    os.eventfd_write(self._wake_fd, 1)
            elif clock - changed_at > HOT:
                idle = clock - changed_at > DROWSY
                pause = min(pause * 2, IDLE_POLL if idle else SLOW_POLL)
            if clock - beat_at >= BEAT_EVERY:
                beat_at = clock
                self._region.set_word(own, self._region.word(own) + 1)
                if self._region.word(peer) != peer_beat:
                    peer_beat, heard_at = self._region.word(peer), clock
                elif clock - heard_at > DEAD_AFTER:
                    log.warning("vchan: the peer VM stopped its heartbeat; taking it for dead")
                    self._dead.close()  # the endpoint's control socket reads end of file
                    return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1)
        self._words.release()
        with contextlib.suppress(OSError):
            self._dead.close()


def _mapping(region: Region) -> tuple[Segment, memoryview]:
    """A mapping of the region's memory for one connection, and its view."""
    fd = os.dup(region.segment.fd)
    try:
        segment = Segment(fd, REGION_SIZE, None)
    except BaseException:
        os.close(fd)
        raise
    return segment, segment.view()


def _endpoint(
    region: Region, segment: Segment, ring: RingEnd, view: memoryview, time: Time
) -> Endpoint:
    """The process target's endpoint over the region, woken by a :class:`Doorbell`.

    ``segment`` is a mapping of the region of the connection's own, which the
    endpoint closes with itself; ``region`` stays mapped for the next one."""
    wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    nowhere = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # kicks the peer polls for
    control, dead = socket.socketpair()
    channel = Endpoint(
        segment=segment,
        view=view,
        ring=ring,
        notifier=Notifier(EVENTFD, wake, nowhere),
        control=control,
        time=time,
    )
    doorbell = Doorbell(region, ring, wake, dead)
    channel.add_close_hook(doorbell.stop)
    return channel


async def _until(check: Callable[[], bool], time: Time, timeout: float, what: str) -> None:
    give_up = time.now_ns() + int(timeout * 1e9)
    pause = 0.001
    while not check():
        if time.now_ns() >= give_up:
            raise ConnectionTimeout(f"vchan: {what} within {timeout:g} s")
        await time.sleep(pause)
        pause = min(pause * 2, 0.05)


class PciServingPort(aio.ServingPort):
    """A served port over an ivshmem region: one client after another."""

    def __init__(
        self, name: str, port: str, *, time: Time, read_size: int, write_size: int
    ) -> None:
        super().__init__(name, port, time=time)
        self._sizes = (read_size, write_size)
        self._region: Region | None = None

    async def publish(self) -> None:
        if self._region is None:
            self._region = find_region(self.name, self.port)

    async def accept(self) -> aio.VchanFlow:
        await self.publish()
        region = self._region
        assert region is not None
        # The server reads the left ring (the client writes it).
        geometry = layout.plan(*layout.choose_orders(*self._sizes))
        if geometry.segment_size > SEGMENT_LIMIT:
            raise ConfigError(f"vchan rings of {self._sizes} bytes do not fit the ivshmem region")
        region.set_word(STATE, NOT_READY)
        segment, view = _mapping(region)
        ring: RingEnd | None = None
        try:
            layout.initialize(view, geometry)
            region.set_word(GENERATION, region.word(GENERATION) + 1)
            region.set_word(STATE, READY)
            ring = RingEnd(view, geometry, is_server=True)
            await _until(
                lambda: view[layout.CLI_LIVE] == layout.LIVE_CONNECTED,
                self._time,
                365 * 86400.0,
                "no client",
            )
        except BaseException:  # cancelled while waiting, when the unikernel stops
            if ring is not None:
                ring.release()
            view.release()
            segment.close()
            raise
        self.accepted += 1
        return aio.VchanFlow(_endpoint(region, segment, ring, view, self._time))

    async def close(self) -> None:
        region, self._region = self._region, None
        if region is not None:
            region.set_word(STATE, NOT_READY)


def _offered(region: Region) -> bool:
    """The server initialised the ring and no client has taken it yet."""
    mapping = region.segment.mapping
    return region.word(STATE) == READY and mapping[layout.CLI_LIVE] == layout.LIVE_WAITING


async def _attach(region: Region, time: Time, wait: float) -> aio.VchanFlow:
    """The client's half: wait for the server's offer, check it, say connected."""
    await _until(
        lambda: _offered(region),
        time,
        wait,
        f"the server VM did not serve {region.name}/{region.port}",
    )
    segment, view = _mapping(region)
    ring: RingEnd | None = None
    try:
        part = view[0:SEGMENT_LIMIT]  # the rings never reach the header page
        try:
            geometry = layout.parse(part)
        finally:
            part.release()
        ring = RingEnd(view, geometry, is_server=False)
        if ring.peer_state() != layout.LIVE_CONNECTED:
            raise VchanCorrupt("the server's liveness byte does not say connected")
    except BaseException:
        if ring is not None:
            ring.release()
        view.release()
        segment.close()
        raise
    ring.set_state(layout.LIVE_CONNECTED)
    view[layout.SRV_NOTIFY] = view[layout.SRV_NOTIFY] | layout.NOTIFY_WRITE
    return aio.VchanFlow(_endpoint(region, segment, ring, view, time))


async def _client(peer: str, port: str, time: Time, wait_for_server: float) -> VchanDevice:
    region = find_region(peer, port)

    async def again(wait: float = 5.0) -> aio.VchanFlow:
        return await _attach(region, time, wait)

    log.info("vchan: connecting to %s/%s over ivshmem", peer, port)
    flow = await again(wait_for_server)
    return VchanDevice(flow, f"client of {peer}/{port} (ivshmem)", reconnect=again)


async def open_vchan(
    port: str,
    *,
    time: Time,
    peer: str | None = None,
    name: str | None = None,
    read_size: int = DEFAULT_RING_SIZE,
    write_size: int = DEFAULT_RING_SIZE,
    wait_for_server: float = 120.0,
) -> VchanDevice:
    """Serve ``port`` (no ``peer``) or connect to ``peer``'s ``port`` between VMs."""
    try:
        check_name("port", port)
        if peer is not None:
            check_name("peer", peer)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if peer is not None:
        return await _client(peer, port, time, wait_for_server)
    own = name or os.environ.get(NAME_ENV)
    if not own:
        raise ConfigError(
            f"vchan({port!r}) serves a port but the VM has no vchan name: "
            f"'looming run' passes {NAME_ENV} on the kernel command line"
        )
    serving = PciServingPort(own, port, time=time, read_size=read_size, write_size=write_size)
    await serving.publish()
    log.info("vchan: serving %s/%s over ivshmem, waiting for the peer", own, port)
    flow = await serving.accept()
    log.info("vchan: %s/%s connected", own, port)
    return VchanDevice(flow, f"server of {own}/{port} (ivshmem)", serving=serving)


class PciVchan:
    """What the generated ``main.py`` of the ``vm`` target names: ``PciVchan.connect``."""

    connect = staticmethod(open_vchan)
