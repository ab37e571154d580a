"""Checking a description's struct layouts against the C compiler.

The backends compute layouts themselves. When the description names its
headers and a compiler is at hand, a tiny program printing, for each
described record, its ``sizeof`` and alignment and for each field its
``offsetof``, ``sizeof`` and type class (``__builtin_classify_type``) is
built once (cached by a hash of its source) and its answers compared with
ours, so a missing field, a field of the wrong size, or one of the wrong
kind with the same layout (a ``float`` described as an ``int32_t``) is
reported before the first call.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

from looming.ffi.description import Bindings
from looming.ffi.errors import CompilerMissing, DescriptionMismatch
from looming.ffi.types import (
    Array,
    Buffer,
    Callback,
    CString,
    CType,
    Enum,
    Opaque,
    Pointer,
    Record,
    Scalar,
    Union,
)


def cache_dir() -> Path:
    """Where compiled artefacts live: $LOOMING_FFI_CACHE, else the XDG cache."""
    explicit = os.environ.get("LOOMING_FFI_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "looming" / "ffi"


def compiler_command() -> list[str]:
    """The C compiler Python was built with (or $CC), as an argv prefix."""
    configured = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(str(configured))


def find_compiler() -> list[str]:
    """The compiler argv; CompilerMissing naming what to install if there is none."""
    command = compiler_command()
    if not command or shutil.which(command[0]) is None:
        raise CompilerMissing(
            f"no C compiler: {command[0] if command else '$CC'!r} is not on PATH. "
            "The compiled backend and layout checks need one: on Debian "
            "`apt-get install gcc python3-dev` (or set CC); the dynamic backend needs none"
        )
    return command


def python_headers_present() -> bool:
    include = sysconfig.get_paths().get("include", "")
    return os.path.exists(os.path.join(include, "Python.h"))


def header_hint(bindings: Bindings) -> str:
    if bindings.dev_package:
        return f" (on Debian: apt-get install {bindings.dev_package})"
    return ""


def probe_source(bindings: Bindings) -> str:
    lines = ["#include <stddef.h>", "#include <stdio.h>"]
    lines += [f"#include <{header}>" for header in bindings.headers]
    lines.append("int main(void) {")
    for record in bindings.records:
        lines.append(f'    printf("%zu %zu\\n", sizeof({record.c}), _Alignof({record.c}));')
        for field in record.fields:
            member = f"(({record.c} *)0)->{field.name}"
            lines.append(
                f'    printf("%zu %zu %d\\n", offsetof({record.c}, {field.name}), '
                f"sizeof({member}), __builtin_classify_type({member}));"
            )
    lines.append("    return 0;\n}")
    return "\n".join(lines) + "\n"


def probe_layouts(bindings: Bindings, compiler: list[str]) -> list[int]:
    """The compiler's sizes, alignments and offsets, in probe_source's order."""
    source = probe_source(bindings)
    key = hashlib.sha256((" ".join(compiler) + "\n" + source).encode()).hexdigest()[:24]
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    answers = directory / f"probe-{bindings.name}-{key}.txt"
    if answers.exists():
        return [int(word) for word in answers.read_text().split()]
    with tempfile.TemporaryDirectory(dir=directory) as work:
        c_file = Path(work) / "probe.c"
        c_file.write_text(source)
        program = Path(work) / "probe"
        built = subprocess.run(
            [
                *compiler,
                *(f"-I{d}" for d in bindings.include_dirs),
                "-o",
                str(program),
                str(c_file),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode != 0:
            raise DescriptionMismatch(
                f"{bindings.name}: the layout probe does not compile against "
                f"{', '.join(bindings.headers)}{header_hint(bindings)}:\n{built.stderr.strip()}"
            )
        ran = subprocess.run([str(program)], capture_output=True, text=True, check=True)
        partial = answers.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(ran.stdout)
        os.replace(partial, answers)
    return [int(word) for word in ran.stdout.split()]


# GCC's __builtin_classify_type answers, grouped as a description sees them
# (an array member decays to a pointer there).
CLASSES = {
    "integer": (1, 2, 3, 4),
    "floating point": (8,),
    "pointer or array": (5, 14),
    "struct": (12,),
    "union": (13,),
}


def class_name(klass: int) -> str:
    for name, numbers in CLASSES.items():
        if klass in numbers:
            return name
    return f"type class {klass}"


def type_class(ctype: CType) -> str | None:
    """The class group a described field must have in the header."""
    if isinstance(ctype, Scalar):
        return "floating point" if ctype.kind == "float" else "integer"
    if isinstance(ctype, Enum):
        return "integer"
    if isinstance(ctype, Union):
        return "union"
    if isinstance(ctype, Record):
        return "struct"
    if isinstance(ctype, Array | Buffer | CString | Opaque | Pointer | Callback):
        return "pointer or array"
    return None


def verify_layouts(bindings: Bindings, *, required: bool) -> None:
    """Compare every record's layout with the compiler's; DescriptionMismatch if they differ.

    Without headers or a compiler the check is skipped unless ``required``.
    """
    if not bindings.records:
        return
    if not bindings.headers:
        if required:
            raise DescriptionMismatch(
                f"{bindings.name}: checking layouts needs Bindings(headers=...)"
            )
        return
    try:
        compiler = find_compiler()
    except CompilerMissing:
        if required:
            raise
        return
    numbers = iter(probe_layouts(bindings, compiler))
    problems: list[str] = []
    for record in bindings.records:
        size, align = next(numbers), next(numbers)
        if size != record.size:
            problems.append(f"{record.c}: size {record.size} described, {size} per the compiler")
        if align != record.align:
            problems.append(
                f"{record.c}: alignment {record.align} described, {align} per the compiler"
            )
        for field in record.fields:
            offset, size, klass = next(numbers), next(numbers), next(numbers)
            where = f"{record.c}.{field.name}"
            if offset != field.offset:
                problems.append(
                    f"{where}: offset {field.offset} described, {offset} per the compiler"
                )
            if size != field.ctype.size:
                problems.append(
                    f"{where}: size {field.ctype.size} described, {size} per the compiler"
                )
            expected = type_class(field.ctype)
            if expected is not None and klass not in CLASSES[expected]:
                problems.append(
                    f"{where}: described as {field.ctype.spell()} ({expected}), "
                    f"but the header's is {class_name(klass)}"
                )
    if problems:
        raise DescriptionMismatch(
            f"{bindings.name}: layouts differ from the header:\n  " + "\n  ".join(problems)
        )
