"""The dynamic backend: the description linked at run time through ctypes.

Each described function becomes a small Python function generated from its
description, so that a call does only the conversions its argument types
need (none for integers and ``bytes`` buffers) before entering ctypes. The
generated source is kept on the function (``fn.__looming_source__``) for
reading.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from looming.ffi.description import Bindings, Function
from looming.ffi.errors import DescriptionError, DescriptionMismatch, LibraryNotFound
from looming.ffi.library import (
    LinkedLibrary,
    argument_error,
    check_argument,
    describe_argument,
    parameter_names,
)
from looming.ffi.types import (
    Array,
    Buffer,
    Callback,
    CountedArray,
    CString,
    CType,
    Deref,
    Enum,
    Handle,
    Memory,
    Opaque,
    Pointer,
    Record,
    Ref,
    Scalar,
    Union,
    Void,
    pack_into,
    unpack_value,
)


@functools.cache
def find_library_file(library: str, soname: str | None) -> str:
    """The file to ``dlopen`` for ``-l<library>`` (cached: the search forks)."""
    if soname:
        return soname
    found = ctypes.util.find_library(library)
    if found is None:
        raise LibraryNotFound(
            f"cannot find the shared library lib{library}: install its runtime package "
            f"(on Debian: apt-cache search lib{library}) or give Bindings(soname=...)"
        )
    return found


def load_library(bindings: Bindings) -> tuple[ctypes.CDLL, ctypes.CDLL, ctypes.PyDLL]:
    """The library opened three ways: plain, with errno swapping, keeping the GIL."""
    path = find_library_file(bindings.library, bindings.soname)
    try:
        plain = ctypes.CDLL(path)
        with_errno = ctypes.CDLL(path, use_errno=True)
        keep_gil = ctypes.PyDLL(path)
    except OSError as exc:
        raise LibraryNotFound(f"cannot load {path} for {bindings.name}: {exc}") from exc
    missing = [f.name for f in bindings.functions if not hasattr(plain, f.name)]
    if missing:
        raise DescriptionMismatch(
            f"{bindings.name}: {path} has no symbol(s) {', '.join(missing)}; "
            "check the names (macros such as deflateInit are not symbols) and the library"
        )
    return plain, with_errno, keep_gil


# -- ctypes types for described types ---------------------------------------------

_record_classes: dict[int, type[ctypes.Structure] | type[ctypes.Union]] = {}


def ctypes_record(record: Record) -> type[ctypes.Structure] | type[ctypes.Union]:
    """A ctypes class with the record's layout, checked against ours."""
    cached = _record_classes.get(id(record))
    if cached is not None:
        return cached
    base: type[Any] = ctypes.Union if isinstance(record, Union) else ctypes.Structure
    cls: Any = type(record.c.replace(" ", "_"), (base,), {})
    cls._fields_ = [(f.name, ctypes_type(f.ctype)) for f in record.fields]
    if ctypes.sizeof(cls) != record.size or any(
        getattr(cls, f.name).offset != f.offset for f in record.fields
    ):
        raise DescriptionError(f"{record.c}: ctypes and looming disagree on the layout")
    _record_classes[id(record)] = cls
    result: type[ctypes.Structure] | type[ctypes.Union] = cls
    return result


def ctypes_type(ctype: CType) -> Any:
    if isinstance(ctype, Scalar):
        return ctype.ctypes_type
    if isinstance(ctype, Enum):
        return ctype.underlying.ctypes_type
    if isinstance(ctype, Void):
        return None
    if isinstance(ctype, CString):
        return ctypes.c_char_p
    if isinstance(ctype, Record):
        return ctypes_record(ctype)
    if isinstance(ctype, Array):
        return ctypes_type(ctype.element) * ctype.length
    if isinstance(ctype, Callback):
        return ctypes.CFUNCTYPE(ctypes_type(ctype.returns), *(ctypes_type(a) for a in ctype.args))
    return ctypes.c_void_p


def argument_ctype(ctype: CType) -> Any:
    """The ctypes parameter type for an argument of ``ctype``."""
    if isinstance(ctype, Callback):
        return ctypes.c_void_p  # so that None (NULL) is accepted
    if isinstance(ctype, Buffer):
        return ctypes.c_char_p  # bytes pass without a copy, and fastest
    return ctypes_type(ctype)


# -- memory in this process ------------------------------------------------------


class LocalMemory(Memory):
    """Memory in this process, kept alive by the ctypes buffer it wraps."""

    def __init__(self, ctype: CType, count: int, origin: object) -> None:
        size = max(ctype.size, 1) * count
        self._buffer = ctypes.create_string_buffer(size)
        super().__init__(ctype, count, ctypes.addressof(self._buffer), origin)

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        length = self.size - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > self.size:
            raise IndexError(f"read of {length} bytes at {offset} outside a {self.size}-byte block")
        return ctypes.string_at(self.address + offset, length)

    def write(self, data: bytes, offset: int = 0) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise IndexError(
                f"write of {len(data)} bytes at {offset} outside a {self.size}-byte block"
            )
        ctypes.memmove(self.address + offset, bytes(data), len(data))


# -- conversions used by the generated wrappers ---------------------------------


def read_local(address: int, length: int) -> bytes:
    return ctypes.string_at(address, length)


def buffer_argument(value: Any) -> Any:
    """A ctypes-passable object for a Buffer argument other than ``bytes``."""
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, bytearray):
        return (ctypes.c_char * len(value)).from_buffer(value) if value else b""
    if isinstance(value, memoryview):
        if value.readonly:
            return bytes(value)
        flat = value.cast("B")
        return (ctypes.c_char * len(flat)).from_buffer(flat) if len(flat) else b""
    if isinstance(value, Memory):
        return ctypes.c_char_p(value.address)
    if isinstance(value, int):
        return ctypes.c_char_p(value)  # a raw address, as malloc returned it
    raise TypeError("bad buffer")


class PointerArgument:
    """A Ref, list or dict copied into C memory, copied back after the call."""

    __slots__ = ("address", "buffer", "origin", "target", "value")

    def __init__(self, target: CType, value: Any, what: str, origin: object) -> None:
        self.target = target
        self.value = value
        self.origin = origin
        if isinstance(value, Ref):
            items = [value.value]
        elif isinstance(value, list):
            items = value
        else:
            items = [value]
        size = max(target.size, 1)
        raw = bytearray(size * max(len(items), 1))
        for i, item in enumerate(items):
            if item is not None:
                pack_into(
                    target, raw, i * size, item, f"{what}[{i}]" if isinstance(value, list) else what
                )
        self.buffer = ctypes.create_string_buffer(bytes(raw), len(raw))
        self.address = ctypes.addressof(self.buffer)

    def write_back(self) -> None:
        raw = self.buffer.raw
        if isinstance(self.value, Ref):
            self.value.value = unpack_value(self.target, raw, 0, self.origin)
        elif isinstance(self.value, list):
            size = self.target.size
            self.value[:] = [
                unpack_value(self.target, raw, i * size, self.origin)
                for i in range(len(self.value))
            ]
        elif isinstance(self.value, dict):
            self.value.update(unpack_value(self.target, raw, 0, self.origin))


def callback_argument_converter(
    ctype: Callback, read: Callable[[int, int], bytes], origin: object
) -> Callable[[tuple[Any, ...]], list[Any]]:
    """Turn raw C callback arguments into the Python values the callable gets."""

    def convert(raw: tuple[Any, ...]) -> list[Any]:
        values: list[Any] = []
        for arg_type, value in zip(ctype.args, raw, strict=True):
            values.append(callback_value(arg_type, value, raw, read, origin))
        return values

    return convert


def callback_value(
    arg_type: CType,
    value: Any,
    raw: tuple[Any, ...],
    read: Callable[[int, int], bytes],
    origin: object,
) -> Any:
    if isinstance(arg_type, Enum):
        return arg_type.to_python(value)
    if isinstance(arg_type, CString):
        if value is None:
            return None
        return value.decode("utf-8", "surrogateescape") if arg_type.as_text else value
    if isinstance(arg_type, Opaque):
        return None if not value else Handle(arg_type, value, origin)
    if isinstance(arg_type, Deref):
        if not value:
            return None
        return unpack_value(arg_type.target, read(value, arg_type.target.size), 0, origin)
    if isinstance(arg_type, CountedArray):
        if not value:
            return None
        count = int(raw[arg_type.length_arg])
        element = arg_type.element
        if isinstance(element, CString):
            pointers = read(value, count * element.size)
            out: list[Any] = []
            for i in range(count):
                address = int.from_bytes(
                    pointers[i * element.size : (i + 1) * element.size], "little"
                )
                if address == 0:
                    out.append(None)
                    continue
                text = ctypes.string_at(address)
                out.append(text.decode("utf-8", "surrogateescape") if element.as_text else text)
            return out
        data = read(value, count * element.size)
        return [unpack_value(element, data, i * element.size, origin) for i in range(count)]
    if isinstance(arg_type, Buffer | Pointer | Callback):
        return value or None  # an address; NULL reads as None in every backend
    return value


class CallbackErrors:
    """The first exception raised by a callable during one call."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None


def make_callback(ctype: Callback, fn: Any, errors: CallbackErrors, origin: object) -> Any:
    """A ctypes function pointer calling ``fn`` with converted arguments."""
    if fn is None:
        return None
    convert = callback_argument_converter(ctype, read_local, origin)

    def trampoline(*raw: Any) -> Any:
        try:
            return callback_result(fn, ctype, fn(*convert(raw)))
        except BaseException as exc:
            return callback_failed(ctype, errors, exc)

    return ctypes_type(ctype)(trampoline)


def callback_result(fn: Any, ctype: Callback, result: Any) -> Any:
    """What a callback's Python result becomes for C (every backend)."""
    returns = ctype.returns
    if isinstance(returns, Void):
        return None
    if isinstance(returns, Scalar) and returns.kind == "float":
        return float(result)
    if not isinstance(result, int):
        raise TypeError(
            f"callback {getattr(fn, '__name__', fn)!r} returned {type(result).__name__}, "
            f"expected {returns.spell()}"
        )
    return result


def callback_failed(ctype: Callback, errors: CallbackErrors, exc: BaseException) -> Any:
    """Keep the first exception a callback raised (re-raised after the C call
    returns) and give C the callback's error value meanwhile."""
    if errors.error is None:
        errors.error = exc
    return None if isinstance(ctype.returns, Void) else ctype.error_value


# -- code generation ------------------------------------------------------------


@dataclass
class WrapperSource:
    """A generated wrapper's source, filled in argument by argument: the
    statements before the C call, the call's argument expressions, the
    statements after it. Shared by the dynamic and compiled backends."""

    function: Function
    env: dict[str, Any]  # the names the generated source refers to
    names: list[str] = field(init=False)
    body: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    exprs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = parameter_names(self.function)
        if self.uses_callbacks:
            self.body.append("_errors = _Errors()")

    @property
    def uses_callbacks(self) -> bool:
        return any(isinstance(t, Callback) for t in self.function.args)

    @property
    def params(self) -> str:
        return ", ".join(self.names)

    @property
    def arguments(self) -> str:
        """The Python arguments as a tuple expression (for error messages)."""
        trailing = "," if len(self.names) == 1 else ""
        return f"({self.params}{trailing})"

    @property
    def c_args(self) -> str:
        return ", ".join(self.exprs)

    def checked(self, i: int, name: str, *lines: str) -> None:
        """Argument ``i`` checked, then converted into ``c{i}`` by ``lines``."""
        self.exprs.append(f"c{i}")
        self.body.append(f"_check(_fn, {i}, {name}, _origin)")
        self.body.extend(lines)

    def needs_no_statements(self, converts_result: bool) -> bool:
        """Whether the wrapper can be the C call alone (the fast path)."""
        return not (self.body or self.after or self.function.errno or converts_result)

    def define(self, lines: list[str]) -> Callable[..., Any]:
        """The wrapper whose body is ``lines``, compiled."""
        body = "\n    ".join(lines)
        source = f"def {self.function.name}({self.params}):\n    {body}\n"
        return finish_wrapper(self.function, source, self.env)

    def finish(self, call: str, errno: tuple[str, str], result: list[str]) -> Callable[..., Any]:
        """The wrapper: ``call`` (which sets ``r``) between errno's reset and
        read (``errno``, when the function keeps errno), then the
        write-backs, a callback's exception, ``result`` (converting ``r``)."""
        body = self.body
        keeps_errno = self.function.errno
        if keeps_errno:
            body.append(errno[0])
        body.append(call)
        if keeps_errno:
            body.append(f"_e = {errno[1]}")
        body.extend(self.after)
        if self.uses_callbacks:
            body.append("if _errors.error is not None:\n        raise _errors.error")
        body.extend(result)
        if keeps_errno:
            body.append("_lib._record_errno(_fn, r, _e)")
        body.append("return r")
        return self.define(body)


def _wrapper_env(function: Function, c_function: Any, library: LinkedLibrary) -> dict[str, Any]:
    return {
        "_c": c_function,
        "_fn": function,
        "_lib": library,
        "_origin": library.origin,
        "_argument_error": argument_error,
        "_check": check_argument,
        "_buffer": buffer_argument,
        "_Pointer": PointerArgument,
        "_Errors": CallbackErrors,
        "_callback": make_callback,
        "_Memory": Memory,
        "_ArgumentError": ctypes.ArgumentError,
        "_set_errno": ctypes.set_errno,
        "_get_errno": ctypes.get_errno,
        "_unpack": unpack_value,
        "_pack_into": pack_into,
        "_Handle": Handle,
    }


def _inline_argument(
    wrapper: WrapperSource, i: int, name: str, ctype: CType, origin: object
) -> str | None:
    """The one inline expression passing argument ``i``, for the types that
    have one (wrong values go through ``_cv{i}``, which checks and converts)."""
    function = wrapper.function
    env = wrapper.env
    if isinstance(ctype, Scalar | Enum):
        return name
    if isinstance(ctype, CString):
        env[f"_cv{i}"] = slow_converter(function, i, origin, lambda v: v)
        fast = (
            f"{name}.encode() if type({name}) is str"
            if ctype.as_text
            else f"{name} if type({name}) is bytes"
        )
        return f"({fast} else _cv{i}({name}))"
    if isinstance(ctype, Buffer):
        # ctypes takes bytes and None for a char * parameter as they are;
        # anything else it refuses before calling, and the call is retried
        # with the argument converted (see retry_converted).
        env[f"_cv{i}"] = slow_converter(function, i, origin, buffer_argument)
        return name
    if isinstance(ctype, Opaque):
        env[f"_cv{i}"] = slow_converter(function, i, origin, lambda v: v.address)
        return (
            f"({name}.address if type({name}) is _Handle and {name}.kind is _t{i} "
            f"and {name}.origin is _origin else _cv{i}({name}))"
        )
    return None


def _converted_argument(wrapper: WrapperSource, i: int, name: str, ctype: CType) -> None:
    """Statements converting argument ``i`` into ``c{i}`` before the call."""
    c = f"c{i}"
    if isinstance(ctype, Pointer):
        wrapper.checked(
            i,
            name,
            f"if {name} is None or isinstance({name}, _Memory):\n"
            f"        _p{i} = None\n        {c} = None if {name} is None else {name}.address\n"
            f"    else:\n        _p{i} = _Pointer(_t{i}.target, {name}, _w{i}, _origin)\n"
            f"        {c} = _p{i}.address",
        )
        wrapper.after.append(f"if _p{i} is not None:\n        _p{i}.write_back()")
    elif isinstance(ctype, Callback):
        wrapper.checked(i, name, f"{c} = _callback(_t{i}, {name}, _errors, _origin)")
    elif isinstance(ctype, Record):
        wrapper.env[f"_R{i}"] = ctypes_record(ctype)
        wrapper.checked(
            i,
            name,
            f"_raw{i} = bytearray({ctype.size})",
            f"_pack_into(_t{i}, _raw{i}, 0, {name}, _w{i})",
            f"{c} = _R{i}.from_buffer_copy(_raw{i})",
        )
    else:  # pragma: no cover - Function() refuses the rest
        raise DescriptionError(f"{wrapper.function.name}: cannot pass {ctype.spell()}")


def _call_block(wrapper: WrapperSource, target: str, retries: bool) -> str:
    """The C call, its result given to ``target``; arguments ctypes refuses
    become a named TypeError."""
    refused = (
        f"    except (_ArgumentError, TypeError) as exc:\n"
        f"        raise _argument_error(_fn, {wrapper.arguments}, _origin, exc) from None"
    )
    if retries:
        # A buffer ctypes refused (a bytearray, a Memory) is converted and
        # the call made then: ctypes refuses before calling, so C runs once.
        refused = (
            f"    except _ArgumentError:\n"
            f"        {target}_retry([{wrapper.c_args}], {wrapper.arguments})\n" + refused
        )
    return f"try:\n        {target}_c({wrapper.c_args})\n{refused}"


def _result_conversion(returns: CType) -> list[str]:
    """Statements turning the C result ``r`` into its Python value."""
    if isinstance(returns, CString) and returns.as_text:
        return ["r = None if r is None else r.decode('utf-8', 'surrogateescape')"]
    if isinstance(returns, Opaque):
        return ["r = None if not r else _Handle(_rt, r, _origin)"]
    if isinstance(returns, Enum):
        return ["r = _rt.to_python(r)"]
    if isinstance(returns, Record):
        return ["r = _unpack(_rt, bytes(r), 0, _origin)"]
    if isinstance(returns, Pointer | Buffer):
        return ["r = r or None"]
    return []


def generate_wrapper(
    function: Function, c_function: Any, library: LinkedLibrary
) -> Callable[..., Any]:
    """Build the Python function that converts, calls and converts back."""
    wrapper = WrapperSource(function, _wrapper_env(function, c_function, library))
    env = wrapper.env
    retry: dict[int, Callable[[Any], Any]] = {}
    for i, (name, ctype) in enumerate(zip(wrapper.names, function.args, strict=True)):
        env[f"_t{i}"] = ctype
        env[f"_w{i}"] = describe_argument(function, i)
        # Common cases are one inline expression; the rest are statements.
        inline = _inline_argument(wrapper, i, name, ctype, library.origin)
        if inline is None:
            _converted_argument(wrapper, i, name, ctype)
            continue
        wrapper.exprs.append(inline)
        if isinstance(ctype, Buffer):
            retry[i] = env[f"_cv{i}"]
    returns = function.returns
    env["_rt"] = returns
    if retry:
        env["_retry"] = retry_converted(function, c_function, retry, library.origin)
    result = _result_conversion(returns)
    if wrapper.needs_no_statements(bool(result)):
        # The fast path: nothing to do after the call.
        return wrapper.define([_call_block(wrapper, "return ", bool(retry))])
    errno = ("_set_errno(0)", "_get_errno()")
    return wrapper.finish(_call_block(wrapper, "r = ", bool(retry)), errno, result)


def finish_wrapper(function: Function, source: str, env: dict[str, Any]) -> Callable[..., Any]:
    """Compile a generated wrapper's source."""
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<looming.ffi {function.name}>", "exec"), env, namespace)
    wrapper: Callable[..., Any] = namespace[function.name]
    wrapper.__doc__ = function.prototype()
    wrapper.__looming_source__ = source  # type: ignore[attr-defined]  # kept for reading
    return wrapper


def retry_converted(
    function: Function,
    c_function: Any,
    converters: dict[int, Callable[[Any], Any]],
    origin: object,
) -> Callable[[list[Any], tuple[Any, ...]], Any]:
    """Call again with the refused arguments converted (or raise a named TypeError)."""

    def call(values: list[Any], originals: tuple[Any, ...]) -> Any:
        try:
            for index, convert in converters.items():
                values[index] = convert(originals[index])
            return c_function(*values)
        except (ctypes.ArgumentError, TypeError, ValueError, OverflowError) as exc:
            raise argument_error(function, originals, origin, exc) from None

    return call


def slow_converter(
    function: Function,
    index: int,
    origin: object,
    convert: Callable[[Any], Any],
    *,
    null: Any = None,
) -> Callable[[Any], Any]:
    """The off-the-fast-path conversion of one argument: ``None`` becomes
    ``null`` (the backend's NULL), then the checks, then ``convert``."""

    def converter(value: Any) -> Any:
        if value is None:
            return null
        check_argument(function, index, value, origin)
        return convert(value)

    return converter


class DynamicLibrary(LinkedLibrary):
    """A description linked through ctypes in this process."""

    backend = "dynamic"

    def __init__(
        self,
        bindings: Bindings,
        *,
        check_layout: bool | None = None,
        check_declarations: bool | None = None,
    ) -> None:
        super().__init__(bindings)
        from looming.ffi.declarations import check_description

        check_description(bindings, layouts=check_layout, declarations=check_declarations)
        plain, with_errno, keep_gil = load_library(bindings)
        self.path = find_library_file(bindings.library, bindings.soname)
        for function in bindings.functions:
            handle = with_errno if function.errno else plain
            if not function.release_gil:
                handle = keep_gil
            c_function = getattr(handle, function.name)
            # Callbacks go as plain pointers so that None (NULL) is accepted.
            c_function.argtypes = [argument_ctype(t) for t in function.args]
            c_function.restype = ctypes_type(function.returns)
            self._bind_function(function.name, generate_wrapper(function, c_function, self))

    def alloc(self, ctype: CType, count: int = 1) -> Memory:
        if count < 1:
            raise ValueError("count must be at least 1")
        return LocalMemory(ctype, count, self.origin)

    def string_at(self, address: int, length: int | None = None) -> bytes:
        if not address:
            raise ValueError("string_at(NULL)")
        return ctypes.string_at(address, -1 if length is None else length)


def link_dynamic(
    bindings: Bindings, *, check_layout: bool | None = None, check_declarations: bool | None = None
) -> DynamicLibrary:
    """Link ``bindings`` through ctypes (no compiler needed)."""
    return DynamicLibrary(
        bindings, check_layout=check_layout, check_declarations=check_declarations
    )


__all__ = ["DynamicLibrary", "link_dynamic"]
