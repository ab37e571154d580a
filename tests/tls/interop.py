"""The four TLS peers looming is tested against, behind one interface.

A :class:`Peer` runs as a server (looming connects to it) or as a client
(it connects to a looming :class:`EchoServer`), asked for a version, cipher
suite and group by a :class:`Spec`. One implementation per program:
``openssl s_server``/``s_client``, ``gnutls-serv``/``gnutls-cli``, Python's
``ssl`` module (OpenSSL underneath, in a thread) and tlslite-ng (pure
Python, in a thread). Each knows how to say what it negotiated and checks
that against the spec (``check_server``, ``check_client``), so the tests in
``test_interop.py`` are written once for all four.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tlslite.api import HandshakeSettings, SessionCache, TLSConnection, X509CertChain, parsePEMKey

from looming.tls import TLS12, TLS13, CipherSuite, NamedGroup, TlsConfig
from looming.tls.flow import TlsFlow, open_connection

from .peers import ServerProcess, free_port, run, server_process
from .pki import Pki

SUITES13 = [
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
]
# Every TLS 1.2 suite with the certificate it needs, and its OpenSSL name.
SUITES12 = {
    CipherSuite.ECDHE_RSA_WITH_AES_128_GCM_SHA256: ("rsa", "ECDHE-RSA-AES128-GCM-SHA256"),
    CipherSuite.ECDHE_RSA_WITH_AES_256_GCM_SHA384: ("rsa", "ECDHE-RSA-AES256-GCM-SHA384"),
    CipherSuite.ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: ("rsa", "ECDHE-RSA-CHACHA20-POLY1305"),
    CipherSuite.ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: ("p256", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    CipherSuite.ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: ("p256", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    CipherSuite.ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: (
        "p256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ),
}
GROUPS = [NamedGroup.X25519, NamedGroup.SECP256R1, NamedGroup.SECP384R1]
LEAVES = ["rsa", "p256", "p384", "ed25519"]
LINE = b"hello\n"


@dataclass(frozen=True)
class Spec:
    """What a peer is asked for; ``None`` leaves the peer's default."""

    version: int | None = None
    suite: CipherSuite | None = None
    group: NamedGroup | None = None
    leaf: str = "p256"  # the certificate of a peer server
    extra: tuple[str, ...] = ()  # more arguments for a program peer
    connections: int = 1  # how many connections a peer server takes


async def looming_client(
    port: int, config: TlsConfig, line: bytes = b"hi\n"
) -> tuple[TlsFlow, bytes]:
    """A looming client sending ``line`` and reading until the server's close_notify."""
    flow = await open_connection("127.0.0.1", port, config, server_name="localhost")
    await flow.write(line)
    reply = await read_reply(flow, until_eof=True)
    await flow.close()
    return flow, reply


def tls12_groups(leaf: str, group: NamedGroup) -> list[NamedGroup]:
    """RFC 8422: a TLS 1.2 client lists the curve of an ECDSA certificate (P-256 here)."""
    return (
        [group] if leaf == "rsa" or group == NamedGroup.SECP256R1 else [group, NamedGroup.SECP256R1]
    )


async def read_reply(flow: TlsFlow, until_eof: bool) -> bytes:
    """Read one line, or everything up to the peer's close_notify."""
    reply = b""
    while until_eof or not reply.endswith(b"\n"):
        chunk = await flow.read()
        if not chunk:
            assert until_eof, "server closed before replying"
            break
        reply += chunk
    return reply


class PeerServer(Protocol):
    port: int
    output: str  # what the peer printed or recorded, complete after close()
    closes_after_reply: bool

    def reply(self, line: bytes) -> bytes: ...

    async def close(self) -> None: ...


@dataclass
class ClientRun:
    """What a peer client did against a looming server."""

    ok: bool
    output: str  # what it printed, or a summary of what it recorded
    received: bytes = b""
    details: dict[str, Any] = field(default_factory=dict)


class Peer(Protocol):
    """A TLS implementation written elsewhere, as a server and as a client."""

    name: str
    suites13: Sequence[CipherSuite]
    suites12: Sequence[CipherSuite]
    groups: Sequence[NamedGroup | None]  # the groups the matrices ask it for
    resumption_versions: Sequence[int]  # the versions it resumes sessions in as a server

    def serve(self, pki: Pki, spec: Spec) -> AbstractAsyncContextManager[PeerServer]:
        """Run it as a server for ``spec``, listening once the block is entered."""
        ...

    async def connect(self, pki: Pki, port: int, spec: Spec) -> ClientRun:
        """Run it as a client of ``port`` for ``spec``: send a line, read the echo."""
        ...

    def check_server(self, server: PeerServer, spec: Spec) -> None:
        """Assert that what the closed server reports negotiating is ``spec``."""
        ...

    def check_client(self, run: ClientRun, spec: Spec) -> None:
        """Assert that the client finished cleanly, got the echo and reports ``spec``."""
        ...

    def check_resumed_server(self, server: PeerServer) -> None:
        """Assert that the closed server reports a full handshake, then a resumed one."""
        ...

    async def connect_twice(self, pki: Pki, port: int, version: int) -> list[ClientRun]:
        """Connect at ``version``, then again offering the first connection's session."""
        ...

    def check_resumed_client(self, runs: list[ClientRun]) -> None:
        """Assert that the client reports a full handshake, then a resumed one."""
        ...


# --- OpenSSL: s_server -rev and s_client --------------------------------------------------

OPENSSL_GROUP = {
    NamedGroup.X25519: "X25519",
    NamedGroup.SECP256R1: "P-256",
    NamedGroup.SECP384R1: "P-384",
}
S_CLIENT_TEMP_KEY = {
    NamedGroup.X25519: "X25519",
    NamedGroup.SECP256R1: "prime256v1",
    NamedGroup.SECP384R1: "secp384r1",
}


def openssl_flags(spec: Spec, client: bool = False) -> list[str]:
    args = []
    if spec.version is not None:
        args.append("-tls1_3" if spec.version == TLS13 else "-tls1_2")
    if spec.suite is not None and spec.version == TLS12:
        args += ["-cipher", SUITES12[spec.suite][1]]
    elif spec.suite is not None:
        args += ["-ciphersuites", spec.suite.name]
    if spec.group is not None:
        groups = [spec.group]
        if client and spec.version == TLS12 and spec.suite is not None:
            groups = tls12_groups(SUITES12[spec.suite][0], spec.group)
        args += ["-groups", ":".join(OPENSSL_GROUP[g] for g in groups)]
    return [*args, *spec.extra]


def s_server_args(pki: Pki, leaf: str, port: int, *extra: str) -> list[str]:
    cert = pki.leaves[leaf]
    return [
        "openssl",
        "s_server",
        "-accept",
        str(port),
        "-cert",
        str(cert.cert_path),
        "-key",
        str(cert.key_path),
        "-naccept",
        "1",
        *extra,
    ]


def s_client_base(pki: Pki) -> list[str]:
    return ["-CAfile", str(pki.ca_path), "-verify_return_error", "-servername", "localhost"]


async def s_client(port: int, args: Sequence[str], stdin: bytes = LINE) -> tuple[int, str]:
    rc, out, err = await run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-ign_eof", *args], stdin
    )
    return rc, out + err


@dataclass
class ProgramServer:
    """A server program on ``port``; ``output`` is complete after ``close()``."""

    port: int
    finish: Callable[[], Awaitable[str]]
    reverses: bool
    closes_after_reply: bool = False
    output: str = ""

    def reply(self, line: bytes) -> bytes:
        return line[:-1][::-1] + b"\n" if self.reverses else line

    async def close(self) -> None:
        self.output = await self.finish()


class OpenSsl:
    name = "openssl"
    suites13: Sequence[CipherSuite] = SUITES13
    suites12: Sequence[CipherSuite] = list(SUITES12)
    groups: Sequence[NamedGroup | None] = GROUPS
    resumption_versions: Sequence[int] = (TLS13, TLS12)

    @asynccontextmanager
    async def serve(self, pki: Pki, spec: Spec) -> AsyncIterator[PeerServer]:
        port = free_port()
        args = s_server_args(pki, spec.leaf, port, "-rev", *openssl_flags(spec))
        args += ["-naccept", str(spec.connections)]  # the last -naccept counts
        async with server_process(args, port, "ACCEPT") as peer:
            yield ProgramServer(port, peer.finish, reverses=True)

    async def connect(self, pki: Pki, port: int, spec: Spec) -> ClientRun:
        rc, out = await s_client(port, [*s_client_base(pki), *openssl_flags(spec, client=True)])
        return ClientRun(rc == 0, out)

    def check_server(self, server: PeerServer, spec: Spec) -> None:
        out = server.output
        if spec.version is not None:
            assert f"Protocol version: TLSv1.{3 if spec.version == TLS13 else 2}" in out, out
        if spec.suite is not None:
            name = spec.suite.name if spec.version == TLS13 else SUITES12[spec.suite][1]
            assert f"Ciphersuite: {name}" in out, out

    def check_resumed_server(self, server: PeerServer) -> None:
        pass  # s_server does not say which session it resumed; the looming client does

    async def connect_twice(self, pki: Pki, port: int, version: int) -> list[ClientRun]:
        base = [*s_client_base(pki), *openssl_flags(Spec(version))]
        with tempfile.TemporaryDirectory() as folder:
            session = str(Path(folder) / "session.pem")
            first = await s_client(port, [*base, "-sess_out", session], b"one\n")
            second = await s_client(port, [*base, "-sess_in", session], b"two\n")
        return [ClientRun(rc == 0, out) for rc, out in (first, second)]

    def check_resumed_client(self, runs: list[ClientRun]) -> None:
        first, second = (run.output for run in runs)
        assert "New," in first and "echo:one" in first, first
        assert "Reused," in second and "echo:two" in second, second

    def check_client(self, run: ClientRun, spec: Spec) -> None:
        out = run.output
        assert run.ok, out
        assert "echo:hello" in out and "Verify return code: 0 (ok)" in out, out
        if spec.version == TLS13:
            assert "TLSv1.3" in out
        if spec.version == TLS12:
            assert "Extended master secret: yes" in out
            assert "Secure Renegotiation IS supported" in out
        if spec.suite is not None:
            name = spec.suite.name if spec.version == TLS13 else SUITES12[spec.suite][1]
            assert f"Cipher is {name}" in out
        if spec.group is not None:
            assert S_CLIENT_TEMP_KEY[spec.group] in out


# --- GnuTLS: gnutls-serv --echo and gnutls-cli ----------------------------------------------

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


def spec_priority(spec: Spec, client: bool = False) -> list[str]:
    if spec.version is None and spec.group is None and spec.suite is None:
        return []
    extra = ""
    if client and spec.version == TLS12 and spec.suite is not None and spec.group is not None:
        extra = "" if len(tls12_groups(SUITES12[spec.suite][0], spec.group)) == 1 else "SECP256R1"
    return ["--priority", priority(spec.version, spec.group, spec.suite, extra)]


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


# gnutls-cli --resume takes the TLS 1.3 ticket it has after waiting one
# estimated round trip plus 60 ms for it (gnutls_session_get_data2); a server
# slower than that on a loaded machine got a full handshake the second time.
# --waitresumption waits for the ticket itself.
GNUTLS_RESUME = ["--resume", "--waitresumption"]


def gnutls_cli_base(pki: Pki) -> list[str]:
    return [
        "--x509cafile",
        str(pki.ca_path),
        "--sni-hostname",
        "localhost",
        "--verify-hostname",
        "localhost",
    ]


async def gnutls_cli(port: int, args: Sequence[str], stdin: bytes = LINE) -> tuple[int, str]:
    rc, out, err = await run(["gnutls-cli", "-p", str(port), "127.0.0.1", *args], stdin)
    return rc, out + err


class GnuTls:
    name = "gnutls"
    suites13: Sequence[CipherSuite] = SUITES13
    suites12: Sequence[CipherSuite] = list(SUITES12)
    groups: Sequence[NamedGroup | None] = GROUPS
    resumption_versions: Sequence[int] = (TLS13, TLS12)

    @asynccontextmanager
    async def serve(self, pki: Pki, spec: Spec) -> AsyncIterator[PeerServer]:
        port = free_port()
        args = gnutls_serv_args(pki, spec.leaf, port, *spec_priority(spec), *spec.extra)
        async with server_process(args, port, "IPv4") as peer:
            # gnutls-serv serves until it is killed: its output is what it printed so far.
            yield ProgramServer(port, _output_so_far(peer), reverses=False)

    async def connect(self, pki: Pki, port: int, spec: Spec) -> ClientRun:
        args = [*gnutls_cli_base(pki), *spec_priority(spec, client=True), *spec.extra]
        rc, out = await gnutls_cli(port, args)
        return ClientRun(rc == 0, out)

    def check_server(self, server: PeerServer, spec: Spec) -> None:
        pass  # gnutls-serv --echo says nothing of what it negotiated; the flow does

    def check_resumed_server(self, server: PeerServer) -> None:
        pass  # nor of what it resumed

    async def connect_twice(self, pki: Pki, port: int, version: int) -> list[ClientRun]:
        args = [*gnutls_cli_base(pki), "--priority", priority(version), *GNUTLS_RESUME]
        rc, out = await gnutls_cli(port, args)  # both connections, one run
        return [ClientRun(rc == 0, out)]

    def check_resumed_client(self, runs: list[ClientRun]) -> None:
        (run,) = runs
        assert run.ok, run.output
        assert "This is a resumed session" in run.output, run.output

    def check_client(self, run: ClientRun, spec: Spec) -> None:
        out = run.output
        assert run.ok, out
        assert "echo:hello" in out and "The certificate is trusted" in out, out
        if spec.version is not None:
            assert f"(TLS1.{3 if spec.version == TLS13 else 2}" in out
        if spec.version == TLS12:
            assert "extended master secret, safe renegotiation" in out
        if spec.group is not None:
            assert f"(ECDHE-{GNUTLS_GROUP[spec.group]})" in out
        if spec.suite is not None:
            assert f"({GNUTLS_CIPHER[spec.suite]})" in out


def _output_so_far(peer: ServerProcess) -> Callable[[], Awaitable[str]]:
    async def finish() -> str:
        return peer.output

    return finish


# --- Python's ssl module, blocking sockets in a thread ---------------------------------------

SSL_VERSION = {TLS13: ssl.TLSVersion.TLSv1_3, TLS12: ssl.TLSVersion.TLSv1_2}


@dataclass
class SslResult:
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    reused: bool = False
    peer_cert: dict[str, object] | None = None
    received: bytes = b""
    error: BaseException | None = None
    sessions: list[ssl.SSLSession] = field(default_factory=list)


class SslServer:
    """A Python ssl server thread that serves ``count`` connections, replying 'ssl:' + line."""

    closes_after_reply = True

    def __init__(self, context: ssl.SSLContext, count: int = 1) -> None:
        self.context = context
        self.count = count
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.results: list[SslResult] = []
        self.output = ""
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def reply(self, line: bytes) -> bytes:
        return b"ssl:" + line

    def _serve(self) -> None:
        self.listener.settimeout(20)
        for _ in range(self.count):
            result = SslResult()
            self.results.append(result)
            try:
                raw, _ = self.listener.accept()
                raw.settimeout(20)
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    result.version, result.cipher = conn.version(), conn.cipher()[0]  # type: ignore[index]
                    result.alpn = conn.selected_alpn_protocol()
                    result.reused = bool(conn.session_reused)
                    result.peer_cert = conn.getpeercert()  # type: ignore[assignment]
                    result.received = _recv_line(conn)
                    conn.sendall(b"ssl:" + result.received)
                    conn.unwrap()
            except (OSError, ssl.SSLError) as exc:
                result.error = exc
        self.listener.close()

    def __enter__(self) -> SslServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(30)

    async def close(self) -> None:
        await asyncio.to_thread(self.thread.join, 30)
        self.output = repr(self.results)


def _recv_line(conn: Any) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096) if isinstance(conn, ssl.SSLSocket) else conn.read()
        if not chunk:
            break
        data += chunk
    return bytes(data)


def server_context(pki: Pki, leaf: str, version: int | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.leaves[leaf].cert_path, pki.leaves[leaf].key_path)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = SSL_VERSION[version]
    return ctx


def client_context(pki: Pki, version: int | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca_path)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = SSL_VERSION[version]
    return ctx


def run_ssl_client(
    port: int, ctx: ssl.SSLContext, line: bytes, session: ssl.SSLSession | None = None
) -> SslResult:
    result = SslResult()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=20) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost", session=session) as conn,
        ):
            result.version, result.cipher = conn.version(), conn.cipher()[0]  # type: ignore[index]
            result.alpn = conn.selected_alpn_protocol()
            conn.sendall(line)
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
            result.received = data
            result.reused = bool(conn.session_reused)
            if conn.session is not None:
                result.sessions.append(conn.session)
    except (OSError, ssl.SSLError) as exc:
        result.error = exc
    return result


async def ssl_clients(port: int, ctx: ssl.SSLContext, count: int = 1) -> list[SslResult]:
    """``count`` connections sending "line <i>", each resuming the session of the one before."""
    results: list[SslResult] = []
    session = None
    for i in range(count):
        line = b"line %d\n" % i
        result = await asyncio.to_thread(run_ssl_client, port, ctx, line, session)
        results.append(result)
        session = result.sessions[-1] if result.sessions else None
    return results


class PythonSsl:
    name = "python-ssl"
    suites13: Sequence[CipherSuite] = SUITES13
    suites12: Sequence[CipherSuite] = list(SUITES12)
    groups: Sequence[NamedGroup | None] = GROUPS
    resumption_versions: Sequence[int] = (TLS13, TLS12)

    @asynccontextmanager
    async def serve(self, pki: Pki, spec: Spec) -> AsyncIterator[PeerServer]:
        ctx = server_context(pki, spec.leaf, spec.version if spec.version == TLS12 else None)
        if spec.version == TLS12 and spec.suite is not None:
            ctx.set_ciphers(SUITES12[spec.suite][1])
        with SslServer(ctx, spec.connections) as server:
            yield server

    async def connect(self, pki: Pki, port: int, spec: Spec) -> ClientRun:
        ctx = client_context(pki, spec.version)
        if spec.version == TLS12 and spec.suite is not None:
            ctx.set_ciphers(SUITES12[spec.suite][1])
        result = await asyncio.to_thread(run_ssl_client, port, ctx, LINE)
        details = {"version": result.version, "cipher": result.cipher}
        return ClientRun(result.error is None, repr(result), result.received, details)

    def check_server(self, server: PeerServer, spec: Spec) -> None:
        assert isinstance(server, SslServer)
        (result,) = server.results
        if spec.version is not None:
            assert result.version == f"TLSv1.{3 if spec.version == TLS13 else 2}", result
        if spec.suite is not None:
            name = spec.suite.name if spec.version == TLS13 else SUITES12[spec.suite][1]
            assert result.cipher == name, result

    def check_resumed_server(self, server: PeerServer) -> None:
        assert isinstance(server, SslServer)
        assert [r.reused for r in server.results] == [False, True], server.results

    async def connect_twice(self, pki: Pki, port: int, version: int) -> list[ClientRun]:
        results = await ssl_clients(port, client_context(pki, version), count=2)
        return [
            ClientRun(r.error is None, repr(r), r.received, {"reused": r.reused}) for r in results
        ]

    def check_resumed_client(self, runs: list[ClientRun]) -> None:
        assert [run.ok for run in runs] == [True, True], runs
        assert [run.details["reused"] for run in runs] == [False, True]

    def check_client(self, run: ClientRun, spec: Spec) -> None:
        assert run.ok, run.output
        assert run.received == b"echo:hello\n", run.output
        if spec.version is not None:
            assert run.details["version"] == f"TLSv1.{3 if spec.version == TLS13 else 2}"
        if spec.suite is not None:
            name = spec.suite.name if spec.version == TLS13 else SUITES12[spec.suite][1]
            assert run.details["cipher"] == name


# --- tlslite-ng, blocking sockets in a thread ------------------------------------------------

TLSLITE_CIPHER = {
    CipherSuite.TLS_AES_128_GCM_SHA256: "aes128gcm",
    CipherSuite.TLS_AES_256_GCM_SHA384: "aes256gcm",
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: "chacha20-poly1305",
    CipherSuite.ECDHE_RSA_WITH_AES_128_GCM_SHA256: "aes128gcm",
    CipherSuite.ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: "aes256gcm",
    CipherSuite.ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: "chacha20-poly1305",
}
TLSLITE_GROUP = {
    NamedGroup.X25519: "x25519",
    NamedGroup.SECP256R1: "secp256r1",
    NamedGroup.SECP384R1: "secp384r1",
}
TLSLITE_VERSION = {TLS13: (3, 4), TLS12: (3, 3)}


def settings(
    version: int | None = None,
    suite: CipherSuite | None = None,
    group: NamedGroup | None = None,
    **extra: Any,
) -> HandshakeSettings:
    s = HandshakeSettings()
    if version is not None:
        s.minVersion = s.maxVersion = TLSLITE_VERSION[version]
    if suite is not None:
        s.cipherNames = [TLSLITE_CIPHER[suite]]
    if group is not None:
        s.eccCurves = [TLSLITE_GROUP[group]]
        s.keyShares = [TLSLITE_GROUP[group]]
    for key, value in extra.items():
        setattr(s, key, value)
    return s


def load(pki: Pki, leaf: str) -> tuple[X509CertChain, Any]:
    chain = X509CertChain()
    chain.parsePemList(pki.leaves[leaf].cert_path.read_text())
    return chain, parsePEMKey(pki.leaves[leaf].key_path.read_text(), private=True)


class TlsliteServer:
    """A tlslite-ng server thread for ``count`` connections, replying 'lite:' + line."""

    closes_after_reply = True

    def __init__(
        self,
        pki: Pki,
        leaf: str,
        hs_settings: HandshakeSettings,
        count: int = 1,
        **handshake_args: Any,
    ) -> None:
        self.chain, self.key = load(pki, leaf)
        self.settings = hs_settings
        self.count = count
        self.args = handshake_args
        self.cache = SessionCache()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.results: list[dict[str, Any]] = []
        self.output = ""
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def reply(self, line: bytes) -> bytes:
        return b"lite:" + line

    def _serve(self) -> None:
        self.listener.settimeout(30)
        for _ in range(self.count):
            result: dict[str, Any] = {}
            self.results.append(result)
            try:
                raw, _ = self.listener.accept()
                raw.settimeout(30)
                self._serve_one(TLSConnection(raw), result)
            except Exception as exc:  # recorded and asserted by the test
                result["error"] = exc
        self.listener.close()

    def _serve_one(self, conn: Any, result: dict[str, Any]) -> None:
        conn.handshakeServer(
            certChain=self.chain,
            privateKey=self.key,
            settings=self.settings,
            sessionCache=self.cache,
            **self.args,
        )
        result["version"] = conn.version
        result["cipher"] = conn.getCipherName()
        result["resumed"] = conn.resumed
        result["alpn"] = conn.session.appProto
        result["client_cert"] = conn.session.clientCertChain
        conn.write(b"lite:" + _recv_line(conn))
        conn.close()

    def __enter__(self) -> TlsliteServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(60)

    async def close(self) -> None:
        await asyncio.to_thread(self.thread.join, 60)
        self.output = repr(self.results)


def tlslite_client(
    port: int, hs_settings: HandshakeSettings, session: Any = None, **args: Any
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            conn = TLSConnection(raw)
            conn.handshakeClientCert(
                settings=hs_settings, serverName="localhost", session=session, **args
            )
            result["version"] = conn.version
            result["cipher"] = conn.getCipherName()
            result["resumed"] = conn.resumed
            result["alpn"] = conn.session.appProto
            result["session"] = conn.session
            conn.write(LINE)
            data = b""
            while chunk := conn.read():
                data += chunk
            result["received"] = data
            conn.close()
    except Exception as exc:  # recorded and asserted by the test
        result["error"] = exc
    return result


async def tlslite_clients(
    port: int, hs_settings: HandshakeSettings, count: int = 1, **args: Any
) -> list[dict[str, Any]]:
    """``count`` connections, each resuming the session of the one before."""
    results: list[dict[str, Any]] = []
    session = None
    for _ in range(count):
        result = await asyncio.to_thread(tlslite_client, port, hs_settings, session, **args)
        results.append(result)
        session = result.get("session")
    return results


class Tlslite:
    name = "tlslite"
    suites13: Sequence[CipherSuite] = SUITES13
    suites12: Sequence[CipherSuite] = [  # the TLS 1.2 suites tlslite-ng has
        CipherSuite.ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite.ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite.ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
    groups: Sequence[NamedGroup | None] = [None]  # its default groups; see test_tlslite.py
    resumption_versions: Sequence[int] = (TLS13,)  # its TLS 1.2 server has session ids only

    @asynccontextmanager
    async def serve(self, pki: Pki, spec: Spec) -> AsyncIterator[PeerServer]:
        tickets = {"ticketKeys": [bytes(range(32))]} if spec.connections > 1 else {}
        hs = settings(spec.version, spec.suite, spec.group, **tickets)
        with TlsliteServer(pki, spec.leaf, hs, spec.connections) as server:
            yield server

    async def connect(self, pki: Pki, port: int, spec: Spec) -> ClientRun:
        hs = settings(spec.version, spec.suite, spec.group)
        result = await asyncio.to_thread(tlslite_client, port, hs)
        ok = "error" not in result
        return ClientRun(ok, repr(result.get("error")), result.get("received", b""), result)

    def check_server(self, server: PeerServer, spec: Spec) -> None:
        assert isinstance(server, TlsliteServer)
        (result,) = server.results
        assert "error" not in result, result
        if spec.version is not None:
            assert result["version"] == TLSLITE_VERSION[spec.version]

    def check_resumed_server(self, server: PeerServer) -> None:
        # tlslite-ng's server marks every TLS 1.3 handshake resumed=False, with a
        # ticket or not (TLSConnection.handshakeServerAsync); only errors tell.
        assert isinstance(server, TlsliteServer)
        assert [r.get("error") for r in server.results] == [None, None], server.results

    async def connect_twice(self, pki: Pki, port: int, version: int) -> list[ClientRun]:
        results = await tlslite_clients(port, settings(version), count=2)
        return [ClientRun("error" not in r, repr(r), r.get("received", b""), r) for r in results]

    def check_resumed_client(self, runs: list[ClientRun]) -> None:
        assert [run.ok for run in runs] == [True, True], runs
        assert [run.details["resumed"] for run in runs] == [False, True]

    def check_client(self, run: ClientRun, spec: Spec) -> None:
        assert run.ok, run.output
        assert run.received == b"echo:hello\n"
        if spec.version is not None:
            assert run.details["version"] == TLSLITE_VERSION[spec.version]


PEERS: list[Peer] = [OpenSsl(), GnuTls(), PythonSsl(), Tlslite()]
