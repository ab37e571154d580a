"""Hand-made segments sent to the Linux kernel and to looming: same answers.

A raw host on a TAP plays the peer: it writes crafted Ethernet/IPv4/TCP
frames to the kernel in a namespace and reads what comes back. The same
segments are fed to looming's sans-I/O TCP endpoint. Answers are compared
after making sequence numbers relative to each responder's ISN.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest

from looming.devices.net import MacAddress
from looming.net.netif.tap import TapNetwork
from looming.net.tcp.config import TcpConfig, TcpStats
from looming.net.tcp.endpoint import TcpEndpoint
from looming.net.wire import ethernet, ipv4
from looming.net.wire import tcp as wire
from looming.net.wire.tcp import ACK, FIN, PSH, RST, SYN, TcpHeader
from tests.net.kernel import KernelPeer, sh

pytestmark = pytest.mark.root

HOST = IPv4Address("10.77.0.2")  # the raw host (us)
OUR_ISN = 1000
PORT = 7000
# Accepts and holds connections; "close" on stdin closes them all.
HOLDER = r"""
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.77.0.1", 7000))
s.listen(8)
held = []
def accept():
    while True:
        held.append(s.accept()[0])
threading.Thread(target=accept, daemon=True).start()
print("ready", flush=True)
for line in sys.stdin:
    for c in held:
        c.close()
    print("closed", flush=True)
"""

Answer = tuple[str, int, int, int]  # flags, relative seq, relative ack, payload length


def _flags(value: int) -> str:
    return "".join(
        letter
        for letter, bit in zip("SFRPA", (SYN, FIN, RST, PSH, ACK), strict=True)
        if value & bit
    )


async def _kernel_session(peer: KernelPeer, scenario: Callable[..., object]) -> list[list[Answer]]:
    tap = await TapNetwork.connect(peer.tap_name, mtu=1500)
    try:
        sh("ip", "link", "set", peer.tap_name, "netns", peer.namespace)
        peer.sh("ip", "addr", "add", f"{peer.peer_address}/24", "dev", peer.tap_name)
        peer.sh("ip", "link", "set", peer.tap_name, "up")
        peer.sh(
            "ip", "neigh", "replace", str(HOST), "lladdr", str(tap.mac), "dev", peer.tap_name,
            "nud", "permanent",
        )  # fmt: skip
        kernel_mac = MacAddress(peer.sh("cat", f"/sys/class/net/{peer.tap_name}/address").strip())
        holder = await asyncio.create_subprocess_exec(
            *peer.netns(sys.executable, "-c", HOLDER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert holder.stdout is not None and holder.stdin is not None
        assert (await holder.stdout.readline()).strip() == b"ready"
        replies: asyncio.Queue[tuple[TcpHeader, int]] = asyncio.Queue()

        def on_frame(frame: bytes) -> None:
            try:
                eth, packet = ethernet.parse(frame)
                if eth.ethertype != 0x0800:
                    return
                ip, segment = ipv4.parse(packet)
                if ip.protocol != 6 or ip.destination != HOST:
                    return
                header, payload = wire.parse(segment)
                replies.put_nowait((header, len(payload)))
            except Exception:
                return

        listening = asyncio.create_task(tap.listen(on_frame))

        async def send(
            header: TcpHeader, payload: bytes, *, settle: float = 0.0
        ) -> list[tuple[TcpHeader, int]]:
            # Linux sends at most one out-of-window answer per socket every
            # 500 ms (tcp_invalid_ratelimit); ``settle`` waits that out first.
            await asyncio.sleep(settle)
            segment = wire.emit(header, payload, src=HOST, dst=peer.peer_address)
            packet = ipv4.emit(ipv4.Ipv4Header(HOST, peer.peer_address, 6), segment)
            await tap.write(
                ethernet.emit(ethernet.EthernetHeader(kernel_mac, tap.mac, 0x0800), packet)
            )
            return await collect()

        async def collect() -> list[tuple[TcpHeader, int]]:
            await asyncio.sleep(0.15)
            answers = []
            while not replies.empty():
                answers.append(replies.get_nowait())
            return answers

        async def close() -> list[tuple[TcpHeader, int]]:
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.write(b"close\n")
            await holder.stdin.drain()
            await holder.stdout.readline()
            return await collect()

        async def state(port: int) -> str:
            out = await peer.exec_output("ss", "-tan", "sport", f"= :{PORT}")
            for line in out.splitlines():
                if f"{HOST}:{port}" in line:
                    return line.split()[0]
            return "CLOSED"

        try:
            return await scenario(send, close, state)  # type: ignore[no-any-return]
        finally:
            holder.kill()
            await holder.wait()
            listening.cancel()
    finally:
        await tap.disconnect()


async def _looming_session(scenario: Callable[..., object]) -> list[list[Answer]]:
    config = TcpConfig(timestamps=False, sack=False, window_scaling=False)
    endpoint = TcpEndpoint(config, TcpStats(), secret=bytes(range(32)), mtu_for=lambda _: 1480)
    endpoint.listen(PORT, None, backlog=8)
    peer_address = IPv4Address("10.77.0.1")
    clock = [0]

    async def send(
        header: TcpHeader, payload: bytes, *, settle: float = 0.0
    ) -> list[tuple[TcpHeader, int]]:
        clock[0] += 150_000_000 + int(settle * 1e9)
        segment = wire.emit(header, payload, src=HOST, dst=peer_address)
        endpoint.input(HOST, peer_address, segment, clock[0])
        # What comes back within the 150 ms the kernel is given: timers too.
        for key, conn in list(endpoint.connections.items()):
            deadline = conn.next_deadline()
            if deadline is not None and deadline <= clock[0] + 150_000_000:
                conn.on_timer(deadline)
                endpoint.collect(key, conn)
        answers = take()
        endpoint.take_touched()
        endpoint.take_accepted()
        return answers

    def take() -> list[tuple[TcpHeader, int]]:
        answers = []
        for _, raw, _ in endpoint.take_outbox():
            reply, data = wire.parse(raw)
            answers.append((reply, len(data)))
        return answers

    async def close() -> list[tuple[TcpHeader, int]]:
        for key, conn in list(endpoint.connections.items()):
            conn.close(clock[0])
            endpoint.collect(key, conn)
        return take()

    async def state(port: int) -> str:
        for key, conn in endpoint.connections.items():
            if key[3] == port:
                return {"ESTABLISHED": "ESTAB"}.get(conn.state.name, conn.state.value)
        return "CLOSED"

    return await scenario(send, close, state)  # type: ignore[no-any-return]


def _relative(answers: list[tuple[TcpHeader, int]], their_isn: int) -> list[Answer]:
    return [
        (
            _flags(h.flags),
            (h.seq - their_isn) & 0xFFFFFFFF if h.seq else 0,
            (h.ack - OUR_ISN) & 0xFFFFFFFF if h.flags & ACK else 0,
            length,
        )
        for h, length in answers
    ]


async def _simultaneous_close(
    send: Callable[..., Any], close: Callable[..., Any], state: Callable[..., Any]
) -> list[object]:
    """Both sides send FIN before seeing the other's (RFC 9293 figure 13)."""
    (syn_ack,) = await send(TcpHeader(40020, PORT, OUR_ISN, 0, SYN, 8192, mss=1000), b"")
    isn = syn_ack[0].seq
    ours, theirs = OUR_ISN + 1, isn + 1
    await send(TcpHeader(40020, PORT, ours, theirs, ACK, 8192), b"")
    results: list[object] = [await state(40020)]
    results.append(_relative(await close(), isn))  # their FIN
    results.append(await state(40020))
    # Our FIN, not yet acknowledging theirs: they go to CLOSING and ACK it.
    our_fin = TcpHeader(40020, PORT, ours, theirs, ACK | FIN, 8192)
    results.append(_relative(await send(our_fin, b""), isn))
    results.append(await state(40020))
    # Now we acknowledge their FIN: TIME-WAIT.
    last_ack = TcpHeader(40020, PORT, ours + 1, theirs + 1, ACK, 8192)
    results.append(_relative(await send(last_ack, b""), isn))
    results.append(await state(40020))
    return results


async def _scenario(
    send: Callable[..., Any], close: Callable[..., Any], state: Callable[..., Any]
) -> list[list[Answer]]:
    """Every probe, in order; answers relative to the responder's ISN."""
    their_isn = 0
    results: list[list[Answer]] = []

    def relative(answers: list[tuple[TcpHeader, int]]) -> list[Answer]:
        return [
            (
                _flags(h.flags),
                (h.seq - their_isn) & 0xFFFFFFFF if h.seq else 0,
                (h.ack - OUR_ISN) & 0xFFFFFFFF if h.flags & ACK else 0,
                length,
            )
            for h, length in answers
        ]

    # Strangers: a SYN, an ACK and a RST to a port nobody listens on.
    results.append(relative(await send(TcpHeader(40001, 7001, OUR_ISN, 0, SYN, 8192), b"")))
    results.append(relative(await send(TcpHeader(40002, 7001, OUR_ISN, 555, ACK, 8192), b"x")))
    results.append(relative(await send(TcpHeader(40003, 7001, OUR_ISN, 555, RST, 0), b"")))
    # An ACK to a listening port that belongs to no handshake.
    results.append(relative(await send(TcpHeader(40004, PORT, OUR_ISN, 777, ACK, 8192), b"")))

    # A handshake, then hostile segments on the established connection.
    (syn_ack,) = await send(TcpHeader(40010, PORT, OUR_ISN, 0, SYN, 8192, mss=1000), b"")
    their_isn = syn_ack[0].seq
    results.append(relative([syn_ack]))
    ours, theirs = OUR_ISN + 1, their_isn + 1
    results.append(relative(await send(TcpHeader(40010, PORT, ours, theirs, ACK, 8192), b"")))
    # A RST inside the window but not at rcv_nxt: a challenge ACK (RFC 5961 3.2).
    results.append(relative(await send(TcpHeader(40010, PORT, ours + 100, 0, RST, 0), b"")))
    # A SYN on an established connection: a challenge ACK (RFC 5961 4.2).
    results.append(
        relative(await send(TcpHeader(40010, PORT, ours + 5, 0, SYN, 8192), b"", settle=0.6))
    )
    # Old data (already acknowledged sequence space): a duplicate ACK.
    results.append(
        relative(
            await send(TcpHeader(40010, PORT, ours - 500, theirs, ACK, 8192), b"o" * 10, settle=0.6)
        )
    )
    # Data, then our FIN: the peer stays in CLOSE-WAIT and acknowledges both.
    results.append(
        relative(await send(TcpHeader(40010, PORT, ours, theirs, ACK | PSH, 8192), b"d" * 10))
    )
    results.append(
        relative(await send(TcpHeader(40010, PORT, ours + 10, theirs, ACK | FIN, 8192), b""))
    )
    # The exact RST tears it down, and is not answered.
    results.append(relative(await send(TcpHeader(40010, PORT, ours + 11, 0, RST, 0), b"")))
    # Now the connection is gone: data gets a reset.
    results.append(relative(await send(TcpHeader(40010, PORT, ours + 11, theirs, ACK, 8192), b"z")))
    return results


def test_simultaneous_close_alike(kernel_peer: KernelPeer) -> None:
    kernel = asyncio.run(_kernel_session(kernel_peer, _simultaneous_close))
    looming = asyncio.run(_looming_session(_simultaneous_close))
    assert looming == kernel
    assert kernel == [
        "ESTAB",
        [("FA", 1, 1, 0)],
        "FIN-WAIT-1",
        [("A", 2, 2, 0)],
        "CLOSING",
        [],
        "TIME-WAIT",
    ]


def test_kernel_and_looming_answer_probes_alike(kernel_peer: KernelPeer) -> None:
    kernel = asyncio.run(_kernel_session(kernel_peer, _scenario))
    looming = asyncio.run(_looming_session(_scenario))
    # Only flags and lengths are compared for the no-connection cases, where
    # the RST's own sequence is the probe's ACK; sequence positions for the rest.
    assert looming == kernel
    # And the expectations themselves, so a change on both sides is noticed.
    assert kernel[0] == [("RA", 0, 1, 0)]
    assert kernel[2] == []
    assert kernel[6] == [("A", 1, 1, 0)]
    assert kernel[7] == [("A", 1, 1, 0)]
    assert kernel[11] == []
