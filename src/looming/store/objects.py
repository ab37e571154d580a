"""Git's object encoding: blobs, trees and commits, named by SHA-1.

Objects are encoded exactly as Git encodes them, so an object id here is the
id ``git`` computes for the same content. Parsing trusts nothing and raises
only :class:`looming.errors.Malformed`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from looming.errors import Malformed

ObjectId = bytes  # 20 raw bytes of SHA-1

BLOB = "blob"
TREE = "tree"
COMMIT = "commit"
TAG = "tag"
OBJECT_TYPES = (BLOB, TREE, COMMIT, TAG)

# The type numbers of git's pack entries (gitformat-pack), one table read
# both ways: the number of a kind, and the kind of a number.
PACK_COMMIT, PACK_TREE, PACK_BLOB, PACK_TAG = 1, 2, 3, 4
PACK_OFS_DELTA, PACK_REF_DELTA = 6, 7
PACK_NUMBER_OF_KIND = {COMMIT: PACK_COMMIT, TREE: PACK_TREE, BLOB: PACK_BLOB, TAG: PACK_TAG}
KIND_OF_PACK_NUMBER = {number: kind for kind, number in PACK_NUMBER_OF_KIND.items()}

MODE_FILE = 0o100644
MODE_EXECUTABLE = 0o100755
MODE_SYMLINK = 0o120000
MODE_TREE = 0o040000
MODE_GITLINK = 0o160000
BLOB_MODES = frozenset({MODE_FILE, MODE_EXECUTABLE, MODE_SYMLINK, 0o100664})

_MODE_TEXT = {MODE_TREE: b"40000"}


def hex_id(object_id: ObjectId) -> str:
    return object_id.hex()


def raw_id(text: str) -> ObjectId:
    """Parse a 40-digit hex object id; :class:`Malformed` otherwise."""
    if len(text) != 40:
        raise Malformed(f"object id {text!r} is not 40 hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError as error:
        raise Malformed(f"object id {text!r} is not 40 hex digits") from error


# "<kind> " of each object type: an object's header is this, its length, NUL.
OBJECT_HEADER_PREFIX = {kind: kind.encode() + b" " for kind in OBJECT_TYPES}
_HEADER_PREFIX = OBJECT_HEADER_PREFIX


def object_header(kind: str, length: int) -> bytes:
    prefix = _HEADER_PREFIX.get(kind)
    if prefix is None:
        return f"{kind} {length}\0".encode()
    return b"%s%d\0" % (prefix, length)


def hash_object(kind: str, body: bytes) -> ObjectId:
    digest = hashlib.sha1(object_header(kind, len(body)))
    digest.update(body)
    return digest.digest()


# ---------------------------------------------------------------- trees


def tree_sort_key(name: bytes, mode: int) -> bytes:
    """Git orders a tree's entries by name, a directory as if ending in ``/``."""
    return name + b"/" if mode == MODE_TREE else name


def encode_tree_entry(name: bytes, mode: int, object_id: ObjectId) -> bytes:
    mode_text = _MODE_TEXT.get(mode)
    if mode_text is None:
        mode_text = b"%o" % mode
    return mode_text + b" " + name + b"\0" + object_id


def encode_tree(entries: dict[bytes, tuple[int, ObjectId]]) -> bytes:
    """Encode ``name -> (mode, id)`` in Git's order."""
    ordered = sorted(entries.items(), key=lambda item: tree_sort_key(item[0], item[1][0]))
    return b"".join(encode_tree_entry(name, mode, oid) for name, (mode, oid) in ordered)


def parse_tree(body: bytes) -> dict[bytes, tuple[int, ObjectId]]:
    entries: dict[bytes, tuple[int, ObjectId]] = {}
    position = 0
    end = len(body)
    while position < end:
        space = body.find(b" ", position)
        if space < 0:
            raise Malformed("tree entry without a mode")
        mode_text = body[position:space]
        if not mode_text or not mode_text.isdigit():
            raise Malformed(f"tree entry has mode {mode_text!r}")
        mode = int(mode_text, 8)
        nul = body.find(b"\0", space + 1)
        if nul < 0 or nul + 21 > end:
            raise Malformed("tree entry truncated")
        name = body[space + 1 : nul]
        if not name or b"/" in name:
            raise Malformed(f"tree entry has name {name!r}")
        entries[name] = (mode, body[nul + 1 : nul + 21])
        position = nul + 21
    return entries


# ---------------------------------------------------------------- commits

_IDENTITY = re.compile(rb"^(.*) <(.*)> (-?\d+) ([+-]\d{4})$")


@dataclass(frozen=True, slots=True)
class Identity:
    """An author or committer line: who, and when with the zone offset."""

    name: str
    email: str
    time: int
    offset_minutes: int = 0

    def encode(self) -> bytes:
        sign = "-" if self.offset_minutes < 0 else "+"
        minutes = abs(self.offset_minutes)
        zone = f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
        return f"{self.name} <{self.email}> {self.time} {zone}".encode()

    @staticmethod
    def parse(line: bytes) -> Identity:
        match = _IDENTITY.match(line)
        if match is None:
            raise Malformed(f"identity line {line[:80]!r} does not parse")
        zone = match.group(4)
        minutes = int(zone[1:3]) * 60 + int(zone[3:5])
        if zone[:1] == b"-":
            minutes = -minutes
        return Identity(
            name=match.group(1).decode("utf-8", "replace"),
            email=match.group(2).decode("utf-8", "replace"),
            time=int(match.group(3)),
            offset_minutes=minutes,
        )


@dataclass(frozen=True, slots=True)
class Commit:
    """A commit: a root tree, its parents, who made it and why."""

    tree: ObjectId
    parents: tuple[ObjectId, ...]
    author: Identity
    committer: Identity
    message: str
    # Headers Git knows but the store does not write (gpgsig, encoding, ...),
    # kept so a parsed commit re-encodes to the same bytes.
    extra_headers: tuple[tuple[bytes, bytes], ...] = field(default=())

    def encode(self) -> bytes:
        lines = [b"tree " + self.tree.hex().encode()]
        for parent in self.parents:
            lines.append(b"parent " + parent.hex().encode())
        author = self.author.encode()
        # The store commits with one Identity as both: encoded once.
        committer = author if self.committer is self.author else self.committer.encode()
        lines.append(b"author " + author)
        lines.append(b"committer " + committer)
        for key, value in self.extra_headers:
            lines.append(key + b" " + value.replace(b"\n", b"\n "))
        return b"\n".join(lines) + b"\n\n" + self.message.encode()

    @staticmethod
    def parse(body: bytes) -> Commit:
        head, separator, message = body.partition(b"\n\n")
        if not separator:
            head, message = body.rstrip(b"\n"), b""
        headers: list[tuple[bytes, bytes]] = []
        for line in head.split(b"\n"):
            if line.startswith(b" ") and headers:
                key, value = headers[-1]
                headers[-1] = (key, value + b"\n" + line[1:])
                continue
            key, _, value = line.partition(b" ")
            headers.append((key, value))
        tree: ObjectId | None = None
        parents: list[ObjectId] = []
        author: Identity | None = None
        committer: Identity | None = None
        extra: list[tuple[bytes, bytes]] = []
        for key, value in headers:
            if key == b"tree" and tree is None:
                tree = raw_id(value.decode("ascii", "replace"))
            elif key == b"parent":
                parents.append(raw_id(value.decode("ascii", "replace")))
            elif key == b"author" and author is None:
                author = Identity.parse(value)
            elif key == b"committer" and committer is None:
                committer = Identity.parse(value)
            else:
                extra.append((key, value))
        if tree is None or author is None or committer is None:
            raise Malformed("commit lacks a tree, author or committer header")
        return Commit(
            tree=tree,
            parents=tuple(parents),
            author=author,
            committer=committer,
            message=message.decode("utf-8", "replace"),
            extra_headers=tuple(extra),
        )


def encode_loose(kind: str, body: bytes) -> bytes:
    """The bytes Git zlib-compresses into a loose object file."""
    return object_header(kind, len(body)) + body


def parse_loose(data: bytes) -> tuple[str, bytes]:
    """Split an inflated loose object into its type and body."""
    nul = data.find(b"\0", 0, 64)
    if nul < 0:
        raise Malformed("loose object without a header")
    kind_bytes, _, length_text = data[:nul].partition(b" ")
    kind = kind_bytes.decode("ascii", "replace")
    if kind not in OBJECT_TYPES or not length_text.isdigit():
        raise Malformed(f"loose object header {data[:nul]!r}")
    body = data[nul + 1 :]
    if int(length_text) != len(body):
        raise Malformed("loose object length does not match its header")
    return kind, body
