"""Device interfaces: the only things an application imports.

Each interface is a :class:`typing.Protocol`. Implementations live elsewhere
(``looming.unix``, ``looming.net``, ``looming.sim``, ...) and receive their
lower layers as constructor arguments; ``looming configure`` decides which
implementation backs each device.
"""

from looming.devices.block import Block, BlockInfo
from looming.devices.clock import Clock
from looming.devices.console import Console
from looming.devices.flow import Flow
from looming.devices.kv import EntryKind, KvRo, KvRw
from looming.devices.net import (
    Arp,
    Ethernet,
    EthernetProtocol,
    IpProtocol,
    Ipv4,
    MacAddress,
    Network,
    NetworkStats,
)
from looming.devices.random import Random
from looming.devices.stack import Datagram, Listener, Stack, Tcp, TcpFlow, Udp, UdpHandler
from looming.devices.time import Time

__all__ = [
    "Arp",
    "Block",
    "BlockInfo",
    "Clock",
    "Console",
    "Datagram",
    "EntryKind",
    "Ethernet",
    "EthernetProtocol",
    "Flow",
    "IpProtocol",
    "Ipv4",
    "KvRo",
    "KvRw",
    "Listener",
    "MacAddress",
    "Network",
    "NetworkStats",
    "Random",
    "Stack",
    "Tcp",
    "TcpFlow",
    "Time",
    "Udp",
    "UdpHandler",
]
