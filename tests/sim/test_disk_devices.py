"""The storage devices of a sim node on its disk: block, kv_rw (a log) and
the store's backend. Crashes strike at seed-drawn virtual times while
writes are in flight; what was acknowledged must be there afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from looming.devices.block import Block, BlockInfo
from looming.devices.kv import EntryKind, KvRw
from looming.errors import BlockOutOfRange, DeviceError, KeyNotFound, NotAValue
from looming.sim.devices import SimClock, SimRandom
from looming.sim.disk import DiskCorruption, DiskFaults, DiskReadError, SimDisk
from looming.sim.disklog import RecordLog
from looming.sim.diskstore import SimDiskBackend, SimStoreKv
from looming.sim.loop import VirtualEventLoop
from looming.sim.network import Uniform
from looming.sim.storage import SimBlock, SimKvRw

T = TypeVar("T")


def simulate(body: Callable[[VirtualEventLoop], Awaitable[T]]) -> T:
    loop = VirtualEventLoop()
    try:
        return loop.run_until_complete(body(loop))
    finally:
        loop.close()


def disk_on(loop: VirtualEventLoop, seed: int = 1, **faults: Any) -> tuple[SimDisk, list[str]]:
    trace: list[str] = []
    disk = SimDisk(
        "n",
        loop.time,
        SimRandom(seed),
        lambda kind, text: trace.append(text),
        DiskFaults().replace(**faults),
    )
    return disk, trace


async def open_kv_rw(disk: SimDisk) -> SimKvRw:
    return await SimKvRw.open(disk, "state", lambda: 1000.0)


async def open_store(disk: SimDisk) -> SimStoreKv:
    loop = asyncio.get_running_loop()
    clock = SimClock(lambda: round(loop.time() * 1e9))
    return await SimStoreKv.open(disk, "data", "main", clock)


# -- block ----------------------------------------------------------------------


def test_block_writes_are_durable_after_flush_only() -> None:
    async def body(loop: VirtualEventLoop) -> None:
        disk, trace = disk_on(loop, lost_writes=1.0, latency=Uniform(0.001, 0.002))
        block = SimBlock(disk, "b", BlockInfo(512, 8, True))
        assert isinstance(block, Block)
        await block.write(0, b"a" * 1024)
        await block.flush()
        started = loop.time()
        await block.write(2, b"b" * 512)
        assert loop.time() - started >= 0.001, "I/O takes virtual time"
        assert await block.read(0, 3) == b"a" * 1024 + b"b" * 512
        disk.crash()
        assert await block.read(0, 3) == b"a" * 1024 + b"\0" * 512
        assert trace == ["n lost write block/b@1024+512"]
        with pytest.raises(BlockOutOfRange):
            await block.read(7, 2)
        with pytest.raises(BlockOutOfRange):
            await block.write(0, b"x" * 100)
        disk.faults = DiskFaults(read_errors=1.0)
        with pytest.raises(DiskReadError):
            await block.read(0, 1)
        await block.disconnect()
        with pytest.raises(DeviceError, match="disconnected"):
            await block.read(0, 1)

    simulate(body)


# -- kv_rw ----------------------------------------------------------------------


def test_kv_rw_is_a_kv_rw_that_survives_a_power_cut() -> None:
    async def body(loop: VirtualEventLoop) -> None:
        disk, _trace = disk_on(loop, lost_writes=1.0, torn_writes=0.5)
        kv = await open_kv_rw(disk)
        assert isinstance(kv, KvRw)
        await kv.set("a/b", b"one")
        await kv.set("a/c", b"two")
        await kv.rename("a", "d")
        await kv.set("e", b"three")
        await kv.remove("e")
        disk.crash()
        again = await open_kv_rw(disk)
        assert await again.list("") == [("d", await again.exists("d"))]
        assert await again.get("d/b") == b"one" and await again.get("d/c") == b"two"
        assert await again.size("d/c") == 3
        assert await again.last_modified("d/b") == 1000.0
        with pytest.raises(KeyNotFound):
            await again.get("e")

    simulate(body)


def test_kv_rw_notices_a_corrupted_value() -> None:
    async def body(loop: VirtualEventLoop) -> None:
        disk, trace = disk_on(loop, corruption=1.0)
        kv = await open_kv_rw(disk)
        await kv.set("k", b"v" * 2000)
        with pytest.raises(DiskCorruption, match="fails its checksum"):
            await kv.get("k")
        assert any(line.startswith("n corrupt sector") for line in trace)

    simulate(body)


async def _write_until_crash(
    kv: KvRw, ops: list[tuple[str, bytes]], acked: dict[str, bytes], in_flight: list[Any]
) -> None:
    for key, value in ops:
        in_flight[:] = [(key, value)]
        await kv.set(key, value)
        acked[key] = value
        in_flight.clear()


def _crash_cycles(
    open_device: Callable[[SimDisk], Awaitable[KvRw]],
    seed: int,
    rounds: list[tuple[float, list[tuple[str, bytes]]]],
    faults: dict[str, Any],
) -> None:
    """Write while crashes strike at the given times; after each, every
    acknowledged value (or the one write then in flight) is read back."""

    async def body(loop: VirtualEventLoop) -> None:
        disk, _trace = disk_on(loop, seed, latency=Uniform(0.0005, 0.003), **faults)
        acked: dict[str, bytes] = {}
        for crash_after, ops in rounds:
            kv = await open_device(disk)
            for key, value in acked.items():
                assert await kv.get(key) == value, f"acknowledged {key}={value!r} lost"
            in_flight: list[Any] = []
            writer = asyncio.ensure_future(_write_until_crash(kv, ops, acked, in_flight))
            await asyncio.sleep(crash_after)
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                pass
            disk.crash()
            if in_flight:  # it may or may not have happened
                key, value = in_flight[0]
                kv = await open_device(disk)
                try:
                    if await kv.get(key) == value:
                        acked[key] = value
                except KeyNotFound:
                    assert key not in acked
        kv = await open_device(disk)
        for key, value in acked.items():
            assert await kv.get(key) == value, f"acknowledged {key}={value!r} lost"

    simulate(body)


ROUNDS = st.lists(
    st.tuples(
        st.floats(0.0, 0.05),
        st.lists(st.tuples(st.sampled_from("abcd"), st.binary(max_size=700)), max_size=12),
    ),
    min_size=1,
    max_size=6,
)
FAULTS = st.fixed_dictionaries(
    {"lost_writes": st.sampled_from([0.0, 0.5, 1.0]), "torn_writes": st.sampled_from([0.0, 0.5])}
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(seed=st.integers(0, 2**32), rounds=ROUNDS, faults=FAULTS)
def test_kv_rw_keeps_every_acknowledged_write_across_crashes(
    seed: int, rounds: list[tuple[float, list[tuple[str, bytes]]]], faults: dict[str, Any]
) -> None:
    _crash_cycles(open_kv_rw, seed, rounds, faults)


@FAST
@given(seed=st.integers(0, 2**32), rounds=ROUNDS, faults=FAULTS)
def test_kv_store_keeps_every_acknowledged_commit_across_crashes(
    seed: int, rounds: list[tuple[float, list[tuple[str, bytes]]]], faults: dict[str, Any]
) -> None:
    _crash_cycles(open_store, seed, rounds, faults)


def test_the_store_refuses_a_corrupted_object_and_keeps_the_rest() -> None:
    async def body(loop: VirtualEventLoop) -> None:
        disk, trace = disk_on(loop)
        kv = await open_store(disk)
        await kv.set("k", b"value" * 300)
        await kv.set("other", b"fine")
        backend = kv.store.repo.backend
        assert isinstance(backend, SimDiskBackend)
        (blob,) = [r for r in backend._objects.values() if r.tag[20:] == b"blob" and r.length > 9]
        disk.crash()
        disk.files["kv_store/data/objects"].image[blob.offset + 100] ^= 0x10  # a bit rots
        disk.crash()  # drop the cache: reads come from the medium
        kv = await open_store(disk)
        assert "n log kv_store/data/objects: record at" in trace[-1]
        with pytest.raises(DeviceError, match=r"corrupt object .*fails its checksum"):
            await kv.get("k")
        assert await kv.get("other") == b"fine"

    simulate(body)


def test_kv_rw_keeps_the_records_after_one_corrupted_in_place() -> None:
    async def body(loop: VirtualEventLoop) -> None:
        disk, _trace = disk_on(loop)
        kv = await open_kv_rw(disk)
        await kv.set("a", b"first" * 100)
        await kv.set("b", b"second")
        record = kv._values[("a",)].record
        disk.settle()
        disk.files["kv_rw/state"].image[record.offset + 7] ^= 0x01
        disk.crash()
        kv = await open_kv_rw(disk)
        assert await kv.get("b") == b"second"
        assert await kv.size("a") == 500
        with pytest.raises(DiskCorruption):
            await kv.get("a")

    simulate(body)


def test_the_ref_table_survives_a_torn_update() -> None:
    """The two ref slots: a torn write of the newer leaves the older."""

    async def body(loop: VirtualEventLoop) -> None:
        disk, trace = disk_on(loop, torn_writes=1.0, latency=Uniform(0.001, 0.002))
        kv = await open_store(disk)
        await kv.set("k", b"one")
        backend = kv.store.repo.backend
        assert isinstance(backend, SimDiskBackend)
        first = backend.read_ref("refs/heads/main")
        assert first is not None
        # Write a second table, but crash before its sync completes.
        backend._write_refs({"refs/heads/main": first, "refs/heads/other": first})
        disk.crash()
        assert trace[-1].startswith("n torn write kv_store/data/refs@0+")
        reopened = SimDiskBackend.open(disk, "data")
        assert reopened.list_refs("refs/heads/") == {"refs/heads/main": first}

    simulate(body)


def test_a_torn_record_ends_the_log_with_what_followed_it() -> None:
    """A crash tore record B but kept C, written after it: neither was
    durable, so the log ends before B (B is not taken for corruption)."""

    async def body(loop: VirtualEventLoop) -> None:
        disk, trace = disk_on(loop)
        log = RecordLog(disk, "log")
        log.append(b"a", b"A" * 50)
        await disk.wait(log.sync())
        b, _ = log.append(b"b", b"B" * 50)
        log.append(b"c", b"C" * 50)
        disk.crash()  # without faults: all three reach the medium
        disk.files["log"].image[b.offset + 30 :] = b"\0" * 20 + bytes(
            disk.files["log"].image[b.offset + 50 :]
        )
        disk.crash()
        replayed = RecordLog(disk, "log").replay()
        assert [(r.tag, p) for r, p in replayed] == [(b"a", b"A" * 50)]
        assert trace[-1].startswith("n log log: ") and trace[-1].endswith("ignored")

    simulate(body)


def test_kv_rw_edge_cases_answer_as_the_interface_says() -> None:
    async def body(loop: VirtualEventLoop) -> None:
        disk, _trace = disk_on(loop)
        kv = await open_kv_rw(disk)
        await kv.set("a/b", b"1")
        await kv.set("c", b"2")
        generation = kv.generation()
        await kv.rename("a/b", "a/b")  # onto itself: nothing moves
        assert await kv.get("a/b") == b"1" and kv.generation() == generation
        with pytest.raises(DeviceError, match="into itself"):
            await kv.rename("a", "a/x")
        with pytest.raises(DeviceError, match="root"):
            await kv.rename("", "z")
        with pytest.raises(DeviceError, match="root"):
            await kv.set("/", b"x")
        with pytest.raises(NotAValue):
            await kv.list("c")
        with pytest.raises(NotAValue):
            await kv.set("c/d", b"x")
        await kv.rename("c", "a")  # replaces the dictionary a
        assert await kv.list("") == [("a", EntryKind.VALUE)]
        assert kv.generation() != generation
        disk.crash()
        again = await open_kv_rw(disk)
        assert await again.list("") == [("a", EntryKind.VALUE)] and await again.get("a") == b"2"

    simulate(body)
