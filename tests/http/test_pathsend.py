"""ASGI's ``http.response.pathsend``: Starlette's FileResponse hands the server
a path and the server sends the file, byte for byte, to ordinary clients."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

from looming.http import AsgiAdapter
from looming.http.asgi import PATHSEND_CHUNK

from .serving import RunningServer, serve_in_thread

SIZES = [0, 1, PATHSEND_CHUNK - 1, PATHSEND_CHUNK, PATHSEND_CHUNK + 1, 3 * 1024 * 1024 + 17]


class Recording:
    """The ASGI app, with every message type it sent recorded."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sent: list[str] = []

        async def file(request: Request) -> FileResponse:
            return FileResponse(folder / request.path_params["name"])

        self.app = Starlette(routes=[Route("/files/{name}", file)])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def recording_send(message: Any) -> None:
            self.sent.append(message["type"])
            await send(message)

        await self.app(scope, receive, recording_send)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pathsend")


@pytest.fixture(scope="module")
def files(folder: Path) -> dict[str, bytes]:
    contents = {f"f{size}.bin": os.urandom(size) for size in SIZES}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return contents


@pytest.fixture(scope="module")
def served(
    folder: Path, files: dict[str, bytes]
) -> Iterator[tuple[Recording, RunningServer, Path]]:
    assert files
    recording = Recording(folder)
    adapter = AsgiAdapter(recording)
    with serve_in_thread(lambda: adapter) as running:
        yield recording, running, folder


def _get(port: int, path: str, method: str = "GET", **headers: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request(method, path, headers=headers)
    return conn.getresponse()


def test_the_extension_is_offered_and_used(
    served: tuple[Recording, RunningServer, Path], files: dict[str, bytes]
) -> None:
    recording, running, _ = served
    recording.sent.clear()
    response = _get(running.port, f"/files/f{PATHSEND_CHUNK}.bin")
    assert response.status == 200
    assert response.read() == files[f"f{PATHSEND_CHUNK}.bin"]
    # Starlette only sends a path when the server lists the extension.
    assert recording.sent == ["http.response.start", "http.response.pathsend"]


@pytest.mark.parametrize("size", SIZES)
def test_every_size_arrives_whole(
    served: tuple[Recording, RunningServer, Path], files: dict[str, bytes], size: int
) -> None:
    _, running, _ = served
    response = _get(running.port, f"/files/f{size}.bin")
    body = response.read()
    assert response.status == 200
    assert int(response.headers["content-length"]) == size
    assert hashlib.sha256(body).digest() == hashlib.sha256(files[f"f{size}.bin"]).digest()


def test_curl_downloads_the_file(
    served: tuple[Recording, RunningServer, Path],
    files: dict[str, bytes],
    tmp_path: Path,
) -> None:
    _, running, _ = served
    name = f"f{SIZES[-1]}.bin"
    target = tmp_path / "out"
    subprocess.run(
        ["curl", "-sS", "--fail", "-o", str(target), f"{running.url}/files/{name}"],
        check=True,
        timeout=60,
    )
    assert target.read_bytes() == files[name]


def test_head_and_ranges_still_work(
    served: tuple[Recording, RunningServer, Path], files: dict[str, bytes]
) -> None:
    _, running, _ = served
    name = f"f{SIZES[-1]}.bin"
    head = _get(running.port, f"/files/{name}", method="HEAD")
    assert head.status == 200 and head.read() == b""
    assert int(head.headers["content-length"]) == len(files[name])
    part = _get(running.port, f"/files/{name}", range="bytes=1000-1999")
    assert part.status == 206
    assert part.read() == files[name][1000:2000]


def _open_files_under(folder: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def test_a_client_leaving_mid_file_closes_the_file(
    served: tuple[Recording, RunningServer, Path],
) -> None:
    _, running, folder = served
    name = f"f{SIZES[-1]}.bin"
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /files/{name} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # a reset, mid-body
    deadline = time.monotonic() + 10
    while _open_files_under(folder) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _open_files_under(folder) == []
    # And the server goes on serving.
    assert _get(running.port, "/files/f1.bin").status == 200


def test_a_file_that_cannot_be_opened_is_a_500(
    served: tuple[Recording, RunningServer, Path], files: dict[str, bytes]
) -> None:
    recording, running, folder = served

    async def vanishing(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(folder / "missing.bin")})

    adapter = AsgiAdapter(vanishing)
    with serve_in_thread(lambda: adapter) as other:
        # Nothing was sent yet: the server answers 500, and goes on serving.
        for _ in range(2):
            response = _get(other.port, "/")
            assert response.status == 500
            response.read()
    # The first server is untouched.
    assert _get(running.port, "/files/f1.bin").read() == files["f1.bin"]
    assert recording.folder == folder
