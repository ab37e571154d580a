"""Wire formats: one module per protocol, each a frozen header dataclass with
``parse(buf) -> (header, payload)`` (raising only
:class:`looming.errors.Malformed`) and ``emit(header, payload) -> bytes``."""
