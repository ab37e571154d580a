"""Replicas: fetch, pull and push against any remote dulwich speaks (a
local path, ``file://``, ``git://``, smart HTTP, ssh), so ``git`` and other
stores interoperate with ours both ways."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from looming.devices.clock import Clock
from looming.store.errors import RefChanged, StoreError
from looming.store.gitbackend import GitBackend
from looming.store.names import branch_rule
from looming.store.objects import ObjectId
from looming.store.quarantine import Quarantine, bad_tree_entry
from looming.store.repo import HEADS, Repo
from looming.store.store import MergeResult, Store
from looming.store.treemerge import is_ancestor, lowest_common_ancestors


class SyncError(StoreError):
    """The remote refused, was unreachable, or the update would lose commits."""


@dataclass(frozen=True)
class FetchResult:
    """The remote's branches (name to commit id), now present locally."""

    branches: dict[str, str]
    head: str | None = None  # the remote's default branch
    skipped: dict[str, str] = field(default_factory=dict)  # bad branch name: the rule


def _dulwich_repo(repo: Repo) -> Any:
    if not isinstance(repo.backend, GitBackend):
        raise SyncError("sync needs an on-disk repository; open one with Repo.init(path)")
    from dulwich.repo import Repo as DulwichRepo

    return DulwichRepo(repo.backend.git_dir)


def _client(remote: str) -> tuple[Any, str]:
    from dulwich.client import get_transport_and_path

    try:
        client, path = get_transport_and_path(remote)
    except Exception as error:  # dulwich raises several kinds for bad URLs
        raise SyncError(f"cannot reach {remote!r}: {error}") from None
    from dulwich.client import SSHGitClient

    if isinstance(client, SSHGitClient):
        # As git does: GIT_SSH_COMMAND (a command line) or GIT_SSH (a program)
        # chooses the ssh client and its options (key, known hosts, port).
        command = os.environ.get("GIT_SSH_COMMAND") or os.environ.get("GIT_SSH")
        if command:
            client.ssh_command = command
    return client, path


def fetch(repo: Repo, remote: str, *, remote_name: str = "origin") -> FetchResult:
    """Download the remote's branches into ``refs/remotes/<remote_name>/``.

    What arrives waits in a quarantine (:mod:`looming.store.quarantine`)
    until its trees pass git fsck's rules for entry names; a remote offering
    a ``.git`` entry, say, is refused and nothing it sent is kept."""
    target = _dulwich_repo(repo)
    client, path = _client(remote)
    quarantine = Quarantine(target.object_store.path)
    main_store, target.object_store = target.object_store, quarantine.store
    try:
        result = client.fetch(path, target)
        bad = bad_tree_entry(quarantine.objects())
        if bad is not None:
            raise SyncError(f"refused what {remote} sent, nothing was kept: {bad}")
        quarantine.migrate()
    except SyncError:
        raise
    except Exception as error:
        raise SyncError(f"fetch from {remote} failed: {error}") from None
    finally:
        quarantine.discard()
        target.object_store = main_store
        target.close()
    branches: dict[str, str] = {}
    skipped: dict[str, str] = {}
    prefix = HEADS.encode()
    for name, sha in (result.refs or {}).items():
        if sha is None or not name.startswith(prefix):
            continue
        branch = name[len(prefix) :].decode("utf-8", "replace")
        rule = branch_rule(branch)
        if rule is not None:  # a remote's name git would refuse never becomes a ref here
            skipped[branch] = rule
            continue
        branches[branch] = sha.decode("ascii")
        ref = f"refs/remotes/{remote_name}/{branch}"
        new = bytes.fromhex(branches[branch])
        with repo.backend.writer_lock():
            old = repo.backend.read_ref(ref)
            if old != new:
                repo.backend.set_ref(ref, old, new)
    head_ref = (result.symrefs or {}).get(b"HEAD", b"")
    head = (
        head_ref[len(prefix) :].decode("utf-8", "replace") if head_ref.startswith(prefix) else None
    )
    return FetchResult(branches, head, skipped)


def pull(
    store: Store,
    remote: str,
    branch: str | None = None,
    *,
    message: str | None = None,
    allow_unrelated_histories: bool = False,
    keep_conflicts: bool = False,
) -> MergeResult:
    """Fetch ``branch`` (default: the store's) and merge or fast-forward it in.

    As ``git pull`` does, a branch that shares no commit with ours is merged
    only with ``allow_unrelated_histories``. With ``keep_conflicts`` a
    conflicting merge is left pending (see :mod:`looming.store.pending`)."""
    if store.branch is None:
        raise SyncError("pull into a store bound to a branch")
    wanted = branch or store.branch
    fetched = fetch(store.repo, remote)
    if wanted not in fetched.branches:
        raise SyncError(
            f"{remote} has no branch {wanted!r} (it has: {', '.join(sorted(fetched.branches)) or 'none'})"
        )
    theirs = fetched.branches[wanted]
    ours = store.head_id()
    if (
        ours is not None
        and not allow_unrelated_histories
        and not lowest_common_ancestors(store.repo.db, ours, bytes.fromhex(theirs))
    ):
        raise SyncError(
            f"refusing to merge unrelated histories: {remote} {wanted} shares no commit with "
            f"{store.branch}; pass --allow-unrelated-histories (allow_unrelated_histories=True) "
            "to merge them anyway"
        )
    merge_message = message or f"merge {remote} {wanted}"
    if keep_conflicts:
        from looming.store.pending import start_merge

        return start_merge(store, theirs, merge_message)
    return store.merge(theirs, merge_message)


def push(
    repo: Repo, remote: str, branch: str, *, remote_branch: str | None = None, force: bool = False
) -> str:
    """Send ``branch`` to the remote; refuse to drop remote commits unless ``force``."""
    local = repo.head_id(branch)
    if local is None:
        raise SyncError(f"branch {branch!r} is empty; nothing to push")
    target_ref = (HEADS + (remote_branch or branch)).encode()
    source = _dulwich_repo(repo)
    client, path = _client(remote)
    refused: list[str] = []

    def update_refs(refs: dict[bytes, bytes]) -> dict[bytes, bytes]:
        current = refs.get(target_ref)
        if current is not None and current != b"0" * 40 and not force:
            remote_head: ObjectId = bytes.fromhex(current.decode("ascii"))
            if not repo.backend.contains(remote_head) or not is_ancestor(
                repo.db, remote_head, local
            ):
                refused.append(current.decode("ascii"))
                return dict(refs)
        new_refs = dict(refs)
        new_refs[target_ref] = local.hex().encode()
        return new_refs

    try:
        result = client.send_pack(path, update_refs, generate_pack_data=source.generate_pack_data)
    except Exception as error:
        raise SyncError(f"push to {remote} failed: {error}") from None
    finally:
        source.close()
    if refused:
        raise RefChanged(
            f"{remote} has commits on {target_ref.decode()} that {branch} lacks ({refused[0][:12]}); pull first"
        )
    status = (result.ref_status or {}).get(target_ref)
    if status:
        raise SyncError(f"{remote} refused {target_ref.decode()}: {status}")
    return local.hex()


def clone(remote: str, path: str, *, clock: Clock, branch: str | None = None) -> Repo:
    """A new repository at ``path`` with the remote's branches; its commits
    are stamped with the time of ``clock``."""
    repo = Repo.init(path, clock=clock)
    fetched = fetch(repo, remote)
    for name, head in fetched.branches.items():
        repo.set_head(name, head)
    default = branch or fetched.head
    if default is not None:
        if default not in fetched.branches:
            raise SyncError(f"{remote} has no branch {default!r}")
        repo.set_default_branch(default)
    return repo
