"""`python -m looming.tls serve|connect`: looming's TLS in the spirit of s_server/s_client.

    python -m looming.tls serve --cert C --key K --port P [--echo | --http] [--alpn A]... [--client-ca CA]
    python -m looming.tls connect HOST:PORT [--servername N] [--ca CA | --insecure] [--alpn A]...

``serve`` prints ``listening on HOST:PORT`` once it accepts connections, so
external test suites can be pointed at it. ``connect`` sends standard input,
then prints what the server sends until it closes. Bad arguments exit with
code 2 and a message; a failed handshake exits with code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from looming.errors import UsageError

from .certs import CertifiedKey, TrustStore
from .config import TlsConfig
from .constants import TLS12, TLS13
from .errors import TlsError
from .flow import TlsFlow, open_connection, start_server


def _versions(name: str) -> tuple[int, ...]:
    return {"1.2": (TLS12,), "1.3": (TLS13,), "any": (TLS13, TLS12)}[name]


async def _serve(args: argparse.Namespace) -> int:
    config = TlsConfig(
        certificates=[CertifiedKey.from_pem_files(args.cert, args.key)],
        alpn_protocols=[a.encode() for a in args.alpn],
        client_trust=TrustStore.from_pem_file(args.client_ca) if args.client_ca else None,
        require_client_certificate=bool(args.client_ca),
        versions=_versions(args.tls),
        max_early_data=args.max_early_data,
    )

    async def handle(flow: TlsFlow) -> None:
        if args.http:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = await flow.read()
                if not chunk:
                    return
                request += chunk
            body = b"hello from looming over TLS\n"
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            await flow.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        else:
            for early in flow.early_data:
                await flow.write(early)
            while chunk := await flow.read():
                await flow.write(chunk)
        await flow.shutdown()

    server = await start_server(handle, args.host, args.port, config)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()
    return 0


async def _connect(args: argparse.Namespace) -> int:
    host, _, port_text = args.address.rpartition(":")
    if not host or not port_text.isdigit():
        raise UsageError(f"expected HOST:PORT, got {args.address!r}")
    trust = TrustStore.from_pem_file(args.ca) if args.ca else None
    config = TlsConfig(
        trust=trust,
        verify_peer=not args.insecure,
        alpn_protocols=[a.encode() for a in args.alpn],
        versions=_versions(args.tls),
    )
    if trust is None and not args.insecure:
        config.trust = TrustStore.system()
    flow = await open_connection(host, int(port_text), config, server_name=args.servername or host)
    print(
        f"connected: version {flow.version:#06x}, suite {flow.cipher_suite:#06x}, alpn {flow.alpn_protocol!r}",
        file=sys.stderr,
        flush=True,
    )
    data = await asyncio.to_thread(sys.stdin.buffer.read)
    if data:
        await flow.write(data)
    await flow.shutdown()
    try:
        while chunk := await flow.read():
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    finally:
        await flow.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m looming.tls", description="looming TLS server and client"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="accept TLS connections")
    serve.add_argument("--cert", required=True, help="PEM certificate chain, leaf first")
    serve.add_argument("--key", required=True, help="PEM private key")
    serve.add_argument("--port", type=int, default=4433)
    serve.add_argument("--host", default="127.0.0.1")
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument("--echo", action="store_true", help="echo what the client sends (default)")
    mode.add_argument("--http", action="store_true", help="answer one HTTP/1.1 request")
    serve.add_argument(
        "--alpn", action="append", default=[], help="ALPN protocol to accept (repeatable)"
    )
    serve.add_argument("--client-ca", help="require client certificates issued by this CA file")
    serve.add_argument(
        "--max-early-data", type=int, default=0, help="accept this many bytes of 0-RTT data"
    )
    serve.add_argument("--tls", choices=["1.2", "1.3", "any"], default="any")
    connect = commands.add_parser("connect", help="connect, send stdin, print the reply")
    connect.add_argument("address", metavar="HOST:PORT")
    connect.add_argument("--servername", help="name to send (SNI) and verify; default HOST")
    connect.add_argument("--ca", help="trust anchors (PEM); default: the system store")
    connect.add_argument(
        "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    connect.add_argument(
        "--alpn", action="append", default=[], help="ALPN protocol to offer (repeatable)"
    )
    connect.add_argument("--tls", choices=["1.2", "1.3", "any"], default="any")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_serve(args) if args.command == "serve" else _connect(args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (TlsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
