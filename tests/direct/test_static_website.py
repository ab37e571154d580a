"""The static website example on ``--net direct``: looming's own TCP/IP stack
on a TAP device, fetched with curl by the Linux kernel in a namespace."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.direct.conftest import need_root
from tests.direct.unikernel import (
    UNIKERNEL_ADDRESS,
    Namespace,
    RunningUnikernel,
    build_direct,
    namespace,
    running_direct,
)

pytestmark = pytest.mark.root

BASE = f"http://{UNIKERNEL_ADDRESS.ip}"


@dataclass
class Website:
    app: Path
    ns: Namespace
    unikernel: RunningUnikernel

    def htdocs(self, path: str) -> bytes:
        return (self.app / "htdocs" / path).read_bytes()

    def curl(self, *args: str) -> bytes:
        return self.ns.run("curl", "--silent", "--show-error", "--max-time", "20", *args)


def head_and_body(response: bytes) -> tuple[list[str], bytes]:
    """Header lines (status first) and body of ``curl --include`` output."""
    head, _, body = response.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n"), body


def header(lines: list[str], name: str) -> str:
    values = [
        line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith(name + ":")
    ]
    assert len(values) == 1, lines
    return values[0]


@pytest.fixture(scope="module")
def website(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Website]:
    need_root()
    app = build_direct("static_website", tmp_path_factory.mktemp("direct-website"))
    with namespace() as ns:
        with running_direct(
            app,
            ns,
            "--ipv4",
            str(UNIKERNEL_ADDRESS),
            "--port",
            "80",
            ready=r"serving (http://\S+)",
        ) as unikernel:
            assert unikernel.ready.group(1) == f"{BASE}:80"
            yield Website(app, ns, unikernel)
        # SIGTERM stops it cleanly: the stack disconnects without an error.
        assert unikernel.exit_code == 0, unikernel.log
        assert "Traceback" not in unikernel.log, unikernel.log


def test_index_html_with_its_content_type(website: Website) -> None:
    lines, body = head_and_body(website.curl("--include", f"{BASE}/"))
    assert lines[0] == "HTTP/1.1 200 OK"
    assert header(lines, "content-type") == "text/html; charset=utf-8"
    assert header(lines, "content-length") == str(len(website.htdocs("index.html")))
    assert body == website.htdocs("index.html")
    # The same file by name, and a file of another type.
    assert website.curl(f"{BASE}/index.html") == body
    lines, body = head_and_body(website.curl("--include", f"{BASE}/css/site.css"))
    assert header(lines, "content-type").startswith("text/css")
    assert body == website.htdocs("css/site.css")


def test_range_request(website: Website) -> None:
    index = website.htdocs("index.html")
    lines, body = head_and_body(website.curl("--include", "--range", "10-99", f"{BASE}/index.html"))
    assert lines[0] == "HTTP/1.1 206 Partial Content"
    assert header(lines, "content-range") == f"bytes 10-99/{len(index)}"
    assert body == index[10:100]
    # A suffix range of the large file, crossing many segments.
    large = website.htdocs("data/large.txt")
    tail = website.curl("--range", "-100000", f"{BASE}/data/large.txt")
    assert tail == large[-100000:]


def test_missing_page_is_a_404(website: Website) -> None:
    lines, _ = head_and_body(website.curl("--include", f"{BASE}/no/such/page.html"))
    assert lines[0] == "HTTP/1.1 404 Not Found"
    code = website.curl("--output", "/dev/null", "--write-out", "%{http_code}", f"{BASE}/nope")
    assert code == b"404"


def test_large_file_twice_over_one_kept_alive_connection(website: Website) -> None:
    large = website.htdocs("data/large.txt")
    out = website.curl(
        "--write-out",
        "\n%{http_code} %{num_connects} %{size_download}\n",
        f"{BASE}/data/large.txt",
        f"{BASE}/data/large.txt",
    )
    # Each transfer is followed by its own summary line.
    first = b"\n200 1 %d\n" % len(large)
    # The second transfer reused the connection: no new connect.
    second = b"\n200 0 %d\n" % len(large)
    assert out == large + first + large + second


def test_conditional_get_with_the_etag(website: Website) -> None:
    lines, _ = head_and_body(website.curl("--include", f"{BASE}/images/loom.svg"))
    etag = header(lines, "etag")
    assert header(lines, "content-type").startswith("image/svg+xml")
    lines, body = head_and_body(
        website.curl("--include", "--header", f"If-None-Match: {etag}", f"{BASE}/images/loom.svg")
    )
    assert lines[0] == "HTTP/1.1 304 Not Modified"
    assert body == b""


def test_the_kernel_pings_the_unikernel(website: Website) -> None:
    out = website.ns.run("ping", "-c", "3", "-i", "0.2", "-W", "2", str(UNIKERNEL_ADDRESS.ip))
    assert b" 0% packet loss" in out
