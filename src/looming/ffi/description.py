"""Binding descriptions: ``foreign`` declarations grouped in ``Bindings``.

A description is plain data. It says which library to load, which header
declares it (for the compiled backend and the layout probe), and for each
function its argument and return types and its policies:

* ``errno``: set errno to 0 before the call and capture it after, in the
  thread (or helper process) that made the call; read it as
  ``lib.last_errno``. With ``error_when`` the call raises :class:`OSError`
  built from errno when the result says so.
* ``release_gil``: let other Python threads run during the call (the default;
  turn it off for tiny functions where the release costs more than the call).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

from looming.ffi.errors import DescriptionError, VariadicFunction
from looming.ffi.types import (
    Array,
    Buffer,
    Callback,
    CountedArray,
    CString,
    CType,
    Deref,
    Enum,
    Opaque,
    Pointer,
    Record,
    Scalar,
    Void,
)

ERROR_WHEN = ("negative", "minus_one", "null", "nonzero", "zero")

# Scalar spellings cffi knows without a typedef from the header.
CFFI_KNOWN_TYPES = frozenset(
    [
        *("char", "signed char", "unsigned char", "short", "unsigned short", "int", "unsigned int"),
        *("long", "unsigned long", "long long", "unsigned long long", "float", "double", "_Bool"),
        *("int8_t", "uint8_t", "int16_t", "uint16_t", "int32_t", "uint32_t", "int64_t", "uint64_t"),
        *("size_t", "ssize_t", "intptr_t", "uintptr_t"),
    ]
)

ArgSpec = CType | tuple[str, CType] | Any  # Any: the Ellipsis of a variadic prototype


def _argument(function: str, i: int, spec: ArgSpec) -> tuple[str, CType]:
    """Argument ``i`` of ``function`` as (name, type), checked."""
    if isinstance(spec, tuple):
        arg_name, ctype = spec
    else:
        arg_name, ctype = f"arg{i}", spec
    if not arg_name.isidentifier():
        raise DescriptionError(f"{function}(): argument name {arg_name!r} is not an identifier")
    if not isinstance(ctype, CType):
        raise DescriptionError(f"{function}(): argument {i} is {ctype!r}, not a C type")
    if isinstance(ctype, Void):
        raise DescriptionError(f"{function}(): argument {arg_name} cannot be void")
    if isinstance(ctype, Array):
        raise DescriptionError(
            f"{function}(): argument {arg_name}: arrays decay to pointers in C; use Pointer(element)"
        )
    if isinstance(ctype, CountedArray | Deref):
        raise DescriptionError(
            f"{function}(): {type(ctype).__name__} is only for callback arguments"
        )
    return arg_name, ctype


def _check_policies(
    function: str, errno: bool, error_when: str | int | None, timeout: float | None
) -> None:
    """Raise DescriptionError for a policy that cannot hold."""
    if error_when is not None and not isinstance(error_when, int) and error_when not in ERROR_WHEN:
        raise DescriptionError(f"{function}(): error_when must be an int or one of {ERROR_WHEN}")
    if error_when is not None and not errno:
        raise DescriptionError(
            f"{function}(): error_when needs errno=True (the error comes from errno)"
        )
    if timeout is not None and not timeout > 0:
        raise DescriptionError(f"{function}(): timeout must be a positive number of seconds")


class Function:
    """One C function: name, typed arguments, return type and policies."""

    def __init__(
        self,
        name: str,
        args: Sequence[ArgSpec],
        returns: CType,
        *,
        errno: bool = False,
        release_gil: bool = True,
        error_when: str | int | None = None,
        variadic: bool = False,
        timeout: float | None = None,
    ) -> None:
        if not name.isidentifier():
            raise DescriptionError(f"{name!r} is not a C identifier")
        if variadic or any(arg is Ellipsis for arg in args):
            raise VariadicFunction(
                f"{name}() is variadic: looming's bindings call only fixed-arity functions "
                "(a variadic call needs each call site's argument types). Describe a "
                "fixed-arity relative instead (vprintf for printf, fopen or creat for open), "
                "or write a small C wrapper with fixed arguments"
            )
        self.name = name
        self.arg_names: list[str] = []
        self.args: list[CType] = []
        for i, spec in enumerate(args):
            arg_name, ctype = _argument(name, i, spec)
            self.arg_names.append(arg_name)
            self.args.append(ctype)
        if len(set(self.arg_names)) != len(self.arg_names):
            raise DescriptionError(f"{name}(): duplicate argument names {self.arg_names}")
        if not isinstance(returns, CType):
            raise DescriptionError(f"{name}(): return type {returns!r} is not a C type")
        if isinstance(returns, Callback | Array | CountedArray):
            raise DescriptionError(f"{name}(): returning {returns.spell()} is not supported")
        self.returns = returns
        self.errno = errno
        self.release_gil = release_gil
        _check_policies(name, errno, error_when, timeout)
        self.error_when = error_when
        # Wall-clock seconds a call may take in the isolated backend's helper
        # (None: the library's default).
        self.timeout = timeout

    def prototype(self) -> str:
        """The C prototype, as the compiled backend declares it."""
        params = ", ".join(t.spell(n) for t, n in zip(self.args, self.arg_names, strict=True))
        return self.returns.spell(f"{self.name}({params or 'void'})") + ";"

    def signature(self) -> str:
        params = ",".join(t.signature() for t in self.args)
        return (
            f"{self.name}({params})->{self.returns.signature()}"
            f" errno={self.errno} gil={self.release_gil} error_when={self.error_when}"
        )

    def failed(self, result: Any) -> bool:
        """Whether ``result`` means failure under ``error_when``."""
        when = self.error_when
        if when is None:
            return False
        if isinstance(when, int):
            return bool(result == when)
        if when == "negative":
            return bool(result < 0)
        if when == "minus_one":
            return bool(result == -1)
        if when == "null":
            return result is None
        if when == "nonzero":
            return bool(result != 0)
        return bool(result == 0)

    def __repr__(self) -> str:
        return f"<foreign {self.prototype()}>"


def foreign(
    name: str,
    args: Sequence[ArgSpec],
    returns: CType,
    *,
    errno: bool = False,
    release_gil: bool = True,
    error_when: str | int | None = None,
    variadic: bool = False,
    timeout: float | None = None,
) -> Function:
    """Describe the C function ``name``; ``args`` are types or (name, type) pairs.

    ``timeout``: wall-clock seconds a call may take in the isolated backend.
    """
    return Function(
        name,
        args,
        returns,
        errno=errno,
        release_gil=release_gil,
        error_when=error_when,
        variadic=variadic,
        timeout=timeout,
    )


def _walk(ctype: CType) -> Iterator[CType]:
    yield ctype
    if isinstance(ctype, Pointer | Deref):
        yield from _walk(ctype.target)
    elif isinstance(ctype, Array | CountedArray):
        yield from _walk(ctype.element)
    elif isinstance(ctype, Callback):
        yield from _walk(ctype.returns)
        for arg in ctype.args:
            yield from _walk(arg)
    elif isinstance(ctype, Record):
        for field in ctype.fields:
            # A pointer to a record is a use, not a definition: stop there so
            # self-referencing records terminate.
            if isinstance(field.ctype, Pointer) and isinstance(field.ctype.target, Record):
                yield field.ctype
                yield field.ctype.target
            else:
                yield from _walk(field.ctype)


class Bindings:
    """A C library described: what to load and what to call.

        ``library`` is the name the linker knows (``"z"`` for ``-lz``); ``soname``
        optionally pins the file to ``dlopen`` (``"libz.so.1"``), otherwise it is
        found as ``ctypes.util.find_library`` finds it (give a path for a library
    of one's own, with ``include_dirs``/``library_dirs`` for the compiler and
    the linker). ``headers`` are what the
        compiled backend and the layout probe ``#include``. ``paths`` and
        ``writable_paths`` are the files and folders the library may open in
        the isolated backend's confined helper (nothing else can be opened).
    """

    def __init__(
        self,
        name: str,
        *,
        library: str,
        functions: Sequence[Function],
        headers: Sequence[str] = (),
        soname: str | None = None,
        records: Sequence[Record] = (),
        opaques: Sequence[Opaque] = (),
        dev_package: str | None = None,
        include_dirs: Sequence[str] = (),
        library_dirs: Sequence[str] = (),
        paths: Sequence[str] = (),
        writable_paths: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.paths = tuple(str(p) for p in paths)
        self.writable_paths = tuple(str(p) for p in writable_paths)
        # The Debian package with the headers, named in error messages.
        self.dev_package = dev_package
        self.library = library
        self.soname = soname
        self.headers = list(headers)
        # For a library outside the system paths (one's own): where the
        # compiler finds its header and the linker (and loader) the library.
        self.include_dirs = [str(d) for d in include_dirs]
        self.library_dirs = [str(d) for d in library_dirs]
        self.functions = list(functions)
        self.by_name: dict[str, Function] = {}
        for function in self.functions:
            if function.name in self.by_name:
                raise DescriptionError(f"{name}: {function.name}() is described twice")
            self.by_name[function.name] = function
        self.records: list[Record] = []
        self.opaques: list[Opaque] = []
        self.enums: list[Enum] = []
        self.scalars: list[Scalar] = []
        self._collect(records, opaques)
        self.digest = hashlib.sha256(self.canonical().encode()).hexdigest()

    def _collect(self, records: Sequence[Record], opaques: Sequence[Opaque]) -> None:
        seen: set[int] = set()
        roots: list[CType] = [*records, *opaques]
        for function in self.functions:
            roots.extend(function.args)
            roots.append(function.returns)
        for root in roots:
            for ctype in _walk(root):
                if id(ctype) in seen:
                    continue
                seen.add(id(ctype))
                if isinstance(ctype, Record):
                    if not ctype.defined:
                        raise DescriptionError(f"{self.name}: {ctype.c} is used but never defined")
                    self.records.append(ctype)
                elif isinstance(ctype, Opaque):
                    self.opaques.append(ctype)
                elif isinstance(ctype, Enum):
                    self.enums.append(ctype)
                elif isinstance(ctype, Scalar):
                    self.scalars.append(ctype)
        self.records = _order_by_containment(self.records)

    def canonical(self) -> str:
        """A stable text of everything that shapes the linked result."""
        parts = [
            f"bindings {self.name} library={self.library} soname={self.soname}",
            f"headers={','.join(self.headers)}",
            f"include_dirs={','.join(self.include_dirs)} library_dirs={','.join(self.library_dirs)}",
            *(r.signature() for r in self.records),
            *(o.signature() for o in self.opaques),
            *(f.signature() for f in self.functions),
        ]
        return "\n".join(parts)

    def cdef(self) -> str:
        """The declarations the compiled backend hands to cffi."""
        lines: list[str] = []
        for scalar in self.scalars:
            if scalar.c not in CFFI_KNOWN_TYPES:
                # Size and signedness come from the header in API mode.
                lines.append(f"typedef {'int' if scalar.kind == 'int' else 'float'}... {scalar.c};")
        for opaque in self.opaques:
            if opaque.c.startswith(("struct ", "union ")):
                lines.append(f"{opaque.c};")
            else:
                lines.append(f"typedef ... {opaque.c};")
        for record in self.records:
            lines.append(record.definition())
        lines.extend(function.prototype() for function in self.functions)
        return "\n".join(lines) + "\n"

    def __iter__(self) -> Iterator[Function]:
        return iter(self.functions)

    def __repr__(self) -> str:
        return f"<Bindings {self.name}: {len(self.functions)} functions from -l{self.library}>"


def _order_by_containment(records: list[Record]) -> list[Record]:
    """Records ordered so that one held by value is defined before its holder."""
    ordered: list[Record] = []
    placed: set[int] = set()

    def place(record: Record) -> None:
        if id(record) in placed:
            return
        placed.add(id(record))
        for field in record.fields:
            inner: CType = field.ctype
            while isinstance(inner, Array):
                inner = inner.element
            if isinstance(inner, Record):
                place(inner)
        ordered.append(record)

    for record in records:
        place(record)
    return ordered


def is_plain(ctype: CType) -> bool:
    """True for types passed to C without conversion work on our side."""
    return isinstance(ctype, Scalar) or (isinstance(ctype, CString) and not ctype.as_text)


__all__ = ["Bindings", "Buffer", "Function", "foreign"]
