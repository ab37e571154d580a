"""`looming tls serve|connect`: keys and certificates checked at start-up, several
certificates, client authentication, resumption and 0-RTT from the command line."""

from __future__ import annotations

import asyncio
import datetime
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from looming.tls.cli import main as tls_main
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

from .peers import free_port, run, server_process
from .pki import Pki
from .test_cli import LOOMING_TLS

ANSWER = "hello from looming over TLS"


def _exit_and_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = tls_main(argv)
    return code, capsys.readouterr().err


def _self_issued(path: Path, key: object, *, expired: bool = False) -> Path:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")])
    start, end = (
        (now - datetime.timedelta(days=10), now - datetime.timedelta(days=1))
        if expired
        else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=10))
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: object, fmt: str, password: bytes | None) -> Path:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    private_format = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
    }[fmt]
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, private_format, encryption)  # type: ignore[attr-defined]
    )
    return path


# --- refused at start-up, exit 2 with the reason -------------------------------------------


def test_key_that_does_not_match_the_certificate(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--cert", str(pki.leaves["p256"].cert_path), "--key",
            str(pki.leaves["p384"].key_path), "--port", "0"]  # fmt: skip
    code, err = _exit_and_error(argv, capsys)
    assert code == 2 and "private key does not match the certificate" in err


def test_expired_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_issued(tmp_path / "old.pem", key, expired=True)
    key_path = _write_key(tmp_path / "old.key", key, "pkcs8", None)
    code, err = _exit_and_error(["serve", "--cert", str(cert), "--key", str(key_path)], capsys)
    assert code == 2 and "certificate expired on" in err and "renew it" in err


def test_key_no_handshake_can_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = dsa.generate_private_key(2048)
    cert = _self_issued(tmp_path / "dsa.pem", key)
    key_path = _write_key(tmp_path / "dsa.key", key, "pkcs8", None)
    code, err = _exit_and_error(["serve", "--cert", str(cert), "--key", str(key_path)], capsys)
    assert code == 2 and "cannot sign TLS handshakes" in err


def test_rsa_key_too_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = rsa.generate_private_key(65537, 1024)
    cert = _self_issued(tmp_path / "small.pem", key)
    key_path = _write_key(tmp_path / "small.key", key, "pkcs8", None)
    code, err = _exit_and_error(["serve", "--cert", str(cert), "--key", str(key_path)], capsys)
    assert code == 2 and "1024-bit RSA key is too weak" in err


def test_chain_out_of_order(pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = pki.leaves["chain"]
    leaf_pem, inter_pem = chain.cert_path.read_bytes().split(b"-----END CERTIFICATE-----\n")[:2]
    bad = tmp_path / "bad-chain.pem"
    bad.write_bytes(leaf_pem + b"-----END CERTIFICATE-----\n" + pki.ca_path.read_bytes())
    assert inter_pem
    code, err = _exit_and_error(["serve", "--cert", str(bad), "--key", str(chain.key_path)], capsys)
    assert code == 2 and "does not issue" in err


def test_unequal_cert_and_key_counts(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["serve", "--cert", str(pki.leaves["p256"].cert_path), "--cert",
            str(pki.leaves["rsa"].cert_path), "--key", str(pki.leaves["p256"].key_path)]  # fmt: skip
    code, err = _exit_and_error(argv, capsys)
    assert code == 2 and "2 --cert but 1 --key" in err


@pytest.mark.parametrize("fmt", ["pkcs8", "traditional"])
def test_encrypted_key_without_passphrase(
    pki: Pki, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key = serialization.load_pem_private_key(pki.leaves["rsa"].key_path.read_bytes(), None)
    key_path = _write_key(tmp_path / "enc.key", key, fmt, b"s3cret")
    argv = ["serve", "--cert", str(pki.leaves["rsa"].cert_path), "--key", str(key_path)]
    code, err = _exit_and_error(argv, capsys)
    assert code == 2 and "is encrypted" in err and "--key-password-file" in err
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    code, err = _exit_and_error([*argv, "--key-password-file", str(wrong)], capsys)
    assert code == 2 and "wrong passphrase" in err


# --- started, and serving ---------------------------------------------------------------


async def _s_client(port: int, pki: Pki, *extra: str) -> tuple[int, str]:
    rc, out, err = await run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.ca_path),
         "-servername", "localhost", "-verify_return_error", "-ign_eof", *extra],
        b"GET / HTTP/1.0\r\n\r\n",
    )  # fmt: skip
    return rc, out + err


@pytest.mark.parametrize("source", ["file", "environment"])
@pytest.mark.parametrize("fmt", ["pkcs8", "traditional"])
def test_encrypted_key_with_passphrase_serves(
    pki: Pki, tmp_path: Path, fmt: str, source: str
) -> None:
    key = serialization.load_pem_private_key(pki.leaves["p256"].key_path.read_bytes(), None)
    key_path = _write_key(tmp_path / "enc.key", key, fmt, b"s3cret")
    (tmp_path / "pass").write_text("s3cret\n")
    port = free_port()
    args = [*LOOMING_TLS, "serve", "--cert", str(pki.leaves["p256"].cert_path), "--key",
            str(key_path), "--port", str(port), "--http"]  # fmt: skip
    if source == "file":
        args += ["--key-password-file", str(tmp_path / "pass")]
        command = args
    else:
        command = ["env", "LOOMING_TLS_KEY_PASSWORD=s3cret", *args]

    async def scenario() -> tuple[int, str]:
        async with server_process(command, port, "listening on"):
            return await _s_client(port, pki, "-tls1_3")

    rc, out = asyncio.run(scenario())
    assert rc == 0 and ANSWER in out, out


def test_rsa_and_ecdsa_side_by_side(pki: Pki) -> None:
    port = free_port()
    rsa_leaf, ec_leaf = pki.leaves["rsa"], pki.leaves["p256"]
    command = [*LOOMING_TLS, "serve", "--http", "--port", str(port),
               "--cert", str(rsa_leaf.cert_path), "--key", str(rsa_leaf.key_path),
               "--cert", str(ec_leaf.cert_path), "--key", str(ec_leaf.key_path)]  # fmt: skip

    async def scenario() -> list[str]:
        outs = []
        async with server_process(command, port, "listening on"):
            for sigalgs in ("ECDSA+SHA256", "RSA-PSS+SHA256", "RSA+SHA256"):
                version = "-tls1_2" if sigalgs == "RSA+SHA256" else "-tls1_3"
                rc, out = await _s_client(port, pki, version, "-sigalgs", sigalgs)
                assert rc == 0, out
                outs.append(out)
        return outs

    ecdsa, pss, pkcs1 = asyncio.run(scenario())
    assert "Peer signature type: ECDSA" in ecdsa
    assert "Peer signature type: RSA-PSS" in pss
    assert "Peer signature type: RSA\n" in pkcs1


def test_sni_chooses_between_certificates(pki: Pki) -> None:
    port = free_port()
    default, other = pki.leaves["p256"], pki.leaves["other-name"]
    command = [*LOOMING_TLS, "serve", "--http", "--port", str(port),
               "--cert", str(default.cert_path), "--key", str(default.key_path),
               "--cert", str(other.cert_path), "--key", str(other.key_path)]  # fmt: skip

    async def scenario() -> tuple[str, str]:
        async with server_process(command, port, "listening on"):
            _, first = await _s_client(port, pki)
            _rc, second, _err = await run(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                 "other.example"],
                b"",
            )  # fmt: skip
            return first, second

    first, second = asyncio.run(scenario())
    assert "subject=CN = localhost" in first
    assert "subject=CN = other.example" in second


@pytest.mark.parametrize("mode", ["required", "optional"])
def test_client_auth_required_and_optional(pki: Pki, mode: str) -> None:
    port = free_port()
    leaf, client = pki.leaves["p256"], pki.leaves["client-p256"]
    command = [*LOOMING_TLS, "serve", "--http", "--port", str(port), "--cert", str(leaf.cert_path),
               "--key", str(leaf.key_path), "--client-ca", str(pki.ca_path),
               "--client-auth", mode]  # fmt: skip

    async def scenario() -> tuple[tuple[int, str], tuple[int, str]]:
        async with server_process(command, port, "listening on"):
            with_cert = await _s_client(
                port, pki, "-cert", str(client.cert_path), "-key", str(client.key_path)
            )
            without = await _s_client(port, pki)
            return with_cert, without

    (rc_with, out_with), (rc_without, out_without) = asyncio.run(scenario())
    assert rc_with == 0 and ANSWER in out_with, out_with
    if mode == "required":
        assert "certificate required" in out_without
    else:
        assert rc_without == 0 and ANSWER in out_without


# --- connect ---------------------------------------------------------------------------


def _s_server(pki: Pki, port: int, *extra: str) -> list[str]:
    leaf = pki.leaves["p256"]
    return ["openssl", "s_server", "-accept", str(port), "-cert", str(leaf.cert_path),
            "-key", str(leaf.key_path), "-rev", *extra]  # fmt: skip


def _connect(pki: Pki, port: int, *extra: str) -> list[str]:
    return [*LOOMING_TLS, "connect", f"127.0.0.1:{port}", "--servername", "localhost",
            "--ca", str(pki.ca_path), *extra]  # fmt: skip


def test_connect_with_client_certificate(pki: Pki) -> None:
    port = free_port()
    client = pki.leaves["client-rsa"]
    server = _s_server(pki, port, "-naccept", "1", "-Verify", "1", "-CAfile", str(pki.ca_path),
                       "-verify_return_error")  # fmt: skip

    async def scenario() -> tuple[int, str, str, str]:
        async with server_process(server, port, "ACCEPT") as peer:
            rc, out, err = await run(
                _connect(pki, port, "--cert", str(client.cert_path), "--key",
                         str(client.key_path)),
                b"hello\n",
            )  # fmt: skip
            return rc, out, err, await peer.finish()

    rc, out, err, server_out = asyncio.run(scenario())
    assert rc == 0 and out == "olleh\n", err
    assert "depth=0 CN = client.example" in server_out


def test_connect_resumes_and_sends_early_data(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    session_file = tmp_path / "session"
    leaf = pki.leaves["p256"]
    # s_server cannot reverse (-rev) early data: it prints what it receives.
    server = ["openssl", "s_server", "-accept", str(port), "-cert", str(leaf.cert_path),
              "-key", str(leaf.key_path), "-naccept", "3", "-early_data"]  # fmt: skip

    async def scenario() -> tuple[list[tuple[int, str, str]], str]:
        results = []
        async with server_process(server, port, "ACCEPT") as peer:
            for n in range(3):
                command = _connect(pki, port, "--resume", str(session_file), "--early-data")
                results.append(await run(command, b"early bird %d\n" % n))
            return results, await peer.finish()

    (first, second, third), server_out = asyncio.run(scenario())
    assert first[0] == 0, first[2]
    assert "resumed" not in first[2] and session_file.exists()
    assert session_file.stat().st_mode & 0o077 == 0
    for rc, _out, err in (second, third):
        assert rc == 0, err
        assert re.search(r"connected: .*, resumed", err)
        assert "early data accepted" in err
    # s_server's own report (its stdout interleaves the data with it unpredictably).
    assert server_out.count("No early data received") == 1, server_out
    assert server_out.count("Early data received:") == 2, server_out
    assert all(f"early bird {n}" in server_out for n in range(3))


def test_connect_early_data_needs_resume(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit_and_error(["connect", "127.0.0.1:1", "--early-data"], capsys)
    assert code == 2 and "--early-data needs --resume" in err


def test_record_size_limit_option_reaches_the_peer(pki: Pki) -> None:
    from looming.tls import TlsConfig
    from looming.tls.flow import open_connection

    port = free_port()
    leaf = pki.leaves["p256"]
    command = [*LOOMING_TLS, "serve", "--port", str(port), "--cert", str(leaf.cert_path),
               "--key", str(leaf.key_path), "--record-size-limit", "512"]  # fmt: skip

    async def scenario() -> int | None:
        async with server_process(command, port, "listening on"):
            config = TlsConfig(
                trust=pki.trust, record_size_limit=1024, random=UnixRandom(), clock=UnixClock()
            )
            flow = await open_connection("127.0.0.1", port, config, server_name="localhost")
            await flow.write(b"x" * 3000)
            echoed = b""
            while len(echoed) < 3000:
                echoed += await flow.read()
            limit = flow.connection.records.send_limit
            await flow.close()
            return limit

    assert asyncio.run(scenario()) == 512


def test_record_size_limit_out_of_range(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    leaf = pki.leaves["p256"]
    code, err = _exit_and_error(
        ["serve", "--cert", str(leaf.cert_path), "--key", str(leaf.key_path),
         "--record-size-limit", "20"],
        capsys,
    )  # fmt: skip
    assert code == 2 and "record_size_limit must be between 64 and 16385" in err
