"""A Django ASGI application builds and serves as an artifact: Django loads
its template tags, middleware and default backends by name (DYNAMIC_IMPORTS
packs them), and its autoreloader's ``import __main__`` is never taken for a
module to pack, with or without ``packages=["django"]``."""

from __future__ import annotations

import json
import textwrap
import urllib.request
from pathlib import Path

import django  # noqa: F401  (the test extra installs it)
import pytest

from tests.config.tooling import looming, running

APP = """
from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="x" * 50,
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
)
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def index(request):
    return JsonResponse({"path": request.path, "q": request.GET.get("q")})


async def aview(request):
    return HttpResponse(b"async django")


def post(request):
    return JsonResponse({"len": len(request.body)})


urlpatterns = [path("", index), path("a", aview), path("post", post)]
app = get_asgi_application()
"""

UNIKERNEL = """
from typing import Any

from app import app
from looming.devices import Clock, Console, Stack
from looming.http.service import HttpSettings, serve_asgi


class Svc:
    def __init__(self, console: Console, stack: Stack, clock: Clock, *, port: int, **http: Any):
        self.console, self.stack, self.clock, self.port = console, stack, clock, port
        self.settings = HttpSettings.from_keys(**http)

    async def start(self) -> None:
        await serve_asgi(
            app, self.console, self.stack, clock=self.clock, port=self.port,
            settings=self.settings,
        )
"""

CONFIG = """
from looming.config import clock, console, default_network, http_keys, key, main, register, stack

port = key("port", int, default=8000, doc="TCP port")
service = main("unikernel:Svc", [console(), stack(default_network()), clock()],
               keys=[port, *http_keys()])
register("dj", [service]{packages})
"""


@pytest.mark.slow
@pytest.mark.parametrize("packages", ["", ', packages=["django"]'], ids=["table", "packages"])
def test_a_django_app_builds_and_answers(tmp_path: Path, packages: str) -> None:
    app = tmp_path / "dj"
    app.mkdir()
    (app / "app.py").write_text(APP)
    (app / "unikernel.py").write_text(UNIKERNEL)
    (app / "config.py").write_text(textwrap.dedent(CONFIG).format(packages=packages))
    looming(app, "configure", "-t", "unix")
    built = looming(app, "build", check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    with running(app, "--port", "0", ready=r"serving (http://\S+)") as (_proc, ready):
        base = ready.group(1)
        with urllib.request.urlopen(f"{base}/?q=1", timeout=10) as answer:
            assert json.loads(answer.read()) == {"path": "/", "q": "1"}
        with urllib.request.urlopen(f"{base}/a", timeout=10) as answer:
            assert answer.read() == b"async django"
        with urllib.request.urlopen(f"{base}/post", data=b"abc", timeout=10) as answer:
            assert json.loads(answer.read()) == {"len": 3}
