"""The core without its extras: nothing it imports needs cryptography, dulwich,
cffi, h2 or wsproto, and what needs them is named at configure time, not at
run time.

The packages are hidden from a child interpreter by ``sys.modules[name] =
None`` (an import then raises ModuleNotFoundError, and
``importlib.util.find_spec`` answers None), which is what an environment
without them looks like to looming.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any, cast

import pytest

from looming import extras
from looming.errors import ConfigError
from tests.packaging.conftest import REPO

HIDDEN = ("cryptography", "dulwich", "cffi", "h2", "wsproto")
HIDE = f"import sys\nfor _name in {HIDDEN!r}:\n    sys.modules[_name] = None\n"


def run_hidden(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HIDE + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def test_every_module_outside_the_extras_imports_without_them() -> None:
    done = run_hidden(
        """
        import importlib, json, looming, pathlib
        base = pathlib.Path(looming.__file__).parent
        result = {}
        for path in sorted(base.rglob("*.py")):
            parts = ("looming", *path.relative_to(base).with_suffix("").parts)
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if name.endswith("__main__"):
                continue
            try:
                importlib.import_module(name)
                result[name] = None
            except ModuleNotFoundError as error:
                result[name] = error.name
        print(json.dumps(result))
        """
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, str | None] = json.loads(done.stdout)
    failed = {name: missing for name, missing in result.items() if missing is not None}
    # Only the parts that are extras fail, each for its own package ...
    for name, missing in failed.items():
        extra = extras.extra_for(name)
        assert extra is not None, f"{name} (core) needs {missing}"
        assert missing is not None and missing.split(".")[0] in extras.EXTRAS[extra]
    # ... and the core the issue names is all there.
    for core in ["looming.cli", "looming.config", "looming.http", "looming.net", "looming.unix"]:
        assert result[core] is None
    assert "looming.tls.engine" in failed and "looming.ffi.compiled" in failed
    assert failed["looming.http.http2"].startswith("h2")
    assert failed["looming.http.websocket"].startswith("wsproto")
    assert result["looming.http.server"] is None and result["looming.http.asgi"] is None
    assert len(result) - len(failed) > 150


def test_the_tls_and_store_verbs_name_their_extra() -> None:
    for verb, extra, package in [("tls", "tls", "cryptography"), ("store", "store", "dulwich")]:
        done = run_hidden("from looming.cli import main\nsys.exit(main())", verb, "--help")
        assert done.returncode == 2
        assert done.stderr == (
            f"looming: looming {verb} needs looming's {extra!r} extra "
            f"({package} is not installed): pip install 'looming[{extra}]'\n"
        )


def test_the_compiled_ffi_backend_names_its_extra() -> None:
    done = run_hidden(
        """
        from looming.ffi import link
        from looming.extras import MissingExtra
        try:
            link(None, backend="compiled")
        except MissingExtra as error:
            print(error)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "the compiled ffi backend needs looming's 'ffi' extra (cffi is not installed): "
        "pip install 'looming[ffi]'"
    )


def test_an_import_inside_a_function_is_found_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(extras.EXTRAS, "store", ("a_package_that_is_not_installed",))
    app = tmp_path / "app"
    (app / "helpers").mkdir(parents=True)
    (app / "unikernel.py").write_text("import looming.http\n")
    (app / "helpers" / "sync.py").write_text(
        "def later():\n    from looming.store.kv import StoreKv\n    return StoreKv\n"
    )
    # Build output is not the application.
    (app / "_build").mkdir()
    (app / "_build" / "main.py").write_text("import looming.tls\n")
    with pytest.raises(ConfigError) as caught:
        extras.check_application([], app)
    error = caught.value
    assert (error.path, error.line) == (str(app / "helpers" / "sync.py"), 2)
    assert error.message == (
        "sync.py (import looming.store.kv) needs looming's 'store' extra "
        "(a_package_that_is_not_installed is not installed): pip install 'looming[store]'"
    )


def test_a_device_is_checked_by_its_implementation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    devices = [("tls", "looming.tls.device", "/app/config.py", 7)]
    extras.check_application(devices, tmp_path)  # installed here: no error
    monkeypatch.setitem(extras.EXTRAS, "tls", ("a_package_that_is_not_installed",))
    with pytest.raises(ConfigError) as caught:
        extras.check_application(devices, tmp_path)
    assert (caught.value.path, caught.value.line) == ("/app/config.py", 7)
    assert str(caught.value).count("\n") == 0
    assert "pip install 'looming[tls]'" in str(caught.value)


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        ("looming.tls", "tls"),
        ("looming.tls.device", "tls"),
        ("looming.tlsx", None),
        ("looming.store.kv", "store"),
        ("looming.ffi", None),
        ("looming.ffi.dynamic", None),
        ("looming.ffi.compiled", "ffi"),
        ("looming.http.server", None),
    ],
)
def test_extra_for(module: str, extra: str | None) -> None:
    assert extras.extra_for(module) == extra


def test_the_extras_table_matches_the_project_metadata() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional: dict[str, list[str]] = project["optional-dependencies"]

    def names(requirements: list[str]) -> set[str]:
        from packaging.requirements import Requirement

        return {Requirement(r).name for r in requirements}

    assert names(project["dependencies"]) == {"h11"}
    for extra, packages in extras.EXTRAS.items():
        assert names(optional[extra]) == set(packages), extra
    assert optional["vm"] == []
    assert optional["all"] == ["looming[tls,store,ffi,http2,websocket,vm]"]
    assert "looming[all]" in optional["test"]
    assert set(extras.PARTS.values()) == set(extras.EXTRAS)
    assert cast(Any, extras.MissingExtra("tls", "x", ["cryptography"])).extra == "tls"


def test_serving_the_store_over_tls_names_the_tls_extra(tmp_path: Path) -> None:
    # looming[store] without looming[tls]: dulwich is there, cryptography is not.
    code = (
        "import sys\nsys.modules['cryptography'] = None\n"
        "from looming.cli import main\nsys.exit(main())"
    )
    looming = [sys.executable, "-c", code]
    init = subprocess.run([*looming, "store", "init", "repo"], cwd=tmp_path, check=False)
    assert init.returncode == 0
    tls_options = ["--cert", "server.pem", "--key", "server.key"]
    done = subprocess.run(
        [*looming, "store", "serve", "--repo", "repo", "--port", "0", *tls_options],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "looming store: serving the store over TLS (--cert, --key) needs looming's 'tls' "
        "extra (cryptography is not installed): pip install 'looming[tls]'"
    ]


def test_without_h2_and_wsproto_the_server_speaks_http_1_1() -> None:
    # An ASGI app behind looming's server, h2 and wsproto hidden: an HTTP/2
    # preface and a WebSocket upgrade are answered as HTTP/1.1, nothing raises.
    done = subprocess.run(
        [sys.executable, "-c", NO_H2_OR_WSPROTO],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    scopes, upgrade_reply, preface_reply = done.stdout.splitlines()
    assert scopes == "['http']"  # the upgrade reached the app as a plain request
    assert upgrade_reply.startswith("HTTP/1.1 200 ")
    assert re.match(r"HTTP/1\.1 (400|505) ", preface_reply), preface_reply
    assert "Traceback" not in done.stderr


NO_H2_OR_WSPROTO = """
import socket, sys
sys.modules["h2"] = None
sys.modules["wsproto"] = None
from looming.http.asgi import AsgiAdapter
from tests.http.serving import serve_in_thread

scopes = []

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    scopes.append(scope["type"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"plain"})

def exchange(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while b"\\r\\n\\r\\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.decode("latin-1").splitlines()[0] if reply else ""

with serve_in_thread(lambda: AsgiAdapter(app)) as running:
    upgrade = exchange(
        running.port,
        b"GET /chat HTTP/1.1\\r\\nhost: x\\r\\nconnection: Upgrade\\r\\nupgrade: websocket\\r\\n"
        b"sec-websocket-version: 13\\r\\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n\\r\\n",
    )
    preface = exchange(running.port, b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n")
print(scopes)
print(upgrade)
print(preface)
"""
