"""The static website built and run, its folder crunched in or read in place,
with links to hidden entries and to a folder planted in it: the same 404s in
both modes, and the build names each link it leaves out."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from tests.config.tooling import copy_example, looming, running

REFUSED = ["/env.txt", "/gitlink/config", "/gitlink/", "/config.txt", "/subl/index.html"]


@pytest.fixture(scope="module", params=["crunch", "direct"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    app = copy_example("static_website", tmp_path_factory.mktemp(f"links-{request.param}"))
    htdocs = app / "htdocs"
    (htdocs / ".env").write_text("SECRET=1\n")
    (htdocs / ".git").mkdir()
    (htdocs / ".git" / "config").write_text("[core] SECRET\n")
    (htdocs / "env.txt").symlink_to(".env")
    (htdocs / "gitlink").symlink_to(".git")
    (htdocs / "config.txt").symlink_to(".git/config")
    (htdocs / "sub").mkdir()
    (htdocs / "sub" / "index.html").write_text("<p>sub</p>")
    (htdocs / "subl").symlink_to("sub")
    (htdocs / "sub-alias.html").symlink_to("sub/index.html")
    looming(app, "configure", "-t", "unix", "--kv-ro", request.param)
    built = looming(app, "build").stdout
    (notice,) = [line for line in built.splitlines() if "will not serve" in line]
    for name in ("env.txt (a link to a hidden entry)", "gitlink (a link", "config.txt (a link"):
        assert name in notice, notice
    assert "subl: a link to a folder (not followed)" in notice, notice
    with running(app, "--port", "0", ready=r"serving http://\S+:(\d+)") as (_proc, ready):
        yield int(ready.group(1))


def fetch(port: int, target: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("target", REFUSED)
def test_links_to_hidden_entries_or_folders_are_404(site: int, target: str) -> None:
    status, body = fetch(site, target)
    assert status == 404 and b"SECRET" not in body, (target, status, body)


def test_a_link_to_a_file_inside_is_served(site: int) -> None:
    assert fetch(site, "/sub-alias.html") == (200, b"<p>sub</p>")
    assert fetch(site, "/sub/index.html") == (200, b"<p>sub</p>")
