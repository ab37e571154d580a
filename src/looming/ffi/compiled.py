"""The compiled backend: the description built as a cffi API-mode extension.

The C compiler sees the description next to the library's real header, so a
declaration that disagrees with the header (a wrong argument type, a missing
function, a struct whose fields are not where the description says) fails
here, when linking, not at the first call. The extension is built once and
cached under :func:`looming.ffi.probe.cache_dir` by a hash of the description
(and of the compiler, cffi and Python versions); a later link only loads it.

cffi releases the GIL around every call it makes, so ``release_gil=False``
has no effect with this backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import io
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cffi

from looming.ffi.description import Bindings, Function
from looming.ffi.dynamic import (
    CallbackErrors,
    WrapperSource,
    callback_failed,
    callback_result,
    callback_value,
    slow_converter,
)
from looming.ffi.errors import CompilerMissing, DescriptionError, DescriptionMismatch
from looming.ffi.library import (
    LinkedLibrary,
    argument_error,
    check_argument,
    describe_argument,
)
from looming.ffi.probe import cache_dir, find_compiler, header_hint, python_headers_present
from looming.ffi.types import (
    Buffer,
    Callback,
    CString,
    CType,
    Enum,
    Handle,
    Memory,
    Opaque,
    Pointer,
    Record,
    Ref,
    Scalar,
    Void,
    pack_into,
    unpack_value,
)

# Compiler warnings that mean "the description does not match the header".
STRICT_FLAGS = [
    "-Werror=incompatible-pointer-types",
    "-Werror=implicit-function-declaration",
    "-Werror=int-conversion",
    # Buffers are described as (unsigned) char pointers whatever the header's
    # byte typedef; signedness of the bytes is not a mismatch.
    "-Wno-pointer-sign",
]


class CompiledHandle(Handle):
    """A handle that also keeps the cffi pointer, so passing it back is free."""

    __slots__ = ("cdata",)

    def __init__(self, kind: Opaque, address: int, origin: object, cdata: Any) -> None:
        super().__init__(kind, address, origin)
        self.cdata = cdata


class CompiledMemory(Memory):
    """Memory allocated by cffi in this process."""

    def __init__(self, ffi: Any, ctype: CType, count: int, origin: object) -> None:
        size = max(ctype.size, 1) * count
        self._ffi = ffi
        self.cdata = ffi.new("char[]", size)
        super().__init__(ctype, count, int(ffi.cast("uintptr_t", self.cdata)), origin)

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        length = self.size - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > self.size:
            raise IndexError(f"read of {length} bytes at {offset} outside a {self.size}-byte block")
        data: bytes = self._ffi.buffer(self.cdata)[offset : offset + length]
        return data

    def write(self, data: bytes, offset: int = 0) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise IndexError(
                f"write of {len(data)} bytes at {offset} outside a {self.size}-byte block"
            )
        self._ffi.memmove(self.cdata + offset, bytes(data), len(data))


def module_name(bindings: Bindings) -> str:
    salt = "|".join(
        [
            bindings.digest,
            cffi.__version__,
            sys.version,
            platform.machine(),
            " ".join(find_compiler()),
            " ".join(STRICT_FLAGS),
        ]
    )
    digest = hashlib.sha256(salt.encode()).hexdigest()[:16]
    return f"_looming_ffi_{bindings.name}_{digest}"


def build_extension(bindings: Bindings, name: str, target: Path) -> None:
    """Run the C compiler once: description + header -> extension module."""
    compiler = find_compiler()
    if not python_headers_present():
        raise CompilerMissing(
            "the compiled backend needs Python's C headers (Python.h), which are missing: "
            "on Debian `apt-get install python3-dev`"
        )
    ffi = cffi.FFI()
    try:
        ffi.cdef(bindings.cdef())
    except cffi.CDefError as exc:
        raise DescriptionError(f"{bindings.name}: cffi refuses the declarations: {exc}") from exc
    includes = "".join(f"#include <{header}>\n" for header in bindings.headers)
    ffi.set_source(name, includes)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        c_file = Path(work) / f"{name}.c"
        with contextlib.redirect_stdout(io.StringIO()):  # cffi announces the file
            ffi.emit_c_code(str(c_file))
        shared = Path(work) / target.name
        include = sysconfig.get_paths()["include"]
        command = [
            *compiler,
            "-shared",
            "-fPIC",
            "-O2",
            *STRICT_FLAGS,
            f"-I{include}",
            *(f"-I{d}" for d in bindings.include_dirs),
            str(c_file),
            "-o",
            str(shared),
            *(f"-L{d}" for d in bindings.library_dirs),
            *(f"-Wl,-rpath,{d}" for d in bindings.library_dirs),
            f"-l{bindings.library}",
        ]
        built = subprocess.run(command, capture_output=True, text=True, check=False)
        if built.returncode != 0:
            messages = "\n".join(
                line for line in built.stderr.splitlines() if "error" in line or "note" in line
            )
            raise DescriptionMismatch(
                f"{bindings.name}: the description does not compile against "
                f"{', '.join(bindings.headers) or 'its headers'}{header_hint(bindings)}:\n"
                f"{messages or built.stderr.strip()}"
            )
        os.replace(shared, target)


def load_extension(bindings: Bindings) -> tuple[Any, Any, Path]:
    """The (ffi, lib) of the compiled description, building it on first use."""
    name = module_name(bindings)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    target = cache_dir() / "compiled" / f"{name}{suffix}"
    if not target.exists():
        build_extension(bindings, name, target)
    loader = importlib.machinery.ExtensionFileLoader(name, str(target))
    spec = importlib.util.spec_from_file_location(name, str(target), loader=loader)
    if spec is None:  # pragma: no cover - a file path always gives a spec
        raise DescriptionMismatch(f"cannot load {target}")
    module = importlib.util.module_from_spec(spec)
    try:
        loader.exec_module(module)
    except ImportError as exc:
        raise DescriptionMismatch(
            f"{bindings.name}: the compiled bindings do not load: {exc}"
        ) from exc
    return module.ffi, module.lib, target


def verify_compiled_layouts(bindings: Bindings, ffi: Any) -> None:
    """Compare our layouts with the compiler's (cffi also checks its own)."""
    problems: list[str] = []
    for record in bindings.records:
        try:
            size = ffi.sizeof(record.c)
            offsets = {f.name: ffi.offsetof(record.c, f.name) for f in record.fields}
        except ffi.error as exc:
            problems.append(f"{record.c}: {exc}")
            continue
        if size != record.size:
            problems.append(f"{record.c}: size {record.size} described, {size} per the compiler")
        for field in record.fields:
            if offsets[field.name] != field.offset:
                problems.append(
                    f"{record.c}.{field.name}: offset {field.offset} described, "
                    f"{offsets[field.name]} per the compiler"
                )
    if problems:
        raise DescriptionMismatch(
            f"{bindings.name}: layouts differ from the header:\n  " + "\n  ".join(problems)
        )


def pointee_array(spelling: str) -> str:
    """``const unsigned char *`` -> ``unsigned char[]`` (``void`` becomes ``char``)."""
    base = spelling.replace("const", "").replace("*", "").strip()
    return f"{'char' if base in ('void', '') else base}[]"


def _result_conversion(returns: CType) -> list[str]:
    """Statements turning the C result ``r`` (cdata) into its Python value."""
    if isinstance(returns, CString):
        lines = ["r = None if r == _NULL else _ffi.string(r)"]
        if returns.as_text:
            lines.append("r = None if r is None else r.decode('utf-8', 'surrogateescape')")
        return lines
    if isinstance(returns, Opaque):
        return [
            "r = None if r == _NULL else _CHandle(_rt, int(_ffi.cast('uintptr_t', r)), _origin, r)"
        ]
    if isinstance(returns, Enum):
        return ["r = _rt.to_python(r)"]
    if isinstance(returns, Record):
        return [f"r = _unpack(_rt, _ffi.buffer(_ffi.new('{returns.spell()} *', r))[:], 0, _origin)"]
    if isinstance(returns, Pointer | Buffer):
        return ["r = None if r == _NULL else int(_ffi.cast('uintptr_t', r))"]
    return []


class CompiledLibrary(LinkedLibrary):
    """A description linked through a cffi extension built by the C compiler."""

    backend = "compiled"

    def __init__(
        self,
        bindings: Bindings,
        *,
        check_layout: bool | None = None,
        check_declarations: bool | None = None,
    ) -> None:
        super().__init__(bindings)
        from looming.ffi.declarations import check_description

        # Before the build: a mismatch named per argument, not as compiler output.
        check_description(bindings, layouts=check_layout, declarations=check_declarations)
        self.ffi, self.lib, self.path = load_extension(bindings)
        verify_compiled_layouts(bindings, self.ffi)
        for function in bindings.functions:
            self._bind_function(function.name, self._wrap(function))

    # -- conversions -------------------------------------------------------

    def _buffer(self, spelling: str) -> Callable[[Any], Any]:
        ffi = self.ffi
        array = pointee_array(spelling)

        def convert(value: Any) -> Any:
            if value is None:
                return ffi.NULL
            if isinstance(value, CompiledMemory):
                return ffi.cast(spelling, value.cdata)
            if isinstance(value, int):
                return ffi.cast(spelling, value)
            if isinstance(value, memoryview) and value.readonly:
                return bytes(value)
            return ffi.from_buffer(array, value, require_writable=False)

        return convert

    def _handle_cast(self, spelling: str) -> Callable[[Any], Any]:
        ffi = self.ffi

        def cast(handle: Any) -> Any:
            return ffi.cast(spelling, handle.address)

        return cast

    def _pointer(
        self, ctype: Pointer
    ) -> Callable[[Any, str], tuple[Any, Callable[[], None] | None]]:
        ffi = self.ffi
        spelling = ctype.spell()
        target = ctype.target
        origin = self.origin

        def convert(value: Any, what: str) -> tuple[Any, Callable[[], None] | None]:
            if value is None:
                return ffi.NULL, None
            if isinstance(value, Memory):
                return ffi.cast(spelling, value.address), None
            items = (
                [value.value]
                if isinstance(value, Ref)
                else value
                if isinstance(value, list)
                else [value]
            )
            size = max(target.size, 1)
            raw = bytearray(size * max(len(items), 1))
            for i, item in enumerate(items):
                if item is not None:
                    pack_into(target, raw, i * size, item, what)
            memory = ffi.new("char[]", bytes(raw))

            def write_back() -> None:
                data = ffi.buffer(memory)[:]
                if isinstance(value, Ref):
                    value.value = self._fix_handles(unpack_value(target, data, 0, origin))
                elif isinstance(value, list):
                    value[:] = [
                        unpack_value(target, data, i * size, origin) for i in range(len(value))
                    ]
                else:
                    value.update(unpack_value(target, data, 0, origin))

            return ffi.cast(spelling, memory), write_back

        return convert

    def _fix_handles(self, value: Any) -> Any:
        if isinstance(value, Handle) and not isinstance(value, CompiledHandle):
            return CompiledHandle(
                value.kind,
                value.address,
                value.origin,
                self.ffi.cast(value.kind.spell(), value.address),
            )
        return value

    def _callback(self, ctype: Callback) -> Callable[[Any, CallbackErrors], Any]:
        ffi = self.ffi
        spelling = ctype.spell()
        origin = self.origin

        def read(address: int, length: int) -> bytes:
            data: bytes = ffi.buffer(ffi.cast("char *", address), length)[:]
            return data

        def normalize(arg_type: CType, value: Any) -> Any:
            if isinstance(arg_type, Scalar | Enum):
                return value
            if value == ffi.NULL:
                return None
            if isinstance(arg_type, CString):
                return ffi.string(ffi.cast("char *", value))
            return int(ffi.cast("uintptr_t", value))

        returns = ctype.returns

        def make(fn: Any, errors: CallbackErrors) -> Any:
            if fn is None:
                return ffi.NULL

            def trampoline(*raw_cdata: Any) -> Any:
                try:
                    raw = tuple(normalize(t, v) for t, v in zip(ctype.args, raw_cdata, strict=True))
                    values = [
                        callback_value(t, v, raw, read, origin)
                        for t, v in zip(ctype.args, raw, strict=True)
                    ]
                    return callback_result(fn, ctype, fn(*values))
                except BaseException as exc:
                    return callback_failed(ctype, errors, exc)

            if isinstance(returns, Void):
                return ffi.callback(spelling, trampoline)
            return ffi.callback(spelling, trampoline, error=ctype.error_value)

        return make

    def _wrapper_env(self, function: Function) -> dict[str, Any]:
        ffi = self.ffi
        return {
            "_c": getattr(self.lib, function.name),
            "_ffi": ffi,
            "_NULL": ffi.NULL,
            "_fn": function,
            "_lib": self,
            "_origin": self.origin,
            "_argument_error": argument_error,
            "_check": check_argument,
            "_Errors": CallbackErrors,
            "_CHandle": CompiledHandle,
            "_unpack": unpack_value,
            "_pack_into": pack_into,
        }

    def _inline_argument(
        self, wrapper: WrapperSource, i: int, name: str, ctype: CType
    ) -> str | None:
        """The one inline expression passing argument ``i``, for the types
        that have one (wrong values go through ``_cv{i}``, which checks and
        converts)."""
        function, origin, null = wrapper.function, self.origin, self.ffi.NULL
        env = wrapper.env
        if isinstance(ctype, Scalar | Enum):
            return name
        if isinstance(ctype, CString):
            env[f"_cv{i}"] = slow_converter(function, i, origin, lambda v: v, null=null)
            fast = (
                f"{name}.encode() if type({name}) is str"
                if ctype.as_text
                else f"{name} if type({name}) is bytes"
            )
            return f"({fast} else _cv{i}({name}))"
        if isinstance(ctype, Buffer):
            convert = self._buffer(ctype.spell())
            env[f"_cv{i}"] = slow_converter(function, i, origin, convert, null=null)
            return f"({name} if type({name}) is bytes else _cv{i}({name}))"
        if isinstance(ctype, Opaque):
            convert = self._handle_cast(ctype.spell())
            env[f"_cv{i}"] = slow_converter(function, i, origin, convert, null=null)
            return (
                f"({name}.cdata if type({name}) is _CHandle and {name}.kind is _t{i} "
                f"and {name}.origin is _origin else _cv{i}({name}))"
            )
        return None

    def _converted_argument(self, wrapper: WrapperSource, i: int, name: str, ctype: CType) -> None:
        """Statements converting argument ``i`` into ``c{i}`` before the call."""
        c = f"c{i}"
        if isinstance(ctype, Pointer):
            wrapper.env[f"_p{i}"] = self._pointer(ctype)
            wrapper.checked(i, name, f"{c}, _wb{i} = _p{i}({name}, _w{i})")
            wrapper.after.append(f"if _wb{i} is not None:\n        _wb{i}()")
        elif isinstance(ctype, Callback):
            wrapper.env[f"_cb{i}"] = self._callback(ctype)
            wrapper.checked(i, name, f"{c} = _cb{i}({name}, _errors)")
        elif isinstance(ctype, Record):
            wrapper.checked(
                i,
                name,
                f"_raw{i} = bytearray({ctype.size})",
                f"_pack_into(_t{i}, _raw{i}, 0, {name}, _w{i})",
                f"_s{i} = _ffi.new('{ctype.spell()} *')",
                f"_ffi.memmove(_s{i}, bytes(_raw{i}), {ctype.size})",
                f"{c} = _s{i}[0]",
            )
        else:  # pragma: no cover - Function() refuses the rest
            raise DescriptionError(f"{wrapper.function.name}: cannot pass {ctype.spell()}")

    def _wrap(self, function: Function) -> Callable[..., Any]:
        """The Python function that converts, calls and converts back."""
        wrapper = WrapperSource(function, self._wrapper_env(function))
        env = wrapper.env
        for i, (name, ctype) in enumerate(zip(wrapper.names, function.args, strict=True)):
            env[f"_t{i}"] = ctype
            env[f"_w{i}"] = describe_argument(function, i)
            # Common cases are one inline expression; the rest are statements.
            inline = self._inline_argument(wrapper, i, name, ctype)
            if inline is None:
                self._converted_argument(wrapper, i, name, ctype)
            else:
                wrapper.exprs.append(inline)
        env["_rt"] = function.returns
        handler = (
            f"    except (TypeError, OverflowError) as exc:\n"
            f"        raise _argument_error(_fn, {wrapper.arguments}, _origin, exc) from None"
        )
        result = _result_conversion(function.returns)
        if wrapper.needs_no_statements(bool(result)):
            return wrapper.define([f"try:\n        return _c({wrapper.c_args})\n{handler}"])
        call = f"try:\n        r = _c({wrapper.c_args})\n{handler}"
        return wrapper.finish(call, ("_ffi.errno = 0", "_ffi.errno"), result)

    # -- memory ------------------------------------------------------------

    def alloc(self, ctype: CType, count: int = 1) -> Memory:
        if count < 1:
            raise ValueError("count must be at least 1")
        return CompiledMemory(self.ffi, ctype, count, self.origin)

    def string_at(self, address: int, length: int | None = None) -> bytes:
        if not address:
            raise ValueError("string_at(NULL)")
        pointer = self.ffi.cast("char *", address)
        if length is None:
            data: bytes = self.ffi.string(pointer)
            return data
        raw: bytes = self.ffi.buffer(pointer, length)[:]
        return raw


__all__ = ["CompiledLibrary"]
