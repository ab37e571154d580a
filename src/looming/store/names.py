"""Git's rules for the names the store writes: branch names and key names.

A key name becomes a tree entry and a branch name a file under
``refs/heads``, so both must pass the checks git itself makes, or the
repository stops working with git: ``git fsck --strict`` fails, ``git clone``
cannot check out, clones with ``transfer.fsckObjects`` refuse it.

Branch names follow ``git check-ref-format --branch``: ``refs/heads/NAME``
is a valid ref name (git's ``check_refname_format``), NAME does not start
with ``-`` and is not ``HEAD``.

Key names follow ``git fsck``'s rules for tree entries (``fsck_tree``):
not empty, no ``/`` or NUL, not ``.`` or ``..``, and no name a checkout
would write as the ``.git`` folder on any filesystem git supports: ``.git``
in any case, with HFS+'s ignored code points anywhere in it, or NTFS's
trailing dots and spaces, short name ``git~1`` and alternate data streams
(``.git::$INDEX_ALLOCATION``). ``.gitmodules`` and its HFS+/NTFS variants
are refused too: fsck parses such a file as submodule configuration and
fails the repository when a value there is not a valid one.

Each check raises :class:`~looming.store.errors.InvalidName` (as
:class:`~looming.store.errors.InvalidKey` or
:class:`~looming.store.errors.InvalidBranch`) whose message names the rule.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from looming.store.errors import InvalidBranch, InvalidKey

# Code points HFS+ ignores when it compares names (git's next_hfs_char).
_HFS_IGNORED = frozenset(
    [*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF]
)
# Characters check_refname_format refuses anywhere in a ref name.
_REF_BAD_CHARS = frozenset(" ~^:?*[\\\x7f")


# ------------------------------------------------------------------ branches


def branch_rule(name: str) -> str | None:
    """The rule ``name`` breaks as a branch name, or None when git takes it."""
    if not isinstance(name, str):
        return "a branch name must be a string"
    return _branch_rule(name)


@functools.lru_cache(maxsize=1024)  # a writer checks its branch at every commit
def _branch_rule(name: str) -> str | None:
    if not name:
        return "a branch name cannot be empty"
    if name.startswith("-"):
        return "a branch name cannot start with '-'"
    if name == "HEAD":
        return "'HEAD' is not a branch name; it names the checked-out commit"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "a branch name must be valid UTF-8"
    return ref_rule("refs/heads/" + name)


def ref_rule(ref: str) -> str | None:
    """The rule full ref name ``ref`` breaks (git's check_refname_format,
    without its pattern and one-level options), or None."""
    if ref == "@":
        return "a ref name cannot be '@'"
    if ref.endswith("."):
        return "a ref name cannot end with '.'"
    for char in ref:
        if ord(char) < 0x20 or char in _REF_BAD_CHARS:
            return (
                f"a ref name cannot hold {char!r}: control characters, space, "
                "'~', '^', ':', '?', '*', '[' and '\\' are not allowed"
            )
    if ".." in ref:
        return "a ref name cannot hold '..'"
    if "@{" in ref:
        return "a ref name cannot hold '@{'"
    for part in ref.split("/"):
        if not part:
            return "a ref name cannot start or end with '/' or hold '//'"
        if part.startswith("."):
            return f"a component of a ref name cannot start with '.' ({part!r})"
        if part.endswith(".lock"):
            return f"a component of a ref name cannot end with '.lock' ({part!r})"
    return None


def check_branch(name: str) -> str:
    """``name`` if git takes it as a branch name, else raise InvalidBranch."""
    rule = branch_rule(name)
    if rule is not None:
        raise InvalidBranch(name, rule)
    return name


# ------------------------------------------------------------------ keys


def _ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only, as git's tolower on bytes does."""
    return "".join(char.lower() if char.isascii() else char for char in text)


def _is_hfs_dot(name: str, needle: str) -> bool:
    """``name`` is ``.NEEDLE`` for HFS+: ASCII letters in any case, with
    the code points HFS+ ignores anywhere (git's is_hfs_dot_generic)."""
    folded = _ascii_lower("".join(c for c in name if ord(c) not in _HFS_IGNORED))
    return folded == "." + needle


def _ntfs_tail(rest: str, *, separators: str) -> bool:
    """NTFS drops trailing dots and spaces, and ``:`` starts a data stream;
    for ``.git`` itself git also ends the name at a folder separator."""
    for char in rest:
        if char == ":" or char in separators:
            return True
        if char not in ". ":
            return False
    return True


def _is_ntfs_dotgit(name: str) -> bool:
    lower = _ascii_lower(name[:5])
    if lower.startswith(".git"):
        return _ntfs_tail(name[4:], separators="/\\")
    if lower == "git~1":
        return _ntfs_tail(name[5:], separators="/\\")
    return False


def _is_ntfs_dot(name: str, needle: str, short_prefix: str) -> bool:
    """``name`` is ``.NEEDLE`` for NTFS: any case, trailing dots and
    spaces, a data stream, or an 8.3 short name (git's is_ntfs_dot_generic)."""
    if name[:1] == "." and _ascii_lower(name[1 : 1 + len(needle)]) == needle:
        return _ntfs_tail(name[1 + len(needle) :], separators="")
    short = name[7:8]
    if _ascii_lower(name[:6]) == needle[:6] and name[6:7] == "~" and short and short in "1234":
        return _ntfs_tail(name[8:], separators="")
    # The fall-back short name: a prefix of the hashed short name, '~' and
    # digits, eight characters in all.
    index, saw_tilde = 0, False
    while index < 8:
        if index >= len(name):
            return False
        char = name[index]
        if saw_tilde:
            if char not in "0123456789":
                return False
        elif char == "~":
            index += 1
            if index >= len(name) or name[index] not in "123456789":
                return False
            saw_tilde = True
        elif index >= 6 or not char.isascii() or char.lower() != short_prefix[index]:
            return False
        index += 1
    return _ntfs_tail(name[index:], separators="")


def key_rule(name: str) -> str | None:
    """The rule key name ``name`` (one path component) breaks, or None."""
    if not isinstance(name, str):
        return f"a key name must be a string, not {type(name).__name__}"
    if (
        name.isascii()
        and name
        and name[0] not in ".gG"
        and "~" not in name
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    ):
        # Cannot mean .git or .gitmodules on any filesystem: those start
        # with '.' or 'g' (HFS+'s ignored code points are not ASCII), and
        # short names hold '~'.
        return None
    return _key_rule(name)


@functools.lru_cache(maxsize=4096)
def _key_rule(name: str) -> str | None:
    if not name:
        return "a key name cannot be empty; use names like ('a', 'b') or 'a/b'"
    if "/" in name:
        return f"a key name cannot hold '/' ({name!r}); split it into names"
    if "\0" in name:
        return f"a key name cannot hold NUL ({name!r})"
    if name in (".", ".."):
        return f"a key name cannot be {name!r}"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"a key name must be valid UTF-8 ({name!r})"
    # fsck also reads a backslash as a folder separator, as Windows does.
    windows_parts = name.split("\\")
    if _is_hfs_dot(name, "git") or any(_is_ntfs_dotgit(part) for part in windows_parts):
        return (
            f"a key name cannot be {name!r}: git reserves '.git' and the names that "
            "mean it on HFS+ or NTFS ('.GIT', '.git.', 'git~1', '.git::$INDEX_ALLOCATION')"
        )
    if _is_hfs_dot(name, "gitmodules") or _is_ntfs_dot(name, "gitmodules", "gi7eba"):
        return (
            f"a key name cannot be {name!r}: git reads '.gitmodules' (and its "
            "HFS+/NTFS variants) as submodule configuration"
        )
    return None


def check_key_name(name: str) -> str:
    """``name`` if git takes it as a tree entry, else raise InvalidKey."""
    rule = key_rule(name)
    if rule is not None:
        raise InvalidKey(name, rule)
    return name


def check_key(path: str | Iterable[str]) -> tuple[str, ...]:
    """Check every name of a key (``"a/b"`` or ``("a", "b")``); the names.

    A string is split on ``/`` (one leading or trailing ``/`` is ignored);
    the empty key names the root."""
    if isinstance(path, str):
        text = path.strip("/")
        names: tuple[str, ...] = tuple(text.split("/")) if text else ()
    else:
        names = tuple(path)
    for name in names:
        rule = key_rule(name)  # check_key_name's test, without a call per name
        if rule is not None:
            raise InvalidKey(name, rule)
    return names
