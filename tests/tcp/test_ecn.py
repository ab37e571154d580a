"""ECN (RFC 3168): negotiation, ECT(0) on new data only, CE echoed with ECE
until CWR, one reduction per window; against Linux with tshark and Linux's
counters, and with CE marks set by the loss relay."""

from __future__ import annotations

import asyncio
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from looming.net.stack import DirectStack
from looming.net.tcp import TcpConfig, TcpStream
from looming.net.tcp.tcb import CWR, ECE
from tests.net.kernel import KernelPeer, unique_suffix
from tests.tcp.lossy import looming_echo, open_looming, start_echo_server
from tests.tcp.relay import Impairments, mark_ce, relayed_path
from tests.tcp.script import IRS, ISS, PLAIN, active, established, passive, seg

A = ISS + 1
B = IRS + 1


def _flags(header) -> int:  # type: ignore[no-untyped-def]
    return int(header.flags) & (ECE | CWR)


def test_passive_open_agrees_when_the_syn_asks() -> None:
    syn = replace(seg("S", IRS), flags=seg("S", IRS).flags | ECE | CWR)
    s = passive(syn, replace(PLAIN, ecn="accept"))
    ((syn_ack, _),) = s.take()
    assert _flags(syn_ack) == ECE  # ECE alone: "yes" (RFC 3168 6.1.1)
    assert s.conn.ecn_ok and s.conn.stats.ecn_negotiated == 1
    plain = passive(seg("S", IRS), replace(PLAIN, ecn="accept"))
    assert _flags(plain.take()[0][0]) == 0 and not plain.conn.ecn_ok
    off = passive(syn, replace(PLAIN, ecn="off"))
    assert _flags(off.take()[0][0]) == 0 and not off.conn.ecn_ok


def test_active_open_asks_only_when_on() -> None:
    s = active(replace(PLAIN, ecn="on"))
    assert _flags(s.conn.outbox[0][0] if s.conn.outbox else s.take()[0][0]) == ECE | CWR
    assert _flags(active(replace(PLAIN, ecn="accept")).take()[0][0]) == 0
    # A SYN-ACK with both bits is no agreement (a reflecting middlebox).
    both = active(replace(PLAIN, ecn="on"))
    both.take()
    synack = seg("SA", IRS, ISS + 1, mss=1000)
    both.recv(replace(synack, flags=synack.flags | ECE | CWR))
    assert not both.conn.ecn_ok
    agree = active(replace(PLAIN, ecn="on"))
    agree.take()
    agree.recv(replace(synack, flags=synack.flags | ECE))
    assert agree.conn.ecn_ok


def _ecn_established():  # type: ignore[no-untyped-def]
    s = established(replace(PLAIN, ecn="on"))
    s.conn.ecn_ok = True
    s.conn.cc.cwnd = 20_000
    return s


def test_new_data_is_ect_and_retransmissions_are_not() -> None:
    s = _ecn_established()
    s.conn.send(b"x" * 3000, s.now)
    marked = s.conn.take_outbox_marked()
    assert [ect for _, _, ect in marked] == [True, True, True]
    assert s.conn.rto_at is not None
    s.conn.on_timer(s.conn.rto_at)  # the RTO resends the first segment
    resent = s.conn.take_outbox_marked()
    assert [ect for _, payload, ect in resent if payload] == [False]
    s.conn.send_ack(s.now)
    assert [ect for *_, ect in s.conn.take_outbox_marked()] == [False]  # pure ACKs neither


def test_ce_is_echoed_until_cwr() -> None:
    s = _ecn_established()
    s.conn.input(seg("PA", B, A), b"d" * 100, s.now, ce=True)
    s.advance(50)  # the delayed ACK
    acks = s.take()
    assert acks and all(_flags(h) & ECE for h, _ in acks)
    s.recv(seg("PA", B + 100, A), b"e" * 100)
    s.advance(50)
    assert all(_flags(h) & ECE for h, _ in s.take())  # still owed
    s.recv(replace(seg("PA", B + 200, A), flags=seg("PA", B, A).flags | CWR), b"f" * 100)
    s.advance(50)
    assert not any(_flags(h) & ECE for h, _ in s.take())
    assert s.conn.stats.ecn_ce_received == 1


def test_ece_reduces_once_per_window_and_says_cwr() -> None:
    s = _ecn_established()
    s.conn.send(b"x" * 10_000, s.now)
    s.take()
    ece_ack = replace(seg("A", B, A + 1000), flags=seg("A", B, A).flags | ECE)
    s.recv(ece_ack)
    cwnd = s.conn.cc.cwnd
    assert cwnd <= 20_000 // 2 + 1000 and s.conn.stats.ecn_echoes_received == 1
    s.recv(replace(ece_ack, ack=(A + 2000) & 0xFFFFFFFF))  # same window: no second cut
    assert s.conn.stats.ecn_echoes_received == 1
    s.recv(seg("A", B, A + 10_000))
    s.take()
    s.call("send", b"y" * 1000)  # the next new data says CWR
    sent = s.take()
    assert any(_flags(h) & CWR for h, p in sent if p)


def test_relay_marks_only_ecn_capable_packets() -> None:
    ip = bytearray(20)
    ip[0] = 0x45
    frame = b"\x00" * 12 + b"\x08\x00" + bytes(ip)
    assert mark_ce(frame) is None  # Not-ECT stays as it is
    ip[1] = 0b10
    marked = mark_ce(b"\x00" * 12 + b"\x08\x00" + bytes(ip))
    assert marked is not None and marked[15] & 0b11 == 0b11
    header = marked[14:34]
    total = sum(int.from_bytes(header[i : i + 2], "big") for i in range(0, 20, 2))
    assert (total & 0xFFFF) + (total >> 16) == 0xFFFF  # the checksum holds


# ------------------------------------------------------------------ against Linux

ECN_CLIENT = r"""
import socket, sys
c = socket.create_connection(("10.77.0.2", int(sys.argv[1])))
c.sendall(b"q" * 200_000)
c.shutdown(socket.SHUT_WR)
got = 0
while chunk := c.recv(65536):
    got += len(chunk)
print(got)
"""


@pytest.mark.root
def test_linux_asks_for_ecn_and_looming_agrees(kernel_peer: KernelPeer, tmp_path: Path) -> None:
    kernel_peer.sh("sysctl", "-qw", "net.ipv4.tcp_ecn=1")
    capture = tmp_path / "ecn.pcap"
    counters: dict[str, int] = {}

    async def body(stack: DirectStack) -> None:
        async def echo(flow: TcpStream) -> None:
            while data := await flow.read():
                await flow.write(data)
            await flow.shutdown()

        listener = await stack.tcp.listen(6100, echo)
        client = await kernel_peer.python(ECN_CLIENT, "6100")
        out, err = await asyncio.wait_for(client.communicate(), 60)
        assert client.returncode == 0, err.decode()
        assert int(out) == 200_000
        await listener.close()
        counters.update(stack.tcp.stats.as_dict())

    kernel_peer.run(body, pcap=str(capture))
    assert counters["ecn_negotiated"] == 1
    fields = ["-T", "fields", "-e", "tcp.flags", "-e", "ip.dsfield.ecn", "-e", "tcp.len"]
    rows = subprocess.run(
        ["tshark", "-r", str(capture), "-Y", "tcp.port == 6100", *fields],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    flags = [(int(f, 16), int(e), int(n)) for f, e, n in (r.split("\t") for r in rows if r)]
    syns = [(f, e) for f, e, _ in flags if f & 0x02]
    assert (0x02 | 0x40 | 0x80, 0) in syns  # Linux's SYN: ECE and CWR
    assert (0x12 | 0x40, 0) in syns  # looming's SYN-ACK: ECE
    data_ecn = {e for f, e, n in flags if n > 0}
    assert 2 in data_ecn  # ECT(0) on data, both ways
    nstat = kernel_peer.sh("nstat", "-az", "IpExtInECT0Pkts")
    assert int(re.search(r"IpExtInECT0Pkts\s+(\d+)", nstat).group(1)) > 50  # type: ignore[union-attr]


@pytest.mark.root
def test_ce_marks_make_both_ends_slow_down() -> None:
    """looming asks Linux for ECN across the relay, which marks 2% of the
    ECN-capable packets CE: each end echoes and the other reduces."""
    with relayed_path(unique_suffix()) as path:
        server = start_echo_server(path)
        try:
            path.impair(Impairments(ce=0.02, seed=4))

            async def body():  # type: ignore[no-untyped-def]
                stack = await open_looming(path, TcpConfig(ecn="on"))
                try:
                    return await asyncio.wait_for(looming_echo(stack, path, 3_000_000), 60)
                finally:
                    await stack.disconnect()

            result = asyncio.run(body())
            relay = path.counters()
            nstat = subprocess.run(
                path.left("nstat", "-az", "TcpExtTCPDeliveredCE"), capture_output=True, text=True
            ).stdout
        finally:
            server.kill()
            server.wait()
    assert result.intact
    assert relay["ce_marked"] > 20 and relay["dropped"] == 0
    counters = result.counters
    assert counters["ecn_negotiated"] == 1
    assert counters["ecn_ce_received"] > 0  # Linux's data marked on its way to us
    assert counters["ecn_echoes_received"] > 0  # Linux echoed marks on our data
    assert counters["timeouts"] == 0
    delivered_ce = re.search(r"TcpExtTCPDeliveredCE\s+(\d+)", nstat)
    assert delivered_ce is not None and int(delivered_ce.group(1)) > 0  # Linux saw our ECE
