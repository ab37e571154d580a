"""Content types by file name: a fixed table for the web's usual files,
then :mod:`mimetypes`, with ``charset=utf-8`` on every text type."""

from __future__ import annotations

DEFAULT_TYPE = "application/octet-stream"

# Fixed so a site is served the same way whatever the host's mime.types says.
_KNOWN: dict[str, str] = {
    "html": "text/html",
    "htm": "text/html",
    "css": "text/css",
    "js": "text/javascript",
    "mjs": "text/javascript",
    "json": "application/json",
    "map": "application/json",
    "txt": "text/plain",
    "md": "text/markdown",
    "csv": "text/csv",
    "xml": "application/xml",
    "svg": "image/svg+xml",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "ico": "image/vnd.microsoft.icon",
    "woff": "font/woff",
    "woff2": "font/woff2",
    "ttf": "font/ttf",
    "otf": "font/otf",
    "wasm": "application/wasm",
    "pdf": "application/pdf",
    "zip": "application/zip",
    "gz": "application/gzip",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "bin": "application/octet-stream",
}

# Types outside text/* that are text all the same and want a charset.
_TEXTUAL = frozenset(
    {"application/json", "application/xml", "image/svg+xml", "application/javascript"}
)


def content_type_for(name: str) -> str:
    """The Content-Type value for a file called ``name``."""
    base = name.rsplit("/", 1)[-1]
    extension = base.rsplit(".", 1)[-1].lower() if "." in base else ""
    media_type = _KNOWN.get(extension)
    if media_type is None:
        # Imported here: a site of the usual files never loads its tables.
        import mimetypes

        guessed, _ = mimetypes.guess_type(base, strict=False)
        media_type = guessed or DEFAULT_TYPE
    if media_type.startswith("text/") or media_type in _TEXTUAL:
        return media_type + "; charset=utf-8"
    return media_type
