"""HTTP/2 and WebSocket attacks on looming beside hypercorn, in one run.

    .venv/bin/python bench/http2_hostile.py [--quick] [--rounds N] [--attacks A,B]

The same ASGI application runs under looming (HttpServer on host sockets,
asyncio) and hypercorn (asyncio worker), each in its own process. In every
round, for each server in turn (ABAB), an ordinary HTTP/1.1 keep-alive client
times its requests while one attack runs against the same server:

  none             no attack (the baseline)
  rapid-reset      HEADERS + RST_STREAM pairs, 400 per connection, in a loop
                   (CVE-2023-44487)
  ping-flood       5,000 PINGs per connection, in a loop
  continuation     HEADERS then 16 KiB CONTINUATION frames without END_HEADERS
                   (CVE-2024-27316 class), 4 MiB per connection, in a loop
  h2load-streams   h2load -c 2 -m 100: two connections keeping 100 streams
                   each in flight (fairness: many multiplexed streams)
  h2load-uploads   h2load -c 2 -m 8 -d (64 KiB): uploads the application
                   reads, as fast as they go (fairness: large DATA turns)
  over-limit       150 requests for a slow page opened at once on a
                   connection, 50 over the servers' limit of 100 (RFC 9113 section 5.1.2: refused
                   with RST_STREAM, or the connection ended), in a loop
  unread-upload    10 uploads on a connection to a page that never reads its
                   body, sent as fast as flow control lets, 2 s a connection:
                   what a server takes in is what it holds
  ws-ping-flood    a websocket sends 80,000 pings (and never reads), in a loop

Printed per server and attack: the ordinary client's p50 and p99 latency
and failed requests, the server's RSS before the attack and at its end,
and how the attacker's connections ended (GOAWAY codes seen, streams
refused); then looming/hypercorn ratios of the p99 and of the RSS growth.

Then, in each round and interleaved the same way, h2load's throughput on
the same application: GETs (``-c 4 -m 20``) and 64 KiB uploads the
application reads (``-c 2 -m 8``), with the looming/hypercorn ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import functools
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SERVERS = ("looming", "hypercorn")
ATTACKS = (
    "none",
    "rapid-reset",
    "ping-flood",
    "continuation",
    "h2load-streams",
    "h2load-uploads",
    "over-limit",
    "unread-upload",
    "ws-ping-flood",
)
LOADS = {
    "get": ["-c", "4", "-m", "20"],
    "upload-64k": ["-c", "2", "-m", "8", "-d", "{upload}"],
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    if scope["type"] != "http":
        return
    more = scope["method"] == "POST" and scope["path"] != "/ignore"
    while more:  # an upload is read
        more = (await receive()).get("more_body", False)
    if scope["path"] == "/slow":
        await asyncio.sleep(0.2)  # holds its stream a while
    if scope["path"] == "/ignore":
        await asyncio.sleep(5)  # does not read the upload
    headers = [(b"content-length", b"2"), (b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


def serve(kind: str, port: int) -> None:
    """Run ``app`` under ``kind`` on 127.0.0.1:``port`` until killed."""
    if kind == "hypercorn":
        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.keep_alive_max_requests = 2**31  # as looming: no cap (h2load's runs are long)
        asyncio.run(hypercorn_serve(app, config))  # type: ignore[arg-type]
        return
    from looming.http import AsgiAdapter, HttpServer
    from looming.unix.clock import UnixClock
    from looming.unix.socket_stack import SocketStack

    async def main() -> None:
        stack = await SocketStack.connect("127.0.0.1")
        server = HttpServer(AsgiAdapter(app), clock=UnixClock())
        await stack.tcp.listen(port, server.serve_flow)
        await asyncio.Event().wait()

    asyncio.run(main())


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
    return head + struct.pack(">I", stream_id) + payload


def header_block(path: str = "/") -> bytes:
    import h2.config
    import h2.connection

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    fields = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "x")]
    return bytes(conn.encoder.encode(fields))


def h2_payload(attack: str) -> bytes:
    block = header_block()
    if attack == "rapid-reset":
        return b"".join(
            frame(0x1, 0x5, 1 + 2 * i, block) + frame(0x3, 0, 1 + 2 * i, b"\0\0\0\x08")
            for i in range(400)
        )
    if attack == "ping-flood":
        return frame(0x6, 0, 0, b"12345678") * 5000
    if attack == "over-limit":
        slow = header_block("/slow")
        return b"".join(frame(0x1, 0x5, 1 + 2 * i, slow) for i in range(150))
    return frame(0x1, 0, 1, block) + frame(0x9, 0, 1, b"\0" * 16384) * 256


def how_it_ended(data: bytes) -> str:
    """The error code of the first GOAWAY in ``data`` (server frames), or
    "-", and how many streams were refused (RST_STREAM REFUSED_STREAM)."""
    code, refused = "-", 0
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if data[3] == 0x7 and len(data) >= 17 and code == "-":
            code = str(int.from_bytes(data[13:17], "big"))
        if data[3] == 0x3 and data[9 : 9 + length] == b"\0\0\0\x07":
            refused += 1
        data = data[9 + length :]
    return f"goaway {code}" + (f", {refused} refused" if refused else "")


def h2_attacker(port: int, attack: str, stop: threading.Event, outcomes: Counter[str]) -> None:
    payload = PREFACE + frame(0x4, 0, 0) + h2_payload(attack)
    while not stop.is_set():
        try:
            # A server that keeps the connection is left after 0.3 s, so
            # each server gets about as many attacks whether it closes or not.
            with socket.create_connection(("127.0.0.1", port), timeout=0.3) as sock:
                try:
                    sock.sendall(payload)
                except OSError:
                    pass
                received = b""
                try:
                    while chunk := sock.recv(65536):
                        received += chunk
                except OSError:
                    pass
                outcomes[how_it_ended(received)] += 1
        except OSError as error:
            outcomes[type(error).__name__] += 1


def upload_attacker(port: int, stop: threading.Event, outcomes: Counter[str]) -> None:
    """Uploads to a page that does not read them, as flow control allows;
    counts the KiB each connection got in within 2 s."""
    import h2.config
    import h2.connection
    import h2.exceptions

    fields = [(":method", "POST"), (":path", "/ignore"), (":scheme", "http"), (":authority", "x")]
    while not stop.is_set():
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sent, give_up = 0, time.monotonic() + 2
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.05) as sock:
                for stream_id in range(1, 21, 2):
                    conn.send_headers(stream_id, fields)
                while not stop.is_set() and time.monotonic() < give_up:
                    for stream_id in range(1, 21, 2):
                        room = min(conn.local_flow_control_window(stream_id), 16384)
                        if room:
                            conn.send_data(stream_id, b"u" * room)
                            sent += room
                    sock.sendall(conn.data_to_send())
                    try:
                        conn.receive_data(sock.recv(65536))
                    except TimeoutError:
                        pass
        except (OSError, h2.exceptions.ProtocolError) as error:
            outcomes[type(error).__name__] += 1
        outcomes[f"took in {sent >> 10} KiB"] += 1


def ws_attacker(port: int, stop: threading.Event, outcomes: Counter[str]) -> None:
    ping = bytes([0x89, 0x81]) + b"\0\0\0\0" + b"p"
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                key = base64.b64encode(os.urandom(16))
                sock.sendall(
                    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n"
                )
                sock.recv(4096)
                sock.sendall(ping * 80_000)
                outcomes["ws flood sent"] += 1
        except OSError as error:
            outcomes[type(error).__name__] += 1


@functools.cache
def upload_file() -> Path:
    """64 KiB of random bytes in a file (removed at exit), for h2load -d."""
    fd, name = tempfile.mkstemp(suffix=".bin")
    os.write(fd, os.urandom(64 * 1024))
    os.close(fd)
    atexit.register(os.unlink, name)
    return Path(name)


def start_attack(port: int, attack: str, outcomes: Counter[str]) -> Callable[[], None]:
    """Start ``attack`` on ``port``; the function that stops it."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    h2load: subprocess.Popen[bytes] | None = None
    if attack in ("h2load-streams", "h2load-uploads"):
        load = (
            ["-m", "100"] if attack == "h2load-streams" else ["-m", "8", "-d", str(upload_file())]
        )
        h2load = subprocess.Popen(
            ["h2load", "-c", "2", *load, "-D", "60", f"http://127.0.0.1:{port}/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    elif attack == "ws-ping-flood":
        threads.append(threading.Thread(target=ws_attacker, args=(port, stop, outcomes)))
    elif attack == "unread-upload":
        threads.append(threading.Thread(target=upload_attacker, args=(port, stop, outcomes)))
    elif attack != "none":
        threads += [
            threading.Thread(target=h2_attacker, args=(port, attack, stop, outcomes))
            for _ in range(2)
        ]
    for thread in threads:
        thread.daemon = True
        thread.start()

    def stopper() -> None:
        stop.set()
        if h2load is not None:
            h2load.terminate()
            h2load.wait()
        for thread in threads:
            thread.join(5)

    return stopper


def victim(port: int, count: int, budget: float = 20.0) -> tuple[list[float], int]:
    """Latencies of ``count`` HTTP/1.1 requests on one keep-alive connection
    (within ``budget`` seconds: a request not made in it counts as failed),
    and how many failed (2 s each at most)."""
    took: list[float] = []
    failed = 0
    give_up = time.monotonic() + budget
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    for _ in range(count):
        if time.monotonic() > give_up:
            failed += 1
            continue
        began = time.perf_counter()
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while not reply.endswith(b"ok"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                reply += chunk
        except OSError:
            failed += 1
            sock.close()
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                time.sleep(0.5)
            continue
        took.append(time.perf_counter() - began)
        time.sleep(0.002)
    sock.close()
    return took, failed


def measure(process: psutil.Process, port: int, attack: str, count: int) -> dict[str, Any]:
    rss_before = process.memory_info().rss
    outcomes: Counter[str] = Counter()
    stop = start_attack(port, attack, outcomes)
    time.sleep(0.3)
    try:
        took, failed = victim(port, count)
        rss_after = process.memory_info().rss
    finally:
        stop()
    took.sort()
    return {
        "p50": statistics.median(took) if took else float("nan"),
        "p99": took[max(0, int(len(took) * 0.99) - 1)] if took else float("nan"),
        "failed": failed,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "outcomes": dict(outcomes.most_common(3)),
    }


def throughput(port: int, load: str, requests: int, upload: Path) -> float:
    """Requests a second h2load gets from ``port`` under ``load`` (nan when
    not every request succeeded)."""
    args = [arg.replace("{upload}", str(upload)) for arg in LOADS[load]]
    done = subprocess.run(
        ["h2load", "-n", str(requests), *args, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    rate = re.search(r"finished in [^,]+, ([\d.]+) req/s", done.stdout)
    succeeded = re.search(r"(\d+) succeeded", done.stdout)
    if rate is None or succeeded is None or int(succeeded.group(1)) != requests:
        progress(f"h2load {load} on {port}: {done.stdout[-300:]!r}")
        return float("nan")
    return float(rate.group(1))


Servers = dict[str, tuple[subprocess.Popen[bytes], int]]
Results = dict[tuple[str, str], list[dict[str, Any]]]
Rates = dict[tuple[str, str], list[float]]


def run_rounds(
    servers: Servers, rounds: int, count: int, quick: bool, attacks: list[str]
) -> tuple[Results, Rates]:
    """Each round: every attack, then every load, on each server in turn."""
    results: Results = {}
    rates: Rates = {}
    with tempfile.NamedTemporaryFile(suffix=".bin") as upload:
        upload.write(os.urandom(64 * 1024))
        upload.flush()
        for round_number in range(rounds):
            for attack in attacks:
                for kind, (process, port) in servers.items():
                    progress(f"round {round_number + 1}: {kind} under {attack}")
                    proc = psutil.Process(process.pid)
                    results.setdefault((kind, attack), []).append(
                        measure(proc, port, attack, count)
                    )
            for load in LOADS:
                requests = (2000 if quick else 10000) // (5 if load != "get" else 1)
                for kind, (_process, port) in servers.items():
                    progress(f"round {round_number + 1}: {kind} h2load {load}")
                    rate = throughput(port, load, requests, Path(upload.name))
                    rates.setdefault((kind, load), []).append(rate)
    return results, rates


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after 20 s")


def main() -> None:
    # bench/http.py would shadow the standard library's http package.
    here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one round, fewer requests")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--attacks", default=",".join(ATTACKS), help="the attacks to run, comma-separated"
    )
    args = parser.parse_args()
    attacks = [a for a in args.attacks.split(",") if a]
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown:
        parser.error(f"unknown attack {', '.join(unknown)}: choose from {', '.join(ATTACKS)}")
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    rounds, count = (1, 150) if args.quick else (args.rounds, 300)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # servers stopped in finally
    servers: Servers = {}
    for kind in SERVERS:
        port = free_port()
        process = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port)])
        servers[kind] = (process, port)
    try:
        for _process, port in servers.values():
            wait_listening(port)
        results, rates = run_rounds(servers, rounds, count, args.quick, attacks)
    finally:
        for process, _ in servers.values():
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    report(results)
    report_throughput(rates)


def report_throughput(rates: Rates) -> None:
    print("h2load throughput, requests/s (median over the rounds):")
    for load in LOADS:
        ours = statistics.median(rates[("looming", load)])
        theirs = statistics.median(rates[("hypercorn", load)])
        print(f"  {load:11} looming {ours:9.0f}   hypercorn {theirs:9.0f}   "
              f"x{ours / theirs:.2f}")  # fmt: skip


def report(results: Results) -> None:
    nghttp2 = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout
    print(
        f"python {sys.version.split()[0]}, h2 {version('h2')}, wsproto {version('wsproto')}, "
        f"hypercorn {version('hypercorn')}, {nghttp2.strip()}"
    )
    print(f"{'server':10} {'attack':15} {'p50 ms':>7} {'p99 ms':>7} {'fail':>4} "
          f"{'RSS MB':>7} {'after':>7}  attacker connections ended")  # fmt: skip
    worst: dict[tuple[str, str], dict[str, float]] = {}
    for (kind, attack), runs in results.items():
        p50 = statistics.median(r["p50"] for r in runs) * 1000
        p99 = max(r["p99"] for r in runs) * 1000
        rss0 = min(r["rss_before"] for r in runs) / 1e6
        rss1 = max(r["rss_after"] for r in runs) / 1e6
        failed = sum(r["failed"] for r in runs)
        outcomes = runs[-1]["outcomes"]
        worst[(kind, attack)] = {"p99": p99, "grew": rss1 - rss0}
        print(f"{kind:10} {attack:15} {p50:7.2f} {p99:7.1f} {failed:4d} "
              f"{rss0:7.1f} {rss1:7.1f}  {outcomes}")  # fmt: skip
    print("looming / hypercorn (worst p99 over the rounds; RSS growth in MB):")
    for attack in ATTACKS:
        ours, theirs = worst.get(("looming", attack)), worst.get(("hypercorn", attack))
        if ours and theirs:
            print(f"  {attack:15} p99 x{ours['p99'] / max(theirs['p99'], 1e-9):.2f}   "
                  f"RSS growth {ours['grew']:+.1f} vs {theirs['grew']:+.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
