"""At build time, the unikernel imported against what its image holds.

The image's standard library is computed from import statements
(:mod:`looming.vm.stdlib`), which cannot see everything: an import that
only some code path makes, a module left out as rarely needed, a name
imported at run time. Rather than let such a module crash the guest at
every boot, the build imports the application's modules, the generated
``main.py`` and the modules imported by name that were packed
(:data:`looming.config.build.DYNAMIC_IMPORTS`) in a child interpreter of
the guest's Python version that sees only the unikernel's archive, the
standard-library modules the image holds (any other stdlib name is refused
by a finder placed first) and the compiled packages the image holds as
wheels (imported from the host's installation of the same versions). A
module missing there is a :class:`~looming.errors.ConfigError` naming it
and the file that imports it: exit 2, before anything is written to
``dist/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from looming.errors import ConfigError

CHECK_TIMEOUT = 120.0
MISSING_EXIT = 3

# Only builtins and sys before the finder is in place: a stdlib module the
# program imported itself would be found in sys.modules, and so not checked.
_PROGRAM = r"""
import sys
archive, main_py = sys.argv[1], sys.argv[2]
allowed = set(sys.argv[3].split(","))
stdlib = set(sys.argv[4].split(","))
compiled = dict(item.split("=", 1) for item in sys.argv[5].split("\n") if item)
modules = [m for m in sys.argv[6].split(",") if m]
tree = sys.argv[7] if len(sys.argv) > 7 else ""

path_finder = next(f for f in sys.meta_path if getattr(f, "__name__", "") == "PathFinder")

class NotInImage:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in stdlib and name not in allowed:
            raise ModuleNotFoundError(f"No module named {name!r} in the image", name=name)
        return None

class ImageWheels:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        where = compiled.get(name)
        if where is None:
            return None
        return path_finder.find_spec(name, [where])

def importer(error):
    where, tb = "", error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith("<"):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where

sys.meta_path.insert(0, NotInImage)
sys.meta_path.append(ImageWheels)
sys.path.insert(0, archive)
if tree:  # the application's modules beside the files they read, as in the image
    sys.path.insert(0, tree)
names = ["__looming_main__", *modules]
for name in names:
    try:
        if name == "__looming_main__":
            with open(main_py, "rb") as source:
                code = compile(source.read(), main_py, "exec")
            exec(code, {"__name__": name, "__file__": main_py})
        else:
            __import__(name)
    except ModuleNotFoundError as error:
        print("MISSING", name, error.name or "", importer(error), sep="\t")
        sys.exit(3)
"""


@dataclass(frozen=True)
class ImageModules:
    """What the image holds, as the check sees it."""

    archive: Path  # the unikernel's zipapp
    main_py: Path  # the generated main.py
    stdlib: set[str]  # the image's standard-library modules, builtins and frozen ones
    stdlib_names: set[str]  # every name that belongs to the standard library
    compiled: dict[str, str]  # top-level name of a wheel's module -> host folder
    modules: list[str]  # the application's modules and those imported by name
    tree: Path | None = None  # the application tree, laid out as in the image


def check_imports(
    image: ImageModules, app_dir: Path, note: Callable[[str], None] = lambda _m: None
) -> None:
    """Import ``image.modules`` as the guest would; ConfigError when one is
    missing. Another failure is only noted: the guest may not share it."""
    command = [
        sys.executable, "-I", "-S", "-c", _PROGRAM,
        str(image.archive), str(image.main_py),
        ",".join(sorted(image.stdlib)), ",".join(sorted(image.stdlib_names)),
        "\n".join(f"{top}={where}" for top, where in sorted(image.compiled.items())),
        ",".join(image.modules),
        str(image.tree or ""),
    ]  # fmt: skip
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    try:
        done = subprocess.run(
            command,
            cwd=app_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"importing the unikernel's modules took over {CHECK_TIMEOUT:.0f} s; "
            "move work done at import time into start()"
        ) from None
    lines = done.stdout.strip().splitlines()
    if done.returncode == MISSING_EXIT and lines and lines[-1].startswith("MISSING\t"):
        line = lines[-1]
    else:
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            note(f"note: importing the unikernel here failed ({last}); the guest may too")
        return
    _tag, module, missing, where = [*line.split("\t"), "", "", ""][:4]
    raise ConfigError(_missing_message(module, missing, where, image, app_dir))


def _shown(where: str, image: ImageModules, app_dir: Path) -> str:
    """The importing file, named as the user knows it."""
    path, _sep, line = where.rpartition(":")
    stdlib = sysconfig.get_paths()["stdlib"]
    for prefix, label in (
        (str(image.archive) + "/", ""),
        (str(image.main_py), str(image.main_py.relative_to(app_dir))),
        (str(app_dir) + "/", ""),
        (stdlib + "/", "the standard library's "),
    ):
        if path.startswith(prefix):
            rest = path.removeprefix(prefix)
            return f"{label}{rest}:{line}" if rest else f"{label}:{line}"
    return where


def _missing_message(
    module: str, missing: str, where: str, image: ImageModules, app_dir: Path
) -> str:
    top = missing.partition(".")[0]
    importer = _shown(where, image, app_dir) if where else module
    if top in image.stdlib_names:
        advice = (
            f"{missing!r} is in the standard library but not in the image (left out as "
            "rarely needed, or reached only at run time): add it to "
            "looming.vm.stdlib.DYNAMIC_STDLIB for the module that imports it, or avoid it"
        )
    else:
        advice = (
            f"install {top!r} if it is not installed, or pack it with "
            f"register(..., packages=[{top!r}]) in config.py"
        )
    return f"the image lacks the module {missing!r}, imported by {importer}: {advice}"


def wheel_tops(relative_paths: Iterable[str]) -> set[str]:
    """The top-level module names of the wheels' files (``pkg/``, ``mod.py``, ``_ext.*.so``)."""
    tops: set[str] = set()
    for relative in relative_paths:
        first = relative.split("/")[0]
        if first.endswith((".dist-info", ".libs", ".data")) or first.endswith(".pth"):
            continue
        if "/" in relative:
            tops.add(first)
        elif first.endswith(".py"):
            tops.add(first.removesuffix(".py"))
        elif first.endswith(".so"):
            tops.add(first.split(".")[0])
    return tops
