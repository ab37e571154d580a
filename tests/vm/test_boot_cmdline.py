"""The guest kernel's command line: what it is told so that it boots fast.

A word without ``=`` that the kernel does not know is handed to /init as an
argument, which the unikernel would refuse as a key; so looming gives the
kernel only ``name=value`` words besides the flags it knows.
"""

from __future__ import annotations

from looming.vm import launch
from looming.vm.arch import get_arch


def _command_line(arch: str) -> list[str]:
    options = launch.MachineOptions(tap="tap0")
    machine = launch.machine_for(get_arch(arch), "pc" if arch == "x86_64" else None)
    return launch.kernel_command_line({"arch": arch}, options, machine, disk=False)


def test_aarch64_kernel_keeps_one_page_table() -> None:
    # Debian's arm64 kernel forces page table isolation on with KASLR,
    # whatever mitigations=off says: every system call and interrupt then
    # switches page tables, which qemu's TCG pays for in flushed TLBs.
    words = _command_line("aarch64")
    assert "kpti=0" in words and "mitigations=off" in words
    assert "nokaslr" not in words  # not a parameter of its own: /init would get it


def test_x86_64_has_no_kpti_word() -> None:
    # x86_64's isolation (pti) is already off with mitigations=off.
    words = _command_line("x86_64")
    assert "mitigations=off" in words and not any(w.startswith("kpti") for w in words)
