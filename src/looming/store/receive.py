"""``git push`` into a served store: what is let in, and how.

dulwich speaks the receive-pack protocol; :func:`receive_handler` gives it a
handler class whose ref updates are decided here, for one client:

* The pack goes into a *quarantine* first (``objects/incoming-*``, a
  separate object folder that sees the repository's objects through
  ``info/alternates``), as git's receive-pack does. A truncated or corrupt
  pack, or a tree holding an entry git's fsck refuses (``.git``, ``..``,
  ``git~1``...), fails the whole push and the quarantine is deleted: the
  repository is left exactly as it was.
* Each ref update is checked: only branches (``refs/heads/NAME`` with a name
  git accepts), the client's permissions (``write``, ``force-push`` for an
  update that drops commits, ``delete``), and git's
  ``receive.denyCurrentBranch``: the branch checked out in a non-bare
  repository is not moved (git refuses it by default; ``ignore`` or ``warn``
  in the repository's config allow it).
* When at least one update is accepted the quarantined pack moves into
  ``objects/pack`` (pack first, index last) and the refs move through the
  store's own ref locking, so watches and the website see the push.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from looming.store.auth import AccessPolicy, Client
from looming.store.errors import StoreError
from looming.store.gitbackend import GitBackend
from looming.store.names import branch_rule, key_rule
from looming.store.repo import HEADS, Repo

ZERO = b"0" * 40
MAX_ANCESTRY_STEPS = 1_000_000


@dataclass
class ReceiveReport:
    """What one receive-pack request did (for the HTTP layer and tests)."""

    unpack_error: str | None = None
    refused: dict[str, str] = field(default_factory=dict)
    updated: list[str] = field(default_factory=list)


def current_branch(repo: Repo) -> str | None:
    """The branch checked out in a non-bare repository, else None."""
    backend = repo.backend
    assert isinstance(backend, GitBackend)
    if os.path.basename(os.path.normpath(backend.git_dir)) != ".git":
        return None
    target = backend.head_target()
    return target[len(HEADS) :] if target.startswith(HEADS) else None


def deny_current_branch(git: Any) -> bool:
    try:
        value = git.get_config().get((b"receive",), b"denyCurrentBranch")
    except KeyError:
        return True
    return value.lower() not in (b"ignore", b"warn", b"false", b"no", b"off", b"0")


def _is_ancestor(store: Any, old: bytes, new: bytes) -> bool:
    """Whether commit ``old`` is ``new`` or among its ancestors."""
    seen = {new}
    stack = [new]
    for _ in range(MAX_ANCESTRY_STEPS):
        if not stack:
            return False
        current = stack.pop()
        if current == old:
            return True
        try:
            parents = store[current].parents
        except (KeyError, AttributeError):
            continue
        for parent in parents:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return False


def _bad_tree_entry(pack: Any) -> str | None:
    """The first tree entry in ``pack`` git's fsck would refuse, described."""
    from dulwich.objects import Tree

    for obj in pack.iterobjects():
        if isinstance(obj, Tree):
            for entry in obj.iteritems():
                name = entry.path.decode("utf-8", "surrogateescape")
                rule = key_rule(name)
                if rule is not None:
                    return f"tree {obj.id.decode()} has entry {name!r}: {rule}"
    return None


class Receiver:
    """Decides one push for ``client``; ``run`` is the handler's ``_apply_pack``."""

    def __init__(
        self, repo: Repo, git: Any, policy: AccessPolicy, client: Client, max_pack_bytes: int
    ) -> None:
        self.repo = repo
        self.git = git
        self.policy = policy
        self.client = client
        self.max_pack_bytes = max_pack_bytes
        self.report = ReceiveReport()

    def _static_refusal(self, old: bytes, new: bytes, ref: bytes) -> str | None:
        name = ref.decode("utf-8", "replace")
        if not name.startswith(HEADS):
            return "only branches (refs/heads/NAME) can be pushed here"
        branch = name[len(HEADS) :]
        rule = branch_rule(branch)
        if rule is not None:
            return f"bad branch name: {rule}"
        needed = "delete" if new == ZERO else "write"
        if not self.policy.allows(self.client, branch, needed):
            return self.policy.refusal(self.client, branch, needed)
        current = current_branch(self.repo)
        if branch == current and deny_current_branch(self.git):
            if new == ZERO:
                return "deletion of the current branch prohibited"
            return "branch is currently checked out"
        return None

    def _dynamic_refusal(self, store: Any, old: bytes, new: bytes, ref: bytes) -> str | None:
        branch = ref.decode("utf-8")[len(HEADS) :]
        actual = self.repo.head(branch)
        if (actual or ZERO.decode()) != old.decode():
            return "stale info: the branch moved; fetch and push again"
        if new == ZERO:
            return None
        try:
            kind = store[new].type_name
        except KeyError:
            return "missing necessary objects"
        if kind != b"commit":
            return "a branch must point at a commit"
        if (
            old != ZERO
            and not _is_ancestor(store, old, new)
            and not self.policy.allows(self.client, branch, "force-push")
        ):
            return self.policy.refusal(self.client, branch, "force-push")
        return None

    def run(
        self, handler: Any, refs: list[tuple[bytes, bytes, bytes]]
    ) -> Iterator[tuple[bytes, bytes]]:
        status: dict[bytes, str | None] = {
            ref: self._static_refusal(old, new, ref) for old, new, ref in refs
        }
        atomic = handler.has_capability(b"atomic")
        wanted = [r for r in refs if status[r[2]] is None]
        if atomic and len(wanted) != len(refs):
            wanted = []
        quarantine = None
        try:
            if any(new != ZERO for _old, new, _ref in refs):
                quarantine = self._quarantine()
                try:
                    pack = quarantine.add_thin_pack(
                        handler.proto.read,
                        getattr(handler.proto, "recv", None),
                        max_input_size=self.max_pack_bytes,
                    )
                except Exception as error:  # dulwich raises many kinds on bad data
                    reason = str(error).replace("\n", " ") or type(error).__name__
                    self.report.unpack_error = f"the pack is unusable: {reason}"
                    yield (b"unpack", self.report.unpack_error.encode())
                    return
                bad = _bad_tree_entry(pack)
                pack.close()
                if bad is not None:
                    self.report.unpack_error = f"refused: {bad}"
                    yield (b"unpack", self.report.unpack_error.encode())
                    return
            yield (b"unpack", b"ok")
            view = quarantine if quarantine is not None else self.git.object_store
            for old, new, ref in wanted:
                status[ref] = self._dynamic_refusal(view, old, new, ref)
            if atomic and any(status[r[2]] is not None for r in refs):
                for _o, _n, ref in refs:
                    status[ref] = status[ref] or "atomic push failed"
            accepted = [r for r in refs if status[r[2]] is None]
            if accepted and quarantine is not None:
                self._migrate(quarantine)
            for old, new, ref in accepted:
                status[ref] = self._update(old, new, ref)
            for _old, _new, ref in refs:
                refusal = status[ref]
                name = ref.decode("utf-8", "replace")
                if refusal is None:
                    self.report.updated.append(name)
                else:
                    self.report.refused[name] = refusal
                yield (ref, b"ok" if refusal is None else refusal.encode("utf-8", "replace"))
        finally:
            if quarantine is not None:
                shutil.rmtree(quarantine.path, ignore_errors=True)

    # -------------------------------------------------------------- objects

    def _quarantine(self) -> Any:
        from dulwich.object_store import DiskObjectStore

        objects = self.git.object_store.path
        path = tempfile.mkdtemp(prefix=QUARANTINE_PREFIX, dir=objects)
        store = DiskObjectStore.init(path)
        store.add_alternate_path(os.path.abspath(objects))
        return store

    def _migrate(self, quarantine: Any) -> None:
        """Move the quarantined pack in: data first, index last, so a reader
        that finds the index finds its pack."""
        source = os.path.join(quarantine.path, "pack")
        target = os.path.join(self.git.object_store.path, "pack")
        names = sorted(os.listdir(source), key=lambda n: (n.endswith(".idx"), n))
        for name in names:
            if name.startswith("tmp_"):
                continue
            with open(os.path.join(source, name), "rb") as file:
                os.fsync(file.fileno())
            os.replace(os.path.join(source, name), os.path.join(target, name))
        directory = os.open(target, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _update(self, old: bytes, new: bytes, ref: bytes) -> str | None:
        branch = ref.decode("utf-8")[len(HEADS) :]
        old_id = None if old == ZERO else bytes.fromhex(old.decode())
        new_id = None if new == ZERO else bytes.fromhex(new.decode())
        try:
            with self.repo.backend.writer_lock():
                self.repo.update_ref(branch, old_id, new_id)
        except StoreError as error:
            return f"failed to update: {error}"
        return None


QUARANTINE_PREFIX = "incoming-"
STALE_QUARANTINE_S = 3600.0


def reclaim_quarantines(
    objects_dir: str, now: float, older_than_s: float = STALE_QUARANTINE_S
) -> int:
    """Delete quarantine folders a killed server left (untouched for
    ``older_than_s``; a younger one may be another server's push in
    progress). How many were deleted."""
    reclaimed = 0
    try:
        names = os.listdir(objects_dir)
    except FileNotFoundError:
        return 0
    for name in names:
        path = os.path.join(objects_dir, name)
        if not name.startswith(QUARANTINE_PREFIX) or not os.path.isdir(path):
            continue
        try:
            if now - os.stat(path).st_mtime < older_than_s:
                continue
        except FileNotFoundError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        reclaimed += 1
    return reclaimed


def receive_handler(receiver: Receiver) -> type:
    """A dulwich ReceivePackHandler class whose updates ``receiver`` decides."""
    from dulwich.server import ReceivePackHandler

    class StoreReceivePack(ReceivePackHandler):
        def _apply_pack(self, refs: Any) -> Iterator[tuple[bytes, bytes]]:
            return receiver.run(self, list(refs))

    return StoreReceivePack
