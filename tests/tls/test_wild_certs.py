"""Certificates as found in the wild, against OpenSSL and Python's ssl: CN-only
client certificates, RSA-PSS and Ed448 keys, deep chains, self-signed leaves."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from looming.tls import TLS12, TLS13, CertificateError, SignatureScheme, TlsConfig, TrustStore
from looming.tls.flow import open_connection
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .peers import EchoServer, free_port, run, server_process
from .test_openssl import exchange, s_client_against_looming
from .wild_pki import Issued, WildPki

TLS_FLAGS = {TLS13: "-tls1_3", TLS12: "-tls1_2"}
VERSIONS = [TLS13, TLS12]


def _s_client(wild: WildPki, version: int, client: Issued | None) -> list[str]:
    args = ["-CAfile", str(wild.ca_path), "-verify_return_error", "-servername", "localhost"]
    args.append(TLS_FLAGS[version])
    if client is not None:
        args += ["-cert", str(client.cert_path), "-key", str(client.key_path)]
    return args


def _s_server(issued: Issued, port: int, *extra: str) -> list[str]:
    if len(issued.chain) > 1:  # s_server sends only the first certificate of -cert
        intermediates = issued.cert_path.with_suffix(".intermediates.pem")
        intermediates.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in issued.chain[1:]))
        extra = ("-cert_chain", str(intermediates), *extra)
    return [
        "openssl", "s_server", "-accept", str(port), "-naccept", "1", "-rev",
        "-cert", str(issued.cert_path), "-key", str(issued.key_path), *extra,
    ]  # fmt: skip


async def _looming_client(
    config: TlsConfig, server: Issued, port_args: tuple[str, ...] = ()
) -> tuple[bytes, str, list[object]]:
    port = free_port()
    async with server_process(_s_server(server, port, *port_args), port, "ACCEPT") as peer:
        flow = await open_connection("127.0.0.1", port, config, server_name="localhost")
        reply = await exchange(flow)
        chain = list(flow.peer_certificates)
        await flow.close()
        output = await peer.finish()
    return reply, output, chain


# --- client certificates without a subjectAltName -----------------------------------


@pytest.mark.parametrize("version", VERSIONS, ids=["1.3", "1.2"])
@pytest.mark.parametrize("client", ["client-cn-only", "client-san", "client-pss-cn-only"])
def test_server_accepts_client_certificates_with_and_without_san(
    wild: WildPki, issued: dict[str, Issued], version: int, client: str
) -> None:
    config = TlsConfig(
        certificates=[issued["server-p256"].certified],
        client_trust=wild.trust,
        require_client_certificate=True,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    rc, out, server = asyncio.run(
        s_client_against_looming(config, _s_client(wild, version, issued[client]))
    )
    assert rc == 0 and "echo:hello" in out, out
    assert not server.errors
    assert server.flows[0].peer_certificates[0] == issued[client].cert


def test_server_refuses_client_certificate_without_client_auth_eku(
    wild: WildPki, issued: dict[str, Issued]
) -> None:
    # A server certificate (EKU serverAuth only) is not a client certificate.
    config = TlsConfig(
        certificates=[issued["server-p256"].certified],
        client_trust=wild.trust,
        require_client_certificate=True,
        random=UnixRandom(),
        clock=UnixClock(),
    )
    _rc, out, server = asyncio.run(
        s_client_against_looming(config, _s_client(wild, TLS13, issued["server-ed25519"]))
    )
    assert "echo:hello" not in out
    assert server.errors and isinstance(server.errors[0], CertificateError)
    assert "alert" in out.lower()


@pytest.mark.parametrize("client", ["client-cn-only", "client-pss-cn-only", "client-ed25519"])
def test_client_presents_cn_only_certificate_to_s_server(
    wild: WildPki, issued: dict[str, Issued], client: str
) -> None:
    config = TlsConfig(
        trust=wild.trust,
        certificates=[issued[client].certified],
        random=UnixRandom(),
        clock=UnixClock(),
    )
    extra = ("-Verify", "1", "-CAfile", str(wild.ca_path), "-verify_return_error")
    reply, output, _ = asyncio.run(_looming_client(config, issued["server-p256"], extra))
    assert reply == b"gnimool olleh\n", output
    assert f"depth=0 {issued[client].cert.subject.rfc4514_string().replace('=', ' = ')}" in output
    assert "Verification: OK" in output


# --- RSA-PSS and Ed448 server keys ----------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS, ids=["1.3", "1.2"])
@pytest.mark.parametrize("leaf", ["server-pss", "server-ed448", "server-ed25519"])
def test_server_with_pss_and_edwards_keys_to_s_client(
    wild: WildPki, issued: dict[str, Issued], version: int, leaf: str
) -> None:
    config = TlsConfig(
        certificates=[issued[leaf].certified], random=UnixRandom(), clock=UnixClock()
    )
    rc, out, server = asyncio.run(s_client_against_looming(config, _s_client(wild, version, None)))
    assert rc == 0 and "echo:hello" in out and "Verify return code: 0 (ok)" in out, out
    assert not server.errors
    if leaf == "server-pss":
        assert "Peer signature type: RSA-PSS" in out


@pytest.mark.parametrize("version", VERSIONS, ids=["1.3", "1.2"])
@pytest.mark.parametrize("leaf", ["server-pss", "server-ed448"])
def test_client_against_s_server_with_pss_and_ed448(
    wild: WildPki, issued: dict[str, Issued], version: int, leaf: str
) -> None:
    config = TlsConfig(trust=wild.trust, versions=[version], random=UnixRandom(), clock=UnixClock())
    reply, output, chain = asyncio.run(_looming_client(config, issued[leaf]))
    assert reply == b"gnimool olleh\n", output
    assert chain[0] == issued[leaf].cert


@pytest.mark.parametrize(
    "scheme",
    [
        SignatureScheme.RSA_PSS_PSS_SHA256,
        SignatureScheme.RSA_PSS_PSS_SHA384,
        SignatureScheme.RSA_PSS_PSS_SHA512,
    ],
    ids=lambda s: s.name,
)
def test_every_rsa_pss_pss_scheme_with_s_client(
    wild: WildPki, issued: dict[str, Issued], scheme: SignatureScheme
) -> None:
    config = TlsConfig(
        certificates=[issued["server-pss"].certified], random=UnixRandom(), clock=UnixClock()
    )
    openssl_name = {
        0x0809: "rsa_pss_pss_sha256",
        0x080A: "rsa_pss_pss_sha384",
        0x080B: "rsa_pss_pss_sha512",
    }
    args = [*_s_client(wild, TLS13, None), "-sigalgs", openssl_name[scheme]]
    rc, out, _server = asyncio.run(s_client_against_looming(config, args))
    assert rc == 0 and "echo:hello" in out, out
    assert f"Peer signing digest: SHA{openssl_name[scheme][-3:]}" in out


def test_pss_server_refuses_client_offering_only_rsae(
    wild: WildPki, issued: dict[str, Issued]
) -> None:
    # An RSA-PSS key cannot make rsa_pss_rsae signatures: nothing fits, so no ServerHello.
    config = TlsConfig(
        certificates=[issued["server-pss"].certified], random=UnixRandom(), clock=UnixClock()
    )
    args = [*_s_client(wild, TLS13, None), "-sigalgs", "rsa_pss_rsae_sha256"]
    rc, out, server = asyncio.run(s_client_against_looming(config, args))
    assert rc != 0 and "echo:hello" not in out
    assert "handshake failure" in out
    assert server.errors and "signature" in str(server.errors[0])


def test_python_ssl_client_to_pss_server(wild: WildPki, issued: dict[str, Issued]) -> None:
    async def scenario() -> bytes:
        config = TlsConfig(
            certificates=[issued["server-pss"].certified], random=UnixRandom(), clock=UnixClock()
        )
        async with EchoServer(config) as server:
            context = ssl.create_default_context(cafile=str(wild.ca_path))
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=context, server_hostname="localhost"
            )
            writer.write(b"pss\n")
            reply = await reader.read(100)
            writer.close()
            return reply

    assert asyncio.run(scenario()) == b"echo:pss\n"


# --- chains and anchors ---------------------------------------------------------------


def test_server_sends_two_intermediates_in_order(wild: WildPki, issued: dict[str, Issued]) -> None:
    deep = issued["deep"]
    config = TlsConfig(certificates=[deep.certified], random=UnixRandom(), clock=UnixClock())
    rc, out, _ = asyncio.run(
        s_client_against_looming(config, [*_s_client(wild, TLS13, None), "-showcerts"])
    )
    assert rc == 0 and "Verify return code: 0 (ok)" in out, out
    depth_lines = [line for line in out.splitlines() if line.startswith("depth=")]
    assert [line.split(" ", 1)[0] for line in depth_lines] == [
        "depth=3",
        "depth=2",
        "depth=1",
        "depth=0",
    ]


def test_client_validates_two_intermediates_from_s_server(
    wild: WildPki, issued: dict[str, Issued]
) -> None:
    config = TlsConfig(trust=wild.trust, random=UnixRandom(), clock=UnixClock())
    reply, output, chain = asyncio.run(_looming_client(config, issued["deep"]))
    assert reply == b"gnimool olleh\n", output
    assert chain == issued["deep"].chain


def test_self_signed_leaf_as_trust_anchor(issued: dict[str, Issued]) -> None:
    anchor = issued["self-signed"]
    config = TlsConfig(
        trust=TrustStore.from_pem_file(anchor.cert_path), random=UnixRandom(), clock=UnixClock()
    )
    reply, _, chain = asyncio.run(_looming_client(config, anchor))
    assert reply == b"gnimool olleh\n"
    assert chain == [anchor.cert]


def test_self_signed_anchor_trusts_only_that_certificate(issued: dict[str, Issued]) -> None:
    # Another self-signed certificate for the same name is not trusted.
    config = TlsConfig(
        trust=TrustStore.from_pem_file(issued["self-signed"].cert_path),
        random=UnixRandom(),
        clock=UnixClock(),
    )
    with pytest.raises(CertificateError, match=r"self-signed certificate .* not a trust anchor"):
        asyncio.run(_looming_client(config, issued["other-self-signed"]))


def test_self_signed_anchor_still_checks_the_name(issued: dict[str, Issued]) -> None:
    anchor = issued["self-signed"]
    config = TlsConfig(
        trust=TrustStore.from_pem_file(anchor.cert_path), random=UnixRandom(), clock=UnixClock()
    )

    async def scenario() -> None:
        port = free_port()
        async with server_process(_s_server(anchor, port), port, "ACCEPT"):
            await open_connection("127.0.0.1", port, config, server_name="elsewhere.example")

    with pytest.raises(CertificateError, match=r"not valid for 'elsewhere\.example'"):
        asyncio.run(scenario())


def test_openssl_and_looming_agree_on_self_signed_anchor(
    issued: dict[str, Issued], tmp_path: Path
) -> None:
    anchor = issued["self-signed"]
    config = TlsConfig(certificates=[anchor.certified], random=UnixRandom(), clock=UnixClock())
    args = ["-CAfile", str(anchor.cert_path), "-verify_return_error", "-servername", "localhost"]
    rc, out, _ = asyncio.run(s_client_against_looming(config, args))
    assert rc == 0 and "Verify return code: 0 (ok)" in out, out
    _ = run  # the subprocess helper is shared with the other interop tests


def test_validated_chains_are_remembered_within_their_dates(
    wild: WildPki, issued: dict[str, Issued]
) -> None:
    import datetime

    from looming.tls.certs import validate_chain

    deep = issued["deep"]
    trust = TrustStore([wild.ca])
    der = [c.public_bytes(Encoding.DER) for c in deep.chain]
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    validate_chain(deep.chain, trust, now, "localhost", True, chain_der=der)
    assert len(trust._validated) == 1
    validate_chain(deep.chain, trust, now, "localhost", True, chain_der=der)
    assert len(trust._validated) == 1  # served from memory
    # Another name is another question, and is answered afresh (and refused).
    with pytest.raises(CertificateError, match=r"not valid for 'elsewhere\.example'"):
        validate_chain(deep.chain, trust, now, "elsewhere.example", True, chain_der=der)
    # Past the leaf's notAfter the remembered answer does not apply: validated again, refused.
    later = deep.cert.not_valid_after_utc.replace(tzinfo=None) + datetime.timedelta(days=1)
    with pytest.raises(CertificateError, match=r"expired|validity"):
        validate_chain(deep.chain, trust, later, "localhost", True, chain_der=der)
