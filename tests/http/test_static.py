"""The static site handler over the socket stack, checked with http.client and curl."""

from __future__ import annotations

import http.client
import socket
import subprocess
from email.utils import formatdate

import pytest

from looming.http import StaticSite
from looming.unix.kv import DirectoryKv, DirectoryKvRw

from .serving import FIXED_MTIME, HTDOCS, MemoryKv, RunningServer, serve_in_thread

LARGE = (HTDOCS / "data" / "large.txt").read_bytes()


def get(
    site: RunningServer, target: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    try:
        conn.request(method, target, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def raw_request(port: int, request: bytes) -> bytes:
    """Send bytes as they are (no client normalisation) and read until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("target", "content_type"),
    [
        ("/", "text/html; charset=utf-8"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/css/site.css", "text/css; charset=utf-8"),
        ("/images/loom.svg", "image/svg+xml; charset=utf-8"),
        ("/images/pattern.png", "image/png"),
        ("/data/large.txt", "text/plain; charset=utf-8"),
        ("/docs/", "text/html; charset=utf-8"),
    ],
)
def test_files_are_served_with_their_content_type(
    site: RunningServer, target: str, content_type: str
) -> None:
    response, body = get(site, target)
    assert response.status == 200
    assert response.getheader("content-type") == content_type
    expected_name = target.lstrip("/") or "index.html"
    if expected_name.endswith("/"):
        expected_name += "index.html"
    assert body == (HTDOCS / expected_name).read_bytes()
    assert response.getheader("content-length") == str(len(body))
    assert response.getheader("server") == "looming"
    assert response.getheader("date", "").endswith(" GMT")
    assert response.getheader("accept-ranges") == "bytes"


def test_folder_without_slash_redirects(site: RunningServer) -> None:
    response, _ = get(site, "/docs?x=1")
    assert response.status == 301
    assert response.getheader("location") == "/docs/?x=1"


def test_redirect_never_leaves_the_site(site: RunningServer) -> None:
    response, _ = get(site, "//docs")
    assert response.status == 301
    assert response.getheader("location") == "/docs/"


def test_missing_file_and_file_with_slash_are_404(site: RunningServer) -> None:
    assert get(site, "/nothing-here.html")[0].status == 404
    assert get(site, "/index.html/")[0].status == 404
    assert get(site, "/images/")[0].status == 404  # a folder without an index


def test_other_methods_get_405(site: RunningServer) -> None:
    response, _ = get(site, "/", method="DELETE")
    assert response.status == 405
    assert response.getheader("allow") == "GET, HEAD"


def test_head_sends_headers_only(site: RunningServer) -> None:
    response, body = get(site, "/css/site.css", method="HEAD")
    assert response.status == 200
    assert body == b""
    assert response.getheader("content-length") == str((HTDOCS / "css/site.css").stat().st_size)
    assert response.getheader("etag")


def test_etag_and_if_none_match_give_304(site: RunningServer) -> None:
    response, _ = get(site, "/css/site.css")
    etag = response.getheader("etag")
    assert etag is not None and etag.startswith('"') and etag.endswith('"')
    again, body = get(site, "/css/site.css", {"If-None-Match": etag})
    assert again.status == 304
    assert body == b""
    assert again.getheader("etag") == etag
    weak, _ = get(site, "/css/site.css", {"If-None-Match": f'"other", W/{etag}'})
    assert weak.status == 304
    changed, body = get(site, "/css/site.css", {"If-None-Match": '"something-else"'})
    assert changed.status == 200 and body


def test_last_modified_and_if_modified_since(site: RunningServer) -> None:
    response, _ = get(site, "/index.html")
    assert response.getheader("last-modified") == formatdate(FIXED_MTIME, usegmt=True)
    later = formatdate(FIXED_MTIME + 60, usegmt=True)
    earlier = formatdate(FIXED_MTIME - 60, usegmt=True)
    assert get(site, "/index.html", {"If-Modified-Since": later})[0].status == 304
    assert get(site, "/index.html", {"If-Modified-Since": earlier})[0].status == 200
    assert get(site, "/index.html", {"If-Modified-Since": "not a date"})[0].status == 200


def test_single_range_and_suffix_range(site: RunningServer) -> None:
    response, body = get(site, "/data/large.txt", {"Range": "bytes=100-199"})
    assert response.status == 206
    assert body == LARGE[100:200]
    assert response.getheader("content-range") == f"bytes 100-199/{len(LARGE)}"
    response, body = get(site, "/data/large.txt", {"Range": "bytes=-50"})
    assert response.status == 206 and body == LARGE[-50:]
    response, body = get(site, "/data/large.txt", {"Range": f"bytes={len(LARGE) - 10}-"})
    assert response.status == 206 and body == LARGE[-10:]


def test_unsatisfiable_range_is_416(site: RunningServer) -> None:
    response, _ = get(site, "/data/large.txt", {"Range": f"bytes={len(LARGE)}-"})
    assert response.status == 416
    assert response.getheader("content-range") == f"bytes */{len(LARGE)}"


def test_unparseable_range_sends_the_whole_file(site: RunningServer) -> None:
    response, body = get(site, "/data/large.txt", {"Range": "lines=1-2"})
    assert response.status == 200 and body == LARGE
    response, body = get(site, "/data/large.txt", {"Range": "bytes=20-10"})
    assert response.status == 200 and body == LARGE


def test_multiple_ranges_are_multipart(site: RunningServer) -> None:
    response, body = get(site, "/data/large.txt", {"Range": "bytes=0-9,1000-1009"})
    assert response.status == 206
    content_type = response.getheader("content-type", "")
    assert content_type.startswith("multipart/byteranges; boundary=")
    boundary = content_type.split("boundary=", 1)[1].encode()
    parts = body.split(b"--" + boundary)
    assert parts[-1] == b"--\r\n"
    assert f"content-range: bytes 0-9/{len(LARGE)}".encode() in parts[1]
    assert parts[1].endswith(b"\r\n\r\n" + LARGE[0:10] + b"\r\n")
    assert parts[2].endswith(b"\r\n\r\n" + LARGE[1000:1010] + b"\r\n")


def test_if_range_with_stale_etag_sends_whole_file(site: RunningServer) -> None:
    etag = get(site, "/data/large.txt", method="HEAD")[0].getheader("etag")
    fresh, body = get(site, "/data/large.txt", {"Range": "bytes=0-4", "If-Range": str(etag)})
    assert fresh.status == 206 and body == LARGE[:5]
    stale, body = get(site, "/data/large.txt", {"Range": "bytes=0-4", "If-Range": '"old"'})
    assert stale.status == 200 and body == LARGE


def test_large_file_is_streamed_whole(site: RunningServer) -> None:
    # The fixture caches files up to 64 KiB; this one is larger and streamed.
    assert len(LARGE) > 64 * 1024
    response, body = get(site, "/data/large.txt")
    assert response.status == 200
    assert body == LARGE


def test_curl_sees_range_and_content_type(site: RunningServer) -> None:
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-r",
            "7-12",
            "-w",
            "\n%{http_code} %{content_type}",
            site.url + "/data/large.txt",
        ],
        capture_output=True,
        check=True,
        timeout=20,
    )
    body, _, trailer = result.stdout.rpartition(b"\n")
    assert body == LARGE[7:13]
    assert trailer == b"206 text/plain; charset=utf-8"


ESCAPES = [
    b"/../secret.txt",
    b"/docs/../../secret.txt",
    b"/%2e%2e/secret.txt",
    b"/%2E%2E/secret.txt",
    b"/.%2e/secret.txt",
    b"/%2e%2e%2fsecret.txt",
    b"/docs/..%2f..%2fsecret.txt",
    b"/%2e%2e%5csecret.txt",
    b"/..%5csecret.txt",
    b"/%252e%252e/secret.txt",
    b"/%00/../secret.txt",
    b"/index.html%00.png",
    b"/%2fetc/passwd",
    b"//etc/passwd",
    b"/etc/passwd",
    b"/%c0%ae%c0%ae/secret.txt",
    b"secret.txt",
    b"../secret.txt",
    b"*",
]


@pytest.mark.parametrize("target", ESCAPES, ids=[t.decode() for t in ESCAPES])
def test_escapes_from_the_site_are_404(
    site: RunningServer, site_kv: MemoryKv, target: bytes
) -> None:
    reply = raw_request(
        site.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 404"), reply[:200]
    assert b"SECRET" not in reply
    for key in site_kv.keys_asked:
        assert ".." not in key.split("/") and "\\" not in key and "\x00" not in key, key


def test_backslash_target_never_reaches_outside(site: RunningServer) -> None:
    reply = raw_request(
        site.port, b"GET /..\\secret.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 404")
    assert b"SECRET" not in reply


def test_real_folder_neighbours_are_unreachable(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "htdocs").mkdir()
    (root / "htdocs" / "index.html").write_bytes(b"<p>inside</p>")
    (root / "secret.txt").write_bytes(b"SECRET next to htdocs")
    kv = DirectoryKv(root / "htdocs")
    with serve_in_thread(lambda: StaticSite(kv)) as running:
        assert get(running, "/")[1] == b"<p>inside</p>"
        for target in (b"/../secret.txt", b"/%2e%2e/secret.txt", b"/%2e%2e%2fsecret.txt"):
            reply = raw_request(
                running.port,
                b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            assert reply.startswith(b"HTTP/1.1 404")
            assert b"SECRET" not in reply


def test_a_read_write_folder_serves_what_was_written_through_it(tmp_path: object) -> None:
    import asyncio
    from pathlib import Path

    kv = DirectoryKvRw(Path(str(tmp_path)) / "site")
    asyncio.run(kv.set("index.html", b"<p>first</p>"))
    with serve_in_thread(lambda: StaticSite(kv)) as running:
        assert get(running, "/")[1] == b"<p>first</p>"
        asyncio.run(kv.set("index.html", b"<p>second</p>"))
        assert get(running, "/")[1] == b"<p>second</p>"
        asyncio.run(kv.rename("index.html", "old.html"))
        assert get(running, "/")[0].status == 404
        assert get(running, "/old.html")[1] == b"<p>second</p>"
        asyncio.run(kv.remove("old.html"))
        assert get(running, "/old.html")[0].status == 404
