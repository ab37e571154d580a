"""looming's TCP over IPv6 beside its TCP over IPv4, against the Linux
kernel over one TAP in a network namespace, in alternating rounds.

Run as root (it creates a namespace and a TAP, named with an ``lm`` prefix
and removed at the end):

    .venv/bin/python -P bench/tcp_ipv6.py [--rounds N] [--megabytes M]

Each round measures, over IPv4, then over IPv6 to the stack's link-local
address, then to a static global one (its prefix on-link: the next-hop
lookup of a routable address), on the same stack and TAP (no offloads): bulk kernel -> looming and looming -> kernel in MB/s,
and the 64-byte echo round trip p50 in microseconds (Nagle off). The
kernel side is the same small Python socket program for both families.
Printed: the best of the rounds per family and the ratio IPv6 / IPv4
(issue 20's goal: within 10%).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from ipaddress import IPv6Interface
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.net.kernel import KernelPeer, kernel_peer_namespace  # noqa: E402

from looming.devices.stack import TcpFlow  # noqa: E402
from looming.net.stack import DirectStack  # noqa: E402

GLOBAL_PREFIX = "fd77:0:0:9::"

KERNEL = r"""
import socket, sys, time
family = socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET
mode, address, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
target = socket.getaddrinfo(address, 7100, family)[0][4]
c = socket.socket(family, socket.SOCK_STREAM)
c.connect(target)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
if mode == "send":
    c.sendall(bytes(size))
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
elif mode == "receive":
    c.sendall(b"go")
    got = 0
    while data := c.recv(1 << 16):
        got += len(data)
    assert got == size, got
else:
    times = []
    for _ in range(size):
        start = time.perf_counter_ns()
        c.sendall(b"x" * 64)
        got = 0
        while got < 64:
            got += len(c.recv(64))
        times.append(time.perf_counter_ns() - start)
    times.sort()
    print(times[len(times) // 2] / 1000, flush=True)
c.close()
"""


async def one_round(
    peer: KernelPeer, stack: DirectStack, address: str, size: int, echoes: int
) -> dict[str, float]:
    """Bulk both ways and echo p50 with the kernel connecting to ``address``."""
    results: dict[str, float] = {}
    done: asyncio.Queue[float] = asyncio.Queue()

    async def sink(flow: TcpFlow) -> None:
        started, got = time.perf_counter(), 0
        while data := await flow.read():
            got += len(data)
        await done.put(got / (time.perf_counter() - started) / 1e6)
        await flow.write(b"!")

    async def source(flow: TcpFlow) -> None:
        await flow.read()
        started = time.perf_counter()
        chunk = bytes(1 << 16)
        for _ in range(size // len(chunk)):
            await flow.write(chunk)
        await flow.shutdown()
        while await flow.read():
            pass
        await done.put(size / (time.perf_counter() - started) / 1e6)

    async def echo(flow: TcpFlow) -> None:
        flow.set_nodelay(True)  # type: ignore[attr-defined]
        while data := await flow.read():
            await flow.write(data)

    for name, handler, mode, count in (
        ("bulk_in_MBps", sink, "send", size),
        ("bulk_out_MBps", source, "receive", size),
        ("echo_p50_us", echo, "echo", echoes),
    ):
        listener = await stack.tcp.listen(7100, handler)
        kernel = await peer.python(KERNEL, mode, address, str(count))
        out, err = await asyncio.wait_for(kernel.communicate(), 120)
        if kernel.returncode != 0:
            raise RuntimeError(f"kernel side of {name} failed: {err.decode()}")
        await listener.close()
        results[name] = float(out) if mode == "echo" else await done.get()
    return results


async def run(peer: KernelPeer, rounds: int, size: int, echoes: int) -> dict[str, list[float]]:
    for scope in ("all", "default"):
        peer.sh("sysctl", "-qw", f"net.ipv6.conf.{scope}.accept_dad=0")
    stack = await peer.connect_stack(
        ipv6=True, slaac=False, ipv6_address=IPv6Interface(f"{GLOBAL_PREFIX}2/64")
    )
    assert stack.ipv6 is not None
    peer.sh("ip", "-6", "addr", "add", f"{GLOBAL_PREFIX}1/64", "dev", peer.tap_name, "nodad")
    await stack.ipv6.wait_for_address(5)  # the static address, after its DAD probe
    families = {
        "IPv4": str(peer.stack_address.ip),
        "IPv6": f"{stack.ipv6.link_local}%{peer.tap_name}",
        "IPv6g": f"{GLOBAL_PREFIX}2",
    }
    figures: dict[str, list[float]] = {}
    try:
        await asyncio.sleep(0.2)
        for round_number in range(rounds):
            for family, address in families.items():  # ABAB
                print(f"[tcp_ipv6] round {round_number + 1}: {family}", file=sys.stderr)
                for name, value in (await one_round(peer, stack, address, size, echoes)).items():
                    figures.setdefault(f"{family} {name}", []).append(value)
    finally:
        await stack.disconnect()
    return figures


def report(figures: dict[str, list[float]]) -> str:
    lines = [f"{'metric':>16}  {'IPv4 best':>10}  {'IPv6 best':>10}  IPv6/IPv4  (medians)"]
    for six_name, label in (("IPv6", "link-local"), ("IPv6g", "global, on-link prefix")):
        lines.append(f"IPv6 to a {label} address:")
        for metric in ("bulk_in_MBps", "bulk_out_MBps", "echo_p50_us"):
            pick = min if metric.endswith("_us") else max
            four, six = figures[f"IPv4 {metric}"], figures[f"{six_name} {metric}"]
            ratio = pick(six) / pick(four)
            medians = f"{statistics.median(four):.1f} / {statistics.median(six):.1f}"
            lines.append(
                f"{metric:>16}  {pick(four):10.1f}  {pick(six):10.1f}  {ratio:9.3f}  ({medians})"
            )
    lines.append(
        f"Python {platform.python_version()}, Linux {platform.release()}; "
        "ratio for latency: IPv6 / IPv4 too (above 1 is slower)"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="ABAB rounds (default 3)")
    parser.add_argument("--megabytes", type=int, default=8, help="bulk size (default 8)")
    parser.add_argument("--echoes", type=int, default=500, help="echo round trips (default 500)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/tcp_ipv6.py needs root (a namespace and a TAP device)", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.megabytes < 1 or args.echoes < 1:
        print("--rounds, --megabytes and --echoes must be at least 1", file=sys.stderr)
        return 2
    with kernel_peer_namespace() as peer:
        figures = asyncio.run(run(peer, args.rounds, args.megabytes << 20, args.echoes))
    print(report(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
