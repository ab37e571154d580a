"""h11's receive buffer held to RFC 9112's line grammar, as llhttp is.

h11 ends a line at a bare LF, keeps a bare CR inside a field value, takes
DEL and other control bytes in values, whitespace after a chunk size and an
empty chunk extension (``5;``). A head such as ``X-Hide: y\\nContent-Length:
5\\r\\n`` is then read by h11 with a Content-Length that a proxy reading CRLF
lines would take as part of ``X-Hide``'s value: a request smuggled past it.
:class:`StrictReceiveBuffer` refuses these before h11 parses them, so a head
(or a chunked body's trailer, or a chunk's size line) that llhttp refuses for
its line ends or bytes is refused on the h11 path too, and on the httptools
path where h11 reads again a head llhttp refused.
"""

from __future__ import annotations

import re

from h11 import LocalProtocolError
from h11._receivebuffer import ReceiveBuffer

_BAD_IN_HEAD = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")
"""A byte a head, or a trailer, may not hold: a control byte other than HTAB
(RFC 9110 section 5.5: field values exclude CTLs, DEL among them), or a CR or
LF that is not part of a CRLF (RFC 9112 section 2.2: a bare CR is refused; a
bare LF may be taken only where nothing else reads the same bytes, which a
server behind a proxy cannot know)."""

_CONTROLS = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])


def clean_head(data: bytes | bytearray) -> bool:
    """Whether a whole head (or trailer) holds no byte :data:`_BAD_IN_HEAD`
    matches: the same answer, counted in C (the pattern's look-arounds
    cost four times as much on a 100-byte head)."""
    crlf = data.count(b"\r\n")
    return (
        data.count(b"\n") == crlf
        and data.count(b"\r") == crlf
        and len(data.translate(None, _CONTROLS)) == len(data)
    )


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXT = (
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*"
)
_CHUNK_LINE = re.compile(rb"[0-9A-Fa-f]+" + _CHUNK_EXT + rb"\r\n")
"""A chunk's size line (RFC 9112 section 7.1): ``chunk-size [ chunk-ext ]
CRLF``, chunk-size ``1*HEXDIG`` and chunk-ext ``*( BWS ";" BWS
chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )``, a name a token and a value
a token or a quoted-string. So ``5 `` (whitespace and no extension) and
``5;`` (an extension without a name) are refused. (h11's own pattern then
refuses whitespace before the ``;``, the grammar's BWS, as llhttp and
uvicorn do: no sender is to write it, RFC 9110 section 5.6.3.)"""


def bad_head_byte(data: bytes | bytearray, start: int = 0) -> int:
    """Where the first byte from ``start`` that no head may hold is in the
    first part of a head, ``data``, or -1 (a CR at the end is not yet bare)."""
    bad = _BAD_IN_HEAD.search(data, start)
    if bad is None or (bad.start() == len(data) - 1 and data[-1] == 13):
        return -1
    return bad.start()


class StrictReceiveBuffer(ReceiveBuffer):
    """h11's buffer, refusing a head or trailer with a bare CR or LF or a
    control byte, and a chunk size line outside the grammar (see the
    module's notes). h11 turns the error into a 400."""

    def __init__(self) -> None:
        super().__init__()
        self._lines = False
        self._scanned = 0
        """How far the head in progress was found clean (see _check_unfinished)."""

    def maybe_extract_lines(self) -> list[bytearray] | None:
        self._lines = True
        try:
            lines = super().maybe_extract_lines()
        finally:
            self._lines = False
        if lines is None:
            self._check_unfinished()
        return lines

    def _check_unfinished(self) -> None:
        """Refuse a bad byte of a head still arriving at once, as llhttp
        does, rather than wait for a blank line that may never come. Each
        byte is looked at about once (a CR at the end again, with what
        follows it)."""
        data = self._data
        bad = bad_head_byte(data, max(0, self._scanned - 1))
        if bad >= 0:
            raise LocalProtocolError(f"a bare CR or LF, or a control byte, at byte {bad} of a head")
        self._scanned = max(0, len(data) - 1)

    def maybe_extract_next_line(self) -> bytearray | None:
        # (A server's h11 asks for one line only for a chunk's size.)
        line = super().maybe_extract_next_line()
        if line is not None and _CHUNK_LINE.fullmatch(line) is None:
            raise LocalProtocolError(f"illegal chunk size line: {bytes(line[:40])!r}")
        return line

    def _extract(self, count: int) -> bytearray:
        out = super()._extract(count)
        self._scanned = 0
        if self._lines and not clean_head(out):
            bad = bad_head_byte(out)
            raise LocalProtocolError(f"a bare CR or LF, or a control byte, at byte {bad} of a head")
        return out
