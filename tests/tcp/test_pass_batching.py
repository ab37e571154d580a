"""One event-loop pass of the direct stack: the frames of one wake-up in, the
pass ended in the same turn of the loop (ACKs flushed, segments sent,
timers re-armed) when the interface says the wake-up's frames are all in
(``after_batch``), and segments written at once, without a task, while the
interface takes them.

A scripted peer drives an echo server on a :class:`DirectStack` over a
network the test holds, with time stopped, so the stack's output is a pure
function of the frames it is given: the same frames through an interface
that ends passes itself and through one that leaves it to the next turn
of the loop must give the same frames out, in the same order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from looming.devices.net import Capabilities, FrameHandler, MacAddress, NetworkStats
from looming.devices.stack import TcpFlow
from looming.net.stack import DirectStack
from looming.net.wire import arp as arp_wire
from looming.net.wire import ethernet as ethernet_wire
from looming.net.wire import ipv4 as ipv4_wire
from looming.net.wire import tcp as tcp_wire
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

OUR_MAC = MacAddress(b"\x02\x00\x00\x00\x00\x01")
PEER_MAC = MacAddress(b"\x02\x00\x00\x00\x00\x02")
OURS = IPv4Address("10.7.0.1")
PEER = IPv4Address("10.7.0.2")
PORT, PEER_PORT, PEER_ISN = 7, 40000, 1000
SEGMENT = 1000


class StoppedTime:
    """Time that never moves: the stack's output depends only on its input."""

    def now_ns(self) -> int:
        return 5_000_000_000

    async def sleep_ns(self, duration_ns: int) -> None:
        await asyncio.sleep(duration_ns / 1e9)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class HeldNetwork:
    """A network the test hands frames to (in groups, as one wake-up's)
    and whose written frames it reads; ``gate`` makes one write wait."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.handler: FrameHandler | None = None
        self.gate: asyncio.Future[None] | None = None
        self._closed = asyncio.Event()

    @property
    def mac(self) -> MacAddress:
        return OUR_MAC

    @property
    def mtu(self) -> int:
        return 1500

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(mtu=1500)

    def stats(self) -> NetworkStats:
        return NetworkStats()

    async def write(self, frame: bytes) -> None:
        if self.gate is not None:
            await self.gate
        self.written.append(bytes(frame))

    async def listen(self, handler: FrameHandler) -> None:
        self.handler = handler
        await self._closed.wait()

    async def disconnect(self) -> None:
        self._closed.set()

    def wake(self, frames: list[bytes]) -> None:
        """One wake-up's frames, handed up."""
        assert self.handler is not None
        for frame in frames:
            self.handler(frame)


class BatchingHeldNetwork(HeldNetwork):
    """:class:`HeldNetwork` that says when a wake-up's frames are all in."""

    def __init__(self) -> None:
        super().__init__()
        self._batch_end: Callable[[], None] | None = None

    def after_batch(self, callback: Callable[[], None] | None) -> None:
        self._batch_end = callback

    def wake(self, frames: list[bytes]) -> None:
        super().wake(frames)
        if self._batch_end is not None:
            self._batch_end()


def frame_of(segment: tcp_wire.TcpHeader, payload: bytes = b"") -> bytes:
    packet = ipv4_wire.emit(
        ipv4_wire.Ipv4Header(source=PEER, destination=OURS, protocol=6),
        tcp_wire.emit(segment, payload, src=PEER, dst=OURS),
    )
    return ethernet_wire.emit(ethernet_wire.EthernetHeader(OUR_MAC, PEER_MAC, 0x0800), packet)


def peer_segment(seq: int, ack: int, flags: int, **options: object) -> tcp_wire.TcpHeader:
    return tcp_wire.TcpHeader(
        src_port=PEER_PORT,
        dst_port=PORT,
        seq=seq & 0xFFFFFFFF,
        ack=ack & 0xFFFFFFFF,
        flags=flags,
        window=65535,
        **options,  # type: ignore[arg-type]
    )


def arp_request() -> bytes:
    packet = arp_wire.ArpPacket(
        operation=arp_wire.ArpOperation.REQUEST,
        sender_mac=PEER_MAC,
        sender_ip=PEER,
        target_mac=MacAddress(bytes(6)),
        target_ip=OURS,
    )
    header = ethernet_wire.EthernetHeader(MacAddress(b"\xff" * 6), PEER_MAC, 0x0806)
    return ethernet_wire.emit(header, arp_wire.emit(packet))


def segments_out(frames: list[bytes]) -> list[tcp_wire.TcpHeader]:
    """The TCP headers of the IPv4 frames among ``frames``."""
    return [header for header, _ in tcp_out(frames)]


def echoed(frames: list[bytes]) -> bytes:
    """The data the stack sent in ``frames``, in the order sent."""
    return b"".join(payload for _, payload in tcp_out(frames))


def tcp_out(frames: list[bytes]) -> list[tuple[tcp_wire.TcpHeader, bytes]]:
    segments = []
    for frame in frames:
        if frame[12:14] == b"\x08\x00" and frame[23] == 6:
            header, payload = tcp_wire.parse(frame[14 + 20 :])
            segments.append((header, bytes(payload)))
    return segments


async def echo(flow: TcpFlow) -> None:
    while chunk := await flow.read():
        await flow.write(chunk)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def open_echo(network: HeldNetwork) -> tuple[DirectStack, int]:
    """An echo server on a stack over ``network``, a connection to it
    open; the stack's initial sequence number."""
    stack = await DirectStack.connect(
        network,
        time=StoppedTime(),
        clock=UnixClock(),
        random=UnixRandom(3),
        address=IPv4Interface(f"{OURS}/24"),
    )
    await stack.tcp.listen(PORT, echo)
    network.wake([arp_request()])
    syn = peer_segment(PEER_ISN, 0, tcp_wire.SYN, mss=SEGMENT, sack_permitted=True)
    network.wake([frame_of(syn)])
    await settle()
    syn_ack = segments_out(network.written)[-1]
    assert syn_ack.flags & tcp_wire.SYN and syn_ack.flags & tcp_wire.ACK
    network.wake([frame_of(peer_segment(PEER_ISN + 1, syn_ack.seq + 1, tcp_wire.ACK))])
    await settle()
    return stack, syn_ack.seq


def data_frames(isn: int, order: list[int], acks: list[bool]) -> list[bytes]:
    """The peer's data segments, numbered in ``order`` (gaps and
    reordering make SACK blocks and duplicate ACKs), each followed by a
    pure duplicate ACK where ``acks`` says."""
    frames = []
    for number, dup_ack in zip(order, acks, strict=True):
        seq = PEER_ISN + 1 + number * SEGMENT
        segment = peer_segment(seq, isn + 1, tcp_wire.ACK | tcp_wire.PSH)
        frames.append(frame_of(segment, bytes([number]) * SEGMENT))
        if dup_ack:
            frames.append(frame_of(peer_segment(PEER_ISN + 1, isn + 1, tcp_wire.ACK)))
    return frames


def groups_of(frames: list[bytes], cuts: list[int]) -> list[list[bytes]]:
    edges = sorted({0, len(frames), *(cut % (len(frames) + 1) for cut in cuts)})
    return [frames[start:end] for start, end in pairwise(edges)]


async def run_script(
    network: HeldNetwork, order: list[int], acks: list[bool], cuts: list[int]
) -> list[bytes]:
    stack, isn = await open_echo(network)
    try:
        for group in groups_of(data_frames(isn, order, acks), cuts):
            network.wake(group)
            await settle()
        return network.written
    finally:
        await stack.disconnect()


@settings(max_examples=15, deadline=None)
@given(
    data=st.data(),
    count=st.integers(1, 24),
    cuts=st.lists(st.integers(0, 60), max_size=8),
)
def test_a_pass_ended_by_the_interface_sends_what_the_next_turn_would(
    data: st.DataObject, count: int, cuts: list[int]
) -> None:
    """The same frames in the same wake-ups, in order and out of order,
    with and without duplicate ACKs between them: the same frames out in
    the same order whether the interface ends each pass (after_batch) or
    the stack ends it on the next turn of the loop."""
    order = data.draw(st.permutations(range(count)))
    order = order[: data.draw(st.integers(1, count))]  # the tail lost
    acks = data.draw(st.lists(st.booleans(), min_size=len(order), max_size=len(order)))
    batched = asyncio.run(run_script(BatchingHeldNetwork(), order, acks, cuts))
    turned = asyncio.run(run_script(HeldNetwork(), order, acks, cuts))
    assert batched == turned
    # What arrived in order was echoed, and only that (the script has teeth).
    in_order = 0
    while in_order in order:
        in_order += 1
    # (A prefix: the peer acknowledges nothing, so the initial window and
    # Nagle's algorithm bound what is sent.)
    expected = b"".join(bytes([n]) * SEGMENT for n in range(in_order))
    sent = echoed(batched)
    assert expected.startswith(sent)
    assert bool(sent) == bool(expected)


def test_a_pass_sends_before_the_interface_wakes_again() -> None:
    """A wake-up whose frames earn an ACK: the ACK is written before the
    interface's call returns, with no turn of the loop, when the
    interface ends passes; on the next turn when it does not."""

    async def main(network: HeldNetwork) -> tuple[int, int]:
        stack, isn = await open_echo(network)
        try:
            before = len(network.written)
            # Two segments after a hole: a duplicate ACK with SACK is due at once.
            network.wake(data_frames(isn, [1, 2], [False, False]))
            at_once = len(network.written) - before
            await settle()
            return at_once, len(network.written) - before
        finally:
            await stack.disconnect()

    at_once, settled = asyncio.run(main(BatchingHeldNetwork()))
    assert at_once >= 1
    assert at_once == settled  # nothing was left for a later turn
    ack = segments_out(asyncio.run(_written_after_hole()))[-1]
    assert ack.sack_blocks  # the ACK that left is the one the hole earned
    at_once, settled = asyncio.run(main(HeldNetwork()))
    assert at_once == 0
    assert settled >= 1


async def _written_after_hole() -> list[bytes]:
    network = BatchingHeldNetwork()
    stack, isn = await open_echo(network)
    try:
        network.wake(data_frames(isn, [1, 2], [False, False]))
        return list(network.written)
    finally:
        await stack.disconnect()


def test_a_write_that_waits_holds_those_behind_it_in_order() -> None:
    """The interface makes a write wait (a full queue): it and every
    segment made after it go out once it takes frames again, in order,
    none lost, none before it."""

    async def main() -> tuple[list[bytes], list[bytes], list[bytes]]:
        network = BatchingHeldNetwork()
        stack, isn = await open_echo(network)
        try:
            network.gate = asyncio.get_running_loop().create_future()
            network.wake(data_frames(isn, [0, 1, 2, 3], [False] * 4))
            await settle()
            held = list(network.written)
            network.wake(data_frames(isn, [4, 5, 6, 7], [False] * 4))
            await settle()
            still = list(network.written)
            network.gate.set_result(None)
            network.gate = None
            await settle()
            return held, still, list(network.written)
        finally:
            await stack.disconnect()

    held, still, after = asyncio.run(main())
    assert held == still  # nothing passed the waiting write
    sent = after[len(held) :]
    expected = b"".join(bytes([n]) * SEGMENT for n in range(8))
    assert expected.startswith(echoed(sent))
    assert len(echoed(sent)) >= 3 * SEGMENT  # the initial window's worth
    acks = [header.ack for header in segments_out(sent)]
    assert acks == sorted(acks)


def test_a_stack_whose_write_never_ends_still_shuts_down() -> None:
    """A write the interface never lets finish (a queue that stays full):
    the task carrying it and the segments behind it is cancelled at
    shutdown, which ends within a moment, and nothing behind it leaked
    out meanwhile."""

    async def main() -> tuple[int, int, float, bool]:
        network = BatchingHeldNetwork()
        stack, isn = await open_echo(network)
        before = len(network.written)
        network.gate = asyncio.get_running_loop().create_future()
        network.wake(data_frames(isn, [0, 1, 2, 3], [False] * 4))
        await settle()
        waiting = stack.tcp._tx_task
        held = len(network.written)
        start = asyncio.get_running_loop().time()
        await stack.disconnect()
        return before, held, asyncio.get_running_loop().time() - start, waiting is not None

    before, held, seconds, waited = asyncio.run(main())
    assert waited  # the write did wait, in a task
    assert held == before
    assert seconds < 1.0
