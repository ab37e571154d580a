"""Hand-written descriptions of common C libraries, as examples and for tests.

Each module holds one :class:`looming.ffi.Bindings` (``zlib``, ``libc``,
``sqlite3``, ``crypt``) and the constants its callers need.
"""
