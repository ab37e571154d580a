"""The application's side of the TCP layer takes shortcuts beside its
general path: a read that sends nothing skips the layer's pass
(``TcpLayer.receive`` beside ``drive``'s collect and pump). Each is checked against the general path
on generated transfers: whenever the shortcut is taken, the general path
would have had nothing left to do, and every byte arrives as written."""

from __future__ import annotations

import asyncio
import random
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from looming.devices.stack import TcpFlow
from looming.net.tcp import TcpLayer
from looming.net.tcp.config import TcpConfig
from looming.net.tcp.connection import State, TcpConnection
from looming.net.tcp.isn import FourTuple
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime
from tests.tcp.ipv4_pair import Faults, wire_pair


def _nothing_left(layer: TcpLayer, conn: TcpConnection) -> None:
    """What ``drive``'s collect and pump would do now comes to nothing: no
    segment, event or accepted connection to move on, no connection touched
    but not re-armed, and this one's timer already at or before its next
    deadline (so re-arming it would keep it)."""
    endpoint = layer._endpoint
    assert not conn.outbox and not conn.events and conn.state is not State.CLOSED
    assert not endpoint._outbox and not endpoint._touched and not endpoint.accepted
    assert not layer._touched and not layer._arrivals
    deadline = conn.next_deadline()
    if deadline is not None:
        assert conn in layer._timers
        assert layer._timers[conn][0] <= deadline


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    receive_buffer=st.sampled_from([4096, 16384, 262144]),
    writes=st.lists(st.integers(1, 40_000), min_size=1, max_size=6),
    duplicate=st.sampled_from([0.0, 0.05]),
    reorder=st.sampled_from([0.0, 0.05]),
    nap=st.booleans(),
)
def test_a_read_that_sends_nothing_is_the_general_read(
    seed: int,
    receive_buffer: int,
    writes: list[int],
    duplicate: float,
    reorder: float,
    nap: bool,
) -> None:
    shortcuts = [0]
    general = TcpLayer.receive

    def checked(layer: TcpLayer, key: FourTuple, conn: TcpConnection) -> bytes:
        pumps = [0]
        pump, drive = layer._pump, layer.drive

        def counted_pump() -> None:
            pumps[0] += 1
            pump()

        def counted_drive(*args: Any) -> Any:
            pumps[0] += 1
            return drive(*args)

        layer._pump = counted_pump  # type: ignore[method-assign]
        layer.drive = counted_drive  # type: ignore[method-assign,assignment]
        try:
            data = general(layer, key, conn)
        finally:
            del layer._pump, layer.drive
        if not pumps[0]:
            shortcuts[0] += 1
            _nothing_left(layer, conn)
        return data

    rng = random.Random(seed)
    payloads = [rng.randbytes(size) for size in writes]
    config = TcpConfig(receive_buffer=receive_buffer)

    async def main() -> bytes:
        faults = Faults(duplicate=duplicate, reorder=reorder, seed=seed)
        a, b = wire_pair(faults)
        client = TcpLayer(a, UnixTime(), UnixRandom(1), config=config)
        server = TcpLayer(b, UnixTime(), UnixRandom(2), config=config)
        received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def serve(flow: TcpFlow) -> None:
            parts = []
            while chunk := await flow.read():
                parts.append(chunk)
                if nap:
                    await asyncio.sleep(0)  # let more arrive between reads
            received.set_result(b"".join(parts))

        await server.listen(80, serve)
        flow = await client.connect("10.9.0.2", 80)
        for payload in payloads:
            await flow.write(payload)
        await flow.shutdown()
        got = await asyncio.wait_for(received, 30)
        await flow.close()
        await client.close()
        await server.close()
        return got

    with mock.patch.object(TcpLayer, "receive", checked):
        got = asyncio.run(main())
    assert got == b"".join(payloads)
    assert shortcuts[0] > 0
