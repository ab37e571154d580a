"""Turning a request target into a key inside a site, refusing every escape.

A target is split into ``/``-separated segments *before* percent-decoding,
so an encoded ``%2f`` can never create a new segment; each decoded segment
must then be an ordinary name (not ``.`` or ``..``, no ``/``, ``\\``, NUL or
other control characters, valid UTF-8). Anything else maps to no key at all,
which the site answers with 404.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

_FORBIDDEN_IN_SEGMENT = frozenset("/\\\x00")


def _decode_segment(raw: str) -> str | None:
    if "%" in raw:
        try:
            decoded = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return None
    else:
        decoded = raw
    if decoded in (".", ".."):
        return None
    for char in decoded:
        if char in _FORBIDDEN_IN_SEGMENT or ord(char) < 0x20 or ord(char) == 0x7F:
            return None
    return decoded


def target_to_key(target: str) -> tuple[str, bool] | None:
    """The site key a request target names, and whether it ended in ``/``.

    ``"/css/site.css?v=2"`` gives ``("css/site.css", False)``, ``"/"`` gives
    ``("", True)``. ``None`` when the target is not an origin-form path or
    tries to leave the site.
    """
    path = target.split("?", 1)[0].split("#", 1)[0]
    if path.startswith(("http://", "https://")):
        # absolute-form (RFC 9112 section 3.2.2): keep only the path.
        after_scheme = path.split("://", 1)[1]
        slash = after_scheme.find("/")
        path = after_scheme[slash:] if slash >= 0 else "/"
    if not path.startswith("/"):
        return None
    names: list[str] = []
    for raw in path.split("/"):
        if raw == "":
            continue
        name = _decode_segment(raw)
        if name is None:
            return None
        names.append(name)
    return "/".join(names), path.endswith("/")
