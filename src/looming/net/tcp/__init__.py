"""looming's TCP (RFC 9293): a sans-I/O core and its asyncio shell.

:class:`TcpLayer` is the :class:`looming.devices.Tcp` implementation for the
direct stack; :class:`~looming.net.tcp.connection.TcpConnection` is one
connection's state machine and :class:`~looming.net.tcp.endpoint.TcpEndpoint`
the table of connections and listeners, both free of I/O and clocks.
"""

from looming.net.tcp.config import TcpConfig, TcpStats
from looming.net.tcp.connection import Event, State, TcpConnection
from looming.net.tcp.endpoint import TcpEndpoint
from looming.net.tcp.layer import TcpLayer, TcpListener, TcpStream

__all__ = [
    "Event",
    "State",
    "TcpConfig",
    "TcpConnection",
    "TcpEndpoint",
    "TcpLayer",
    "TcpListener",
    "TcpStats",
    "TcpStream",
]
