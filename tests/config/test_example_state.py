"""Examples keep their state under _build/ (or where a key points), never in
the checkout: running one leaves no untracked file beside its sources."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from looming.config import loader
from looming.config.dsl import Device
from tests.config.tooling import EXAMPLES, copy_example, looming, running

STATE_SETTINGS = {"kv_rw": "dirname", "kv_store": "path", "block": "filename"}


def devices_of(app: Path) -> Iterator[Device]:
    seen: set[int] = set()
    pending = [d for u in loader.load(app).unikernels for j in u.jobs for d in j.devices]
    while pending:
        device = pending.pop()
        if id(device) not in seen:
            seen.add(id(device))
            yield device
            pending.extend(device.deps)


@pytest.mark.parametrize(
    "example", sorted(p.parent.name for p in EXAMPLES.glob("*/config.py")), ids=str
)
def test_every_store_of_an_example_is_under_build(example: str) -> None:
    stores = [
        (d.kind, d.setting(STATE_SETTINGS[d.kind]))
        for d in devices_of(EXAMPLES / example)
        if d.kind in STATE_SETTINGS
    ]
    for kind, where in stores:
        assert where.startswith("_build/"), f"{example}: {kind} state kept in {where!r}"


def ask(port: int, lines: bytes, answers: int) -> list[str]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(lines)
        got = b""
        while got.count(b"\n") < answers:
            data = conn.recv(4096)
            assert data, got
            got += data
    return got.decode().splitlines()


def test_dedup_service_leaves_nothing_in_the_checkout(tmp_path: Path) -> None:
    app = copy_example("dedup_service", tmp_path)
    sources = sorted(p.name for p in app.iterdir())
    looming(app, "configure", "-t", "unix")
    looming(app, "build")
    ready = r"listening on port (\d+)"
    with running(app, "--port", "0", "--sync-ms", "0", ready=ready) as (_proc, found):
        port = int(found.group(1))
        assert ask(port, b"APPLY r1 5\nAPPLY r1 5\n", 2) == ["OK r1 0", "OK r1 0"]
    # The ledger lasts across a restart, in _build/ledger.
    with running(app, "--port", "0", ready=ready) as (_proc, found):
        assert "ledger of 1 entries" in found.string
        assert ask(int(found.group(1)), b"LEDGER\n", 2) == ["ENTRY 0 r1 5", "END 1"]
    assert (app / "_build" / "ledger" / "entries").is_dir()
    left = sorted(p.name for p in app.iterdir() if p.name not in ("_build", "dist"))
    assert left == sources
