"""``DirectStack``: looming's own TCP/IP stack assembled over one network
interface (``--net direct``).

Layers are built bottom-up, each receiving the one below:
Network -> Ethernet -> ARP -> IPv4 -> ICMP / UDP / TCP (and the DHCP client
and DNS resolver over UDP).  Every layer counts what it drops; see
:meth:`DirectStack.counters`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import weakref
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address
from typing import TYPE_CHECKING

from looming.devices.clock import Clock
from looming.devices.net import IpProtocol, Network
from looming.devices.random import Random
from looming.devices.time import Time
from looming.errors import NoRoute, UsageError
from looming.net.arp import ArpLayer
from looming.net.counter_log import LimitWarnings, nonzero
from looming.net.ethernet import EthernetLayer
from looming.net.icmp import IcmpLayer
from looming.net.ipv4 import Ipv4Layer
from looming.net.limits import check_stack_limits
from looming.net.stack_checks import check_ipv4, check_ipv4_values, check_ipv6, secret_from_hex
from looming.net.tcp import TcpConfig, TcpLayer
from looming.net.udp import UdpLayer
from looming.runtime import STATUS_REPORTERS

if TYPE_CHECKING:  # imported when used: a stack with a static address and no names to
    # resolve (most unikernels) loads neither, which shortens a VM's boot
    from looming.net.dhcp import DhcpLease, DhcpShell
    from looming.net.dhcp6 import Dhcp6Lease, Dhcp6Shell
    from looming.net.dns import DnsResolver
    from looming.net.ipv6 import Ipv6Layer  # imported when IPv6 is on (off by default)


log = logging.getLogger(__name__)


class DirectStack:
    """:class:`looming.devices.stack.Stack` on a :class:`Network`."""

    def __init__(
        self,
        network: Network,
        *,
        time: Time,
        clock: Clock,
        random: Random,
        address: IPv4Interface | None = None,
        gateway: IPv4Address | None = None,
        max_connections: int | None = None,
        memory_limit: int | None = None,
        congestion_control: str = "cubic",
        ipv6: bool = False,
        ipv6_address: IPv6Interface | None = None,
        ipv6_gateway: IPv6Address | None = None,
        slaac: bool = True,
        slaac_secret: bytes | None = None,
        dhcp6: bool | None = None,
    ) -> None:
        self.network = network
        self.time = time
        self.clock = clock
        self.random = random
        self.ethernet = EthernetLayer(network, time=time)
        self.arp = ArpLayer(self.ethernet, time)
        self.ipv4 = Ipv4Layer(
            self.ethernet, self.arp, time, random, interface=address, gateway=gateway
        )
        self.icmp = IcmpLayer(self.ipv4, time, random)
        # IPv6 (link-local, neighbour discovery, echo, UDP) when asked for.
        self.ipv6 = (
            self._make_ipv6(ipv6_address, ipv6_gateway, slaac, slaac_secret) if ipv6 else None
        )
        self._udp = UdpLayer(self.ipv4, random, icmp=self.icmp, ipv6=self.ipv6)
        self._tcp = TcpLayer(
            self.ipv4,
            time,
            random,
            config=TcpConfig(congestion_control=congestion_control),
            max_connections=max_connections,
            memory_limit=memory_limit,
            ipv6=self.ipv6,
        )
        self.icmp.register_errors(IpProtocol.TCP, self._tcp.on_icmp_error)
        self.icmp.register_errors(IpProtocol.UDP, self._udp.on_icmp_error)
        if self.ipv6 is not None:
            from looming.net.ipv6 import as_icmp_error

            tcp_errors, udp_errors = self._tcp.on_icmp_error, self._udp.on_icmp_error
            self.ipv6.register_errors(IpProtocol.TCP, lambda e: tcp_errors(as_icmp_error(e)))
            self.ipv6.register_errors(IpProtocol.UDP, lambda e: udp_errors(as_icmp_error(e)))
        self.dhcp: DhcpShell | None = None
        self.dhcp6: Dhcp6Shell | None = None
        self._dhcp6_allowed = dhcp6 is not False
        self.lease: DhcpLease | None = None
        self._resolver: DnsResolver | None = None
        self._tcp.resolver = self.resolve
        self._listen_task: asyncio.Task[None] | None = None
        # With a limit set: a warning when it bites (see counter_log).
        self._limits_set = bool(max_connections or memory_limit)
        self.limit_warnings = LimitWarnings()
        self._watch_task: asyncio.Task[None] | None = None
        # For SIGUSR1: a stack never disconnected is not kept alive by it.
        self._status_reporter = _weak_reporter(weakref.ref(self))

    def _make_ipv6(
        self,
        address: IPv6Interface | None,
        gateway: IPv6Address | None,
        slaac: bool,
        secret: bytes | None,
    ) -> Ipv6Layer:
        from looming.net.ipv6 import Ipv6Layer

        layer = Ipv6Layer(self.ethernet, self.time, self.random, autoconf=slaac, secret=secret)
        if address is not None:
            layer.add_static(address.ip, address.network.prefixlen)
        layer.set_gateway(gateway)
        layer.watch_addresses(self._report_ipv6_address)
        if layer.router_discovery:
            layer.watch_managed(self._start_dhcp6_soon)
        return layer

    def _report_ipv6_address(self, address: IPv6Address, assigned: bool) -> None:
        how = "assigned by SLAAC"
        entry = self.ipv6.autoconf.addresses.get(address) if self.ipv6 is not None else None
        if entry is not None and entry.origin == "dhcpv6":
            how = "leased by DHCPv6"
        elif entry is not None and entry.origin == "static":
            how = "assigned (static, no duplicate found)"
        report = f"IPv6: address {address} {how if assigned else 'removed'}"
        log.info("%s", report)
        print(f"looming: {report}", file=sys.stderr, flush=True)

    def _start_dhcp6_soon(self) -> None:
        """A Router Advertisement said addresses come from DHCPv6."""
        if self.dhcp6 is None and self._dhcp6_allowed:
            task = asyncio.get_running_loop().create_task(self.start_dhcp6())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def start_dhcp6(self) -> None:
        """Run the DHCPv6 client (RFC 8415) for a stateful address."""
        ipv6 = self.ipv6
        if ipv6 is None or not ipv6.router_discovery:
            raise UsageError("DHCPv6 needs IPv6 with router discovery (--ipv6, --slaac on)")
        if self.dhcp6 is not None:
            return
        from looming.net.dhcp6 import Dhcp6Client, Dhcp6Shell

        def on_lease(lease: Dhcp6Lease) -> None:
            shell.leased.add(lease.address)
            ipv6.lease_address(lease.address, lease.preferred_lifetime, lease.valid_lifetime)

        def on_lost(address: IPv6Address) -> None:
            shell.leased.discard(address)
            ipv6.release_address(address)

        def on_duplicate(address: IPv6Address) -> None:
            if address in shell.leased:
                shell.decline(address)

        client = Dhcp6Client(bytes(self.ethernet.mac), self.random)
        shell = Dhcp6Shell(client, self._udp, self.time, on_lease, on_lost)
        self.dhcp6 = shell
        ipv6.watch_duplicates(on_duplicate)
        await shell.start()

    @classmethod
    async def connect(
        cls,
        network: Network,
        *,
        time: Time,
        clock: Clock,
        random: Random,
        address: IPv4Interface | None = None,
        gateway: IPv4Address | None = None,
        dhcp: bool = False,
        dhcp_timeout: float = 30.0,
        dns_servers: list[IPv4Address | IPv6Address] | None = None,
        max_connections: int | None = None,
        memory_limit: int | None = None,
        congestion_control: str = "cubic",
        ipv6: bool = False,
        ipv6_address: IPv6Interface | None = None,
        ipv6_gateway: IPv6Address | None = None,
        slaac: bool = True,
        slaac_secret: bytes | str | None = None,
        dhcp6: bool | None = None,
        ipv4: bool = True,
        wait_for_ipv6: bool | None = None,
    ) -> DirectStack:
        """Assemble the stack on ``network`` and start receiving.

        Give either a static ``address`` (with an optional ``gateway``) or
        ``dhcp=True``, which waits up to ``dhcp_timeout`` seconds for a lease
        (the address it brings is printed on standard error and logged).
        ``max_connections`` bounds TCP connections past the handshake and
        ``memory_limit`` the bytes all TCP send and receive queues together
        may hold (None or 0: no limit); what they turn away is counted (see
        :meth:`counters`).
        ``congestion_control`` is TCP's: ``"cubic"`` or ``"newreno"``.
        ``ipv6`` adds an IPv6 layer with a link-local address (neighbour
        discovery, echo, fragments, UDP and TCP), a static ``ipv6_address``
        (its prefix on-link) and ``ipv6_gateway`` if given, and with
        ``slaac`` router discovery and addresses from advertised prefixes
        (RFC 4862; ``slaac_secret`` is the RFC 7217 key, bytes or hex,
        drawn from ``random`` when not given: then the addresses change
        with every start). ``dhcp6``: None runs the DHCPv6 client
        when a Router Advertisement sets the M flag, True at once, False
        never. Connecting does not wait for any of these addresses, except
        with ``ipv4=False`` (IPv6 only: no IPv4 address, no DHCP; needs
        ``ipv6``): then it waits for a static ``ipv6_address`` to pass
        duplicate address detection (about a second), so that the stack
        has an address to announce. ``wait_for_ipv6`` True waits so in
        dual-stack too (the simulator's hosts do: a connection opened at
        once then leaves from the static address, not the link-local one).
        """
        check_ipv6(ipv6, ipv6_address, ipv6_gateway)
        if isinstance(slaac_secret, str):
            slaac_secret = secret_from_hex(slaac_secret)
        check_stack_limits(max_connections, memory_limit, congestion_control)
        check_ipv4(address, dhcp, ipv4=ipv4, ipv6=ipv6)
        check_ipv4_values(address, gateway)
        stack = cls(
            network,
            time=time,
            clock=clock,
            random=random,
            address=address,
            gateway=gateway,
            max_connections=max_connections or None,
            memory_limit=memory_limit or None,
            congestion_control=congestion_control,
            ipv6=ipv6,
            ipv6_address=ipv6_address,
            ipv6_gateway=ipv6_gateway,
            slaac=slaac,
            slaac_secret=slaac_secret,
            dhcp6=dhcp6,
        )
        if dns_servers:
            stack.resolver.servers = list(dns_servers)
        wait_ipv6 = ipv6_address is not None and (
            not ipv4 if wait_for_ipv6 is None else wait_for_ipv6
        )
        dhcp_wait = dhcp_timeout if dhcp else None
        await stack._start(dhcp6, wait_ipv6, dhcp_wait, keep_dns_servers=bool(dns_servers))
        return stack

    async def _start(
        self,
        dhcp6: bool | None,
        wait_ipv6: bool,
        dhcp_timeout: float | None,
        *,
        keep_dns_servers: bool,
    ) -> None:
        """Start receiving, ARP, IPv6 and DHCP (when ``dhcp_timeout`` is
        given); on any failure, disconnect and raise."""
        loop = asyncio.get_running_loop()
        self._listen_task = loop.create_task(self.network.listen(self.ethernet.frame_handler))
        if self._limits_set:
            self._watch_task = loop.create_task(self._watch_limits())
        STATUS_REPORTERS.append(self._status_reporter)
        await asyncio.sleep(0)  # let the interface start listening first
        try:
            await self.arp.start()
            if self.ipv6 is not None:
                await self._start_ipv6(self.ipv6, dhcp6, wait=wait_ipv6)
            if dhcp_timeout is not None:
                await self._lease_ipv4(dhcp_timeout, keep_dns_servers=keep_dns_servers)
        except BaseException:
            await self.disconnect()
            raise

    async def _start_ipv6(self, ipv6: Ipv6Layer, dhcp6: bool | None, *, wait: bool) -> None:
        """Start IPv6 and report the link-local address; with ``wait``, return
        once the static address has passed duplicate address detection."""
        ipv6.start()
        report = f"IPv6: link-local address {ipv6.link_local}"
        log.info("%s", report)
        print(f"looming: {report}", file=sys.stderr, flush=True)
        if dhcp6:
            await self.start_dhcp6()
        if wait:
            await ipv6.wait_for_address(_STATIC_DAD_WAIT_S)

    async def _lease_ipv4(self, timeout: float, *, keep_dns_servers: bool) -> None:
        """Wait up to ``timeout`` s for a DHCP lease and report it."""
        from looming.net.dhcp import DhcpClient, DhcpShell, report_lease

        self.dhcp = DhcpShell(
            DhcpClient(self.network.mac, self.random), self._udp, self.ipv4, self.time
        )
        await self.dhcp.start()
        link = getattr(self.network, "name", None) or "the link"
        self.lease = lease = await self.dhcp.wait_bound(timeout, link=link)
        report_lease(lease)  # later ones the DHCP shell reports itself
        if not keep_dns_servers:
            self.resolver.servers = list(lease.dns_servers)
        self.dhcp.lease_listeners.append(
            lambda later: self._take_lease(later, keep_dns_servers=keep_dns_servers)
        )

    def _take_lease(self, lease: DhcpLease | None, *, keep_dns_servers: bool) -> None:
        """A lease after the first (None: the lease was lost)."""
        self.lease = lease
        if lease is not None and not keep_dns_servers:
            self.resolver.servers = list(lease.dns_servers)

    @property
    def resolver(self) -> DnsResolver:
        """The DNS stub resolver, made on first use."""
        if self._resolver is None:
            from looming.net.dns import DnsResolver

            learned = self.ipv6.dns_servers if self.ipv6 is not None else None
            self._resolver = DnsResolver(self._udp, self.time, self.random, [], learned=learned)
        return self._resolver

    @property
    def tcp(self) -> TcpLayer:
        return self._tcp

    @property
    def udp(self) -> UdpLayer:
        return self._udp

    def addresses(self) -> list[IPv4Interface | IPv6Interface]:
        """The IPv4 address, then the IPv6 ones beyond link-local (static,
        SLAAC, DHCPv6) that passed duplicate address detection."""
        found: list[IPv4Interface | IPv6Interface] = [*self.ipv4.interfaces()]
        if self.ipv6 is not None:
            found.extend(self.ipv6.interfaces())
        return found

    async def ping(
        self, destination: IPv4Address | IPv6Address | str, *, size: int = 56, timeout: float = 1.0
    ) -> float:
        """One ICMP (or ICMPv6, for an IPv6 address) echo round trip in seconds."""
        address = ip_address(destination)
        if isinstance(address, IPv6Address):
            if self.ipv6 is None:
                raise NoRoute(f"cannot ping {address}: the stack was made without IPv6")
            return await self.ipv6.ping(address, size=size, timeout=timeout)
        return await self.icmp.ping(address, size=size, timeout=timeout)

    async def resolve(self, name: str) -> list[IPv4Address | IPv6Address]:
        """The addresses of ``name`` this stack can reach, from the
        configured DNS servers and those Router Advertisements name: AAAA
        records only with IPv6, A records only with IPv4 (an address or
        DHCP), IPv6 first when the stack holds an IPv6 address beyond
        link-local, else IPv4 first. ``tcp.connect`` takes a name and
        tries these in order."""
        return await self.resolver.resolve_any(name, families=self._families())

    def _families(self) -> tuple[int, ...]:
        four = bool(self.ipv4.interfaces()) or self.dhcp is not None
        if self.ipv6 is None:
            return (4,)
        if not four:
            return (6,)
        return (6, 4) if self.ipv6.interfaces() else (4, 6)

    def counters(self) -> dict[str, int]:
        """Every layer's counters, keyed ``layer.reason`` (drops included)."""
        layers: dict[str, Counter[str]] = {
            "ethernet": self.ethernet.counters,
            "arp": self.arp.counters,
            "ipv4": self.ipv4.counters,
            "reassembly": self.ipv4.reassembler.counters,
            "icmp": self.icmp.counters,
            "udp": self._udp.counters,
        }
        layers["tcp"] = Counter(self._tcp.counters)
        if self.ipv6 is not None:
            layers["ipv6"] = self.ipv6.counters
            layers["neighbours"] = self.ipv6.neighbours.counters
            layers["reassembly6"] = self.ipv6.reassembler.counters
            layers["slaac"] = self.ipv6.autoconf.counters
        if self.dhcp6 is not None:
            layers["dhcp6"] = self.dhcp6.client.counters + self.dhcp6.counters
        if self.dhcp is not None:
            layers["dhcp"] = self.dhcp.client.counters + self.dhcp.counters
        layers["dns"] = self._resolver.counters if self._resolver is not None else Counter()
        return {
            f"{layer}.{reason}": count
            for layer, counters in layers.items()
            for reason, count in sorted(counters.items())
        }

    async def _watch_limits(self) -> None:
        """Once a second, warn of limits that turned traffic away."""
        while True:
            await self.time.sleep(_LIMIT_CHECK_S)
            self.warn_of_limits()

    def warn_of_limits(self) -> None:
        now_s = self.time.now_ns() / 1e9
        for warning in self.limit_warnings.check(self.counters(), now_s):
            log.warning("%s", warning)

    def report_status(self) -> None:
        """Log every nonzero counter, on one line."""
        log.info("stack counters: %s", nonzero(self.counters()))

    async def disconnect(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
            self.warn_of_limits()
        if self._status_reporter in STATUS_REPORTERS:
            STATUS_REPORTERS.remove(self._status_reporter)
            log.info("stack counters at shutdown: %s", nonzero(self.counters()))
        await self._tcp.close()
        if self.dhcp is not None:
            await self.dhcp.stop()
        if self.dhcp6 is not None:
            await self.dhcp6.stop()
        await self._udp.stop()
        await self.icmp.stop()
        await self.ipv4.stop()
        if self.ipv6 is not None:
            await self.ipv6.stop()
        await self.arp.stop()
        await self.network.disconnect()
        if self._listen_task is not None:
            try:
                await self._listen_task
            except (asyncio.CancelledError, Exception):
                pass
            self._listen_task = None


def _weak_reporter(stack: weakref.ref[DirectStack]) -> Callable[[], None]:
    def report() -> None:
        alive = stack()
        if alive is not None:
            alive.report_status()

    return report


# How often the limit counters are looked at (a warning comes this late at most).
_LIMIT_CHECK_S = 1.0

# How long an IPv6-only stack waits for its static address: one DAD probe
# (RetransTimer, one second) with room for a slow start.
_STATIC_DAD_WAIT_S = 5.0
