"""An application that answers a large upload without reading it (a 200 or
a 401 sent early): the server reads and drops the unread body, as uvicorn
does, so the client's upload ends without a reset and the connection goes
on (RFC 9112 section 9.6). Bounded: a client that sends more than
``unread_body_bytes``, or for longer than ``unread_body_timeout``, is cut off
(after a half-close, so the response is not destroyed)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest

from looming.http import AsgiAdapter, ServerConfig

from .serving import serve_in_thread
from .test_background import under_uvicorn

UPLOAD = 48 * 1024 * 1024


async def answer_at_once(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-length", b"3")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok\n"})


class Upload:
    """A POST of ``size`` bytes sent from a thread while its answer is read."""

    def __init__(self, port: int, size: int, *, forever: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.size = size
        self.forever = forever
        self.error: BaseException | None = None
        self.sent = 0
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        self.thread.start()

    def _send(self) -> None:
        piece = b"\0" * (1 << 20)
        try:
            while self.forever or self.sent < self.size:
                self.sock.sendall(piece[: self.size - self.sent] if not self.forever else piece)
                self.sent += len(piece)
        except OSError as error:
            self.error = error

    def response(self) -> bytes:
        out = b""
        while not out.endswith(b"ok\n"):
            data = self.sock.recv(65536)
            if not data:
                break
            out += data
        return out


def run_upload(port: int) -> tuple[bytes, BaseException | None, bytes]:
    upload = Upload(port, UPLOAD)
    answer = upload.response()
    upload.thread.join(30)
    assert not upload.thread.is_alive()
    # The connection goes on: a second request on it is answered.
    again = b""
    if upload.error is None:
        upload.sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        again = upload.response()
    upload.sock.close()
    return answer, upload.error, again


@pytest.fixture(
    scope="module", params=[("httptools", True), ("h11", False)], ids=["httptools", "h11"]
)
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    parser, fast = request.param
    config = ServerConfig(parser=parser, fast_path=fast)
    with serve_in_thread(lambda: AsgiAdapter(answer_at_once), config) as running:
        yield running.port


@pytest.mark.slow
def test_an_early_answer_to_an_upload_ends_cleanly(port: int) -> None:
    answer, error, again = run_upload(port)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok\n")
    assert error is None, f"the upload was cut: {error!r}"
    assert again.startswith(b"HTTP/1.1 200 ")


@pytest.mark.slow
def test_uvicorn_does_the_same() -> None:
    with under_uvicorn(answer_at_once) as uvicorn_port:
        answer, error, again = run_upload(uvicorn_port)
    assert answer.startswith(b"HTTP/1.1 200 ") and error is None
    assert again.startswith(b"HTTP/1.1 200 ")


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["bytes", "time"])
def test_a_client_sending_on_and_on_is_cut_off_after_its_answer(limit: str) -> None:
    config = ServerConfig(
        unread_body_bytes=(8 << 20) if limit == "bytes" else (1 << 40),
        unread_body_timeout=0.5 if limit == "time" else 30.0,
    )
    with serve_in_thread(lambda: AsgiAdapter(answer_at_once), config) as running:
        upload = Upload(running.port, 1 << 40, forever=True)
        answer = upload.response()
        began = time.monotonic()
        upload.thread.join(10)
        assert not upload.thread.is_alive(), "never cut off"
        assert time.monotonic() - began < 5
        upload.sock.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok\n")
    assert isinstance(upload.error, OSError)
