"""The guest's NIC, driven by looming's stack with the NIC's own MAC, and
the table of NIC drivers an image can carry.

qemu gives the NIC the MAC ``looming run`` chose (``--mac``, or one derived
from the unikernel's name and ``--instance``); the stack must answer for
that address, not for one derived from the interface's name (``eth0`` in
every guest), or VMs on one bridge would share it.

Which NIC a machine has depends on its hypervisor: virtio (over PCI, or
over MMIO on qemu's ``microvm``, aarch64's ``virt`` and Firecracker), Xen's
netfront, AWS's ENA, Hyper-V's netvsc, VMware's vmxnet3. ``looming
configure -t vm --nic-drivers`` picks the drivers the image carries; /init
loads them all and brings up the first ethernet interface that appears,
which it names in the environment (:data:`ENVIRONMENT`) for :func:`connect`.
This module is imported in the guest: it holds only data and the driving
code, no build-time machinery.
"""

from __future__ import annotations

import os
from pathlib import Path

from looming.devices.net import MacAddress
from looming.net.netif.af_packet import PacketNetwork

# The kernel modules of each driver, as Debian's kernels name them (the
# build adds what they depend on, from their .modinfo).
NIC_DRIVERS: dict[str, tuple[str, ...]] = {
    "virtio-pci": ("virtio_pci", "virtio_net"),
    "virtio-mmio": ("virtio_mmio", "virtio_net"),
    "vmxnet3": ("vmxnet3",),
    "xen-netfront": ("xen_netfront",),
    "ena": ("ena",),
    "netvsc": ("hv_netvsc",),
}
# Without --nic-drivers: the virtio transport of the architecture's default
# machine (x86_64's pc has PCI; aarch64's virt gets virtio-mmio devices).
DEFAULT_DRIVER = {"virtio_pci": "virtio-pci", "virtio_mmio": "virtio-mmio"}
# Set by /init to the interface it brought up.
ENVIRONMENT = "LOOMING_VM_NIC"
SYS_NET = Path("/sys/class/net")


class NicDriverError(ValueError):
    """A --nic-drivers list naming a driver there is none of."""


def parse_nic_drivers(text: str | None, transport: str) -> tuple[str, ...]:
    """The drivers of ``--nic-drivers`` (comma-separated, in order, without
    repeats); without it, the one for the machine's virtio ``transport``."""
    if text is None or not text.strip():
        return (DEFAULT_DRIVER[transport],)
    drivers: list[str] = []
    for name in (part.strip() for part in text.split(",")):
        if name not in NIC_DRIVERS:
            raise NicDriverError(
                f"--nic-drivers: unknown NIC driver {name!r}; choose from: {', '.join(NIC_DRIVERS)}"
            )
        if name not in drivers:
            drivers.append(name)
    return tuple(drivers)


def driver_modules(drivers: tuple[str, ...]) -> list[str]:
    """The kernel modules the ``drivers`` need, without repeats, in order."""
    modules: list[str] = []
    for driver in drivers:
        modules += [m for m in NIC_DRIVERS[driver] if m not in modules]
    return modules


def hardware_address(interface: str, sys_net: Path = SYS_NET) -> MacAddress | None:
    """The MAC the hypervisor gave ``interface``; None when it cannot be read."""
    try:
        text = (sys_net / interface / "address").read_text().strip()
        return MacAddress(bytes.fromhex(text.replace(":", "")))
    except (OSError, ValueError):
        return None


def guest_interface(interface: str, sys_net: Path = SYS_NET) -> str:
    """``interface`` when the guest has it; otherwise the NIC /init found
    (a machine whose driver names its interface otherwise)."""
    found = os.environ.get(ENVIRONMENT)
    if found and not (sys_net / interface).exists():
        return found
    return interface


async def connect(interface: str) -> PacketNetwork:
    """The NIC through an AF_PACKET socket, speaking with its own MAC."""
    interface = guest_interface(interface)
    return await PacketNetwork.connect(interface, mac=hardware_address(interface))
