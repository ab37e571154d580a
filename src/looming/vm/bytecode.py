"""Bytecode for a VM image: compiled without docstrings or column positions.

Python 3.11 code objects carry each instruction's columns (for the carets
under a traceback's line). In an image they are a quarter of the bytecode
once compressed, and time to unpack and unmarshal at every boot; tracebacks
keep their files and line numbers without them. ``compile()`` drops them
only in an interpreter started with ``-X no_debug_ranges``, so a
:class:`Compiler` keeps one such interpreter running this module and hands
it the sources one by one (length-prefixed marshal frames over its standard
input and output). Docstrings are removed from the syntax tree, as
``python -OO`` would, but asserts stay.
"""

from __future__ import annotations

import ast
import marshal
import struct
import subprocess
import sys
from typing import IO, TypeVar

from looming.errors import LoomingError

_LENGTH = struct.Struct("<I")


class CompileError(LoomingError):
    """A module of the image does not compile."""


class _DocstringRemover(ast.NodeTransformer):
    """Drops docstrings, as ``python -OO`` does, but keeps asserts."""

    def _strip(self, node: _WithBody) -> _WithBody:
        self.generic_visit(node)
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.copy_location(ast.Pass(), body[0])]
        return node

    visit_Module = _strip
    visit_ClassDef = _strip
    visit_FunctionDef = _strip
    visit_AsyncFunctionDef = _strip


_WithBody = TypeVar("_WithBody", ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def compile_here(source: bytes, filename: str, strip_docstrings: bool) -> bytes:
    """The marshalled code of ``source``, compiled by this interpreter."""
    tree = ast.parse(source, filename)
    if strip_docstrings:
        tree = _DocstringRemover().visit(tree)
    return marshal.dumps(compile(tree, filename, "exec", dont_inherit=True))


def _write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    return stream.read(length)


class Compiler:
    """Compiles modules without column positions, in a child interpreter."""

    def __init__(self) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-X", "no_debug_ranges", "-m", "looming.vm.bytecode"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def compile(self, source: bytes, filename: str, strip_docstrings: bool) -> bytes:
        """The marshalled code of ``source``, with ``filename`` in its tracebacks."""
        assert self._child.stdin is not None and self._child.stdout is not None
        _write_frame(self._child.stdin, marshal.dumps((source, filename, strip_docstrings)))
        answer = _read_frame(self._child.stdout)
        if answer is None:
            raise CompileError(f"the compiling interpreter stopped at {filename}")
        ok, payload = marshal.loads(answer)
        if not ok:
            raise CompileError(f"{filename}: {payload}")
        assert isinstance(payload, bytes)
        return payload

    def close(self) -> None:
        if self._child.stdin is not None:
            self._child.stdin.close()
        self._child.wait()
        if self._child.stdout is not None:
            self._child.stdout.close()

    def __enter__(self) -> Compiler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve() -> None:
    """The child's side: compile each source received, until end of input."""
    while (request := _read_frame(sys.stdin.buffer)) is not None:
        source, filename, strip_docstrings = marshal.loads(request)
        answer: tuple[bool, bytes | str]
        try:
            answer = (True, compile_here(source, filename, strip_docstrings))
        except (SyntaxError, ValueError) as error:
            answer = (False, str(error))
        _write_frame(sys.stdout.buffer, marshal.dumps(answer))


if __name__ == "__main__":
    _serve()
