"""A window too small to send into, whose update is lost, with nothing in
flight: the persist timer's override (RFC 9293 3.8.6.2.1) sends what fits,
and the rest follows. Found by the byte-stream model test."""

from __future__ import annotations

from looming.net.tcp.config import SECOND, TcpConfig, TcpStats
from looming.net.tcp.connection import Event, State, TcpConnection

DATA = bytes(range(256)) * 8  # 2,048 bytes


def test_a_lost_window_update_does_not_stall_a_small_window_sender() -> None:
    config = TcpConfig(send_buffer=2001, receive_buffer=2000, sack=False, timestamps=False)
    now = 0
    client = TcpConnection.connect(
        config, TcpStats(), local_port=40000, remote_port=80, iss=1,
        path_mss=1460, timestamp_offset=0, now=now,
    )  # fmt: skip
    ((syn, _),) = client.take_outbox()
    server = TcpConnection.accept_syn(
        config, TcpStats(), syn, iss=7, path_mss=1460, timestamp_offset=5, now=now
    )
    sides = (client, server)

    def exchange(lose_to_client: bool = False) -> None:
        for _ in range(100):
            moved = False
            for index, conn in enumerate(sides):
                if Event.ACK_DUE in conn.take_events():
                    conn.flush_ack(now)
                peer = sides[1 - index]
                for header, payload in conn.take_outbox():
                    moved = True
                    if not (lose_to_client and peer is client):
                        peer.input(header, bytes(payload), now)
            if not moved:
                return

    exchange()
    assert client.state is State.ESTABLISHED
    assert client.send(DATA[:2001], now) == 2001
    exchange()  # 1,460 bytes go; the receiver's window is now 540
    delayed_ack = server.next_deadline()
    assert delayed_ack is not None
    now = delayed_ack
    server.on_timer(now)
    exchange()
    received = server.receive(now, None)
    assert len(received) == 1460
    exchange(lose_to_client=True)  # the update reopening the window is lost
    assert client.bytes_in_flight == 0 and client.next_deadline() is not None
    for _ in range(10):
        deadline = client.next_deadline()
        if deadline is None or len(received) == 2001:
            break
        now = max(now, deadline)
        assert now < 60 * SECOND
        client.on_timer(now)
        exchange()
        received += server.receive(now, None)
    assert received == DATA[:2001]
