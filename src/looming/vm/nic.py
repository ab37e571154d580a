"""The guest's virtio NIC, driven by looming's stack with the NIC's own MAC.

qemu gives the NIC the MAC ``looming run`` chose (``--mac``, or one derived
from the unikernel's name and ``--instance``); the stack must answer for
that address, not for one derived from the interface's name (``eth0`` in
every guest), or VMs on one bridge would share it.
"""

from __future__ import annotations

from pathlib import Path

from looming.devices.net import MacAddress
from looming.net.netif.af_packet import PacketNetwork


def hardware_address(interface: str, sys_net: Path = Path("/sys/class/net")) -> MacAddress | None:
    """The MAC the hypervisor gave ``interface``; None when it cannot be read."""
    try:
        text = (sys_net / interface / "address").read_text().strip()
        return MacAddress(bytes.fromhex(text.replace(":", "")))
    except (OSError, ValueError):
        return None


async def connect(interface: str) -> PacketNetwork:
    """The NIC through an AF_PACKET socket, speaking with its own MAC."""
    return await PacketNetwork.connect(interface, mac=hardware_address(interface))
