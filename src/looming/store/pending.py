"""Pending merges: a conflicting merge a user resolves, then continues or aborts.

As ``git merge`` leaves ``MERGE_HEAD`` behind, :func:`start_merge` leaves a
record of a merge that stopped on conflicts: the branch, our and their
commit, the message, each conflict with its base, our and their value, and
the resolutions chosen so far. It lives in the repository's Git folder as
``looming/merge/<branch>.json`` (git ignores files it does not know there),
so the CLI and the HTTP API of any process see the same pending merge.

Nothing moves the branch until :func:`continue_merge`, which commits the
merged tree with the resolutions and both parents, so :func:`abort_merge`
only forgets the record. One merge per branch may be pending.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from looming.store.errors import RefChanged, StoreError
from looming.store.gitbackend import GitBackend
from looming.store.merge import ABSENT
from looming.store.names import check_key
from looming.store.path import show_path
from looming.store.repo import Repo
from looming.store.store import MergeResult, Store
from looming.store.tree import WorkTree
from looming.store.treemerge import Conflict, Directory, TreeMerger, merge_commits

OURS = "ours"
THEIRS = "theirs"


class MergePending(StoreError):
    """A merge into the branch is pending, or none is when one is needed."""


def side_value(value: Any) -> dict[str, Any]:
    """A conflict side as JSON: ``{"absent": true}``, ``{"directory": TREE}``,
    ``{"text": ...}`` (UTF-8 values) or ``{"base64": ...}``."""
    if value is ABSENT:
        return {"absent": True}
    if isinstance(value, Directory):
        return {"directory": value.tree_id}
    if isinstance(value, bytes):
        try:
            return {"text": value.decode("utf-8")}
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    raise StoreError(f"a pending merge holds bytes values, not {type(value).__name__}")


def side_bytes(side: dict[str, Any]) -> bytes | None:
    """A side's value as bytes (None when absent or a directory)."""
    if "text" in side:
        return str(side["text"]).encode("utf-8")
    if "base64" in side:
        return base64.b64decode(side["base64"])
    return None


def show_side(side: dict[str, Any]) -> str:
    """A side for a terminal: the value, ``(absent)`` or ``(directory TREE)``."""
    if side.get("absent"):
        return "(absent)"
    if "directory" in side:
        return f"(directory {side['directory']})"
    if "text" in side:
        return repr(side["text"])
    return f"(binary, {len(side_bytes(side) or b'')} bytes)"


@dataclass
class PendingMerge:
    """A merge into ``branch`` stopped on ``conflicts``; ``resolutions`` maps
    a conflict's key (``a/b``) to the side it takes."""

    branch: str
    ours: str
    theirs: str
    message: str
    conflicts: list[dict[str, Any]]
    resolutions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "branch": self.branch,
            "ours": self.ours,
            "theirs": self.theirs,
            "message": self.message,
            "conflicts": self.conflicts,
            "resolutions": self.resolutions,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> PendingMerge:
        return PendingMerge(
            data["branch"],
            data["ours"],
            data["theirs"],
            data["message"],
            list(data["conflicts"]),
            dict(data.get("resolutions", {})),
        )

    @property
    def unresolved(self) -> list[str]:
        return [c["key"] for c in self.conflicts if c["key"] not in self.resolutions]

    def status(self) -> dict[str, Any]:
        """What ``merge --status`` and ``GET merge`` show."""
        return {
            **self.to_json(),
            "unresolved": self.unresolved,
        }


def _conflict_record(conflict: Conflict) -> dict[str, Any]:
    return {
        "key": show_path(conflict.path),
        "why": conflict.why,
        "base": side_value(conflict.base),
        "ours": side_value(conflict.ours),
        "theirs": side_value(conflict.theirs),
    }


# ------------------------------------------------------------------ the record


def _record_path(repo: Repo, branch: str) -> str:
    if not isinstance(repo.backend, GitBackend):
        raise StoreError("pending merges need an on-disk repository; open one with Repo.open")
    name = urllib.parse.quote(branch, safe="") + ".json"
    return os.path.join(repo.backend.git_dir, "looming", "merge", name)


def load(repo: Repo, branch: str) -> PendingMerge | None:
    """The merge pending on ``branch``, or None."""
    try:
        with open(_record_path(repo, branch), encoding="utf-8") as file:
            return PendingMerge.from_json(json.load(file))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as error:
        raise StoreError(
            f"the pending merge record of {branch!r} cannot be read ({error}); "
            "abort it with `looming store merge --abort`"
        ) from None


def _save(repo: Repo, pending: PendingMerge) -> None:
    path = _record_path(repo, pending.branch)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".merge-", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(pending.to_json(), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _require(repo: Repo, branch: str) -> PendingMerge:
    pending = load(repo, branch)
    if pending is None:
        raise MergePending(f"no merge is pending on {branch!r}")
    return pending


# ------------------------------------------------------------------ the workflow


def start_merge(store: Store, other: str, message: str | None = None) -> MergeResult:
    """``store.merge(other)``; on conflicts, record them as a pending merge."""
    branch = store.branch
    if branch is None:
        raise StoreError("merge into a store bound to a branch")
    if load(store.repo, branch) is not None:
        raise MergePending(
            f"a merge into {branch!r} is pending: resolve it and `merge --continue`, "
            "or `merge --abort`"
        )
    result = store.merge(other, message)
    if result.conflicts:
        ours, theirs = result.parents
        _save(
            store.repo,
            PendingMerge(
                branch,
                ours.hex(),
                theirs.hex(),
                message or f"merge {other} into {branch}",
                [_conflict_record(c) for c in result.conflicts],
            ),
        )
    return result


def status(repo: Repo, branch: str) -> PendingMerge | None:
    return load(repo, branch)


def resolve(
    repo: Repo, branch: str, key: str, *, value: bytes | None = None, side: str | None = None
) -> PendingMerge:
    """Choose ``key``'s value: given bytes, or ``ours``/``theirs``."""
    pending = _require(repo, branch)
    name = show_path(check_key(key))
    conflict = next((c for c in pending.conflicts if c["key"] == name), None)
    if conflict is None:
        keys = ", ".join(c["key"] for c in pending.conflicts)
        raise MergePending(f"{name!r} is not in conflict (the conflicts: {keys})")
    if (value is None) == (side is None):
        raise MergePending("give the value, or --ours or --theirs (one of them)")
    if side is not None:
        if side not in (OURS, THEIRS):
            raise MergePending(f"a side is 'ours' or 'theirs', not {side!r}")
        chosen = conflict[side]
    else:
        assert value is not None
        chosen = side_value(value)
    pending.resolutions[name] = chosen
    _save(repo, pending)
    return pending


def continue_merge(store: Store) -> str:
    """Commit the pending merge with its resolutions; the new commit id."""
    branch = store.branch
    if branch is None:
        raise StoreError("continue a merge on a store bound to a branch")
    repo = store.repo
    pending = _require(repo, branch)
    if pending.unresolved:
        raise MergePending(
            f"{len(pending.unresolved)} conflicts are unresolved: "
            + ", ".join(pending.unresolved[:5])
            + "; resolve each with `looming store resolve KEY VALUE|--ours|--theirs`"
        )
    ours, theirs = bytes.fromhex(pending.ours), bytes.fromhex(pending.theirs)
    merger = TreeMerger(repo.db, store.codec, store._choose)
    work = WorkTree(repo.db, merge_commits(merger, ours, theirs).tree)
    for key, side in pending.resolutions.items():
        path = check_key(key)
        work.remove(path)
        if "directory" in side:
            work.set_subtree(path, bytes.fromhex(side["directory"]))
        else:
            data = side_bytes(side)
            if data is not None:
                work.set_blob(path, repo.db.write_blob(data))
    tree = work.write()
    with repo.backend.writer_lock():
        if repo.head_id(branch) != ours:
            raise RefChanged(
                f"{branch!r} moved since the merge began; `merge --abort` and merge again"
            )
        commit = repo.make_commit(tree, (ours, theirs), pending.message)
        repo.update_ref(branch, ours, commit)
    abort_merge(repo, branch)
    return commit.hex()


def abort_merge(repo: Repo, branch: str) -> None:
    """Forget the pending merge (the branch never moved)."""
    _require(repo, branch)
    os.unlink(_record_path(repo, branch))
