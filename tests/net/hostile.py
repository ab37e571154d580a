"""Kernel-side programs for the hostile-network tests and bench/tcp_hostile.py.

Each runs inside the peer's namespace (``KernelPeer.python``) and builds its
frames with dpkt, so nothing here trusts looming's own encoders.
"""

from __future__ import annotations

# A SYN flood from COUNT distinct sources 10.77.<1 + i // 250>.<1 + i % 250>
# (unresolvable: nobody owns them) sent on the TAP with AF_PACKET, in bursts
# of BURST every 5 ms, after a line on stdin. Prints "ready", then "sent S".
SYN_FLOOD = r"""
import socket, sys, time
import dpkt
iface, mac, dst, port, count, burst = sys.argv[1:7]
port, count, burst = int(port), int(count), int(burst)
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
raw.bind((iface, 0))
frames = []
for i in range(count):
    src = socket.inet_aton(f"10.77.{1 + i // 250}.{1 + i % 250}")
    syn = dpkt.tcp.TCP(
        sport=1024 + i % 60000, dport=port, seq=(i * 7919) & 0xFFFFFFFF,
        flags=dpkt.tcp.TH_SYN, win=64240,
        opts=dpkt.tcp.TCP_OPT_MSS.to_bytes(1, "big") + b"\x04\x05\xb4",
    )
    syn.off = 6
    packet = dpkt.ip.IP(src=src, dst=socket.inet_aton(dst), p=6, ttl=64, data=syn)
    frame = dpkt.ethernet.Ethernet(
        dst=bytes.fromhex(mac), src=b"\x02\x66" + src, type=0x0800, data=packet
    )
    frames.append(bytes(frame))
print("ready", flush=True)
sys.stdin.readline()
started = time.monotonic()
for k in range(0, count, burst):
    for frame in frames[k : k + burst]:
        raw.send(frame)
    time.sleep(0.005)
print("sent", round(time.monotonic() - started, 3), flush=True)
"""

# An echo client measuring every round trip of 64 bytes, one every 2 ms: for
# QUIET seconds (the baseline: this machine's own scheduling noise), then,
# after printing "quiet", for DURATION more; prints "connected" first and
# last the worst round trip of each phase, the rounds of the second and
# when its worst began (time.monotonic(): the same clock in every namespace).
ECHO_PROBE = r"""
import json, socket, sys, time
host, port, quiet, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
conn = socket.create_connection((host, port))
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print("connected", flush=True)
sys.stdin.readline()
message = b"m" * 64

def rounds_for(seconds):
    worst, worst_at, rounds, end = 0.0, 0.0, 0, time.monotonic() + seconds
    while time.monotonic() < end:
        sent = time.monotonic()
        conn.sendall(message)
        got = 0
        while got < len(message):
            chunk = conn.recv(len(message) - got)
            if not chunk:
                raise SystemExit("the echo server closed the connection")
            got += len(chunk)
        if time.monotonic() - sent > worst:
            worst, worst_at = time.monotonic() - sent, sent
        rounds += 1
        time.sleep(0.002)
    return worst, worst_at, rounds

quiet_worst, _, _ = rounds_for(quiet)
print("quiet", flush=True)
worst, worst_at, rounds = rounds_for(duration)
report = {"quiet_worst_ms": quiet_worst * 1000, "worst_ms": worst * 1000, "rounds": rounds}
print(json.dumps({**report, "worst_at": worst_at}), flush=True)
"""

# Send the frames given (hex) as arguments on the TAP with AF_PACKET, in order.
RAW_SEND = r"""
import socket, sys
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
raw.bind((sys.argv[1], 0))
for frame in sys.argv[2:]:
    raw.send(bytes.fromhex(frame))
"""

# Send each IPv4 packet read (hex, one a line) from stdin through a raw IP
# socket (the kernel routes it; the header is ours, source included) and
# print "sent" after each: forged ICMP errors from the namespace.
IP_RAW_SEND = r"""
import socket, sys
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for line in sys.stdin:
    packet = bytes.fromhex(line.strip())
    raw.sendto(packet, (socket.inet_ntoa(packet[16:20]), 0))
    print("sent", flush=True)
"""

# Bind UDP PORT on ADDRESS, print "ready", then print each datagram's hex
# until none comes for a second.
UDP_SINK = r"""
import socket, sys
sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.bind((sys.argv[1], int(sys.argv[2])))
sink.settimeout(1.0)
print("ready", flush=True)
try:
    while True:
        print(sink.recv(65536).hex(), flush=True)
except TimeoutError:
    pass
print("done", flush=True)
"""


def ipv4_packet(
    src: str, dst: str, protocol: int, data: object, *, ident: int = 0, options: bytes = b""
) -> bytes:
    """An IPv4 packet built by dpkt (``data`` a dpkt layer or raw bytes)."""
    import socket

    import dpkt

    packet = dpkt.ip.IP(
        src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=protocol, id=ident, ttl=64
    )
    if options:
        padded = options + bytes(-len(options) % 4)
        packet.opts = padded
        packet.hl = 5 + len(padded) // 4
    packet.data = data
    return bytes(packet)


def udp_fragments(
    src: str, dst: str, dport: int, payload: bytes, ident: int, cuts: list[tuple[int, int]]
) -> list[bytes]:
    """IPv4 fragments of one UDP datagram (checksummed by dpkt): one per
    (start, end) byte range of the UDP datagram, ranges may overlap."""
    import socket

    import dpkt

    whole = ipv4_packet(
        src, dst, 17, dpkt.udp.UDP(sport=4000, dport=dport, ulen=8 + len(payload), data=payload)
    )
    udp = whole[20:]
    fragments = []
    for start, end in cuts:
        packet = dpkt.ip.IP(
            src=socket.inet_aton(src),
            dst=socket.inet_aton(dst),
            p=17,
            id=ident,
            ttl=64,
            offset=start // 8,
            mf=int(end < len(udp)),
            data=udp[start:end],
        )
        fragments.append(bytes(packet))
    return fragments


def ethernet_frame(dst_mac: bytes, src_mac: bytes, packet: bytes) -> bytes:
    return dst_mac + src_mac + b"\x08\x00" + packet


def icmp_error(
    reporter: str,
    to: str,
    icmp_type: int,
    code: int,
    quoted_src: str,
    quoted_dst: str,
    protocol: int,
    first8: bytes,
    *,
    mtu: int = 0,
    quoted_length: int = 1500,
) -> bytes:
    """An IPv4 packet carrying an ICMP error (built by dpkt) that quotes a
    datagram ``quoted_src`` -> ``quoted_dst`` of ``quoted_length`` bytes
    whose first 8 payload bytes were ``first8``."""
    import socket
    import struct

    import dpkt

    quoted = dpkt.ip.IP(
        src=socket.inet_aton(quoted_src), dst=socket.inet_aton(quoted_dst), p=protocol, ttl=63
    )
    quoted.data = first8
    header = bytearray(bytes(quoted)[:20])
    header[2:4] = struct.pack("!H", quoted_length)  # as a router quotes it: the whole length
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", dpkt.in_cksum(bytes(header)))
    body = dpkt.icmp.ICMP.Unreach(mtu=mtu, data=bytes(header) + first8)
    message = dpkt.icmp.ICMP(type=icmp_type, code=code, data=body)
    return ipv4_packet(reporter, to, 1, message)


# Accept one TCP connection on ADDRESS PORT (after printing "ready"), read it
# to the end and print "BYTES SHA256HEX".
TCP_SINK = r"""
import hashlib, socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen(1)
print("ready", flush=True)
conn, _ = server.accept()
digest, total = hashlib.sha256(), 0
while chunk := conn.recv(65536):
    digest.update(chunk)
    total += len(chunk)
print(total, digest.hexdigest(), flush=True)
"""
