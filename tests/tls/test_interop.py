"""The handshake matrix against every peer of ``interop.py``, both directions.

A looming client against each peer's server, and each peer's client against
a looming server, for every TLS 1.3 suite, group and certificate and every
TLS 1.2 suite and group the peer has, and a looming client resuming its
session with each and each client resuming with looming, over loopback TCP. What each peer
reports it negotiated is checked by the peer (``check_server``,
``check_client``); what looming negotiated is checked here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from looming.tls import TLS12, TLS13, CipherSuite, ClientSessionCache, NamedGroup, TlsConfig
from looming.tls.flow import TlsFlow, open_connection
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .interop import LEAVES, LINE, PEERS, SUITES12, Peer, PeerServer, Spec, read_reply, tls12_groups
from .peers import EchoServer
from .pki import Pki


def _group_id(group: NamedGroup | None) -> str:
    return "default" if group is None else group.name


def matrix13() -> Iterator[Any]:
    for peer in PEERS:
        for leaf in LEAVES:
            for suite in peer.suites13:
                for group in peer.groups:
                    yield pytest.param(
                        peer,
                        leaf,
                        suite,
                        group,
                        id=f"{peer.name}-{leaf}-{suite.name}-{_group_id(group)}",
                    )


def matrix12() -> Iterator[Any]:
    for peer in PEERS:
        for suite in peer.suites12:
            for group in peer.groups:
                yield pytest.param(
                    peer, suite, group, id=f"{peer.name}-{suite.name}-{_group_id(group)}"
                )


async def against_peer_server(
    peer: Peer, pki: Pki, spec: Spec, config: TlsConfig
) -> tuple[TlsFlow, bytes, PeerServer]:
    """Connect to ``peer`` serving ``spec``, send a line and read the answer."""
    async with peer.serve(pki, spec) as server:
        flow = await open_connection("127.0.0.1", server.port, config, server_name="localhost")
        await flow.write(LINE)
        reply = await read_reply(flow, server.closes_after_reply)
        await flow.close()
        await server.close()
    return flow, reply, server


async def peer_client(
    peer: Peer, pki: Pki, spec: Spec, config: TlsConfig
) -> tuple[Any, EchoServer]:
    async with EchoServer(config) as server:
        run = await peer.connect(pki, server.port, spec)
    return run, server


def _limits(
    config: TlsConfig, group: NamedGroup | None, groups: list[NamedGroup] | None = None
) -> TlsConfig:
    """``config`` with only ``groups`` (default ``[group]``); unchanged for no group."""
    return config if group is None else replace(config, groups=groups or [group])


# --- looming client, peer server ------------------------------------------------------------


@pytest.mark.parametrize(("peer", "leaf", "suite", "group"), list(matrix13()))
def test_looming_client_tls13(
    pki: Pki, peer: Peer, leaf: str, suite: CipherSuite, group: NamedGroup | None
) -> None:
    config = TlsConfig(
        trust=pki.trust, cipher_suites=[suite], random=UnixRandom(), clock=UnixClock()
    )
    if group is not None:
        config = replace(_limits(config, group), key_share_groups=[group])
    spec = Spec(TLS13, suite, group, leaf)
    flow, reply, server = asyncio.run(against_peer_server(peer, pki, spec, config))
    assert reply == server.reply(LINE)
    assert (flow.version, flow.cipher_suite) == (TLS13, suite)
    assert not flow.connection.hello_retried
    peer.check_server(server, spec)


@pytest.mark.parametrize(("peer", "suite", "group"), list(matrix12()))
def test_looming_client_tls12(
    pki: Pki, peer: Peer, suite: CipherSuite, group: NamedGroup | None
) -> None:
    leaf = SUITES12[suite][0]
    groups = None if group is None else tls12_groups(leaf, group)
    config = _limits(
        TlsConfig(trust=pki.trust, cipher_suites=[suite], random=UnixRandom(), clock=UnixClock()),
        group,
        groups,
    )
    spec = Spec(TLS12, suite, group, leaf)
    flow, reply, server = asyncio.run(against_peer_server(peer, pki, spec, config))
    assert reply == server.reply(LINE)
    assert (flow.version, flow.cipher_suite) == (TLS12, suite)
    peer.check_server(server, spec)


# --- peer client, looming server ------------------------------------------------------------


@pytest.mark.parametrize(("peer", "leaf", "suite", "group"), list(matrix13()))
def test_peer_client_tls13(
    pki: Pki, peer: Peer, leaf: str, suite: CipherSuite, group: NamedGroup | None
) -> None:
    config = TlsConfig(
        certificates=[pki.leaves[leaf].certified],
        cipher_suites=[suite],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    config = _limits(config, group)
    spec = Spec(TLS13, suite, group, leaf)
    run, server = asyncio.run(peer_client(peer, pki, spec, config))
    peer.check_client(run, spec)
    assert not server.errors
    assert (server.flows[0].version, server.flows[0].cipher_suite) == (TLS13, suite)


@pytest.mark.parametrize(("peer", "suite", "group"), list(matrix12()))
def test_peer_client_tls12(
    pki: Pki, peer: Peer, suite: CipherSuite, group: NamedGroup | None
) -> None:
    leaf = SUITES12[suite][0]
    config = TlsConfig(
        certificates=[pki.leaves[leaf].certified], random=UnixRandom(), clock=UnixClock()
    )
    config = _limits(config, group)
    spec = Spec(TLS12, suite, group, leaf)
    run, server = asyncio.run(peer_client(peer, pki, spec, config))
    peer.check_client(run, spec)
    assert not server.errors
    assert (server.flows[0].version, server.flows[0].cipher_suite) == (TLS12, suite)


# --- resumption -------------------------------------------------------------------------------


RESUMPTION = [
    pytest.param(peer, version, id=f"{peer.name}-{'tls13' if version == TLS13 else 'tls12'}")
    for peer in PEERS
    for version in peer.resumption_versions
]


async def two_looming_clients(
    peer: Peer, pki: Pki, spec: Spec, config: TlsConfig
) -> tuple[list[TlsFlow], PeerServer]:
    """Two connections to one peer server; the second offers the first's session."""
    flows = []
    async with peer.serve(pki, spec) as server:
        for _ in range(2):
            flow = await open_connection("127.0.0.1", server.port, config, server_name="localhost")
            await flow.write(LINE)
            assert await read_reply(flow, server.closes_after_reply) == server.reply(LINE)
            await flow.close()
            flows.append(flow)
        await server.close()
    return flows, server


@pytest.mark.parametrize(("peer", "version"), RESUMPTION)
def test_looming_client_resumes(pki: Pki, peer: Peer, version: int) -> None:
    config = TlsConfig(
        trust=pki.trust,
        versions=[version],
        session_cache=ClientSessionCache(),
        random=UnixRandom(),
        clock=UnixClock(),
    )
    spec = Spec(version, connections=2)
    (first, second), server = asyncio.run(two_looming_clients(peer, pki, spec, config))
    assert not first.resumed and first.sessions
    assert second.resumed and second.version == version
    assert second.peer_certificates == first.peer_certificates
    peer.check_resumed_server(server)


CLIENT_RESUMPTION = [
    pytest.param(peer, version, id=f"{peer.name}-{'tls13' if version == TLS13 else 'tls12'}")
    for peer in PEERS
    for version in (TLS13, TLS12)
]


@pytest.mark.parametrize(("peer", "version"), CLIENT_RESUMPTION)
def test_peer_client_resumes(pki: Pki, peer: Peer, version: int) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
    )

    async def main() -> tuple[list[Any], EchoServer]:
        async with EchoServer(config) as server:
            runs = await peer.connect_twice(pki, server.port, version)
        return runs, server

    runs, server = asyncio.run(main())
    peer.check_resumed_client(runs)
    assert [f.resumed for f in server.flows] == [False, True]
    assert {f.version for f in server.flows} == {version}
    assert not server.errors
