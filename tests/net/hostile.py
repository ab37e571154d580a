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

# An echo client measuring every round trip of SIZE bytes, one every 2 ms,
# for DURATION seconds; prints "connected", then the worst and the count.
ECHO_PROBE = r"""
import json, socket, sys, time
host, port, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
conn = socket.create_connection((host, port))
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print("connected", flush=True)
sys.stdin.readline()
worst, rounds, end = 0.0, 0, time.monotonic() + duration
message = b"m" * 64
while time.monotonic() < end:
    sent = time.monotonic()
    conn.sendall(message)
    got = 0
    while got < len(message):
        chunk = conn.recv(len(message) - got)
        if not chunk:
            raise SystemExit("the echo server closed the connection")
        got += len(chunk)
    worst = max(worst, time.monotonic() - sent)
    rounds += 1
    time.sleep(0.002)
print(json.dumps({"worst_ms": worst * 1000, "rounds": rounds}), flush=True)
"""
