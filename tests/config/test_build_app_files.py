"""What a unix artifact carries besides modules: the files an application
reads beside its modules (Jinja2 templates, Starlette's StaticFiles), modules
libraries import by a name in a string, and packages' metadata."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from looming.config.build import _shadowed_module, module_closure
from looming.config.build_native import application_files, referenced_paths
from tests.config.tooling import looming, running

STARLETTE_APP = """
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


async def home(request):
    name = request.query_params.get("name", "?")
    return templates.TemplateResponse(request, "index.html", {"name": name})


app = Starlette(
    routes=[
        Route("/", home),
        Mount("/static", StaticFiles(directory=HERE / "assets"), name="static"),
    ]
)
"""

UNIKERNEL = """
from typing import Any

from app import app

from looming.devices import Clock, Console, Stack
from looming.http.service import HttpSettings, serve_asgi


class Site:
    def __init__(self, console: Console, stack: Stack, clock: Clock, *, port: int, **http: Any):
        self.console, self.stack, self.clock, self.port = console, stack, clock, port
        self.settings = HttpSettings.from_keys(**http)

    async def start(self) -> None:
        await serve_asgi(
            app, self.console, self.stack, clock=self.clock, port=self.port, settings=self.settings
        )
"""

CONFIG = """
from looming.config import clock, console, default_network, http_keys, key, main, register, stack

port = key("port", int, default=8000, doc="TCP port")
register("site", [main("unikernel:Site", [console(), stack(default_network()), clock()],
                       keys=[port, *http_keys()])])
"""


def starlette_app(folder: Path) -> Path:
    app = folder / "site"
    (app / "templates").mkdir(parents=True)
    (app / "assets" / "css").mkdir(parents=True)
    (app / "app.py").write_text(STARLETTE_APP)
    (app / "unikernel.py").write_text(UNIKERNEL)
    (app / "config.py").write_text(CONFIG)
    (app / "templates" / "base.html").write_text("<main>{% block body %}{% endblock %}</main>")
    (app / "templates" / "index.html").write_text(
        '{% extends "base.html" %}{% block body %}Hello {{ name }}'
        "<link href=\"{{ url_for('static', path='css/site.css') }}\">{% endblock %}"
    )
    (app / "assets" / "css" / "site.css").write_text("body { color: teal }\n")
    (app / "assets" / ".env").write_text("SECRET=1\n")
    outside = folder / "outside.txt"
    outside.write_text("not for the web\n")
    (app / "assets" / "leak.txt").symlink_to(outside)
    return app


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_templates_and_static_files_beside_the_app_are_served_from_the_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOMING_NATIVE_CACHE", str(tmp_path / "cache"))
    app = starlette_app(tmp_path)
    # Outside git, a packed file keeps its own time (see looming.config.build_times).
    os.utime(app / "assets" / "css" / "site.css", (1_700_000_000, 1_700_000_000))
    looming(app, "configure", "-t", "unix")
    built = looming(app, "build").stdout
    assert "name beside them: assets/, templates/" in built
    with zipfile.ZipFile(app / "dist" / "site-unix.pyz") as z:
        names = z.namelist()
    assert "_looming_native/app/templates/index.html" in names
    assert "_looming_native/app/app.py" in names and "app.py" not in names
    assert not any(n.endswith((".env", "leak.txt")) for n in names)
    # The artifact alone serves them: the folders are gone from the checkout.
    for folder in ("templates", "assets"):
        for path in sorted((app / folder).rglob("*"), reverse=True):
            path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
        (app / folder).rmdir()
    with running(app, "--port", "0", ready=r"serving (http://\S+)") as (_proc, ready):
        base = ready.group(1)
        status, _headers, body = fetch(f"{base}/?name=%3Cloom%3E")
        assert status == 200
        assert body.decode() == (
            f'<main>Hello &lt;loom&gt;<link href="{base}/static/css/site.css"></main>'
        )
        status, headers, body = fetch(f"{base}/static/css/site.css")
        assert (status, body) == (200, b"body { color: teal }\n")
        # The packed time, not the time of extraction: the same on every machine.
        assert headers["last-modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"
        assert fetch(f"{base}/static/.env")[0] == 404
        assert fetch(f"{base}/static/leak.txt")[0] == 404


CWD_APP = """
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

# As FastAPI's tutorial writes it: relative to the folder the server starts in.
app = Starlette(routes=[Mount("/static", StaticFiles(directory="static"), name="static")])
"""


def test_a_folder_relative_to_the_start_folder_builds_and_is_served_from_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOMING_NATIVE_CACHE", str(tmp_path / "cache"))
    app = tmp_path / "site"
    (app / "static").mkdir(parents=True)
    (app / "static" / "hello.txt").write_text("from the start folder\n")
    (app / "app.py").write_text(CWD_APP)
    (app / "unikernel.py").write_text(UNIKERNEL)
    (app / "config.py").write_text(CONFIG)
    looming(app, "configure", "-t", "unix")
    looming(app, "build")  # StaticFiles checks the folder when the app is imported
    with running(app, "--port", "0", ready=r"serving (http://\S+)") as (_proc, ready):
        assert fetch(f"{ready.group(1)}/static/hello.txt")[2] == b"from the start folder\n"


def test_named_paths_and_conventional_folders_are_found(tmp_path: Path) -> None:
    app = tmp_path / "app"
    for folder in ("static", "templates", "data", "_build", ".git", "venv", "kv"):
        (app / folder).mkdir(parents=True)
        (app / folder / "x.txt").write_text("x")
    (app / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (app / "config.json").write_text("{}")
    source = (
        b'DATA = "data"\nCONFIG = "config.json"\nBUILD = "_build"\nGIT = ".git"\n'
        b'VENV = "venv"\nKV = "kv"\nUP = "../"\nABS = "/etc"\nWORD = "hello"\n'
    )
    found = referenced_paths([(app / "main.py", source)], app, [app / "kv"])
    root = app.resolve()
    assert [p.relative_to(root).as_posix() for p in found] == [
        "config.json",
        "data",
        "static",
        "templates",
    ]
    files = application_files(found, app)
    assert sorted(files) == ["config.json", "data/x.txt", "static/x.txt", "templates/x.txt"]


def test_a_shim_that_runs_the_module_beside_it_is_passed_over(tmp_path: Path) -> None:
    (tmp_path / "multipart").mkdir()
    shim = tmp_path / "multipart" / "__init__.py"
    shim.write_text('for p in sys.path:\n    file_path = Path(p, "multipart.py")\n')
    (tmp_path / "multipart.py").write_text("class MultipartSegment: ...\n")
    assert _shadowed_module("multipart", tmp_path / "multipart") == tmp_path / "multipart.py"
    shim.write_text("from python_multipart import *\n")
    assert _shadowed_module("multipart", tmp_path / "multipart") == tmp_path / "multipart"


LOGGING_UNIKERNEL = """
import logging
import logging.config

from looming.devices import Console

logging.config.dictConfig({
    "version": 1,
    "handlers": {"audit": {"class": "handlers.audit.AuditHandler"}},
    "root": {"handlers": ["audit"], "level": "INFO"},
})


class Logged:
    def __init__(self, console: Console) -> None:
        self.console = console

    async def start(self) -> None:
        logging.getLogger("app").info("woven")
"""

AUDIT = """
import logging


class AuditHandler(logging.Handler):
    def emit(self, record):
        print("AUDIT", record.getMessage(), flush=True)
"""


def logging_app(folder: Path, handler: str) -> Path:
    app = folder / "logged"
    (app / "handlers").mkdir(parents=True)
    (app / "handlers" / "__init__.py").write_text("")
    (app / "handlers" / "audit.py").write_text(AUDIT)
    unikernel = LOGGING_UNIKERNEL.replace("handlers.audit.AuditHandler", handler)
    (app / "unikernel.py").write_text(unikernel)
    (app / "config.py").write_text(
        "from looming.config import console, main, register\n"
        'register("logged", [main("unikernel:Logged", [console()])])\n'
    )
    return app


def test_a_class_named_in_a_string_is_packed(tmp_path: Path) -> None:
    app = logging_app(tmp_path, "handlers.audit.AuditHandler")
    closure = module_closure(app / "unikernel.py", app)
    assert "handlers.audit" in closure.modules
    looming(app, "configure", "-t", "unix")
    looming(app, "build")
    env = {**os.environ, "LOOMING_NATIVE_CACHE": str(tmp_path / "cache")}
    ran = subprocess.run(
        [sys.executable, str(app / "dist" / "logged-unix.pyz")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "AUDIT woven" in ran.stdout


def test_a_module_missing_behind_another_error_is_named(tmp_path: Path) -> None:
    app = logging_app(tmp_path, "handlers.gone.AuditHandler")
    looming(app, "configure", "-t", "unix")
    failed = looming(app, "build", check=False)
    assert failed.returncode == 2
    message = failed.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert re.search(r"No module named 'handlers\.gone'", message), message
    assert "Traceback" not in message
