"""StoreKv: the store as a KvRw device."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from looming.devices.kv import EntryKind, KvRw
from looming.errors import DeviceError, KeyNotFound, NotAValue
from looming.store.kv import StoreKv
from looming.store.repo import Repo
from looming.unix.clock import UnixClock

from .conftest import GitRunner


def test_kv_rw_over_a_store(tmp_path: Path, git: GitRunner) -> None:
    async def main() -> None:
        kv = await StoreKv.connect(str(tmp_path / "kv.git"), branch="site", clock=UnixClock())
        assert isinstance(kv, KvRw)
        await kv.set("/css/site.css", b"body{}")
        await kv.set("index.html", b"<h1>hi</h1>")
        assert await kv.exists("css") is EntryKind.DICTIONARY
        assert await kv.exists("index.html") is EntryKind.VALUE
        assert await kv.exists("nope") is None
        assert await kv.get("css/site.css") == b"body{}"
        assert await kv.get_partial("index.html", 4, 2) == b"hi"
        assert await kv.size("index.html") == 11
        assert await kv.list("") == [("css", EntryKind.DICTIONARY), ("index.html", EntryKind.VALUE)]
        digest = await kv.digest("index.html")
        assert digest == git("hash-object", "--stdin", cwd=tmp_path, input=b"<h1>hi</h1>").strip()
        assert await kv.last_modified("index.html") > 1e9
        with pytest.raises(NotAValue):
            await kv.get("css")
        with pytest.raises(NotAValue):
            await kv.set("css", b"x")
        with pytest.raises(KeyNotFound):
            await kv.get("missing")
        with pytest.raises(KeyNotFound):
            await kv.get("../etc/passwd")
        with pytest.raises(DeviceError):
            await kv.set("a//b\0", b"x")
        await kv.rename("css", "styles")
        assert await kv.get("styles/site.css") == b"body{}"
        assert await kv.exists("css") is None
        await kv.remove("styles")
        await kv.remove("not-there")
        assert await kv.list() == [("index.html", EntryKind.VALUE)]

    asyncio.run(main())
    # Publishing is a commit: git sees every write on the branch.
    log = git("log", "--format=%s", "site", cwd=tmp_path / "kv.git").splitlines()
    assert log == ["remove styles", "rename css to styles", "set index.html", "set css/site.css"]
    assert (
        Repo.open(str(tmp_path / "kv.git"), clock=UnixClock()).store("site").get("index.html")
        == b"<h1>hi</h1>"
    )


def test_disconnecting_the_device_closes_the_store(tmp_path: Path, git: GitRunner) -> None:
    path = tmp_path / "kv.git"

    async def main() -> None:
        kv = await StoreKv.connect(str(path), clock=UnixClock())
        for number in range(4):
            await kv.set(f"k{number}", b"%d" % number)
        assert list((path / "looming-spares").iterdir())  # the open writer's files
        await kv.disconnect()

    asyncio.run(main())
    assert len(list((path / "objects" / "pack").glob("*.pack"))) == 1
    assert [spare.name for spare in (path / "looming-spares").iterdir()] == []
    git("fsck", "--strict", "--no-dangling", cwd=path)
