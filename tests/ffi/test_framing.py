"""The channels' one framer: messages survive any split of the stream, and
both channels (socketpair and vchan) frame the same bytes with it."""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.ffi import channel, vchan_transport
from looming.ffi.framing import MAX_MESSAGE, ChannelClosed, MessageReader, frame


class Pieces:
    """A stream delivered in the given piece sizes (0 = end of stream)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data = data
        self.sizes = sizes
        self.reads = 0

    def __call__(self, chunk: memoryview) -> int:
        self.reads += 1
        size = min(self.sizes.pop(0) if self.sizes else len(self.data), len(chunk), len(self.data))
        chunk[:size] = self.data[:size]
        self.data = self.data[size:]
        return size


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(st.binary(max_size=300), max_size=8),
    sizes=st.lists(st.integers(min_value=1, max_value=64), max_size=40),
    chunk_size=st.integers(min_value=1, max_value=100),
)
def test_messages_survive_any_split(
    messages: list[bytes], sizes: list[int], chunk_size: int
) -> None:
    stream = Pieces(b"".join(frame(m) for m in messages), sizes)
    reader = MessageReader(chunk_size)
    assert [reader.read(stream) for _ in messages] == messages
    assert reader.read(stream) is None  # then the stream ends


def test_frame_is_a_little_endian_length_then_the_bytes() -> None:
    assert frame(b"abc") == b"\x03\x00\x00\x00abc"
    assert frame(bytearray()) == b"\x00\x00\x00\x00"


def test_messages_already_received_need_no_read() -> None:
    stream = Pieces(frame(b"one") + frame(b"two"), [1000])
    reader = MessageReader(1000)
    assert reader.read(stream) == b"one" and stream.reads == 1
    assert reader.read(stream) == b"two" and stream.reads == 1


def test_a_stream_ending_inside_a_message_is_the_end() -> None:
    stream = Pieces(frame(b"whole") + frame(b"cut short")[:-2], [3])
    reader = MessageReader(16)
    assert reader.read(stream) == b"whole"
    assert reader.read(stream) is None


def test_an_oversized_length_closes_before_its_bytes_arrive() -> None:
    reader = MessageReader(16, limit=10)
    stream = Pieces(frame(b"x" * 10) + struct.pack("<I", 11), [])
    assert reader.read(stream) == b"x" * 10
    with pytest.raises(ChannelClosed, match="11 bytes exceeds the limit"):
        reader.read(stream)
    with pytest.raises(ChannelClosed, match=f"{MAX_MESSAGE + 1} bytes"):
        MessageReader(16).read(Pieces(struct.pack("<I", MAX_MESSAGE + 1), []))


def test_the_channels_share_the_framer() -> None:
    assert channel.ChannelClosed is ChannelClosed and channel.MAX_MESSAGE == MAX_MESSAGE
    assert vars(vchan_transport)["ChannelClosed"] is ChannelClosed
    assert not hasattr(channel, "_LENGTH") and not hasattr(vchan_transport, "_LENGTH")


def test_socket_channel_round_trip_and_close() -> None:
    left, right = socket.socketpair()
    a, b = channel.SocketChannel(left), channel.SocketChannel(right)
    big = bytes(range(256)) * 2000  # larger than the 256 KB read buffer

    def send_both() -> None:
        a.send(b"small")
        a.send(big)

    sender = threading.Thread(target=send_both)
    sender.start()
    assert b.recv() == b"small"
    assert b.recv() == big
    sender.join()
    right.sendall(frame(b"back"))
    assert a.recv() == b"back"
    a.close()
    with pytest.raises(ChannelClosed, match="closed by the other end"):
        b.recv()
    b.close()
