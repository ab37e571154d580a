"""Typed contents: how a value becomes the bytes of a blob and back."""

from __future__ import annotations

import json
from typing import Any, Generic, Protocol, TypeVar

from looming.store.errors import StoreError

T = TypeVar("T")


class ContentDecodeError(StoreError):
    """A blob's bytes do not decode with the store's codec."""


class Codec(Protocol[T]):
    """Turns values into blob bytes and back; ``decode(encode(v)) == v``."""

    def encode(self, value: T) -> bytes: ...

    def decode(self, data: bytes) -> T: ...


class BytesCodec:
    """Values are the raw bytes of the blob."""

    def encode(self, value: bytes) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"this store holds bytes, not {type(value).__name__}")
        return bytes(value)

    def decode(self, data: bytes) -> bytes:
        return data


class StrCodec:
    """Values are text, stored as UTF-8."""

    def encode(self, value: str) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"this store holds str, not {type(value).__name__}")
        return value.encode("utf-8")

    def decode(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ContentDecodeError(f"blob is not UTF-8 text: {error}") from None


class JsonCodec:
    """Values are JSON, stored canonically (sorted keys, compact) so equal
    values give equal blobs and merges see no spurious differences."""

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ContentDecodeError(f"blob is not JSON: {error}") from None


class FunctionCodec(Generic[T]):
    """A codec from two functions, for user types."""

    def __init__(self, encode: Any, decode: Any) -> None:
        self._encode = encode
        self._decode = decode

    def encode(self, value: T) -> bytes:
        data = self._encode(value)
        if not isinstance(data, bytes):
            raise TypeError("a codec's encode must return bytes")
        return data

    def decode(self, data: bytes) -> T:
        value: T = self._decode(data)
        return value


BYTES = BytesCodec()
STR = StrCodec()
JSON = JsonCodec()
