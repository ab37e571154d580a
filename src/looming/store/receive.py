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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from looming.store.auth import AccessPolicy, Client
from looming.store.errors import StoreError
from looming.store.gitbackend import GitBackend
from looming.store.names import branch_rule
from looming.store.quarantine import Quarantine, bad_tree_entry
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
                quarantine = Quarantine(self.git.object_store.path)
                try:
                    quarantine.store.add_thin_pack(
                        handler.proto.read,
                        getattr(handler.proto, "recv", None),
                        max_input_size=self.max_pack_bytes,
                    )
                except Exception as error:  # dulwich raises many kinds on bad data
                    reason = str(error).replace("\n", " ") or type(error).__name__
                    self.report.unpack_error = f"the pack is unusable: {reason}"
                    yield (b"unpack", self.report.unpack_error.encode())
                    return
                bad = bad_tree_entry(quarantine.trees())
                if bad is not None:
                    self.report.unpack_error = f"refused: {bad}"
                    yield (b"unpack", self.report.unpack_error.encode())
                    return
            yield (b"unpack", b"ok")
            view = quarantine.store if quarantine is not None else self.git.object_store
            for old, new, ref in wanted:
                status[ref] = self._dynamic_refusal(view, old, new, ref)
            if atomic and any(status[r[2]] is not None for r in refs):
                for _o, _n, ref in refs:
                    status[ref] = status[ref] or "atomic push failed"
            accepted = [r for r in refs if status[r[2]] is None]
            if accepted and quarantine is not None:
                quarantine.migrate()
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
                quarantine.discard()

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


def receive_handler(receiver: Receiver) -> type:
    """A dulwich ReceivePackHandler class whose updates ``receiver`` decides."""
    from dulwich.server import ReceivePackHandler

    class StoreReceivePack(ReceivePackHandler):
        def _apply_pack(self, refs: Any) -> Iterator[tuple[bytes, bytes]]:
            return receiver.run(self, list(refs))

    return StoreReceivePack
