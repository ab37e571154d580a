"""The host implementations of console, time, clock, random, kv and block."""

from __future__ import annotations

import asyncio
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from looming.devices import Block, Clock, Console, EntryKind, KvRo, KvRw, Random, Time
from looming.errors import BlockOutOfRange, KeyNotFound, NotAValue, ReadOnly
from looming.unix.block import FileBlock
from looming.unix.clock import UnixClock
from looming.unix.console import UnixConsole
from looming.unix.kv import MANIFEST_DIR, CrunchedKv, DirectoryKv, DirectoryKvRw, crunch_manifest
from looming.unix.random import UnixRandom
from looming.unix.time import UnixTime


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_implementations_satisfy_the_protocols(tmp_path: Path) -> None:
    assert isinstance(UnixConsole(io.BytesIO()), Console)
    assert isinstance(UnixTime(), Time)
    assert isinstance(UnixClock(), Clock)
    assert isinstance(UnixRandom(), Random)
    (tmp_path / "ro").mkdir()
    assert isinstance(DirectoryKv(tmp_path / "ro"), KvRo)
    assert isinstance(DirectoryKvRw(tmp_path / "rw"), KvRw)
    block = run(FileBlock.connect(tmp_path / "disk.img"))
    assert isinstance(block, Block)
    run(block.disconnect())


def test_console_writes_lines() -> None:
    out = io.BytesIO()
    console = UnixConsole(out)
    run(console.log("héllo"))
    run(console.write(b"raw"))
    assert out.getvalue() == "héllo\n".encode() + b"raw"


def test_time_is_monotonic_and_sleeps() -> None:
    t = UnixTime()
    before = t.now_ns()
    run(t.sleep(0.02))
    assert t.now_ns() - before >= 20_000_000


def test_seeded_random_is_deterministic() -> None:
    a, b = UnixRandom(seed=7), UnixRandom(seed=7)
    assert a.seeded and not UnixRandom().seeded
    assert [a.bytes(40), a.randint(1, 6), a.random()] == [b.bytes(40), b.randint(1, 6), b.random()]
    assert UnixRandom(seed=8).bytes(40) != UnixRandom(seed=7).bytes(40)
    assert len(UnixRandom().bytes(33)) == 33
    with pytest.raises(ValueError):
        a.randint(5, 1)


def make_tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_bytes(b"<h1>hi</h1>")
    (root / "sub" / "a.txt").write_bytes(b"0123456789")


@pytest.fixture(params=["directory", "crunched"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> KvRo:
    root = tmp_path / "site"
    make_tree(root)
    (tmp_path / "secret.txt").write_bytes(b"outside")
    if request.param == "directory":
        return DirectoryKv(root)
    manifest, pairs = crunch_manifest(root)
    archive = tmp_path / "app.pyz"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{MANIFEST_DIR}/site.json", json.dumps(manifest))
        for rel, path in pairs:
            z.writestr(f"{MANIFEST_DIR}/site/{rel}", path.read_bytes())
    return CrunchedKv.load("site", str(archive))


def test_kv_ro_reads(store: KvRo) -> None:
    assert run(store.get("index.html")) == b"<h1>hi</h1>"
    assert run(store.get("/sub/a.txt")) == b"0123456789"
    assert run(store.get_partial("sub/a.txt", 3, 4)) == b"3456"
    assert run(store.get_partial("sub/a.txt", 8, 10)) == b"89"
    assert run(store.size("sub/a.txt")) == 10
    assert run(store.list("")) == [("index.html", EntryKind.VALUE), ("sub", EntryKind.DICTIONARY)]
    assert run(store.exists("sub")) is EntryKind.DICTIONARY
    assert run(store.exists("nope")) is None
    digest = run(store.digest("sub/a.txt"))
    assert len(digest) == 64 and digest == run(store.digest("sub/a.txt"))
    assert digest != run(store.digest("index.html"))
    with pytest.raises(NotAValue):
        run(store.get("sub"))
    with pytest.raises(KeyNotFound):
        run(store.get("missing.txt"))


@pytest.mark.parametrize(
    "key", ["../secret.txt", "sub/../../secret.txt", "a\x00b", "..\\secret.txt"]
)
def test_kv_ro_never_reaches_outside(store: KvRo, key: str) -> None:
    with pytest.raises(KeyNotFound):
        run(store.get(key))
    assert run(store.exists(key)) is None


def test_directory_kv_refuses_symlinks_out(tmp_path: Path) -> None:
    root = tmp_path / "site"
    make_tree(root)
    (tmp_path / "secret.txt").write_bytes(b"outside")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    with pytest.raises(KeyNotFound):
        run(DirectoryKv(root).get("link.txt"))


def test_kv_rw_set_remove_rename(tmp_path: Path) -> None:
    kv = DirectoryKvRw(tmp_path / "data")
    run(kv.set("a/b/c.txt", b"one"))
    assert run(kv.get("a/b/c.txt")) == b"one"
    run(kv.set("a/b/c.txt", b"two"))
    assert run(kv.get("a/b/c.txt")) == b"two"
    run(kv.rename("a/b", "z"))
    assert run(kv.get("z/c.txt")) == b"two"
    assert run(kv.exists("a/b")) is None
    run(kv.remove("z"))
    assert run(kv.exists("z")) is None
    run(kv.remove("never-there"))
    with pytest.raises(NotAValue):
        run(kv.set("a", b"a is a dictionary"))
    with pytest.raises(Exception, match="not a valid key"):
        run(kv.set("../escape", b"x"))
    assert not (tmp_path / "escape").exists()


def test_file_block(tmp_path: Path) -> None:
    async def scenario() -> None:
        block = await FileBlock.connect(tmp_path / "disk.img", size_bytes=8 * 512)
        info = await block.info()
        assert (info.sector_size, info.sectors, info.read_write) == (512, 8, True)
        await block.write(2, b"\xab" * 1024)
        await block.flush()
        assert await block.read(2, 2) == b"\xab" * 1024
        assert await block.read(0, 1) == bytes(512)
        with pytest.raises(BlockOutOfRange):
            await block.read(7, 2)
        with pytest.raises(BlockOutOfRange):
            await block.write(0, b"short")
        await block.disconnect()
        ro = await FileBlock.connect(tmp_path / "disk.img", read_write=False)
        with pytest.raises(ReadOnly):
            await ro.write(0, bytes(512))
        await ro.disconnect()

    run(scenario())


def test_host_devices_are_the_hosts_by_name() -> None:
    import time

    from looming.unix import host_devices

    host = host_devices()
    assert isinstance(host.time, Time) and isinstance(host.clock, Clock)
    assert isinstance(host.random, Random) and not host.random.seeded
    assert abs(host.clock.now() - time.time()) < 5
    # Seeded: the same stream each time, as --seed gives a unikernel.
    first, again = host_devices(seed=7), host_devices(seed=7)
    assert first.random.bytes(16) == again.random.bytes(16) != host_devices(seed=8).random.bytes(16)
