"""The FastAPI example built into an artifact and run as users run it: sync and
async endpoints, streaming, background tasks, uploads and pydantic models,
over host sockets and over looming's own stack on a TAP device.

Each endpoint exercises something the build must pack although no import
statement names it (anyio's backend, pydantic's lazy modules)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.config.tooling import copy_example, looming, running

Curl = Callable[..., bytes]


def host_curl(*args: str) -> bytes:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", *args],
        check=True,
        capture_output=True,
    ).stdout


def check_fastapi_app(curl: Curl, base: str, upload: Path) -> None:
    assert curl(f"{base}/") == b"hello from a FastAPI unikernel\n"
    # A plain def endpoint: Starlette runs it in an anyio worker thread.
    assert json.loads(curl(f"{base}/sync")) == {"thread": "worker"}
    priced = curl(
        "-H", "content-type: application/json",
        "--data", '{"name": "loom", "price": 10, "tags": ["a", "b"]}',
        f"{base}/items",
    )  # fmt: skip
    assert json.loads(priced) == {"name": "loom", "price_with_tax": 12.0, "tag_count": 2}
    invalid = curl(
        "-H", "content-type: application/json", "--data", '{"name": "", "price": -1}',
        "--write-out", "\n%{http_code}", f"{base}/items",
    )  # fmt: skip
    body, _, code = invalid.rpartition(b"\n")
    assert code == b"422"
    assert {e["type"] for e in json.loads(body)["detail"]} == {"string_too_short", "greater_than"}
    assert curl(f"{base}/stream?count=5") == b"0\n1\n2\n3\n4\n"
    assert curl(f"{base}/stream-sync?count=2") == b"line 0\nline 1\n"
    assert json.loads(curl("-X", "POST", f"{base}/later/weft")) == {"queued": "weft"}
    # The background task ran after the response was sent.
    assert "weft" in json.loads(curl(f"{base}/done"))["finished"]
    data = upload.read_bytes()
    uploaded = json.loads(curl("-F", f"file=@{upload}", "-F", "note=shuttle", f"{base}/upload"))
    assert uploaded == {
        "filename": upload.name,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "note": "shuttle",
    }


def make_upload(folder: Path) -> Path:
    upload = folder / "upload.bin"
    upload.write_bytes(hashlib.sha256(b"seed").digest() * 8192)  # 256 KiB
    return upload


def test_fastapi_artifact_over_host_sockets(tmp_path: Path) -> None:
    app = copy_example("fastapi", tmp_path)
    looming(app, "configure", "-t", "unix")
    looming(app, "build")
    with zipfile.ZipFile(app / "dist" / "fastapi-unix.pyz") as z:
        names = set(z.namelist())
    # Imported by name only: packed from the table of dynamic imports.
    assert "anyio/_backends/_asyncio.py" in names
    assert "pydantic/fields.py" in names
    # The compiled half of pydantic travels with its pure half, outside the
    # import path of the zip (a zip cannot hold an importable extension).
    assert not any(n.startswith("pydantic_core/") for n in names)
    assert any(n.startswith("_looming_native/files/pydantic_core/_pydantic_core.") for n in names)
    with running(app, "--port", "0", ready=r"serving (http://\S+)") as (_proc, ready):
        check_fastapi_app(host_curl, ready.group(1), make_upload(tmp_path))
    # As a user runs it with a Python that has none of FastAPI's dependencies
    # (Debian's /usr/bin/python3): -I -S leaves out every site-packages.
    artifact = app / "dist" / "fastapi-unix.pyz"
    command = [sys.executable, "-I", "-S", str(artifact), "--port", "0"]
    with started(command, tmp_path, LOOMING_NATIVE_CACHE=str(tmp_path / "cache")) as base:
        check_fastapi_app(host_curl, base, make_upload(tmp_path))


@contextlib.contextmanager
def started(command: list[str], cwd: Path, **env: str) -> Iterator[str]:
    """Run ``command`` until it prints the address it serves; that address."""
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1", **env},
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            match = re.search(r"^serving (http://\S+)", line)
            if match:
                yield match.group(1)
                break
        else:
            raise AssertionError("the artifact stopped before serving:\n" + "".join(seen))
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.root
def test_fastapi_artifact_over_the_direct_stack(tmp_path: Path) -> None:
    from tests.direct.conftest import need_root
    from tests.direct.unikernel import UNIKERNEL_ADDRESS, build_direct, namespace, running_direct

    need_root()
    app = build_direct("fastapi", tmp_path)
    upload = make_upload(tmp_path)
    with namespace() as ns:
        keys = ("--ipv4", str(UNIKERNEL_ADDRESS), "--port", "80")
        with running_direct(app, ns, *keys, ready=r"serving (http://\S+)") as unikernel:

            def curl(*args: str) -> bytes:
                return ns.run("curl", "--silent", "--show-error", "--max-time", "20", *args)

            check_fastapi_app(curl, f"http://{UNIKERNEL_ADDRESS.ip}:80", upload)
        assert unikernel.exit_code == 0, unikernel.log
        assert "Traceback" not in unikernel.log, unikernel.log
