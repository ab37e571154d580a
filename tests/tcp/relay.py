"""A seeded frame relay between two TAP devices that drops, duplicates,
reorders and delays Ethernet frames, and the namespaces around it.

    namespace L ("left")                relay process (root)           namespace R ("right")
    Linux, 10.77.0.1/24 on TAP lmrl.. <--fd--> impairments <--fd--> TAP lmrr.., Linux at 10.77.0.2
                                                                     or looming (AF_PACKET) at .2

The relay opens both TAPs and holds their file descriptors; the TAPs are
then moved into their namespaces. Every frame one side's kernel sends is
read from its TAP, passes :class:`Impairments` and is written to the other
TAP, so both directions see the same seeded loss. ARP frames are spared
unless ``impair_arp`` is set: the subject here is TCP's recovery.

Run as a program (``python -m tests.tcp.relay LEFT RIGHT``) it prints
``ready`` once both TAPs are open and then obeys one command per stdin
line: ``set loss=0.03 duplicate=0 reorder=0 delay_ms=0 seed=1`` answers
``ok``; ``stats`` answers a JSON line of counters; ``quit`` (or EOF) ends it.
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import json
import os
import random
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
ETHERTYPE_ARP = b"\x08\x06"
ETHERTYPE_IPV4 = b"\x08\x00"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


@dataclass
class Impairments:
    """What happens to each frame: probabilities per frame, delays in ms."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # held back by reorder_ms, so later frames overtake it
    reorder_ms: float = 2.0
    delay_ms: float = 0.0  # added to every frame, both ways
    ce: float = 0.0  # ECN-capable IPv4 packets marked Congestion Experienced
    seed: int = 1
    impair_arp: bool = False

    @classmethod
    def parse(cls, words: list[str]) -> Impairments:
        values: dict[str, float | int | bool] = {}
        for word in words:
            key, _, value = word.partition("=")
            if key not in cls.__dataclass_fields__:
                raise ValueError(f"unknown impairment {key!r}")
            if key == "seed":
                values[key] = int(value)
            elif key == "impair_arp":
                values[key] = value in ("1", "true", "yes")
            else:
                values[key] = float(value)
        return cls(**values)  # type: ignore[arg-type]


@dataclass
class RelayCore:
    """The decisions, without I/O: a frame and the time in, (due time,
    frame) pairs out. Seeded, so a run can be repeated."""

    impairments: Impairments = field(default_factory=Impairments)
    rng: random.Random = field(init=False)
    counters: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("frames", "dropped", "duplicated", "reordered", "forwarded", "ce_marked", "unwritten"),
            0,
        )
    )

    def __post_init__(self) -> None:
        self.rng = random.Random(self.impairments.seed)

    def configure(self, impairments: Impairments) -> None:
        self.impairments = impairments
        self.rng = random.Random(impairments.seed)
        for key in self.counters:
            self.counters[key] = 0

    def decide(self, frame: bytes, now: float) -> list[tuple[float, bytes]]:
        imp = self.impairments
        self.counters["frames"] += 1
        if frame[12:14] == ETHERTYPE_ARP and not imp.impair_arp:
            return [(now, frame)]
        rng = self.rng
        if imp.loss and rng.random() < imp.loss:
            self.counters["dropped"] += 1
            return []
        if imp.ce and rng.random() < imp.ce:
            marked = mark_ce(frame)
            if marked is not None:
                self.counters["ce_marked"] += 1
                frame = marked
        due = now + imp.delay_ms / 1000
        if imp.reorder and rng.random() < imp.reorder:
            self.counters["reordered"] += 1
            due += imp.reorder_ms / 1000
        out = [(due, frame)]
        if imp.duplicate and rng.random() < imp.duplicate:
            self.counters["duplicated"] += 1
            out.append((due, frame))
        return out


def mark_ce(frame: bytes) -> bytes | None:
    """The frame with its IPv4 ECN field set to CE (RFC 3168), when the
    packet is ECN-capable; the header checksum is recomputed."""
    if frame[12:14] != ETHERTYPE_IPV4 or len(frame) < 34 or frame[15] & 0b11 == 0:
        return None
    length = (frame[14] & 0x0F) * 4
    header = bytearray(frame[14 : 14 + length])
    header[1] |= 0b11
    header[10:12] = b"\0\0"
    total = sum(int.from_bytes(header[i : i + 2], "big") for i in range(0, length, 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    header[10:12] = (~total & 0xFFFF).to_bytes(2, "big")
    return frame[:14] + bytes(header) + frame[14 + length :]


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def serve(left: str, right: str) -> None:
    """The relay process: forward between the two TAPs until told to quit."""
    fds = {open_tap(left): None, open_tap(right): None}
    a, b = list(fds)
    other = {a: b, b: a}
    core = RelayCore()
    pending: list[tuple[float, int, int, bytes]] = []  # due, serial, fd, frame
    serial = 0
    print("ready", flush=True)
    stdin = sys.stdin.fileno()
    while True:
        timeout = max(pending[0][0] - time.monotonic(), 0) if pending else 1.0
        readable, _, _ = select.select([a, b, stdin], [], [], timeout)
        now = time.monotonic()
        for fd in readable:
            if fd == stdin:
                line = sys.stdin.readline()
                if not _command(line, core):
                    return
                continue
            for _ in range(64):
                try:
                    frame = os.read(fd, 65536)
                except BlockingIOError:
                    break
                for due, copy in core.decide(frame, now):
                    serial += 1
                    heapq.heappush(pending, (due, serial, other[fd], copy))
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, fd, frame = heapq.heappop(pending)
            try:
                os.write(fd, frame)
                core.counters["forwarded"] += 1
            except OSError:
                core.counters["unwritten"] += 1  # the TAP's queue was full


def _command(line: str, core: RelayCore) -> bool:
    words = line.split()
    if not words or words[0] == "quit":
        return False
    if words[0] == "set":
        core.configure(Impairments.parse(words[1:]))
        print("ok", flush=True)
    elif words[0] == "stats":
        print(json.dumps(core.counters), flush=True)
    else:
        print(f"error: unknown command {words[0]!r}", flush=True)
    return True


# ------------------------------------------------------------------ harness


def sh(*argv: str, check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def in_namespace(namespace: str, function: Callable[[], T]) -> T:
    """Call ``function`` in a thread that has entered ``namespace`` (sockets
    it opens belong to that namespace for good)."""
    libc = ctypes.CDLL(None, use_errno=True)
    box: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {namespace} failed")
            box.append(function())
        except BaseException as error:  # handed to the caller
            failure.append(error)
        finally:
            os.close(fd)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return box[0]


@dataclass
class RelayedPath:
    """Two namespaces joined by the relay; see the module documentation."""

    left_ns: str
    right_ns: str
    left_tap: str
    right_tap: str
    process: subprocess.Popen[str]
    left_address: str = "10.77.0.1"
    right_address: str = "10.77.0.2"

    def left(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.left_ns, *argv]

    def right(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.right_ns, *argv]

    def _ask(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def impair(self, impairments: Impairments) -> None:
        words = [f"{k}={getattr(impairments, k)}" for k in Impairments.__dataclass_fields__]
        answer = self._ask("set " + " ".join(words))
        if answer != "ok":
            raise RuntimeError(f"relay refused the impairments: {answer}")

    def counters(self) -> dict[str, int]:
        parsed: dict[str, int] = json.loads(self._ask("stats"))
        return parsed

    def right_side_kernel(self, on: bool) -> None:
        """Give the right namespace's kernel its address (Linux<->Linux), or
        take it away (looming answers there); forget the neighbours."""
        verb = "add" if on else "del"
        sh(
            *self.right("ip", "addr", verb, f"{self.right_address}/24", "dev", self.right_tap),
            check=on,
        )
        sh(*self.left("ip", "neigh", "flush", "dev", self.left_tap), check=False)
        sh(*self.right("ip", "neigh", "flush", "dev", self.right_tap), check=False)


@contextmanager
def relayed_path(suffix: str, *, ecn: int = 2) -> Iterator[RelayedPath]:
    """Namespaces, TAPs and the relay process; all removed on exit.

    ``ecn`` is net.ipv4.tcp_ecn in both namespaces (2: accept, 1: request)."""
    left_ns, right_ns = f"lmrl{suffix}", f"lmrr{suffix}"
    left_tap, right_tap = f"lmtl{suffix}", f"lmtr{suffix}"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.tcp.relay", left_tap, right_tap],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    path = RelayedPath(left_ns, right_ns, left_tap, right_tap, process)
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the relay did not start (it needs root and /dev/net/tun)")
        for namespace, tap in ((left_ns, left_tap), (right_ns, right_tap)):
            sh("ip", "netns", "add", namespace)
            sh("ip", "link", "set", tap, "netns", namespace)
            run = path.left if namespace == left_ns else path.right
            sh(*run("ip", "link", "set", "lo", "up"))
            sh(*run("ip", "link", "set", tap, "up"))
            sh(*run("sysctl", "-qw", f"net.ipv4.tcp_ecn={ecn}"))
            sh(*run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"))
        sh(*path.left("ip", "addr", "add", f"{path.left_address}/24", "dev", left_tap))
        yield path
    finally:
        if process.poll() is None:
            try:
                assert process.stdin is not None
                process.stdin.write("quit\n")
                process.stdin.flush()
                process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        sh("ip", "netns", "del", left_ns, check=False)
        sh("ip", "netns", "del", right_ns, check=False)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
