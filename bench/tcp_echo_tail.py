"""64-byte echo round trips, p50 and p99, looming beside Linux, with and
without CPU load, in one run.

Run as root (namespaces, a TAP and a veth pair named ``lm...``, removed at
the end):

    .venv/bin/python bench/tcp_echo_tail.py [--rounds N] [--echoes N] [--hogs N]

Linux: a kernel echo client and server in two namespaces over veth (the
same Python socket loops as bench/tcp.py). looming: its direct stack over
a TAP as the client, the same Linux echo server in a namespace. Rounds
alternate ABAB, first quiet, then with ``--hogs`` busy-looping processes
(``python -c 'while 1: pass'``, default one: moderate load on two cores)
running beside both. Printed per condition: each side's p50, p99 and p99/p50
(the goal of issue #16: at most 5), over all rounds pooled. With
``--attribute``, each looming round trip over 1 ms is put down to whose wait
for a CPU covered most of it (looming's thread or the echo server, from
/proc/<pid>/schedstat) and the frames it took each way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import looming  # noqa: E402
from tcp import (  # noqa: E402
    PEER_ADDRESS,
    kernel_peer_namespace,
    kernel_program,
    open_stack,
    percentile,
    result_of,
    start_kernel,
    veth_pair,
    wait_ready,
)


def linux_round(namespaces: tuple[str, str], echoes: int, port: int) -> list[float]:
    server_ns, client_ns = namespaces
    echo = kernel_program(server_ns, "echo", str(port))
    wait_ready(echo)
    client = kernel_program(client_ns, "echo-client", "10.79.0.1", str(port), str(echoes))
    times: list[float] = result_of(client)["times"]
    echo.wait(timeout=30)
    return times


class RunQueueWait:
    """A thread's total time spent runnable but waiting for a CPU (the
    second field of /proc/<pid>/schedstat), read without reopening."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY)

    def __call__(self) -> float:
        return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9

    def close(self) -> None:
        os.close(self._fd)


@dataclass
class Stalls:
    """Round trips over 1 ms, by whose wait for a CPU covered most of it
    (looming's thread, the Linux echo server, both, neither), and the
    frames each of them took (a delayed ACK or a retransmission shows as
    more than one frame each way)."""

    looming: int = 0
    server: int = 0
    neither: int = 0
    frames: Counter[tuple[int, int]] = field(default_factory=Counter)

    def add(self, seconds: float, ours: float, theirs: float, frames: tuple[int, int]) -> None:
        if seconds < 0.001:
            return
        self.frames[frames] += 1
        if ours > seconds / 2:
            self.looming += 1
        if theirs > seconds / 2:
            self.server += 1
        if ours <= seconds / 2 and theirs <= seconds / 2:
            self.neither += 1


async def looming_round(echoes: int, port: int, stalls: Stalls | None = None) -> list[float]:
    """Round trips of looming's direct stack (over a TAP) with a Linux
    echo server; with ``stalls``, each one over 1 ms is attributed."""
    with kernel_peer_namespace() as peer:
        stack = await open_stack(peer, offload=False)
        try:
            echo = await start_kernel(peer, "echo", str(port))
            flow = await stack.tcp.connect(PEER_ADDRESS, port)
            flow.set_nodelay(True)
            ours = RunQueueWait("/proc/thread-self/schedstat")
            theirs = RunQueueWait(f"/proc/{echo.pid}/schedstat")  # ip netns exec execs it
            message, times = b"e" * 64, []
            try:
                for _ in range(echoes):
                    if stalls is not None:
                        waits, before = (ours(), theirs()), stack.network.stats()
                    start = time.perf_counter()
                    await flow.write(message)
                    got = 0
                    while got < 64:
                        got += len(await flow.read())
                    times.append(time.perf_counter() - start)
                    if stalls is not None:
                        after = stack.network.stats()
                        frames = (
                            after.rx_packets - before.rx_packets,
                            after.tx_packets - before.tx_packets,
                        )
                        stalls.add(times[-1], ours() - waits[0], theirs() - waits[1], frames)
            finally:
                ours.close()
                theirs.close()
            await flow.close()
            await echo.wait()
            return times
        finally:
            await stack.disconnect()


@contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(count)]
    try:
        time.sleep(0.2 if hogs else 0)
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def summary(name: str, times: list[float]) -> str:
    p50, p99 = statistics.median(times) * 1e6, percentile(times, 0.99) * 1e6
    return f"  {name:<22} p50 {p50:7.0f} us   p99 {p99:7.0f} us   p99/p50 {p99 / p50:5.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side and condition")
    parser.add_argument("--echoes", type=int, default=2000, help="round trips per round")
    parser.add_argument("--hogs", type=int, default=1, help="busy processes for the load")
    parser.add_argument(
        "--attribute",
        action="store_true",
        help="attribute looming's round trips over 1 ms to run-queue waits (costs a little)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/tcp_echo_tail.py needs root (namespaces, TAP, veth)", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.echoes < 100 or args.hogs < 0:
        print("need --rounds >= 1, --echoes >= 100, --hogs >= 0", file=sys.stderr)
        return 2
    print(
        f"looming {looming.__version__}, Linux {os.uname().release}, Python {sys.version.split()[0]}"
    )
    print(f"{args.rounds} rounds x {args.echoes} echoes per side, ABAB; {os.cpu_count()} CPUs")
    with veth_pair("10.79.0") as namespaces:
        for label, hogs in (("quiet", 0), (f"{args.hogs} CPU hog(s)", args.hogs)):
            linux: list[float] = []
            ours: list[float] = []
            stalls = Stalls() if args.attribute else None
            with cpu_hogs(hogs):
                for index in range(args.rounds):
                    linux += linux_round(namespaces, args.echoes, 5100 + index)
                    ours += asyncio.run(looming_round(args.echoes, 5200 + index, stalls))
            print(label)
            print(summary("Linux (veth)", linux))
            print(summary("looming (TAP)", ours))
            if stalls is not None:
                print(
                    f"  looming round trips over 1 ms: {sum(stalls.frames.values())}, "
                    f"in which looming waited for a CPU: {stalls.looming}, the Linux echo "
                    f"server: {stalls.server}, neither: {stalls.neither}; frames (in, out) "
                    f"per stalled round trip: {dict(stalls.frames)}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
