"""C types, described in Python.

A description names C types with the objects here: scalars (``int32``,
``size_t``, ``double``, ...), strings (``c_str`` for ``str``, ``c_bytes`` for
``bytes``), byte buffers, opaque handles, pointers, arrays, structs, unions,
enums and callbacks. Each type knows its C spelling (for the compiled backend
and the layout probe), its size and alignment on this host, and how its values
look on the Python side. Struct and union layouts are computed here with the
C rules (natural alignment, tail padding) and checked against the compiler by
the backends.

Python values of each type, the same in every backend:

* scalars: ``int``, ``float``, ``bool``; enums: members of an ``IntEnum``;
* ``c_str``/``c_bytes``: ``str``/``bytes`` (``None`` for ``NULL``);
* :class:`Buffer` arguments: ``bytes`` (read by C), ``bytearray`` or a
  writable ``memoryview`` (C may write, the caller sees it), ``None``, or a
  :class:`Memory` block;
* :class:`Opaque` handles: :class:`Handle` objects (``None`` for ``NULL``);
* ``Pointer(T)`` arguments: ``None``, a :class:`Ref` (one value, in and out),
  a ``list`` (an array, in and out), a ``dict`` for a struct (in and out), or
  a :class:`Memory` block; returned or stored pointers are ``int`` addresses
  (``None`` for ``NULL``), read with ``lib.string_at`` or a Memory block;
* structs and unions: ``dict`` of field values.
"""

from __future__ import annotations

import ctypes
import enum
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from looming.ffi.errors import DescriptionError


class CType:
    """Base class of every described C type."""

    size: int
    align: int

    def spell(self, declarator: str = "") -> str:
        """The C declaration of ``declarator`` with this type (``int32_t x``)."""
        raise NotImplementedError

    def signature(self) -> str:
        """A stable text naming this type, for hashing descriptions."""
        return self.spell()

    def __repr__(self) -> str:
        return f"<ctype {self.spell()}>"


# struct-module format of a pointer in standard ("=") mode.
POINTER_FORMAT = "=Q" if ctypes.sizeof(ctypes.c_void_p) == 8 else "=I"


def _join(c: str, declarator: str) -> str:
    if not declarator:
        return c
    if c.endswith("*"):
        return f"{c}{declarator}"
    return f"{c} {declarator}"


class Scalar(CType):
    """An arithmetic C type: an integer, a floating-point number or ``bool``."""

    def __init__(self, name: str, c: str, fmt: str, kind: str, ctype: Any) -> None:
        self.name = name
        self.c = c
        self.fmt = fmt
        self.kind = kind  # "int", "float" or "bool"
        self.size = ctypes.sizeof(ctype)
        self.align = ctypes.alignment(ctype)
        self.ctypes_type = ctype
        self.signed = fmt.islower() if kind == "int" else True
        if kind == "int":
            bits = 8 * self.size
            self.minimum = -(1 << (bits - 1)) if self.signed else 0
            self.maximum = (1 << (bits - 1)) - 1 if self.signed else (1 << bits) - 1

    def spell(self, declarator: str = "") -> str:
        return _join(self.c, declarator)


class Void(CType):
    """``void``: only as a return type."""

    size = 0
    align = 1

    def spell(self, declarator: str = "") -> str:
        return _join("void", declarator)


class CString(CType):
    """``char *`` seen as text (``str``, UTF-8) or as ``bytes``; NUL-terminated.

    As an argument C only reads it (it is copied when needed); as a return
    value the string is copied out, ``NULL`` becomes ``None``.
    """

    size = ctypes.sizeof(ctypes.c_void_p)
    align = ctypes.alignment(ctypes.c_void_p)

    def __init__(self, as_text: bool, c: str = "const char *") -> None:
        self.as_text = as_text
        self.c = c

    def spell(self, declarator: str = "") -> str:
        return _join(self.c, declarator)

    def signature(self) -> str:
        return f"{self.c}:{'str' if self.as_text else 'bytes'}"


class Buffer(CType):
    """A pointer to bytes that C reads or writes (``void *``, ``Bytef *``).

    ``c`` is the pointer's C spelling as the header has it, so the compiled
    backend's declaration matches (``"const unsigned char *"``).
    """

    size = ctypes.sizeof(ctypes.c_void_p)
    align = ctypes.alignment(ctypes.c_void_p)

    def __init__(self, c: str = "void *") -> None:
        self.c = c

    def spell(self, declarator: str = "") -> str:
        return _join(self.c, declarator)


class Opaque(CType):
    """A pointer to a type C keeps to itself (``sqlite3 *``, ``FILE *``).

    ``c`` names the pointed-to type as the header spells it (``"sqlite3"``,
    ``"FILE"``, ``"struct foo"``). Values are :class:`Handle` objects; a
    handle of one opaque type is refused where another is expected.
    """

    size = ctypes.sizeof(ctypes.c_void_p)
    align = ctypes.alignment(ctypes.c_void_p)

    def __init__(self, c: str) -> None:
        self.c = c

    def spell(self, declarator: str = "") -> str:
        return _join(f"{self.c} *", declarator)

    def signature(self) -> str:
        return f"opaque {self.c} *"


class Pointer(CType):
    """A pointer to a described type (``int *``, ``struct tm *``)."""

    size = ctypes.sizeof(ctypes.c_void_p)
    align = ctypes.alignment(ctypes.c_void_p)

    def __init__(self, target: CType, *, const: bool = False) -> None:
        if isinstance(target, Void):
            raise DescriptionError("Pointer(void): use Buffer() for void *")
        self.target = target
        self.const = const

    def spell(self, declarator: str = "") -> str:
        inner = f"*{declarator}"
        if isinstance(self.target, Array | Callback):
            inner = f"(*{declarator})"
        text = self.target.spell(inner)
        return f"const {text}" if self.const else text

    def signature(self) -> str:
        if isinstance(self.target, Record):
            return f"{'const ' if self.const else ''}{self.target.c} *"
        return f"{'const ' if self.const else ''}({self.target.signature()}) *"


class Array(CType):
    """A fixed-length C array (a struct field, or the pointee of a pointer)."""

    def __init__(self, element: CType, length: int) -> None:
        if length < 0:
            raise DescriptionError(f"array length must be >= 0, not {length}")
        self.element = element
        self.length = length
        self.size = element.size * length
        self.align = element.align

    def spell(self, declarator: str = "") -> str:
        return self.element.spell(f"{declarator}[{self.length}]")

    def signature(self) -> str:
        return f"({self.element.signature()})[{self.length}]"


class CountedArray(CType):
    """A ``T *`` callback argument whose length is another argument.

    Only in callback signatures (``sqlite3_exec``'s ``char **argv`` with
    ``argc``): the Python callback receives a list of ``length_arg``'s value
    elements.
    """

    size = ctypes.sizeof(ctypes.c_void_p)
    align = ctypes.alignment(ctypes.c_void_p)

    def __init__(self, element: CType, length_arg: int) -> None:
        self.element = element
        self.length_arg = length_arg

    def spell(self, declarator: str = "") -> str:
        return self.element.spell(f"*{declarator}")

    def signature(self) -> str:
        return f"({self.element.signature()})[arg {self.length_arg}]"


class Deref(CType):
    """A ``const void *`` callback argument the callable receives dereferenced.

    ``qsort``'s comparison gets two ``const void *``; described as
    ``Deref(c_int)`` the Python callable gets the two ``int`` values.
    """

    size = ctypes.sizeof(ctypes.c_void_p)
    align = ctypes.alignment(ctypes.c_void_p)

    def __init__(self, target: CType, c: str = "const void *") -> None:
        self.target = target
        self.c = c

    def spell(self, declarator: str = "") -> str:
        return _join(self.c, declarator)

    def signature(self) -> str:
        return f"deref({self.target.signature()}) as {self.c}"


class Field:
    """One member of a struct or union, with its computed offset."""

    def __init__(self, name: str, ctype: CType, offset: int) -> None:
        self.name = name
        self.ctype = ctype
        self.offset = offset


class Record(CType):
    """Common part of :class:`Struct` and :class:`Union`."""

    keyword = "struct"

    def __init__(
        self,
        c: str,
        fields: Sequence[tuple[str, CType]] | None = None,
        *,
        size: int | None = None,
    ) -> None:
        # ``c`` is the name as C declares it: "struct tm", "z_stream".
        self.c = c
        self.fields: list[Field] = []
        self.by_name: dict[str, Field] = {}
        self.expected_size = size
        self.size = 0
        self.align = 1
        self.defined = False
        if fields is not None:
            self.define(fields)

    def define(self, fields: Sequence[tuple[str, CType]]) -> None:
        """Give the members (separately, so a struct can point to itself)."""
        if self.defined:
            raise DescriptionError(f"{self.c} is already defined")
        if not fields:
            raise DescriptionError(f"{self.c} needs at least one field")
        names = [name for name, _ in fields]
        if len(set(names)) != len(names):
            raise DescriptionError(f"{self.c}: duplicate field names in {names}")
        for name, ctype in fields:
            if isinstance(ctype, Void | CountedArray | Deref):
                raise DescriptionError(f"{self.c}.{name}: {ctype.spell()} cannot be a field")
            if isinstance(ctype, Record) and not ctype.defined:
                raise DescriptionError(f"{self.c}.{name}: {ctype.c} is not defined yet")
        self._layout(fields)
        self.by_name = {f.name: f for f in self.fields}
        self.defined = True
        if self.expected_size is not None and self.expected_size != self.size:
            raise DescriptionError(
                f"{self.c}: computed size {self.size} differs from the stated "
                f"size {self.expected_size}; check the field types and order"
            )

    def _layout(self, fields: Sequence[tuple[str, CType]]) -> None:
        raise NotImplementedError

    def spell(self, declarator: str = "") -> str:
        return _join(self.c, declarator)

    def definition(self) -> str:
        """The C definition of the record, for the compiled backend."""
        lines = [f"    {f.ctype.spell(f.name)};" for f in self.fields]
        body = "\n".join(lines)
        if self.c.startswith(("struct ", "union ")):
            return f"{self.c} {{\n{body}\n}};"
        # A typedef name (div_t): the header typedefs an anonymous record.
        return f"typedef {self.keyword} {{\n{body}\n}} {self.c};"

    def signature(self) -> str:
        inner = ";".join(f"{f.name}:{f.ctype.signature()}@{f.offset}" for f in self.fields)
        return f"{self.c}{{{inner}}}#{self.size}"

    def offsetof(self, name: str) -> int:
        return self.by_name[name].offset


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


class Struct(Record):
    """A C struct; offsets follow the host ABI's natural alignment rules."""

    def _layout(self, fields: Sequence[tuple[str, CType]]) -> None:
        offset = 0
        align = 1
        for name, ctype in fields:
            offset = _align_up(offset, ctype.align)
            self.fields.append(Field(name, ctype, offset))
            offset += ctype.size
            align = max(align, ctype.align)
        self.align = align
        self.size = _align_up(offset, align)


class Union(Record):
    """A C union: every member at offset 0."""

    keyword = "union"

    def _layout(self, fields: Sequence[tuple[str, CType]]) -> None:
        align = max(ctype.align for _, ctype in fields)
        size = max(ctype.size for _, ctype in fields)
        self.fields = [Field(name, ctype, 0) for name, ctype in fields]
        self.align = align
        self.size = _align_up(size, align)


class Enum(CType):
    """A C enum: values are members of a generated ``IntEnum`` (or plain ints)."""

    def __init__(
        self, c: str, members: Mapping[str, int], underlying: Scalar | None = None
    ) -> None:
        self.c = c
        self.members = dict(members)
        self.underlying = underlying if underlying is not None else c_int
        self.size = self.underlying.size
        self.align = self.underlying.align
        py_name = c.replace("enum ", "").strip() or "Enum"
        self.python_name = py_name
        self.python: type[enum.IntEnum] = enum.IntEnum(py_name, self.members)  # type: ignore[misc]  # functional API
        self.by_value = {int(m): m for m in self.python}

    def spell(self, declarator: str = "") -> str:
        # Declared through the underlying integer: enums convert implicitly in C
        # and some headers only typedef anonymous enums.
        return self.underlying.spell(declarator)

    def signature(self) -> str:
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.members.items()))
        return f"enum {self.c}{{{inner}}}:{self.underlying.signature()}"

    def __getattr__(self, name: str) -> Any:
        # ZReturn.Z_OK: the members read as attributes of the type.
        python = self.__dict__.get("python")
        if python is not None and name in python.__members__:
            return python[name]
        raise AttributeError(name)

    def __reduce__(self) -> tuple[Any, ...]:
        # The generated IntEnum is rebuilt rather than pickled by reference.
        return (Enum, (self.c, self.members, self.underlying))

    def to_python(self, value: int) -> int:
        member: int = self.by_value.get(value, value)
        return member


class Callback(CType):
    """A C function pointer, given a Python callable at call time.

    The callable is valid for the duration of the call it is passed to (C must
    not keep it). Its arguments are converted as for return values (pointers
    as addresses, ``NULL`` as ``None``), except that a :class:`Deref` argument
    is passed as the pointed-to value (a copy) and a :class:`CountedArray` as
    a list. It must return an int (a float for a floating-point return type).
    If the callable raises, C gets ``error_value`` and the exception is raised
    again when the call returns.
    """

    size = ctypes.sizeof(ctypes.c_void_p)
    align = ctypes.alignment(ctypes.c_void_p)

    def __init__(
        self, returns: CType, args: Sequence[CType], *, error_value: int | float = 0
    ) -> None:
        for i, arg in enumerate(args):
            if isinstance(arg, CountedArray) and not (
                0 <= arg.length_arg < len(args)
                and isinstance(args[arg.length_arg], Scalar)
                and args[arg.length_arg].kind == "int"  # type: ignore[attr-defined]
            ):
                raise DescriptionError(
                    f"callback argument {i}: length_arg {arg.length_arg} must name an integer argument"
                )
            if isinstance(arg, Record | Array | Callback):
                raise DescriptionError(
                    f"callback argument {i}: {arg.spell()} is not supported in callbacks; "
                    "take a pointer to it instead"
                )
        if not isinstance(returns, Scalar | Void | Enum | Buffer | Pointer):
            raise DescriptionError("a callback must return a scalar, an enum, a pointer or void")
        self.returns = returns
        self.args = list(args)
        self.error_value = error_value

    def spell(self, declarator: str = "") -> str:
        params = ", ".join(a.spell() for a in self.args) or "void"
        return self.returns.spell(f"(*{declarator})({params})")

    def signature(self) -> str:
        params = ",".join(a.signature() for a in self.args)
        return f"cb({params})->{self.returns.signature()}"


# ---------------------------------------------------------------- the scalars

int8 = Scalar("int8", "int8_t", "b", "int", ctypes.c_int8)
uint8 = Scalar("uint8", "uint8_t", "B", "int", ctypes.c_uint8)
int16 = Scalar("int16", "int16_t", "h", "int", ctypes.c_int16)
uint16 = Scalar("uint16", "uint16_t", "H", "int", ctypes.c_uint16)
int32 = Scalar("int32", "int32_t", "i", "int", ctypes.c_int32)
uint32 = Scalar("uint32", "uint32_t", "I", "int", ctypes.c_uint32)
int64 = Scalar("int64", "int64_t", "q", "int", ctypes.c_int64)
uint64 = Scalar("uint64", "uint64_t", "Q", "int", ctypes.c_uint64)
c_char = Scalar("char", "char", "b", "int", ctypes.c_byte)
c_schar = Scalar("signed char", "signed char", "b", "int", ctypes.c_byte)
c_uchar = Scalar("unsigned char", "unsigned char", "B", "int", ctypes.c_ubyte)
c_short = Scalar("short", "short", "h", "int", ctypes.c_short)
c_ushort = Scalar("unsigned short", "unsigned short", "H", "int", ctypes.c_ushort)
c_int = Scalar("int", "int", "i", "int", ctypes.c_int)
c_uint = Scalar("unsigned int", "unsigned int", "I", "int", ctypes.c_uint)
_LONG = "q" if ctypes.sizeof(ctypes.c_long) == 8 else "i"
c_long = Scalar("long", "long", _LONG, "int", ctypes.c_long)
c_ulong = Scalar("unsigned long", "unsigned long", _LONG.upper(), "int", ctypes.c_ulong)
c_longlong = Scalar("long long", "long long", "q", "int", ctypes.c_longlong)
c_ulonglong = Scalar("unsigned long long", "unsigned long long", "Q", "int", ctypes.c_ulonglong)
_WORD = "q" if ctypes.sizeof(ctypes.c_size_t) == 8 else "i"
size_t = Scalar("size_t", "size_t", _WORD.upper(), "int", ctypes.c_size_t)
ssize_t = Scalar("ssize_t", "ssize_t", _WORD, "int", ctypes.c_ssize_t)
intptr_t = Scalar("intptr_t", "intptr_t", _WORD, "int", ctypes.c_ssize_t)
uintptr_t = Scalar("uintptr_t", "uintptr_t", _WORD.upper(), "int", ctypes.c_size_t)
time_t = Scalar("time_t", "time_t", "q", "int", ctypes.c_int64)
c_float = Scalar("float", "float", "f", "float", ctypes.c_float)
c_double = Scalar("double", "double", "d", "float", ctypes.c_double)
c_bool = Scalar("bool", "_Bool", "?", "bool", ctypes.c_bool)

void = Void()
c_str = CString(as_text=True)
c_bytes = CString(as_text=False)
void_p = Buffer("void *")
const_void_p = Buffer("const void *")


# ------------------------------------------------------- values of the types


class Ref:
    """One value passed by pointer, read back after the call (an out-parameter)."""

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Ref({self.value!r})"


class Handle:
    """An opaque C pointer returned by a library (``sqlite3 *``).

    ``origin`` ties it to the linked library (and, for the isolated backend,
    to one helper process) so that it cannot leak into another.
    """

    __slots__ = ("address", "kind", "origin")

    def __init__(self, kind: Opaque, address: int, origin: object) -> None:
        self.kind = kind
        self.address = address
        self.origin = origin

    def __repr__(self) -> str:
        return f"<{self.kind.c} * at {self.address:#x}>"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Handle)
            and other.address == self.address
            and other.kind is self.kind
            and other.origin is self.origin
        )

    def __hash__(self) -> int:
        return hash((self.address, id(self.kind)))


class Memory:
    """A block of memory owned by a linked library's address space.

    Made by ``lib.alloc(T)``, it lives across calls (a ``z_stream`` that
    zlib points back to). ``read``/``write`` move raw bytes; ``get``/``set``
    convert through the block's type. Subclasses move the bytes.
    """

    def __init__(self, ctype: CType, count: int, address: int, origin: object) -> None:
        self.ctype = ctype
        self.count = count
        self.size = max(ctype.size, 1) * count if not isinstance(ctype, Void) else count
        self.address = address
        self.origin = origin

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        raise NotImplementedError

    def write(self, data: bytes, offset: int = 0) -> None:
        raise NotImplementedError

    def free(self) -> None:
        """Give the block back now rather than when it is dropped."""

    def get(self, index: int = 0) -> Any:
        """The value of element ``index``, converted (a dict for a struct)."""
        size = self.ctype.size
        return unpack_value(self.ctype, self.read(index * size, size), 0)

    def set(self, value: Any = None, /, index: int = 0, **fields: Any) -> None:
        """Store ``value`` at ``index``, or update some fields of a struct."""
        size = self.ctype.size
        if fields:
            if not isinstance(self.ctype, Record):
                raise TypeError("field keywords need a struct or union block")
            current = bytearray(self.read(index * size, size))
            for name, field_value in fields.items():
                field = self.ctype.by_name.get(name)
                if field is None:
                    raise TypeError(f"{self.ctype.c} has no field {name!r}")
                pack_into(field.ctype, current, field.offset, field_value, name)
            self.write(bytes(current), index * size)
            return
        buf = bytearray(size)
        pack_into(self.ctype, buf, 0, value, "value")
        self.write(bytes(buf), index * size)

    def __repr__(self) -> str:
        return f"<Memory {self.ctype.spell()}[{self.count}] at {self.address:#x}>"


# -------------------------------------------------- packing values to bytes


def _address_of(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise TypeError(f"{what}: expected an address, a Memory or None, got bool")
    if isinstance(value, int):
        return value
    if isinstance(value, Memory | Handle):
        return value.address
    raise TypeError(f"{what}: expected an address, a Memory or None, got {type(value).__name__}")


def check_scalar(ctype: Scalar, value: Any, what: str) -> None:
    """Raise TypeError (naming ``what``) unless ``value`` fits ``ctype``."""
    if ctype.kind == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise TypeError(f"{what}: expected float, got {type(value).__name__}")
        return
    if ctype.kind == "bool":
        if not isinstance(value, bool | int):
            raise TypeError(f"{what}: expected bool, got {type(value).__name__}")
        return
    if not isinstance(value, int):
        raise TypeError(f"{what}: expected int, got {type(value).__name__}")
    if not ctype.minimum <= value <= ctype.maximum:
        raise OverflowError(f"{what}: {value} does not fit in {ctype.c}")


def pack_into(ctype: CType, buf: bytearray, offset: int, value: Any, what: str) -> None:
    """Write ``value`` as ``ctype`` into ``buf`` at ``offset`` (native layout)."""
    if isinstance(ctype, Scalar):
        check_scalar(ctype, value, what)
        struct.pack_into("=" + ctype.fmt, buf, offset, value)
    elif isinstance(ctype, Enum):
        check_scalar(ctype.underlying, value, what)
        struct.pack_into("=" + ctype.underlying.fmt, buf, offset, int(value))
    elif isinstance(ctype, Record) and isinstance(value, bytes):
        # A raw image of the record, as read from memory.
        if len(value) != ctype.size:
            raise TypeError(f"{what}: {len(value)} bytes given for the {ctype.size}-byte {ctype.c}")
        buf[offset : offset + ctype.size] = value
    elif isinstance(ctype, Struct):
        _pack_struct(ctype, buf, offset, value, what)
    elif isinstance(ctype, Union):
        _pack_union(ctype, buf, offset, value, what)
    elif isinstance(ctype, Array):
        _pack_array(ctype, buf, offset, value, what)
    else:
        _pack_address(ctype, buf, offset, value, what)


def _pack_struct(ctype: Struct, buf: bytearray, offset: int, value: Any, what: str) -> None:
    """The fields ``value`` (a dict) names; the others' bytes stay as they are."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{what}: expected a dict for {ctype.c}, got {type(value).__name__}")
    unknown = set(value) - set(ctype.by_name)
    if unknown:
        raise TypeError(f"{what}: {ctype.c} has no field(s) {sorted(unknown)}")
    for field in ctype.fields:
        if field.name in value:
            pack_into(
                field.ctype, buf, offset + field.offset, value[field.name], f"{what}.{field.name}"
            )


def _pack_union(ctype: Union, buf: bytearray, offset: int, value: Any, what: str) -> None:
    """The one member ``value`` (a dict) names."""
    if isinstance(value, Mapping) and len(value) > 1 and set(value) == set(ctype.by_name):
        # Every member, as read back from memory: the largest one holds
        # all the bytes, so packing it alone writes the union back as it was.
        largest = max(ctype.fields, key=lambda f: f.ctype.size)
        value = {largest.name: value[largest.name]}
    if not isinstance(value, Mapping) or len(value) != 1:
        raise TypeError(f"{what}: expected a dict with one member of {ctype.c}")
    for name, member_value in value.items():
        member = ctype.by_name.get(name)
        if member is None:
            raise TypeError(f"{what}: {ctype.c} has no member {name!r}")
        pack_into(member.ctype, buf, offset, member_value, f"{what}.{name}")


def _pack_array(ctype: Array, buf: bytearray, offset: int, value: Any, what: str) -> None:
    """Bytes into an array of bytes, else up to ``ctype.length`` elements."""
    if isinstance(value, bytes | bytearray) and ctype.element.size == 1:
        if len(value) > ctype.length:
            raise TypeError(f"{what}: {len(value)} bytes do not fit in {ctype.length}")
        buf[offset : offset + len(value)] = value
        return
    if not isinstance(value, Sequence) or len(value) > ctype.length:
        raise TypeError(f"{what}: expected a sequence of at most {ctype.length} elements")
    for i, element in enumerate(value):
        pack_into(ctype.element, buf, offset + i * ctype.element.size, element, f"{what}[{i}]")


def _pack_address(ctype: CType, buf: bytearray, offset: int, value: Any, what: str) -> None:
    """A pointer-sized field: a callback, a handle, a pointer, a buffer or a string."""
    if isinstance(ctype, Callback):
        if callable(value):
            raise TypeError(
                f"{what}: a Python callable cannot be stored in memory; pass it as an argument"
            )
    elif isinstance(ctype, Opaque):
        if value is not None and not isinstance(value, Handle | int):
            raise TypeError(f"{what}: expected a {ctype.c} handle, got {type(value).__name__}")
    elif not isinstance(ctype, Pointer | Buffer | CString | CountedArray | Deref):
        raise TypeError(f"{what}: cannot store a {ctype.spell()}")
    struct.pack_into(POINTER_FORMAT, buf, offset, _address_of(value, what))


def unpack_value(ctype: CType, buf: bytes, offset: int, origin: object = None) -> Any:
    """Read a ``ctype`` value from ``buf`` at ``offset``."""
    if isinstance(ctype, Scalar):
        return struct.unpack_from("=" + ctype.fmt, buf, offset)[0]
    if isinstance(ctype, Enum):
        return ctype.to_python(struct.unpack_from("=" + ctype.underlying.fmt, buf, offset)[0])
    if isinstance(ctype, Record):
        return {f.name: unpack_value(f.ctype, buf, offset + f.offset, origin) for f in ctype.fields}
    if isinstance(ctype, Array):
        if isinstance(ctype.element, Scalar) and ctype.element.name == "char":
            return bytes(buf[offset : offset + ctype.length])
        step = ctype.element.size
        return [
            unpack_value(ctype.element, buf, offset + i * step, origin) for i in range(ctype.length)
        ]
    address: int = struct.unpack_from(POINTER_FORMAT, buf, offset)[0]
    if address == 0:
        return None
    if isinstance(ctype, Opaque):
        return Handle(ctype, address, origin)
    return address


def packed(ctype: CType, value: Any, what: str) -> bytes:
    buf = bytearray(ctype.size)
    pack_into(ctype, buf, 0, value, what)
    return bytes(buf)


def python_type_name(ctype: CType) -> str:
    """What a Python caller should pass for ``ctype``, for error messages."""
    if isinstance(ctype, Scalar):
        return ctype.kind
    if isinstance(ctype, Enum):
        return "int"
    if isinstance(ctype, CString):
        return "str or None" if ctype.as_text else "bytes or None"
    if isinstance(ctype, Buffer):
        return "bytes, bytearray, memoryview, Memory, an address or None"
    if isinstance(ctype, Opaque):
        return f"a {ctype.c} handle or None"
    if isinstance(ctype, Pointer):
        return "Ref, list, dict, Memory or None"
    if isinstance(ctype, Callback):
        return "a callable or None"
    if isinstance(ctype, Record):
        return "dict"
    return ctype.spell()


CallableValue = Callable[..., Any]
