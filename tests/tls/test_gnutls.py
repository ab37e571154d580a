"""Interoperability with GnuTLS: looming client against `gnutls-serv --echo`,
looming server against `gnutls-cli`, over loopback TCP."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from looming.tls import TLS12, TLS13, CipherSuite, ClientSessionCache, NamedGroup, TlsConfig
from looming.tls.flow import TlsFlow, open_connection
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .peers import EchoServer, free_port, run, server_process
from .pki import Pki

GNUTLS_GROUP = {
    NamedGroup.X25519: "X25519",
    NamedGroup.SECP256R1: "SECP256R1",
    NamedGroup.SECP384R1: "SECP384R1",
}
GNUTLS_CIPHER = {
    CipherSuite.TLS_AES_128_GCM_SHA256: "AES-128-GCM",
    CipherSuite.TLS_AES_256_GCM_SHA384: "AES-256-GCM",
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: "CHACHA20-POLY1305",
    CipherSuite.ECDHE_RSA_WITH_AES_128_GCM_SHA256: "AES-128-GCM",
    CipherSuite.ECDHE_RSA_WITH_AES_256_GCM_SHA384: "AES-256-GCM",
    CipherSuite.ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: "CHACHA20-POLY1305",
    CipherSuite.ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: "AES-128-GCM",
    CipherSuite.ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: "AES-256-GCM",
    CipherSuite.ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: "CHACHA20-POLY1305",
}
SUITES13 = [
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
]
SUITES12 = {
    CipherSuite.ECDHE_RSA_WITH_AES_128_GCM_SHA256: "rsa",
    CipherSuite.ECDHE_RSA_WITH_AES_256_GCM_SHA384: "rsa",
    CipherSuite.ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: "rsa",
    CipherSuite.ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: "p256",
    CipherSuite.ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: "p256",
    CipherSuite.ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: "p256",
}
GROUPS = list(GNUTLS_GROUP)
LEAVES = ["rsa", "p256", "p384", "ed25519"]


def priority(
    version: int | None = None,
    group: NamedGroup | None = None,
    suite: CipherSuite | None = None,
    extra_groups: str = "",
) -> str:
    parts = ["NORMAL"]
    if version is not None:
        parts += ["-VERS-ALL", "+VERS-TLS1.3" if version == TLS13 else "+VERS-TLS1.2"]
    if group is not None:
        parts += ["-GROUP-ALL", f"+GROUP-{GNUTLS_GROUP[group]}"] + (
            [f"+GROUP-{extra_groups}"] if extra_groups else []
        )
    if suite is not None:
        parts += ["-CIPHER-ALL", f"+{GNUTLS_CIPHER[suite]}"]
    return ":".join(parts)


def gnutls_serv_args(pki: Pki, leaf: str, port: int, *extra: str) -> list[str]:
    cert = pki.leaves[leaf]
    return [
        "gnutls-serv",
        "--echo",
        "-p",
        str(port),
        "--x509certfile",
        str(cert.cert_path),
        "--x509keyfile",
        str(cert.key_path),
        *extra,
    ]


async def echo(flow: TlsFlow, line: bytes = b"hello gnutls\n") -> bytes:
    await flow.write(line)
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = await flow.read()
        assert chunk, "server closed before replying"
        reply += chunk
    return reply


async def client_against_gnutls_serv(
    pki: Pki, leaf: str, extra: list[str], config: TlsConfig, server_name: str = "localhost"
) -> tuple[TlsFlow, bytes]:
    port = free_port()
    async with server_process(gnutls_serv_args(pki, leaf, port, *extra), port, "IPv4"):
        flow = await open_connection("127.0.0.1", port, config, server_name=server_name)
        reply = await echo(flow)
        await flow.close()
    return flow, reply


# --- looming client, GnuTLS server ----------------------------------------------------


@pytest.mark.parametrize("leaf", LEAVES)
@pytest.mark.parametrize("suite", SUITES13, ids=lambda s: s.name)
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_client_tls13_against_gnutls_serv(
    pki: Pki, leaf: str, suite: CipherSuite, group: NamedGroup
) -> None:
    config = TlsConfig(
        trust=pki.trust,
        cipher_suites=[suite],
        groups=[group],
        key_share_groups=[group],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    flow, reply = asyncio.run(
        client_against_gnutls_serv(pki, leaf, ["--priority", priority(TLS13, group, suite)], config)
    )
    assert reply == b"hello gnutls\n"
    assert (flow.version, flow.cipher_suite) == (TLS13, suite)


@pytest.mark.parametrize("suite", list(SUITES12), ids=lambda s: s.name)
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_client_tls12_against_gnutls_serv(pki: Pki, suite: CipherSuite, group: NamedGroup) -> None:
    leaf = SUITES12[suite]
    groups = (
        [group] if leaf == "rsa" or group == NamedGroup.SECP256R1 else [group, NamedGroup.SECP256R1]
    )
    config = TlsConfig(
        trust=pki.trust,
        cipher_suites=[suite],
        groups=groups,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    flow, reply = asyncio.run(
        client_against_gnutls_serv(pki, leaf, ["--priority", priority(TLS12, group, suite)], config)
    )
    assert reply == b"hello gnutls\n"
    assert (flow.version, flow.cipher_suite) == (TLS12, suite)


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


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_client_resumption_with_gnutls(pki: Pki, version: int) -> None:
    async def main() -> tuple[TlsFlow, TlsFlow]:
        port = free_port()
        config = TlsConfig(
            trust=pki.trust,
            versions=[version],
            session_cache=ClientSessionCache(),
            random=UnixRandom(),
            clock=UnixClock(),
        )
        async with server_process(gnutls_serv_args(pki, "p256", port), port, "IPv4"):
            first = await open_connection("127.0.0.1", port, config, server_name="localhost")
            await echo(first)
            await first.close()
            second = await open_connection("127.0.0.1", port, config, server_name="localhost")
            await echo(second)
            await second.close()
        return first, second

    first, second = asyncio.run(main())
    assert not first.resumed and second.resumed and second.version == version


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
        rc, out, err = await run(["gnutls-cli", "-p", str(server.port), "127.0.0.1", *args], stdin)
    return rc, out + err, server


def _cli_base(pki: Pki) -> list[str]:
    return [
        "--x509cafile",
        str(pki.ca_path),
        "--sni-hostname",
        "localhost",
        "--verify-hostname",
        "localhost",
    ]


@pytest.mark.parametrize("leaf", LEAVES)
@pytest.mark.parametrize("suite", SUITES13, ids=lambda s: s.name)
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_server_tls13_against_gnutls_cli(
    pki: Pki, leaf: str, suite: CipherSuite, group: NamedGroup
) -> None:
    config = TlsConfig(
        certificates=[pki.leaves[leaf].certified], random=UnixRandom(), clock=UnixClock()
    )
    rc, out, server = asyncio.run(
        gnutls_cli_against_looming(
            config, [*_cli_base(pki), "--priority", priority(TLS13, group, suite)]
        )
    )
    assert rc == 0, out
    assert "echo:hello" in out and "The certificate is trusted" in out
    assert (
        "(TLS1.3" in out
        and f"(ECDHE-{GNUTLS_GROUP[group]})" in out
        and f"({GNUTLS_CIPHER[suite]})" in out
    )
    assert not server.errors


@pytest.mark.parametrize("suite", list(SUITES12), ids=lambda s: s.name)
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_server_tls12_against_gnutls_cli(pki: Pki, suite: CipherSuite, group: NamedGroup) -> None:
    leaf = SUITES12[suite]
    config = TlsConfig(
        certificates=[pki.leaves[leaf].certified],
        groups=[group],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    extra = "" if leaf == "rsa" or group == NamedGroup.SECP256R1 else "SECP256R1"
    rc, out, _ = asyncio.run(
        gnutls_cli_against_looming(
            config, [*_cli_base(pki), "--priority", priority(TLS12, group, suite, extra)]
        )
    )
    assert rc == 0, out
    assert "echo:hello" in out and "(TLS1.2" in out and f"(ECDHE-{GNUTLS_GROUP[group]})" in out
    assert (
        f"({GNUTLS_CIPHER[suite]})" in out and "extended master secret, safe renegotiation" in out
    )


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


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_server_resumption_with_gnutls_cli(pki: Pki, version: int) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified], random=UnixRandom(), clock=UnixClock()
    )
    rc, out, server = asyncio.run(
        gnutls_cli_against_looming(
            config, [*_cli_base(pki), "--priority", priority(version), "--resume"]
        )
    )
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
        gnutls_cli_against_looming(config, [*_cli_base(pki), "--resume", "--earlydata", str(early)])
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
            args = [
                "gnutls-cli",
                "-p",
                str(server.port),
                "127.0.0.1",
                *_cli_base(pki),
                "--inline-commands",
            ]
            rc, out, err = await run(args, b"one\n^rekey1^\ntwo\n^rekey1^\nthree\n")
        return rc, out + err, server

    rc, out, server = asyncio.run(main())
    assert rc == 0, out
    assert out.count("Rekey was completed") == 2
    assert "echo:one" in out and "echo:two" in out and "echo:three" in out
    # Each update_requested from GnuTLS was answered with our own KeyUpdate.
    assert server.flows[0].key_updates_received == 2
