"""``pip install looming`` as a user gets it: the built wheel in a fresh
environment with h11 only, used from a folder outside the checkout.

The environment has no cryptography, dulwich, cffi, h2 or wsproto, so these
tests also prove the core works without the extras, and that an application
needing one is stopped at configure time with the extra's name.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import selectors
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.packaging.conftest import EXAMPLES, REPO, Dist, FreshEnv, copy_example

EXTRA_PACKAGES = ("cryptography", "dulwich", "cffi", "h2", "wsproto")
# A build and a fresh environment (about 10 s): the whole suite and
# make test-pythons run these, the fast tier does not.
pytestmark = pytest.mark.slow


def test_the_wheel_declares_the_core_and_one_extra_per_part(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = wheel.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(info).decode()
        entry_points = wheel.read(info.replace("METADATA", "entry_points.txt")).decode()
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
    core = [r for r in requires if "extra ==" not in r]
    assert core == ["h11>=0.14"]
    for extra, package in [
        ("tls", "cryptography"),
        ("store", "dulwich"),
        ("ffi", "cffi"),
        ("http2", "h2"),
        ("websocket", "wsproto"),
    ]:
        assert any(r.startswith(package) and f'extra == "{extra}"' in r for r in requires), extra
    assert 'looming[ffi,http2,store,tls,vm,websocket]; extra == "all"' in requires
    assert 'looming[all]; extra == "test"' in requires
    provided = re.findall(r"^Provides-Extra: (.+)$", metadata, re.M)
    assert {"tls", "store", "ffi", "http2", "websocket", "vm", "all", "test"} <= set(provided)
    assert "License-Expression: ISC" in metadata
    assert "Requires-Python: >=3.11" in metadata
    for version in ("3.11", "3.12", "3.13"):
        assert f"Classifier: Programming Language :: Python :: {version}" in metadata
    assert "looming = looming.cli:main" in entry_points
    assert "looming_sim = looming.sim.pytest_plugin" in entry_points
    # The package, its marker of inline types and its license; nothing else at top level.
    assert "looming/py.typed" in names and "looming/cli.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {n.split("/")[0] for n in names} == {"looming", info.split("/")[0]}


def test_the_sdist_holds_what_a_user_runs_and_no_build_output(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for needed in [
        "pyproject.toml",
        "LICENSE",
        "CHANGELOG.md",
        "README.md",
        "Makefile",
        "src/looming/py.typed",
        "src/looming/cli.py",
        "examples/hello/config.py",
        "examples/static_website/htdocs/index.html",
        "tests/packaging/test_wheel.py",
        "scripts/system-deps.sh",
    ]:
        assert needed in names, needed
    leftovers = [
        n
        for n in names
        if "__pycache__" in n or n.endswith((".pyc", ".pyz")) or "/_build/" in n + "/"
    ]
    assert leftovers == []


def test_the_environment_holds_the_wheel_and_h11_only(core_env: FreshEnv, tmp_path: Path) -> None:
    probe = (
        "import importlib.util, json, looming, sys\n"
        "print(json.dumps({'file': looming.__file__, 'path': sys.path,"
        " 'missing': [n for n in sys.argv[1:] if importlib.util.find_spec(n) is None]}))"
    )
    done = core_env.run(core_env.python, "-c", probe, *EXTRA_PACKAGES, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert Path(facts["file"]).is_relative_to(core_env.site_packages)
    assert not any(str(REPO) in p for p in facts["path"])
    assert facts["missing"] == list(EXTRA_PACKAGES)
    installed = sorted(p.name.split("-")[0] for p in core_env.site_packages.glob("*.dist-info"))
    assert installed == ["h11", "looming"]
    # Every requirement the wheel declares (without extras) is met.
    pip = core_env.run(
        sys.executable, "-m", "pip", "--python", core_env.python, "check", cwd=tmp_path
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr


def test_looming_help_and_version(core_env: FreshEnv, tmp_path: Path) -> None:
    done = core_env.run(core_env.looming, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for verb in ("configure", "build", "run", "describe", "clean", "sim"):
        assert verb in done.stdout
    version = core_env.run(core_env.looming, "--version", cwd=tmp_path)
    assert version.stdout.strip() == f"looming {importlib.metadata.version('looming')}"


def test_hello_configures_builds_and_runs(core_env: FreshEnv, app_copy: Path) -> None:
    app = copy_example("hello", app_copy)
    for step in (["configure", "-t", "unix"], ["build"]):
        done = core_env.run(core_env.looming, *step, cwd=app)
        assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"
    assert (app / "dist" / "hello-unix.pyz").is_file()
    ran = core_env.run(core_env.looming, "run", "--greetings", "2", cwd=app)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[-2:] == [
        "hello from looming (1/2)",
        "hello from looming (2/2)",
    ]


def _serving_url(process: subprocess.Popen[str], deadline: float) -> str:
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    seen: list[str] = []
    while time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(r"serving (http://127\.0\.0\.1:\d+)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"the website did not start: {''.join(seen)}")


def test_static_website_serves_its_pages_over_loopback(core_env: FreshEnv, app_copy: Path) -> None:
    app = copy_example("static_website", app_copy)
    for step in (["configure", "-t", "unix"], ["build"]):
        done = core_env.run(core_env.looming, *step, cwd=app)
        assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"
    # Run the artifact with the fresh environment's Python, as `looming run` does.
    process = subprocess.Popen(
        [str(core_env.looming), "run", "--port", "0"],
        cwd=app,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": f"{core_env.root / 'bin'}:/usr/bin:/bin"},
    )
    try:
        url = _serving_url(process, time.monotonic() + 20)
        with urllib.request.urlopen(url + "/", timeout=10) as response:
            assert response.status == 200
            assert response.headers["content-type"] == "text/html; charset=utf-8"
            body = response.read()
        assert body == (EXAMPLES / "static_website" / "htdocs" / "index.html").read_bytes()
        with urllib.request.urlopen(url + "/css/site.css", timeout=10) as response:
            assert response.read() == (app / "htdocs" / "css" / "site.css").read_bytes()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _out, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, err
    assert "received SIGTERM, stopping" in err


def test_an_application_needing_an_extra_stops_at_configure(
    core_env: FreshEnv, app_copy: Path
) -> None:
    for example, extra in [("https_website", "tls"), ("store_website", "store")]:
        app = copy_example(example, app_copy)
        done = core_env.run(core_env.looming, "configure", "-t", "unix", cwd=app)
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert f"pip install 'looming[{extra}]'" in lines[0]
        assert str(app / "config.py") in lines[0]
        assert not (app / "_build").exists()


def test_the_tls_and_store_commands_name_their_extra(core_env: FreshEnv, tmp_path: Path) -> None:
    for verb, extra in [("tls", "tls"), ("store", "store")]:
        for args in ([verb, "--help"], [verb]):
            done = core_env.run(core_env.looming, *args, cwd=tmp_path)
            assert done.returncode == 2
            assert done.stdout == ""
            assert done.stderr.strip().splitlines() == [
                f"looming: looming {verb} needs looming's {extra!r} extra "
                f"({EXTRA_PACKAGES[['tls', 'store'].index(extra)]} is not installed): "
                f"pip install 'looming[{extra}]'"
            ]
    sim = core_env.run(core_env.looming, "sim", "--help", cwd=tmp_path)
    assert sim.returncode == 0, sim.stderr
