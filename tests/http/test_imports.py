"""looming.http imports each part when first used: a static site loads no
ASGI adapter, no client, and none of the email package."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_a_static_site_imports_neither_asgi_nor_the_client_nor_email() -> None:
    loaded = _modules_after("from looming.http import HttpServer, StaticSite")
    assert {"looming.http.server", "looming.http.static"} <= loaded
    assert "looming.http.asgi" not in loaded
    assert "looming.http.client" not in loaded
    assert not {m for m in loaded if m == "email" or m.startswith("email.")}
    assert "mimetypes" not in loaded


def test_every_public_name_is_there_and_is_its_module_s_own() -> None:
    import looming.http
    from looming.http import asgi, client, message, server, static

    for name in looming.http.__all__:
        value = getattr(looming.http, name)
        owner = next(m for m in (asgi, client, message, server, static) if hasattr(m, name))
        assert value is getattr(owner, name)
    loaded = _modules_after("from looming.http import *")
    assert {"looming.http.asgi", "looming.http.client"} <= loaded


def test_an_unknown_name_is_an_attribute_error() -> None:
    import looming.http

    with pytest.raises(AttributeError, match="has no attribute 'HttpServr'"):
        _ = looming.http.HttpServr  # type: ignore[attr-defined]
    with pytest.raises(ImportError):
        exec("from looming.http import HttpServr", {})
