"""Interoperability with GnuTLS beyond the handshake matrix of
``test_interop.py``: looming client against `gnutls-serv --echo`, looming
server against `gnutls-cli`, over loopback TCP (peers from ``interop.py``)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from looming.tls import TLS12, TLS13, ClientSessionCache, NamedGroup, TlsConfig
from looming.tls.flow import TlsFlow, open_connection
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .interop import GNUTLS_RESUME, Spec, gnutls_cli, gnutls_serv_args, priority, read_reply
from .interop import GnuTls as _GnuTls
from .interop import gnutls_cli_base as _cli_base
from .peers import EchoServer, LateRelay, free_port, server_process
from .pki import Pki

GNUTLS = _GnuTls()


async def echo(flow: TlsFlow, line: bytes = b"hello gnutls\n") -> bytes:
    await flow.write(line)
    return await read_reply(flow, until_eof=False)


async def client_against_gnutls_serv(
    pki: Pki, leaf: str, extra: list[str], config: TlsConfig, server_name: str = "localhost"
) -> tuple[TlsFlow, bytes]:
    async with GNUTLS.serve(pki, Spec(leaf=leaf, extra=tuple(extra))) as server:
        flow = await open_connection("127.0.0.1", server.port, config, server_name=server_name)
        reply = await echo(flow)
        await flow.close()
    return flow, reply


# --- looming client, GnuTLS server ----------------------------------------------------


def test_client_hello_retry_request_with_gnutls(pki: Pki) -> None:
    config = TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock())
    flow, reply = asyncio.run(
        client_against_gnutls_serv(
            pki, "p256", ["--priority", priority(TLS13, NamedGroup.SECP384R1)], config
        )
    )
    assert reply == b"hello gnutls\n" and flow.connection.hello_retried


def test_client_key_update_with_gnutls(pki: Pki) -> None:
    async def main() -> TlsFlow:
        port = free_port()
        async with server_process(gnutls_serv_args(pki, "p256", port), port, "IPv4"):
            flow = await open_connection(
                "127.0.0.1",
                port,
                TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
                server_name="localhost",
            )
            assert await echo(flow, b"one\n") == b"one\n"
            await flow.key_update(request_peer_update=True)
            assert await echo(flow, b"two\n") == b"two\n"
            await flow.close()
        return flow

    assert asyncio.run(main()).key_updates_received == 1


def test_client_alpn_with_gnutls(pki: Pki) -> None:
    config = TlsConfig(
        trust=pki.trust, alpn_protocols=[b"h2", b"http/1.1"], random=UnixRandom(), clock=UnixClock()
    )
    flow, _ = asyncio.run(client_against_gnutls_serv(pki, "p256", ["--alpn", "http/1.1"], config))
    assert flow.alpn_protocol == b"http/1.1"


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_client_certificate_to_gnutls(pki: Pki, version: int) -> None:
    config = TlsConfig(
        trust=pki.trust,
        versions=[version],
        certificates=[pki.leaves["client-p256"].certified],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    extra = ["--require-client-cert", "--x509cafile", str(pki.ca_path)]
    flow, reply = asyncio.run(client_against_gnutls_serv(pki, "p256", extra, config))
    assert reply == b"hello gnutls\n" and flow.version == version


def test_client_early_data_with_gnutls(pki: Pki) -> None:
    async def main() -> TlsFlow:
        port = free_port()
        config = TlsConfig(
            trust=pki.trust,
            session_cache=ClientSessionCache(),
            enable_early_data=True,
            random=UnixRandom(),
            clock=UnixClock(),
        )
        async with server_process(
            gnutls_serv_args(pki, "p256", port, "--earlydata", "--maxearlydata", "4096"),
            port,
            "IPv4",
        ):
            first = await open_connection("127.0.0.1", port, config, server_name="localhost")
            await echo(first)
            await first.close()
            second = await open_connection(
                "127.0.0.1", port, config, server_name="localhost", early_data=b"early\n"
            )
            # gnutls-serv may or may not echo the early data it took; ordinary data
            # sent afterwards is echoed either way.
            await second.write(b"after\n")
            reply = b""
            while not reply.endswith(b"after\n"):
                chunk = await second.read()
                assert chunk, "server closed before replying"
                reply += chunk
            assert reply in (b"after\n", b"early\nafter\n")
            await second.close()
        return second

    second = asyncio.run(main())
    assert second.resumed and second.connection.early_data_accepted


# --- GnuTLS client, looming server ---------------------------------------------------


async def gnutls_cli_against_looming(
    config: TlsConfig, args: list[str], stdin: bytes = b"hello\n"
) -> tuple[int, str, EchoServer]:
    async with EchoServer(config) as server:
        rc, out = await gnutls_cli(server.port, args, stdin)
    return rc, out, server


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_server_exporter_matches_gnutls_cli(pki: Pki, version: int) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
    )
    args = [
        *_cli_base(pki),
        "--priority",
        priority(version),
        "--keymatexport",
        "EXPORTER-looming",
        "--keymatexportsize",
        "20",
    ]
    rc, out, server = asyncio.run(gnutls_cli_against_looming(config, args))
    match = re.search(r"Key material: ([0-9a-f]+)", out)
    assert rc == 0 and match, out
    assert server.flows[0].export_keying_material(
        "EXPORTER-looming", None, 20
    ).hex() == match.group(1)


def test_server_resumption_with_gnutls_cli_when_the_ticket_is_late(pki: Pki) -> None:
    """The TLS 1.3 ticket 0.3 s after the handshake (a loaded machine's delay,
    which once failed gnutls-cli's resumption in test_interop.py) still resumes."""
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
    )

    async def main() -> tuple[int, str, EchoServer]:
        async with EchoServer(config) as server, LateRelay(server.port, 0.3) as relay:
            args = [*_cli_base(pki), "--priority", priority(TLS13), *GNUTLS_RESUME]
            rc, out = await gnutls_cli(relay.port, args)
        return rc, out, server

    rc, out, server = asyncio.run(main())
    assert rc == 0, out
    assert "This is a resumed session" in out
    assert [f.resumed for f in server.flows] == [False, True]


def test_server_hrr_sni_alpn_with_gnutls_cli(pki: Pki) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified, pki.leaves["other-name"].certified],
        groups=[NamedGroup.SECP384R1],
        alpn_protocols=[b"http/1.1"],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    args = [
        "--x509cafile",
        str(pki.ca_path),
        "--sni-hostname",
        "other.example",
        "--verify-hostname",
        "other.example",
        "--alpn",
        "http/1.1",
    ]
    # GnuTLS sends shares for its first two groups; we want the third: HelloRetryRequest.
    args += ["--priority", "NORMAL:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1"]
    rc, out, server = asyncio.run(gnutls_cli_against_looming(config, args))
    assert rc == 0, out
    assert "Application protocol: http/1.1" in out and "other.example" in out
    assert server.flows[0].connection.hello_retried


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_server_client_certificate_from_gnutls_cli(pki: Pki, version: int) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["rsa"].certified],
        client_trust=pki.trust,
        require_client_certificate=True,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    client = pki.leaves["client-p256"]
    args = [
        *_cli_base(pki),
        "--priority",
        priority(version),
        "--x509certfile",
        str(client.cert_path),
        "--x509keyfile",
        str(client.key_path),
    ]
    rc, out, server = asyncio.run(gnutls_cli_against_looming(config, args))
    assert rc == 0 and "echo:hello" in out, out
    assert server.flows[0].peer_certificates[0] == client.certified.chain[0]


def test_server_early_data_from_gnutls_cli(pki: Pki, tmp_path: Path) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        max_early_data=4096,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    early = tmp_path / "early.txt"
    early.write_bytes(b"gnutls early\n")
    rc, out, server = asyncio.run(
        gnutls_cli_against_looming(
            config, [*_cli_base(pki), *GNUTLS_RESUME, "--earlydata", str(early)]
        )
    )
    assert rc == 0, out
    assert server.flows[1].resumed and server.flows[1].early_data == [b"gnutls early\n"]


def test_server_answers_key_update_from_gnutls_cli(pki: Pki) -> None:
    async def main() -> tuple[int, str, EchoServer]:
        async with EchoServer(
            TlsConfig(
                certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
            ),
            until_eof=True,
        ) as server:
            args = [*_cli_base(pki), "--inline-commands"]
            rc, out = await gnutls_cli(server.port, args, b"one\n^rekey1^\ntwo\n^rekey1^\nthree\n")
        return rc, out, server

    rc, out, server = asyncio.run(main())
    assert rc == 0, out
    assert out.count("Rekey was completed") == 2
    assert "echo:one" in out and "echo:two" in out and "echo:three" in out
    # Each update_requested from GnuTLS was answered with our own KeyUpdate.
    assert server.flows[0].key_updates_received == 2
