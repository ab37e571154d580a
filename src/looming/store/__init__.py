"""looming's store: a Git-compatible, branchable, mergeable store.

A store on disk is a Git repository (``git log``, ``git fsck``, ``git clone``
work on it, and repositories made by ``git`` open as stores). Values live at
paths (tuples of names) in trees; every update is a commit; branches merge
three-way with per-path merge functions, conflicts come back as typed
records; watches report every change in order; replicas sync over the Git
protocol.

    from looming.store import Repo, JSON, merge

    clock = host_devices().clock                     # from looming.unix, on the host
    repo = Repo.init("data.git", clock=clock)        # or Repo.open / Repo.memory()
    store = repo.store("main", codec=JSON, merge=merge.json_object)
    store.set("users/alice", {"name": "Alice"}, message="add alice")
    with store.with_tree("batch") as tx:             # one commit, snapshot isolation
        tx.set("users/bob", {"name": "Bob"})
    feature = store.clone("feature")
    result = store.merge("feature")                  # result.conflicts lists Conflict records
"""

from looming.store import merge
from looming.store.aio import AsyncStore
from looming.store.contents import (
    BYTES,
    JSON,
    STR,
    BytesCodec,
    Codec,
    FunctionCodec,
    JsonCodec,
    StrCodec,
)
from looming.store.errors import (
    BadRef,
    CorruptObject,
    InvalidBranch,
    InvalidKey,
    InvalidName,
    InvalidPath,
    MergeFailed,
    MissingObject,
    NotARepository,
    ReadOnlyStore,
    RefChanged,
    StoreError,
)
from looming.store.merge import ABSENT, Conflicting, Merged
from looming.store.repo import CommitInfo, Repo
from looming.store.store import Change, MergeResult, Store, Transaction, Tree
from looming.store.tree import Kind
from looming.store.treemerge import Conflict, Directory
from looming.store.watch import WatchEvent

__all__ = [
    "ABSENT",
    "BYTES",
    "JSON",
    "STR",
    "AsyncStore",
    "BadRef",
    "BytesCodec",
    "Change",
    "Codec",
    "CommitInfo",
    "Conflict",
    "Conflicting",
    "CorruptObject",
    "Directory",
    "FunctionCodec",
    "InvalidBranch",
    "InvalidKey",
    "InvalidName",
    "InvalidPath",
    "JsonCodec",
    "Kind",
    "MergeFailed",
    "MergeResult",
    "Merged",
    "MissingObject",
    "NotARepository",
    "ReadOnlyStore",
    "RefChanged",
    "Repo",
    "Store",
    "StoreError",
    "StrCodec",
    "Transaction",
    "Tree",
    "WatchEvent",
    "merge",
]
