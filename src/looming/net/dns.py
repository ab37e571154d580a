"""A DNS stub resolver over UDP (RFC 1035): A and AAAA records (RFC 3596),
CNAME chains followed within one answer, retries across servers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address

from looming.devices.random import Random
from looming.devices.stack import Datagram
from looming.devices.time import Time
from looming.errors import Malformed, NetworkError
from looming.net._timeouts import wait_until_done
from looming.net.udp import UdpLayer
from looming.net.wire import dns as wire
from looming.net.wire.dns import (
    CLASS_IN,
    FLAG_RECURSION_DESIRED,
    DnsMessage,
    DnsQuestion,
    DnsRcode,
    DnsType,
)

DNS_PORT = 53
_MAX_CNAME_HOPS = 8


class NameNotFound(NetworkError):
    """The name does not exist or has no address of the family asked for."""


class NoSuchName(NameNotFound):
    """The name does not exist at all (NXDOMAIN)."""


class ResolverTimeout(NetworkError):
    """No DNS server answered."""


def _target_name(data: bytes) -> str:
    """The name a CNAME record points to (uncompressed by the parser)."""
    labels = []
    index = 0
    while index < len(data) and data[index]:
        length = data[index]
        labels.append(data[index + 1 : index + 1 + length].decode("ascii", "replace"))
        index += 1 + length
    return ".".join(labels).lower()


def _records_for(answer: DnsMessage, name: str, rtype: int) -> list[bytes]:
    """The data of ``rtype`` records for ``name``, following CNAMEs (at most
    a few hops: a loop of aliases ends empty)."""
    name = name.rstrip(".").lower()
    size = 16 if rtype == DnsType.AAAA else 4
    for _ in range(_MAX_CNAME_HOPS):
        found = [
            r.data
            for r in answer.answers
            if r.name == name and r.type == rtype and r.klass == CLASS_IN and len(r.data) == size
        ]
        if found:
            return found
        alias = next(
            (r for r in answer.answers if r.name == name and r.type == DnsType.CNAME), None
        )
        if alias is None:
            return []
        name = _target_name(alias.data)
    return []


def addresses_in(answer: DnsMessage, name: str) -> list[IPv4Address]:
    """The A records for ``name`` in ``answer``, following CNAMEs."""
    return [IPv4Address(data) for data in _records_for(answer, name, DnsType.A)]


def ipv6_addresses_in(answer: DnsMessage, name: str) -> list[IPv6Address]:
    """The AAAA records for ``name`` in ``answer``, following CNAMEs; a
    record whose data is not 16 bytes is ignored."""
    return [IPv6Address(data) for data in _records_for(answer, name, DnsType.AAAA)]


class DnsResolver:
    def __init__(
        self,
        udp: UdpLayer,
        time: Time,
        random: Random,
        servers: Sequence[IPv4Address | IPv6Address],
        *,
        timeout_s: float = 2.0,
        attempts: int = 3,
        learned: Callable[[], Sequence[IPv4Address | IPv6Address]] | None = None,
    ) -> None:
        """``servers`` are asked first (static or from DHCP), then those
        ``learned`` returns at each lookup (RDNSS options of Router
        Advertisements, RFC 8106, while their lifetimes last)."""
        self._udp = udp
        self._time = time
        self._random = random
        self._learned = learned
        self.servers: list[IPv4Address | IPv6Address] = list(servers)
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.counters: Counter[str] = Counter()

    async def resolve(self, name: str) -> list[IPv4Address]:
        """The IPv4 addresses of ``name`` (a dotted-quad is returned as is)."""
        try:
            return [IPv4Address(name)]
        except ValueError:
            pass
        answer, question = await self._lookup(name, DnsType.A)
        found = addresses_in(answer, question.name)
        if not found:
            raise NameNotFound(f"{name!r} has no IPv4 address (no A record)")
        return found

    async def resolve6(self, name: str) -> list[IPv6Address]:
        """The IPv6 addresses of ``name`` (AAAA records; an IPv6 literal, with
        or without brackets, is returned as is)."""
        try:
            return [IPv6Address(name.removeprefix("[").removesuffix("]"))]
        except ValueError:
            pass
        answer, question = await self._lookup(name, DnsType.AAAA)
        found = ipv6_addresses_in(answer, question.name)
        if not found:
            raise NameNotFound(f"{name!r} has no IPv6 address (no AAAA record)")
        return found

    async def resolve_any(
        self, name: str, *, families: Sequence[int] = (6, 4)
    ) -> list[IPv4Address | IPv6Address]:
        """Every address of ``name`` in the ``families`` asked for, in that
        order: by default IPv6 ones first, then IPv4 (RFC 6724's default
        order), the way a dual-stack client tries them. Raises
        :class:`NameNotFound` only when the name has none of them."""
        try:
            return [ip_address(name.removeprefix("[").removesuffix("]"))]
        except ValueError:
            pass
        found: list[IPv4Address | IPv6Address] = []
        for family in families:
            lookup = self.resolve6 if family == 6 else self.resolve
            try:
                found.extend(await lookup(name))
            except NoSuchName:
                raise
            except NameNotFound:
                pass  # no record of this family; the other may have one
        if not found:
            records = " or ".join("AAAA" if family == 6 else "A" for family in families)
            raise NameNotFound(f"{name!r} has no address (no {records} record)")
        return found

    def current_servers(self) -> list[IPv4Address | IPv6Address]:
        """The servers a lookup asks now, in order: configured, then learned."""
        found = list(self.servers)
        if self._learned is not None:
            found.extend(server for server in self._learned() if server not in found)
        return found

    async def _lookup(self, name: str, rtype: DnsType) -> tuple[DnsMessage, DnsQuestion]:
        """The first usable answer for ``name``'s ``rtype`` records."""
        servers = self.current_servers()
        if not servers:
            raise NameNotFound(f"cannot resolve {name!r}: no DNS server is configured")
        question = DnsQuestion(name=name.rstrip(".").lower(), type=rtype)
        for attempt in range(self.attempts):
            server = servers[attempt % len(servers)]
            answer = await self._ask(server, question)
            if answer is None:
                continue
            if answer.rcode == DnsRcode.NXDOMAIN:
                raise NoSuchName(f"{name!r} does not exist (NXDOMAIN from {server})")
            if answer.rcode != DnsRcode.NOERROR:
                self.counters["server_error"] += 1
                continue
            return answer, question
        raise ResolverTimeout(f"no DNS server answered for {name!r}")

    async def _ask(
        self, server: IPv4Address | IPv6Address, question: DnsQuestion
    ) -> DnsMessage | None:
        query_id = self._random.randint(0, 0xFFFF)
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[DnsMessage] = loop.create_future()

        def on_datagram(datagram: Datagram) -> None:
            if datagram.source != str(server) or datagram.source_port != DNS_PORT:
                self.counters["stray"] += 1
                return
            try:
                message = wire.parse(datagram.data)
            except Malformed:
                self.counters["malformed"] += 1
                return
            # Match id and question: RFC 5452's defence against spoofed answers.
            if message.id != query_id or not message.is_response:
                self.counters["mismatched"] += 1
                return
            asked = message.questions[0] if message.questions else None
            if asked is not None and (asked.name, asked.type) != (question.name, question.type):
                self.counters["mismatched"] += 1
                return
            if not reply.done():
                reply.set_result(message)

        binding = await self._udp.bind(0, on_datagram)
        try:
            query = DnsMessage(id=query_id, flags=FLAG_RECURSION_DESIRED, questions=(question,))
            self.counters["tx_query"] += 1
            await binding.send(server, DNS_PORT, wire.emit(query))
            if await wait_until_done(reply, self._time, self.timeout_s):
                return reply.result()
            self.counters["timeout"] += 1
            return None
        finally:
            await binding.close()
