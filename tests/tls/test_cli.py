"""`looming tls serve|connect` against curl, openssl s_client/s_server and gnutls-cli."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from .peers import free_port, run, server_process
from .pki import Pki

# The `looming` command itself (its plugin verb), run by this interpreter.
LOOMING_TLS = [
    sys.executable,
    "-c",
    "import sys; from looming.cli import main; sys.exit(main())",
    "tls",
]


def serve_args(pki: Pki, port: int, *extra: str) -> list[str]:
    leaf = pki.leaves["p256"]
    return [
        *LOOMING_TLS,
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
            "-alpn",
            "http/1.1",
            "-naccept",
            "1",
        ]
        async with server_process(args, port, "ACCEPT"):
            command = [
                *LOOMING_TLS,
                "connect",
                f"127.0.0.1:{port}",
                "--servername",
                "localhost",
                "--ca",
                str(pki.ca_path),
                "--alpn",
                "http/1.1",
            ]
            return await run(command, b"GET / HTTP/1.0\r\n\r\n")

    rc, out, err = asyncio.run(main())
    assert rc == 0, err
    assert out.startswith("HTTP/1.0 200 ok")
    assert "connected: version 0x0304 (TLSv1.3), suite TLS_" in err
    assert "alpn http/1.1" in err and "peer subject CN=localhost" in err


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
    assert rc == 2 and "cannot read /nonexistent.pem" in err


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


def test_serve_answers_openssl_s_client_with_alpn_and_client_certificate(pki: Pki) -> None:
    client = pki.leaves["client-p256"]

    async def main() -> tuple[int, str, str]:
        port = free_port()
        extra = ("--http", "--alpn", "h2", "--alpn", "http/1.1", "--client-ca", str(pki.ca_path))
        async with server_process(serve_args(pki, port, *extra), port, "listening on"):
            return await run(
                [
                    "openssl",
                    "s_client",
                    "-connect",
                    f"127.0.0.1:{port}",
                    "-servername",
                    "localhost",
                    "-CAfile",
                    str(pki.ca_path),
                    "-verify_return_error",
                    "-alpn",
                    "http/1.1",
                    "-cert",
                    str(client.cert_path),
                    "-key",
                    str(client.key_path),
                    # Keep reading after stdin ends: the server closes after its answer.
                    "-ign_eof",
                ],
                b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n",
            )

    rc, out, err = asyncio.run(main())
    assert rc == 0, out + err
    assert "ALPN protocol: http/1.1" in out and "New, TLSv1.3" in out
    assert "Verify return code: 0 (ok)" in out
    assert out.count("hello from looming over TLS") == 1


def test_serve_refuses_s_client_without_client_certificate(pki: Pki) -> None:
    async def main() -> tuple[int, str, str]:
        port = free_port()
        extra = ("--echo", "--client-ca", str(pki.ca_path))
        async with server_process(serve_args(pki, port, *extra), port, "listening on"):
            return await run(
                [
                    "openssl",
                    "s_client",
                    "-connect",
                    f"127.0.0.1:{port}",
                    "-CAfile",
                    str(pki.ca_path),
                    "-ign_eof",
                ],
                b"ping\n",
            )

    rc, out, err = asyncio.run(main())
    assert rc != 0 and "ping" not in out
    assert "alert certificate required" in err or "alert handshake failure" in err, err


def test_serve_keeps_http_connection_alive_for_curl(pki: Pki) -> None:
    async def main() -> tuple[int, str, str]:
        port = free_port()
        url = f"https://localhost:{port}/"
        async with server_process(serve_args(pki, port, "--http"), port, "listening on"):
            return await run(
                [
                    "curl",
                    "-sS",
                    "-v",
                    "--cacert",
                    str(pki.ca_path),
                    "--resolve",
                    f"localhost:{port}:127.0.0.1",
                    url,
                    url,
                ]
            )

    rc, out, err = asyncio.run(main())
    assert rc == 0, err
    assert out == "hello from looming over TLS\n" * 2
    assert "Re-using existing connection" in err or "Reusing existing" in err, err


def test_help_and_usage_errors_of_the_looming_verb(tmp_path: Path) -> None:
    rc, out, _ = asyncio.run(run([*LOOMING_TLS, "serve", "--help"]))
    assert rc == 0 and "--client-ca" in out and "--http" in out and "--alpn" in out
    rc, out, _ = asyncio.run(run([*LOOMING_TLS, "connect", "--help"]))
    assert rc == 0 and "--servername" in out and "HOST:PORT" in out
    rc, _, err = asyncio.run(
        run([*LOOMING_TLS, "serve", "--cert", "c", "--key", "k", "--port", "x"])
    )
    assert rc == 2 and "port number" in err
    rc, _, err = asyncio.run(
        run([*LOOMING_TLS, "serve", "--cert", "c", "--key", "k", "--echo", "--http"])
    )
    assert rc == 2 and "not allowed with" in err
    rc, _, err = asyncio.run(
        run([*LOOMING_TLS, "connect", "127.0.0.1:1", "--ca", str(tmp_path / "none.pem")])
    )
    assert rc == 2 and "cannot load CA certificates" in err
