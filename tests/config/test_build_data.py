"""The files an application reads beside its modules (Jinja2 templates,
Starlette's StaticFiles) on the sim and vm targets, as on unix; and
`looming run` of a unix artifact that runs it as another machine would."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from looming.config import build_boot
from tests.config.test_build_app_files import fetch, starlette_app
from tests.config.tooling import looming, running
from tests.vm.test_nics import _cpio_names

SCENARIO = """
from looming import sim
from looming.http.client import HttpClient

SCENARIO = sim.Scenario("data", duration=30.0)
SCENARIO.node("site", {app!r}, ipv4="10.0.0.1/24", keys={{"port": 8000}})
SCENARIO.host("client", ipv4="10.0.0.2/24")

PATHS = ["/?name=sim", "/static/css/site.css", "/static/.env", "/static/leak.txt"]


async def fetch(stack):
    answers = []
    for path in PATHS:
        flow = await stack.tcp.connect("10.0.0.1", 8000, timeout=10.0)
        response = await HttpClient(flow).request("GET", path)
        answers.append((path, response.status, response.body))
        await flow.close()
    return answers


@SCENARIO.main
async def drive(world):
    await world.sleep(1.0)
    for path, status, body in await world.node("client").run(fetch):
        print("ANSWER", path, status, body)
"""


def test_a_sim_node_serves_its_templates_and_static_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOMING_NATIVE_CACHE", str(tmp_path / "cache"))
    app = starlette_app(tmp_path)
    looming(app, "configure", "-t", "sim")
    built = looming(app, "build").stdout  # StaticFiles checks its folder at import
    assert "packs what the application's modules name beside them: assets/, templates/" in built
    with zipfile.ZipFile(app / "dist" / "site-sim.pyz") as z:
        names = z.namelist()
    assert f"{build_boot.APP}templates/index.html" in names
    assert not any(n.endswith((".env", "leak.txt")) for n in names)
    scenario = tmp_path / "data.py"
    scenario.write_text(SCENARIO.format(app=str(app)))
    ran = subprocess.run(
        [sys.executable, "-m", "looming.cli", "sim", "run", str(scenario), "--no-pcap"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    answers = dict(re.findall(r"^ANSWER (\S+) (.+)$", ran.stdout, re.M))
    assert answers["/?name=sim"].startswith("200 b'<main>Hello sim<link href=")
    assert answers["/static/css/site.css"] == "200 b'body { color: teal }\\n'"
    assert answers["/static/.env"].startswith("404")
    assert answers["/static/leak.txt"].startswith("404")


DYNAMIC_APP = """
import importlib

NAME = "".join(["ur", "llib3"])  # computed: the build cannot read it


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    try:
        body, status = importlib.import_module(NAME).__name__.encode(), 200
    except ImportError as error:
        body, status = repr(error).encode(), 500
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def test_looming_run_sees_only_the_artifact_and_names_what_it_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("urllib3")  # installed here (a test peer's dependency), never imported
    monkeypatch.setenv("LOOMING_NATIVE_CACHE", str(tmp_path / "cache"))
    app = starlette_app(tmp_path)
    (app / "app.py").write_text(DYNAMIC_APP)
    looming(app, "configure", "-t", "unix")
    looming(app, "build")
    with running(app, "--port", "0", ready=r"serving (http://\S+)") as (proc, ready):
        status, _headers, body = fetch(ready.group(1) + "/")
    err = proc.stderr_text  # type: ignore[attr-defined]  # kept by running()
    # Not this interpreter's site-packages: the module is missing, as elsewhere.
    assert (status, body) == (500, b"ModuleNotFoundError(\"No module named 'urllib3'\")")
    told = [line for line in err.splitlines() if "does not hold the module" in line]
    assert len(told) == 1, err
    assert "'urllib3'" in told[0] and "register(..., packages=['urllib3'])" in told[0]
    # Packed as told, it runs.
    config = (app / "config.py").read_text()
    (app / "config.py").write_text(config.replace("keys=[port, *http_keys()])])", PACKED))
    looming(app, "configure", "-t", "unix")
    looming(app, "build")
    # uvloop and httptools, chosen at run time, are the running interpreter's.
    keys = ("--port", "0", "--loop", "uvloop", "--http-parser", "httptools")
    with running(app, *keys, ready=r"serving (http://\S+)") as (_proc, ready):
        assert fetch(ready.group(1) + "/")[::2] == (200, b"urllib3")


SITE = "usr/lib/python3/dist-packages"
"""Where the image holds the wheels' files (markupsafe's compiled speedups)."""

PACKED = "keys=[port, *http_keys()])], packages=['urllib3'])"


@pytest.mark.slow
def test_the_vm_image_lays_out_the_application_tree(tmp_path: Path) -> None:
    """The tree of modules and the files they read goes into the image as
    files, first on the guest's sys.path (the archive keeps the modules for
    the build's checks); hidden files and links leading out stay out."""
    app = starlette_app(tmp_path)
    looming(app, "configure", "-t", "vm", "--arch", "x86_64")
    built = looming(app, "build").stdout
    assert "importing the unikernel here failed" not in built  # the check sees the tree
    assert "packs what the application's modules name beside them: assets/, templates/" in built
    manifest = json.loads((app / "dist" / "site-vm.json").read_text())
    # Jinja2's lexer decodes a template's string literals with a codec found by name.
    assert "encodings.unicode_escape" in manifest["stdlib_modules"]
    initrd = app / "dist" / manifest["initrd"]
    raw = subprocess.run(["lz4", "-d", "-c", str(initrd)], capture_output=True, check=True).stdout
    files = _cpio_names(raw)
    tree = {n.removeprefix("app/files/") for n in files if n.startswith("app/files/")}
    assert {"app.py", "unikernel.py", "templates/index.html", "assets/css/site.css"} <= tree
    assert not any(n.endswith((".env", "leak.txt")) for n in tree)
    with zipfile.ZipFile(io.BytesIO(files["app/unikernel.pyz"])) as z:
        assert not [n for n in z.namelist() if n.startswith(build_boot.APP)]  # not twice
    # The tree with the image's archive, as /init runs them: the app finds its files.
    root = tmp_path / "guest"
    folders = {str(Path(name).parent) for name in files}
    for name, data in files.items():
        if name.startswith(("app/", SITE)) and name not in folders:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
    probe = (
        "import os, sys; sys.path[:0] = [os.path.abspath('app/files'), "
        f"os.path.abspath('app/unikernel.pyz'), os.path.abspath({SITE!r})];"
        "os.chdir('app/files'); import app;"
        "print(app.templates.get_template('index.html').render(name='vm', url_for=lambda *a, **k: 'u'))"
    )
    shown = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], cwd=root, capture_output=True, text=True
    )
    assert shown.stdout.strip() == '<main>Hello vm<link href="u"></main>', shown.stderr


WEBSOCKET_APP = """
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute


async def echo(websocket):
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())


app = Starlette(routes=[WebSocketRoute("/echo", echo)])
"""

WITHOUT_WSPROTO = (
    "import sys; sys.modules['wsproto'] = None; sys.argv[1:] = ['build'];"
    "from looming.cli import main; sys.exit(main())"
)


def test_a_build_using_websockets_without_wsproto_warns(tmp_path: Path) -> None:
    app = starlette_app(tmp_path)
    (app / "app.py").write_text(WEBSOCKET_APP)
    looming(app, "configure", "-t", "unix")
    built = subprocess.run(
        [sys.executable, "-c", WITHOUT_WSPROTO], cwd=app, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    assert "looming: warning: app uses WebSockets, but wsproto is not installed" in built.stderr, (
        built.stderr
    )
    # With wsproto (installed here), nothing to say.
    assert "WebSockets" not in looming(app, "build").stderr


@pytest.mark.parametrize("h2", ["installed", "missing"])
def test_the_first_upgrade_served_without_wsproto_is_logged_once(
    h2: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    from looming.http import AsgiAdapter, server
    from tests.http.serving import serve_in_thread

    async def echo(websocket: object) -> None:
        raise AssertionError("not served without wsproto")

    monkeypatch.setitem(sys.modules, "wsproto", None)
    if h2 == "missing":  # only the core installed: the server takes no upgrade at all
        monkeypatch.setitem(sys.modules, "h2", None)
    monkeypatch.setattr(server, "_UNSERVED_WEBSOCKETS", [], raising=False)
    adapter = AsgiAdapter(Starlette(routes=[WebSocketRoute("/echo", echo)]))
    upgrade = (
        b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bG9vbWluZy13cy1rZXkhIQ==\r\n\r\n"
    )
    with caplog.at_level("WARNING", "looming.http"), serve_in_thread(lambda: adapter) as running:
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as client:
                client.sendall(upgrade)
                assert client.recv(100).startswith(b"HTTP/1.1 404 ")
    told = [r.getMessage() for r in caplog.records if "wsproto is not installed" in r.getMessage()]
    assert len(told) == 1 and "WebSocket upgrade" in told[0]


@pytest.mark.slow
@pytest.mark.root
def test_the_oci_root_file_system_serves_the_files_beside_the_app(tmp_path: Path) -> None:
    """The unix target's --oci layer, run in a chroot with the image's own
    Python: its start script runs the application tree, as /init does."""
    app = starlette_app(tmp_path)
    looming(app, "configure", "-t", "unix")
    looming(app, "build", "--oci")
    layout = app / "dist" / "site-oci"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]))
    config = json.loads(_blob(layout, manifest["config"]["digest"]))["config"]
    rootfs = tmp_path / "rootfs"
    with tarfile.open(fileobj=io.BytesIO(_blob(layout, manifest["layers"][0]["digest"]))) as tar:
        tar.extractall(rootfs, filter="tar")
    port = str(20000 + (os.getpid() + 7) % 20000)
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    server = subprocess.Popen(
        [chroot, str(rootfs), *config["Entrypoint"], *config.get("Cmd", []), "--port", port],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(e.split("=", 1) for e in config["Env"]),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while fetch_or_none(base + "/?name=oci") is None:
            assert server.poll() is None and time.monotonic() < deadline, server.communicate()[0]
            time.sleep(0.2)
        status, _headers, body = fetch(base + "/?name=oci")
        assert (status, body[:21]) == (200, b"<main>Hello oci<link "), server_output(server)
        assert fetch(base + "/static/css/site.css")[::2] == (200, b"body { color: teal }\n")
        assert fetch(base + "/static/.env")[0] == 404
    finally:
        server.terminate()
        server.communicate(timeout=30)


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def fetch_or_none(url: str) -> tuple[int, dict[str, str], bytes] | None:
    try:
        return fetch(url)
    except OSError:
        return None


def server_output(server: subprocess.Popen[str]) -> str:
    server.terminate()
    return server.communicate(timeout=30)[0]
