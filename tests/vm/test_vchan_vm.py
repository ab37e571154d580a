"""vchan between two VMs over ivshmem: the guest's side against a stand-in
for sysfs, the host's bookkeeping of the shared files, and one end-to-end
test of examples/vchan_store as two x86_64 VMs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from looming.errors import ConnectionRefused, ConnectionReset, LoomingError
from looming.unix.time import UnixTime
from looming.vchan import layout, pci
from looming.vchan.device import VchanDevice
from looming.vchan.errors import VchanCorrupt
from looming.vm import ivshmem
from tests.vm.conftest import EXAMPLES, Images, TapNamespace, build

# -- the guest's side, with files standing in for the PCI devices' BARs ----------------


def _fake_device(devices: Path, address: str, name: str, port: str, vendor: str = "0x1af4") -> Path:
    device = devices / address
    device.mkdir(parents=True)
    (device / "vendor").write_text(vendor + "\n")
    (device / "device").write_text("0x1110\n")
    with open(device / "resource2", "wb") as bar:
        bar.truncate(pci.REGION_SIZE)
        bar.seek(pci.HEADER_OFFSET)
        bar.write(pci.header(name, port))
    return device


@pytest.fixture
def devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "pci"
    _fake_device(root, "0000:00:03.0", "store", "kv", vendor="0x8086")  # not ivshmem
    _fake_device(root, "0000:00:04.0", "other", "kv")
    _fake_device(root, "0000:00:05.0", "store", "kv")
    monkeypatch.setattr(pci, "PCI_DEVICES", root)
    monkeypatch.setenv("LOOMING_VCHAN_NAME", "store")
    return root


async def _pair(time_: UnixTime) -> tuple[VchanDevice, VchanDevice]:
    serving = asyncio.create_task(pci.PciVchan.connect("kv", time=time_, read_size=5000))
    client = await pci.PciVchan.connect("kv", time=time_, peer="store", wait_for_server=10)
    return await serving, client


def test_two_ends_exchange_reconnect_and_notice_a_dead_peer(
    devices: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stream and packet mode across the region, both directions past the
    rings' sizes; the client leaves and comes back; a peer that stops its
    heartbeat is taken for dead."""

    async def scenario() -> None:
        clock = UnixTime()
        server, client = await _pair(clock)
        blob = os.urandom(300_000)  # several times round both rings
        sender = asyncio.create_task(client.write(blob))
        got = bytearray()
        while len(got) < len(blob):
            got += await server.read()
        await sender
        assert bytes(got) == blob
        await server.send(b"x" * 3000)
        assert await client.recv(3000) == b"x" * 3000
        await client.close()
        assert await server.read() == b""  # the client said it left
        reading = asyncio.create_task(server.read())  # accepts the next client
        again = await pci.PciVchan.connect("kv", time=clock, peer="store", wait_for_server=10)
        await again.write(b"back")
        assert await reading == b"back"
        monkeypatch.setattr(pci, "DEAD_AFTER", 1.5)  # ten beats missed
        monkeypatch.setattr(pci, "BEAT_EVERY", 0.15)
        # A fresh connection picks up the short limits; the client then goes
        # silent without closing (its doorbell stops counting).
        await again.close()
        assert await server.read() == b""
        reading = asyncio.create_task(server.read())
        silent = await pci.PciVchan.connect("kv", time=clock, peer="store", wait_for_server=10)
        await silent.write(b"last")
        assert await reading == b"last"
        flow = silent._flow
        assert flow is not None
        hooks = flow.endpoint._close_hooks
        (stop,) = [h for h in hooks if isinstance(getattr(h, "__self__", None), pci.Doorbell)]
        stop()  # the client's doorbell stops counting; nothing else of it goes
        with pytest.raises(ConnectionReset, match="died"):
            async with asyncio.timeout(10):
                while await server.read():
                    pass
        await server.close()

    asyncio.run(scenario())


def test_a_region_is_found_by_name_and_port_and_a_missing_one_is_named(devices: Path) -> None:
    region = pci.find_region("store", "kv")
    assert (region.name, region.port, region.address) == ("store", "kv", "0000:00:05.0")
    region.segment.close()
    with pytest.raises(ConnectionRefused, match=r"store/nope.*it has: other/kv, store/kv"):
        pci.find_region("store", "nope")


def test_a_corrupt_header_from_the_server_is_refused(devices: Path) -> None:
    """The client checks the server's page as the process target does."""

    async def scenario() -> None:
        region = pci.find_region("store", "kv")
        view = region.segment.view()
        layout.initialize(view, layout.plan(10, 11))
        view[layout.LEFT_ORDER] = 30  # a ring of 1 GiB
        region.set_word(pci.STATE, pci.READY)
        view.release()
        with pytest.raises(LoomingError, match="order 30"):
            await pci.PciVchan.connect("kv", time=UnixTime(), peer="store", wait_for_server=2)
        view = region.segment.view()
        layout.initialize(view, layout.plan(10, 11))
        view[layout.SRV_LIVE] = layout.LIVE_EXITED  # a server that is not there
        view.release()
        with pytest.raises(LoomingError, match="does not say connected"):
            await pci.PciVchan.connect("kv", time=UnixTime(), peer="store", wait_for_server=2)
        region.segment.close()

    asyncio.run(scenario())


# -- the host's side -------------------------------------------------------------------


def test_regions_are_made_by_the_server_and_refused_when_missing_or_in_use(
    tmp_path: Path,
) -> None:
    client = [{"port": "kv", "peer": "store"}]
    with pytest.raises(ivshmem.IvshmemError, match="no VM serves vchan store/kv"):
        ivshmem.attach("front", client, tmp_path)
    with pytest.raises(ivshmem.IvshmemError, match="longer than 63 bytes: shorten"):
        ivshmem.attach("s" * 64, [{"port": "kv", "peer": None}], tmp_path)
    served = ivshmem.attach("store", [{"port": "kv", "peer": None}], tmp_path)
    region = tmp_path / "looming-ivshmem-store.kv"
    assert region.stat().st_size == pci.REGION_SIZE
    assert "mem-path=" + str(region) in " ".join(served.arguments)
    assert "ivshmem-plain,memdev=vchan0" in served.arguments
    with pytest.raises(
        ivshmem.IvshmemError, match=f"in use: another VM serves it.*pid {os.getpid()}"
    ):
        ivshmem.attach("store", [{"port": "kv", "peer": None}], tmp_path)
    connected = ivshmem.attach("front", client, tmp_path)
    with pytest.raises(ivshmem.IvshmemError, match="in use: another VM is connected"):
        ivshmem.attach("front2", client, tmp_path)
    served.close()
    assert region.exists()  # the client VM still maps it
    connected.close()  # ... and the last one out removes it
    assert os.listdir(tmp_path) == []
    served = ivshmem.attach("store", [{"port": "kv", "peer": None}], tmp_path)
    connected = ivshmem.attach("front", client, tmp_path)
    connected.close()
    assert region.exists()  # the server is still there
    served.close()
    assert os.listdir(tmp_path) == []


# -- examples/vchan_store as two VMs ---------------------------------------------------


@pytest.fixture
def ivshmem_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="looming-test-", dir="/dev/shm"))
    monkeypatch.setenv(ivshmem.DIRECTORY_ENV, str(directory))
    yield directory
    for name in os.listdir(directory):
        (directory / name).unlink()
    directory.rmdir()


def _launcher(manifest: Path, *args: str, namespace: str | None = None) -> list[str]:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    return [*prefix, sys.executable, "-m", "looming.vm.launch", str(manifest), *args]


def _curl(tap: TapNamespace, *args: str) -> tuple[str, str]:
    done = tap.run("curl", "-s", "-m", "20", "-w", "\n%{http_code}", *args, timeout=30)
    body, _, code = done.stdout.rpartition("\n")
    return body, code


def _host_client(region: Path, root: Path) -> list[tuple[int, bytes]]:
    """Talk to the store VM from this process through the region's file, as
    a guest would through its BAR (a stand-in sysfs points at the file)."""
    device = root / "0000:00:09.0"
    device.mkdir(parents=True)
    (device / "vendor").write_text("0x1af4\n")
    (device / "device").write_text("0x1110\n")
    (device / "resource2").symlink_to(region)
    request, answer = struct.Struct(">cHI"), struct.Struct(">BI")  # examples/vchan_store/kvwire.py

    async def exchange() -> list[tuple[int, bytes]]:
        channel = await pci.PciVchan.connect(
            "kv", time=UnixTime(), peer="store", wait_for_server=180
        )
        answers = []
        for op, key, value in (
            (b"P", b"k", b"from the host"),
            (b"G", b"k", b""),
            (b"G", b"x", b""),
        ):
            await channel.write(request.pack(op, len(key), len(value)) + key + value)
            status, length = answer.unpack(await channel.recv(answer.size))
            answers.append((status, await channel.recv(length) if length else b""))
        await channel.close()
        return answers

    return asyncio.run(exchange())


@pytest.mark.slow
@pytest.mark.root
def test_vchan_store_runs_as_two_vms(
    images: Images,
    tap_namespace: TapNamespace,
    ivshmem_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apps = {}
    for name in ("store", "front"):
        dest = images.root / f"vchan-{name}"
        dest.mkdir(exist_ok=True)
        app = build(EXAMPLES / "vchan_store", dest, "x86_64", ("--unikernel", name))
        apps[name] = app / "dist" / f"{name}-vm.json"
    assert json.loads(apps["front"].read_text())["vchans"] == [{"port": "kv", "peer": "store"}]
    tap_args = ("--vm-tap", tap_namespace.tap, "--vm-timeout", "300")
    # No store yet: the front end's launcher refuses before booting anything.
    alone = subprocess.run(
        _launcher(apps["front"], *tap_args), capture_output=True, text=True, timeout=60
    )
    assert alone.returncode == 2, alone.stderr
    assert "no VM serves vchan store/kv" in alone.stderr
    store = subprocess.Popen(
        _launcher(apps["store"], "--vm-timeout", "300"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    front: subprocess.Popen[str] | None = None
    try:
        region = ivshmem_dir / "looming-ivshmem-store.kv"
        deadline = time.monotonic() + 30
        while not region.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = subprocess.run(
            _launcher(apps["store"]), capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 2 and "vchan store/kv is in use" in second.stderr
        # First a client on the host, through the same shared file: the
        # store VM's page is byte for byte the process target's.
        monkeypatch.setattr(pci, "PCI_DEVICES", tmp_path / "pci")
        assert _host_client(region, tmp_path / "pci") == [
            (0, b""),
            (0, b"from the host"),
            (1, b""),
        ]
        # Then the front end's VM: the store serves its next client.
        front = subprocess.Popen(
            _launcher(apps["front"], *tap_args, namespace=tap_namespace.namespace),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        url = "http://10.0.0.2:8080/kv/greeting"
        deadline = time.monotonic() + 180
        while _curl(tap_namespace, "-X", "PUT", "--data-binary", "hello", url)[1] != "204":
            assert time.monotonic() < deadline, "the front end never answered"
            time.sleep(0.5)
        assert _curl(tap_namespace, url) == ("hello", "200")
        big = tap_namespace.host_address  # any file: the value goes round the 64 KiB rings
        value = (big * 40000)[:200_000]
        body = Path(tempfile.mkstemp(dir=ivshmem_dir.parent)[1])
        try:
            body.write_text(value)
            assert _curl(tap_namespace, "-X", "PUT", "--data-binary", f"@{body}", url)[1] == "204"
        finally:
            body.unlink()
        assert _curl(tap_namespace, url) == (value, "200")
        assert _curl(tap_namespace, "http://10.0.0.2:8080/kv/k") == ("from the host", "200")
        assert _curl(tap_namespace, "-X", "DELETE", url)[1] == "204"
        assert _curl(tap_namespace, url)[1] == "404"
    finally:
        outputs = []
        for launcher in (front, store):
            if launcher is not None:
                if launcher.poll() is None:
                    os.kill(launcher.pid, signal.SIGTERM)
                outputs.append(launcher.communicate(timeout=60)[0])
        print("\n".join(outputs))
    assert front is not None and front.returncode == 0 and store.returncode == 0, outputs
    assert "vchan: store/kv connected" in outputs[1]
    assert os.listdir(ivshmem_dir) == []  # the store's launcher removed the region


def test_a_server_started_again_leaves_a_mapped_region_in_place(tmp_path: Path) -> None:
    """After a server killed outright (its lock gone with it, the file left),
    the next server neither shrinks the file a client's qemu maps (SIGBUS)
    nor scribbles on the rings: it marks the old server exited."""
    served = ivshmem.attach("store", [{"port": "kv", "peer": None}], tmp_path)
    connected = ivshmem.attach("front", [{"port": "kv", "peer": "store"}], tmp_path)
    region = tmp_path / "looming-ivshmem-store.kv"
    with open(region, "r+b") as shared:
        shared.seek(layout.SRV_LIVE)
        shared.write(bytes([layout.LIVE_CONNECTED]))
        shared.seek(5000)
        shared.write(b"in the ring")
    inode = region.stat().st_ino
    for fd in served._locks:  # what a SIGKILL of its launcher leaves
        os.close(fd)
    again = ivshmem.attach("store", [{"port": "kv", "peer": None}], tmp_path)
    data = region.read_bytes()
    assert region.stat().st_ino == inode and len(data) == pci.REGION_SIZE
    assert data[layout.SRV_LIVE] == layout.LIVE_EXITED
    assert data[5000:5011] == b"in the ring"
    assert data[pci.HEADER_OFFSET :] == pci.header("store", "kv")
    connected.close()
    again.close()
    assert os.listdir(tmp_path) == []


def test_a_peer_that_scribbles_on_the_indices_is_caught_not_followed(devices: Path) -> None:
    """A hostile peer VM moves its producer index past the ring: the waiting
    reader wakes (its doorbell, or the periodic re-check) and refuses the
    index (VchanCorrupt) instead of reading outside the ring."""

    async def scenario() -> None:
        server, client = await _pair(UnixTime())
        reading = asyncio.create_task(server.read())
        await asyncio.sleep(0.05)  # the server waits on its doorbell
        region = pci.find_region("store", "kv")
        words = region.segment.view()[0:16].cast("I")
        words[1] = 1 << 20  # left.prod: the client "wrote" a megabyte into a 5000-byte ring
        words.release()
        with pytest.raises(VchanCorrupt, match="ahead of our consumer index"):
            async with asyncio.timeout(5):
                await reading
        region.segment.close()
        await client.close()
        await server.close()

    asyncio.run(scenario())
