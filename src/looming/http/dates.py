"""HTTP dates (RFC 9110 section 5.6.7): IMF-fixdate out, all three forms in."""

from __future__ import annotations

from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime


def format_http_date(posix_seconds: float) -> bytes:
    """``posix_seconds`` as an IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return formatdate(int(posix_seconds), usegmt=True).encode("ascii")


def parse_http_date(value: bytes) -> float | None:
    """POSIX seconds of an HTTP date, or ``None`` when it does not parse."""
    try:
        parsed = parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        # asctime form carries no zone; HTTP dates are always GMT.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
