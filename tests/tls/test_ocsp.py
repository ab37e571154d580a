"""OCSP stapling from a file: openssl s_client -status sees the response, TLS 1.3 and 1.2;
unusable responses stop start-up."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from looming.tls.cli import main as tls_main

from .peers import free_port, run, server_process
from .pki import Pki
from .test_cli import LOOMING_TLS


def _response(pki: Pki, leaf: str, *, hours: int = 24, revoked: bool = False) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    cert = pki.leaves[leaf].certified.chain[0]
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert,
        issuer=pki.ca_cert,
        algorithm=hashes.SHA1(),
        cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
        this_update=now - datetime.timedelta(hours=1),
        next_update=now + datetime.timedelta(hours=hours),
        revocation_time=now - datetime.timedelta(hours=2) if revoked else None,
        revocation_reason=None,
    )
    response = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, pki.ca_cert).sign(
        pki.ca_key, hashes.SHA256()
    )
    return response.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_s_client_status_sees_the_staple(pki: Pki, tmp_path: Path, version: str) -> None:
    staple = tmp_path / "leaf.ocsp"
    staple.write_bytes(_response(pki, "p256"))
    leaf = pki.leaves["p256"]
    port = free_port()
    command = [*LOOMING_TLS, "serve", "--http", "--port", str(port), "--cert",
               str(leaf.cert_path), "--key", str(leaf.key_path), "--ocsp", str(staple)]  # fmt: skip

    async def scenario() -> tuple[str, str]:
        async with server_process(command, port, "listening on"):
            outs = []
            for status in (["-status"], []):
                _rc, out, err = await run(
                    ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
                     str(pki.ca_path), "-servername", "localhost", "-ign_eof", version,
                     *status],
                    b"GET / HTTP/1.0\r\n\r\n",
                )  # fmt: skip
                outs.append(out + err)
            return outs[0], outs[1]

    asked, not_asked = asyncio.run(scenario())
    assert "OCSP Response Status: successful" in asked, asked
    assert "Cert Status: good" in asked and "hello from looming" in asked
    assert "OCSP response: no response sent" not in asked
    assert "OCSP Response Status" not in not_asked and "hello from looming" in not_asked


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda pki: _response(pki, "rsa"), "not the certificate's"),
        (lambda pki: _response(pki, "p256", revoked=True), "status is REVOKED"),
        (lambda pki: _response(pki, "p256", hours=-2), "expired at"),
        (lambda pki: b"not der", "not a DER OCSP response"),
    ],
    ids=["other-certificate", "revoked", "stale", "garbage"],
)
def test_unusable_response_stops_start_up(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, message: str
) -> None:
    staple = tmp_path / "leaf.ocsp"
    staple.write_bytes(make(pki))  # type: ignore[operator]
    leaf = pki.leaves["p256"]
    code = tls_main(["serve", "--cert", str(leaf.cert_path), "--key", str(leaf.key_path),
                     "--ocsp", str(staple)])  # fmt: skip
    assert code == 2 and message in capsys.readouterr().err
