"""The link's frame policy (looming.net.ethernet.FramePolicy): what a flood
of segments, datagrams or fragments that belong to nothing costs, decided
from a few bytes of each frame before any parsing."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from looming.devices.stack import TcpFlow
from looming.net.ethernet import (
    EthernetLayer,
    FramePolicy,
    TokenBucket,
    connection_flow,
    sent_flow,
)
from looming.net.netif.memory import MemorySwitch
from looming.net.stack import DirectStack
from looming.net.tcp.config import SECOND, TcpConfig, TcpStats
from looming.net.tcp.connection import State
from looming.net.tcp.endpoint import RESET_BURST, RESET_RATE, TcpEndpoint
from looming.net.tcp.isn import COOKIE_MAX_AGE_PERIODS, COOKIE_PERIOD_NS, FourTuple
from looming.net.wire import tcp as tcp_wire
from looming.net.wire.tcp import ACK, RST, SYN, TcpHeader
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime

OURS = "10.0.0.1"
MAC = b"\x02\x00\x00\x00\x00\x01"


class StoppedClock:
    def __init__(self) -> None:
        self.now = 0

    def now_ns(self) -> int:
        return self.now


def ipv4(src: str, protocol: int, data: bytes, *, ident: int = 0, fragment: int = 0) -> bytes:
    """An untagged Ethernet frame holding an IPv4 packet to OURS."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(data),
        ident,
        fragment,
        64,
        protocol,
        0,
        socket.inet_aton(src),
        socket.inet_aton(OURS),
    )
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    checksum = ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF
    header = header[:10] + checksum.to_bytes(2, "big") + header[12:]
    return MAC + b"\x02\x66\x00\x00\x00\x09" + b"\x08\x00" + header + data


def tcp(sport: int, dport: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 2, 0x50, flags, 1000, 0, 0)


def udp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHHH", sport, dport, 12, 0) + b"data"


def swapped(frame: bytes) -> bytes:
    """The frame we would send back on the same flow (addresses and ports
    swapped; the IPv4 header without options)."""
    return frame[:26] + frame[30:34] + frame[26:30] + frame[36:38] + frame[34:36] + frame[38:]


def policy(clock: StoppedClock, **limits: int) -> tuple[FramePolicy, list[str]]:
    return FramePolicy(clock.now_ns(), **limits), []


def verdicts(policy: FramePolicy, clock: StoppedClock, frames: list[bytes]) -> list[str | None]:
    return [policy.verdict(frame, clock.now_ns) for frame in frames]


def test_stray_segments_beyond_the_rate_are_policed_flows_we_sent_on_never() -> None:
    clock = StoppedClock()
    rules = FramePolicy(0, stray_rate=1000, stray_burst=100)
    stray = [ipv4(f"10.0.1.{i % 250}", 6, tcp(1024 + i, 80, 0x10)) for i in range(300)]
    ours = ipv4("10.0.0.9", 6, tcp(40000, 80, 0x18))
    rules.sent(swapped(ours))
    got = [rules.verdict(frame, clock.now_ns) for frame in stray]
    assert got.count(None) == 100
    assert got[100:] == ["tcp_stray_policed"] * 200
    # The flow we sent on passes however many strays came before it.
    assert all(rules.verdict(ours, clock.now_ns) is None for _ in range(1000))
    clock.now += 20_000_000  # 20 ms: 20 more strays
    assert verdicts(rules, clock, stray[:50]).count(None) == 20


def test_a_reset_we_send_vouches_for_no_flow() -> None:
    clock = StoppedClock()
    rules = FramePolicy(0, stray_rate=1, stray_burst=1)
    stray = ipv4("10.0.1.1", 6, tcp(1024, 80, 0x10))
    rules.sent(swapped(ipv4("10.0.1.1", 6, tcp(1024, 80, 0x04))))  # our RST
    assert sent_flow(swapped(stray)) is not None
    assert verdicts(rules, clock, [stray, stray]) == [None, "tcp_stray_policed"]


def test_syns_have_their_own_bucket() -> None:
    clock = StoppedClock()
    rules = FramePolicy(0, syn_rate=10, syn_burst=5, stray_rate=10, stray_burst=5)
    syns = [ipv4("10.0.1.1", 6, tcp(1024 + i, 80, 0x02)) for i in range(10)]
    acks = [ipv4("10.0.1.1", 6, tcp(1024 + i, 80, 0x10)) for i in range(10)]
    assert verdicts(rules, clock, syns).count("syn_policed") == 5
    assert verdicts(rules, clock, acks).count("tcp_stray_policed") == 5  # SYNs took none


def test_datagrams_to_bound_ports_pass_to_others_are_policed() -> None:
    clock = StoppedClock()
    rules = FramePolicy(0, stray_rate=1000, stray_burst=10)
    rules.udp_ports.add((53).to_bytes(2, "big"))
    bound = [ipv4(f"10.0.1.{i}", 17, udp(1024 + i, 53)) for i in range(100)]
    closed = [ipv4(f"10.0.1.{i}", 17, udp(1024 + i, 9999)) for i in range(100)]
    assert verdicts(rules, clock, closed).count("udp_stray_policed") == 90
    assert verdicts(rules, clock, bound) == [None] * 100
    # An answer to a datagram we sent passes whatever its port.
    answer = ipv4("10.0.0.53", 17, udp(53, 33333))
    rules.sent(swapped(answer))
    assert verdicts(rules, clock, [answer] * 10) == [None] * 10


def test_new_reassemblies_beyond_the_rate_are_policed_their_fragments_not() -> None:
    clock = StoppedClock()
    rules = FramePolicy(0, fragment_rate=1000, fragment_burst=10, max_reassemblies=8)
    first = [ipv4("10.0.1.1", 17, b"F" * 8, ident=i, fragment=0x2000) for i in range(20)]
    later = [ipv4("10.0.1.1", 17, b"F" * 8, ident=i, fragment=1) for i in range(20)]
    assert verdicts(rules, clock, first).count(None) == 10
    # Of the 10 admitted, the 8 latest are remembered: their next pieces pass.
    assert verdicts(rules, clock, later[2:10]) == [None] * 8
    assert verdicts(rules, clock, later[10:]) == ["fragment_policed"] * 10
    # A first fragment is a fragment, whatever protocol it carries.
    syn_fragment = ipv4("10.0.1.1", 6, tcp(1, 2, 0x02), ident=99, fragment=0x2000)
    assert rules.verdict(syn_fragment, clock.now_ns) == "fragment_policed"


def test_the_flows_remembered_are_bounded_least_recently_sent_first_out() -> None:
    rules = FramePolicy(0, max_flows=100)
    frames = [ipv4(f"10.0.{i // 250}.{i % 250}", 6, tcp(1024 + i, 80, 0x10)) for i in range(300)]
    for frame in frames[:100]:
        rules.sent(swapped(frame))
    rules.sent(swapped(frames[0]))  # sent on again: the most recent now
    for frame in frames[100:199]:
        rules.sent(swapped(frame))
    assert len(rules.flows) == 100
    remembered = {frame for frame in frames if sent_flow(swapped(frame)) in rules.flows}
    assert frames[0] in remembered and frames[1] not in remembered
    assert set(frames[100:199]) <= remembered


@given(st.binary(max_size=80), st.sampled_from([b"\x08\x00", b"\x86\xdd", b"\x08\x06"]))
def test_any_frame_gets_a_verdict_without_raising(tail: bytes, ethertype: bytes) -> None:
    clock = StoppedClock()
    rules = FramePolicy(0, stray_burst=0, fragment_burst=0, syn_burst=0)
    frame = MAC + MAC + ethertype + tail
    assert rules.verdict(frame, clock.now_ns) in (
        None,
        "syn_policed",
        "tcp_stray_policed",
        "udp_stray_policed",
        "fragment_policed",
    )
    rules.sent(frame)
    assert len(rules.flows) + len(rules.handshakes) + len(rules.datagrams) <= 1


def test_a_stack_polices_strays_and_udp_bindings_open_their_port() -> None:
    """Through a whole stack: strays counted by reason in the ethernet
    counters; a bound UDP port's datagrams delivered however many came."""
    import asyncio

    async def main() -> None:
        clock = StoppedClock()
        stack = await DirectStack.connect(
            MemorySwitch().port(MAC),  # type: ignore[arg-type]
            time=clock,  # type: ignore[arg-type]
            clock=UnixClock(),
            random=UnixRandom(1),
            address=IPv4Interface(f"{OURS}/16"),
        )
        got: list[bytes] = []
        binding = await stack.udp.bind(5353, lambda datagram: got.append(datagram.data))
        burst = stack.ethernet.policy.stray.burst
        for i in range(500):
            stack.ethernet.input(ipv4(f"10.0.1.{i % 250}", 17, udp(1024, 5353)))
            stack.ethernet.input(ipv4(f"10.0.1.{i % 250}", 17, udp(1024, 5354)))
            stack.ethernet.input(ipv4(f"10.0.1.{i % 250}", 6, tcp(1024 + i, 80, 0x10)))
        counters = stack.counters()
        assert len(got) == 500
        assert counters["ethernet.udp_stray_policed"] + counters["ethernet.tcp_stray_policed"] == (
            1000 - burst
        )
        await binding.close()
        stack.ethernet.input(ipv4("10.0.1.1", 17, udp(1024, 5353)))
        assert (
            stack.counters()["ethernet.udp_stray_policed"]
            == counters["ethernet.udp_stray_policed"] + 1
        )
        await stack.disconnect()

    asyncio.run(main())


@pytest.mark.parametrize("ethertype", [0x0800, 0x86DD])
def test_a_layer_without_time_polices_nothing(ethertype: int) -> None:
    ethernet = EthernetLayer(MemorySwitch().port(MAC))  # type: ignore[arg-type]
    seen: list[bytes] = []
    ethernet.register(
        ethertype, lambda source, destination, payload, verified: seen.append(payload)
    )
    frame = ipv4("10.0.1.1", 6, tcp(1, 2, 0x10))
    frame = frame[:12] + ethertype.to_bytes(2, "big") + frame[14:] + bytes(40)
    for _ in range(1000):
        ethernet.input(frame)
    assert len(seen) == 1000


# -- what a stray segment costs TCP once past the frame policy -----------------


def tcp_endpoint() -> TcpEndpoint:
    return TcpEndpoint(TcpConfig(), TcpStats(), secret=bytes(32), mtu_for=lambda _: 1480)


def deliver(endpoint: TcpEndpoint, header: TcpHeader, now: int) -> list[TcpHeader]:
    us, them = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    endpoint.input(them, us, tcp_wire.emit(header, b"", src=them, dst=us), now)
    return [tcp_wire.parse(segment)[0] for _, segment, _ in endpoint.take_outbox()]


def test_resets_to_strays_are_rate_limited_and_counted() -> None:
    endpoint = tcp_endpoint()
    now = 10 * SECOND
    replies = [deliver(endpoint, TcpHeader(1024 + i, 81, i, i, ACK, 1000), now) for i in range(300)]
    assert sum(map(len, replies)) == RESET_BURST
    assert all(reply.flags == RST for each in replies for reply in each)
    assert endpoint.stats.rst_ratelimited == 300 - RESET_BURST
    assert endpoint.stats.no_connection == 300
    now += SECOND // 10  # a tenth of a second: RESET_RATE / 10 more
    replies = [deliver(endpoint, TcpHeader(2024 + i, 81, i, i, ACK, 1000), now) for i in range(100)]
    assert sum(map(len, replies)) == RESET_RATE // 10


def test_acks_are_checked_as_cookies_only_while_a_sent_cookie_lives() -> None:
    config = TcpConfig(syn_backlog=1)
    endpoint = TcpEndpoint(config, TcpStats(), secret=bytes(32), mtu_for=lambda _: 1480)
    endpoint.listen(80, None, backlog=1)
    now = SECOND
    stray = TcpHeader(5001, 80, 201, 12345, ACK, 1000)
    deliver(endpoint, stray, now)
    assert endpoint.stats.cookies_rejected == 0  # no cookie ever sent: no check
    deliver(endpoint, TcpHeader(5000, 80, 100, 0, SYN, 1000, mss=1460), now)  # fills the backlog
    (cookie,) = deliver(endpoint, TcpHeader(5002, 80, 300, 0, SYN, 1000, mss=1460), now)
    assert endpoint.stats.cookies_sent == 1
    deliver(endpoint, stray, now + SECOND)
    assert endpoint.stats.cookies_rejected == 1  # checked: a cookie is out
    later = now + (COOKIE_MAX_AGE_PERIODS + 1) * COOKIE_PERIOD_NS
    deliver(endpoint, stray, later)
    assert endpoint.stats.cookies_rejected == 1  # every cookie sent has expired
    # The real cookie is still taken while it lives.
    deliver(endpoint, TcpHeader(5002, 80, 301, cookie.seq + 1, ACK, 1000), now + SECOND)
    assert endpoint.stats.cookies_accepted == 1


@pytest.mark.parametrize("tags", [b"\x81\x00\x00\x05", b"\x88\xa8\x00\x05\x81\x00\x00\x07"])
def test_a_vlan_tag_is_no_way_round_the_policy(tags: bytes) -> None:
    clock = StoppedClock()
    rules = FramePolicy(0, stray_rate=1000, stray_burst=10)
    stray = ipv4("10.0.1.1", 6, tcp(1024, 80, 0x10))
    tagged = stray[:12] + tags + stray[12:]
    assert verdicts(rules, clock, [tagged] * 20).count("tcp_stray_policed") == 10
    ours = ipv4("10.0.0.9", 6, tcp(40000, 80, 0x10))
    rules.sent(swapped(ours))
    assert rules.verdict(ours[:12] + tags + ours[12:], clock.now_ns) is None


def test_one_datagrams_pieces_beyond_the_reassemblers_limit_are_policed() -> None:
    """A flood of pieces of one admitted datagram (duplicates, overlaps that
    drop it and start it again) gets in only as far as a datagram may have
    pieces."""
    clock = StoppedClock()
    rules = FramePolicy(0, fragment_rate=1000, fragment_burst=10, max_pieces=128)
    pieces = [ipv4("10.0.1.1", 17, b"F" * 8, ident=7, fragment=0x2000 | i) for i in range(1000)]
    got = verdicts(rules, clock, pieces)
    assert got[:128] == [None] * 128
    assert got[128:] == ["fragment_policed"] * (1000 - 128)
    # The datagram took one token of the burst of 10.
    assert [rules.fragments.take(0) for _ in range(10)].count(True) == 9


def ipv6(src: bytes, dst: bytes, next_header: int, data: bytes) -> bytes:
    header = struct.pack("!IHBB", 6 << 28, len(data), next_header, 64) + src + dst
    return MAC + b"\x02\x66\x00\x00\x00\x09" + b"\x86\xdd" + header + data


def test_ipv6_strays_are_policed_and_flows_we_sent_on_pass() -> None:
    clock = StoppedClock()
    rules = FramePolicy(0, stray_rate=1000, stray_burst=10)
    us, them = bytes(15) + b"\x01", bytes(15) + b"\x02"
    stray = [ipv6(them, us, 6, tcp(1024 + i, 80, 0x10)) for i in range(20)]
    assert verdicts(rules, clock, stray).count("tcp_stray_policed") == 10
    datagrams = [ipv6(them, us, 17, udp(1024 + i, 9999)) for i in range(5)]
    assert verdicts(rules, clock, datagrams) == ["udp_stray_policed"] * 5
    ours = ipv6(them, us, 6, tcp(40000, 443, 0x10))
    rules.sent(ipv6(us, them, 6, tcp(443, 40000, 0x18)))
    assert verdicts(rules, clock, [ours] * 10) == [None] * 10
    # Anything but TCP or UDP right after the fixed header is left to IPv6.
    assert rules.verdict(ipv6(them, us, 44, bytes(16)), clock.now_ns) is None


def test_a_flood_of_handshakes_pushes_no_established_flow_out() -> None:
    """SYN-ACKs (SYN cookies under a SYN flood: 2,000 a second) are
    remembered apart: the established flows stay however many go out, and a
    handshake's last ACK still passes."""
    clock = StoppedClock()
    rules = FramePolicy(0, stray_rate=1, stray_burst=0, max_flows=100, max_handshakes=50)
    established = ipv4("10.0.0.9", 6, tcp(40000, 80, 0x10))
    rules.sent(swapped(established))
    syn_acks = [ipv4(f"10.0.{i // 250}.{i % 250}", 6, tcp(1024 + i, 80, 0x12)) for i in range(500)]
    for frame in syn_acks:
        rules.sent(swapped(frame))
    assert len(rules.flows) == 1 and len(rules.handshakes) == 50
    assert rules.verdict(established, clock.now_ns) is None
    last_ack = syn_acks[-1][:47] + b"\x10" + syn_acks[-1][48:]
    assert rules.verdict(last_ack, clock.now_ns) is None
    assert rules.verdict(syn_acks[0][:47] + b"\x10" + syn_acks[0][48:], clock.now_ns) == (
        "tcp_stray_policed"
    )


# (host index, source port, destination port, protocol, TCP flags, IPv4 option words)
_PACKET = st.tuples(
    st.integers(0, 3),
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from([6, 17]),
    st.sampled_from([0x10, 0x18, 0x11, 0x04, 0x14, 0x12, 0x02]),
    st.integers(0, 10),
)


def _dpkt_frame(packet: tuple[int, int, int, int, int, int], outgoing: bool) -> bytes:
    """The packet built by dpkt: from host ``index`` to us, or (outgoing)
    from us to it with the ports the other way round."""
    import dpkt

    index, sport, dport, protocol, flags, words = packet
    them, us = socket.inet_aton(f"10.0.1.{index}"), socket.inet_aton(OURS)
    if outgoing:
        them, us, sport, dport = us, them, dport, sport
    layer: dpkt.Packet
    if protocol == 6:
        layer = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags)
    else:
        layer = dpkt.udp.UDP(sport=sport, dport=dport, data=b"x")
    ip = dpkt.ip.IP(src=them, dst=us, p=protocol, data=layer, opts=b"\x01" * 4 * words)
    ip.hl = 5 + words
    return MAC + MAC + b"\x08\x00" + bytes(ip)


@given(st.lists(st.tuples(st.booleans(), _PACKET), max_size=40))
def test_what_passes_is_what_flows_sent_on_answer_as_dpkt_reads_them(
    steps: list[tuple[bool, tuple[int, int, int, int, int, int]]],
) -> None:
    """Differential against dpkt's parse: with no budget for strays or SYNs,
    a received packet passes exactly when a packet we sent (no reset) had
    its addresses and ports the other way round; a reset vouches for none."""
    clock = StoppedClock()
    rules = FramePolicy(0, stray_burst=0, syn_burst=0)
    sent: set[tuple[int, int, int, int]] = set()
    for outgoing, packet in steps:
        index, sport, dport, protocol, flags, _ = packet
        frame = _dpkt_frame(packet, outgoing)
        if outgoing:
            rules.sent(frame)
            if protocol == 17 or not flags & 0x04:
                sent.add((index, sport, dport, protocol))
            continue
        expected: str | None = None
        if protocol == 6 and flags & 0x12 == 0x02:
            expected = "syn_policed"
        elif (index, sport, dport, protocol) not in sent:
            expected = "tcp_stray_policed" if protocol == 6 else "udp_stray_policed"
        assert rules.verdict(frame, clock.now_ns) == expected


# -- live connections pass whatever other flows churn the LRU ------------------

# Flows remembered by default: the churn below pushes one more than this.
DEFAULT_FLOWS = FramePolicy(0).max_flows


def _churn_frames(count: int, seed: int) -> list[bytes]:
    """Frames we send on ``count`` other TCP flows (established: no SYN;
    every fourth over IPv6), each second followed by a SYN-ACK (more than
    the handshakes remembered), each eighth by a UDP datagram; built from templates (no checksums:
    the policy reads none)."""
    ours4, ours6 = socket.inet_aton(OURS), bytes(15) + b"\x01"
    head4 = MAC + MAC + b"\x08\x00" + bytes.fromhex("4500002800000000400600") + b"\x00" + ours4
    head6 = MAC + MAC + b"\x86\xdd" + struct.pack("!IHBB", 6 << 28, 20, 6, 64) + ours6
    rest = struct.pack("!IIBBHHH", 1, 2, 0x50, 0x10, 1000, 0, 0)
    frames = []
    for i in range(count):
        them = (0x0A000000 + seed * 0x10000 + i + 0x10000).to_bytes(4, "big")
        ports = (443).to_bytes(2, "big") + (1024 + (i + seed) % 60000).to_bytes(2, "big")
        if i % 4 == 3:
            frames.append(head6 + b"\xfd" + bytes(11) + them + ports + rest)
        else:
            frames.append(head4 + them + ports + rest)
        if i % 2 == 0:
            frames.append(head4 + them + ports + rest[:9] + b"\x12" + rest[10:])
        if i % 8 == 0:
            udp_frame = head4[:23] + b"\x11" + head4[24:] + them + ports + b"\x00\x0c\x00\x00"
            frames.append(udp_frame + b"data")
    return frames


@settings(max_examples=6, deadline=None)
@given(
    st.integers(DEFAULT_FLOWS + 1, DEFAULT_FLOWS + 2000),
    st.integers(0, 0xFF),
    st.booleans(),
    st.lists(st.integers(0, DEFAULT_FLOWS + 2000), max_size=5),
)
def test_a_live_connections_segments_pass_after_any_churn_of_other_flows(
    churn: int, seed: int, over_ipv6: bool, sends_on_it: list[int]
) -> None:
    """A connection the TCP layer holds (pinned) and idle while more flows
    than the LRU holds are sent on still gets its segments through while
    strays are policed; a flow only sent on (not pinned) is forgotten."""
    clock = StoppedClock()
    rules = FramePolicy(0, stray_rate=1000, stray_burst=10)
    if over_ipv6:
        us, them = IPv6Address("fd00::1"), IPv6Address("fd00::2")
        segment = ipv6(them.packed, us.packed, 6, tcp(50000, 443, 0x18))
        idle = ipv6(them.packed, us.packed, 6, tcp(50001, 443, 0x18))
    else:
        us, them = IPv4Address(OURS), IPv4Address("10.0.0.9")  # type: ignore[assignment]
        segment = ipv4(str(them), 6, tcp(50000, 443, 0x18))
        idle = ipv4(str(them), 6, tcp(50001, 443, 0x18))
    rules.pin(connection_flow(us, 443, them, 50000))
    rules.sent(
        swapped(segment)
        if not over_ipv6
        else ipv6(us.packed, them.packed, 6, tcp(443, 50000, 0x10))
    )
    rules.sent(
        swapped(idle) if not over_ipv6 else ipv6(us.packed, them.packed, 6, tcp(443, 50001, 0x10))
    )
    frames = _churn_frames(churn, seed)
    for i, frame in enumerate(frames):
        rules.sent(frame)
        if i in sends_on_it:  # the connection sends meanwhile: no matter
            rules.sent(
                ipv6(us.packed, them.packed, 6, tcp(443, 50000, 0x10))
                if over_ipv6
                else swapped(segment)
            )
    assert len(rules.flows) <= DEFAULT_FLOWS and len(rules.datagrams) <= DEFAULT_FLOWS
    assert len(rules.handshakes) <= rules.max_handshakes
    strays = [ipv4(f"10.0.1.{i % 250}", 6, tcp(1024 + i, 443, 0x10)) for i in range(50)]
    got = verdicts(rules, clock, strays + [segment] * 100)
    assert got[:50].count("tcp_stray_policed") == 40
    assert got[50:] == [None] * 100
    assert rules.verdict(idle, clock.now_ns) == "tcp_stray_policed"
    # A bound UDP port's datagrams pass too, whatever churned; others not.
    rules.udp_ports.add((5353).to_bytes(2, "big"))
    bound = ipv4(str(them), 17, udp(5353, 5353)) if not over_ipv6 else None
    bound = bound or ipv6(them.packed, us.packed, 17, udp(5353, 5353))
    closed = bound[:-10] + (5354).to_bytes(2, "big") + bound[-8:]
    assert verdicts(rules, clock, [bound] * 20) == [None] * 20
    assert rules.verdict(closed, clock.now_ns) == "udp_stray_policed"


@given(
    st.lists(
        st.tuples(
            st.sampled_from([4, 6]),
            st.ip_addresses(v=4),
            st.ip_addresses(v=6),
            st.integers(1, 0xFFFF),
            st.integers(1, 0xFFFF),
        ),
        max_size=10,
    )
)
def test_a_connections_key_is_what_verdict_reads_from_its_segments(
    cases: list[tuple[int, IPv4Address, IPv6Address, int, int]],
) -> None:
    """connection_flow gives the key of the frames sent on the connection
    as sent_flow reads them (which verdict reads from the answers alike)."""
    for version, them4, them6, our_port, their_port in cases:
        if version == 4:
            out = ipv4(OURS, 6, tcp(our_port, their_port, 0x10))
            out = out[:26] + out[26:30] + them4.packed + out[34:]
            key = connection_flow(IPv4Address(OURS), our_port, them4, their_port)
        else:
            us = IPv6Address("fd00::1")
            out = ipv6(us.packed, them6.packed, 6, tcp(our_port, their_port, 0x10))
            key = connection_flow(us, our_port, them6, their_port)
        assert sent_flow(out) == key


def test_the_endpoint_tells_of_each_connection_entering_and_leaving_its_table() -> None:
    """What the TCP layer pins and releases: a connection from SYN-SENT on,
    until it leaves the table."""
    endpoint = tcp_endpoint()
    adopted: list[FourTuple] = []
    released: list[FourTuple] = []
    endpoint.on_adopt, endpoint.on_release = adopted.append, released.append
    key, conn = endpoint.connect(IPv4Address(OURS), IPv4Address("10.0.0.2"), 80, 10 * SECOND)
    assert adopted == [key] and conn.state is State.SYN_SENT and released == []
    conn.abort(10 * SECOND)
    endpoint.collect(key, conn)
    assert released == [key] and key not in endpoint.connections


class PinsAndLru(RuleBasedStateMachine):
    """Connections pinned and released, other flows sent on, against a
    model: a segment passes exactly while its connection is pinned or its
    flow is among the ``max_flows`` sent on (or released) last; a datagram
    exactly while its flow is among the ``max_flows`` UDP flows sent on
    last (a TCP flow vouches for no datagram, nor a datagram for a segment)."""

    LIMIT = 8

    def __init__(self) -> None:
        super().__init__()
        self.clock = StoppedClock()
        self.policy = FramePolicy(0, stray_burst=0, max_flows=self.LIMIT)
        self.pinned: set[int] = set()
        self.recent: dict[int, None] = {}
        self.datagrams: dict[int, None] = {}

    @staticmethod
    def incoming(flow: int) -> bytes:
        return ipv4(f"10.0.2.{flow}", 6, tcp(2000 + flow, 80, 0x18))

    def remember(self, flow: int, recent: dict[int, None] | None = None) -> None:
        recent = self.recent if recent is None else recent
        recent.pop(flow, None)
        recent[flow] = None
        if len(recent) > self.LIMIT:
            del recent[next(iter(recent))]

    @rule(flow=st.integers(0, 30))
    def pin(self, flow: int) -> None:
        self.policy.pin(
            connection_flow(IPv4Address(OURS), 80, IPv4Address(f"10.0.2.{flow}"), 2000 + flow)
        )
        self.pinned.add(flow)

    @rule(flow=st.integers(0, 30))
    def release(self, flow: int) -> None:
        self.policy.release(
            connection_flow(IPv4Address(OURS), 80, IPv4Address(f"10.0.2.{flow}"), 2000 + flow)
        )
        if flow in self.pinned:
            self.pinned.discard(flow)
            self.remember(flow)

    @rule(flow=st.integers(0, 30), flags=st.sampled_from([0x10, 0x18, 0x11]))
    def send(self, flow: int, flags: int) -> None:
        self.policy.sent(swapped(ipv4(f"10.0.2.{flow}", 6, tcp(2000 + flow, 80, flags))))
        if flow not in self.pinned:
            self.remember(flow)

    @rule(flow=st.integers(0, 30))
    def send_datagram(self, flow: int) -> None:
        """A datagram on the same addresses and ports: UDP's own LRU."""
        self.policy.sent(swapped(ipv4(f"10.0.2.{flow}", 17, udp(2000 + flow, 80))))
        self.remember(flow, self.datagrams)

    @rule(flow=st.integers(0, 30))
    def receive_datagram(self, flow: int) -> None:
        expected = None if flow in self.datagrams else "udp_stray_policed"
        datagram = ipv4(f"10.0.2.{flow}", 17, udp(2000 + flow, 80))
        assert self.policy.verdict(datagram, self.clock.now_ns) == expected

    @rule(flow=st.integers(0, 30))
    def receive(self, flow: int) -> None:
        expected = None if flow in self.pinned or flow in self.recent else "tcp_stray_policed"
        assert self.policy.verdict(self.incoming(flow), self.clock.now_ns) == expected

    @invariant()
    def bounded(self) -> None:
        assert len(self.policy.flows) <= self.LIMIT and len(self.policy.datagrams) <= self.LIMIT
        assert len(self.policy.connections) == len(self.pinned)


TestPinsAndLru = PinsAndLru.TestCase
TestPinsAndLru.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)


@pytest.mark.parametrize("version", [4, 6])
def test_a_stacks_connections_are_pinned_while_it_holds_them(version: int) -> None:
    """Through two stacks: an idle connection's data gets in after more
    flows than the LRU holds were sent on and with no budget left for
    strays; its key leaves the pins when the stack lets the connection go
    (TIME-WAIT still held by the side that closed first)."""
    import asyncio

    async def main() -> None:
        switch = MemorySwitch()
        a, b = [
            await DirectStack.connect(
                switch.port(),
                random=UnixRandom(host),
                address=IPv4Interface(f"10.0.0.{host}/24"),
                ipv6_address=IPv6Interface(f"fd00::{host}/64") if version == 6 else None,
                time=UnixTime(),
                clock=UnixClock(),
                ipv6=version == 6,
                slaac=False,
            )
            for host in (1, 2)
        ]
        try:
            got: asyncio.Queue[bytes] = asyncio.Queue()

            async def serve(stream: TcpFlow) -> None:
                while data := await stream.read():
                    got.put_nowait(data)
                await stream.close()

            await b.tcp.listen(7, serve)
            stream = await a.tcp.connect("fd00::2" if version == 6 else "10.0.0.2", 7, timeout=5)
            await stream.write(b"first")
            assert await asyncio.wait_for(got.get(), 5) == b"first"
            policy = b.ethernet.policy
            assert len(policy.connections) == 1  # SYN-RECEIVED on, then established
            assert len(a.ethernet.policy.connections) == 1  # the side that connected
            for frame in _churn_frames(DEFAULT_FLOWS + 1, 0):
                policy.sent(frame)
            policy.stray = TokenBucket(0, 0, 0)  # no stray gets in any more
            await stream.write(b"after the churn")
            assert await asyncio.wait_for(got.get(), 5) == b"after the churn"
            await stream.close()
            for _ in range(100):
                if not policy.connections:
                    break
                await asyncio.sleep(0.01)
            assert not policy.connections  # b closed second: no TIME-WAIT
            assert len(a.ethernet.policy.connections) == 1  # a is in TIME-WAIT
        finally:
            await a.disconnect()
            await b.disconnect()
        assert not a.ethernet.policy.connections  # reset at shutdown, released

    asyncio.run(main())


def test_frames_to_another_host_spend_none_of_our_budgets() -> None:
    """A flood of SYNs and stray segments unicast to another MAC (a switch
    that floods, a TAP's neighbour) is dropped as not ours before the
    policy: our own strays still find the budgets whole."""
    clock = StoppedClock()
    ethernet = EthernetLayer(MemorySwitch().port(MAC), time=clock)  # type: ignore[arg-type]
    seen: list[bytes] = []
    ethernet.register(0x0800, lambda source, destination, payload, verified: seen.append(payload))
    other = b"\x02\x00\x00\x00\x00\x77"
    for i in range(5000):
        for frame in (
            ipv4(f"10.0.{i % 200}.{i % 250 + 1}", 6, tcp(1000 + i, 80, SYN)),
            ipv4(f"10.0.{i % 200}.{i % 250 + 1}", 6, tcp(1000 + i, 81, ACK)),
        ):
            ethernet.input(other + frame[6:])
    assert ethernet.counters["not_for_us"] == 10_000
    assert not seen
    assert not any(name.endswith("_policed") for name in ethernet.counters)
    # Ours: SYNs up to the burst and strays up to theirs pass at the same instant.
    syns = [ipv4("10.0.9.9", 6, tcp(2000 + i, 80, SYN)) for i in range(64)]
    for frame in syns:
        ethernet.input(frame)
    assert len(seen) == 64
