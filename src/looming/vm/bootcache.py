"""What the guest's Python would compile at every boot, compiled at build time.

Importing a unikernel makes the interpreter compile source code that no
``.pyc`` holds: every ``@dataclass`` writes its ``__init__``, ``__repr__``,
``__eq__`` (and more) as text and ``exec``\\ s it, and every
``re.compile`` at module level runs the pure-Python regular-expression
compiler. For the static website that is some 350 generated functions and
30 patterns, a fifth of its import time, and under emulation tenths of a
second at every boot.

At build time a child interpreter of the guest's Python version imports
the unikernel as the guest would (its zipapp, the guest's own standard
library first on the path) and records each generated function's source
with its compiled code, and each pattern with the arguments its compiled
form is made from (``_sre.compile``'s). The image carries them as one
marshalled file; /init ([init.py](init.py)) puts wrappers in front of
``dataclasses``' ``exec`` and ``re._compiler.compile`` that answer from it
when the source text (or the pattern and flags) is exactly the one
recorded, and fall back to compiling otherwise. What is not reached at
build time (a module imported later) is compiled as before.
"""

from __future__ import annotations

import marshal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from looming.vm.image import ImageContents

PATH_IN_IMAGE = "/usr/lib/looming-boot-cache"

RECORD_TIMEOUT = 120.0
VERSION = 1  # of the file's layout, checked by /init

# Run with -I -S: the guest's stdlib goes first on the path, so its own
# dataclasses and re write the texts and codes the guest will ask for.
_PROGRAM = r"""
import marshal, sys
archive, stdlib, version = sys.argv[1], sys.argv[2], int(sys.argv[3])
own, extra = [m for m in sys.argv[4].split(",") if m], [p for p in sys.argv[5:] if p]
sys.path[:0] = [archive, stdlib]
sys.path.extend(extra)
import dataclasses, re, re._compiler as compiler, _sre
functions, patterns = {}, {}

def recording_exec(source, globals=None, locals=None, /):
    if type(source) is str and source not in functions:
        functions[source] = compile(source, "<string>", "exec", dont_inherit=True)
    exec(source, globals, locals)

class RecordingSre:
    def __getattr__(self, name):
        return getattr(_sre, name)

    def compile(self, pattern, flags, code, groups, groupindex, indexgroup):
        if type(pattern) in (str, bytes):
            patterns[(pattern, int(current[-1]))] = (
                int(flags), [int(c) for c in code], groups, dict(groupindex), tuple(indexgroup)
            )
        return _sre.compile(pattern, flags, code, groups, groupindex, indexgroup)

current = [0]
original_compile = compiler.compile

def tracking_compile(p, flags=0):
    current.append(flags)
    try:
        return original_compile(p, flags)
    finally:
        current.pop()

dataclasses.exec = recording_exec
compiler._sre = RecordingSre()
compiler.compile = tracking_compile
try:
    import zipimport
    main = zipimport.zipimporter(archive).get_code("__main__")
    exec(main, {"__name__": "__looming_boot_cache__"})
    for name in own:
        __import__(name)
except BaseException as error:  # what was recorded until then still helps
    print(f"stopped at {type(error).__name__}: {error}", file=sys.stderr)
sys.stdout.buffer.write(marshal.dumps(
    {"version": version, "re_magic": compiler.MAGIC, "functions": functions, "patterns": patterns}
))
"""


def record(archive: Path, stdlib_dir: Path, own_modules: list[str]) -> bytes | None:
    """The marshalled cache for the unikernel in ``archive`` (its ``__main__``
    and ``own_modules`` imported), with ``stdlib_dir`` the guest's standard
    library; None when it cannot be made here (the child failed)."""
    paths = sysconfig.get_paths()
    # Compiled packages (wheels in the image) come from this installation.
    extra = [paths["purelib"], paths["platlib"]]
    command = [
        sys.executable, "-I", "-S", "-c", _PROGRAM,
        str(archive), str(stdlib_dir), str(VERSION), ",".join(own_modules), *extra,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, capture_output=True, timeout=RECORD_TIMEOUT, check=False, cwd=archive.parent
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0 or not done.stdout:
        return None
    return done.stdout


def for_image(contents: ImageContents) -> bytes | None:
    """The cache for an image's unikernel; None when it has no stdlib module
    to find the guest's standard library by, or the recording failed."""
    stdlib_dir = next(
        (
            module.path.parent
            for module in contents.stdlib.modules.values()
            if "." not in module.name and not module.is_package and not module.is_extension
        ),
        None,
    )
    if stdlib_dir is None:
        return None
    with zipfile.ZipFile(contents.pyz) as archive:
        tops = {name.split("/")[0].removesuffix(".py") for name in archive.namelist()}
    app_dir = contents.app_dir
    own = sorted(
        top
        for top in tops - {"__main__"}
        if (app_dir / f"{top}.py").is_file() or (app_dir / top).is_dir()
    )
    return record(contents.pyz, stdlib_dir, own)


def summary(cache: bytes) -> str:
    """``N functions, M patterns``: what a cache holds."""
    content = marshal.loads(cache)
    return f"{len(content['functions'])} generated functions, {len(content['patterns'])} patterns"
