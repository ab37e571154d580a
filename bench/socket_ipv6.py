"""The host socket stack (``--net socket``) on IPv6 beside IPv4, and beside
a plain asyncio streams echo server (the peer) on the same families, in
alternating rounds.

    .venv/bin/python -P bench/socket_ipv6.py [--rounds N] [--megabytes M]

Each server is an echo server in its own process: looming's SocketStack
listening on 127.0.0.1, on ::1 and dual-stack on ``::`` (reached over
127.0.0.1, as an IPv4-mapped client), and asyncio.start_server on 127.0.0.1
and ::1. The client (this process, kernel sockets) measures bulk echo
throughput in MB/s (M megabytes through and back) and the 64-byte round trip
p50 in microseconds. Printed: the best of the rounds per row, the ratio
IPv6 / IPv4 for each server, and looming / asyncio per family.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (row name, server kind, listen host, connect host)
ROWS = [
    ("looming 127.0.0.1", "looming", "127.0.0.1", "127.0.0.1"),
    ("looming ::1", "looming", "::1", "::1"),
    ("looming :: (IPv4 client)", "looming", "::", "127.0.0.1"),
    ("asyncio 127.0.0.1", "asyncio", "127.0.0.1", "127.0.0.1"),
    ("asyncio ::1", "asyncio", "::1", "::1"),
    ("asyncio :: (IPv4 client)", "asyncio", "::", "127.0.0.1"),
]


async def serve_looming(host: str) -> None:
    from looming.devices.stack import TcpFlow
    from looming.unix.socket_stack import SocketStack

    async def echo(flow: TcpFlow) -> None:
        while data := await flow.read():
            await flow.write(data)

    stack = SocketStack(host)
    listener = await stack.tcp.listen(0, echo)
    print(listener.port, flush=True)
    await asyncio.Event().wait()


async def serve_asyncio(host: str) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.set_write_buffer_limits(256 * 1024, 64 * 1024)
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    if host == "::":
        # Dual-stack, as looming's: asyncio's own bind would set IPV6_V6ONLY.
        sock = socket.socket(socket.AF_INET6)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
        server = await asyncio.start_server(echo, sock=sock)
    else:
        server = await asyncio.start_server(echo, host, 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def connect(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_connection((host, port), timeout=30)
    assert sock.family == family
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def bulk(host: str, port: int, size: int) -> float:
    """MB/s of ``size`` bytes sent and echoed back."""
    sock = connect(host, port)
    block = b"x" * 65536

    def send() -> None:
        left = size
        while left > 0:
            left -= sock.send(block[: min(left, len(block))])
        sock.shutdown(socket.SHUT_WR)

    start = time.perf_counter()
    sender = threading.Thread(target=send)
    sender.start()
    received = 0
    while chunk := sock.recv(262144):
        received += len(chunk)
    elapsed = time.perf_counter() - start
    sender.join()
    sock.close()
    assert received == size, (received, size)
    return size / elapsed / 1e6


def echo_p50(host: str, port: int, count: int = 2000) -> float:
    """Median 64-byte round trip in microseconds."""
    sock = connect(host, port)
    message = b"p" * 64
    times = []
    for _ in range(count):
        start = time.perf_counter()
        sock.sendall(message)
        got = 0
        while got < len(message):
            got += len(sock.recv(64 - got))
        times.append(time.perf_counter() - start)
    sock.close()
    return statistics.median(times) * 1e6


def measure(kind: str, listen: str, target: str, size: int) -> tuple[float, float]:
    server = subprocess.Popen(
        [sys.executable, "-P", __file__, "--serve", kind, listen],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        return bulk(target, port, size), echo_p50(target, port)
    finally:
        server.terminate()
        server.wait(timeout=10)


def report(results: dict[str, list[tuple[float, float]]]) -> None:
    best = {
        name: (max(r[0] for r in rows), min(r[1] for r in rows)) for name, rows in results.items()
    }
    print(f"{'server':<28}{'bulk MB/s':>12}{'echo p50 us':>14}")
    for name, (mbps, p50) in best.items():
        print(f"{name:<28}{mbps:>12.1f}{p50:>14.1f}")
    print()
    pairs = [
        ("looming IPv6/IPv4", "looming ::1", "looming 127.0.0.1"),
        ("looming dual-stack/IPv4", "looming :: (IPv4 client)", "looming 127.0.0.1"),
        ("asyncio IPv6/IPv4", "asyncio ::1", "asyncio 127.0.0.1"),
        ("asyncio dual-stack/IPv4", "asyncio :: (IPv4 client)", "asyncio 127.0.0.1"),
        ("looming/asyncio IPv4", "looming 127.0.0.1", "asyncio 127.0.0.1"),
        ("looming/asyncio IPv6", "looming ::1", "asyncio ::1"),
        ("looming/asyncio dual-stack", "looming :: (IPv4 client)", "asyncio :: (IPv4 client)"),
    ]
    print(f"{'ratio':<28}{'bulk':>12}{'echo p50':>14}")
    for label, a, b in pairs:
        print(f"{label:<28}{best[a][0] / best[b][0]:>12.2f}{best[a][1] / best[b][1]:>14.2f}")
    print(f"\npython {platform.python_version()}, kernel {platform.release()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=128)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "HOST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        sys.path.insert(0, str(REPO / "src"))
        kind, host = args.serve
        asyncio.run(serve_looming(host) if kind == "looming" else serve_asyncio(host))
        return
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in ROWS}
    for round_number in range(args.rounds):
        # ABAB: every row once per round, the order reversed every other round.
        order = ROWS if round_number % 2 == 0 else list(reversed(ROWS))
        for name, kind, listen, target in order:
            results[name].append(measure(kind, listen, target, args.megabytes * 1_000_000))
            print(f"[bench] round {round_number + 1}: {name} done", file=sys.stderr, flush=True)
    report(results)


if __name__ == "__main__":
    main()
