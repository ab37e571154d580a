"""looming's direct stack on a hostile network, beside Linux in the same run.

Run as root (namespaces, TAPs and veth pairs named ``lm...``, removed at the
end):

    .venv/bin/python bench/tcp_hostile.py [--quick]

Sections:

* SYN flood from unresolvable sources: the worst round trip of an echo
  connection (64 bytes every 2 ms, measured by a Linux client) before and
  while 5,000 SYNs from 5,000 unused on-link addresses arrive, paced (5,000
  per second) and in one burst. looming: the server is looming over TAP.
  Linux: the server is Linux in another namespace over veth, same flood.
* Floods of strays (tests/net/test_flood.py's FLOOD): stray ACKs to the echo
  port, datagrams to a closed port, 8-byte fragments and 1,480-byte first
  fragments from 5,000 spoofed on-link sources at 100,000 frames a second
  for 1.5 s, while the same probe measures; looming over TAP, Linux over
  veth, rounds interleaved.
* One-byte segments: a Linux client writes one byte at a time (TCP_NODELAY)
  to a server that never reads, for 3 s: the memory the server's connection
  holds, against its window. looming: its own accounting and tracemalloc.
  Linux: ``ss -tm``'s rmem_alloc of the server socket. (The writer's
  namespace has autocorking off, so each write leaves as its own segment
  while the window is open.)
* Bulk echo through ``looming run`` as a user starts it (the examples/echo
  unikernel, configured with ``--net direct``), with ``--offload true`` and
  ``--offload false``, rounds interleaved ABAB; Linux: the same client
  against a Linux echo server (Python, threads) over veth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Interface
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.direct.unikernel import build_direct, namespace, running_direct  # noqa: E402
from tests.net.hostile import ECHO_PROBE, SYN_FLOOD  # noqa: E402
from tests.net.kernel import kernel_peer_namespace, sh, unique_suffix  # noqa: E402
from tests.net.test_flood import FLOOD, KINDS, RATE, SECONDS  # noqa: E402

from looming.devices.stack import TcpFlow  # noqa: E402
from looming.net.stack import DirectStack  # noqa: E402


def progress(message: str) -> None:
    print(f"[tcp_hostile] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- Linux over veth


@contextmanager
def veth_pair() -> Iterator[tuple[str, str, str]]:
    """Namespaces A (10.77.0.1/16, the clients) and B (10.77.0.2/16, the
    Linux server) joined by a veth pair; yields (A, B, A's interface)."""
    suffix = unique_suffix()
    a, b = f"lmha{suffix}", f"lmhb{suffix}"
    va, vb = f"lmhva{suffix}", f"lmhvb{suffix}"
    sh("ip", "netns", "add", a)
    sh("ip", "netns", "add", b)
    try:
        sh("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
        sh("ip", "link", "set", va, "netns", a)
        sh("ip", "link", "set", vb, "netns", b)
        for ns, dev, address in ((a, va, "10.77.0.1/16"), (b, vb, "10.77.0.2/16")):
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", address, "dev", dev)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
        yield a, b, va
    finally:
        sh("ip", "netns", "del", a, check=False)
        sh("ip", "netns", "del", b, check=False)


def netns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def interface_mac(ns: str, dev: str) -> str:
    out = subprocess.run(netns(ns, "ip", "-o", "link", "show", dev), capture_output=True, text=True)
    match = re.search(r"link/ether ([0-9a-f:]{17})", out.stdout)
    assert match is not None, out.stdout
    return match.group(1).replace(":", "")


LINUX_ECHO = r"""
import socket, sys, threading
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((sys.argv[1], int(sys.argv[2])))
listener.listen(128)
print("listening", flush=True)
def serve(conn):
    with conn:
        while data := conn.recv(262144):
            conn.sendall(data)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

# A server that accepts and never reads (the one-byte section).
LINUX_HOARDER = r"""
import socket, sys, time
listener = socket.socket()
listener.bind((sys.argv[1], int(sys.argv[2])))
listener.listen(4)
print("listening", flush=True)
conn, _ = listener.accept()
time.sleep(3600)
"""

# Write one byte at a time for SECONDS; print how many were accepted.
ONE_BYTE_WRITER = r"""
import socket, sys, time
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])))
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
conn.setblocking(False)
end, sent = time.monotonic() + float(sys.argv[3]), 0
while time.monotonic() < end:
    try:
        sent += conn.send(b"x")
    except BlockingIOError:
        time.sleep(0.001)
print(sent, flush=True)
"""

# Send SIZE bytes to the echo server while reading them back; print MB/s.
BULK_CLIENT = r"""
import socket, sys, threading, time
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conn = socket.create_connection((host, port))
block = b"b" * 65536
started = time.monotonic()
def send():
    left = size
    while left:
        left -= conn.send(block[: min(left, len(block))])
    conn.shutdown(socket.SHUT_WR)
threading.Thread(target=send, daemon=True).start()
got = 0
while chunk := conn.recv(1 << 20):
    got += len(chunk)
elapsed = time.monotonic() - started
assert got == size, (got, size)
print(round(size / elapsed / 1e6, 2), flush=True)
"""


async def start(argv: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


# ---------------------------------------------------------------- SYN flood


async def flood_and_probe(
    server_ns_argv: list[str], mac: str, iface: str, burst: int
) -> dict[str, float]:
    """Probe 10.77.0.2:7 from ``server_ns_argv`` (the namespace prefix of
    the client side) while the flood leaves on ``iface`` for ``mac``."""
    python = sys.executable
    flood = await start(
        [*server_ns_argv, python, "-c", SYN_FLOOD, iface, mac, "10.77.0.2", "7", "5000", str(burst)]
    )
    probe = await start([*server_ns_argv, python, "-c", ECHO_PROBE, "10.77.0.2", "7", "1.0", "2.0"])
    assert flood.stdout and flood.stdin and probe.stdout and probe.stdin
    assert (await asyncio.wait_for(flood.stdout.readline(), 60)).strip() == b"ready"
    assert (await asyncio.wait_for(probe.stdout.readline(), 10)).strip() == b"connected"
    probe.stdin.write(b"go\n")
    assert (await asyncio.wait_for(probe.stdout.readline(), 10)).strip() == b"quiet"
    flood.stdin.write(b"go\n")
    sent = float((await asyncio.wait_for(flood.stdout.readline(), 60)).split()[1])
    report = json.loads(await asyncio.wait_for(probe.stdout.readline(), 30))
    await flood.wait()
    await probe.wait()
    report["flood_s"] = sent
    return report


async def echo(flow: TcpFlow) -> None:
    while data := await flow.read():
        await flow.write(data)


def looming_flood(burst: int) -> dict[str, float]:
    with kernel_peer_namespace() as peer:

        async def body(stack: DirectStack) -> dict[str, float]:
            await stack.tcp.listen(7, echo)
            report = await flood_and_probe(
                peer.netns(), stack.ethernet.mac.hex(), peer.tap_name, burst
            )
            counters = stack.counters()
            report["syns_seen"] = counters["tcp.segments_in"] - report["rounds"]
            started = time.monotonic()
            await stack.disconnect()
            report["shutdown_s"] = round(time.monotonic() - started, 3)
            return report

        async def main() -> dict[str, float]:
            stack = await peer.connect_stack(address=IPv4Interface("10.77.0.2/16"))
            return await body(stack)

        return asyncio.run(main())


def linux_flood(burst: int) -> dict[str, float]:
    with veth_pair() as (a, b, va):

        async def main() -> dict[str, float]:
            server = await start(netns(b, sys.executable, "-c", LINUX_ECHO, "10.77.0.2", "7"))
            assert server.stdout is not None
            await server.stdout.readline()
            vb = va.replace("lmhva", "lmhvb")
            mac = interface_mac(b, vb)
            try:
                return await flood_and_probe(netns(a), mac, va, burst)
            finally:
                server.kill()
                await server.wait()

        return asyncio.run(main())


# ---------------------------------------------------------------- floods of strays


async def strays_and_probe(server_ns_argv: list[str], mac: str, iface: str, kind: str) -> str:
    """Probe 10.77.0.2:7 while FLOOD sends ``kind`` on ``iface`` for
    ``mac``: a line of the table."""
    python = sys.executable
    port = str(KINDS[kind][1])
    args = [iface, mac, "10.77.0.2", port, kind, str(RATE), str(SECONDS)]
    flood = await start([*server_ns_argv, python, "-c", FLOOD, *args])
    probe = await start(
        [*server_ns_argv, python, "-c", ECHO_PROBE, "10.77.0.2", "7", str(SECONDS), str(SECONDS)]
    )
    assert flood.stdout and flood.stdin and probe.stdout and probe.stdin
    assert (await asyncio.wait_for(flood.stdout.readline(), 60)).strip() == b"ready"
    assert (await asyncio.wait_for(probe.stdout.readline(), 10)).strip() == b"connected"
    probe.stdin.write(b"go\n")
    assert (await asyncio.wait_for(probe.stdout.readline(), 10)).strip() == b"quiet"
    flood.stdin.write(b"go\n")
    _, took, frames = (await asyncio.wait_for(flood.stdout.readline(), 60)).split()
    r = json.loads(await asyncio.wait_for(probe.stdout.readline(), 30))
    await flood.wait()
    await probe.wait()
    return (
        f"{r['quiet_worst_ms']:7.1f} {r['worst_ms']:7.1f} {r['rounds']:7d} "
        f"{int(frames) / float(took) / 1000:7.1f}k/s"
    )


def looming_strays(kind: str) -> str:
    with kernel_peer_namespace() as peer:

        async def main() -> str:
            stack = await peer.connect_stack(address=IPv4Interface("10.77.0.2/16"))
            try:
                await stack.tcp.listen(7, echo)
                line = await strays_and_probe(
                    peer.netns(), stack.ethernet.mac.hex(), peer.tap_name, kind
                )
                policed = stack.counters().get(KINDS[kind][0], 0)
                return f"{line}  {KINDS[kind][0].split('.')[1]} {policed}"
            finally:
                await stack.disconnect()

        return asyncio.run(main())


def linux_strays(kind: str) -> str:
    with veth_pair() as (a, b, va):

        async def main() -> str:
            server = await start(netns(b, sys.executable, "-c", LINUX_ECHO, "10.77.0.2", "7"))
            assert server.stdout is not None
            await server.stdout.readline()
            mac = interface_mac(b, va.replace("lmhva", "lmhvb"))
            try:
                return await strays_and_probe(netns(a), mac, va, kind)
            finally:
                server.kill()
                await server.wait()

        return asyncio.run(main())


def print_strays(rounds: int) -> None:
    print(f"\n## Floods of strays at {RATE:,} frames/s for {SECONDS} s: worst echo round trip (ms)")
    print(f"{'flood':<10} {'peer':<8} {'quiet':>7} {'flood':>7} {'rounds':>7} {'rate':>9}")
    for kind in KINDS:
        for _ in range(rounds):
            for name, run in (("looming", looming_strays), ("linux", linux_strays)):
                progress(f"strays {kind} {name}")
                print(f"{kind:<10} {name:<8} {run(kind)}", flush=True)


# ---------------------------------------------------------------- one-byte segments


def looming_one_byte(seconds: float) -> dict[str, float]:
    with kernel_peer_namespace() as peer:

        async def body(stack: DirectStack) -> dict[str, float]:
            held: list[TcpFlow] = []

            async def hoard(flow: TcpFlow) -> None:
                held.append(flow)
                await asyncio.sleep(3600)

            await stack.tcp.listen(7300, hoard)
            # Each write its own segment: no Nagle (the writer sets
            # TCP_NODELAY) and no autocorking.
            await peer.exec_output("sysctl", "-qw", "net.ipv4.tcp_autocorking=0")
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            writer = await start(
                peer.netns(sys.executable, "-c", ONE_BYTE_WRITER, "10.77.0.2", "7300", str(seconds))
            )
            assert writer.stdout is not None
            sent = int((await writer.stdout.readline()).strip())
            grown = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            counters = stack.counters()
            window = stack.tcp.config.receive_buffer
            return {
                "window": window,
                "bytes_accepted": sent,
                "segments_in": counters["tcp.segments_in"],
                "charged": counters["tcp.receive_memory"],
                "tracemalloc_growth": grown,
                "charged_per_window": round(counters["tcp.receive_memory"] / window, 2),
                "traced_per_window": round(grown / window, 2),
            }

        return peer.run(body)


def core_one_byte(window: int) -> dict[str, float]:
    """Exactly one-byte segments (which no Linux sender produces in bulk),
    fed to one connection's core for two windows' worth: what it holds."""
    from dataclasses import replace

    from tests.tcp.script import PLAIN, established
    from tests.tcp.test_receive_memory import tiny, traced

    script = established(replace(PLAIN, receive_buffer=window, window_scaling=True))

    def flood() -> None:
        for seq in range(2 * window):
            tiny(script, seq)

    grown = traced(flood)
    buffer = script.conn.receive_buffer
    return {
        "window": window,
        "bytes_held": len(buffer.ready),
        "charged_per_window": round(buffer.charged / window, 2),
        "traced_per_window": round(grown / window, 2),
    }


def linux_one_byte(seconds: float) -> dict[str, float]:
    with veth_pair() as (a, b, _):
        hoarder = subprocess.Popen(
            netns(b, sys.executable, "-c", LINUX_HOARDER, "10.77.0.2", "7300"),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert hoarder.stdout is not None
            hoarder.stdout.readline()
            sh(*netns(a, "sysctl", "-qw", "net.ipv4.tcp_autocorking=0"))
            sent = subprocess.run(
                netns(a, sys.executable, "-c", ONE_BYTE_WRITER, "10.77.0.2", "7300", str(seconds)),
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            ss = subprocess.run(
                netns(b, "ss", "-tmni", "state", "established", "sport", "= :7300"),
                capture_output=True,
                text=True,
            ).stdout
            rmem = re.search(r"skmem:\(r(\d+),rb(\d+)", ss)
            segs = re.search(r"segs_in:(\d+)", ss)
            window = re.search(r"rcv_space:(\d+)", ss)
            return {
                "bytes_accepted": int(sent),
                "segments_in": int(segs.group(1)) if segs else -1,
                "rmem_alloc": int(rmem.group(1)) if rmem else -1,
                "rcvbuf": int(rmem.group(2)) if rmem else -1,
                "rcv_space": int(window.group(1)) if window else -1,
            }
        finally:
            hoarder.kill()
            hoarder.wait()


# ---------------------------------------------------------------- bulk through looming run


def looming_run_bulk(app: Path, offload: bool, size: int) -> float:
    with (
        namespace() as ns,
        running_direct(
            app,
            ns,
            "--ipv4",
            "10.79.0.2/24",
            "--offload",
            "true" if offload else "false",
            ready=r"echo listening on port",
        ),
    ):
        out = ns.run(sys.executable, "-c", BULK_CLIENT, "10.79.0.2", "7777", str(size))
        return float(out.strip())


def linux_bulk(size: int) -> float:
    with veth_pair() as (a, b, _):
        server = subprocess.Popen(
            netns(b, sys.executable, "-c", LINUX_ECHO, "10.77.0.2", "7777"),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            server.stdout.readline()
            out = subprocess.run(
                netns(a, sys.executable, "-c", BULK_CLIENT, "10.77.0.2", "7777", str(size)),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            return float(out.strip())
        finally:
            server.kill()
            server.wait()


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller transfers")
    parser.add_argument(
        "--only-strays", action="store_true", help="run only the floods of strays section"
    )
    args = parser.parse_args()
    rounds = 1 if args.quick else 2
    size = (10 if args.quick else 20) * 1024 * 1024
    kernel = platform.release()
    print(f"# Python {platform.python_version()}, Linux {kernel}")
    print_strays(rounds)
    if args.only_strays:
        return 0

    print("\n## SYN flood from 5,000 unresolvable sources: worst echo round trip (ms)")
    print(f"{'flood':<22} {'peer':<8} {'quiet':>7} {'flood':>7} {'rounds':>7} {'sent in':>8}")
    for label, burst in (("paced 5,000/s", 25), ("one burst", 5000)):
        for _ in range(rounds):
            for name, run in (("looming", looming_flood), ("linux", linux_flood)):
                progress(f"flood {label} {name}")
                r = run(burst)
                extra = f"  shutdown {r['shutdown_s']} s" if "shutdown_s" in r else ""
                print(
                    f"{label:<22} {name:<8} {r['quiet_worst_ms']:7.1f} {r['worst_ms']:7.1f} "
                    f"{r['rounds']:7d} {r['flood_s']:7.2f}s{extra}",
                    flush=True,
                )

    print("\n## One-byte segments for 3 s to a server that never reads")
    progress("one-byte looming")
    ours = looming_one_byte(3.0)
    progress("one-byte linux")
    theirs = linux_one_byte(3.0)
    print("(Linux writers coalesce even with TCP_NODELAY and autocorking off:)")
    print(f"looming: {json.dumps(ours)}")
    print(f"linux:   {json.dumps(theirs)}")
    progress("one-byte core")
    print(f"looming core, true one-byte segments: {json.dumps(core_one_byte(65535))}")

    print(f"\n## Bulk echo of {size >> 20} MB through `looming run` (MB/s each way)")
    with tempfile.TemporaryDirectory() as tmp:
        progress("building examples/echo with --net direct")
        app = build_direct("echo", Path(tmp))
        results: dict[str, list[float]] = {"offload on": [], "offload off": [], "linux": []}
        for _ in range(rounds):
            for label in results:
                progress(f"bulk {label}")
                if label == "linux":
                    results[label].append(linux_bulk(size))
                else:
                    results[label].append(looming_run_bulk(app, label == "offload on", size))
        for label, values in results.items():
            print(f"{label:<12} {median(values):8.1f} MB/s   rounds {values}")
        on, off, linux = (median(v) for v in results.values())
        print(f"ratios: offload on / off {on / off:.2f}x; linux / offload on {linux / on:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
