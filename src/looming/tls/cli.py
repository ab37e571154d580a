"""``looming tls serve|connect``: looming's TLS from the shell, like s_server/s_client.

    looming tls serve --cert C --key K [--cert C2 --key K2]... --port P [--echo | --http]
                      [--alpn A]... [--client-ca CA [--client-auth optional]]
                      [--key-password-file F] [--no-require-ems] [--keylog F]
                      [--ocsp F]... [--ticket-keys F | --ticket-rotation S]
    looming tls connect HOST:PORT [--servername N] [--ca CA | --insecure] [--alpn A]...
                      [--cert C --key K] [--resume SESSION_FILE [--early-data]]

``serve`` prints ``listening on HOST:PORT`` once it accepts connections, so
external test suites can be pointed at it; each connection is echoed
(``--echo``, the default) or answered with one HTTP/1.1 response (``--http``).
``connect`` sends standard input, then writes what the server sends to
standard output until it closes; the negotiated version, suite, ALPN protocol
and the server's certificate subject go to standard error. Bad arguments exit
with code 2 and a message; a failed handshake or connection exits with code 1.
``python -m looming.tls`` is the same command.

Certificates and keys are checked before anything listens or connects (see
:mod:`looming.tls.keyload`): a key that does not match its certificate, an
expired certificate or a key no handshake can use exits with code 2 and the
reason. Several ``--cert``/``--key`` pairs are chosen between per connection
by the client's server name and signature algorithms (an RSA and an ECDSA
certificate side by side, as nginx does). An encrypted key's passphrase comes
from ``--key-password-file`` or ``$LOOMING_TLS_KEY_PASSWORD``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from looming.addresses import format_endpoint, host_argument, parse_endpoint
from looming.errors import NetworkError, UsageError
from looming.unix import host_devices
from looming.unix.socket_stack import listening_socket

from .certs import CertifiedKey, TrustStore
from .config import TlsConfig
from .constants import TLS12, TLS13, CipherSuite
from .errors import TlsError
from .flow import TlsFlow, open_connection, start_server
from .keyload import KEY_PASSWORD_ENV, load_identity_files, read_key_password
from .keylog import KeyLogFile
from .ocsp import check_response as check_ocsp_response
from .session import TicketKeys
from .session_file import read_session_file, write_session_file
from .ticket_file import load_ticket_key_file, watch_ticket_key_file

PROG = "looming tls"
HTTP_BODY = b"hello from looming over TLS\n"
VERSION_NAMES = {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}
TICKET_FILE_CHECK_S = 5.0


def _versions(name: str) -> tuple[int, ...]:
    return {"1.2": (TLS12,), "1.3": (TLS13,), "any": (TLS13, TLS12)}[name]


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return int(text)


def _alpn(text: str) -> bytes:
    encoded = text.encode()
    if not 1 <= len(encoded) <= 255:
        raise argparse.ArgumentTypeError("an ALPN protocol name is 1 to 255 bytes")
    return encoded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` and ``connect`` subcommands to ``parser``."""
    commands = parser.add_subparsers(dest="tls_command", metavar="COMMAND")
    commands.required = True
    for sub in (_add_serve(commands), _add_connect(commands)):
        _add_common_arguments(sub)


def _add_serve(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    serve = commands.add_parser(
        "serve",
        help="accept TLS connections and echo or answer HTTP (like openssl s_server)",
        description="Accept TLS 1.3 and 1.2 connections on a TCP port. Prints "
        "'listening on HOST:PORT' when ready.",
    )
    serve.add_argument(
        "--cert",
        required=True,
        action="append",
        help="PEM certificate chain, leaf first (repeatable, each with its --key)",
    )
    serve.add_argument(
        "--key",
        required=True,
        action="append",
        help="private key of the leaf: PEM or DER, PKCS#8 or traditional, encrypted or not",
    )
    serve.add_argument("--port", type=_port, default=4433, help="TCP port (default 4433)")
    serve.add_argument(
        "--host",
        type=host_argument,
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; ::1 for IPv6, :: for every address of "
        "both families)",
    )
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument("--echo", action="store_true", help="echo what the client sends (default)")
    mode.add_argument(
        "--http", action="store_true", help="answer each HTTP/1.1 request with a short text page"
    )
    serve.add_argument(
        "--alpn",
        type=_alpn,
        action="append",
        default=[],
        help="ALPN protocol to accept, in order of preference (repeatable)",
    )
    serve.add_argument(
        "--client-ca", help="ask for client certificates issued by a CA in this PEM file"
    )
    serve.add_argument(
        "--client-auth",
        choices=["required", "optional"],
        default="required",
        help="with --client-ca: refuse clients without a certificate (required, the "
        "default) or accept them too (optional)",
    )
    serve.add_argument(
        "--max-early-data", type=int, default=0, help="accept this many bytes of 0-RTT data"
    )
    serve.add_argument(
        "--ocsp",
        action="append",
        default=[],
        metavar="FILE",
        help="DER OCSP response to staple for the --cert of the same rank (repeatable)",
    )
    tickets = serve.add_mutually_exclusive_group()
    tickets.add_argument(
        "--ticket-keys",
        metavar="FILE",
        help="session-ticket keys shared with other servers: 48-byte keys (openssl rand "
        "48), the first sealing; reloaded when the file changes",
    )
    tickets.add_argument(
        "--ticket-rotation",
        type=int,
        metavar="SECONDS",
        help="replace this process's own ticket key this often (tickets stay valid "
        "for one more period)",
    )
    serve.add_argument(
        "--tls", choices=["1.2", "1.3", "any"], default="any", help="versions (default any)"
    )
    return serve


def _add_connect(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    connect = commands.add_parser(
        "connect",
        help="connect, send standard input, print the reply (like openssl s_client)",
        description="Connect over TLS, send standard input, then print what the server "
        "sends until it closes. Connection details go to standard error.",
    )
    connect.add_argument("address", metavar="HOST:PORT")
    connect.add_argument("--servername", help="name to send (SNI) and verify (default HOST)")
    connect.add_argument("--ca", help="trust anchors, PEM (default: the system store)")
    connect.add_argument(
        "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    connect.add_argument(
        "--alpn",
        type=_alpn,
        action="append",
        default=[],
        help="ALPN protocol to offer (repeatable)",
    )
    connect.add_argument(
        "--tls", choices=["1.2", "1.3", "any"], default="any", help="versions (default any)"
    )
    connect.add_argument("--cert", help="client certificate chain, PEM, leaf first")
    connect.add_argument("--key", help="private key of the client certificate")
    connect.add_argument(
        "--resume",
        metavar="SESSION_FILE",
        help="resume the session saved in this file if there is one, and save the "
        "newest session the server sends to it",
    )
    connect.add_argument(
        "--early-data",
        action="store_true",
        help="with --resume: send standard input as 0-RTT early data when the saved "
        "session allows it (it may be replayed; only for idempotent requests)",
    )
    return connect


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-password-file",
        help=f"file whose first line is the key's passphrase (else ${KEY_PASSWORD_ENV})",
    )
    parser.add_argument(
        "--no-require-ems",
        action="store_true",
        help="accept TLS 1.2 peers without the extended master secret (RFC 7627); "
        "insecure, logged as a warning on each such connection",
    )
    parser.add_argument(
        "--record-size-limit",
        type=int,
        metavar="BYTES",
        help="announce the largest record plaintext accepted (RFC 8449), 64 to 16385",
    )
    parser.add_argument(
        "--keylog",
        metavar="FILE",
        help="append the session keys to FILE in the SSLKEYLOGFILE format (for "
        "Wireshark); whoever reads it can decrypt the traffic",
    )


async def _answer_http(flow: TlsFlow) -> None:
    buffered = b""
    while True:
        while b"\r\n\r\n" not in buffered:
            chunk = await flow.read()
            if not chunk:
                return
            buffered += chunk
        head, _, buffered = buffered.partition(b"\r\n\r\n")
        first_line = head.split(b"\r\n", 1)[0]
        # HTTP/1.0 closes after one response unless asked otherwise; we never are.
        keep_alive = (
            not first_line.endswith(b"HTTP/1.0") and b"connection: close" not in head.lower()
        )
        response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            + b"Content-Length: %d\r\n" % len(HTTP_BODY)
            + (b"" if keep_alive else b"Connection: close\r\n")
            + b"\r\n"
            + (b"" if first_line.startswith(b"HEAD ") else HTTP_BODY)
        )
        await flow.write(response)
        if not keep_alive:
            return


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _identities(args: argparse.Namespace) -> list[CertifiedKey]:
    """The --cert/--key pairs, loaded and checked."""
    certs = args.cert if isinstance(args.cert, list) else [args.cert] if args.cert else []
    keys = args.key if isinstance(args.key, list) else [args.key] if args.key else []
    if len(certs) != len(keys):
        raise UsageError(
            f"{len(certs)} --cert but {len(keys)} --key: give each certificate its key, in order"
        )
    password = read_key_password(args.key_password_file)
    return [
        load_identity_files(cert, key, password=password, now=_now())
        for cert, key in zip(certs, keys, strict=True)
    ]


def _common_settings(args: argparse.Namespace) -> dict[str, object]:
    # A host program: the host's clock and randomness, asked for by name.
    host = host_devices()
    settings: dict[str, object] = {
        "random": host.random,
        "clock": host.clock,
        "alpn_protocols": list(args.alpn),
        "versions": _versions(args.tls),
        "require_extended_master_secret": not args.no_require_ems,
        "record_size_limit": args.record_size_limit,
    }
    if args.keylog:
        settings["key_log"] = KeyLogFile(args.keylog)
    return settings


def server_config(args: argparse.Namespace) -> TlsConfig:
    """The TlsConfig ``tls serve`` runs with."""
    if args.client_auth == "optional" and not args.client_ca:
        raise UsageError("--client-auth optional needs --client-ca (the CAs to validate against)")
    config = TlsConfig(
        certificates=_identities(args),
        client_trust=TrustStore.from_pem_file(args.client_ca) if args.client_ca else None,
        require_client_certificate=bool(args.client_ca) and args.client_auth == "required",
        max_early_data=args.max_early_data,
        **_common_settings(args),  # type: ignore[arg-type]
    )
    _attach_ocsp(config.certificates, args.ocsp)
    if args.ticket_keys:
        config.ticket_keys = load_ticket_key_file(args.ticket_keys, config.random)
    elif args.ticket_rotation is not None:
        if args.ticket_rotation < 1:
            raise UsageError("--ticket-rotation needs a number of seconds, 1 or more")
        config.ticket_keys = TicketKeys(config.random, rotate_after_s=args.ticket_rotation)
    return config


def _attach_ocsp(certificates: list[CertifiedKey], paths: list[str]) -> None:
    """Each --ocsp response, checked, to the --cert of the same rank."""
    if len(paths) > len(certificates):
        raise UsageError(f"{len(paths)} --ocsp for {len(certificates)} --cert; one each at most")
    for certified, path in zip(certificates, paths, strict=False):
        try:
            der = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the OCSP response {path}: {exc.strerror}") from exc
        certified.ocsp_response = check_ocsp_response(der, certified, _now(), path)


async def _serve(args: argparse.Namespace) -> int:
    config = server_config(args)
    watcher = None
    if args.ticket_keys and config.ticket_keys is not None:
        watcher = asyncio.create_task(
            watch_ticket_key_file(args.ticket_keys, config.ticket_keys, TICKET_FILE_CHECK_S)
        )

    async def handle(flow: TlsFlow) -> None:
        if args.http:
            await _answer_http(flow)
        else:
            for early in flow.early_data:
                await flow.write(early)
            while chunk := await flow.read():
                await flow.write(chunk)
        await flow.shutdown()

    server = await start_server(
        handle, args.host, args.port, config, sock=listening_socket(args.host, args.port)
    )
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {format_endpoint(host, port)}", flush=True)
    try:
        async with server:
            await server.serve_forever()
    finally:
        if watcher is not None:
            watcher.cancel()
    return 0


def describe_connection(flow: TlsFlow) -> str:
    """One line naming what was negotiated, for standard error."""
    version = VERSION_NAMES.get(flow.version or 0, f"{flow.version}")
    suite_value = flow.cipher_suite or 0
    suite = (
        CipherSuite(suite_value).name
        if suite_value in CipherSuite._value2member_map_
        else f"{suite_value:#06x}"
    )
    alpn = flow.alpn_protocol.decode(errors="replace") if flow.alpn_protocol else "(none)"
    peer = flow.peer_certificates
    subject = peer[0].subject.rfc4514_string() if peer else "(no certificate)"
    return (
        f"connected: version {flow.version or 0:#06x} ({version}), suite {suite}, "
        f"alpn {alpn}, peer subject {subject}" + (", resumed" if flow.resumed else "")
    )


async def _connect(args: argparse.Namespace) -> int:
    host, port = parse_endpoint(args.address, allow_zero=False)
    if not host:
        raise UsageError(f"expected HOST:PORT, e.g. [::1]:4433, got {args.address!r}")
    config = client_config(args)
    session = read_session_file(args.resume) if args.resume else None
    # Early data must be known before the ClientHello; otherwise read stdin once connected.
    early_possible = args.early_data and session is not None and session.max_early_data > 0
    data = await asyncio.to_thread(sys.stdin.buffer.read) if early_possible else b""
    early = data
    flow = await open_connection(
        host,
        port,
        config,
        server_name=args.servername or host,
        session=session,
        early_data=early,
    )
    print(describe_connection(flow), file=sys.stderr, flush=True)
    if early:
        accepted = flow.connection.early_data_accepted
        print(f"early data {'accepted' if accepted else 'rejected, resent'}", file=sys.stderr)
    try:
        if not early_possible:
            data = await asyncio.to_thread(sys.stdin.buffer.read)
        if data and not early:
            await flow.write(data)
        await flow.shutdown()
        while chunk := await flow.read():
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    finally:
        await flow.close()
        if args.resume and flow.sessions:
            write_session_file(args.resume, flow.sessions[-1])
    return 0


def client_config(args: argparse.Namespace) -> TlsConfig:
    """The TlsConfig ``tls connect`` runs with."""
    if args.insecure and args.ca:
        raise UsageError("--insecure and --ca contradict each other; give one")
    if bool(args.cert) != bool(args.key):
        raise UsageError("--cert and --key go together: give both or neither")
    if args.early_data and not args.resume:
        raise UsageError("--early-data needs --resume SESSION_FILE (0-RTT needs a session)")
    trust = TrustStore.from_pem_file(args.ca) if args.ca else None
    if trust is None and not args.insecure:
        trust = TrustStore.system()
    return TlsConfig(
        trust=trust,
        verify_peer=not args.insecure,
        certificates=_identities(args),
        enable_early_data=args.early_data,
        **_common_settings(args),  # type: ignore[arg-type]
    )


def run(args: argparse.Namespace) -> int:
    """Run the subcommand ``add_arguments`` parsed; the process exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s")
    try:
        return asyncio.run(_serve(args) if args.tls_command == "serve" else _connect(args))
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (TlsError, OSError, NetworkError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m looming.tls``: the same command without the ``looming`` front."""
    parser = argparse.ArgumentParser(
        prog="python -m looming.tls", description="looming TLS server and client for testing peers"
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
