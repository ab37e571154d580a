"""zlib: checksums, one-shot compression and a streaming ``z_stream``.

``deflateInit``/``inflateInit`` are macros in ``zlib.h``; the symbols are
``deflateInit_``/``inflateInit_``, which also take the library version and
``sizeof(z_stream)`` so zlib can refuse a caller built against another layout.
"""

from __future__ import annotations

from looming.ffi import (
    Bindings,
    Buffer,
    Callback,
    Enum,
    Opaque,
    Pointer,
    Struct,
    c_bytes,
    c_int,
    c_uint,
    c_ulong,
    foreign,
    void,
)
from looming.ffi.types import CString

Z_NO_FLUSH = 0
Z_FINISH = 4
Z_DEFAULT_COMPRESSION = -1

ZReturn = Enum(
    "zlib_return",
    {
        "Z_OK": 0,
        "Z_STREAM_END": 1,
        "Z_NEED_DICT": 2,
        "Z_ERRNO": -1,
        "Z_STREAM_ERROR": -2,
        "Z_DATA_ERROR": -3,
        "Z_MEM_ERROR": -4,
        "Z_BUF_ERROR": -5,
        "Z_VERSION_ERROR": -6,
    },
)

bytes_in = Buffer("const unsigned char *")
bytes_out = Buffer("unsigned char *")
voidpf = Buffer("void *")

z_stream = Struct(
    "struct z_stream_s",
    [
        ("next_in", Buffer("unsigned char *")),
        ("avail_in", c_uint),
        ("total_in", c_ulong),
        ("next_out", Buffer("unsigned char *")),
        ("avail_out", c_uint),
        ("total_out", c_ulong),
        ("msg", CString(as_text=False, c="char *")),
        ("state", Opaque("struct internal_state")),
        ("zalloc", Callback(voidpf, [voidpf, c_uint, c_uint])),
        ("zfree", Callback(void, [voidpf, voidpf])),
        ("opaque", voidpf),
        ("data_type", c_int),
        ("adler", c_ulong),
        ("reserved", c_ulong),
    ],
)
z_streamp = Pointer(z_stream)

zlib = Bindings(
    "zlib",
    library="z",
    soname="libz.so.1",
    headers=["zlib.h"],
    dev_package="zlib1g-dev",
    functions=[
        foreign("zlibVersion", [], c_bytes),
        foreign("crc32", [("crc", c_ulong), ("buf", bytes_in), ("len", c_uint)], c_ulong),
        foreign("adler32", [("adler", c_ulong), ("buf", bytes_in), ("len", c_uint)], c_ulong),
        foreign("compressBound", [("source_len", c_ulong)], c_ulong),
        foreign(
            "compress",
            [
                ("dest", bytes_out),
                ("dest_len", Pointer(c_ulong)),
                ("source", bytes_in),
                ("source_len", c_ulong),
            ],
            ZReturn,
        ),
        foreign(
            "compress2",
            [
                ("dest", bytes_out),
                ("dest_len", Pointer(c_ulong)),
                ("source", bytes_in),
                ("source_len", c_ulong),
                ("level", c_int),
            ],
            ZReturn,
        ),
        foreign(
            "uncompress",
            [
                ("dest", bytes_out),
                ("dest_len", Pointer(c_ulong)),
                ("source", bytes_in),
                ("source_len", c_ulong),
            ],
            ZReturn,
        ),
        foreign(
            "deflateInit_",
            [("strm", z_streamp), ("level", c_int), ("version", c_bytes), ("stream_size", c_int)],
            ZReturn,
        ),
        foreign("deflate", [("strm", z_streamp), ("flush", c_int)], ZReturn),
        foreign("deflateEnd", [("strm", z_streamp)], ZReturn),
        foreign(
            "inflateInit_",
            [("strm", z_streamp), ("version", c_bytes), ("stream_size", c_int)],
            ZReturn,
        ),
        foreign("inflate", [("strm", z_streamp), ("flush", c_int)], ZReturn),
        foreign("inflateEnd", [("strm", z_streamp)], ZReturn),
    ],
)
