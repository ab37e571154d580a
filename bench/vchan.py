"""vchan beside the host's other ways for two processes to talk.

Round-trip latency (p50/p99) of 64-byte messages and one-way throughput of
64 KiB messages between a parent and a forked child, over:

- vchan with blocking waits (no spinning), with the default wait
  (a short spin, then blocking) and with long spinning waits,
- a Unix socketpair, a pipe pair, a TCP loopback connection (TCP_NODELAY)
  and multiprocessing.Pipe.

Everything runs in one go on the same machine; ratios are against the
socketpair. Then the time a client takes to talk again to a peer that was
SIGKILLed and restarted: looming's vchan device (which reconnects by
itself) beside a Unix stream socket client reconnecting by hand.

With ``--vm`` (or ``--vm-only``), also the VM-to-VM figure: the same two
unikernels (bench/vchan_vm: an echo server, and a client measuring round
trips of 64 bytes and a stream in 64 KiB writes through the vchan device)
as two processes of the process target and as two VMs of the vm target
talking over ivshmem, in alternating rounds (ABAB), medians of the rounds.
Usage: python -P bench/vchan.py [--quick] [--json PATH] [--vm | --vm-only] [--arch A]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from looming.unix.time import UnixTime
from looming.vchan import endpoint
from looming.vchan import listener as ports

MESSAGE = 64
CHUNK = 64 * 1024
RING = 1 << 20
SLICES = 10


class Link:
    """One side of a transport, as the benchmark drives it."""

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def recv_exact(self, count: int) -> bytes:
        raise NotImplementedError

    def recv_into(self, buffer: memoryview) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class FdLink(Link):
    """A pair of descriptors (one for each direction; the same for sockets)."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.write_fd, view) :]

    def recv_exact(self, count: int) -> bytes:
        parts = bytearray()
        while len(parts) < count:
            chunk = os.read(self.read_fd, count - len(parts))
            if not chunk:
                raise EOFError
            parts += chunk
        return bytes(parts)

    def recv_into(self, buffer: memoryview) -> int:
        return os.readv(self.read_fd, [buffer])

    def close(self) -> None:
        for fd in {self.read_fd, self.write_fd}:
            os.close(fd)


class ConnectionLink(Link):
    """multiprocessing.Pipe: message framed."""

    def __init__(self, connection: multiprocessing.connection.Connection) -> None:
        self.connection = connection

    def send(self, data: bytes) -> None:
        self.connection.send_bytes(data)

    def recv_exact(self, count: int) -> bytes:
        return self.connection.recv_bytes()

    def recv_into(self, buffer: memoryview) -> int:
        return self.connection.recv_bytes_into(buffer)

    def close(self) -> None:
        self.connection.close()


class VchanLink(Link):
    def __init__(self, channel: endpoint.Endpoint) -> None:
        self.channel = channel

    def send(self, data: bytes) -> None:
        if len(data) <= MESSAGE:
            self.channel.send(data)
        else:
            self.channel.write(data)

    def recv_exact(self, count: int) -> bytes:
        return self.channel.recv(count)

    def recv_into(self, buffer: memoryview) -> int:
        return self.channel.read_into(buffer)

    def close(self) -> None:
        self.channel.close()


# A transport makes (parent side, function the child calls to get its side).
Transport = Callable[[], tuple[Callable[[], Link], Callable[[], Link]]]


def socketpair_transport() -> tuple[Callable[[], Link], Callable[[], Link]]:
    a, b = socket.socketpair()

    def parent() -> Link:
        b.close()
        fd = a.detach()
        return FdLink(fd, fd)

    def child() -> Link:
        a.close()
        fd = b.detach()
        return FdLink(fd, fd)

    return parent, child


def pipe_transport() -> tuple[Callable[[], Link], Callable[[], Link]]:
    down_r, down_w = os.pipe()
    up_r, up_w = os.pipe()

    def parent() -> Link:
        os.close(down_r)
        os.close(up_w)
        return FdLink(up_r, down_w)

    def child() -> Link:
        os.close(down_w)
        os.close(up_r)
        return FdLink(down_r, up_w)

    return parent, child


def tcp_transport() -> tuple[Callable[[], Link], Callable[[], Link]]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    address = server.getsockname()

    def parent() -> Link:
        conn, _ = server.accept()
        server.close()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = conn.detach()
        return FdLink(fd, fd)

    def child() -> Link:
        server.close()
        conn = socket.create_connection(address)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = conn.detach()
        return FdLink(fd, fd)

    return parent, child


def mp_pipe_transport() -> tuple[Callable[[], Link], Callable[[], Link]]:
    a, b = multiprocessing.Pipe(duplex=True)

    def parent() -> Link:
        b.close()
        return ConnectionLink(a)

    def child() -> Link:
        a.close()
        return ConnectionLink(b)

    return parent, child


def vchan_transport(spin: int) -> Transport:
    def make() -> tuple[Callable[[], Link], Callable[[], Link]]:
        name, port = f"bench{os.getpid()}", f"spin{spin}"
        listener = ports.listen(
            name, port, read_min=RING, write_min=RING, spin=spin, time=UnixTime()
        )

        def parent() -> Link:
            return VchanLink(listener.accept(timeout=30))

        def child() -> Link:
            # The forked child leaves its copy of the listener alone: the
            # port and segment are the parent's to clean up.
            return VchanLink(ports.connect(name, port, spin=spin, time=UnixTime()))

        return parent, child

    return make


@dataclass
class Result:
    transport: str
    rtt_p50_us: float
    rtt_p99_us: float
    throughput_mb_s: float


def child_main(link: Link) -> None:
    """Echo pings; swallow throughput slices and acknowledge each; stop on 'q'."""
    buffer = memoryview(bytearray(CHUNK * 4))
    while True:
        message = link.recv_exact(MESSAGE)
        kind = message[:1]
        if kind == b"p":
            link.send(message)
        elif kind == b"t":
            total = int.from_bytes(message[1:9], "big")
            received = 0
            while received < total:
                count = link.recv_into(buffer)
                if count <= 0:
                    raise EOFError("stream ended early")
                received += count
            link.send(b"!")
        else:
            return


@dataclass
class Running:
    name: str
    pid: int
    link: Link
    samples: list[int]
    moved: int = 0
    elapsed_ns: int = 0


def start(name: str, transport: Transport) -> Running:
    make_parent, make_child = transport()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            link = make_child()
            child_main(link)
            link.close()
            code = 0
        finally:
            os._exit(code)
    return Running(name, pid, make_parent(), [])


def ping(running: Running, rounds: int) -> None:
    message = b"p" * MESSAGE
    link, samples = running.link, running.samples
    for _ in range(rounds):
        begin = time.perf_counter_ns()
        link.send(message)
        link.recv_exact(MESSAGE)
        samples.append(time.perf_counter_ns() - begin)


def stream(running: Running, total: int, chunk: bytes) -> None:
    header = b"t" + total.to_bytes(8, "big")
    header += b"\0" * (MESSAGE - len(header))
    link = running.link
    begin = time.perf_counter_ns()
    link.send(header)
    for _ in range(total // CHUNK):
        link.send(chunk)
    link.recv_exact(1)
    running.elapsed_ns += time.perf_counter_ns() - begin
    running.moved += total


def finish(running: Running) -> Result:
    running.link.send(b"q" * MESSAGE)
    _, status = os.waitpid(running.pid, 0)
    running.link.close()
    if status != 0:
        raise RuntimeError(f"{running.name}: child failed with status {status}")
    samples = sorted(running.samples)
    return Result(
        running.name,
        samples[len(samples) // 2] / 1000,
        samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000,
        running.moved / (running.elapsed_ns / 1e9) / 1e6,
    )


def measure(transports: list[tuple[str, Transport]], rounds: int, total: int) -> list[Result]:
    """All transports side by side, in interleaved slices, so load changes on
    a shared machine fall on every transport alike."""
    running = []
    for name, transport in transports:
        print(f"  starting {name}", file=sys.stderr, flush=True)
        running.append(start(name, transport))
    chunk = os.urandom(CHUNK)
    slice_bytes = max(CHUNK, total // SLICES // CHUNK * CHUNK)
    for number in range(SLICES):
        print(f"  slice {number + 1}/{SLICES}", file=sys.stderr, flush=True)
        for each in running:
            ping(each, rounds // SLICES)
        for each in running:
            stream(each, slice_bytes, chunk)
    return [finish(each) for each in running]


def print_peer_ratios(results: list[Result]) -> None:
    """Each vchan variant against each peer: p50 latency and throughput."""
    ours = [r for r in results if r.transport.startswith("vchan")]
    peers = [r for r in results if not r.transport.startswith("vchan")]
    print()
    print(f"{'p50 speed-up / MB/s ratio':<22}" + "".join(f"{p.transport:>22}" for p in peers))
    for r in ours:
        cells = "".join(
            f"{f'{p.rtt_p50_us / r.rtt_p50_us:.2f}x / {r.throughput_mb_s / p.throughput_mb_s:.2f}x':>22}"
            for p in peers
        )
        print(f"{r.transport:<22}{cells}")
    print("(peer's p50 over vchan's, and vchan's MB/s over the peer's: >1 means vchan is better)")


# -- reconnection after the peer restarts ------------------------------------------


def vchan_echo_server(registry: str) -> None:
    """A forked child: serve port "echo" through the vchan device, echoing."""
    import asyncio

    from looming.vchan.device import VchanDevice

    async def serve() -> None:
        device = await VchanDevice.connect(
            "echo", name="echoer", registry=registry, time=UnixTime()
        )
        while True:
            data = await device.read()
            if data:
                await device.write(data)

    asyncio.run(serve())


def unix_echo_server(path: str) -> None:
    """The same over a Unix stream socket (the peer: what a reconnect costs there)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    while True:
        connection, _ = server.accept()
        while data := connection.recv(4096):
            connection.sendall(data)


def fork_server(target: Callable[[str], None], where: str) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            target(where)
        finally:
            os._exit(0)
    return pid


def reconnect_vchan(registry: str, restarts: int) -> list[float]:
    """Seconds from a SIGKILL of the server to the client's next echo, over the device."""
    import asyncio

    from looming.vchan.device import VchanDevice

    async def run() -> list[float]:
        server = fork_server(vchan_echo_server, registry)
        client = await VchanDevice.connect(
            "echo", peer="echoer", registry=registry, time=UnixTime()
        )
        samples = []
        try:
            for _ in range(restarts + 1):
                await client.write(b"ping")
                assert await client.read() == b"ping"
                os.kill(server, signal.SIGKILL)
                os.waitpid(server, 0)
                started = time.perf_counter()
                server = fork_server(vchan_echo_server, registry)
                while True:
                    try:
                        await client.write(b"ping")
                        if await client.read() == b"ping":
                            break
                    except Exception:
                        pass
                samples.append(time.perf_counter() - started)
        finally:
            os.kill(server, signal.SIGKILL)
            os.waitpid(server, 0)
            await client.close()
        return samples[1:]  # the first includes warming up

    return asyncio.run(run())


def reconnect_unix(path: str, restarts: int) -> list[float]:
    server = fork_server(unix_echo_server, path)
    samples = []

    def connect() -> socket.socket:
        while True:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                client.connect(path)
                return client
            except OSError:
                client.close()
                time.sleep(0.001)

    client = connect()
    try:
        for _ in range(restarts + 1):
            client.sendall(b"ping")
            assert client.recv(4) == b"ping"
            os.kill(server, signal.SIGKILL)
            os.waitpid(server, 0)
            started = time.perf_counter()
            server = fork_server(unix_echo_server, path)
            while True:
                try:
                    client.sendall(b"ping")
                    if client.recv(4) == b"ping":
                        break
                except OSError:
                    pass
                client.close()
                client = connect()
            samples.append(time.perf_counter() - started)
    finally:
        os.kill(server, signal.SIGKILL)
        os.waitpid(server, 0)
        client.close()
    return samples[1:]


def measure_reconnects(registry: str, rounds: int) -> dict[str, list[float]]:
    """Interleaved rounds: vchan device, Unix socket, vchan device, ..."""
    found: dict[str, list[float]] = {"vchan device": [], "unix socket": []}
    for _ in range(rounds):
        found["vchan device"] += reconnect_vchan(registry, 3)
        found["unix socket"] += reconnect_unix(os.path.join(registry, "echo.sock"), 3)
    return found


# -- VM to VM: bench/vchan_vm as two VMs (ivshmem) and as two processes ------------

VM_APP = Path(__file__).resolve().with_name("vchan_vm")


def _looming(app: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "looming.cli", *args],
        cwd=app, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"looming {' '.join(args)} in {app}: {done.stdout}{done.stderr}")


def build_vm_apps(work: Path, arch: str) -> dict[str, Path]:
    """The benchmark app built for the process target and as two VM images."""
    built = {}
    for name, args in (
        ("process", ("-t", "process", "--unikernel", "pinger")),
        ("echo", ("-t", "vm", "--arch", arch, "--unikernel", "echo")),
        ("pinger", ("-t", "vm", "--arch", arch, "--unikernel", "pinger")),
    ):
        app = work / name
        shutil.copytree(VM_APP, app, ignore=shutil.ignore_patterns("_build", "dist", "__pycache__"))
        print(f"  building {name} ({' '.join(args)})", file=sys.stderr, flush=True)
        _looming(app, "configure", *args)
        _looming(app, "build")
        built[name] = app
    return built


def _bench_line(output: str) -> dict[str, float]:
    for line in output.splitlines():
        if "vchan-bench " in line:
            parsed: dict[str, float] = json.loads(line.split("vchan-bench ", 1)[1])
            return parsed
    raise RuntimeError(f"no result in the pinger's output:\n{output}")


def run_process_pair(app: Path, keys: list[str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "looming.cli", "run", *keys],
        cwd=app, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    return _bench_line(done.stdout + done.stderr)


def run_vm_pair(echo: Path, pinger: Path, keys: list[str]) -> dict[str, float]:
    """Boot the echo VM, then the pinger VM against it; the pinger's figures."""
    regions = Path(tempfile.mkdtemp(prefix="looming-bench-", dir="/dev/shm"))
    env = {**os.environ, "LOOMING_IVSHMEM_DIR": str(regions)}
    launch = [sys.executable, "-m", "looming.vm.launch"]
    server = subprocess.Popen(
        [*launch, str(echo / "dist" / "echo-vm.json"), "--vm-timeout", "300"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not any(regions.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        done = subprocess.run(
            [*launch, str(pinger / "dist" / "pinger-vm.json"), "--vm-timeout", "300", *keys],
            env=env, capture_output=True, text=True, timeout=330, check=False,
        )  # fmt: skip
        server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(regions, ignore_errors=True)
    return _bench_line(done.stdout + done.stderr)


def measure_vm(quick: bool, arch: str) -> list[Result]:
    """The same two unikernels as two processes and as two VMs, ABAB; medians."""
    rounds, total = (300, 8 << 20) if quick else (2000, 64 << 20)
    keys = ["--rounds", str(rounds), "--total", str(total)]
    work = Path(tempfile.mkdtemp(prefix="looming-vchan-vm-bench-"))
    try:
        apps = build_vm_apps(work, arch)
        runs: dict[str, list[dict[str, float]]] = {"process": [], "vm": []}
        for number in range(2 if quick else 4):
            print(f"  VM round {number + 1}: processes, then VMs", file=sys.stderr, flush=True)
            runs["process"].append(run_process_pair(apps["process"], keys))
            runs["vm"].append(run_vm_pair(apps["echo"], apps["pinger"], keys))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    names = {"process": "asyncio, 2 processes", "vm": f"asyncio, 2 VMs ({arch}, TCG)"}
    return [
        Result(
            names[kind],
            statistics.median(r["rtt_p50_us"] for r in found),
            statistics.median(r["rtt_p99_us"] for r in found),
            statistics.median(r["throughput_mb_s"] for r in found),
        )
        for kind, found in runs.items()
    ]


def print_vm(results: list[Result], arch: str) -> None:
    qemu = subprocess.run(
        [f"qemu-system-{arch}", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    print()
    print(
        f"VM to VM (bench/vchan_vm; {qemu[0] if qemu else 'qemu ?'}, Python {sys.version.split()[0]})"
    )
    print(f"{'vchan device':<34}{'RTT p50 us':>11}{'RTT p99 us':>11}{'MB/s':>9}")
    for r in results:
        print(
            f"{r.transport:<34}{r.rtt_p50_us:>11.1f}{r.rtt_p99_us:>11.1f}{r.throughput_mb_s:>9.1f}"
        )
    process, vm = results
    print(
        f"(VMs / processes: RTT {vm.rtt_p50_us / process.rtt_p50_us:.0f}x longer, "
        f"throughput {vm.throughput_mb_s / process.throughput_mb_s:.2f}x)"
    )


def print_host(results: list[Result], reconnects: dict[str, list[float]]) -> None:
    """The table of host transports against the socketpair, then reconnection times."""
    base = next(r for r in results if r.transport == "socketpair")
    print()
    print(
        f"{'transport':<22}{'RTT p50 us':>11}{'RTT p99 us':>11}{'MB/s':>9}"
        f"{'p50 vs sp':>11}{'MB/s vs sp':>12}"
    )
    for r in results:
        print(
            f"{r.transport:<22}{r.rtt_p50_us:>11.1f}{r.rtt_p99_us:>11.1f}"
            f"{r.throughput_mb_s:>9.0f}{base.rtt_p50_us / r.rtt_p50_us:>10.2f}x"
            f"{r.throughput_mb_s / base.throughput_mb_s:>11.2f}x"
        )
    print("(ratios: >1 means faster than the socketpair)")
    print_peer_ratios(results)
    print()
    print(f"{'reconnect after a SIGKILLed peer is restarted':<46}{'median ms':>10}{'best ms':>9}")
    medians = {}
    for name, samples in reconnects.items():
        medians[name] = statistics.median(samples)
        print(f"{name:<46}{medians[name] * 1e3:>10.2f}{min(samples) * 1e3:>9.2f}")
    ratio = medians["vchan device"] / medians["unix socket"]
    print(f"(vchan device / unix socket: {ratio:.2f}x; the peer is a fork, not a new interpreter)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, less data")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--vm", action="store_true", help="also two VMs over ivshmem beside two processes"
    )
    parser.add_argument(
        "--vm-only", action="store_true", help="only the VM-to-VM figure and its process peer"
    )
    parser.add_argument("--arch", default="x86_64", help="the VMs' architecture (default x86_64)")
    args = parser.parse_args()
    if args.vm_only:
        vm_results = measure_vm(args.quick, args.arch)
        print_vm(vm_results, args.arch)
        _write_json(args.json, {"vm": [asdict(r) for r in vm_results]})
        return 0
    rounds = 2000 if args.quick else 20000
    total = (128 if args.quick else 1024) * (1 << 20)
    registry_dir = tempfile.mkdtemp(prefix="looming-vchan-bench-", dir="/tmp")
    os.environ["LOOMING_VCHAN_REGISTRY"] = registry_dir
    transports: list[tuple[str, Transport]] = [
        ("vchan (blocking)", vchan_transport(spin=0)),
        ("vchan (default)", vchan_transport(spin=endpoint.DEFAULT_SPIN)),
        ("vchan (spinning)", vchan_transport(spin=20000)),
        ("socketpair", socketpair_transport),
        ("pipe pair", pipe_transport),
        ("tcp loopback", tcp_transport),
        ("multiprocessing.Pipe", mp_pipe_transport),
    ]
    print(
        f"vchan bench: {rounds} round trips of {MESSAGE} B, {total >> 20} MiB in "
        f"{CHUNK >> 10} KiB writes, vchan rings {RING >> 10} KiB",
        file=sys.stderr,
    )
    try:
        results = measure(transports, rounds, total)
        reconnects = measure_reconnects(registry_dir, 2 if args.quick else 5)
    finally:
        shutil.rmtree(registry_dir, ignore_errors=True)
    print_host(results, reconnects)
    vm_results = measure_vm(args.quick, args.arch) if args.vm else []
    if vm_results:
        print_vm(vm_results, args.arch)
    _write_json(
        args.json,
        {
            "rounds": rounds,
            "bytes": total,
            "message": MESSAGE,
            "chunk": CHUNK,
            "ring": RING,
            "results": [asdict(r) for r in results],
            "reconnect_s": reconnects,
            "vm": [asdict(r) for r in vm_results],
        },
    )
    return 0


def _write_json(path: str | None, data: dict[str, object]) -> None:
    if path:
        with open(path, "w") as handle:
            json.dump(data, handle, indent=2)


if __name__ == "__main__":
    multiprocessing.set_start_method("fork", force=True)
    raise SystemExit(main())
