"""How an HTTP/2 connection's bytes are cut into turns (between which the
other connections run): by cost, a byte of DATA payload counting
DATA_DISCOUNT times less than any other byte, so uploads go in large turns
while floods of frames that do no work keep the small one; and a header
block over the limit is still caught before h2 buffers it."""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import h2.config
import h2.connection
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.http.http2 import (
    DATA_DISCOUNT,
    MAX_HEADER_BLOCK,
    PREFACE,
    TURN_BYTES,
    H2Session,
    _FrameWatch,
)

from .test_http2_window import PipeFlow, exchange, post

BUDGET = TURN_BYTES * DATA_DISCOUNT


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream_id)
        + payload
    )


def cost_and_data(stream: bytes) -> list[tuple[int, bool]]:
    """Each byte of ``stream`` (preface, then frames): whether it is DATA payload."""
    marks = [False] * len(PREFACE)
    pos = len(PREFACE)
    while pos < len(stream):
        length = int.from_bytes(stream[pos : pos + 3], "big")
        is_data = stream[pos + 3] == 0
        marks += [False] * 9 + [is_data] * length
        pos += 9 + length
    return [(DATA_DISCOUNT if not d else 1, d) for d in marks[: len(stream)]]


def turns(stream: bytes, reads: list[int], *, read: bool = True) -> list[tuple[int, int]]:
    """The turns a watch cuts ``stream`` into, read in pieces of ``reads``
    bytes (``read``: whether DATA goes to a handler, or is dropped)."""
    watch = _FrameWatch(MAX_HEADER_BLOCK, len(PREFACE), lambda _: read)
    cuts: list[tuple[int, int]] = []
    offset = 0
    for size in [*reads, len(stream)]:
        data = stream[offset : offset + size]
        start = 0
        while start < len(data):
            end = watch.turn(data, start, BUDGET)
            assert end > start, "a turn took nothing"
            assert not watch.over
            cuts.append((offset + start, offset + end))
            start = end
        offset += len(data)
        if offset >= len(stream):
            break
    return cuts


FRAMES = st.one_of(
    st.tuples(st.just(0x0), st.integers(0, 16384)),  # DATA
    st.tuples(st.just(0x6), st.just(8)),  # PING
    st.tuples(st.just(0x4), st.sampled_from([0, 6, 12])),  # SETTINGS
    st.tuples(st.just(0x1), st.integers(1, 600)),  # HEADERS (END_HEADERS)
    st.tuples(st.just(0x8), st.just(4)),  # WINDOW_UPDATE
)


@settings(max_examples=60, deadline=None)
@given(st.lists(FRAMES, max_size=60), st.lists(st.integers(1, 70000), max_size=8))
def test_turns_cover_the_bytes_and_cost_at_most_the_budget(
    frames: list[tuple[int, int]], reads: list[int]
) -> None:
    stream = PREFACE + b"".join(
        frame(kind, 0x4 if kind == 0x1 else 0, 1 if kind in (0, 1) else 0, b"\0" * n)
        for kind, n in frames
    )
    costs = cost_and_data(stream)
    cuts = turns(stream, reads)
    assert [a for a, _ in cuts] == [0] + [b for _, b in cuts[:-1]]
    assert cuts[-1][1] == len(stream)
    read_ends = set()
    total = 0
    for size in reads:
        total += size
        read_ends.add(total)
    for start, end in cuts:
        cost = sum(c for c, _ in costs[start:end])
        other = sum(1 for _, d in costs[start:end] if not d)
        # Over the budget by at most the rest of one frame header.
        assert cost <= BUDGET + 8 * DATA_DISCOUNT
        assert other <= TURN_BYTES + 8
        # A turn ends early only where the bytes read so far end.
        if end < len(stream) and end not in read_ends:
            assert cost >= BUDGET - DATA_DISCOUNT, (start, end, cost)


def test_an_upload_goes_in_large_turns_and_a_ping_flood_in_small_ones() -> None:
    upload = PREFACE + frame(0x0, 0, 1, b"u" * 16384) * 8  # 128 KiB read at once
    assert len(turns(upload, [])) <= 3  # 16 KiB DATA frames: four a turn
    pings = PREFACE + frame(0x6, 0, 0, b"12345678") * 8000  # 136,000 bytes
    cut = turns(pings, [])
    assert len(cut) >= len(pings) // (TURN_BYTES + 8)
    assert max(end - start for start, end in cut) <= TURN_BYTES + 8
    # DATA nobody reads (a reset, refused or ended stream's) costs in full.
    dropped = turns(upload, [], read=False)
    assert max(end - start for start, end in dropped) <= TURN_BYTES + 8
    empty_data = PREFACE + frame(0x0, 0, 1, b"") * 8000  # empty DATA: headers only
    assert max(end - start for start, end in turns(empty_data, [])) <= TURN_BYTES + 8


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 40000), min_size=1, max_size=10), st.integers(1, 5000))
def test_a_header_block_over_the_limit_is_caught_wherever_the_reads_end(
    continuations: list[int], read: int
) -> None:
    blocks = [frame(0x1, 0, 1, b"\0" * 100)] + [frame(0x9, 0, 1, b"\0" * n) for n in continuations]
    stream = PREFACE + frame(0x0, 0, 1, b"d" * 20000) + b"".join(blocks)
    watch = _FrameWatch(MAX_HEADER_BLOCK, len(PREFACE))
    caught_at = None
    for offset in range(0, len(stream), read):
        data = stream[offset : offset + read]
        start = 0
        while start < len(data) and caught_at is None:
            start = watch.turn(data, start, BUDGET)
            if watch.over:
                caught_at = offset + start
        if caught_at is not None:
            break
    block = 100 + sum(continuations)
    if block <= MAX_HEADER_BLOCK:
        assert caught_at is None
    else:
        # Caught at the header of the CONTINUATION that takes it over.
        running, pos = 100, len(PREFACE) + 9 + 20000 + 9 + 100
        for n in continuations:
            pos += 9
            running += n
            if running > MAX_HEADER_BLOCK:
                break
            pos += n
        assert caught_at == pos


def test_a_session_parses_an_upload_read_at_once_in_few_h2_calls() -> None:
    """At the session: 128 KiB of body read at once is parsed in a few calls
    to h2 (it was one every 4 KiB), and the body arrives whole."""

    got: list[bytes] = []

    class Reads:
        streams_request_body = True

        async def __call__(self, request: Any) -> Any:
            from looming.http import Response

            while True:
                chunk, more = await request.body_stream.next_chunk()
                got.append(chunk)
                if not more:
                    return Response(200, (), b"ok")

    async def main() -> int:
        flow = PipeFlow()
        session = H2Session(
            flow,  # type: ignore[arg-type]
            Reads(),
            server_name=b"t",
            date_line=lambda: b"",
            clock=time.monotonic,
        )
        calls = 0
        receive = session.conn.receive_data

        def counted(data: bytes) -> Any:
            nonlocal calls
            calls += 1
            return receive(data)

        session.conn.receive_data = counted  # type: ignore[method-assign,assignment]
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        running = asyncio.get_running_loop().create_task(session.run(b""))
        await exchange(flow, conn)
        post(conn, 1)
        for _ in range(8):
            conn.send_data(1, b"u" * 16384)
        conn.end_stream(1)
        before = calls
        await exchange(flow, conn)
        during = calls - before
        flow.inbox.put_nowait(b"")
        await running
        return during

    during = asyncio.run(main())
    assert b"".join(got) == b"u" * 16384 * 8
    assert during <= 4, during
