"""The echo example on ``--net direct``, with kernel-side Python clients in
the namespace sending and reading at the same time."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.direct.unikernel import UNIKERNEL_ADDRESS, Namespace, build_direct, running_direct

pytestmark = pytest.mark.root

# Runs in the namespace: CONNECTIONS concurrent clients, each writing SIZE
# seeded bytes while a thread reads the echo, then half-closing and reading
# until the unikernel closes too.  Prints one JSON object per client.
ECHO_CLIENTS = r"""
import hashlib, json, random, socket, sys, threading

host, port, connections, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
results = [None] * connections

def client(index):
    payload = random.Random(index).randbytes(size)
    with socket.create_connection((host, port), timeout=30) as sock:
        received = bytearray()
        def read():
            while chunk := sock.recv(1 << 16):
                received.extend(chunk)
        reader = threading.Thread(target=read)
        reader.start()
        view = memoryview(payload)
        for start in range(0, size, 1000 + 997 * index):
            sock.sendall(view[start:start + 1000 + 997 * index])
        sock.shutdown(socket.SHUT_WR)
        reader.join(60)
    results[index] = {
        "sent": hashlib.sha256(payload).hexdigest(),
        "echoed": hashlib.sha256(received).hexdigest(),
        "length": len(received),
        "finished": not reader.is_alive(),
    }

threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(90)
print(json.dumps(results))
"""


def test_echo_both_ways_with_concurrent_kernel_clients(
    kernel_namespace: Namespace, tmp_path: Path
) -> None:
    app = build_direct("echo", tmp_path)
    with running_direct(
        app,
        kernel_namespace,
        "--ipv4",
        str(UNIKERNEL_ADDRESS),
        "--port",
        "7",
        "--logs",
        "*:warning,echo:info",
        ready=r"echo listening on port (\d+)",
    ) as unikernel:
        assert unikernel.ready.group(1) == "7"
        size = 1_000_000
        out = kernel_namespace.run(
            sys.executable,
            "-c",
            ECHO_CLIENTS,
            str(UNIKERNEL_ADDRESS.ip),
            "7",
            "4",
            str(size),
            timeout=120,
        )
        results = json.loads(out)
        assert len(results) == 4
        for result in results:
            assert result is not None
            assert result["finished"] and result["length"] == size
            assert result["echoed"] == result["sent"]
    assert unikernel.exit_code == 0, unikernel.log
    log = unikernel.log
    assert log.count(f"connection from {kernel_namespace.peer_address}:") == 4, log
    assert log.count(f"closed after {size} bytes") == 4, log
    assert "Traceback" not in log
