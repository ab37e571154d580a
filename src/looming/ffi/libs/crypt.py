"""libcrypt (libxcrypt): one-way password hashing."""

from __future__ import annotations

from looming.ffi import Bindings, c_bytes, c_int, c_str, c_ulong, foreign

crypt = Bindings(
    "crypt",
    library="crypt",
    soname="libcrypt.so.1",
    headers=["crypt.h"],
    dev_package="libcrypt-dev",
    functions=[
        foreign(
            "crypt", [("phrase", c_str), ("setting", c_str)], c_str, errno=True, error_when="null"
        ),
        foreign(
            "crypt_gensalt",
            [("prefix", c_str), ("count", c_ulong), ("rbytes", c_bytes), ("nrbytes", c_int)],
            c_str,
            errno=True,
            error_when="null",
        ),
    ],
)
