"""The simulated disk: durability in virtual time, and each fault doing what
it says and showing in the trace."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from looming.sim.devices import SimRandom
from looming.sim.disk import DiskFaults, DiskReadError, SimDisk
from looming.sim.network import Fixed, Uniform


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_disk(seed: int = 1, **faults: object) -> tuple[SimDisk, Clock, list[str]]:
    clock = Clock()
    trace: list[str] = []
    disk = SimDisk(
        "n",
        clock,
        SimRandom(seed),
        lambda kind, text: trace.append(f"{kind} {text}"),
        DiskFaults().replace(**faults),
    )
    return disk, clock, trace


def medium(disk: SimDisk, name: str) -> bytes:
    return bytes(disk.files[name].image)


def test_without_faults_a_crash_keeps_every_write_made() -> None:
    disk, _clock, trace = make_disk()
    disk.write("f", 0, b"hello")
    disk.write("f", 5, b" world")
    assert disk.read_now("f", 0, 11) == b"hello world"
    assert disk.unsynced() == 2
    disk.crash()
    assert medium(disk, "f") == b"hello world"
    assert disk.read_now("f", 0, 11) == b"hello world"
    assert trace == []


def test_lost_writes_drop_what_was_not_synced_and_say_so() -> None:
    disk, _clock, trace = make_disk(lost_writes=1.0)
    disk.write("f", 0, b"durable")
    disk.sync("f")
    disk.write("f", 0, b"DURABLE")
    disk.write("g", 0, b"never synced")
    disk.crash()
    assert disk.read_now("f", 0, 7) == b"durable"
    assert disk.read_now("g", 0, 12) == b"" and disk.size("g") == 0
    assert trace == ["disk n lost write f@0+7", "disk n lost write g@0+12"]
    assert disk.counts["lost"] == 2


def test_a_subset_of_unsynced_writes_is_lost_as_drawn_from_the_seed() -> None:
    outcomes = set()
    for seed in range(20):
        disk, _clock, trace = make_disk(seed, lost_writes=0.5)
        for i in range(8):
            disk.write("f", i, b"x")
        disk.crash()
        kept = disk.read_now("f", 0, 8)
        assert kept.count(b"x") == 8 - len(trace)
        outcomes.add(kept)
        again, _c, again_trace = make_disk(seed, lost_writes=0.5)
        for i in range(8):
            again.write("f", i, b"x")
        again.crash()
        assert (again.read_now("f", 0, 8), again_trace) == (kept, trace)
    assert len(outcomes) > 10, "the seed decides which writes are lost"


def test_a_sync_makes_writes_durable_only_when_it_completes() -> None:
    disk, clock, _trace = make_disk(lost_writes=1.0, latency=Fixed(0.01))
    assert disk.write("f", 0, b"abc") == pytest.approx(0.01)
    done = disk.sync("f")
    assert done == pytest.approx(0.02)
    clock.now = 0.015
    disk.crash()
    assert disk.read_now("f", 0, 3) == b""
    clock.now = 1.0
    disk.write("f", 0, b"abc")
    clock.now = disk.sync("f")
    disk.crash()
    assert disk.read_now("f", 0, 3) == b"abc"


def test_operations_queue_behind_each_other() -> None:
    disk, _clock, _trace = make_disk(latency=Fixed(0.002))
    times = [disk.write("f", i, b"x") for i in range(3)] + [disk.sync("f")]
    assert times == pytest.approx([0.002, 0.004, 0.006, 0.008])


def test_a_torn_write_leaves_a_prefix_and_is_in_the_trace() -> None:
    disk, _clock, trace = make_disk(torn_writes=1.0)
    disk.write("f", 0, b"A" * 1024)
    disk.sync("f")
    disk.write("f", 100, b"B" * 1000)
    disk.crash()
    data = disk.read_now("f", 0, 1100)
    cut = data.count(b"B")
    assert 0 < cut < 1000
    expected = bytearray(b"A" * 1024)
    expected[100 : 100 + cut] = b"B" * cut
    assert data == expected
    assert trace == [f"disk n torn write f@100+1000: {cut} bytes reached the disk"]


def test_read_errors_fail_reads_with_eio() -> None:
    disk, _clock, trace = make_disk(read_errors=1.0)
    disk.write("f", 0, b"data")
    with pytest.raises(DiskReadError, match="read of f failed"):
        disk.read_now("f", 0, 4)
    assert trace == ["disk n read error f@0+4"]
    disk.faults = DiskFaults()
    assert disk.read_now("f", 0, 4) == b"data"


def test_some_reads_fail_at_the_rate_given() -> None:
    disk, _clock, trace = make_disk(read_errors=0.2)
    disk.write("f", 0, b"data")
    failed = 0
    for _ in range(1000):
        try:
            disk.read_now("f", 0, 4)
        except DiskReadError:
            failed += 1
    assert 130 < failed < 270
    assert len(trace) == failed


def test_latent_corruption_flips_one_bit_per_sector_made_durable() -> None:
    disk, clock, trace = make_disk(corruption=1.0)
    good = bytes(range(256)) * 4  # two sectors
    disk.write("f", 0, good)
    clock.now = disk.sync("f")
    read = disk.read_now("f", 0, len(good))
    assert read != good
    for sector in (0, 1):
        a = int.from_bytes(read[sector * 512 : (sector + 1) * 512], "big")
        b = int.from_bytes(good[sector * 512 : (sector + 1) * 512], "big")
        assert bin(a ^ b).count("1") == 1
    assert [line.split(":")[0] for line in trace] == [
        "disk n corrupt sector 0 of f",
        "disk n corrupt sector 1 of f",
    ]
    # Latent: it is on the medium, so it survives a crash and every read.
    disk.crash()
    assert disk.read_now("f", 0, len(good)) == read


def test_slow_io_adds_time_and_is_in_the_trace() -> None:
    disk, _clock, trace = make_disk(slow_io=1.0, slow=Uniform(0.1, 0.2), latency=Fixed(0.001))
    done = disk.write("f", 0, b"x")
    assert 0.101 <= done <= 0.201
    assert len(trace) == 1 and trace[0].startswith("disk n slow write f@0+1: ")


def test_wipe_gives_an_empty_disk() -> None:
    disk, _clock, _trace = make_disk()
    disk.write("f", 0, b"x")
    disk.sync("f")
    disk.wipe()
    assert disk.files == {} and disk.size("f") == 0 and disk.unsynced() == 0


@pytest.mark.parametrize(
    ("faults", "problem"),
    [
        ({"lost_writes": 1.5}, "lost_writes is a probability: give 0 to 1, not 1.5"),
        ({"read_errors": -0.1}, "read_errors is a probability"),
        ({"latency": Uniform(0.2, 0.1)}, "latency: uniform latency needs 0 <= low <= high"),
        ({"slow": 0.3}, "slow must be sim.Fixed, sim.Uniform or sim.Exponential"),
    ],
)
def test_bad_fault_settings_are_named(faults: dict[str, object], problem: str) -> None:
    problems = DiskFaults().replace(**faults).problems()
    assert len(problems) == 1 and problems[0].startswith(problem)


class DiskMachine(RuleBasedStateMachine):
    """The disk against a model: reads see every write; a crash (every
    unsynced write lost) leaves exactly the writes whose sync completed."""

    def __init__(self) -> None:
        super().__init__()
        self.disk, self.clock, self.trace = make_disk(7, lost_writes=1.0, latency=Fixed(0.001))
        self.writes: list[
            tuple[str, int, bytes, float | None]
        ] = []  # file, offset, data, durable at

    @rule(
        name=st.sampled_from("fg"),
        offset=st.integers(0, 40),
        data=st.binary(min_size=1, max_size=20),
    )
    def write(self, name: str, offset: int, data: bytes) -> None:
        self.disk.write(name, offset, data)
        self.writes.append((name, offset, data, None))

    @rule(name=st.sampled_from("fg"))
    def sync(self, name: str) -> None:
        done = self.disk.sync(name)
        self.writes = [
            (f, o, d, done if f == name and t is None else t) for f, o, d, t in self.writes
        ]

    @rule(seconds=st.sampled_from([0.0, 0.0005, 0.001, 0.003, 0.01]))
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def crash(self) -> None:
        self.disk.crash()
        now = self.clock.now
        self.writes = [(f, o, d, t) for f, o, d, t in self.writes if t is not None and t <= now]

    def expected(self, name: str) -> bytes:
        image = bytearray()
        for f, o, d, _t in self.writes:
            if f == name:
                image.extend(bytes(max(0, o + len(d) - len(image))))
                image[o : o + len(d)] = d
        return bytes(image)

    @invariant()
    def reads_see_the_model(self) -> None:
        for name in "fg":
            assert self.disk.read_now(name, 0, 100) == self.expected(name)


DiskMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
test_the_disk_behaves_like_its_model = DiskMachine.TestCase
