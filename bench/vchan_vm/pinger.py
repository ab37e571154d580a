"""Round trips and one-way throughput against echo.py; prints one JSON line."""

from __future__ import annotations

import json
import os

from looming.devices import Console, Time
from looming.vchan.device import Vchan

MESSAGE = 64
CHUNK = 64 * 1024


async def pinger(console: Console, time: Time, channel: Vchan, *, rounds: int, total: int) -> None:
    ping = b"p" * MESSAGE
    samples = []
    for _ in range(rounds):
        begin = time.now_ns()
        await channel.send(ping)
        await channel.recv(MESSAGE)
        samples.append(time.now_ns() - begin)
    chunk = os.urandom(CHUNK)
    count = max(1, total // CHUNK)
    header = (b"t" + (count * CHUNK).to_bytes(8, "big")).ljust(MESSAGE, b"\0")
    begin = time.now_ns()
    await channel.send(header)
    for _ in range(count):
        await channel.write(chunk)
    await channel.recv(1)
    elapsed = time.now_ns() - begin
    await channel.send(b"q" * MESSAGE)
    samples.sort()
    result = {
        "rtt_p50_us": samples[len(samples) // 2] / 1000,
        "rtt_p99_us": samples[min(len(samples) - 1, len(samples) * 99 // 100)] / 1000,
        "throughput_mb_s": count * CHUNK / (elapsed / 1e9) / 1e6,
    }
    await console.log("vchan-bench " + json.dumps(result))
