"""The Range request header (RFC 9110 section 14) for byte ranges."""

from __future__ import annotations

MAX_RANGES = 16
"""More ranges than this in one request are answered with the whole body."""


class Unsatisfiable(Exception):
    """Every range lies past the end of the representation: answer 416."""


def parse_byte_ranges(header: bytes, size: int) -> list[tuple[int, int]] | None:
    """The ranges of ``Range: bytes=...`` as ``(first, last)`` inclusive pairs.

    ``None`` when the header is not a byte-range header we understand (the
    whole representation is then sent, as RFC 9110 allows) or asks for too
    many ranges. Raises :class:`Unsatisfiable` when no range overlaps
    ``size`` bytes. Overlapping ranges are kept as asked.
    """
    try:
        text = header.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    unit, equals, specs = text.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    parts = [part.strip() for part in specs.split(",")]
    parts = [part for part in parts if part]
    if not parts or len(parts) > MAX_RANGES:
        return None
    ranges: list[tuple[int, int]] = []
    for part in parts:
        first_text, dash, last_text = part.partition("-")
        if not dash:
            return None
        first_text = first_text.strip()
        last_text = last_text.strip()
        if first_text == "":
            # suffix range: the last N bytes.
            if not last_text.isdigit():
                return None
            suffix = int(last_text)
            if suffix == 0:
                continue
            ranges.append((max(0, size - suffix), size - 1))
            continue
        if not first_text.isdigit() or (last_text and not last_text.isdigit()):
            return None
        first = int(first_text)
        if last_text and int(last_text) < first:
            return None
        if first >= size:
            continue
        last = min(int(last_text), size - 1) if last_text else size - 1
        ranges.append((first, last))
    if not ranges:
        raise Unsatisfiable
    return ranges
