"""CPU per TCP segment of the direct stack, in one process, no root.

Two :class:`~looming.net.stack.DirectStack` instances are joined by a
lossless in-memory wire that hands each side the frames written since its
last wake-up in one batch (as a netif read loop does); one echoes what the
other sends. The whole path runs: Ethernet, ARP, IPv4, the TCP core and its
shell, the stream API. Reported: process CPU seconds for a ``--size`` echo,
the frames both sides received, and microseconds of CPU per frame. A
profile of one run is printed with ``--profile``.

    .venv/bin/python -P bench/tcp_cpu.py [--size MB] [--rounds N] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import time
from collections import deque
from ipaddress import IPv4Interface
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from looming.devices.net import Capabilities, FrameHandler, MacAddress, NetworkStats  # noqa: E402
from looming.devices.stack import TcpFlow  # noqa: E402
from looming.net.stack import DirectStack  # noqa: E402
from looming.unix.clock import UnixClock  # noqa: E402
from looming.unix.random import UnixRandom  # noqa: E402
from looming.unix.time import UnixTime  # noqa: E402

_CHUNK = 65536


class WireEnd:
    """One end of the in-memory wire: :class:`looming.devices.net.Network`."""

    def __init__(self, mac: bytes) -> None:
        self._mac = MacAddress(mac)
        self.peer: WireEnd | None = None
        self._inbox: deque[bytes] = deque()
        self._handler: FrameHandler | None = None
        self._scheduled = False
        self._closed = asyncio.Event()
        self._stats = NetworkStats()

    @property
    def mac(self) -> MacAddress:
        return self._mac

    @property
    def mtu(self) -> int:
        return 1500

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(mtu=1500)

    def stats(self) -> NetworkStats:
        return self._stats

    async def write(self, frame: bytes) -> None:
        peer = self.peer
        assert peer is not None
        self._stats.tx_packets += 1
        peer._inbox.append(bytes(frame))
        if not peer._scheduled:
            peer._scheduled = True
            asyncio.get_running_loop().call_soon(peer._wake)

    def _wake(self) -> None:
        self._scheduled = False
        inbox = self._inbox
        handler = self._handler
        for _ in range(len(inbox)):
            frame = inbox.popleft()
            self._stats.rx_packets += 1
            if handler is not None:
                handler(frame)

    async def listen(self, handler: FrameHandler) -> None:
        self._handler = handler
        await self._closed.wait()

    async def disconnect(self) -> None:
        self._closed.set()


async def _echo(flow: TcpFlow) -> None:
    while data := await flow.read():
        await flow.write(data)


async def _client(flow: TcpFlow, size: int) -> None:
    block = bytes(range(256)) * (_CHUNK // 256)

    async def send() -> None:
        left = size
        while left > 0:
            await flow.write(block[: min(left, _CHUNK)])
            left -= _CHUNK
        await flow.shutdown()

    sender = asyncio.create_task(send())
    received = 0
    while data := await flow.read():
        received += len(data)
    await sender
    if received != size:
        raise RuntimeError(f"echoed {received} bytes of {size}")


async def one_run(size: int) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, frames received by both sides)."""
    a_end, b_end = WireEnd(b"\x02\x00\x00\x00\x00\x01"), WireEnd(b"\x02\x00\x00\x00\x00\x02")
    a_end.peer, b_end.peer = b_end, a_end
    time_device, clock = UnixTime(), UnixClock()
    a = await DirectStack.connect(
        a_end,
        time=time_device,
        clock=clock,
        random=UnixRandom(1),
        address=IPv4Interface("10.9.0.1/24"),
    )
    b = await DirectStack.connect(
        b_end,
        time=time_device,
        clock=clock,
        random=UnixRandom(2),
        address=IPv4Interface("10.9.0.2/24"),
    )
    try:
        await b.tcp.listen(7, _echo)
        flow = await a.tcp.connect("10.9.0.2", 7)
        cpu, wall = time.process_time(), time.perf_counter()
        await _client(flow, size)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await flow.close()
    finally:
        await a.disconnect()
        await b.disconnect()
    frames = a_end.stats().rx_packets + b_end.stats().rx_packets
    return cpu, wall, frames


def relay(losses: list[float], rounds: int, profile: bool) -> None:
    """looming and Linux 10 MB echoes through the loss relay (root), with
    looming's process CPU time."""
    sys.path.insert(0, str(REPO))
    from tests.net.kernel import unique_suffix
    from tests.tcp.lossy import linux_echo, looming_echo, open_looming, start_echo_server
    from tests.tcp.relay import Impairments, relayed_path

    async def looming(path: object, offload: bool) -> tuple[float, float]:
        stack = await open_looming(path, offload=offload)  # type: ignore[arg-type]
        try:
            cpu = time.process_time()
            result = await looming_echo(stack, path, 10_000_000)  # type: ignore[arg-type]
            return result.seconds, time.process_time() - cpu
        finally:
            await stack.disconnect()

    profiler = cProfile.Profile() if profile else None
    with relayed_path(unique_suffix()) as path:
        server = start_echo_server(path)
        try:
            for loss in losses:
                for number in range(rounds):
                    path.impair(Impairments(loss=loss, seed=number + 1))
                    linux = linux_echo(path, 10_000_000).seconds
                    for offload in (False, True):
                        path.impair(Impairments(loss=loss, seed=number + 1))
                        if profiler is not None:
                            profiler.enable()
                        seconds, cpu = asyncio.run(looming(path, offload))
                        if profiler is not None:
                            profiler.disable()
                        print(
                            f"loss {loss:.0%} round {number + 1}: linux {linux:.3f} s  "
                            f"looming{' offload' if offload else ''} {seconds:.3f} s "
                            f"(cpu {cpu:.3f} s)  ratio {seconds / linux:.1f}x",
                            flush=True,
                        )
        finally:
            server.kill()
            server.wait()
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(45)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=10.0, help="MB echoed (default 10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    parser.add_argument(
        "--relay",
        type=float,
        nargs="*",
        metavar="LOSS",
        help="instead: echoes through the loss relay at these loss rates (root)",
    )
    args = parser.parse_args()
    if args.relay is not None:
        relay(args.relay or [0.0, 0.03], args.rounds, args.profile)
        return 0
    size = int(args.size * 1_000_000)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(one_run(size))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)
        return 0
    print(f"python {sys.version.split()[0]}; {args.size:g} MB echoed each way")
    per_frame = []
    for number in range(args.rounds):
        cpu, wall, frames = asyncio.run(one_run(size))
        per_frame.append(cpu / frames * 1e6)
        print(
            f"round {number + 1}: cpu {cpu:.3f} s  wall {wall:.3f} s  frames {frames}  "
            f"{per_frame[-1]:.1f} us/frame"
        )
    load = os.getloadavg()[0]
    print(
        f"best {min(per_frame):.1f} us/frame, median {statistics.median(per_frame):.1f} "
        f"(load average {load:.2f}: CPU figures move with other work on the machine)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
