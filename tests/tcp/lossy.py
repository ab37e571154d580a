"""10 MB echoes across the loss relay (tests/tcp/relay.py): Linux's echo
server in the left namespace, and as its client either Linux in the right
namespace or looming's direct stack on an AF_PACKET socket there. The
server listens twice: on ECHO_PORT with the namespace's default congestion
control (inherited from the host: BBR on some, CUBIC on most) and on
CUBIC_ECHO_PORT with CUBIC, which a Linux client then also asks for.

Shared by tests/tcp/test_relay.py and bench/tcp.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

from looming.devices.stack import TcpFlow
from looming.net.netif.af_packet import PacketNetwork
from looming.net.stack import DirectStack
from looming.net.tcp import TcpConfig
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.tcp.relay import RelayedPath, in_namespace

ECHO_PORT = 7007  # the server's congestion control: its namespace's default
CUBIC_ECHO_PORT = 7008  # the server's sockets run CUBIC, whatever the default
# A new namespace inherits the host's default congestion control (on the
# machine this was measured on, BBR, which does not slow down for random
# loss); a socket can name its own (TCP_CONGESTION, root may name any one).
ECHO_PORTS = {None: ECHO_PORT, "cubic": CUBIC_ECHO_PORT}

ECHO_SERVER = r"""
import socket, sys, threading

def serve(c):
    with c:
        while data := c.recv(262144):
            c.sendall(data)

def accept(s):
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()

for port, congestion in ((int(sys.argv[1]), ""), (int(sys.argv[2]), "cubic")):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if congestion:  # accepted sockets inherit it
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())
    s.bind(("0.0.0.0", port))
    s.listen(64)
    threading.Thread(target=accept, args=(s,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

ECHO_CLIENT = r"""
import hashlib, json, socket, sys, threading, time
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = (bytes(range(256)) * (size // 256 + 1))[:size]
start = time.perf_counter()
c = socket.socket()
if sys.argv[4]:
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, sys.argv[4].encode())
c.connect((host, port))
congestion = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
def writer():
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
threading.Thread(target=writer, daemon=True).start()
digest, got = hashlib.sha256(), 0
while chunk := c.recv(262144):
    digest.update(chunk)
    got += len(chunk)
seconds = time.perf_counter() - start
result = {"seconds": seconds, "bytes": got, "sha256": digest.hexdigest()}
print(json.dumps({**result, "congestion": congestion}))
"""


def payload(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@dataclass
class EchoResult:
    seconds: float
    intact: bool
    counters: dict[str, int] = field(default_factory=dict)
    congestion: str = ""  # Linux's congestion control on the client socket
    # CPU seconds of this process from connect to close (looming's echoes):
    # the stack and the echo's own reading, hashing and writing, not the
    # setup nor building the payload and its digest beforehand.
    cpu: float = 0.0


def start_echo_server(path: RelayedPath) -> subprocess.Popen[str]:
    server = subprocess.Popen(
        path.left(sys.executable, "-c", ECHO_SERVER, str(ECHO_PORT), str(CUBIC_ECHO_PORT)),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    if server.stdout.readline().strip() != "ready":
        raise RuntimeError("the echo server did not start")
    return server


def linux_echo(path: RelayedPath, size: int, congestion: str | None = None) -> EchoResult:
    """Linux in the right namespace echoes ``size`` bytes through the relay,
    both sockets with the namespaces' default congestion control, or both
    with ``congestion`` (a key of ECHO_PORTS)."""
    port = ECHO_PORTS[congestion]
    path.right_side_kernel(True)
    try:
        out = subprocess.run(
            path.right(
                sys.executable,
                "-c",
                ECHO_CLIENT,
                path.left_address,
                str(port),
                str(size),
                congestion or "",
            ),
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
    finally:
        path.right_side_kernel(False)
    result = json.loads(out.splitlines()[-1])
    expected = hashlib.sha256(payload(size)).hexdigest()
    intact = result["sha256"] == expected and result["bytes"] == size
    return EchoResult(result["seconds"], intact, congestion=result["congestion"])


async def open_looming(
    path: RelayedPath, config: TcpConfig | None = None, *, offload: bool = True
) -> DirectStack:
    """looming's stack on the right namespace's TAP (the kernel there has no
    address), on an AF_PACKET socket with virtio-net offloads unless not
    ``offload``. Unseeded, as ``looming run`` is without ``--seed``: each
    stack connects from a port of its own, as the kernel's clients do. With
    one seed every echo took the same port as the one before, whose
    connection the server may still hold (its FIN resent after our last ACK
    was lost), and met it at connect."""
    network = in_namespace(path.right_ns, lambda: _packet_socket(path.right_tap, offload))
    stack = await DirectStack.connect(
        network,
        time=UnixTime(),
        clock=UnixClock(),
        random=UnixRandom(),
        address=IPv4Interface(f"{path.right_address}/24"),
        gateway=IPv4Address(path.left_address),
    )
    if config is not None:
        stack.tcp.config = config
        stack.tcp._endpoint.config = config  # connections take it from here
    return stack


def _packet_socket(interface: str, offload: bool) -> PacketNetwork:
    return asyncio.run(PacketNetwork.connect(interface, offload=offload))


async def looming_echo(
    stack: DirectStack, path: RelayedPath, size: int, port: int = ECHO_PORT
) -> EchoResult:
    """looming echoes ``size`` bytes through the relay against Linux's server
    (on ``port``: ECHO_PORT or CUBIC_ECHO_PORT)."""
    data = payload(size)
    expected = hashlib.sha256(data).digest()
    before = stack.tcp.counters  # the recovery counters and the MSS lowered
    cpu = time.process_time()
    start = time.perf_counter()
    flow: TcpFlow = await stack.tcp.connect(IPv4Address(path.left_address), port)

    async def writer() -> None:
        view = memoryview(data)
        for offset in range(0, len(view), 1 << 18):
            await flow.write(bytes(view[offset : offset + (1 << 18)]))
        await flow.shutdown()

    task = asyncio.get_running_loop().create_task(writer())
    digest, got = hashlib.sha256(), 0
    while chunk := await flow.read():
        digest.update(chunk)
        got += len(chunk)
    seconds = time.perf_counter() - start
    await task
    await flow.close()
    cpu = time.process_time() - cpu
    after = stack.tcp.counters
    counters = {key: after[key] - before.get(key, 0) for key in after}
    intact = got == size and digest.digest() == expected
    return EchoResult(seconds, intact, counters, cpu=cpu)
