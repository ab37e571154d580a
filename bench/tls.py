"""TLS: looming's engine beside Python's ssl (OpenSSL) in one run.

Both sides of every connection run in this process over memory buffers
(looming's sans-I/O engine; ssl's MemoryBIO), so most figures compare the TLS
implementations, not the socket path; the last two rows run the same handshake
and bulk transfer over loopback TCP with asyncio (looming's TlsFlow helpers
beside asyncio's own ssl transport). tlslite-ng runs over a socketpair. Prints
handshakes/s and bulk MB/s with ratios; --json PATH writes the figures, --quick
shortens every measurement.

looming and ssl are measured in alternating slices (ABAB), so both see the
same machine load, and the in-memory rows count CPU seconds of the thread that
runs both ends, so time the scheduler gives to other processes on a shared
machine counts for neither. Full and resumed TLS 1.3 handshakes are measured
for each certificate type (ECDSA P-256, RSA-2048, RSA-PSS-2048, Ed25519). Bulk
rows give each side's best of 8 alternating rounds (--bulk-only runs just
those rows). The first lines name the OpenSSL each side runs on (looming
through ``cryptography``).

    .venv/bin/python -P bench/tls.py [--quick] [--bulk-only] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from looming.tls import (
    TLS12,
    TLS13,
    CertifiedKey,
    CipherSuite,
    ClientSessionCache,
    TlsConfig,
    TlsConnection,
    TlsFlow,
    TrustStore,
    open_connection,
    start_server,
)
from looming.tls.constants import PskKeyExchangeMode
from looming.unix.clock import UnixClock
from looming.unix.random import UnixRandom

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def make_pki(directory: Path) -> dict[str, tuple[Path, Path, CertifiedKey]]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out = {}
    keys: dict[str, Key] = {
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "rsa": rsa.generate_private_key(65537, 2048),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }
    for label, key in keys.items():
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(2 + len(out))
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{label}.pem", directory / f"{label}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        out[label] = (cert_path, key_path, CertifiedKey([cert], key))
    out["rsa-pss"] = make_rsa_pss_leaf(directory, ca, ca_key)
    return out


def make_rsa_pss_leaf(
    directory: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path, CertifiedKey]:
    """An id-RSASSA-PSS key and certificate; cryptography cannot make the key, OpenSSL can."""
    (directory / "ca.key").write_bytes(
        ca_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path, cert_path = directory / "rsa-pss.key", directory / "rsa-pss.pem"
    ext = directory / "rsa-pss.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n"
                   "authorityKeyIdentifier=keyid\nsubjectAltName=DNS:localhost\n")  # fmt: skip
    for command in (
        ["openssl", "genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048",
         "-out", str(key_path)],
        ["openssl", "req", "-new", "-key", str(key_path), "-subj", "/CN=localhost",
         "-out", str(directory / "rsa-pss.csr")],
        ["openssl", "x509", "-req", "-in", str(directory / "rsa-pss.csr"), "-CA",
         str(directory / "ca.pem"), "-CAkey", str(directory / "ca.key"), "-set_serial", "99",
         "-days", "30", "-extfile", str(ext), "-out", str(cert_path)],
    ):  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    return cert_path, key_path, CertifiedKey([cert], key)  # type: ignore[arg-type]


# --- looming --------------------------------------------------------------------------


def looming_pair(
    client_config: TlsConfig, server_config: TlsConfig
) -> tuple[TlsConnection, TlsConnection]:
    server = TlsConnection(server_config, server_side=True)
    client = TlsConnection(client_config, server_side=False, server_name="localhost")
    for _ in range(6):
        out = client.bytes_to_send()
        if out:
            server.receive(out)
        out = server.bytes_to_send()
        if out:
            client.receive(out)
    assert client.handshake_complete and server.handshake_complete
    return client, server


def looming_bulk(client: TlsConnection, server: TlsConnection, total: int) -> None:
    chunk = bytes(16384)
    received = 0
    while received < total:
        client.send_application_data(chunk)
        for event in server.receive(client.bytes_to_send()):
            received += len(event.data)  # type: ignore[attr-defined]


# --- Python ssl over MemoryBIO ---------------------------------------------------------


class SslEndpoint:
    def __init__(
        self, ctx: ssl.SSLContext, server_side: bool, session: ssl.SSLSession | None = None
    ) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        hostname = None if server_side else "localhost"
        self.obj = ctx.wrap_bio(
            self.incoming,
            self.outgoing,
            server_side=server_side,
            server_hostname=hostname,
            session=session,
        )
        self.done = False

    def step(self) -> None:
        if self.done:
            return
        try:
            self.obj.do_handshake()
            self.done = True
        except ssl.SSLWantReadError:
            pass


def ssl_pair(
    client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[SslEndpoint, SslEndpoint]:
    client = SslEndpoint(client_ctx, False, session)
    server = SslEndpoint(server_ctx, True)
    for _ in range(6):
        client.step()
        server.incoming.write(client.outgoing.read())
        server.step()
        client.incoming.write(server.outgoing.read())
    client.step()
    assert client.done and server.done
    # Let the client take the TLS 1.3 tickets so its session can be resumed.
    try:
        client.obj.read(1)
    except ssl.SSLWantReadError:
        pass
    return client, server


def ssl_bulk(client: SslEndpoint, server: SslEndpoint, total: int) -> None:
    chunk = bytes(16384)
    received = 0
    while received < total:
        client.obj.write(chunk)
        server.incoming.write(client.outgoing.read())
        while True:
            try:
                received += len(server.obj.read(65536))
            except ssl.SSLWantReadError:
                break


def ssl_bulk13_in_child(suite_name: str, total: int, directory: Path) -> float:
    """Python's ssl cannot pick a TLS 1.3 suite; an OpenSSL config file in a child can."""
    conf = directory / f"openssl-{suite_name}.cnf"
    conf.write_text(
        "openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n[ssl_sect]\n"
        f"system_default = system_default_sect\n[system_default_sect]\nCiphersuites = {suite_name}\n"
    )
    env = dict(os.environ, OPENSSL_CONF=str(conf))
    out = subprocess.run(
        [sys.executable, __file__, "--ssl-bulk13", suite_name, str(total), str(directory)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def ssl_bulk13_child(suite_name: str, total: str, directory: str) -> int:
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(Path(directory) / "ca.pem")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(Path(directory) / "rsa.pem", Path(directory) / "rsa.key")
    for ctx in (client_ctx, server_ctx):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    client, server = ssl_pair(client_ctx, server_ctx)
    cipher = client.obj.cipher()
    if cipher is None or cipher[0] != suite_name:
        raise SystemExit(f"ssl negotiated {cipher}, not {suite_name}")
    start = time.thread_time()
    ssl_bulk(client, server, int(total))
    print(int(total) / (time.thread_time() - start) / 1e6)
    return 0


# --- tlslite-ng over a socketpair (it has no memory interface) -----------------------------


class TlslitePeer:
    def __init__(self, cert_path: Path, key_path: Path, cipher: str = "aes128gcm") -> None:
        # bench/ holds an http.py that would shadow the standard library's http,
        # which tlslite imports; run as a script, bench/ is first on sys.path.
        here = str(Path(__file__).resolve().parent)
        sys.path[:] = [entry for entry in sys.path if str(Path(entry or ".").resolve()) != here]
        from tlslite.api import HandshakeSettings, X509CertChain, parsePEMKey

        self.chain = X509CertChain()
        self.chain.parsePemList(cert_path.read_text())
        self.key = parsePEMKey(key_path.read_text(), private=True)
        self.settings = HandshakeSettings()
        self.settings.minVersion = self.settings.maxVersion = (3, 4)
        self.settings.cipherNames = [cipher]
        # X25519 like the other rows (with kyber-py installed tlslite would pick ML-KEM).
        self.settings.eccCurves = ["x25519"]
        self.settings.keyShares = ["x25519"]

    def pair(self) -> tuple[Any, Any, socket.socket, socket.socket]:
        from tlslite.api import TLSConnection

        a, b = socket.socketpair()
        server = TLSConnection(b)
        thread = threading.Thread(
            target=server.handshakeServer,
            kwargs={"certChain": self.chain, "privateKey": self.key, "settings": self.settings},
        )
        thread.start()
        client = TLSConnection(a)
        client.handshakeClientCert(settings=self.settings)
        thread.join()
        return client, server, a, b

    def handshake(self) -> None:
        _, _, a, b = self.pair()
        a.close()
        b.close()

    def bulk(self, total: int) -> float:
        client, server, a, b = self.pair()
        chunk = bytes(16384)

        def reader() -> None:
            got = 0
            while got < total:
                got += len(server.read(max=65536))

        thread = threading.Thread(target=reader)
        start = time.perf_counter()
        thread.start()
        for _ in range(total // len(chunk)):
            client.write(chunk)
        thread.join()
        elapsed = time.perf_counter() - start
        a.close()
        b.close()
        return total / elapsed / 1e6


# --- over loopback TCP with asyncio (both implementations on one event loop) -----------------


async def loopback_handshakes(
    seconds: float,
    looming: tuple[TlsConfig, TlsConfig] | None,
    ssl_ctx: tuple[ssl.SSLContext, ssl.SSLContext] | None,
) -> float:
    handled = [0]

    async def looming_handler(flow: TlsFlow) -> None:
        await flow.read()
        handled[0] += 1

    async def ssl_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()
        handled[0] += 1

    if looming is not None:
        server = await start_server(looming_handler, "127.0.0.1", 0, looming[1])
    else:
        assert ssl_ctx is not None
        server = await asyncio.start_server(ssl_handler, "127.0.0.1", 0, ssl=ssl_ctx[1])
    port = server.sockets[0].getsockname()[1]
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if looming is not None:
            flow = await open_connection("127.0.0.1", port, looming[0], server_name="localhost")
            await flow.close()
        else:
            assert ssl_ctx is not None
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ssl_ctx[0], server_hostname="localhost"
            )
            writer.close()
            await writer.wait_closed()
        count += 1
    elapsed = time.perf_counter() - start
    # Let the server side of the last connections finish before the loop ends.
    for _ in range(10_000):
        if handled[0] >= count:
            break
        await asyncio.sleep(0.001)
    server.close()
    await server.wait_closed()
    return count / elapsed


async def loopback_bulk(
    total: int,
    looming: tuple[TlsConfig, TlsConfig] | None,
    ssl_ctx: tuple[ssl.SSLContext, ssl.SSLContext] | None,
) -> float:
    done = asyncio.Event()
    chunk = bytes(16384)

    async def looming_handler(flow: TlsFlow) -> None:
        got = 0
        while got < total:
            got += len(await flow.read())
        done.set()

    async def ssl_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = 0
        while got < total:
            got += len(await reader.read(1 << 16))
        done.set()
        writer.close()

    if looming is not None:
        server = await start_server(looming_handler, "127.0.0.1", 0, looming[1])
    else:
        assert ssl_ctx is not None
        server = await asyncio.start_server(ssl_handler, "127.0.0.1", 0, ssl=ssl_ctx[1])
    port = server.sockets[0].getsockname()[1]
    if looming is not None:
        flow = await open_connection("127.0.0.1", port, looming[0], server_name="localhost")
        start = time.perf_counter()
        for _ in range(total // len(chunk)):
            await flow.write(chunk)
        await done.wait()
        elapsed = time.perf_counter() - start
        await flow.close()
        await asyncio.sleep(0.01)  # the server's close of this one connection
    else:
        assert ssl_ctx is not None
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ssl_ctx[0], server_hostname="localhost"
        )
        start = time.perf_counter()
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        await done.wait()
        elapsed = time.perf_counter() - start
        writer.close()
        await asyncio.sleep(0.01)
    server.close()
    await server.wait_closed()
    return total / elapsed / 1e6


# --- measuring ---------------------------------------------------------------------------


def resumption_steps(
    lc: TlsConfig, ls: TlsConfig, sc: ssl.SSLContext, ss: ssl.SSLContext
) -> tuple[Callable[[], None], Callable[[], None]]:
    """One resumed handshake each for looming and ssl, their sessions primed."""
    lc.session_cache = ClientSessionCache()
    looming_pair(lc, ls)

    def looming_resume() -> None:
        client, _ = looming_pair(lc, ls)
        assert client.resumed

    first, _ = ssl_pair(sc, ss)
    session_box: list[ssl.SSLSession | None] = [first.obj.session]

    def ssl_resume() -> None:
        client, _ = ssl_pair(sc, ss, session_box[0])
        assert client.obj.session_reused
        session_box[0] = client.obj.session

    return looming_resume, ssl_resume


BULK_ROUNDS = 8


def rate(run_once: Callable[[], None], seconds: float) -> float:
    """Operations per second of ``run_once`` over about ``seconds``."""
    run_once()  # warm up
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        run_once()
        count += 1
    return count / (time.perf_counter() - start)


def interleaved_rates(
    first: Callable[[], None], second: Callable[[], None], seconds: float, slices: int = 10
) -> tuple[float, float]:
    """Rates of two operations measured in alternating slices of about ``seconds``
    in all, in CPU seconds of this thread (both ends of a connection run in it),
    so time the scheduler gives to other processes counts for neither."""
    first()
    second()
    counts, elapsed = [0, 0], [0.0, 0.0]
    for _ in range(slices):
        for index, run_once in enumerate((first, second)):
            start = time.thread_time()
            while time.thread_time() - start < seconds / slices:
                run_once()
                counts[index] += 1
            elapsed[index] += time.thread_time() - start
    return counts[0] / elapsed[0], counts[1] / elapsed[1]


def library_versions() -> dict[str, str]:
    """Which OpenSSL each side runs on: looming through cryptography, ssl its own."""
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend

    return {
        "looming uses": f"cryptography {cryptography.__version__} with "
        f"{backend.openssl_version_text()}",
        "Python ssl uses": f"{ssl.OPENSSL_VERSION} (Python {sys.version.split()[0]})",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short measurements (a smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--bulk-only", action="store_true", help="only the in-memory bulk transfers"
    )
    parser.add_argument(
        "--ssl-bulk13", nargs=3, metavar=("SUITE", "BYTES", "DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.ssl_bulk13:
        return ssl_bulk13_child(*args.ssl_bulk13)
    directory = Path(tempfile.mkdtemp(prefix="looming-bench-tls-"))
    try:
        return measure(args, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


CERT_TYPES = [
    ("ECDSA P-256", "p256"),
    ("RSA-2048", "rsa"),
    ("RSA-PSS-2048", "rsa-pss"),
    ("Ed25519", "ed25519"),
]
BULK_CASES = [
    ("bulk TLS 1.3 AES-128-GCM, 16 KB records", TLS13, CipherSuite.TLS_AES_128_GCM_SHA256, None),
    (
        "bulk TLS 1.3 ChaCha20-Poly1305, 16 KB records",
        TLS13,
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
        None,
    ),
    (
        "bulk TLS 1.2 ECDHE-RSA-AES128-GCM, 16 KB",
        TLS12,
        CipherSuite.ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256",
    ),
]


def full_handshake(lc: TlsConfig, ls: TlsConfig) -> Callable[[], None]:
    """One full looming handshake a call."""

    def run_once() -> None:
        looming_pair(lc, ls)

    return run_once


def ssl_full_handshake(sc: ssl.SSLContext, ss: ssl.SSLContext) -> Callable[[], None]:
    """One full ssl handshake a call."""

    def run_once() -> None:
        ssl_pair(sc, ss)

    return run_once


class Measurement:
    """One benchmark run: the PKI, the configurations and the rows measured so far."""

    def __init__(self, args: argparse.Namespace, directory: Path) -> None:
        self.args = args
        self.directory = directory
        self.seconds = 0.3 if args.quick else 2.0
        self.bulk_bytes = (16 if args.quick else 256) << 20
        self.tlslite_bytes = (128 if args.quick else 512) << 10
        self.pki = make_pki(directory)
        self.trust = TrustStore.from_pem_file(directory / "ca.pem")
        self.rows: list[dict[str, object]] = []

    def looming_configs(
        self, leaf: str, version: int, suite: int | None = None
    ) -> tuple[TlsConfig, TlsConfig]:
        suites = (
            [suite]
            if suite is not None
            else list(TlsConfig(random=UnixRandom(), clock=UnixClock()).cipher_suites)
        )
        client = TlsConfig(
            trust=self.trust,
            versions=[version],
            cipher_suites=suites,
            random=UnixRandom(),
            clock=UnixClock(),
        )
        server = TlsConfig(
            certificates=[self.pki[leaf][2]],
            versions=[version],
            random=UnixRandom(),
            clock=UnixClock(),
        )
        return client, server

    def ssl_contexts(
        self, leaf: str, version: int, cipher12: str | None = None
    ) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        tls_version = ssl.TLSVersion.TLSv1_3 if version == TLS13 else ssl.TLSVersion.TLSv1_2
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(self.directory / "ca.pem")
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(self.pki[leaf][0], self.pki[leaf][1])
        server.num_tickets = 1  # as many as looming's server sends by default
        for ctx in (client, server):
            ctx.minimum_version = ctx.maximum_version = tls_version
            if cipher12:
                ctx.set_ciphers(cipher12)
        return client, server

    def record(
        self,
        name: str,
        unit: str,
        looming_value: float,
        ssl_value: float,
        tlslite_value: float | None = None,
    ) -> None:
        ratio = looming_value / ssl_value if ssl_value else 0.0
        row: dict[str, object] = {
            "case": name,
            "unit": unit,
            "looming": round(looming_value, 1),
            "ssl": round(ssl_value, 1),
            "looming/ssl": round(ratio, 3),
        }
        extra = ""
        if tlslite_value is not None:
            lite_ratio = looming_value / tlslite_value if tlslite_value else 0.0
            row["tlslite"] = round(tlslite_value, 2)
            row["looming/tlslite"] = round(lite_ratio, 1)
            extra = f"  tlslite {tlslite_value:8.2f} (looming/tlslite {lite_ratio:.1f})"
        self.rows.append(row)
        print(
            f"  {name:<46} looming {looming_value:8.1f}  ssl {ssl_value:8.1f} {unit:<13} looming/ssl {ratio:5.2f}{extra}",
            flush=True,
        )

    def handshake_rows(self) -> None:
        """Full and resumed TLS 1.3 handshakes for each certificate type, then TLS 1.2."""
        for label, leaf in CERT_TYPES:
            print(f"measuring full and resumed handshakes TLS 1.3 {label} ...", flush=True)
            lc, ls = self.looming_configs(leaf, TLS13)
            sc, ss = self.ssl_contexts(leaf, TLS13)
            looming_full, ssl_full = interleaved_rates(
                full_handshake(lc, ls), ssl_full_handshake(sc, ss), self.seconds
            )
            tlslite_rate = None
            if leaf == "p256":
                lite = TlslitePeer(self.pki[leaf][0], self.pki[leaf][1])
                tlslite_rate = rate(lite.handshake, self.seconds / 2)
            self.record(f"full handshake TLS 1.3 {label}", "handshakes/s", looming_full,
                        ssl_full, tlslite_rate)  # fmt: skip
            looming_resume, ssl_resume = resumption_steps(lc, ls, sc, ss)
            self.record(
                f"resumed handshake TLS 1.3 {label}",
                "handshakes/s",
                *interleaved_rates(looming_resume, ssl_resume, self.seconds),
            )
        print("measuring full handshake TLS 1.2 ECDHE-RSA-AES128-GCM ...", flush=True)
        lc, ls = self.looming_configs("rsa", TLS12, CipherSuite.ECDHE_RSA_WITH_AES_128_GCM_SHA256)
        sc, ss = self.ssl_contexts("rsa", TLS12, "ECDHE-RSA-AES128-GCM-SHA256")
        self.record(
            "full handshake TLS 1.2 ECDHE-RSA-AES128-GCM",
            "handshakes/s",
            *interleaved_rates(full_handshake(lc, ls), ssl_full_handshake(sc, ss), self.seconds),
        )

    def resumption_rows(self) -> None:
        self.resumption_row(TLS13, "TLS 1.3 ECDSA psk_ke (opt-in)", PskKeyExchangeMode.PSK_KE)
        self.resumption_row(TLS12, "TLS 1.2 ECDHE-ECDSA", None)

    def resumption_row(self, version: int, label: str, mode: int | None) -> None:
        print(f"measuring resumed handshake {label} ...", flush=True)
        lc, ls = self.looming_configs("p256", version)
        lc.session_cache = ClientSessionCache()
        if mode is not None:
            lc.psk_key_exchange_modes = ls.psk_key_exchange_modes = (mode,)
        looming_pair(lc, ls)

        def looming_resume() -> None:
            client, _ = looming_pair(lc, ls)
            assert client.resumed and client.resumption_mode == mode

        sc, ss = self.ssl_contexts("p256", version)
        # No psk_ke for ssl: with SSL_OP_ALLOW_NO_DHE_KEX on both sides an OpenSSL
        # client still sends a key share and an OpenSSL server then prefers
        # psk_dhe_ke, so ssl's figure in the psk_ke row is its psk_dhe_ke.
        first, _ = ssl_pair(sc, ss)
        session_box: list[ssl.SSLSession | None] = [first.obj.session]

        def ssl_resume() -> None:
            client, _ = ssl_pair(sc, ss, session_box[0])
            assert client.obj.session_reused
            session_box[0] = client.obj.session

        if version != TLS13:
            looming_rate, ssl_rate = interleaved_rates(looming_resume, ssl_resume, self.seconds)
            self.record(f"resumed handshake {label}", "handshakes/s", looming_rate, ssl_rate)
            return
        self.resumed_against_full(label, mode, looming_resume, ssl_resume)

    def resumed_against_full(
        self,
        label: str,
        mode: int | None,
        looming_resume: Callable[[], None],
        ssl_resume: Callable[[], None],
    ) -> None:
        """A TLS 1.3 resumption row, with each side's resumed/full ratio."""
        full_lc, full_ls = self.looming_configs("p256", TLS13)
        full_sc, full_ss = self.ssl_contexts("p256", TLS13)
        # Full handshakes are measured again, interleaved with the resumed ones, so
        # the resumed/full ratio of each implementation sees the same machine load.
        looming_full, looming_rate = interleaved_rates(
            full_handshake(full_lc, full_ls), looming_resume, self.seconds
        )
        ssl_full, ssl_rate = interleaved_rates(
            ssl_full_handshake(full_sc, full_ss), ssl_resume, self.seconds
        )
        self.record(f"resumed handshake {label}", "handshakes/s", looming_rate, ssl_rate)
        looming_gain, ssl_gain = looming_rate / looming_full, ssl_rate / ssl_full
        self.rows[-1]["looming resumed/full"] = round(looming_gain, 2)
        self.rows[-1]["ssl resumed/full"] = round(ssl_gain, 2)
        if mode == PskKeyExchangeMode.PSK_KE:
            self.rows[-1]["ssl mode"] = "psk_dhe_ke (OpenSSL does not resume by psk_ke with itself)"
            print("    (ssl resumes by psk_dhe_ke here: OpenSSL prefers it)", flush=True)
        print(
            f"    resumed/full, each against its own full ECDSA P-256 handshake measured alongside"
            f" (looming {looming_full:.0f}/s, ssl {ssl_full:.0f}/s):"
            f" looming {looming_gain:.2f}x  ssl {ssl_gain:.2f}x",
            flush=True,
        )

    def bulk_rows(self) -> None:
        print(
            f"  bulk rows: each side's best of {BULK_ROUNDS} ABAB rounds, MB per CPU second"
            " of the thread running both ends",
            flush=True,
        )
        for name, version, suite, cipher12 in BULK_CASES:
            print(f"measuring {name} ...", flush=True)
            looming_mbs, ssl_mbs = self.bulk_rounds(version, suite, cipher12)
            tlslite_mbs = None
            if version == TLS13 and suite == CipherSuite.TLS_AES_128_GCM_SHA256:
                lite = TlslitePeer(self.pki["rsa"][0], self.pki["rsa"][1])
                tlslite_mbs = lite.bulk(self.tlslite_bytes)
            self.record(name, "MB/s", looming_mbs, ssl_mbs, tlslite_mbs)

    def bulk_rounds(
        self, version: int, suite: CipherSuite, cipher12: str | None
    ) -> tuple[float, float]:
        """Each side's best MB/s over BULK_ROUNDS alternating rounds."""
        lc, ls = self.looming_configs("rsa", version, suite)
        # Each side's best round, timed by the CPU time of the thread doing the
        # work (both ends run in one thread): on a shared machine a round that
        # meets someone else's burst says nothing about the TLS implementation.
        looming_mbs = ssl_mbs = 0.0
        share = self.bulk_bytes // BULK_ROUNDS
        for _ in range(BULK_ROUNDS):  # ABAB: looming, ssl, looming, ssl, ...
            client, server = looming_pair(lc, ls)
            start = time.thread_time()
            looming_bulk(client, server, share)
            looming_mbs = max(looming_mbs, share / 1e6 / (time.thread_time() - start))
            if version == TLS13:
                ssl_mbs = max(ssl_mbs, ssl_bulk13_in_child(suite.name, share, self.directory))
                continue
            sc, ss = self.ssl_contexts("rsa", version, cipher12)
            ssl_client, ssl_server = ssl_pair(sc, ss)
            start = time.thread_time()
            ssl_bulk(ssl_client, ssl_server, share)
            ssl_mbs = max(ssl_mbs, share / 1e6 / (time.thread_time() - start))
        return looming_mbs, ssl_mbs

    def loopback_rows(self) -> None:
        print("measuring over loopback TCP (asyncio) ...", flush=True)
        lc, ls = self.looming_configs("p256", TLS13, CipherSuite.TLS_AES_128_GCM_SHA256)
        sc, ss = self.ssl_contexts("p256", TLS13)
        self.record(
            "loopback handshake TLS 1.3 ECDSA (asyncio)",
            "handshakes/s",
            asyncio.run(loopback_handshakes(self.seconds, (lc, ls), None)),
            asyncio.run(loopback_handshakes(self.seconds, None, (sc, ss))),
        )
        self.record(
            "loopback bulk TLS 1.3 AES-GCM (asyncio)",
            "MB/s",
            asyncio.run(loopback_bulk(self.bulk_bytes // 4, (lc, ls), None)),
            asyncio.run(loopback_bulk(self.bulk_bytes // 4, None, (sc, ss))),
        )


def measure(args: argparse.Namespace, directory: Path) -> int:
    run = Measurement(args, directory)
    print(
        f"TLS benchmark ({'quick' if args.quick else 'full'}): looming engine vs Python ssl, in memory",
        flush=True,
    )
    versions = library_versions()
    for name, version in versions.items():
        print(f"  {name}: {version}", flush=True)
    if not args.bulk_only:
        run.handshake_rows()
        run.resumption_rows()
    run.bulk_rows()
    if not args.bulk_only:
        run.loopback_rows()
    if args.json:
        Path(args.json).write_text(
            json.dumps({"versions": versions, "quick": args.quick, "results": run.rows}, indent=2)
        )
        print(f"wrote {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
