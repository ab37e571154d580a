"""Interoperability with OpenSSL beyond the handshake matrix of
``test_interop.py``: looming client against `openssl s_server`, looming
server against `openssl s_client`, over loopback TCP (peers from
``interop.py``)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from looming.tls import (
    TLS12,
    TLS13,
    CertificateError,
    ClientSessionCache,
    NamedGroup,
    Session,
    TlsAlertReceived,
    TlsConfig,
    spki_sha256,
)
from looming.tls.flow import TlsFlow, open_connection
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .interop import OpenSsl as _OpenSsl
from .interop import Spec, read_reply, s_client, s_client_base, s_server_args
from .peers import EchoServer, free_port, server_process
from .pki import Pki

OPENSSL = _OpenSsl()


async def exchange(flow: TlsFlow, line: bytes = b"hello looming\n") -> bytes:
    """Send a line to an `s_server -rev` and read the reversed line back."""
    await flow.write(line)
    return await read_reply(flow, until_eof=False)


async def client_against_s_server(
    pki: Pki, leaf: str, server_extra: list[str], config: TlsConfig, server_name: str = "localhost"
) -> tuple[TlsFlow, bytes, str]:
    async with OPENSSL.serve(pki, Spec(leaf=leaf, extra=tuple(server_extra))) as server:
        flow = await open_connection("127.0.0.1", server.port, config, server_name=server_name)
        reply = await exchange(flow)
        await flow.close()
        await server.close()
    return flow, reply, server.output


# --- looming client, OpenSSL server ---------------------------------------------------


def test_client_hello_retry_request(pki: Pki) -> None:
    config = TlsConfig(
        trust=pki.trust, random=UnixRandom(), clock=UnixClock()
    )  # key share for X25519 only
    flow, reply, _ = asyncio.run(client_against_s_server(pki, "p256", ["-groups", "P-384"], config))
    assert reply == b"gnimool olleh\n"
    assert flow.connection.hello_retried and flow.version == TLS13


def test_client_downgrade_to_tls12_is_accepted_without_sentinel_but_versions_match(
    pki: Pki,
) -> None:
    config = TlsConfig(trust=pki.trust, versions=[TLS12], random=UnixRandom(), clock=UnixClock())
    flow, reply, _ = asyncio.run(client_against_s_server(pki, "rsa", [], config))
    assert flow.version == TLS12 and reply == b"gnimool olleh\n"


def test_client_alpn(pki: Pki) -> None:
    config = TlsConfig(
        trust=pki.trust,
        alpn_protocols=[b"looming/1", b"http/1.1"],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    flow, _, _ = asyncio.run(client_against_s_server(pki, "p256", ["-alpn", "h2,http/1.1"], config))
    assert flow.alpn_protocol == b"http/1.1"


def test_client_sni_selects_second_certificate(pki: Pki) -> None:
    other = pki.leaves["other-name"]
    extra = [
        "-servername",
        "other.example",
        "-cert2",
        str(other.cert_path),
        "-key2",
        str(other.key_path),
    ]
    config = TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock())
    flow, reply, _ = asyncio.run(
        client_against_s_server(pki, "p256", extra, config, server_name="other.example")
    )
    assert reply == b"gnimool olleh\n"
    assert flow.peer_certificates[0] == other.certified.chain[0]


@pytest.mark.parametrize("version", [TLS13, TLS12])
@pytest.mark.parametrize("client_leaf", ["client-p256", "client-rsa"])
def test_client_certificate_to_s_server(pki: Pki, version: int, client_leaf: str) -> None:
    config = TlsConfig(
        trust=pki.trust,
        versions=[version],
        certificates=[pki.leaves[client_leaf].certified],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    _flow, reply, output = asyncio.run(
        client_against_s_server(pki, "p256", ["-Verify", "1", "-CAfile", str(pki.ca_path)], config)
    )
    assert reply == b"gnimool olleh\n"
    assert "client.example" in output and "verify error" not in output


def test_client_key_update_both_ways(pki: Pki) -> None:
    async def main() -> TlsFlow:
        port = free_port()
        config = TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock())
        async with server_process(s_server_args(pki, "p256", port, "-rev"), port, "ACCEPT") as peer:
            flow = await open_connection("127.0.0.1", port, config, server_name="localhost")
            assert await exchange(flow, b"one\n") == b"eno\n"
            await flow.key_update(request_peer_update=True)
            assert await exchange(flow, b"two\n") == b"owt\n"
            await flow.key_update(request_peer_update=True)
            assert await exchange(flow, b"three\n") == b"eerht\n"
            await flow.close()
            await peer.finish()
        return flow

    flow = asyncio.run(main())
    # OpenSSL answered each update_requested with its own KeyUpdate.
    assert flow.key_updates_received == 2


def test_client_early_data_against_s_server(pki: Pki) -> None:
    async def main() -> tuple[TlsFlow, str]:
        port = free_port()
        cache = ClientSessionCache()
        config = TlsConfig(
            trust=pki.trust,
            session_cache=cache,
            enable_early_data=True,
            random=UnixRandom(),
            clock=UnixClock(),
        )
        args = s_server_args(pki, "p256", port, "-early_data", "-naccept", "2")
        async with server_process(args, port, "ACCEPT") as peer:
            first = await open_connection("127.0.0.1", port, config, server_name="localhost")
            await first.write(b"first\n")
            while not first.sessions:
                await first._pump()
            await first.close()
            second = await open_connection(
                "127.0.0.1", port, config, server_name="localhost", early_data=b"zero-rtt data\n"
            )
            await second.write(b"after\n")
            await second.close()
            output = await peer.finish()
        return second, output

    second, output = asyncio.run(main())
    assert second.resumed and second.connection.early_data_accepted
    assert "Early data received:" in output and "zero-rtt data" in output


def test_client_rejects_unknown_ca_and_server_sees_alert(pki: Pki) -> None:
    config = TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock())

    async def main() -> str:
        port = free_port()
        async with server_process(s_server_args(pki, "untrusted", port), port, "ACCEPT") as peer:
            with pytest.raises(CertificateError) as info:
                await open_connection("127.0.0.1", port, config, server_name="localhost")
            assert "unknown_ca" in str(info.value) or "unknown ca" in str(info.value).lower()
            return await peer.finish()

    assert "unknown ca" in asyncio.run(main())


def test_client_pinning(pki: Pki) -> None:
    good = TlsConfig(
        trust=pki.trust,
        pins=[spki_sha256(pki.leaves["p256"].certified.chain[0])],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    _flow, reply, _ = asyncio.run(client_against_s_server(pki, "p256", [], good))
    assert reply == b"gnimool olleh\n"
    bad = TlsConfig(trust=pki.trust, pins=[b"\x00" * 32], random=UnixRandom(), clock=UnixClock())
    with pytest.raises(CertificateError, match="pinned"):
        asyncio.run(client_against_s_server(pki, "p256", [], bad))


def test_client_sees_server_alert(pki: Pki) -> None:
    # The server insists on a client certificate; we have none.
    config = TlsConfig(trust=pki.trust, versions=[TLS12], random=UnixRandom(), clock=UnixClock())
    with pytest.raises(TlsAlertReceived):
        asyncio.run(
            client_against_s_server(
                pki, "p256", ["-Verify", "1", "-CAfile", str(pki.ca_path)], config
            )
        )


# --- OpenSSL client, looming server --------------------------------------------------


async def s_client_against_looming(
    config: TlsConfig, args: list[str], stdin: bytes = b"hello\n"
) -> tuple[int, str, EchoServer]:
    async with EchoServer(config) as server:
        rc, out = await s_client(server.port, args, stdin)
    return rc, out, server


def test_server_hello_retry_request_to_s_client(pki: Pki) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        groups=[NamedGroup.SECP384R1],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    rc, out, server = asyncio.run(
        s_client_against_looming(config, [*s_client_base(pki), "-groups", "X25519:P-384"])
    )
    assert rc == 0 and "echo:hello" in out and "secp384r1" in out
    assert server.flows[0].connection.hello_retried


def test_server_sni_and_alpn(pki: Pki) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified, pki.leaves["other-name"].certified],
        alpn_protocols=[b"h2", b"http/1.1"],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    args = [
        "-CAfile",
        str(pki.ca_path),
        "-verify_return_error",
        "-servername",
        "other.example",
        "-alpn",
        "http/1.1",
        "-verify_hostname",
        "other.example",
    ]
    rc, out, server = asyncio.run(s_client_against_looming(config, args))
    assert rc == 0, out
    assert "ALPN protocol: http/1.1" in out and "CN = other.example" in out
    assert server.flows[0].connection.server_name == "other.example"


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_server_exporter_matches_s_client(pki: Pki, version: str) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["rsa"].certified], random=UnixRandom(), clock=UnixClock()
    )
    args = [
        *s_client_base(pki),
        version,
        "-keymatexport",
        "EXPORTER-looming",
        "-keymatexportlen",
        "24",
    ]
    rc, out, server = asyncio.run(s_client_against_looming(config, args))
    match = re.search(r"Keying material: ([0-9A-F]+)", out)
    assert rc == 0 and match, out
    ours = server.flows[0].export_keying_material("EXPORTER-looming", None, 24)
    assert ours.hex().upper() == match.group(1)


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_server_client_certificate_from_s_client(pki: Pki, version: str) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        client_trust=pki.trust,
        require_client_certificate=True,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    client = pki.leaves["client-rsa"]
    args = [
        *s_client_base(pki),
        version,
        "-cert",
        str(client.cert_path),
        "-key",
        str(client.key_path),
    ]
    rc, out, server = asyncio.run(s_client_against_looming(config, args))
    assert rc == 0 and "echo:hello" in out, out
    assert server.flows[0].peer_certificates[0] == client.certified.chain[0]


def test_server_requires_client_certificate(pki: Pki) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        client_trust=pki.trust,
        require_client_certificate=True,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    _rc, out, server = asyncio.run(
        s_client_against_looming(config, [*s_client_base(pki), "-tls1_3"])
    )
    assert "certificate required" in out
    assert server.errors and "certificate_required" in str(server.errors[0])


def test_server_accepts_early_data_from_s_client(pki: Pki, tmp_path: Path) -> None:
    config = TlsConfig(
        certificates=[pki.leaves["p256"].certified],
        max_early_data=4096,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    session_file = tmp_path / "session.pem"
    early_file = tmp_path / "early.txt"
    early_file.write_bytes(b"early bird\n")

    async def main() -> tuple[str, EchoServer]:
        async with EchoServer(config) as server:
            base = s_client_base(pki)
            early = ["-sess_in", str(session_file), "-early_data", str(early_file)]
            await s_client(server.port, [*base, "-sess_out", str(session_file)], b"one\n")
            _, second = await s_client(server.port, [*base, *early], b"two\n")
            # Replaying the same ticket: single use, so no early data and no resumption.
            _, third = await s_client(server.port, [*base, *early], b"three\n")
        return second + "\n====\n" + third, server

    out, server = asyncio.run(main())
    second, third = out.split("\n====\n")
    assert "Early data was accepted" in second and "Reused," in second
    assert server.flows[1].early_data == [b"early bird\n"]
    assert "Early data was rejected" in third and "New," in third
    assert server.flows[2].early_data == []


def test_session_object_round_trip(pki: Pki) -> None:
    config = TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock())
    flow, _, _ = asyncio.run(client_against_s_server(pki, "p256", [], config))
    assert flow.sessions and isinstance(flow.sessions[0], Session)


# --- signature schemes and chains ----------------------------------------------------------

SIGALGS = [
    (TLS13, "rsa", "rsa_pss_rsae_sha256", "RSA-PSS", "SHA256"),
    (TLS13, "rsa", "rsa_pss_rsae_sha384", "RSA-PSS", "SHA384"),
    (TLS13, "rsa", "rsa_pss_rsae_sha512", "RSA-PSS", "SHA512"),
    (TLS13, "p256", "ecdsa_secp256r1_sha256", "ECDSA", "SHA256"),
    (TLS13, "p384", "ecdsa_secp384r1_sha384", "ECDSA", "SHA384"),
    (TLS13, "ed25519", "ed25519", "Ed25519", ""),
    (TLS12, "rsa", "rsa_pkcs1_sha256", "RSA", "SHA256"),
    (TLS12, "rsa", "rsa_pkcs1_sha384", "RSA", "SHA384"),
    (TLS12, "rsa", "rsa_pss_rsae_sha256", "RSA-PSS", "SHA256"),
    (TLS12, "p256", "ecdsa_secp256r1_sha256", "ECDSA", "SHA256"),
    (TLS12, "p256", "ecdsa_secp384r1_sha384", "ECDSA", "SHA384"),
]


@pytest.mark.parametrize(
    ("version", "leaf", "sigalg", "kind", "digest"),
    SIGALGS,
    ids=[f"{v:#x}-{s}" for v, _, s, _, _ in SIGALGS],
)
def test_server_signature_schemes_to_s_client(
    pki: Pki, version: int, leaf: str, sigalg: str, kind: str, digest: str
) -> None:
    config = TlsConfig(
        certificates=[pki.leaves[leaf].certified], random=UnixRandom(), clock=UnixClock()
    )
    flag = "-tls1_3" if version == TLS13 else "-tls1_2"
    rc, out, _ = asyncio.run(
        s_client_against_looming(config, [*s_client_base(pki), flag, "-sigalgs", sigalg])
    )
    assert rc == 0 and "echo:hello" in out, out
    assert f"peer signature type: {kind.lower()}\n" in out.lower()
    if digest:
        assert f"Peer signing digest: {digest}" in out


@pytest.mark.parametrize(
    ("version", "leaf", "sigalg", "kind", "digest"),
    SIGALGS,
    ids=[f"{v:#x}-{s}" for v, _, s, _, _ in SIGALGS],
)
def test_client_verifies_signature_schemes_from_s_server(
    pki: Pki, version: int, leaf: str, sigalg: str, kind: str, digest: str
) -> None:
    flag = "-tls1_3" if version == TLS13 else "-tls1_2"
    flow, reply, _ = asyncio.run(
        client_against_s_server(
            pki,
            leaf,
            [flag, "-sigalgs", sigalg],
            TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
        )
    )
    assert reply == b"gnimool olleh\n" and flow.version == version


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_chain_with_intermediate_under_rsa_root(pki: Pki, version: int) -> None:
    from looming.tls import TrustStore

    assert pki.rsa_root is not None
    # looming client builds the path leaf -> intermediate -> RSA root from s_server's chain.
    config = TlsConfig(
        trust=TrustStore([pki.rsa_root]), versions=[version], random=UnixRandom(), clock=UnixClock()
    )
    flow, reply, _ = asyncio.run(
        client_against_s_server(
            pki, "chain", ["-cert_chain", str(pki.leaves["chain"].cert_path)], config
        )
    )
    assert reply == b"gnimool olleh\n"
    assert flow.peer_certificates[0] == pki.leaves["chain"].certified.chain[0]
    assert pki.leaves["chain"].certified.chain[1] in flow.peer_certificates
    # And s_client validates the chain looming's server sends.
    server_config = TlsConfig(
        certificates=[pki.leaves["chain"].certified], random=UnixRandom(), clock=UnixClock()
    )
    args = [
        "-CAfile",
        str(pki.rsa_root_path),
        "-verify_return_error",
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
    ]
    rc, out, _ = asyncio.run(s_client_against_looming(server_config, args))
    assert (
        rc == 0 and "Verify return code: 0 (ok)" in out and "depth=2 CN = looming RSA root" in out
    ), out


@pytest.mark.parametrize("version", [TLS13, TLS12])
def test_client_exporter_matches_s_server(pki: Pki, version: int) -> None:
    async def main() -> tuple[bytes, str]:
        port = free_port()
        flag = "-tls1_3" if version == TLS13 else "-tls1_2"
        args = s_server_args(
            pki, "p256", port, flag, "-keymatexport", "EXPORTER-client", "-keymatexportlen", "32"
        )
        async with server_process(args, port, "ACCEPT") as peer:
            flow = await open_connection(
                "127.0.0.1",
                port,
                TlsConfig(trust=pki.trust, random=UnixRandom(), clock=UnixClock()),
                server_name="localhost",
            )
            ours = flow.export_keying_material("EXPORTER-client", None, 32)
            await flow.write(b"bye\n")
            await flow.close()
            return ours, await peer.finish()

    ours, output = asyncio.run(main())
    match = re.search(r"Keying material: ([0-9A-F]+)", output)
    assert match, output
    assert ours.hex().upper() == match.group(1)
