"""The simulated Ethernet: latency, bandwidth, faults, partitions, hold and release.

Each test is a scenario test (the plugin under test runs it in virtual time)
between two looming stacks exchanging UDP datagrams or pings.
"""

from __future__ import annotations

import asyncio

import looming.sim
from looming.devices import Datagram
from looming.errors import ConnectionTimeout, HostUnreachable, LoomingError
from looming.net.stack import DirectStack
from looming.sim import World


def count(world: World, kind: str, text: str = "") -> int:
    return sum(1 for e in world.trace.events if e.split(" ", 2)[1] == kind and text in e)


async def udp_pair(world: World, **link: object) -> tuple[DirectStack, DirectStack, list[bytes]]:
    spec = looming.sim.LinkSpec(**link)  # type: ignore[arg-type]
    a = world.add_host("a", ipv4="10.0.0.1/24", link=spec)
    b = world.add_host("b", ipv4="10.0.0.2/24", link=spec)
    stack_a, stack_b = await a.stack(), await b.stack()
    received: list[bytes] = []

    def on_datagram(datagram: Datagram) -> None:
        received.append(datagram.data)

    await stack_b.udp.bind(9000, on_datagram)
    # Resolve ARP before measuring anything. On a lossy link (20% loss and
    # 20% corruption each way, say) one ping succeeds for few seeds: try
    # again, after the stack has forgotten the failed resolution, until it
    # works (virtual time is free).
    for attempt in range(100):
        try:
            await stack_a.ping("10.0.0.2", timeout=1.0)
            break
        except (HostUnreachable, ConnectionTimeout):
            if attempt == 99:
                raise
            await asyncio.sleep(21.0)
    return stack_a, stack_b, received


@looming.sim.scenario
async def test_fixed_latency_and_bandwidth_set_arrival_times(world: World) -> None:
    # 1 Mbit/s and 10 ms each hop: a 1042-byte frame takes 8.336 ms to send.
    stack_a, _, received = await udp_pair(
        world, latency=looming.sim.Fixed(0.010), bandwidth_bps=1_000_000
    )
    started = world.now
    await stack_a.udp.send("10.0.0.2", 9000, b"x" * 1000)
    while not received:
        await asyncio.sleep(0.0001)
    elapsed = world.now - started
    # Two hops (a->switch, switch->b), each serialising then propagating.
    assert abs(elapsed - 2 * (0.010 + 1042 * 8 / 1e6)) < 0.0002, elapsed


@looming.sim.scenario(duration=3600.0)
async def test_loss_duplication_and_corruption_show_in_the_trace(world: World) -> None:
    stack_a, _, received = await udp_pair(world, loss=0.2, duplicate=0.2, corrupt=0.2)
    for i in range(200):
        await stack_a.udp.send("10.0.0.2", 9000, b"%05d" % i + b"." * 100)
    await asyncio.sleep(1.0)
    lost, duplicated, corrupted = (
        count(world, "drop", "loss"),
        count(world, "duplicate"),
        count(world, "corrupt"),
    )
    assert lost > 20 and duplicated > 20 and corrupted > 20
    # Corrupted frames are dropped by checksums (or arrive intact when the
    # flipped bit is in a field nobody checks); duplicates arrive twice.
    intact = [d for d in received if d[5:] == b"." * 100]
    assert len(set(intact)) < 200
    assert len(intact) > len(set(intact))


@looming.sim.scenario
async def test_reordering_delivers_out_of_order(world: World) -> None:
    stack_a, _, received = await udp_pair(
        world, latency=looming.sim.Fixed(0.001), reorder=0.3, reorder_delay=0.005
    )
    for i in range(100):
        await stack_a.udp.send("10.0.0.2", 9000, b"%05d" % i)
    await asyncio.sleep(1.0)
    numbers = [int(d) for d in received]
    assert sorted(numbers) == list(range(100))
    assert numbers != sorted(numbers)
    assert count(world, "reorder") > 10


@looming.sim.scenario
async def test_without_faults_frames_keep_their_order(world: World) -> None:
    stack_a, _, received = await udp_pair(
        world, latency=looming.sim.Uniform(0.001, 0.010), jitter=0.005
    )
    for i in range(100):
        await stack_a.udp.send("10.0.0.2", 9000, b"%05d" % i)
    await asyncio.sleep(1.0)
    assert [int(d) for d in received] == list(range(100))


@looming.sim.scenario
async def test_frames_above_the_mtu_are_dropped(world: World) -> None:
    stack_a, _, received = await udp_pair(world, mtu=576)
    # IPv4 fragments to the interface MTU, so a big datagram still arrives...
    await stack_a.udp.send("10.0.0.2", 9000, b"y" * 2000)
    await asyncio.sleep(0.1)
    assert received == [b"y" * 2000]
    assert count(world, "drop", "mtu") == 0


@looming.sim.scenario
async def test_partitions_symmetric_one_way_and_isolation(world: World) -> None:
    stack_a, stack_b, received_b = await udp_pair(world)
    received_a: list[bytes] = []
    await stack_a.udp.bind(9000, lambda d: received_a.append(d.data))

    async def exchange(tag: bytes) -> tuple[bool, bool]:
        before_a, before_b = len(received_a), len(received_b)
        await stack_a.udp.send("10.0.0.2", 9000, tag)
        await stack_b.udp.send("10.0.0.1", 9000, tag)
        await asyncio.sleep(0.1)
        return len(received_b) > before_b, len(received_a) > before_a

    assert await exchange(b"open") == (True, True)
    world.partition(["a"], ["b"])
    assert await exchange(b"cut") == (False, False)
    world.heal()
    world.partition(["a"], ["b"], one_way=True)
    assert await exchange(b"one-way") == (False, True)
    world.heal()
    world.isolate("b")
    assert await exchange(b"isolated") == (False, False)
    world.heal()
    assert await exchange(b"healed") == (True, True)
    assert count(world, "drop", "partition a->b") == 3
    assert count(world, "drop", "partition b->a") == 2


@looming.sim.scenario
async def test_hold_shows_frames_in_flight_and_release_delivers_them(world: World) -> None:
    stack_a, _, received = await udp_pair(world)
    link = world.link("a")
    link.hold()
    for i in range(3):
        await stack_a.udp.send("10.0.0.2", 9000, b"held %d" % i)
    await asyncio.sleep(5.0)
    assert received == []
    in_flight = link.in_flight()
    assert len(in_flight) == 3
    assert all(entry.source == "a" and entry.arrives_at is None for entry in in_flight)
    assert link.release() == 3
    await asyncio.sleep(0.1)
    assert received == [b"held 0", b"held 1", b"held 2"]


@looming.sim.scenario
async def test_release_can_drop_what_was_held(world: World) -> None:
    stack_a, _, received = await udp_pair(world)
    link = world.link("a")
    link.hold()
    await stack_a.udp.send("10.0.0.2", 9000, b"lost")
    assert link.release(drop=True) == 1
    await asyncio.sleep(1.0)
    assert received == []
    assert count(world, "drop", "released-dropped") == 1


@looming.sim.scenario(duration=2000.0)
async def test_clocks_have_skew_and_drift_per_node(world: World) -> None:
    a = world.add_host("a", skew_s=2.0, drift_ppm=100.0)
    b = world.add_host("b")
    await a.stack()
    await b.stack()
    await asyncio.sleep(1000.0)
    clock_a = a.current.clock  # type: ignore[union-attr]
    clock_b = b.current.clock  # type: ignore[union-attr]
    base = 1_704_067_200 + world.now
    assert abs(clock_a.now() - (base + 2.0 + 1000 * 100e-6)) < 1e-6
    assert clock_b.now() != clock_a.now()
    # The default skew is drawn from the seed, within the scenario's bound.
    assert abs(clock_b.now() - base) <= world.scenario.max_clock_skew_s + 0.1


@looming.sim.scenario
async def test_exponential_latency_has_its_mean_and_minimum(world: World) -> None:
    stack_a, _, received = await udp_pair(
        world, latency=looming.sim.Exponential(mean=0.010, minimum=0.002), reorder=0.0
    )
    arrivals: list[float] = []
    for i in range(300):
        sent = world.now
        await stack_a.udp.send("10.0.0.2", 9000, b"%05d" % i)
        while len(received) <= i:
            await asyncio.sleep(0.0005)
        arrivals.append(world.now - sent)
    # Two hops, each at least 2 ms plus an exponential delay of mean 10 ms
    # (FIFO on a link can only add to it); polling adds up to 0.5 ms.
    assert min(arrivals) >= 0.004
    mean = sum(arrivals) / len(arrivals)
    assert 0.018 < mean < 0.032, mean


@looming.sim.scenario
async def test_in_flight_lists_frames_on_the_wire_with_their_arrival(world: World) -> None:
    stack_a, _, received = await udp_pair(world, latency=looming.sim.Fixed(0.050))
    await stack_a.udp.send("10.0.0.2", 9000, b"on the wire")
    await asyncio.sleep(0.010)
    (entry,) = world.link("a").in_flight()
    assert entry.source == "a" and entry.destination == "lan"
    assert entry.arrives_at is not None and abs(entry.arrives_at - (entry.sent_at + 0.050)) < 1e-9
    assert "from a" in entry.summary()
    await asyncio.sleep(0.2)
    assert received == [b"on the wire"]
    assert world.link("a").in_flight() == []


@looming.sim.scenario
async def test_switches_joined_by_a_trunk_carry_frames_and_partitions(world: World) -> None:
    world.network.trunk("east", "west", looming.sim.LinkSpec(latency=looming.sim.Fixed(0.020)))
    a = world.add_host("a", ipv4="10.0.0.1/24", switch="east")
    b = world.add_host("b", ipv4="10.0.0.2/24", switch="west")
    stack = await a.stack()
    await b.stack()
    await stack.ping("10.0.0.2", timeout=1.0)  # resolves b's address first
    rtt = await stack.ping("10.0.0.2", timeout=1.0)
    # a->east, east->west, west->b and back: the trunk's 20 ms twice dominates.
    assert 0.040 < rtt < 0.045, rtt
    world.partition(["a"], ["b"])
    try:
        await stack.ping("10.0.0.2", timeout=1.0)
    except LoomingError:
        pass
    else:
        raise AssertionError("a ping crossed the partition")
    assert count(world, "drop", "partition a->b") == 1
    assert "east-west" in world.network.links
