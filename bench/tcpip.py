"""Benchmark looming's TCP/IP stack (``--net direct``) beside its peers.

Run as root (it creates network namespaces, a TAP and a veth pair, all named
``lmb...`` and removed at the end):

    .venv/bin/python bench/tcpip.py [--quick] [--json PATH]

Sections, each with looming and its peer measured in the same run:

* Internet checksum throughput: looming vs dpkt's ``in_cksum`` (and a plain
  word-by-word Python loop for scale).
* Frame parse and emit (Ethernet + IPv4 + UDP, checksums verified by looming,
  not by dpkt): looming vs dpkt.
* UDP echo round trips, 64-byte payloads: looming over TAP to a kernel echo
  server vs the same echo server over the kernel's loopback.
* Flood ping RTT: the kernel pinging looming over TAP vs the kernel pinging
  another namespace's kernel over veth.
* TCP bulk transfer: looming -> kernel and kernel -> looming over TAP (plain,
  and with virtio-net headers so the kernel hands over TSO segments) vs
  kernel -> kernel over veth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dpkt  # noqa: E402
from tests.net.kernel import KernelPeer, kernel_peer_namespace, sh, unique_suffix  # noqa: E402

from looming.devices.net import MacAddress  # noqa: E402
from looming.net.stack import DirectStack  # noqa: E402
from looming.net.wire import ethernet, ipv4, udp  # noqa: E402
from looming.net.wire.checksum import internet_checksum  # noqa: E402


def progress(message: str) -> None:
    print(f"[tcpip] {message}", file=sys.stderr, flush=True)


@dataclass
class Row:
    section: str
    metric: str
    looming: float
    peer_name: str
    peer: float
    unit: str
    higher_is_better: bool = True

    @property
    def ratio(self) -> float:
        """looming relative to the peer, >1 means looming is better."""
        if self.looming == 0 or self.peer == 0:
            return 0.0
        return self.looming / self.peer if self.higher_is_better else self.peer / self.looming


def rate(function: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``function`` over about ``seconds``."""
    count = 0
    batch = 1
    started = time.perf_counter()
    while True:
        for _ in range(batch):
            function()
        count += batch
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return count / elapsed
        batch = min(batch * 2, 4096)


# -- in-process sections ----------------------------------------------------


def naive_checksum(data: bytes) -> int:
    total = 0
    for i in range(0, len(data) - 1, 2):
        total += (data[i] << 8) | data[i + 1]
    while total > 0xFFFF:
        total = (total >> 16) + (total & 0xFFFF)
    return ~total & 0xFFFF


def bench_checksum(quick: bool) -> list[Row]:
    seconds = 0.3 if quick else 1.0
    rows = []
    for size in (64, 1500, 65536):
        data = bytes((i * 31) & 0xFF for i in range(size))
        assert internet_checksum(data) == dpkt.in_cksum(data) == naive_checksum(data)
        progress(f"checksum {size} B")
        ours = rate(lambda d=data: internet_checksum(d), seconds) * size / 1e6
        theirs = rate(lambda d=data: dpkt.in_cksum(d), seconds) * size / 1e6
        naive = rate(lambda d=data: naive_checksum(d), seconds / 3) * size / 1e6
        rows.append(Row("checksum", f"{size} B", ours, "dpkt.in_cksum", theirs, "MB/s"))
        rows.append(Row("checksum", f"{size} B", ours, "Python word loop", naive, "MB/s"))
    return rows


def sample_frame(size: int) -> bytes:
    source, destination = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    datagram = udp.emit(udp.UdpHeader(4000, 53), bytes(size), source, destination)
    packet = ipv4.emit(ipv4.Ipv4Header(source, destination, 17, identification=1), datagram)
    header = ethernet.EthernetHeader(
        MacAddress("02:00:00:00:00:02"), MacAddress("02:00:00:00:00:01"), 0x0800
    )
    return ethernet.emit(header, packet)


def looming_parse(frame: bytes) -> bytes:
    _, packet = ethernet.parse(frame)
    header, datagram = ipv4.parse(packet)
    _, payload = udp.parse(datagram, header.source, header.destination)
    return bytes(payload)


def dpkt_parse(frame: bytes) -> bytes:
    parsed = dpkt.ethernet.Ethernet(frame)
    return bytes(parsed.data.data.data)  # type: ignore[union-attr]


def looming_emit(payload: bytes) -> bytes:
    source, destination = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    datagram = udp.emit(udp.UdpHeader(4000, 53), payload, source, destination)
    packet = ipv4.emit(ipv4.Ipv4Header(source, destination, 17, identification=1), datagram)
    header = ethernet.EthernetHeader(
        MacAddress("02:00:00:00:00:02"), MacAddress("02:00:00:00:00:01"), 0x0800
    )
    return ethernet.emit(header, packet)


def dpkt_emit(payload: bytes) -> bytes:
    datagram = dpkt.udp.UDP(sport=4000, dport=53, data=payload)
    datagram.ulen = 8 + len(payload)
    packet = dpkt.ip.IP(
        src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), p=17, id=1, data=datagram
    )
    frame = dpkt.ethernet.Ethernet(
        dst=b"\x02\x00\x00\x00\x00\x02", src=b"\x02\x00\x00\x00\x00\x01", type=0x0800, data=packet
    )
    return bytes(frame)  # dpkt fills in IP and UDP checksums here


def bench_frames(quick: bool) -> list[Row]:
    seconds = 0.3 if quick else 1.0
    rows = []
    for size in (64, 1472):
        frame = sample_frame(size)
        payload = bytes(size)
        assert looming_parse(frame) == dpkt_parse(frame) == payload
        assert looming_parse(dpkt_emit(payload)) == payload
        progress(f"frame parse/emit {size} B payload")
        rows.append(
            Row(
                "frames",
                f"parse eth+ip+udp {size} B",
                rate(lambda f=frame: looming_parse(f), seconds) / 1e3,
                "dpkt",
                rate(lambda f=frame: dpkt_parse(f), seconds) / 1e3,
                "k frames/s",
            )
        )
        rows.append(
            Row(
                "frames",
                f"emit eth+ip+udp {size} B",
                rate(lambda p=payload: looming_emit(p), seconds) / 1e3,
                "dpkt",
                rate(lambda p=payload: dpkt_emit(p), seconds) / 1e3,
                "k frames/s",
            )
        )
    return rows


# -- kernel peers -------------------------------------------------------------

UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(65535)
    s.sendto(d, a)
"""

TCP_SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()
print("ready", flush=True)
c, _ = s.accept(); n = 0
buf = bytearray(1 << 18)
while True:
    k = c.recv_into(buf)
    if not k: break
    n += k
c.sendall(str(n).encode()); c.close()
"""

TCP_SOURCE = """
import socket, sys, time
n = int(sys.argv[3]); chunk = bytes(1 << 16)
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
t = time.perf_counter(); sent = 0
while sent < n:
    sent += c.send(chunk[: n - sent])
c.shutdown(socket.SHUT_WR)
ack = c.recv(100)
print(time.perf_counter() - t, ack.decode(), flush=True)
"""


async def ready(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 10)
    if line.strip() != b"ready":
        raise RuntimeError(f"peer did not start: {line!r}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def udp_echo_looming(peer: KernelPeer, stack: DirectStack, count: int) -> list[float]:
    server = await peer.python(UDP_ECHO, str(peer.peer_address), "5000")
    try:
        await ready(server)
        replies: asyncio.Queue[bytes] = asyncio.Queue()
        binding = await stack.udp.bind(0, lambda d: replies.put_nowait(d.data))
        payload = bytes(64)
        times = []
        for i in range(count + 20):
            started = time.perf_counter()
            await binding.send(peer.peer_address, 5000, payload)
            await asyncio.wait_for(replies.get(), 2)
            if i >= 20:  # the first ones include ARP and warm-up
                times.append(time.perf_counter() - started)
        await binding.close()
        return times
    finally:
        server.kill()
        await server.wait()


async def udp_echo_kernel_loopback(count: int) -> list[float]:
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", UDP_ECHO, "127.0.0.1", "0", stdout=subprocess.PIPE
    )
    # Port 0 cannot be reported back simply: bind a fixed free port instead.
    server.kill()
    await server.wait()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", UDP_ECHO, "127.0.0.1", str(port), stdout=subprocess.PIPE
    )
    try:
        await ready(server)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        payload = bytes(64)
        times = []
        for i in range(count + 20):
            started = time.perf_counter()
            await loop.sock_sendto(sock, payload, ("127.0.0.1", port))
            await asyncio.wait_for(loop.sock_recv(sock, 100), 2)
            if i >= 20:
                times.append(time.perf_counter() - started)
        sock.close()
        return times
    finally:
        server.kill()
        await server.wait()


def flood_ping_rtt(output: str) -> float:
    match = re.search(r"= [\d.]+/([\d.]+)/", output)
    if match is None:
        raise RuntimeError(f"no RTT in ping output: {output}")
    return float(match.group(1)) * 1000  # microseconds


async def tcp_looming_to_kernel(peer: KernelPeer, stack: DirectStack, size: int) -> float:
    sink = await peer.python(TCP_SINK, str(peer.peer_address), "5001")
    await ready(sink)
    flow = await stack.tcp.connect(peer.peer_address, 5001)
    chunk = bytes(1 << 16)
    started = time.perf_counter()
    sent = 0
    while sent < size:
        piece = chunk[: size - sent]
        await flow.write(piece)
        sent += len(piece)
    await flow.shutdown()
    ack = b""
    while data := await flow.read():
        ack += data
    elapsed = time.perf_counter() - started
    await flow.close()
    await sink.wait()
    assert int(ack) == size, ack
    return size / elapsed / 1e6


async def tcp_kernel_to_looming(peer: KernelPeer, stack: DirectStack, size: int) -> float:
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def sink(flow: Any) -> None:
        received = 0
        while data := await flow.read():
            received += len(data)
        await flow.write(str(received).encode())
        await flow.close()
        done.set_result(received)

    listener = await stack.tcp.listen(5002, sink)
    out = await peer.exec_output(
        sys.executable, "-c", TCP_SOURCE, str(stack.addresses()[0].ip), "5002", str(size)
    )
    assert await asyncio.wait_for(done, 10) == size
    await listener.close()
    elapsed, ack = out.split()
    assert int(ack) == size
    return size / float(elapsed) / 1e6


def veth_pair_namespaces() -> tuple[str, str, str, str]:
    """Two namespaces joined by veth: (ns a, ns b, address a, address b)."""
    suffix = unique_suffix()
    a, b = f"lmbA{suffix}", f"lmbB{suffix}"
    sh("ip", "netns", "add", a)
    sh("ip", "netns", "add", b)
    sh(
        "ip",
        "link",
        "add",
        "lmbva" + suffix,
        "netns",
        a,
        "type",
        "veth",
        "peer",
        "name",
        "lmbvb" + suffix,
        "netns",
        b,
    )
    for ns, device, address in ((a, "lmbva", "10.78.0.1"), (b, "lmbvb", "10.78.0.2")):
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", device + suffix)
        sh("ip", "-n", ns, "link", "set", device + suffix, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    return a, b, "10.78.0.1", "10.78.0.2"


def kernel_to_kernel_tcp(a: str, b: str, address_b: str, size: int) -> float:
    sink = subprocess.Popen(
        ["ip", "netns", "exec", b, sys.executable, "-c", TCP_SINK, address_b, "5003"],
        stdout=subprocess.PIPE,
    )
    try:
        assert sink.stdout is not None
        assert sink.stdout.readline().strip() == b"ready"
        out = sh(
            "ip",
            "netns",
            "exec",
            a,
            sys.executable,
            "-c",
            TCP_SOURCE,
            address_b,
            "5003",
            str(size),
            timeout=120,
        ).stdout
    finally:
        sink.wait(timeout=30)
    elapsed, ack = out.split()
    assert int(ack) == size
    return size / float(elapsed) / 1e6


async def udp_echo_rows(peer: KernelPeer, stack: DirectStack, count: int) -> list[Row]:
    """64-byte UDP echo p50 and p99: looming over TAP vs kernel loopback."""
    progress(f"UDP echo x{count}: looming over TAP")
    ours = await udp_echo_looming(peer, stack, count)
    progress(f"UDP echo x{count}: kernel loopback")
    theirs = await udp_echo_kernel_loopback(count)
    return [
        Row(
            "udp echo 64 B",
            name,
            percentile(ours, fraction) * 1e6,
            "kernel loopback",
            percentile(theirs, fraction) * 1e6,
            "us",
            higher_is_better=False,
        )
        for name, fraction in (("p50", 0.5), ("p99", 0.99))
    ]


async def flood_ping_row(
    peer: KernelPeer, stack: DirectStack, namespace: str, address_b: str, count: str
) -> Row:
    """Flood ping average RTT: the kernel pinging looming over TAP vs the
    kernel in ``namespace`` pinging ``address_b`` over veth."""
    progress("flood ping: kernel -> looming over TAP")
    out = await peer.exec_output("ping", "-q", "-f", "-c", count, str(stack.addresses()[0].ip))
    looming_rtt = flood_ping_rtt(out)
    progress("flood ping: kernel -> kernel over veth")
    out = sh("ip", "netns", "exec", namespace, "ping", "-q", "-f", "-c", count, address_b).stdout
    return Row(
        "flood ping",
        "avg rtt",
        looming_rtt,
        "kernel over veth",
        flood_ping_rtt(out),
        "us",
        higher_is_better=False,
    )


async def tcp_bulk_rows(
    peer: KernelPeer, stack: DirectStack, size: int, kernel_rate: float, *, vnet: bool
) -> list[Row]:
    """TCP bulk both ways between looming and the kernel over TAP (with
    virtio-net headers when ``vnet``), against kernel -> kernel over veth."""
    over = "TAP+vnet" if vnet else "TAP"
    progress(f"TCP bulk {size >> 20} MB: looming -> kernel over {over}")
    out_rate = await tcp_looming_to_kernel(peer, stack, size)
    progress(f"TCP bulk {size >> 20} MB: kernel -> looming over {over}")
    in_rate = await tcp_kernel_to_looming(peer, stack, size)
    section = "tcp bulk vnet" if vnet else "tcp bulk"
    peer_name = "kernel -> kernel (veth)"
    return [
        Row(section, "looming -> kernel", out_rate, peer_name, kernel_rate, "MB/s"),
        Row(section, "kernel -> looming", in_rate, peer_name, kernel_rate, "MB/s"),
    ]


def bench_kernel(quick: bool) -> list[Row]:
    rows: list[Row] = []
    echo_count = 300 if quick else 3000
    ping_count = "300" if quick else "3000"
    tcp_size = (4 if quick else 20) * 1024 * 1024
    a, b, _, address_b = veth_pair_namespaces()
    try:
        progress(f"TCP bulk {tcp_size >> 20} MB: kernel -> kernel over veth")
        kernel_rate = kernel_to_kernel_tcp(a, b, address_b, tcp_size)
        with kernel_peer_namespace() as peer:

            async def body(stack: DirectStack) -> None:
                await stack.ping(peer.peer_address)
                rows.extend(await udp_echo_rows(peer, stack, echo_count))
                rows.append(await flood_ping_row(peer, stack, a, address_b, ping_count))
                rows.extend(await tcp_bulk_rows(peer, stack, tcp_size, kernel_rate, vnet=False))

            peer.run(body)

        with kernel_peer_namespace() as peer:

            async def offloaded(stack: DirectStack) -> None:
                await stack.ping(peer.peer_address)
                rows.extend(await tcp_bulk_rows(peer, stack, tcp_size, kernel_rate, vnet=True))

            peer.run(offloaded, offload=True)
    finally:
        sh("ip", "netns", "del", a, check=False)
        sh("ip", "netns", "del", b, check=False)
    return rows


def print_table(rows: list[Row]) -> None:
    header = f"{'section':<16} {'metric':<26} {'looming':>11} {'peer':>11} {'unit':<10} "
    header += f"{'ratio':>7}  peer"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.section:<16} {row.metric:<26} {row.looming:>11.2f} {row.peer:>11.2f} "
            f"{row.unit:<10} {row.ratio:>7.3f}  {row.peer_name}"
        )
    print("ratio: looming relative to the peer, above 1 means looming does better")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--no-kernel", action="store_true", help="skip the sections that need root")
    args = parser.parse_args()
    rows = bench_checksum(args.quick) + bench_frames(args.quick)
    if not args.no_kernel:
        if os.geteuid() != 0:
            print("the kernel sections need root (or pass --no-kernel)", file=sys.stderr)
            return 2
        rows += bench_kernel(args.quick)
    print_table(rows)
    if args.json:
        data = [asdict(row) | {"ratio": row.ratio} for row in rows]
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
