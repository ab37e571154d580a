"""The hostile library (tests/ffi/clib/hostile.c), built by the compiler, described once.

Run as a script (``python -m tests.ffi.hostile LIBDIR``) it calls the functions
that send signals under each confinement layer and prints what happened, as
JSON: the tests run it inside a throwaway PID namespace, so a layer that
fails cannot signal anything outside that namespace.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from looming.ffi import Bindings, HelperError, c_int, c_str, foreign
from looming.ffi.confine import Confinement
from looming.ffi.isolated import IsolatedLibrary, Limits
from looming.ffi.probe import find_compiler
from looming.unix.time import UnixTime

SOURCE = Path(__file__).parent / "clib" / "hostile.c"


def build(directory: Path, compiler: list[str] | None = None) -> Path:
    """Compile the hostile library into ``directory``; its path."""
    shutil.copy(SOURCE.with_suffix(".h"), directory / "hostile.h")
    target = directory / "libhostile.so"
    subprocess.run(
        [*(compiler or find_compiler()), "-O1", "-shared", "-fPIC", "-o", str(target), str(SOURCE)],
        check=True,
        capture_output=True,
    )
    return target


def hostile_bindings(directory: Path) -> Bindings:
    simple = ("null_deref", "spin", "sleep_long", "kill_parent", "kill_everyone", "fork_bomb")
    simple += ("open_shadow", "make_socket", "big_malloc")
    return Bindings(
        "hostile",
        library="hostile",
        soname=str(directory / "libhostile.so"),
        headers=["hostile.h"],
        include_dirs=[str(directory)],
        functions=[
            *(foreign(name, [], c_int) for name in simple),
            foreign("open_path", [("path", c_str)], c_int),
            foreign("add", [("a", c_int), ("b", c_int)], c_int),
        ],
    )


# Each layer on its own, then all of them (the default), for the signal tests.
SIGNAL_LAYERS: dict[str, Confinement] = {
    "seccomp": Confinement(namespaces=False, user=None),
    "namespaces": Confinement(seccomp=None, user=None),
    "user": Confinement(seccomp=None, namespaces=False),
    "all": Confinement(),
}


def signal_outcomes(directory: Path) -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    bindings = hostile_bindings(directory)
    for layer, confinement in SIGNAL_LAYERS.items():
        outcome: dict[str, object] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            library = IsolatedLibrary(
                bindings, confinement=confinement, limits=Limits.none(), timeout=10, time=UnixTime()
            )
        try:
            for name in ("kill_parent", "kill_everyone"):
                try:
                    outcome[name] = library[name]()
                except HelperError as exc:
                    outcome[name] = f"{type(exc).__name__}: {exc}"
                try:
                    outcome[f"{name} then"] = library.add(1, 2)
                except HelperError:  # it took its own helper down: one restart
                    outcome[f"{name} then"] = library.add(1, 2)
        finally:
            library.close()
        results[layer] = outcome
    return results


if __name__ == "__main__":
    print(json.dumps(signal_outcomes(Path(sys.argv[1]))))
