"""Checking a description against the header's declarations, on every backend.

When a description names its headers and a C compiler (GCC) is at hand, two
compilations, cached by a hash of their input, say whether each described
function matches its declaration:

1. ``gcc -aux-info`` writes the prototype of every function the headers
   declare, as the compiler understood it (``extern double frexp (double,
   int *);``).
2. For each argument and result, a line of C compares the declared type
   with the described one with GCC's builtins: the type class
   (``__builtin_classify_type``), the size, the signedness, and for pointers
   what they point to (a record or an opaque type by compatibility, a scalar
   by class and size; ``void *`` in the header accepts any pointer). Each
   line that does not compile is one mismatch.

A mismatch is a :class:`~looming.ffi.errors.DescriptionMismatch` when the
library is linked, naming the function, the argument and both types. Struct
and union layouts are checked by :mod:`looming.ffi.probe`, field by field.
Callbacks are checked to be pointers only; their own signatures are not
compared.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from looming.ffi.description import Bindings, Function
from looming.ffi.errors import CompilerMissing, DescriptionMismatch
from looming.ffi.probe import cache_dir, find_compiler, header_hint, verify_layouts
from looming.ffi.types import (
    Buffer,
    Callback,
    CString,
    CType,
    Enum,
    Opaque,
    Pointer,
    Record,
    Scalar,
    Void,
)

# Placeholders in the conditions: @T the declared type, @C its class, @P what
# it points to, @K that pointee's class.
_VOID_POINTER = (
    "__builtin_types_compatible_p(@T, void *) || __builtin_types_compatible_p(@T, const void *)"
)
_ERROR_LINE = re.compile(r"^[^:\n]*check\.c:(\d+):\d+: error:", re.MULTILINE)


@dataclass(frozen=True)
class Declaration:
    """A prototype from ``-aux-info``: result and parameter types as C type names."""

    returns: str
    params: list[str] | None  # None: declared without a prototype
    variadic: bool


def check_description(
    bindings: Bindings, *, layouts: bool | None, declarations: bool | None
) -> None:
    """The link-time checks every backend makes (each skipped when False)."""
    if layouts is not False and bindings.records:
        verify_layouts(bindings, required=bool(layouts))
    if declarations is not False and bindings.functions:
        verify_declarations(bindings, required=bool(declarations))


def split_params(text: str) -> list[str]:
    """Split a parameter list at its top-level commas."""
    params: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "," and depth == 0:
            params.append(text[start:i].strip())
            start = i + 1
    tail = text[start:].strip()
    if tail:
        params.append(tail)
    return params


def parse_aux_info(text: str, names: set[str]) -> dict[str, Declaration]:
    """The declarations of ``names`` in GCC's ``-aux-info`` output (the first of each)."""
    found: dict[str, Declaration] = {}
    for line in text.splitlines():
        body = line.split("*/", 1)[-1].strip().rstrip(";").strip()
        for prefix in ("extern ", "static ", "inline ", "__inline "):
            if body.startswith(prefix):
                body = body[len(prefix) :]
        match = re.search(r"(?<![\w])(\w+) \(", body)
        if match is None or match.group(1) not in names or match.group(1) in found:
            continue
        if not body.endswith(")"):
            continue  # a function returning a function pointer: not described here
        params_text = body[match.end() : -1]
        params: list[str] | None = split_params(params_text)
        variadic = False
        if params == ["void"]:
            params = []
        elif not params:
            params = None
        elif params[-1] == "...":
            variadic = True
            params = params[:-1]
        found[match.group(1)] = Declaration(body[: match.start()].strip(), params, variadic)
    return found


def _integer(klass: str) -> str:
    return f"({klass} == 1 || {klass} == 2 || {klass} == 3 || {klass} == 4)"


def scalar_condition(ctype: Scalar | Enum, of: str, klass: str) -> str:
    """Whether type ``of`` (class ``klass``) has the class, size and sign of ``ctype``."""
    if isinstance(ctype, Scalar) and ctype.kind == "float":
        return f"{klass} == 8 && sizeof({of}) == {ctype.size}"
    condition = f"{_integer(klass)} && sizeof({of}) == {ctype.size}"
    if isinstance(ctype, Scalar) and ctype.kind == "int" and ctype.size > 1:
        condition += f" && ((({of})-1 < ({of})0) == {int(ctype.signed)})"
    return condition


def _pointer_to(c: str) -> list[str]:
    return [
        _VOID_POINTER,
        f"__builtin_types_compatible_p(@T, {c} *)",
        f"__builtin_types_compatible_p(@T, const {c} *)",
    ]


def alternatives(ctype: CType) -> list[str]:
    """C conditions on the declared type; any one that compiles and holds is a match."""
    if isinstance(ctype, Void):
        return ["__builtin_types_compatible_p(@T, void)"]
    if isinstance(ctype, Scalar | Enum):
        return [scalar_condition(ctype, "@T", "@C")]
    if isinstance(ctype, Record):
        return [f"__builtin_types_compatible_p(@T, {ctype.c})"]
    if isinstance(ctype, Buffer | Callback):
        return ["@C == 5"]
    if isinstance(ctype, CString):
        return [_VOID_POINTER, f"@C == 5 && sizeof(@P) == 1 && {_integer('@K')}"]
    if isinstance(ctype, Opaque):
        return _pointer_to(ctype.c)
    if isinstance(ctype, Pointer):
        target = ctype.target
        if isinstance(target, Record):
            return _pointer_to(target.c)
        if isinstance(target, Scalar | Enum):
            return [_VOID_POINTER, "@C == 5 && " + scalar_condition(target, "@P", "@K")]
        return [_VOID_POINTER, f"@C == 5 && sizeof(@P) == {target.size}"]
    return ["1"]


def _expand(condition: str, name: str) -> str:
    return (
        condition.replace("@K", f"__builtin_classify_type(**({name} *)0)")
        .replace("@P", f"__typeof__(**({name} *)0)")
        .replace("@C", f"__builtin_classify_type(*({name} *)0)")
        .replace("@T", name)
    )


def check_lines(
    bindings: Bindings, found: dict[str, Declaration]
) -> Iterator[tuple[str, str, str]]:
    """(key, declared type, C line) for every comparison to compile."""
    for fi, function in enumerate(bindings.functions):
        declaration = found.get(function.name)
        if declaration is None or declaration.params is None:
            continue
        pairs: list[tuple[str, str, CType]] = [("r", declaration.returns, function.returns)]
        if len(declaration.params) == len(function.args):
            pairs += [
                (str(ai), declared, described)
                for ai, (declared, described) in enumerate(
                    zip(declaration.params, function.args, strict=True)
                )
            ]
        for slot, declared, described in pairs:
            name = f"looming_t_{fi}_{slot}"
            yield f"{fi}:{slot}:-", declared, f"typedef __typeof__({declared}) {name};"
            for k, condition in enumerate(alternatives(described)):
                line = f'_Static_assert({_expand(condition, name)}, "looming");'
                yield f"{fi}:{slot}:{k}", declared, line


def _compile(
    compiler: list[str], bindings: Bindings, work: Path, source: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    c_file = work / "check.c"
    c_file.write_text(source)
    return subprocess.run(
        [
            *compiler,
            *(f"-I{d}" for d in bindings.include_dirs),
            "-fsyntax-only",
            *extra,
            str(c_file),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=work,
    )


def describe_problem(function: Function, slot: str, declared: str, headers: str) -> str:
    if slot == "r":
        return (
            f"{function.name}(): the result is described as {function.returns.spell()} "
            f"but {headers} declares {declared}"
        )
    index = int(slot)
    return (
        f"{function.name}(): argument {index + 1} {function.arg_names[index]!r} is described "
        f"as {function.args[index].spell()} but {headers} declares {declared}"
    )


def find_problems(bindings: Bindings, compiler: list[str], required: bool) -> list[str]:
    """The mismatches between the description and the headers (compiling twice)."""
    includes = "".join(f"#include <{header}>\n" for header in bindings.headers)
    headers = ", ".join(f"<{h}>" for h in bindings.headers)
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as work_name:
        work = Path(work_name)
        aux = _compile(compiler, bindings, work, includes, "-aux-info", str(work / "aux.txt"))
        if aux.returncode != 0:
            if "aux-info" in aux.stderr and not required:
                return []  # not GCC: the compiled backend's compiler checks remain
            raise DescriptionMismatch(
                f"{bindings.name}: {headers} do not compile{header_hint(bindings)}:\n"
                f"{aux.stderr.strip()}"
            )
        found = parse_aux_info((work / "aux.txt").read_text(), set(bindings.by_name))
        problems: list[str] = []
        for function in bindings.functions:
            declaration = found.get(function.name)
            if declaration is None:
                problems.append(f"{function.name}(): not declared by {headers}")
            elif declaration.variadic:
                problems.append(f"{function.name}(): {headers} declares it variadic")
            elif declaration.params is not None and len(declaration.params) != len(function.args):
                problems.append(
                    f"{function.name}(): {len(function.args)} arguments described, "
                    f"{len(declaration.params)} declared by {headers} "
                    f"({', '.join(declaration.params) or 'void'})"
                )
        checks = list(check_lines(bindings, found))
        first_line = includes.count("\n") + 1
        source = includes + "".join(line + "\n" for _, _, line in checks)
        done = _compile(compiler, bindings, work, source)
    failed = {int(n) - first_line for n in _ERROR_LINE.findall(done.stderr)}
    passed: dict[tuple[str, str], bool] = {}
    declared_as: dict[tuple[str, str], str] = {}
    for i, (key, declared, _) in enumerate(checks):
        fi, slot, k = key.split(":")
        declared_as[(fi, slot)] = declared
        if k == "-":
            passed.setdefault((fi, slot), False)
            if i in failed:
                passed[(fi, slot)] = True  # the declared type cannot be named here: not compared
        elif i not in failed:
            passed[(fi, slot)] = True
    for (fi, slot), ok in passed.items():
        if not ok:
            function = bindings.functions[int(fi)]
            problems.append(describe_problem(function, slot, declared_as[(fi, slot)], headers))
    return problems


def verify_declarations(bindings: Bindings, *, required: bool) -> None:
    """Compare every function with the header's declaration; DescriptionMismatch if they differ.

    Without headers or a compiler the check is skipped unless ``required``.
    """
    if not bindings.headers:
        if required:
            raise DescriptionMismatch(
                f"{bindings.name}: checking declarations needs Bindings(headers=...)"
            )
        return
    try:
        compiler = find_compiler()
    except CompilerMissing:
        if required:
            raise
        return
    key_text = "\n".join(
        [" ".join(compiler), *bindings.headers, *bindings.include_dirs]
        + [f.signature() for f in bindings.functions]
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:24]
    answer = cache_dir() / f"declarations-{bindings.name}-{key}.json"
    try:
        problems: list[str] = json.loads(answer.read_text())
    except (OSError, ValueError):
        problems = find_problems(bindings, compiler, required)
        partial = answer.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(problems))
        os.replace(partial, answer)
    if problems:
        raise DescriptionMismatch(
            f"{bindings.name}: the description differs from the header:\n  " + "\n  ".join(problems)
        )
