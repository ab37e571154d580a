"""``looming store serve``: git clones and pushes over smart HTTP; the JSON API."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from looming.store.repo import Repo
from looming.unix.clock import UnixClock

from .conftest import GitRunner
from .served import TOKEN, basic, call, serving


@pytest.fixture
def served(disk_repo: Repo) -> Iterator[tuple[Repo, int]]:
    with serving(disk_repo) as (port, _handler):
        yield disk_repo, port


def _call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    return call(port, method, path, body, {**basic(), **(headers or {})})


def test_git_clone_and_push_over_smart_http(
    served: tuple[Repo, int], tmp_path: Path, git: GitRunner
) -> None:
    repo, port = served
    store = repo.store()
    store.set("docs/readme.txt", b"served over HTTP\n")
    checkout = tmp_path / "checkout"
    git("clone", "-q", f"http://127.0.0.1:{port}/", str(checkout), cwd=tmp_path)
    assert (checkout / "docs" / "readme.txt").read_text() == "served over HTTP\n"
    (checkout / "index.html").write_text("<h1>published</h1>\n")
    git("add", ".", cwd=checkout)
    git("commit", "-q", "-m", "publish", cwd=checkout)
    git("push", "-q", f"http://user:{TOKEN}@127.0.0.1:{port}/", "main", cwd=checkout)
    assert store.get("index.html") == b"<h1>published</h1>\n"
    git("fsck", "--strict", cwd=repo.path or "")
    # A garbled protocol request is refused, and the server goes on serving.
    kind = {"Content-Type": "application/x-git-upload-pack-request"}
    status, _body = _call(port, "POST", "/git-upload-pack", b"garbage", kind)
    assert status == 400
    git("ls-remote", f"http://127.0.0.1:{port}/", cwd=tmp_path)


def test_json_api(served: tuple[Repo, int]) -> None:
    repo, port = served
    status, body = _call(port, "PUT", "/api/main/set/a/b?message=first", b"hello")
    assert status == 200 and len(json.loads(body)["commit"]) == 40
    assert _call(port, "GET", "/api/main/get/a/b") == (200, b"hello")
    assert _call(port, "GET", "/api/main/get/a/zz")[0] == 404
    status, body = _call(port, "GET", "/api/main/list/a")
    assert json.loads(body) == [{"name": "b", "kind": "contents"}]
    status, body = _call(port, "GET", "/api/main/history")
    assert [c["message"] for c in json.loads(body)] == ["first\n"]
    repo.store().clone("other").set("a/b", b"theirs")
    repo.store().set("a/b", b"ours")
    status, body = _call(port, "POST", "/api/main/merge?from=other", b"")
    assert status == 409
    (conflict,) = json.loads(body)["conflicts"]
    assert conflict == {
        "path": "a/b",
        "base": "hello",
        "ours": "ours",
        "theirs": "theirs",
        "why": conflict["why"],
    }
    assert _call(port, "GET", "/api/main/get/a//b")[0] == 400
    assert _call(port, "GET", "/api/main/history?limit=ten")[0] == 400
    assert _call(port, "GET", "/api/bad..branch/get/a")[0] == 400
    assert _call(port, "POST", "/api/main/merge")[0] == 400
    assert _call(port, "PATCH", "/api/main/set/a")[0] == 404
    assert _call(port, "DELETE", "/api/main/set/a")[0] == 200
    assert _call(port, "GET", "/api/main/list/a")[0] == 404


def test_watch_as_server_sent_events(served: tuple[Repo, int]) -> None:
    repo, port = served
    store = repo.store()
    store.set("seed", b"0")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    connection.request("GET", "/api/main/watch?prefix=w")
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("content-type") == "text/event-stream"
    assert response.readline() == b": watching\n"
    assert response.readline() == b"\n"
    store.set("x", b"ignored")
    commit = store.set("w/1", b"seen")
    assert response.readline() == b"event: change\n"
    data = json.loads(response.readline().removeprefix(b"data: "))
    assert data["new"] == commit and data["paths"] == ["w/1"]
    connection.close()


def test_store_replicas_sync_over_smart_http(served: tuple[Repo, int], tmp_path: Path) -> None:
    from looming.store import sync

    repo, port = served
    repo.store().set("origin.txt", b"o")
    url = f"http://user:{TOKEN}@127.0.0.1:{port}/"
    replica = sync.clone(url, str(tmp_path / "replica.git"), clock=UnixClock())
    store = replica.store()
    assert store.get("origin.txt") == b"o"
    store.set("replica.txt", b"r")
    sync.push(replica, url, "main")
    assert repo.store().get("replica.txt") == b"r"
    repo.store().set("later.txt", b"l")
    assert sync.pull(store, url).fast_forward
    assert store.get("later.txt") == b"l"
    replica.close()
