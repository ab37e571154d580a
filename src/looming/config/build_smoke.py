"""The build's last check: import the unikernel's modules from the built
artifact alone, in an isolated child interpreter, and name what is missing.

A module found only by name at run time, a compiled package the host lacks
or a file the application reads at import time shows up here, before the
artifact reaches ``dist/``, rather than on the machine it is deployed to.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from looming.config import build_boot
from looming.errors import ConfigError

if TYPE_CHECKING:
    from looming.config.build import Closure

SMOKE_TIMEOUT = 120.0

_SMOKE_PROGRAM = """
import importlib.machinery, json, sys
zipapp, allowed, modules = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
class CompiledPackages:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        where = allowed.get(name)
        return None if where is None else importlib.machinery.PathFinder.find_spec(name, [where])
sys.meta_path.append(CompiledPackages)
sys.path.insert(0, zipapp)
if "--boot" in modules:
    modules.remove("--boot")
    import _looming_boot
    _looming_boot.prepare(zipapp)
for name in modules:
    try:
        __import__(name)
    except Exception as error:
        # A module missing, perhaps behind another error (logging.config's
        # ValueError for a handler class it could not import).
        cause = error
        while cause is not None and not isinstance(cause, ModuleNotFoundError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        print(json.dumps({"module": name, "missing": cause.name, "error": str(cause)}))
        sys.exit(3)
"""


_SMOKE_ENVIRONMENT = ("PATH", "HOME", "XDG_CACHE_HOME", build_boot.CACHE_ENV)
"""What the smoke import's child keeps of the environment (the cache of packed
compiled packages is found through it)."""


def smoke_import(
    artifact: Path,
    modules: list[str],
    closure: Closure,
    *,
    natives: bool = False,
    boot: bool = False,
    app_dir: Path | None = None,
    app_files: Sequence[str] = (),
) -> None:
    """Import ``modules`` from ``artifact`` alone; ConfigError naming what is missing.

    The child interpreter is isolated (``-I -S``): it sees the artifact, the
    standard library and the compiled packages the artifact leaves to the
    host (none with ``natives``: the artifact's own are extracted as at
    start), and nothing else that happens to be installed here. With
    ``boot`` the artifact's start (:func:`build_boot.prepare`) runs first: it
    extracts the compiled packages and the application's tree of modules and
    the files they read, as the unix start, the sim and the VM image lay
    them out.
    """
    if not modules:
        return
    env = {k: os.environ[k] for k in _SMOKE_ENVIRONMENT if k in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    allowed = {} if natives else closure.search_paths
    command = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        _SMOKE_PROGRAM,
        str(artifact),
        json.dumps(allowed, sort_keys=True),
        *modules,
        *(["--boot"] if boot else []),
    ]
    with tempfile.TemporaryDirectory(prefix="looming-smoke-") as cwd:
        # The files the application names, also where a path relative to the
        # current folder finds them (StaticFiles(directory="static") started
        # in the application's folder, as `looming run` and uvicorn are).
        for top in sorted({name.partition("/")[0] for name in app_files}):
            if app_dir is not None:
                Path(cwd, top).symlink_to((app_dir / top).resolve())
        try:
            done = subprocess.run(
                command, cwd=cwd, env=env, capture_output=True, text=True, timeout=SMOKE_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(
                f"importing {', '.join(modules)} from the built artifact took over "
                f"{SMOKE_TIMEOUT:.0f} s; move work done at import time into start()"
            ) from None
    if done.returncode == 0:
        return
    if done.returncode == 3:
        found = json.loads(done.stdout.strip().splitlines()[-1])
        top = str(found["missing"] or "").partition(".")[0]
        advice = (
            f"Install {top!r} if it is not, or pack it with "
            f"register(..., packages=[{top!r}]) in config.py"
            if top
            else "Install what it names, or report it as a build bug"
        )
        raise ConfigError(
            f"the built artifact cannot import {found['module']!r}: {found['error']}. {advice}"
        )
    last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise ConfigError(
        f"importing {', '.join(modules)} from the built artifact failed: {last}; "
        "fix the error (run the module with python to see the traceback)"
    )


def top_level_imports(main_py: Path) -> list[str]:
    """The modules the generated ``main.py`` imports when it starts (the
    devices' implementations: looming.tls, ...), to import in the smoke test."""
    if not main_py.is_file():
        return []
    names = []
    for node in ast.parse(main_py.read_bytes()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return sorted(set(names))
