"""MACs of VM NICs: derived per unikernel and instance, settable, never shared on a bridge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from looming.vm import launch
from looming.vm.nic import hardware_address
from tests.vm.conftest import EXAMPLES, Images


@given(st.text(min_size=1, max_size=40), st.integers(min_value=0, max_value=10**6))
def test_the_default_mac_is_stable_locally_administered_and_unicast(
    name: str, instance: int
) -> None:
    mac = launch.default_mac(name, instance)
    assert mac == launch.default_mac(name, instance)
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01
    assert launch.parse_mac(mac) == mac
    assert mac != launch.default_mac(name, instance + 1)
    assert mac != launch.default_mac(name + "x", instance)


def test_mac_and_instance_are_machine_options_not_keys() -> None:
    options, keys = launch.split_arguments(
        ["--mac", "02:AA:bb:00:00:01", "--instance=3", "--port", "80"]
    )
    assert options.mac == "02:aa:bb:00:00:01" and options.instance == 3
    assert keys == ["--port", "80"]


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("--mac=01:00:5e:00:00:01", "multicast"),
        ("--mac=02:00:00:00:01", "is not a MAC address"),
        ("--mac=zz:00:00:00:00:01", "is not a MAC address"),
        ("--instance=-1", "is negative"),
        ("--instance=two", "is not a number"),
    ],
)
def test_bad_macs_and_instances_are_refused(argument: str, message: str) -> None:
    with pytest.raises(launch.LaunchError, match=message):
        launch.split_arguments([argument])


def _fake_bridge(root: Path, own_port: int, entries: list[tuple[str, int]]) -> None:
    (root / "tap0" / "brport").mkdir(parents=True)
    (root / "br0").mkdir()
    (root / "tap0" / "master").symlink_to(root / "br0")
    (root / "tap0" / "brport" / "port_no").write_text(f"{own_port:#x}\n")
    table = b"".join(
        bytes.fromhex(mac.replace(":", "")) + bytes([port & 0xFF, 0]) + bytes(4)
        + bytes([port >> 8, 0]) + bytes(2)
        for mac, port in entries
    )  # fmt: skip
    (root / "br0" / "brforward").write_bytes(table)


def test_a_mac_learnt_on_another_port_of_the_bridge_is_refused(tmp_path: Path) -> None:
    mac = launch.default_mac("website", 1)
    _fake_bridge(tmp_path, 1, [("02:00:00:00:00:09", 2), (mac, 258)])
    with pytest.raises(launch.LaunchError, match=f"{mac} is already used on bridge br0"):
        launch.check_mac_unused("tap0", mac, tmp_path)
    # Learnt on this VM's own port (its previous boot): no conflict.
    launch.check_mac_unused("tap0", "02:00:00:00:00:09", tmp_path / "none")
    other = tmp_path / "other"
    _fake_bridge(other, 2, [("02:00:00:00:00:09", 2)])
    launch.check_mac_unused("tap0", "02:00:00:00:00:09", other)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def bridge_namespace() -> Iterator[tuple[str, list[str]]]:
    """A namespace with bridge (10.0.0.1/24) and three TAP ports."""
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.fail("this test needs root and /dev/net/tun (it is marked root; CI runs as root)")
    suffix = f"{os.getpid() % 100000}"
    namespace, bridge = f"loomingvmbr{suffix}", f"lbr{suffix}"
    taps = [f"lbt{suffix}x{i}" for i in range(3)]
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
    _ip("netns", "add", namespace)
    try:
        _ip("-n", namespace, "link", "add", bridge, "type", "bridge")
        _ip("-n", namespace, "addr", "add", "10.0.0.1/24", "dev", bridge)
        for tap in taps:
            _ip("-n", namespace, "tuntap", "add", "dev", tap, "mode", "tap")
            _ip("-n", namespace, "link", "set", tap, "master", bridge, "up")
        _ip("-n", namespace, "link", "set", bridge, "up")
        yield namespace, taps
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)


def _in(namespace: str, *command: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.root
def test_two_vms_on_one_bridge_each_get_their_own_traffic(
    images: Images, bridge_namespace: tuple[str, list[str]]
) -> None:
    namespace, taps = bridge_namespace
    manifest = images.app("static_website", "x86_64") / "dist" / "website-vm.json"
    launchers = []
    for i in range(2):
        command = [
            "ip", "netns", "exec", namespace, sys.executable, "-m", "looming.vm.launch",
            str(manifest), "--vm-tap", taps[i], "--instance", str(i + 1),
            "--vm-timeout", "200", "--ipv4", f"10.0.0.{i + 2}/24", "--port", "8080",
        ]  # fmt: skip
        launchers.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    expected = (EXAMPLES / "static_website" / "htdocs" / "index.html").read_text()
    try:
        for i in range(2):
            url = f"http://10.0.0.{i + 2}:8080/"
            deadline = time.monotonic() + 150
            answered = None
            while time.monotonic() < deadline and launchers[i].poll() is None:
                answered = _in(namespace, "curl", "-s", "-f", "-m", "2", url)
                if answered.returncode == 0:
                    break
                time.sleep(0.5)
            assert answered is not None and answered.returncode == 0, f"{url} never answered"
            assert answered.stdout == expected
        # Each answered from its own derived MAC.
        for i in range(2):
            neighbour = _in(namespace, "ip", "neigh", "show", f"10.0.0.{i + 2}").stdout
            assert launch.default_mac("website", i + 1) in neighbour, neighbour
        # A third VM given the first one's MAC is refused before it boots.
        third = _in(
            namespace, sys.executable, "-m", "looming.vm.launch", str(manifest),
            "--vm-tap", taps[2], "--instance", "1", "--port", "8080",
        )  # fmt: skip
        assert third.returncode == 2, third.stdout + third.stderr
        assert "is already used on bridge" in third.stderr
    finally:
        for launcher in launchers:
            if launcher.poll() is None:
                os.kill(launcher.pid, signal.SIGTERM)
        outputs = [launcher.communicate(timeout=30)[0] for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], outputs


def test_the_guest_stack_reads_the_mac_qemu_gave_its_nic(tmp_path: Path) -> None:
    (tmp_path / "eth0").mkdir()
    (tmp_path / "eth0" / "address").write_text("6e:cc:ed:cd:7e:06\n")
    assert hardware_address("eth0", tmp_path) == bytes.fromhex("6eccedcd7e06")
    assert hardware_address("eth1", tmp_path) is None
    (tmp_path / "eth0" / "address").write_text("not a mac\n")
    assert hardware_address("eth0", tmp_path) is None


def _mac_on_command_line(command: list[str]) -> str:
    device = next(a for a in command if a.startswith("virtio-net-"))
    return dict(part.split("=", 1) for part in device.split(",")[1:])["mac"]


def test_instances_of_one_image_get_their_own_macs_on_qemus_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest: dict[str, object] = {
        "arch": "x86_64", "kernel": str(tmp_path / "kernel"), "initrd": str(tmp_path / "initrd"),
        "unikernel": "website", "needs_network": True,
    }  # fmt: skip
    macs = []
    for argv in (["--instance", "0"], ["--instance", "1"], ["--instance", "1"], []):
        options, keys = launch.split_arguments(["--vm-tap", "loomingnotap", *argv])
        macs.append(_mac_on_command_line(launch.qemu_command(manifest, options, keys)))
    assert macs[0] != macs[1] and macs[1] == macs[2] and macs[3] == macs[0]
    assert macs[1] == launch.default_mac("website", 1)
    assert all(int(mac[:2], 16) & 0x03 == 0x02 for mac in macs)  # local, unicast
    options, keys = launch.split_arguments(["--vm-tap", "t", "--mac", "02:00:00:00:00:2A"])
    assert _mac_on_command_line(launch.qemu_command(manifest, options, keys)) == (
        "02:00:00:00:00:2a"
    )
    # A bad MAC, given to `looming run`: the message, exit 2, no qemu.
    image = tmp_path / "website-vm.json"
    image.write_text('{"arch": "x86_64", "kernel": "k", "initrd": "i"}')
    assert launch.main([str(image), "--mac", "03:00:00:00:00:01"]) == 2
    assert "03:00:00:00:00:01 is a multicast address" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.root
def test_a_vm_serves_over_ipv6_and_ipv4(
    images: Images, bridge_namespace: tuple[str, list[str]]
) -> None:
    namespace, taps = bridge_namespace
    _ip("-n", namespace, "addr", "add", "fd00:6::1/64", "dev", next(iter(_bridges(namespace))))
    manifest = images.app("static_website", "x86_64") / "dist" / "website-vm.json"
    command = [
        "ip", "netns", "exec", namespace, sys.executable, "-m", "looming.vm.launch",
        str(manifest), "--vm-tap", taps[0], "--vm-timeout", "200", "--port", "8080",
        "--ipv4", "10.0.0.2/24", "--ipv6-address", "fd00:6::2/64",
    ]  # fmt: skip
    launcher = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    expected = (EXAMPLES / "static_website" / "htdocs" / "index.html").read_text()
    try:
        for url in ("http://[fd00:6::2]:8080/", "http://10.0.0.2:8080/"):
            deadline = time.monotonic() + 150
            answered = None
            while time.monotonic() < deadline and launcher.poll() is None:
                answered = _in(namespace, "curl", "-g", "-s", "-f", "-m", "2", url)
                if answered.returncode == 0:
                    break
                time.sleep(0.5)
            if answered is None or answered.returncode != 0:
                launcher.kill()
                output = launcher.communicate(timeout=30)[0]
                raise AssertionError(f"{url} never answered; the VM said:\n{output}")
            assert answered.stdout == expected
        # The kernel resolved the guest's IPv6 address by neighbour discovery,
        # to the NIC's derived MAC, and reaches it with ping -6 too.
        neighbour = _in(namespace, "ip", "-6", "neigh", "show", "fd00:6::2").stdout
        assert launch.default_mac("website", 0) in neighbour, neighbour
        ping = _in(namespace, "ping", "-6", "-c", "2", "-W", "5", "fd00:6::2")
        assert ping.returncode == 0, ping.stdout + ping.stderr
    finally:
        if launcher.poll() is None:
            os.kill(launcher.pid, signal.SIGTERM)
        output = launcher.communicate(timeout=30)[0]
    assert launcher.returncode == 0, output


def _bridges(namespace: str) -> list[str]:
    shown = _in(namespace, "ip", "-o", "link", "show", "type", "bridge").stdout
    return [line.split(":")[1].strip() for line in shown.splitlines()]
