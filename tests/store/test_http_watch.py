"""An abandoned ``/watch`` stream gives back its thread promptly, with no
further change needed to notice that the client left."""

from __future__ import annotations

import socket
import threading
import time

from looming.store.http import ServeSettings
from looming.store.repo import Repo

from .served import basic, serving


def watch_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name.startswith("watch "))


def open_watch(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    auth = basic()["Authorization"]
    client.sendall(
        f"GET /api/main/watch HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode()
    )
    received = b""
    while b": watching" not in received:
        received += client.recv(4096)
    return client


def wait_for(condition: object, seconds: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if callable(condition) and condition():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not within {seconds} s")


def test_abandoned_watches_release_their_threads(disk_repo: Repo) -> None:
    disk_repo.store().set("seed", b"0")
    before = watch_threads()
    settings = ServeSettings(watch_heartbeat_s=0.2)
    with serving(disk_repo, settings=settings) as (port, _):
        clients = [open_watch(port) for _ in range(3)]
        wait_for(lambda: watch_threads() == before + 3, 5)
        for client in clients[:2]:
            client.close()
        # No change lands on the branch: the heartbeat alone finds them gone.
        took = wait_for(lambda: watch_threads() == before + 1, 5)
        assert took < 3.0
        # The one still connected keeps its watch and sees the next change.
        commit = disk_repo.store().set("k", b"v")
        received = b""
        while commit.encode() not in received:
            received += clients[2].recv(4096)
        assert watch_threads() == before + 1
        clients[2].shutdown(socket.SHUT_RDWR)
        clients[2].close()
        wait_for(lambda: watch_threads() == before, 5)
