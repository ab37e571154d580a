"""The simulator with IPv6: hosts given IPv6 addresses talk TCP over them in
virtual time, the same seed gives the same run, and tshark decodes the
captures as IPv6."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from looming.errors import UsageError
from looming.sim import World
from looming.sim.spec import Scenario
from looming.sim.world import run

DATA = bytes(range(256)) * 400  # 100 KiB
# Frames tshark finds malformed or with a wrong TCP checksum.
BAD = "_ws.malformed || _ws.expert.severity == error || tcp.checksum.status == 0"


async def exchange_over_ipv6(world: World) -> None:
    server = world.node("server")
    client = world.node("client")
    received: dict[str, object] = {}

    async def serve(flow) -> None:  # type: ignore[no-untyped-def]
        chunks = []
        while chunk := await flow.read():
            chunks.append(chunk)
        received["peer"] = flow.remote_address[0]
        await flow.write(hashlib.sha256(b"".join(chunks)).digest())
        await flow.close()

    stack = await server.stack()
    await stack.tcp.listen(47000, serve)

    async def send(stack) -> bytes:  # type: ignore[no-untyped-def]
        flow = await stack.tcp.connect("fd00:5::1", 47000, timeout=30.0)
        await flow.write(DATA)
        await flow.shutdown()
        reply = b""
        while chunk := await flow.read():
            reply += chunk
        await flow.close()
        return reply

    reply = await client.run(send)
    world.check(reply == hashlib.sha256(DATA).digest(), "the digest came back over IPv6")
    world.check(received["peer"] == "fd00:5::2", f"the server saw {received['peer']}")


def scenario() -> Scenario:
    declared = Scenario("ipv6", duration=60.0)
    declared.host("server", ipv4="10.0.5.1/24", ipv6="fd00:5::1/64")
    declared.host("client", ipv4="10.0.5.2/24", ipv6="fd00:5::2/64")
    declared.driver = exchange_over_ipv6
    return declared


def test_tcp_over_ipv6_in_the_simulator_decoded_by_tshark(tmp_path: Path) -> None:
    first = run(scenario(), 3, artifacts={}, pcap_dir=tmp_path / "a")
    assert first.ok, first.failures
    again = run(scenario(), 3, artifacts={}, pcap_dir=tmp_path / "b")
    assert again.ok, again.failures
    pcap = tmp_path / "a" / "server-lan.pcap"
    assert pcap.read_bytes() == (tmp_path / "b" / "server-lan.pcap").read_bytes()
    fields = ["-T", "fields", "-e", "ipv6.src", "-e", "ipv6.dst", "-e", "tcp.dstport"]
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "tcp && ipv6", *fields],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split("\n")
    rows = {tuple(line.split("\t")) for line in out if line}
    assert ("fd00:5::2", "fd00:5::1", "47000") in rows
    verified = subprocess.run(
        [
            "tshark",
            "-o",
            "tcp.check_checksum:TRUE",
            "-r",
            str(pcap),
            "-Y",
            "tcp.checksum.status == 1",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert len(verified.splitlines()) >= len(rows), "tshark verified the TCP checksums"
    expert = subprocess.run(
        ["tshark", "-o", "tcp.check_checksum:TRUE", "-r", str(pcap), "-Y", BAD],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert expert == "", expert


def test_bad_or_shared_ipv6_addresses_are_refused() -> None:
    declared = Scenario("bad")
    with pytest.raises(UsageError, match="not an IPv6 address/prefix"):
        declared.host("a", ipv6="10.0.0.1/24")
    declared.host("a", ipv6="fd00::1/64")
    declared.host("b", ipv6="fd00::1/64")
    assert any("share fd00::1" in problem for problem in declared._node_problems())
