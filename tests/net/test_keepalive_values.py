"""Keepalive settings out of range are refused with ValueError, whatever
the number (infinite, not a number, huge, zero, negative), never another
error from deep inside (OverflowError from float('inf'))."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.devices.stack import TcpFlow
from looming.net.ipv6 import Ipv6Layer
from looming.net.stack import DirectStack
from tests.net.test_neighbours import A, run

BAD = st.one_of(
    st.sampled_from([float("inf"), float("-inf"), float("nan"), 0.0, -1.0, 1e300, 32767.5]),
    st.floats(max_value=0.0),
    st.floats(min_value=32768.0),
)


@settings(max_examples=20, deadline=None)
@given(st.lists(BAD, min_size=1, max_size=5))
def test_bad_keepalive_times_are_value_errors(values: list[float]) -> None:
    async def body(a: DirectStack, b: DirectStack, a6: Ipv6Layer, b6: Ipv6Layer) -> None:
        served: asyncio.Event = asyncio.Event()

        async def hold(flow: TcpFlow) -> None:
            await served.wait()

        await a.tcp.listen(7300, hold)
        flow = await b.tcp.connect(str(A.ip), 7300, timeout=2)
        for value in values:
            for key in ("idle", "interval"):
                with pytest.raises(ValueError, match="keepalive"):
                    flow.set_keepalive(True, **{key: value})
        flow.set_keepalive(True, idle=32767, interval=0.5)  # the largest is taken
        served.set()
        await flow.close()

    run(body)
