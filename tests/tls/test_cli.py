"""`python -m looming.tls serve|connect` against curl, gnutls-cli and openssl s_server."""

from __future__ import annotations

import asyncio
import sys

from .peers import free_port, run, server_process
from .pki import Pki


def serve_args(pki: Pki, port: int, *extra: str) -> list[str]:
    leaf = pki.leaves["p256"]
    return [
        sys.executable,
        "-m",
        "looming.tls",
        "serve",
        "--cert",
        str(leaf.cert_path),
        "--key",
        str(leaf.key_path),
        "--port",
        str(port),
        *extra,
    ]


def test_serve_http_answers_curl(pki: Pki) -> None:
    async def main() -> tuple[int, str, str]:
        port = free_port()
        async with server_process(
            serve_args(pki, port, "--http", "--alpn", "http/1.1"), port, "listening on"
        ):
            return await run(
                [
                    "curl",
                    "-sS",
                    "--http1.1",
                    "--cacert",
                    str(pki.ca_path),
                    "--resolve",
                    f"localhost:{port}:127.0.0.1",
                    f"https://localhost:{port}/",
                ]
            )

    rc, out, err = asyncio.run(main())
    assert rc == 0, err
    assert out == "hello from looming over TLS\n"


def test_serve_echo_answers_gnutls_cli(pki: Pki) -> None:
    async def main() -> tuple[int, str, str]:
        port = free_port()
        async with server_process(serve_args(pki, port, "--echo"), port, "listening on"):
            return await run(
                [
                    "gnutls-cli",
                    "-p",
                    str(port),
                    "127.0.0.1",
                    "--x509cafile",
                    str(pki.ca_path),
                    "--sni-hostname",
                    "localhost",
                    "--verify-hostname",
                    "localhost",
                ],
                b"ping\n",
            )

    rc, out, err = asyncio.run(main())
    assert rc == 0, out + err
    assert "ping" in out.split("Simple Client Mode:")[1]


def test_connect_fetches_from_s_server(pki: Pki) -> None:
    async def main() -> tuple[int, str, str]:
        port = free_port()
        leaf = pki.leaves["rsa"]
        args = [
            "openssl",
            "s_server",
            "-accept",
            str(port),
            "-cert",
            str(leaf.cert_path),
            "-key",
            str(leaf.key_path),
            "-www",
            "-naccept",
            "1",
        ]
        async with server_process(args, port, "ACCEPT"):
            command = [
                sys.executable,
                "-m",
                "looming.tls",
                "connect",
                f"127.0.0.1:{port}",
                "--servername",
                "localhost",
                "--ca",
                str(pki.ca_path),
            ]
            return await run(command, b"GET / HTTP/1.0\r\n\r\n")

    rc, out, err = asyncio.run(main())
    assert rc == 0, err
    assert out.startswith("HTTP/1.0 200 ok") and "connected: version 0x0304" in err


def test_bad_usage_exits_2(pki: Pki) -> None:
    rc, _, err = asyncio.run(run([sys.executable, "-m", "looming.tls", "connect", "no-port-here"]))
    assert rc == 2 and "HOST:PORT" in err
    rc, _, err = asyncio.run(
        run(
            [
                sys.executable,
                "-m",
                "looming.tls",
                "serve",
                "--cert",
                "/nonexistent.pem",
                "--key",
                "/nonexistent.key",
            ]
        )
    )
    assert rc == 2 and "cannot load certificate" in err


def test_failed_handshake_exits_1(pki: Pki) -> None:
    async def main() -> tuple[int, str, str]:
        port = free_port()
        leaf = pki.leaves["untrusted"]
        args = [
            "openssl",
            "s_server",
            "-accept",
            str(port),
            "-cert",
            str(leaf.cert_path),
            "-key",
            str(leaf.key_path),
            "-naccept",
            "1",
        ]
        async with server_process(args, port, "ACCEPT"):
            return await run(
                [
                    sys.executable,
                    "-m",
                    "looming.tls",
                    "connect",
                    f"127.0.0.1:{port}",
                    "--servername",
                    "localhost",
                    "--ca",
                    str(pki.ca_path),
                ]
            )

    rc, _, err = asyncio.run(main())
    assert rc == 1 and "certificate rejected" in err
