"""Benchmark looming's TCP beside the Linux kernel's, in one run.

Run as root (it creates network namespaces, TAP devices and a veth pair, all
named with an ``lm`` prefix and removed at the end):

    .venv/bin/python bench/tcp.py [--quick] [--json PATH]

Measured for the kernel talking to a kernel over a veth pair, for looming's
TCP on the direct stack talking to the kernel over a TAP (plain, and with
virtio-net offloads), for PyTCP 2.7.6 (another pure-Python TCP/IP stack,
from PyPI, in the test extra) talking to the kernel over a TAP, plus two
looming TCP layers over an in-memory wire:

* flood-ping round trip (``ping -f`` from the kernel);
* bulk MB/s, kernel -> peer and peer -> kernel;
* 64-byte echo round trip p50 and p99 (Nagle off);
* connections per second (connect, the server closes, EOF, close);
* the same four (bulk both ways, echo p50, connections/s) for looming over
  IPv6 beside IPv4 on one stack and TAP (no offloads), the families
  alternating round by round, and the ratio IPv6 / IPv4 (goal: within 10%);
  ``--only-ipv6`` runs these rows alone;
* a 10 MB echo through the loss relay (tests/tcp/relay.py: two TAPs in two
  namespaces, frames dropped, reordered and duplicated by a seeded process)
  at 0, 1, 3 and 5% loss each way and with reordering, Linux to Linux and
  looming to Linux across the same relay, in alternating rounds (5 a row,
  7 at 3% and 5% loss, 2 with ``--quick``), each side's min/median/max,
  the retransmission timeouts of every round on both sides, looming's
  recovery counters, its CPU seconds, and the Linux peer's
  retransmissions, timeouts and loss probes as the sender to looming.
  Linux runs twice: with the namespaces' default congestion control (a new
  namespace inherits the host's; with BBR, random loss barely slows it) and
  with CUBIC on both sockets, as looming and its Linux peer run, which is
  the like-for-like reference the ratio goal is measured against (its
  recoveries, retransmissions, timeouts and loss probes are shown too).

``--only-pass`` (no root) measures instead looming's CPU per event-loop
pass: a peer process writes data segments to the direct stack over a unix
datagram socketpair in wake-ups of 2, 8 and 32 frames, each after the ACK
of the one before; printed per wake-up size (alternating, median over the
rounds) are the stack's CPU per pass and per frame, and the fixed cost of
a pass, the intercept of CPU per pass against frames per pass.

The kernel-side programs are small Python socket loops, the same ones in
every column, so the ratios compare the stacks rather than the programs.
PyTCP runs in its own process (it keeps global state and threads), driven
over a pipe by the same loops written against its socket API; its bulk
transfers are smaller, since it moves about a megabyte a second.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import platform
import queue
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.net.kernel import (  # noqa: E402
    PEER_ADDRESS,
    STACK_ADDRESS,
    KernelPeer,
    kernel_peer_namespace,
    sh,
    unique_suffix,
)
from tests.tcp.ipv4_pair import Faults, wire_pair  # noqa: E402
from tests.tcp.lossy import (  # noqa: E402
    CUBIC_ECHO_PORT,
    EchoResult,
    linux_echo,
    looming_echo,
    open_looming,
    start_echo_server,
)
from tests.tcp.relay import Impairments, relayed_path  # noqa: E402

from looming.devices.net import MacAddress  # noqa: E402
from looming.devices.stack import TcpFlow  # noqa: E402
from looming.net.netif import _fd  # noqa: E402
from looming.net.netif.tap import TapNetwork  # noqa: E402
from looming.net.stack import DirectStack  # noqa: E402
from looming.net.tcp import TcpConfig, TcpLayer  # noqa: E402
from looming.unix.clock import UnixClock  # noqa: E402
from looming.unix.random import UnixRandom  # noqa: E402
from looming.unix.time import UnixTime  # noqa: E402

KERNEL_PROGRAM = r"""
import json, socket, sys, time
mode, args = sys.argv[1], sys.argv[2:]

def listener(port):
    s = socket.socket(socket.AF_INET6)  # dual-stack: IPv4 arrives as ::ffff:a.b.c.d
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", int(port)))
    s.listen(512)
    print("ready", flush=True)
    return s

if mode == "sink":
    s = listener(args[0])
    c, _ = s.accept()
    start = time.perf_counter()
    total = 0
    buf = bytearray(1 << 20)
    while n := c.recv_into(buf):
        total += n
    print(json.dumps({"bytes": total, "seconds": time.perf_counter() - start}))
elif mode == "source":
    c = socket.create_connection((args[0], int(args[1])))
    block = b"\xa5" * (1 << 20)
    left = int(args[2])
    while left > 0:
        c.sendall(block[: min(left, len(block))])
        left -= len(block)
    c.shutdown(socket.SHUT_WR)
    while c.recv(65536):
        pass
    print(json.dumps({"done": True}))
elif mode == "echo":
    s = listener(args[0])
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := c.recv(65536):
        c.sendall(data)
elif mode == "echo-client":
    c = socket.create_connection((args[0], int(args[1])))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message, times = b"e" * 64, []
    for _ in range(int(args[2])):
        start = time.perf_counter()
        c.sendall(message)
        got = 0
        while got < 64:
            got += len(c.recv(64 - got))
        times.append(time.perf_counter() - start)
    print(json.dumps({"times": times}))
elif mode == "acceptor":
    s = listener(args[0])
    for _ in range(int(args[1])):
        c, _ = s.accept()
        c.close()
elif mode == "acceptor-until-eof":
    # For a client that closes first: read to EOF, close; report when the
    # last connection's EOF arrived (perf_counter is system-wide monotonic).
    s = listener(args[0])
    for _ in range(int(args[1])):
        c, _ = s.accept()
        while c.recv(65536):
            pass
        c.close()
    print(json.dumps({"last_eof": time.perf_counter()}))
elif mode == "connector":
    start = time.perf_counter()
    for _ in range(int(args[2])):
        c = socket.create_connection((args[0], int(args[1])))
        c.recv(1)
        c.close()
    print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def progress(message: str) -> None:
    print(f"[tcp] {message}", file=sys.stderr, flush=True)


@dataclass
class Column:
    name: str
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class Sizes:
    bulk: int
    echoes: int
    connections: int
    pings: int
    pytcp_bulk: int
    pytcp_echoes: int
    pytcp_connections: int


def flood_ping_rtt_us(output: str) -> float:
    """The average round trip of ``ping -q -f`` output, in microseconds."""
    match = re.search(r"= [\d.]+/([\d.]+)/", output)
    if match is None or " 0% packet loss" not in output:
        raise RuntimeError(f"flood ping failed: {output}")
    return float(match.group(1)) * 1000


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


# ------------------------------------------------------------------ kernel <-> kernel


def netns(namespace: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv]


def kernel_program(namespace: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        netns(namespace, sys.executable, "-c", KERNEL_PROGRAM, *args),
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"kernel program did not start: {line!r}")


def result_of(process: subprocess.Popen[str], timeout: float = 300) -> dict[str, Any]:
    out, _ = process.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"kernel program failed ({process.returncode}): {out!r}")
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


@contextmanager
def veth_pair(subnet: str = "10.78.0") -> Iterator[tuple[str, str]]:
    """Two namespaces joined by veth, ``subnet``.1 and ``subnet``.2 (/24):
    (server namespace, client namespace), deleted afterwards."""
    suffix = unique_suffix()
    server_ns, client_ns = f"lmbs{suffix}", f"lmbc{suffix}"
    veth_server, veth_client = f"lmvs{suffix}", f"lmvc{suffix}"
    sh("ip", "netns", "add", server_ns)
    sh("ip", "netns", "add", client_ns)
    try:
        sh("ip", "link", "add", veth_server, "type", "veth", "peer", "name", veth_client)
        sh("ip", "link", "set", veth_server, "netns", server_ns)
        sh("ip", "link", "set", veth_client, "netns", client_ns)
        for namespace, device, address in (
            (server_ns, veth_server, f"{subnet}.1/24"),
            (client_ns, veth_client, f"{subnet}.2/24"),
        ):
            sh(*netns(namespace, "ip", "addr", "add", address, "dev", device))
            sh(*netns(namespace, "ip", "link", "set", device, "up"))
            sh(*netns(namespace, "ip", "link", "set", "lo", "up"))
        yield server_ns, client_ns
    finally:
        sh("ip", "netns", "del", server_ns, check=False)
        sh("ip", "netns", "del", client_ns, check=False)


def kernel_to_kernel(sizes: Sizes) -> Column:
    column = Column("kernel<->kernel (veth)")
    with veth_pair("10.78.0") as (server_ns, client_ns):
        server = "10.78.0.1"

        progress("kernel flood ping over veth")
        out = sh(*netns(client_ns, "ping", "-q", "-f", "-c", str(sizes.pings), server)).stdout
        column.values["ping_rtt_us"] = flood_ping_rtt_us(out)

        progress("kernel -> kernel bulk")
        sink = kernel_program(server_ns, "sink", "5001")
        wait_ready(sink)
        result_of(kernel_program(client_ns, "source", server, "5001", str(sizes.bulk)))
        measured = result_of(sink)
        column.values["bulk_in_MBps"] = measured["bytes"] / measured["seconds"] / 1e6
        column.values["bulk_out_MBps"] = column.values["bulk_in_MBps"]  # symmetric

        progress("kernel echo round trips")
        echo = kernel_program(server_ns, "echo", "5002")
        wait_ready(echo)
        times = result_of(
            kernel_program(client_ns, "echo-client", server, "5002", str(sizes.echoes))
        )["times"]
        echo.wait(timeout=30)
        column.values["echo_p50_us"] = statistics.median(times) * 1e6
        column.values["echo_p99_us"] = percentile(times, 0.99) * 1e6

        progress("kernel connections per second")
        acceptor = kernel_program(server_ns, "acceptor", "5003", str(sizes.connections))
        wait_ready(acceptor)
        seconds = result_of(
            kernel_program(client_ns, "connector", server, "5003", str(sizes.connections))
        )["seconds"]
        acceptor.wait(timeout=30)
        column.values["connections_per_s"] = sizes.connections / seconds
    return column


# ------------------------------------------------------------------ looming <-> kernel


async def open_stack(peer: KernelPeer, offload: bool) -> DirectStack:
    tap = await TapNetwork.connect(peer.tap_name, mtu=peer.mtu, offload=offload)
    sh("ip", "link", "set", peer.tap_name, "netns", peer.namespace)
    peer.sh("ip", "addr", "add", f"{peer.peer_address}/24", "dev", peer.tap_name)
    peer.sh("ip", "link", "set", peer.tap_name, "up")
    return await DirectStack.connect(
        tap,
        time=UnixTime(),
        clock=UnixClock(),
        random=UnixRandom(),
        address=STACK_ADDRESS,
        gateway=PEER_ADDRESS,
    )


async def start_kernel(peer: KernelPeer, *args: str) -> asyncio.subprocess.Process:
    process = await peer.python(KERNEL_PROGRAM, *args)
    if args[0] in ("sink", "echo", "acceptor"):
        assert process.stdout is not None
        line = (await process.stdout.readline()).strip()
        if line != b"ready":
            raise RuntimeError(f"kernel program did not start: {line!r}")
    return process


async def kernel_result(process: asyncio.subprocess.Process) -> dict[str, Any]:
    out, _ = await asyncio.wait_for(process.communicate(), 600)
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"kernel program failed ({process.returncode}): {out!r}")
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


async def looming_with_kernel(sizes: Sizes, offload: bool) -> Column:
    name = "looming<->kernel (TAP" + (", offload)" if offload else ")")
    column = Column(name)
    with kernel_peer_namespace() as peer:
        stack = await open_stack(peer, offload)
        try:
            progress(f"{name}: flood ping")
            out = await peer.exec_output(
                "ping", "-q", "-f", "-c", str(sizes.pings), str(STACK_ADDRESS.ip)
            )
            column.values["ping_rtt_us"] = flood_ping_rtt_us(out)
            progress(f"{name}: kernel -> looming bulk")
            column.values["bulk_in_MBps"] = await _looming_bulk_in(peer, stack.tcp, sizes)
            progress(f"{name}: looming -> kernel bulk")
            column.values["bulk_out_MBps"] = await _looming_bulk_out(peer, stack.tcp, sizes)
            progress(f"{name}: echo round trips")
            times = await _looming_echo_times(peer, stack.tcp, sizes)
            column.values["echo_p50_us"] = statistics.median(times) * 1e6
            column.values["echo_p99_us"] = percentile(times, 0.99) * 1e6
            progress(f"{name}: connections per second")
            column.values["connections_per_s"] = await _looming_connections(peer, stack.tcp, sizes)
        finally:
            await stack.disconnect()
    return column


Address = IPv4Address | IPv6Address


async def _looming_bulk_in(
    peer: KernelPeer, tcp: TcpLayer, sizes: Sizes, ours: Address = STACK_ADDRESS.ip
) -> float:
    """MB/s the kernel sends to a looming listener at ``ours``."""
    time_device = UnixTime()
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def sink(flow: TcpFlow) -> None:
        start = time_device.now_ns()
        total = 0
        while chunk := await flow.read():
            total += len(chunk)
        done.set_result(total / ((time_device.now_ns() - start) / 1e9) / 1e6)

    listener = await tcp.listen(6001, sink)
    source = await peer.python(KERNEL_PROGRAM, "source", str(ours), "6001", str(sizes.bulk))
    rate = await asyncio.wait_for(done, 600)
    await kernel_result(source)
    await listener.close()
    return rate


async def _looming_bulk_out(
    peer: KernelPeer, tcp: TcpLayer, sizes: Sizes, theirs: Address | None = None
) -> float:
    """MB/s looming sends to a kernel sink, as the sink measured it."""
    kernel_sink = await start_kernel(peer, "sink", "5001")
    flow = await tcp.connect(theirs or peer.peer_address, 5001)
    block = b"\x5a" * (1 << 20)
    left = sizes.bulk
    while left > 0:
        await flow.write(block[: min(left, len(block))])
        left -= len(block)
    await flow.shutdown()
    measured = await kernel_result(kernel_sink)
    await flow.close()
    return float(measured["bytes"] / measured["seconds"] / 1e6)


async def _looming_echo_times(
    peer: KernelPeer, tcp: TcpLayer, sizes: Sizes, theirs: Address | None = None
) -> list[float]:
    """Seconds per 64-byte round trip through a kernel echo server."""
    echo = await start_kernel(peer, "echo", "5002")
    flow = await tcp.connect(theirs or peer.peer_address, 5002)
    flow.set_nodelay(True)
    message = b"e" * 64
    times = []
    for _ in range(sizes.echoes):
        start = time.perf_counter()
        await flow.write(message)
        got = 0
        while got < 64:
            got += len(await flow.read())
        times.append(time.perf_counter() - start)
    await flow.close()
    await echo.wait()
    return times


async def _looming_connections(
    peer: KernelPeer, tcp: TcpLayer, sizes: Sizes, theirs: Address | None = None
) -> float:
    """Connections per second looming opens to a kernel acceptor."""
    acceptor = await start_kernel(peer, "acceptor", "5003", str(sizes.connections))
    start = time.perf_counter()
    target = theirs or peer.peer_address
    for _ in range(sizes.connections):
        flow = await tcp.connect(target, 5003)
        await flow.read()
        await flow.close()
    rate = sizes.connections / (time.perf_counter() - start)
    await acceptor.wait()
    return rate


# ------------------------------------------------------------------ IPv4 beside IPv6

# The kernel's and looming's global IPv6 addresses on the TAP (one on-link prefix).
KERNEL_IPV6 = IPv6Address("fd77:0:0:9::1")
STACK_IPV6 = IPv6Interface("fd77:0:0:9::2/64")
FAMILY_METRICS = ("bulk_in_MBps", "bulk_out_MBps", "echo_p50_us", "connections_per_s")


async def open_dual_stack(peer: KernelPeer) -> DirectStack:
    """One direct stack on a TAP (no offloads) with the usual IPv4 address
    and a static IPv6 one, the kernel's on the same prefix; returns once
    the IPv6 address has passed duplicate address detection."""
    for scope in ("all", "default"):
        peer.sh("sysctl", "-qw", f"net.ipv6.conf.{scope}.accept_dad=0")
    stack = await peer.connect_stack(ipv6=True, slaac=False, ipv6_address=STACK_IPV6)
    assert stack.ipv6 is not None
    peer.sh("ip", "-6", "addr", "add", f"{KERNEL_IPV6}/64", "dev", peer.tap_name, "nodad")
    await stack.ipv6.wait_for_address(5)
    return stack


async def one_family(
    peer: KernelPeer, stack: DirectStack, sizes: Sizes, ours: Address, theirs: Address
) -> dict[str, float]:
    """Bulk both ways, echo p50 and connections/s over one family."""
    tcp = stack.tcp
    return {
        "bulk_in_MBps": await _looming_bulk_in(peer, tcp, sizes, ours),
        "bulk_out_MBps": await _looming_bulk_out(peer, tcp, sizes, theirs),
        "echo_p50_us": statistics.median(await _looming_echo_times(peer, tcp, sizes, theirs)) * 1e6,
        "connections_per_s": await _looming_connections(peer, tcp, sizes, theirs),
    }


async def ipv4_and_ipv6(sizes: Sizes, rounds: int) -> dict[str, dict[str, list[float]]]:
    """looming's TCP over IPv4 and over IPv6 on the same stack and TAP
    against the same kernel programs, families alternating (ABBA...)."""
    figures: dict[str, dict[str, list[float]]] = {"IPv4": {}, "IPv6": {}}
    with kernel_peer_namespace() as peer:
        stack = await open_dual_stack(peer)
        families: list[tuple[str, Address, Address]] = [
            ("IPv4", STACK_ADDRESS.ip, peer.peer_address),
            ("IPv6", STACK_IPV6.ip, KERNEL_IPV6),
        ]
        try:
            for number in range(rounds):
                for family, ours, theirs in families if number % 2 == 0 else families[::-1]:
                    progress(f"IPv4 beside IPv6, round {number + 1}: {family}")
                    values = await one_family(peer, stack, sizes, ours, theirs)
                    for key, value in values.items():
                        figures[family].setdefault(key, []).append(value)
        finally:
            await stack.disconnect()
    return figures


def family_report(figures: dict[str, dict[str, list[float]]]) -> str:
    """IPv6 / IPv4 per metric, best of the rounds (medians beside)."""
    lines = [
        "",
        "looming over IPv6 beside IPv4 (one stack, one TAP, no offloads, alternating rounds):",
        f"  {'metric':<24} {'IPv4':>9} {'IPv6':>9}  ratio  (medians IPv4 / IPv6)",
    ]
    labels = {key: label for key, label, _ in METRICS}
    for key in FAMILY_METRICS:
        pick = min if key.endswith("_us") else max
        four, six = figures["IPv4"][key], figures["IPv6"][key]
        ratio = pick(six) / pick(four) if pick is max else pick(four) / pick(six)
        lines.append(
            f"  {labels[key]:<24} {pick(four):9.1f} {pick(six):9.1f}  {ratio:.3f}"
            f"  ({statistics.median(four):.1f} / {statistics.median(six):.1f})"
        )
    lines.append("  ratio = IPv6 / IPv4 for rates, IPv4 / IPv6 for latency (goal: >= 0.9)")
    return "\n".join(lines)


# ------------------------------------------------------------------ PyTCP <-> kernel

# PyTCP's side, run with ``python -O`` (PyTCP's own switch that drops its
# debug logging) in the root namespace: it opens the TAP, says "opened",
# waits for "go" (the TAP is in the namespace by then), starts and says
# "ready", then runs one command per line read from stdin, answering JSON.
PYTCP_PROGRAM = r"""
import json, os, sys, time
from pytcp import config
config.LOG_CHANEL = set()
from pytcp import TcpIpStack
from pytcp.lib import socket

tap, address, gateway = sys.argv[1:4]
stack = TcpIpStack(interface=tap, ip4_address=address, ip4_gateway=gateway)
print("opened", flush=True)
sys.stdin.readline()
stack.start()
time.sleep(1.0)  # PyTCP claims its addresses (ARP probes) in the background
print("ready", flush=True)
for line in sys.stdin:
    mode, *args = line.split()
    if mode == "sink":
        server = socket.socket()
        server.bind(("0.0.0.0", int(args[0])))
        server.listen()
        print("listening", flush=True)
        flow, _ = server.accept()
        start, total = time.perf_counter(), 0
        while data := flow.recv():
            total += len(data)
        seconds = time.perf_counter() - start
        flow.close()
        print(json.dumps({"bytes": total, "seconds": seconds}), flush=True)
    elif mode == "source":
        flow = socket.socket()
        flow.connect((args[0], int(args[1])))
        flow.send(b"\x5a" * int(args[2]))  # PyTCP queues it all at once
        flow.close()
        print(json.dumps({"queued": True}), flush=True)
    elif mode == "echo-client":
        flow = socket.socket()
        flow.connect((args[0], int(args[1])))
        times = []
        for _ in range(int(args[2])):
            start = time.perf_counter()
            flow.send(b"e" * 64)
            got = 0
            while got < 64:
                got += len(flow.recv(64 - got))
            times.append(time.perf_counter() - start)
        flow.close()
        print(json.dumps({"times": times}), flush=True)
    elif mode == "connect-close":
        # PyTCP closes first: it picks the lowest free ephemeral port, so a
        # port the kernel still holds in TIME-WAIT (when the kernel closed
        # first) would come back at once, with a SYN the kernel does not
        # take, and the connect would time out.
        start = time.perf_counter()
        for _ in range(int(args[2])):
            flow = socket.socket()
            flow.connect((args[0], int(args[1])))
            flow.close()
        print(json.dumps({"start": start}), flush=True)
    else:
        break
stack.stop()
print("stopped", flush=True)
os._exit(0)  # PyTCP's service threads do not all end on stop()
"""


class PytcpDriver:
    """The PyTCP process: one command line in, one answer line out."""

    def __init__(self, peer: KernelPeer) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-O",
                "-c",
                PYTCP_PROGRAM,
                peer.tap_name,
                str(STACK_ADDRESS),
                str(PEER_ADDRESS),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.noise: list[str] = []  # other output (PyTCP's tracebacks)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)  # PyTCP exited

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, timeout: float) -> str:
        """The next line PyTCP prints that is not noise (a JSON answer or a
        word such as "ready")."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"PyTCP did not answer within {timeout:.0f} s") from None
            if line is None:
                self.process.wait(timeout=10)
                raise RuntimeError(f"PyTCP exited ({self.process.returncode})")
            if line.startswith("{") or line.isalpha():
                return line
            self.noise.append(line)

    def result(self, timeout: float) -> dict[str, Any]:
        line = self.expect(timeout)
        if not line.startswith("{"):
            raise RuntimeError(f"unexpected answer from PyTCP: {line!r}")
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def pytcp_available() -> str | None:
    """Why PyTCP 2.7.6 cannot run here, or None."""
    try:
        from importlib.metadata import version

        found = version("PyTCP")
    except Exception:
        return "PyTCP is not installed (.venv/bin/pip install -e '.[test]')"
    if found != "2.7.6":
        return f"PyTCP {found} is installed, not 2.7.6"
    return None


def _pytcp_rows(
    name: str,
    driver: PytcpDriver,
    peer: KernelPeer,
    sizes: Sizes,
    column: Column,
    kernel_side: Callable[..., subprocess.Popen[str]],
) -> None:
    """Ping, bulk both ways, echo and connections/s of PyTCP with the kernel."""
    server = str(STACK_ADDRESS.ip)
    progress(f"{name}: flood ping")
    out = peer.sh("ping", "-q", "-f", "-c", str(sizes.pings), server, timeout=300)
    column.values["ping_rtt_us"] = flood_ping_rtt_us(out)

    progress(f"{name}: kernel -> PyTCP bulk ({sizes.pytcp_bulk >> 20} MB)")
    driver.send("sink 6001")
    driver.expect(30)  # listening
    source = kernel_side("source", server, "6001", str(sizes.pytcp_bulk))
    measured = driver.result(600)
    result_of(source, 60)
    column.values["bulk_in_MBps"] = measured["bytes"] / measured["seconds"] / 1e6

    progress(f"{name}: PyTCP -> kernel bulk ({sizes.pytcp_bulk >> 20} MB)")
    sink = kernel_side("sink", "5001")
    wait_ready(sink)
    driver.send(f"source {peer.peer_address} 5001 {sizes.pytcp_bulk}")
    driver.result(60)
    measured = result_of(sink, 600)
    column.values["bulk_out_MBps"] = measured["bytes"] / measured["seconds"] / 1e6

    progress(f"{name}: echo round trips")
    echo = kernel_side("echo", "5002")
    wait_ready(echo)
    driver.send(f"echo-client {peer.peer_address} 5002 {sizes.pytcp_echoes}")
    times = driver.result(300)["times"]
    echo.wait(timeout=30)
    column.values["echo_p50_us"] = statistics.median(times) * 1e6
    column.values["echo_p99_us"] = percentile(times, 0.99) * 1e6

    progress(f"{name}: connections per second")
    acceptor = kernel_side("acceptor-until-eof", "5003", str(sizes.pytcp_connections))
    wait_ready(acceptor)
    driver.send(f"connect-close {peer.peer_address} 5003 {sizes.pytcp_connections}")
    start = driver.result(300)["start"]
    last_eof = result_of(acceptor, 60)["last_eof"]
    column.values["connections_per_s"] = sizes.pytcp_connections / (last_eof - start)


def pytcp_with_kernel(sizes: Sizes, notes: list[str]) -> Column:
    name = "PyTCP 2.7.6<->kernel (TAP)"
    column = Column(name)
    missing = pytcp_available()
    if missing is not None:
        notes.append(f"{name}: not run: {missing}")
        return column
    kernel_programs: list[subprocess.Popen[str]] = []

    def kernel_side(*args: str) -> subprocess.Popen[str]:
        program = kernel_program(peer.namespace, *args)
        kernel_programs.append(program)
        return program

    with kernel_peer_namespace() as peer:
        driver = PytcpDriver(peer)
        try:
            if driver.expect(30) != "opened":
                raise RuntimeError("PyTCP did not open its TAP")
            sh("ip", "link", "set", peer.tap_name, "netns", peer.namespace)
            peer.sh("ip", "addr", "add", f"{peer.peer_address}/24", "dev", peer.tap_name)
            peer.sh("ip", "link", "set", peer.tap_name, "up")
            driver.send("go")
            if driver.expect(30) != "ready":
                raise RuntimeError("PyTCP did not start")

            _pytcp_rows(name, driver, peer, sizes, column, kernel_side)
            notes.append(
                f"{name}: connections are closed by PyTCP first and timed until the kernel "
                "saw the last EOF (PyTCP reuses a port the kernel holds in TIME-WAIT at once)"
            )
        except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as error:
            last = driver.noise[-1] if driver.noise else ""
            notes.append(f"{name}: stopped early: {error} {last}".rstrip())
            progress(f"{name}: stopped early: {error} {last}".rstrip())
        finally:
            driver.stop()
            for program in kernel_programs:
                if program.poll() is None:
                    program.kill()
                    program.wait()
    return column


# ------------------------------------------------------------------ looming <-> looming


async def looming_pair(sizes: Sizes) -> Column:
    column = Column("looming<->looming (memory)")
    a, b = wire_pair(Faults())
    client = TcpLayer(a, UnixTime(), UnixRandom(1))
    server = TcpLayer(b, UnixTime(), UnixRandom(2))
    progress("looming -> looming bulk in memory")
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def sink(flow: TcpFlow) -> None:
        start = time.perf_counter()
        total = 0
        while chunk := await flow.read():
            total += len(chunk)
        done.set_result(total / (time.perf_counter() - start) / 1e6)

    await server.listen(80, sink)
    flow = await client.connect("10.9.0.2", 80)
    block = b"\x33" * (1 << 20)
    for _ in range(sizes.bulk >> 20):
        await flow.write(block)
    await flow.shutdown()
    column.values["bulk_in_MBps"] = await done
    column.values["bulk_out_MBps"] = column.values["bulk_in_MBps"]
    await flow.close()

    async def echo(flow: TcpFlow) -> None:
        flow.set_nodelay(True)
        while data := await flow.read():
            await flow.write(data)

    async def closer(flow: TcpFlow) -> None:
        return

    await server.listen(81, echo)
    await server.listen(82, closer)
    flow = await client.connect("10.9.0.2", 81)
    flow.set_nodelay(True)
    times = []
    for _ in range(sizes.echoes):
        start = time.perf_counter()
        await flow.write(b"e" * 64)
        got = 0
        while got < 64:
            got += len(await flow.read())
        times.append(time.perf_counter() - start)
    await flow.close()
    column.values["echo_p50_us"] = statistics.median(times) * 1e6
    column.values["echo_p99_us"] = percentile(times, 0.99) * 1e6
    start = time.perf_counter()
    for _ in range(sizes.connections):
        flow = await client.connect("10.9.0.2", 82)
        await flow.read()
        await flow.close()
    column.values["connections_per_s"] = sizes.connections / (time.perf_counter() - start)
    await client.close()
    await server.close()
    return column


async def looming_memory(count: int) -> dict[str, float]:
    """Memory held after ``count`` connections opened and closed (TIME-WAIT
    shortened to 10 ms so that only leaks would remain)."""
    config = TcpConfig(time_wait_ns=10_000_000)
    a, b = wire_pair(Faults())
    client = TcpLayer(a, UnixTime(), UnixRandom(1), config=config)
    server = TcpLayer(b, UnixTime(), UnixRandom(2), config=config)

    async def closer(flow: TcpFlow) -> None:
        return

    await server.listen(82, closer)

    async def batch(n: int) -> None:
        for _ in range(n):
            flow = await client.connect("10.9.0.2", 82)
            await flow.read()
            await flow.close()
        await asyncio.sleep(0.05)  # past TIME-WAIT

    await batch(200)  # warm up caches and free lists
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    done = 0
    while done < count:
        step = min(5000, count - done)
        progress(f"memory: {done + step}/{count} connections")
        await batch(step)
        done += step
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    left = client.connection_count + server.connection_count
    timers = client.timer_count + server.timer_count
    await client.close()
    await server.close()
    return {
        "connections": count,
        "growth_bytes": after - before,
        "connections_left": left,
        "timers_left": timers,
    }


# ------------------------------------------------------------------ through the loss relay

LOSSY_CONDITIONS = [
    ("no loss", Impairments()),
    ("1% loss", Impairments(loss=0.01)),
    ("3% loss", Impairments(loss=0.03)),
    ("5% loss", Impairments(loss=0.05)),
    ("reorder 3%/1ms, dup 1%", Impairments(reorder=0.03, reorder_ms=1, duplicate=0.01)),
]
# The rows the ratio goal is about get more rounds: their times hang on how
# many 200 ms retransmission timeouts a round meets, on either side.
LOSSY_ROUNDS = {"3% loss": 7, "5% loss": 7}
RECOVERY_COUNTERS = (
    "retransmits",
    "fast_retransmits",
    "timeouts",
    "tail_loss_probes",
    "dsacks_received",
    "spurious_recoveries_undone",
    "spurious_timeouts_undone",
    "black_hole_mss_lowered",  # three timeouts in a row halved the MSS
)


# What the Linux echo server's kernel did as the sender to looming, from
# its namespace's /proc/net/snmp and /proc/net/netstat (deltas over
# looming's echoes): a peer that waits for its own timeouts shows here.
# The same, from both namespaces, over the Linux-to-Linux CUBIC echoes.
PEER_COUNTERS = {
    "Tcp:RetransSegs": "retransmits",
    "TcpExt:TCPSackRecovery": "recoveries",
    "TcpExt:TCPTimeouts": "timeouts",
    "TcpExt:TCPLossProbes": "tail_loss_probes",
}


@dataclass
class LossyRow:
    condition: str
    linux: list[float] = field(default_factory=list)  # the namespaces' default
    linux_cubic: list[float] = field(default_factory=list)
    looming: list[float] = field(default_factory=list)
    looming_cpu: list[float] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    peer_counters: dict[str, int] = field(default_factory=dict)
    cubic_counters: dict[str, int] = field(default_factory=dict)  # both Linux ends
    # Retransmission timeouts per round: looming's own, its Linux peer's
    # (sending to looming), and both Linux ends of the CUBIC echo.
    looming_timeouts: list[int] = field(default_factory=list)
    peer_timeouts: list[int] = field(default_factory=list)
    cubic_timeouts: list[int] = field(default_factory=list)


def _peer_counters(path: Any, *, both: bool = False) -> dict[str, int]:
    """The TCP counters named in PEER_COUNTERS of the Linux echo server's
    namespace, or summed over both namespaces."""
    values: dict[str, int] = {}
    for side in (path.left, path.right) if both else (path.left,):
        text = subprocess.run(
            side("cat", "/proc/net/snmp", "/proc/net/netstat"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        for names, numbers in zip(text[::2], text[1::2], strict=False):
            prefix, *keys = names.split()
            for key, number in zip(keys, numbers.split()[1:], strict=False):
                name = PEER_COUNTERS.get(f"{prefix}{key}")
                if name is not None:
                    values[name] = values.get(name, 0) + int(number)
    return values


def _deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: value - before.get(key, 0) for key, value in after.items()}


def _add(into: dict[str, int], deltas: dict[str, int]) -> None:
    for key, value in deltas.items():
        into[key] = into.get(key, 0) + value


def lossy_echoes(size: int, rounds: int, extra: dict[str, int]) -> tuple[list[LossyRow], str]:
    """10 MB echoes, Linux (its default congestion control, then CUBIC) and
    looming alternating round by round, ``rounds`` per impairment (or the
    number ``extra`` gives the row); and the name of Linux's default."""
    rows, default = [], "?"
    with relayed_path(unique_suffix()) as path:
        server = start_echo_server(path)
        try:
            for name, impairments in LOSSY_CONDITIONS:
                row = LossyRow(name)
                for round_number in range(extra.get(name, rounds)):
                    seeded = replace(impairments, seed=round_number + 1)
                    default = _lossy_round(
                        path, size, row, seeded, f"{name}, round {round_number + 1}"
                    )
                rows.append(row)
        finally:
            server.kill()
            server.wait()
    return rows, default


def _lossy_round(path: Any, size: int, row: LossyRow, seeded: Impairments, label: str) -> str:
    """One round of the three echoes into ``row``; returns Linux's default
    congestion control's name."""
    progress(f"relay, {label}: Linux")
    path.impair(seeded)
    plain = _checked(linux_echo(path, size))
    row.linux.append(plain.seconds)
    progress(f"relay, {label}: Linux with CUBIC")
    path.impair(seeded)
    before = _peer_counters(path, both=True)
    row.linux_cubic.append(_checked(linux_echo(path, size, "cubic")).seconds)
    cubic = _deltas(before, _peer_counters(path, both=True))
    _add(row.cubic_counters, cubic)
    row.cubic_timeouts.append(cubic.get("timeouts", 0))
    progress(f"relay, {label}: looming")
    path.impair(seeded)
    peer_before = _peer_counters(path)
    result = _checked(asyncio.run(_looming_relay_echo(path, size)))
    row.looming_cpu.append(result.cpu)
    peer = _deltas(peer_before, _peer_counters(path))
    row.looming.append(result.seconds)
    _add(row.counters, {key: result.counters.get(key, 0) for key in RECOVERY_COUNTERS})
    row.looming_timeouts.append(result.counters.get("timeouts", 0))
    _add(row.peer_counters, peer)
    row.peer_timeouts.append(peer.get("timeouts", 0))
    return plain.congestion


def _checked(result: EchoResult) -> EchoResult:
    if not result.intact:
        raise RuntimeError("an echo through the relay came back damaged")
    return result


async def _looming_relay_echo(path: Any, size: int) -> EchoResult:
    stack = await open_looming(path)
    try:
        return await asyncio.wait_for(looming_echo(stack, path, size, CUBIC_ECHO_PORT), 300)
    finally:
        await stack.disconnect()


def _spread(values: list[float]) -> str:
    """min / median / max."""
    return f"{min(values):.3f}/{statistics.median(values):.3f}/{max(values):.3f}"


def lossy_report(rows: list[LossyRow], size: int, default: str = "?") -> str:
    plain = f"Linux {default}"
    versions = f"Linux {platform.release()}, looming on Python {platform.python_version()}"
    lines = [
        "",
        f"{size / 1e6:.0f} MB echo through the loss relay ({versions}; "
        "seconds, min/median/max over the "
        f"rounds, which alternate; {plain}: the namespaces' default congestion control; "
        "Linux cubic and looming's Linux peer: CUBIC on the sockets; ratio = median "
        "looming / median Linux cubic, goal <= 3 at 3% and 5%; "
        f"/{default}: looming / {plain}; cpu: median CPU seconds of this process from "
        "looming's connect to its close, the echo's reading and hashing included, the "
        "stack's setup and the payload's making not, so wall minus cpu is time spent "
        "waiting). Under each row: the "
        "retransmission timeouts of each round (looming's own; its Linux peer's as the "
        "sender to looming; Linux to Linux with CUBIC, both ends), then the counters "
        "summed over the rounds:",
        f"  {'condition':<24} {'rounds':>6} {plain:>19} {'Linux cubic':>19} {'looming':>19} "
        f"{'ratio':>6} {'/' + default:>7} {'cpu':>6}",
    ]
    for row in rows:
        cubic = statistics.median(row.linux_cubic)
        ours = statistics.median(row.looming)
        linux = statistics.median(row.linux)
        cpu = statistics.median(row.looming_cpu)
        lines.append(
            f"  {row.condition:<24} {len(row.looming):>6} {_spread(row.linux):>19} "
            f"{_spread(row.linux_cubic):>19} {_spread(row.looming):>19} {ours / cubic:6.2f} "
            f"{ours / linux:7.2f} {cpu:6.3f}"
        )
        lines.append(
            "      timeouts per round: looming "
            + " ".join(map(str, row.looming_timeouts))
            + "; its Linux peer "
            + " ".join(map(str, row.peer_timeouts))
            + "; Linux cubic, both ends "
            + " ".join(map(str, row.cubic_timeouts))
        )
        counters = " ".join(f"{k}={v}" for k, v in row.counters.items() if v)
        peer = " ".join(f"{k}={v}" for k, v in row.peer_counters.items() if v)
        reference = " ".join(f"{k}={v}" for k, v in row.cubic_counters.items() if v)
        lines.append(
            f"      looming: {counters or '-'}; peer: {peer or '-'}; "
            f"Linux cubic, both ends: {reference or '-'}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ CPU per event-loop pass

PASS_FRAMES = (2, 8, 32)
PASS_MSS = 1448
_PASS_OURS, _PASS_PEER = IPv4Address("10.7.0.1"), IPv4Address("10.7.0.2")
_PASS_MACS = (MacAddress(b"\x02\x00\x00\x00\x00\x01"), MacAddress(b"\x02\x00\x00\x00\x00\x02"))


class _PairNetwork(_fd.FrameDeviceNetwork):
    """One end of a unix datagram socketpair as an interface (one datagram a frame)."""

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock
        self._mac = _PASS_MACS[0]
        self._mtu = 1500
        self._device = _fd.FrameDevice(
            sock.fileno(), receive=lambda: sock.recv(65536), send=sock.send
        )

    def _release(self) -> None:
        self._socket.close()


def _pass_frame(seq: int, ack: int, flags: int, payload: bytes = b"", **options: Any) -> bytes:
    from looming.net.wire import ethernet as ether_wire
    from looming.net.wire import ipv4 as ip_wire
    from looming.net.wire import tcp as tcp_wire

    header = tcp_wire.TcpHeader(
        40000, 7, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, 65535, **options
    )
    segment = tcp_wire.emit(header, payload, src=_PASS_PEER, dst=_PASS_OURS)
    packet = ip_wire.emit(ip_wire.Ipv4Header(_PASS_PEER, _PASS_OURS, 6), segment)
    return ether_wire.emit(ether_wire.EthernetHeader(_PASS_MACS[0], _PASS_MACS[1], 0x0800), packet)


def _pass_acks(sock: socket.socket) -> Iterator[Any]:
    """The TCP headers the stack sends, as they come."""
    from looming.net.wire import tcp as tcp_wire

    while True:
        frame = sock.recv(65536)
        if frame[12:14] == b"\x08\x00" and frame[23] == 6:
            yield tcp_wire.parse(frame[34:])[0]


def _pass_peer(sock: socket.socket, per_wake: int, wakes: int) -> None:
    """The peer process: ARP, handshake, then ``wakes`` wake-ups of data."""
    from looming.net.wire import arp as arp_wire
    from looming.net.wire import ethernet as ether_wire
    from looming.net.wire import tcp as tcp_wire

    ask = arp_wire.ArpPacket(1, _PASS_MACS[1], _PASS_PEER, MacAddress(bytes(6)), _PASS_OURS)
    broadcast = ether_wire.EthernetHeader(MacAddress(b"\xff" * 6), _PASS_MACS[1], 0x0806)
    sock.send(ether_wire.emit(broadcast, arp_wire.emit(ask)))
    sock.send(_pass_frame(1000, 0, tcp_wire.SYN, mss=PASS_MSS, sack_permitted=True))
    acks = _pass_acks(sock)
    ours = next(h for h in acks if h.flags & tcp_wire.SYN).seq + 1
    sock.send(_pass_frame(1001, ours, tcp_wire.ACK))
    payload, sent = bytes(PASS_MSS), 0
    for _ in range(wakes):
        # Built first, so that they go out back to back: one wake-up's.
        frames = [
            _pass_frame(1001 + number * PASS_MSS, ours, tcp_wire.ACK, payload)
            for number in range(sent, sent + per_wake)
        ]
        for frame in frames:
            sock.send(frame)
        sent += per_wake
        want = (1001 + sent * PASS_MSS) & 0xFFFFFFFF
        next(h for h in acks if h.ack == want)
    sock.send(_pass_frame(1001 + sent * PASS_MSS, ours, tcp_wire.ACK | tcp_wire.FIN))


async def _pass_round(per_wake: int, wakes: int) -> tuple[float, int, float]:
    """(CPU seconds, passes, frames) of a stack taking ``wakes`` wake-ups
    of ``per_wake`` segments, the first one's not counted."""
    import multiprocessing

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    passes = [0]
    network = _PairNetwork(ours)
    device = network._device
    read = device._on_readable

    def counted() -> None:
        passes[0] += 1
        read()

    device._on_readable = counted  # type: ignore[method-assign]
    stack = await DirectStack.connect(
        network,
        time=UnixTime(),
        clock=UnixClock(),
        random=UnixRandom(1),
        address=IPv4Interface(f"{_PASS_OURS}/24"),
    )
    start: list[float] = []
    got = 0

    async def sink(flow: TcpFlow) -> None:
        nonlocal got
        while chunk := await flow.read():
            got += len(chunk)
            if not start and got >= per_wake * PASS_MSS:
                start.extend((time.process_time(), passes[0], got))

    listener = await stack.tcp.listen(7, sink)
    peer = multiprocessing.get_context("fork").Process(
        target=_pass_peer, args=(theirs, per_wake, wakes + 1)
    )
    peer.start()
    while got < (wakes + 1) * per_wake * PASS_MSS:
        await asyncio.sleep(0.01)
    cpu = time.process_time() - start[0]
    # Joined off the loop: the peer may still wait for an ACK the stack's
    # timer sends (a delayed ACK), which a join on the loop would hold up.
    await asyncio.get_running_loop().run_in_executor(None, peer.join)
    await listener.close()
    await stack.disconnect()
    return cpu, passes[0] - int(start[1]), (got - start[2]) / PASS_MSS


def pass_cpu(rounds: int, wakes: int) -> str:
    """The CPU per event-loop pass report, wake-up sizes alternating."""
    figures: dict[int, list[tuple[float, int, float]]] = {n: [] for n in PASS_FRAMES}
    for number in range(rounds):
        for per_wake in PASS_FRAMES:
            progress(f"pass CPU, {per_wake} frames a wake-up, round {number + 1}")
            figures[per_wake].append(asyncio.run(_pass_round(per_wake, wakes)))
    lines = [
        f"CPU per event-loop pass of the direct stack (Python {platform.python_version()}; "
        f"a peer process sends {wakes} wake-ups of data segments over a socketpair, each "
        "after the ACK of the one before; medians over the rounds, which alternate):",
        f"  {'frames/wake':>11} {'frames/pass':>11} {'us/pass':>8} {'us/frame':>8}",
    ]
    points = []
    for per_wake, runs in figures.items():
        per_pass = statistics.median(cpu / passes * 1e6 for cpu, passes, _ in runs)
        frames = statistics.median(frames / passes for _, passes, frames in runs)
        points.append((frames, per_pass))
        lines.append(f"  {per_wake:>11} {frames:>11.1f} {per_pass:>8.1f} {per_pass / frames:>8.2f}")
    slope, intercept = statistics.linear_regression(*zip(*points, strict=True))
    lines.append(f"  fixed cost of a pass {intercept:.1f} us, then {slope:.2f} us a frame")
    return "\n".join(lines)


# ------------------------------------------------------------------ report

METRICS = [
    ("ping_rtt_us", "flood ping RTT us", False),
    ("bulk_in_MBps", "bulk kernel->stack MB/s", True),
    ("bulk_out_MBps", "bulk stack->kernel MB/s", True),
    ("echo_p50_us", "64 B echo p50 us", False),
    ("echo_p99_us", "64 B echo p99 us", False),
    ("connections_per_s", "connections/s", True),
]


def report(columns: list[Column]) -> str:
    baseline = columns[0]
    headers = ["metric", baseline.name]
    for column in columns[1:]:
        headers += [column.name, "ratio"]
    rows = []
    for key, label, higher_is_better in METRICS:
        row = [label, f"{baseline.values.get(key, float('nan')):.1f}"]
        for column in columns[1:]:
            value = column.values.get(key)
            base = baseline.values.get(key)
            if value is None or not base:
                row += ["-", "-"]
                continue
            ratio = value / base if higher_is_better else base / value
            row += [f"{value:.1f}", f"{ratio:.3f}"]
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(str(cell).rjust(w) for cell, w in zip(r, widths, strict=True))
        for r in [headers, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("ratio = stack / kernel for rates, kernel / stack for latencies (1.0 = parity)")
    return "\n".join(lines)


def versus_pytcp(columns: list[Column]) -> str:
    """How many times better looming does than PyTCP, per metric."""
    pytcp = next((c for c in columns if c.name.startswith("PyTCP")), None)
    looming = [c for c in columns if c.name.startswith("looming<->kernel")]
    if pytcp is None or not pytcp.values:
        return ""
    lines = ["", "looming / PyTCP (both on TAP against the kernel; > 1 means looming is better):"]
    for key, label, higher_is_better in METRICS:
        theirs = pytcp.values.get(key)
        cells = []
        for column in looming:
            ours = column.values.get(key)
            if ours is None or not theirs:
                cells.append(f"{column.name}: -")
                continue
            ratio = ours / theirs if higher_is_better else theirs / ours
            cells.append(f"{column.name}: {ratio:.1f}x")
        lines.append(f"  {label:<24} " + "   ".join(cells))
    return "\n".join(lines)


def echo_tail_check(columns: list[Column]) -> str:
    """The echo goal: p99 at most 5x p50, per column."""
    cells = []
    for column in columns:
        p50, p99 = column.values.get("echo_p50_us"), column.values.get("echo_p99_us")
        if p50 and p99:
            cells.append(f"{column.name}: {p99 / p50:.1f}")
    return "echo p99 / p50 (goal <= 5): " + "   ".join(cells)


def sizes_for(quick: bool) -> Sizes:
    """Transfer sizes and counts: ``--quick`` or the full run."""
    return (
        Sizes(
            bulk=8 << 20,
            echoes=500,
            connections=200,
            pings=2000,
            pytcp_bulk=1 << 20,
            pytcp_echoes=200,
            pytcp_connections=50,
        )
        if quick
        else Sizes(
            bulk=32 << 20,
            echoes=3000,
            connections=1000,
            pings=10000,
            pytcp_bulk=4 << 20,
            pytcp_echoes=1000,
            pytcp_connections=200,
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller transfers and fewer rounds")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--only-relay", action="store_true", help="only the echoes through the loss relay"
    )
    parser.add_argument(
        "--only-ipv6", action="store_true", help="only looming over IPv6 beside IPv4"
    )
    parser.add_argument(
        "--only-pass", action="store_true", help="only looming's CPU per event-loop pass (no root)"
    )
    args = parser.parse_args()
    import os

    if args.only_pass:
        print(pass_cpu(3 if args.quick else 7, 1000 if args.quick else 3000))
        return 0

    if os.geteuid() != 0:
        print("bench/tcp.py needs root (namespaces, TAP and veth devices)", file=sys.stderr)
        return 2
    sizes = sizes_for(args.quick)
    rounds = 2 if args.quick else 3
    if args.only_ipv6:
        print(family_report(asyncio.run(ipv4_and_ipv6(sizes, 2 * rounds))).lstrip("\n"))
        return 0
    relay_rounds = 2 if args.quick else 5
    extra = {} if args.quick else LOSSY_ROUNDS
    lossy, default = lossy_echoes(10_000_000, relay_rounds, extra)
    relay_text = lossy_report(lossy, 10_000_000, default)
    if args.only_relay:
        print(relay_text.lstrip("\n"))
        return 0
    notes: list[str] = []
    columns = [kernel_to_kernel(sizes)]
    columns.append(asyncio.run(looming_with_kernel(sizes, offload=False)))
    columns.append(asyncio.run(looming_with_kernel(sizes, offload=True)))
    families = asyncio.run(ipv4_and_ipv6(sizes, rounds))
    columns.append(pytcp_with_kernel(sizes, notes))
    columns.append(asyncio.run(looming_pair(sizes)))
    memory_count = 5_000 if args.quick else 100_000
    memory = asyncio.run(looming_memory(memory_count))
    text = report(columns) + versus_pytcp(columns) + family_report(families)
    if notes:
        text += "\n" + "\n".join(f"note: {note}" for note in notes)
    text += (
        f"\nmemory after {memory['connections']:,} looming connections opened and closed: "
        f"{memory['growth_bytes'] / 1024:+.1f} KiB traced, "
        f"{memory['connections_left']:.0f} connections and {memory['timers_left']:.0f} timers left"
    )
    text += "\n" + echo_tail_check(columns) + relay_text
    print(text)
    if args.json:
        payload = {
            "sizes": sizes.__dict__,
            "columns": {column.name: column.values for column in columns},
            "memory": memory,
            "families": families,
            "relay": {
                row.condition: {
                    "linux_s": row.linux,
                    "linux_congestion_control": default,
                    "linux_cubic_s": row.linux_cubic,
                    "looming_s": row.looming,
                    "looming_cpu_s": row.looming_cpu,
                    "counters": row.counters,
                    "peer_counters": row.peer_counters,
                    "linux_cubic_counters": row.cubic_counters,
                    "looming_timeouts": row.looming_timeouts,
                    "peer_timeouts": row.peer_timeouts,
                    "linux_cubic_timeouts": row.cubic_timeouts,
                }
                for row in lossy
            },
            "notes": notes,
            "digest": hashlib.sha256(text.encode()).hexdigest()[:16],
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
