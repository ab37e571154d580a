"""Bytecode for images: no docstrings in libraries, no column positions, same behaviour."""

from __future__ import annotations

import marshal
import traceback
from types import CodeType

import pytest

from looming.vm.bytecode import CompileError, Compiler, compile_here

SOURCE = b'''"""A module docstring."""


def area(width, height):
    """A function docstring."""
    assert width >= 0, "negative width"
    return width * height + len(area.__doc__ or "")


def fails():
    return {"a": 1}["b"]
'''


def _all_code(code: CodeType) -> list[CodeType]:
    found = [code]
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            found += _all_code(constant)
    return found


def _run(code: bytes) -> dict[str, object]:
    namespace: dict[str, object] = {}
    exec(marshal.loads(code), namespace)
    return namespace


def test_bytecode_has_no_column_positions_but_keeps_lines() -> None:
    with Compiler() as compiler:
        code = marshal.loads(compiler.compile(SOURCE, "/lib/sample.py", strip_docstrings=False))
    positions = [p for c in _all_code(code) for p in c.co_positions()]
    assert positions and all(p[2] is None and p[3] is None for p in positions)
    assert {p[0] for p in positions if p[0] is not None} >= {4, 7, 11}
    # This interpreter, with its column positions, is the reference.
    here = marshal.loads(compile_here(SOURCE, "/lib/sample.py", strip_docstrings=False))
    assert any(p[2] is not None for c in _all_code(here) for p in c.co_positions())
    assert len(marshal.dumps(code)) < len(marshal.dumps(here))


def test_docstrings_go_only_when_asked_and_asserts_stay() -> None:
    with Compiler() as compiler:
        kept = _run(compiler.compile(SOURCE, "/lib/sample.py", strip_docstrings=False))
        stripped = _run(compiler.compile(SOURCE, "/lib/sample.py", strip_docstrings=True))
    assert kept["__doc__"] == "A module docstring."
    assert stripped.get("__doc__") is None
    assert kept["area"](2, 3) == 6 + len("A function docstring.")  # type: ignore[operator]
    assert stripped["area"](2, 3) == 6  # type: ignore[operator]
    with pytest.raises(AssertionError, match="negative width"):
        stripped["area"](-1, 3)  # type: ignore[operator]


def test_a_traceback_names_the_file_and_line() -> None:
    with Compiler() as compiler:
        namespace = _run(compiler.compile(SOURCE, "/lib/sample.py", strip_docstrings=True))
    with pytest.raises(KeyError) as raised:
        namespace["fails"]()  # type: ignore[operator]
    last = traceback.extract_tb(raised.value.__traceback__)[-1]
    assert (last.filename, last.lineno, last.name) == ("/lib/sample.py", 11, "fails")


def test_a_module_that_does_not_compile_is_named() -> None:
    with Compiler() as compiler:
        with pytest.raises(CompileError, match=r"/lib/broken\.py: invalid syntax"):
            compiler.compile(b"def broken(:\n", "/lib/broken.py", strip_docstrings=True)
        # The compiling interpreter carries on after an error.
        assert _run(compiler.compile(b"x = 1\n", "/lib/fine.py", strip_docstrings=True))["x"] == 1
