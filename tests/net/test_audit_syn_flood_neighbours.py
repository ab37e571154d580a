"""A SYN flood from spoofed on-link sources does not delay real clients.

One shared token bucket polices SYNs before parsing (ethernet.FramePolicy):
under a flood beyond it, a real client's SYN was dropped as often as a
spoofed one and its connect waited for the kernel's retransmission, 1 s or
3 s (6 of 20 connects at 10,000 SYN/s in the audit; Linux's never). A real
on-link client resolved our address before connecting, so its IP source is
bound to its frame's MAC in our ARP cache: such SYNs beyond the shared
budget take a budget of their own. The strangers' stay policed.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from looming.net.ethernet import FramePolicy
from looming.net.stack import DirectStack
from tests.net.kernel import KernelPeer
from tests.net.test_hostile import WIDE, echo, kernel_program

# Connect to HOST port 7 COUNT times, GAP s apart, once a line comes on
# stdin (after "ready"); print the seconds each connect took (5: refused or
# timed out) as JSON.
CONNECTS = r"""
import json, socket, sys, time
host, count, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
warm = socket.create_connection((host, 7), timeout=5)  # resolves looming: it learns us
warm.close()
print("ready", flush=True)
sys.stdin.readline()
took = []
for _ in range(count):
    conn = socket.socket()
    conn.settimeout(5)
    started = time.monotonic()
    try:
        conn.connect((host, 7))
        took.append(round(time.monotonic() - started, 3))
    except OSError:
        took.append(5.0)
    conn.close()
    time.sleep(gap)
print(json.dumps(took), flush=True)
"""

# SYN_FLOOD's frames, sent smoothly: RATE a second for SECONDS, a few every
# half millisecond, so the shared bucket never refills between bursts (a
# flood in bursts 5 ms apart leaves it tokens for whoever comes between).
SMOOTH_FLOOD = r"""
import socket, sys, time
import dpkt
iface, mac, dst, port, rate, seconds = sys.argv[1:7]
port, rate, seconds = int(port), int(rate), float(seconds)
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
raw.bind((iface, 0))
frames = []
for i in range(5000):
    src = socket.inet_aton(f"10.77.{1 + i // 250}.{1 + i % 250}")
    syn = dpkt.tcp.TCP(sport=1024 + i, dport=port, seq=i * 7919, flags=dpkt.tcp.TH_SYN,
                       win=64240)
    packet = dpkt.ip.IP(src=src, dst=socket.inet_aton(dst), p=6, ttl=64, data=syn)
    frames.append(bytes(dpkt.ethernet.Ethernet(
        dst=bytes.fromhex(mac), src=b"\x02\x66" + src, type=0x0800, data=packet)))
print("ready", flush=True)
sys.stdin.readline()
started = time.monotonic()
sent = 0
while (now := time.monotonic()) < started + seconds:
    due = int((now - started) * rate)
    while sent < due:
        raw.send(frames[sent % len(frames)])
        sent += 1
    time.sleep(0.0005)
print("sent", sent, round(time.monotonic() - started, 3), flush=True)
"""

RATE = 6000  # SYN/s: three times the shared budget (2,000/s)
SECONDS = 3.0
CONNECTS_DURING = 15


@pytest.mark.root
def test_real_clients_connect_at_once_during_a_spoofed_syn_flood(
    kernel_peer: KernelPeer,
) -> None:
    async def body(stack: DirectStack) -> None:
        await stack.tcp.listen(7, echo)
        host = str(WIDE.ip)
        client = await kernel_program(kernel_peer, CONNECTS, host, CONNECTS_DURING, 0.15)
        flood = await kernel_program(
            kernel_peer,
            SMOOTH_FLOOD,
            kernel_peer.tap_name,
            stack.ethernet.mac.hex(),
            host,
            "7",
            RATE,
            SECONDS,
        )
        assert client.stdout is not None and client.stdin is not None
        assert flood.stdout is not None and flood.stdin is not None
        assert (await asyncio.wait_for(client.stdout.readline(), 30)).strip() == b"ready"
        assert (await asyncio.wait_for(flood.stdout.readline(), 30)).strip() == b"ready"
        flood.stdin.write(b"go\n")
        await asyncio.sleep(0.2)  # the shared budget is spent by then
        client.stdin.write(b"go\n")
        took = json.loads(await asyncio.wait_for(client.stdout.readline(), 90))
        sent = (await asyncio.wait_for(flood.stdout.readline(), 60)).split()
        assert await flood.wait() == 0 and await client.wait() == 0
        counters = stack.counters()
        policed = counters.get("ethernet.syn_policed", 0)
        detail = f"connects took {took}; flood: {sent[1:]}; {policed} policed"
        assert policed > 1000, detail  # the flood was beyond the shared budget
        assert max(took) < 0.5, detail
        assert counters.get("ethernet.syn_from_neighbour", 0) >= 1, detail

    kernel_peer.run(body, address=WIDE)


def _syn(source: bytes, mac: bytes) -> bytes:
    """A SYN to port 7 from IPv4 ``source`` in a frame from ``mac`` (the
    policy reads only headers; checksums do not matter to it)."""
    ip = bytes([0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0]) + source + bytes([10, 77, 0, 2])
    tcp = (1234).to_bytes(2, "big") + (7).to_bytes(2, "big") + bytes(8) + b"\x50\x02" + bytes(6)
    return bytes(6) + mac + b"\x08\x00" + ip + tcp


def test_beyond_the_budget_only_bound_neighbours_pass() -> None:
    real, real_mac = bytes([10, 77, 0, 1]), bytes.fromhex("020000000001")
    policy = FramePolicy(0, syn_rate=10, syn_burst=2)
    policy.bound_v4 = lambda source, mac: (source, mac) == (real, real_mac)
    now = lambda: 0  # noqa: E731 - no refill: the shared budget stays spent
    strangers = [_syn(bytes([10, 77, 1, i]), real_mac) for i in range(1, 50)]
    assert [policy.verdict(f, now) for f in strangers[:2]] == [None, None]
    assert {policy.verdict(f, now) for f in strangers[2:]} == {"syn_policed"}
    assert policy.verdict(_syn(real, real_mac), now) is None
    # The real client's address from another MAC is a stranger.
    assert policy.verdict(_syn(real, bytes.fromhex("026600000001")), now) == "syn_policed"
    assert policy.counters["syn_from_neighbour"] == 1
    # The neighbours' own budget is bounded too.
    verdicts = [policy.verdict(_syn(real, real_mac), now) for _ in range(100)]
    assert verdicts.count(None) == 4 * 2 - 1 and "syn_neighbour_policed" in verdicts


def test_over_ipv6_only_bound_neighbours_pass_too() -> None:
    real, mac = bytes.fromhex("fd160000000000000000000000000001"), bytes.fromhex("020000000001")
    policy = FramePolicy(0, syn_rate=10, syn_burst=1)
    policy.bound_v6 = lambda source, frame_mac: (source, frame_mac) == (real, mac)

    def syn6(source: bytes) -> bytes:
        tcp = (1234).to_bytes(2, "big") + (7).to_bytes(2, "big") + bytes(8) + b"\x50\x02"
        header = b"\x60" + bytes(3) + (20).to_bytes(2, "big") + b"\x06\x40"
        return bytes(6) + mac + b"\x86\xdd" + header + source + bytes(16) + tcp + bytes(6)

    now = lambda: 0  # noqa: E731
    assert policy.verdict(syn6(bytes(15) + b"\x09"), now) is None  # the shared burst
    assert policy.verdict(syn6(bytes(15) + b"\x09"), now) == "syn_policed"
    assert policy.verdict(syn6(real), now) is None
    assert policy.counters["syn_from_neighbour"] == 1
