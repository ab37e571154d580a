"""The launcher and signals: qemu never outlives ``looming run``, the guest
stops as the unix target does, and repeated signals give no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from looming.vm import launch
from tests.vm.conftest import Images

pytestmark = pytest.mark.slow


def _start(app: Path, *keys: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "looming.cli", "run", "--vm-timeout", "150", *keys],
        cwd=app,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _qemu_of(pid: int) -> int:
    """The qemu process ``looming run`` (pid) started.

    Right after the fork the child is not qemu yet (its command line is the
    launcher's, or empty while it execs): wait until it is."""
    deadline = time.monotonic() + 20
    seen: list[tuple[str, bytes]] = []
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for child in children:
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0]
            except FileNotFoundError:
                continue
            if b"qemu-system-" in command:
                return int(child)
            seen.append((child, command))
        time.sleep(0.05)
    raise AssertionError(f"looming run {pid} started no qemu within 20 s: {seen[-5:]}")


def _wait_for_greeting(run: subprocess.Popen[str]) -> None:
    """Until the unikernel is running (its first greeting is on the console)."""
    assert run.stdout is not None
    for line in run.stdout:
        if line.startswith("hello from looming (1/"):
            return
    raise AssertionError(f"the unikernel never started: {run.communicate()}")


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":  # dead, waiting for whoever adopted it to reap it
            return True
        time.sleep(0.05)
    return False


def test_sigkill_of_looming_run_takes_qemu_with_it(images: Images) -> None:
    run = _start(images.app("hello", "x86_64"), "--greetings", "200")
    try:
        _wait_for_greeting(run)
        qemu = _qemu_of(run.pid)
        run.kill()
        run.wait(10)
        assert _gone(qemu, 10), f"qemu {qemu} outlived looming run"
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate()


def test_sigterm_stops_the_unikernel_as_on_the_unix_target(images: Images) -> None:
    run = _start(images.app("hello", "x86_64"), "--greetings", "200")
    _wait_for_greeting(run)
    qemu = _qemu_of(run.pid)
    began = time.monotonic()
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=60)
    # The unikernel heard it (its runtime logs it), closed its devices and
    # ended with status 0, which /init reported and the launcher returned.
    assert "received SIGTERM, stopping" in out + err, out + err
    assert run.returncode == 0, out + err
    assert "killing it" not in out + err
    assert _gone(qemu, 5)
    assert time.monotonic() - began < 10


def test_a_second_sigterm_kills_qemu_without_a_traceback(images: Images) -> None:
    run = _start(images.app("hello", "x86_64"), "--greetings", "200")
    _wait_for_greeting(run)
    qemu = _qemu_of(run.pid)
    os.kill(run.pid, signal.SIGTERM)
    # Apart enough that the kernel does not merge them into one pending signal.
    time.sleep(0.2)
    os.kill(run.pid, signal.SIGTERM)
    out, err = run.communicate(timeout=30)
    assert "Traceback" not in out + err, out + err
    # The guest may have stopped within the 0.2 s (status 0); if not, the
    # second signal killed it.
    if run.returncode == 0:
        assert "received SIGTERM, stopping" in out + err
    else:
        assert run.returncode == 128 + signal.SIGTERM, out + err
        assert "stopping the VM at once" in out
    assert _gone(qemu, 5)


def _stand_in_for_qemu() -> subprocess.Popen[bytes]:
    """A process that, like a guest that does not listen, ignores the stop request."""
    return subprocess.Popen(
        ["sleep", "60"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )


@pytest.mark.parametrize("gap", [0.0, 0.002, 0.05])
def test_repeated_signals_never_raise_and_the_second_kills(gap: float) -> None:
    signals = launch._Signals()
    lines: list[str] = []
    try:
        qemu = _stand_in_for_qemu()
        options = launch.MachineOptions(stop_timeout=2)

        def send() -> None:
            for _ in range(3):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(gap)

        sender = threading.Timer(0.1, send)
        sender.start()
        began = time.monotonic()
        status = launch._supervise(qemu, signals, launch._Console(lines.append), options)
        qemu.wait(5)
        sender.join()
    finally:
        signals.close()
    assert status == 128 + signal.SIGTERM
    assert time.monotonic() - began < 10
    assert qemu.returncode == -signal.SIGKILL
    assert qemu.stdin is not None and qemu.stdout is not None
    qemu.stdin.close()
    qemu.stdout.close()
    # Signals the kernel merged (no gap) are one request, which times out;
    # else the second kills at once.
    if len(signals.received) > 1:
        assert lines == ["looming: stopping the VM at once\n"]
    else:
        assert lines == ["looming: the guest did not stop in time; killing it\n"]


def test_a_guest_that_ignores_the_request_is_killed_after_the_stop_timeout(
    images: Images,
) -> None:
    # Before the guest's /init listens (during the kernel's boot) the request
    # is lost: the launcher must not wait for ever.
    run = _start(images.app("hello", "x86_64"), "--greetings", "200", "--vm-stop-timeout", "0.5")
    qemu = _qemu_of(run.pid)
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=30)
    assert "Traceback" not in out + err, out + err
    assert run.returncode == 128 + signal.SIGTERM, out + err
    assert "did not stop in time" in out
    assert _gone(qemu, 5)


def _machine_of(manifest: dict[str, object], *argv: str) -> tuple[str, str]:
    """qemu's -M and the kernel command line for ``manifest`` booted with ``argv``."""
    options, keys = launch.split_arguments(argv)
    command = launch.qemu_command(manifest, options, keys)
    return command[command.index("-M") + 1], command[command.index("-append") + 1]


def test_x86_64_boots_on_microvm_when_nothing_needs_pc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launch, "tsc_khz", lambda: 2_600_000)
    both = ["virtio_pci", "virtio_mmio", "virtio_net"]
    manifest: dict[str, object] = {
        "arch": "x86_64", "kernel": str(tmp_path / "k"), "initrd": "i",
        "needs_network": True, "kernel_modules": both,
    }  # fmt: skip
    tap = ("--vm-tap", "loomingnotap")
    machine, cmdline = _machine_of(manifest, *tap)
    assert machine == "microvm" and "tsc_early_khz=2600000" in cmdline.split()
    assert "noapictimer" not in cmdline.split()
    assert _machine_of(manifest, *tap, "--vm-machine", "pc")[0] == "pc"
    # Whatever needs PCI, or a driver the image lacks, keeps pc.
    assert _machine_of({**manifest, "kernel_modules": both[::2]}, *tap)[0] == "pc"
    assert _machine_of({**manifest, "vchans": [{"port": "kv", "peer": None}]}, *tap)[0] == "pc"
    vmxnet3 = {**manifest, "kernel_modules": [*both, "vmxnet3"]}
    assert _machine_of(vmxnet3, *tap, "--vm-nic", "vmxnet3")[0] == "pc"
    assert _machine_of({**manifest, "kernel_modules": "?"}, *tap)[0] == "pc"  # an old manifest
    # Without the host's TSC rate, microvm's kernel could wait for ever
    # on a failed PIT calibration under emulation: pc, with its HPET.
    monkeypatch.setattr(launch, "tsc_khz", lambda: None)
    machine, cmdline = _machine_of(manifest, *tap)
    assert machine == "pc" and "noapictimer" in cmdline.split()
    monkeypatch.setenv("LOOMING_VM_ACCEL", "kvm")  # kvm-clock needs no calibration
    assert _machine_of(manifest, *tap)[0] == "microvm"
    # aarch64 has one machine.
    arm = {**manifest, "arch": "aarch64", "kernel_modules": ["virtio_mmio", "virtio_net"]}
    assert _machine_of(arm, *tap)[0] == "virt"
