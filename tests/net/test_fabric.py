"""One simulated Ethernet: the in-memory switch and the simulator's network
are two presets of :mod:`looming.net.netif.fabric`, and a fault
configuration does the same to the same frames through either."""

from __future__ import annotations

import asyncio
import contextvars
import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from looming.devices.net import MacAddress
from looming.net.netif import fabric, memory
from looming.net.netif.fabric import Fixed, LinkSpec
from looming.net.netif.memory import LinkFaults, MemorySwitch
from looming.sim import network as sim_network
from looming.sim.devices import SimRandom, derive_seed
from looming.sim.loop import VirtualEventLoop
from looming.sim.network import SimNetwork, SimNic
from looming.sim.trace import Trace

FAULTS = LinkFaults(loss=0.1, duplicate=0.1, corrupt=0.1, reorder=0.2)
MAC_A = MacAddress("02:00:00:00:00:01")  # the switch's first two ports' MACs
MAC_B = MacAddress("02:00:00:00:00:02")
COUNT = 200
STRAIGHT = LinkSpec(latency=Fixed(0.0), mtu=65535)


def frames() -> list[bytes]:
    """Numbered frames from A to B (a local experimental EtherType)."""
    header = bytes(MAC_B) + bytes(MAC_A) + b"\x88\xb5"
    return [header + i.to_bytes(4, "big") + bytes(42) for i in range(COUNT)]


def stream_seed(seed: int) -> int:
    """The seed of the simulator's stream for the wire from the switch to B."""
    return derive_seed(seed, "link", "b-lan", "ba")


def through_memory(seed: int, faults: LinkFaults = FAULTS) -> list[bytes]:
    async def main() -> list[bytes]:
        switch = MemorySwitch(random=SimRandom(stream_seed(seed)), faults=faults)
        a, b = switch.port(), switch.port()
        assert (a.mac, b.mac) == (MAC_A, MAC_B)
        got: list[bytes] = []
        listening = asyncio.ensure_future(b.listen(lambda frame, *_: got.append(frame)))
        await asyncio.sleep(0)
        for frame in frames():
            await a.write(frame)
        for _ in range(5):
            await asyncio.sleep(0)
        await b.disconnect()
        await listening
        await a.disconnect()
        return got

    return asyncio.run(main())


def through_simulator(seed: int, faults: LinkFaults = FAULTS) -> list[bytes]:
    loop = VirtualEventLoop()
    network = SimNetwork(loop, Trace(loop.now_ns), seed, record_pcap=False)
    a = network.attach("a", MAC_A, "lan", STRAIGHT)
    b = network.attach("b", MAC_B, "lan", STRAIGHT, back=faults.spec())
    nic_a, nic_b = SimNic(a, 1500), SimNic(b, 1500)
    for attachment, nic in ((a, nic_a), (b, nic_b)):
        attachment.nic = nic
        attachment.context = contextvars.copy_context
    got: list[bytes] = []

    async def main() -> None:
        listening = asyncio.ensure_future(nic_b.listen(lambda frame, *_: got.append(frame)))
        for frame in frames():
            await nic_a.write(frame)
        await asyncio.sleep(1.0)
        await nic_b.disconnect()
        await listening

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return got


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_fault_configuration_does_the_same_through_both(seed: int) -> None:
    in_memory, simulated = through_memory(seed), through_simulator(seed)
    assert in_memory == simulated
    sent = frames()
    numbers = [int.from_bytes(f[14:18], "big") for f in in_memory if f in sent]
    # Every fault happened: frames lost, doubled, damaged and overtaken.
    assert set(sent) - set(in_memory)
    assert len(numbers) > len(set(numbers))
    assert any(f not in sent for f in in_memory)
    assert numbers != sorted(numbers)


probability = st.floats(0.0, 0.5)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    faults=st.builds(
        LinkFaults,
        loss=probability,
        duplicate=probability,
        corrupt=probability,
        reorder=probability,
    ),
)
def test_any_fault_configuration_does_the_same_through_both(seed: int, faults: LinkFaults) -> None:
    assert through_memory(seed, faults) == through_simulator(seed, faults)


def test_without_faults_both_deliver_every_frame_in_order() -> None:
    clean = LinkFaults()
    assert clean.spec().ideal
    sent = frames()

    async def main() -> list[bytes]:
        switch = MemorySwitch(faults=clean)
        a, b = switch.port(), switch.port()
        got: list[bytes] = []
        listening = asyncio.ensure_future(b.listen(lambda frame, *_: got.append(frame)))
        await asyncio.sleep(0)
        for frame in sent:
            await a.write(frame)
        await asyncio.sleep(0)
        await b.disconnect()
        await listening
        return got

    assert asyncio.run(main()) == sent


def test_the_memory_switch_and_the_simulator_share_one_fabric() -> None:
    switch = MemorySwitch(random=SimRandom(1), faults=FAULTS)
    switch.port()
    loop = VirtualEventLoop()
    network = SimNetwork(loop, Trace(loop.now_ns), 1, record_pcap=False)
    network.attach("a", MAC_A, "lan", LinkSpec())
    try:
        for built in (switch.fabric, network.fabric):
            assert type(built) is fabric.Fabric
            (link,) = built.links.values()
            assert type(link) is fabric.Link
            assert type(link.forward) is type(link.backward) is fabric.Wire
            (lan,) = built.switches.values()
            assert type(lan) is fabric.Switch
    finally:
        loop.close()
    # The simulator's names are the fabric's, not copies.
    for name in ("LinkSpec", "Fixed", "Uniform", "Exponential", "Link", "Switch", "SimFrame"):
        assert getattr(sim_network, name) is getattr(fabric, name)
    # Neither preset forwards frames or draws faults itself.
    for module in (memory, sim_network):
        source = inspect.getsource(module)
        assert ".random()" not in source and "randint(" not in source
        assert "def forward(" not in source and "def transmit(" not in source


def test_a_partition_cuts_the_memory_switch_too() -> None:
    async def main() -> tuple[int, int]:
        switch = MemorySwitch()
        a, b = switch.port(), switch.port()
        got: list[bytes] = []
        listening = asyncio.ensure_future(b.listen(lambda frame, *_: got.append(frame)))
        await asyncio.sleep(0)
        switch.fabric.partition([a.name], [b.name], one_way=True)
        await a.write(frames()[0])
        await asyncio.sleep(0)
        cut = len(got)
        switch.fabric.heal()
        await a.write(frames()[1])
        await asyncio.sleep(0)
        await b.disconnect()
        await listening
        return cut, len(got)

    assert asyncio.run(main()) == (0, 1)


def test_latency_draws_match_the_standard_library() -> None:
    # The fabric draws latencies from random() alone; the simulator's digests
    # depend on those numbers being the ones random.uniform/expovariate give.
    import random as stdlib

    ours, theirs = SimRandom(5), stdlib.Random(5)
    for _ in range(100):
        assert fabric.Uniform(0.001, 0.01).sample(ours) == theirs.uniform(0.001, 0.01)
        assert fabric.Exponential(0.01, 0.002).sample(ours) == 0.002 + theirs.expovariate(100.0)
