"""A DNS stub resolver over UDP (RFC 1035): A records, CNAME chains followed
within one answer, retries across servers."""

from __future__ import annotations

import asyncio
from collections import Counter
from ipaddress import IPv4Address

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
    """The name does not exist or has no IPv4 address."""


class ResolverTimeout(NetworkError):
    """No DNS server answered."""


def addresses_in(answer: DnsMessage, name: str) -> list[IPv4Address]:
    """The A records for ``name`` in ``answer``, following CNAMEs."""
    name = name.rstrip(".").lower()
    for _ in range(_MAX_CNAME_HOPS):
        found = [
            IPv4Address(r.data)
            for r in answer.answers
            if r.name == name and r.type == DnsType.A and r.klass == CLASS_IN and len(r.data) == 4
        ]
        if found:
            return found
        alias = next(
            (r for r in answer.answers if r.name == name and r.type == DnsType.CNAME), None
        )
        if alias is None:
            return []
        labels = []
        data = alias.data
        index = 0
        while index < len(data) and data[index]:
            length = data[index]
            labels.append(data[index + 1 : index + 1 + length].decode("ascii", "replace"))
            index += 1 + length
        name = ".".join(labels).lower()
    return []


class DnsResolver:
    def __init__(
        self,
        udp: UdpLayer,
        time: Time,
        random: Random,
        servers: list[IPv4Address],
        *,
        timeout_s: float = 2.0,
        attempts: int = 3,
    ) -> None:
        self._udp = udp
        self._time = time
        self._random = random
        self.servers = list(servers)
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.counters: Counter[str] = Counter()

    async def resolve(self, name: str) -> list[IPv4Address]:
        """The IPv4 addresses of ``name`` (a dotted-quad is returned as is)."""
        try:
            return [IPv4Address(name)]
        except ValueError:
            pass
        if not self.servers:
            raise NameNotFound(f"cannot resolve {name!r}: no DNS server is configured")
        question = DnsQuestion(name=name.rstrip(".").lower(), type=DnsType.A)
        for attempt in range(self.attempts):
            server = self.servers[attempt % len(self.servers)]
            answer = await self._ask(server, question)
            if answer is None:
                continue
            if answer.rcode == DnsRcode.NXDOMAIN:
                raise NameNotFound(f"{name!r} does not exist (NXDOMAIN from {server})")
            if answer.rcode != DnsRcode.NOERROR:
                self.counters["server_error"] += 1
                continue
            found = addresses_in(answer, question.name)
            if not found:
                raise NameNotFound(f"{name!r} has no IPv4 address")
            return found
        raise ResolverTimeout(f"no DNS server answered for {name!r}")

    async def _ask(self, server: IPv4Address, question: DnsQuestion) -> DnsMessage | None:
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
            if message.questions and message.questions[0].name != question.name:
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
