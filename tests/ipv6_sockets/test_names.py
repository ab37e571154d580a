"""Names with AAAA and A records: the socket stack connects to each address
in the resolver's order and listens on every address of a name. The names
come from a hosts file bind-mounted over /etc/hosts in a private mount
namespace (root), so the host's own resolver (getaddrinfo) is the peer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

HOSTS = """\
127.0.0.1 localhost
::1 v6.looming.test dual.looming.test
127.0.0.1 v4.looming.test dual.looming.test
"""

CHILD = r"""
import asyncio, socket
from looming.unix.socket_stack import SocketStack, listening_socket
from looming.errors import ConnectionRefused

async def hello(flow):
    await flow.write(flow.local_address[0].encode())

async def main():
    infos = socket.getaddrinfo("dual.looming.test", 1, type=socket.SOCK_STREAM)
    order = [info[4][0] for info in infos]
    print("order", *order)
    stack = SocketStack("127.0.0.1")
    # Listening on a name: every address it has, one port.
    named = await stack.tcp.listen(0, hello, host="dual.looming.test")
    for target in ("v6.looming.test", "v4.looming.test", "dual.looming.test"):
        flow = await stack.tcp.connect(target, named.port, timeout=5)
        print("named", target, flow.remote_address[0], (await flow.read()).decode())
        await flow.close()
    await named.close()
    # The first address refuses: the next one is tried.
    for only in order:
        server = listening_socket(only, 0)
        port = server.getsockname()[1]
        connecting = asyncio.ensure_future(stack.tcp.connect("dual.looming.test", port, timeout=5))
        server.setblocking(False)
        peer, _ = await asyncio.get_running_loop().sock_accept(server)
        flow = await connecting
        print("fallback", only, flow.remote_address[0])
        peer.close(); server.close(); await flow.close()
    try:
        await stack.tcp.connect("dual.looming.test", port, timeout=5)
    except ConnectionRefused as error:
        print("refused", error)
    await stack.disconnect()

asyncio.run(main())
"""


def test_names_resolve_to_ipv6_and_ipv4_in_order(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root for a private mount namespace (it is marked root)")
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    script = f'mount --bind {hosts} /etc/hosts && exec {sys.executable} -c "$CHILD"'
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env={**os.environ, "CHILD": CHILD},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    order = lines[0].split()[1:]
    assert sorted(order) == ["127.0.0.1", "::1"]
    assert lines[1:4] == [
        "named v6.looming.test ::1 ::1",
        "named v4.looming.test 127.0.0.1 127.0.0.1",
        f"named dual.looming.test {order[0]} {order[0]}",
    ]
    # Whichever single address listens, the name reaches it.
    assert lines[4:6] == [f"fallback {only} {only}" for only in order]
    assert (
        lines[6].startswith("refused dual.looming.test:") and "refused the connection" in lines[6]
    )
    # The real /etc/hosts was never touched.
    assert "looming.test" not in Path("/etc/hosts").read_text()
