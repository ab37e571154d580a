"""A store: the tree at a branch head (or a fixed commit) as typed values.

Every update is a commit with a message. Updates hold the repository's
writer lock from reading the head to moving it, so concurrent writers (other
threads, other processes) serialise; the ref move is still a compare-and-set
so a ``git`` process racing us is detected, and the update is retried.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from looming.errors import KeyNotFound
from looming.sim.buggify import buggify
from looming.store.contents import Codec
from looming.store.errors import InvalidPath, MergeFailed, ReadOnlyStore, RefChanged, StoreError
from looming.store.merge import MergeFunction
from looming.store.objectdb import EMPTY_TREE_ID
from looming.store.objects import BLOB_MODES, MODE_TREE, ObjectId
from looming.store.path import Path, show_path, to_path
from looming.store.repo import CommitInfo, Repo
from looming.store.tree import Kind, WorkTree, _Node, diff_trees, list_tree, lookup, walk_blobs
from looming.store.treemerge import (
    ChooseMerge,
    Conflict,
    TreeMerger,
    is_ancestor,
    merge_commits,
)

if TYPE_CHECKING:
    from looming.store.aio import AsyncStore
    from looming.store.watch import AsyncWatch, Watch, WatchEvent

PathLike = str | Iterable[str]
CommitList = list[CommitInfo]
_RETRIES = 50


@dataclass(frozen=True)
class Change:
    """One path that differs between two commits (values decoded)."""

    path: Path
    old: Any  # None when added
    new: Any  # None when removed


@dataclass
class MergeResult:
    """What a merge did: the new head (None when conflicts stopped it), the
    conflicts, and whether it was a fast-forward or nothing to do."""

    commit: str | None
    conflicts: list[Conflict]
    fast_forward: bool = False
    pending_tree: ObjectId | None = None
    parents: tuple[ObjectId, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.conflicts


ChangeList = list[Change]


class Tree:
    """An immutable snapshot of a directory, read with the store's codec."""

    def __init__(self, store: Store, tree_id: ObjectId) -> None:
        self._store = store
        self.id = tree_id

    def find(self, path: PathLike) -> Any:
        entry = lookup(self._store.repo.db, self.id, to_path(path))
        if entry is None or entry[0] not in BLOB_MODES:
            return None
        return self._store.codec.decode(self._store.repo.db.blob(entry[1]))

    def list(self, path: PathLike = ()) -> list[tuple[str, Kind]]:
        entry = lookup(self._store.repo.db, self.id, to_path(path))
        if entry is None or entry[0] != MODE_TREE:
            return []
        return list_tree(self._store.repo.db, entry[1])

    def items(self) -> Iterator[tuple[Path, Any]]:
        db = self._store.repo.db
        for path, blob in walk_blobs(db, self.id):
            yield path, self._store.codec.decode(db.blob(blob))

    def to_dict(self) -> dict[str, Any]:
        return {show_path(path): value for path, value in self.items()}


class Transaction:
    """Reads and writes against a private snapshot; see :meth:`Store.with_tree`."""

    def __init__(
        self, store: Store, base_commit: ObjectId | None, base_tree: ObjectId | None
    ) -> None:
        self.store = store
        self.base_commit = base_commit
        self.base_tree = base_tree
        self.work = WorkTree(store.repo.db, base_tree)
        self.message: str | None = None

    def find(self, path: PathLike) -> Any:
        blob = self.work.get_blob(to_path(path))
        return None if blob is None else self.store.codec.decode(self.store.repo.db.blob(blob))

    def get(self, path: PathLike) -> Any:
        value = self.find(path)
        if value is None:
            raise KeyNotFound(show_path(to_path(path)))
        return value

    def set(self, path: PathLike, value: Any) -> None:
        names = to_path(path)
        blob = self.store.repo.db.write_blob(self.store.codec.encode(value))
        self.work.set_blob(names, blob)

    def remove(self, path: PathLike) -> None:
        self.work.remove(to_path(path))

    def list(self, path: PathLike = ()) -> list[tuple[str, Kind]]:
        return self.work.list(to_path(path)) or []

    def set_tree(self, path: PathLike, tree: Tree | Mapping[str, Any] | None) -> None:
        names = to_path(path)
        if isinstance(tree, Tree):
            self.work.set_subtree(names, tree.id)
            return
        self.work.remove(names) if names else self.work.set_subtree((), None)
        if tree:
            for key, value in tree.items():
                self.set((*names, *to_path(key)), value)


class Store:
    """Typed values at the head of a branch, or at one commit (read-only)."""

    def __init__(
        self,
        repo: Repo,
        branch: str | None,
        commit: ObjectId | None,
        codec: Codec[Any],
        merge: MergeFunction | ChooseMerge,
        by_path: bool,
    ) -> None:
        self.repo = repo
        self.branch = branch
        self._commit = commit
        self.codec = codec
        if by_path:
            self._choose: ChooseMerge = merge  # type: ignore[assignment]
        else:
            function: MergeFunction = merge  # type: ignore[assignment]
            self._choose = lambda _path: function

    def __repr__(self) -> str:
        where = f"branch {self.branch}" if self.branch else f"commit {self.head}"
        return f"<Store {where}>"

    @property
    def aio(self) -> AsyncStore:
        """This store's async form (:class:`looming.store.aio.AsyncStore`)."""
        from looming.store.aio import AsyncStore

        return AsyncStore(self)

    # -------------------------------------------------------------- reading

    def head_id(self) -> ObjectId | None:
        if self.branch is None:
            return self._commit
        return self.repo.head_id(self.branch)

    @property
    def head(self) -> str | None:
        head = self.head_id()
        return head.hex() if head is not None else None

    def _tree_id(self, commit: ObjectId | None = None) -> ObjectId:
        head = commit if commit is not None else self.head_id()
        return self.repo.db.commit(head).tree if head is not None else EMPTY_TREE_ID

    def find(self, path: PathLike) -> Any:
        """The value at ``path``, or None when there is none."""
        entry = lookup(self.repo.db, self._tree_id(), to_path(path))
        if entry is None or entry[0] not in BLOB_MODES:
            return None
        return self.codec.decode(self.repo.db.blob(entry[1]))

    def get(self, path: PathLike) -> Any:
        """The value at ``path``; :class:`KeyNotFound` when there is none."""
        names = to_path(path)
        entry = lookup(self.repo.db, self._tree_id(), names)
        if entry is None or entry[0] not in BLOB_MODES:
            raise KeyNotFound(show_path(names))
        return self.codec.decode(self.repo.db.blob(entry[1]))

    def kind(self, path: PathLike) -> Kind | None:
        entry = lookup(self.repo.db, self._tree_id(), to_path(path))
        if entry is None:
            return None
        return Kind.NODE if entry[0] == MODE_TREE else Kind.CONTENTS

    def list(self, path: PathLike = ()) -> list[tuple[str, Kind]]:
        """The names directly under ``path`` and what each is."""
        entry = lookup(self.repo.db, self._tree_id(), to_path(path))
        if entry is None or entry[0] != MODE_TREE:
            return []
        return list_tree(self.repo.db, entry[1])

    def tree(self, path: PathLike = ()) -> Tree | None:
        entry = lookup(self.repo.db, self._tree_id(), to_path(path))
        if entry is None or entry[0] != MODE_TREE:
            return None
        return Tree(self, entry[1])

    def history(self, limit: int | None = None) -> CommitList:
        return list(self.repo.history(self.head, limit))

    def last_modified(self, path: PathLike, limit: int = 1) -> CommitList:
        """The newest commits (up to ``limit``) that changed ``path``, as
        ``git log -- PATH`` lists them: a commit whose ``path`` equals its
        parent's is left out and, at a merge, only the first parent it
        equals is followed (git's default history simplification); a root
        commit counts when ``path`` exists in it. Newest first."""
        names = to_path(path)
        head = self.head_id()
        if head is None:
            return []
        db = self.repo.db
        found: CommitList = []
        seen = {head}
        frontier = [head]
        while frontier and len(found) < limit:
            frontier.sort(key=lambda oid: db.commit(oid).committer.time)
            current = frontier.pop()
            commit = db.commit(current)
            now = lookup(db, commit.tree, names)
            same = [p for p in commit.parents if lookup(db, db.commit(p).tree, names) == now]
            if same:
                follow = same[:1]  # unchanged here: its history is that parent's
            else:
                follow = list(commit.parents)
                if commit.parents or now is not None:
                    found.append(CommitInfo.of(current, commit))
            for parent in follow:
                if parent not in seen:
                    seen.add(parent)
                    frontier.append(parent)
        return found

    def diff(self, old: str | None, new: str | None) -> ChangeList:
        """Contents paths that differ from commit ``old`` to commit ``new``."""
        db = self.repo.db
        old_tree = db.commit(self.repo.resolve(old)).tree if old else None
        new_tree = db.commit(self.repo.resolve(new)).tree if new else None
        return [
            Change(
                path,
                None if before is None else self.codec.decode(db.blob(before)),
                None if after is None else self.codec.decode(db.blob(after)),
            )
            for path, before, after in diff_trees(db, old_tree, new_tree)
        ]

    # -------------------------------------------------------------- writing

    def _check_writable(self) -> str:
        if self.branch is None:
            raise ReadOnlyStore("this store is bound to a commit; bind one to a branch to update")
        return self.branch

    def _update(self, edit: Callable[[WorkTree], bool], message: str) -> str | None:
        """Apply ``edit`` to the head tree and commit; None when nothing changed."""
        branch = self._check_writable()
        repo = self.repo
        for _attempt in range(_RETRIES):
            with repo.backend.writer_lock():
                head = repo.head_id(branch)
                base_tree = repo.db.commit(head).tree if head is not None else None
                work = WorkTree(repo.db, base_tree)
                if not edit(work):
                    return None
                tree = work.write()
                if tree == base_tree and head is not None:
                    return head.hex()
                commit = repo.make_commit(tree, (head,) if head is not None else (), message)
                if buggify("store.ref_changed"):
                    continue  # as if another writer had moved the branch: retry
                try:
                    repo.update_ref(branch, head, commit)
                except RefChanged:
                    continue
                return commit.hex()
        raise RefChanged(f"branch {branch} kept moving; gave up after {_RETRIES} tries")

    def set(self, path: PathLike, value: Any, message: str | None = None) -> str:
        """Store ``value`` at ``path`` in a new commit; its id."""
        names = to_path(path)
        if not names:
            raise InvalidPath("the root holds a tree, not a value; give a path such as 'a/b'")
        data = self.codec.encode(value)

        def edit(work: WorkTree) -> bool:
            work.set_blob(names, self.repo.db.write_blob(data))
            return True

        commit = self._update(edit, message or f"set {show_path(names)}")
        assert commit is not None
        return commit

    def remove(self, path: PathLike, message: str | None = None) -> str | None:
        """Remove what ``path`` names (value or directory); the new commit."""
        names = to_path(path)
        return self._update(
            lambda work: work.remove(names), message or f"remove {show_path(names)}"
        )

    def rename(self, source: PathLike, dest: PathLike, message: str | None = None) -> str | None:
        """Move the value or directory at ``source`` to ``dest`` in one commit."""
        src, dst = to_path(source), to_path(dest)
        if not src or not dst:
            raise InvalidPath("rename needs a path with at least one name on both sides")

        def edit(work: WorkTree) -> bool:
            current = work.lookup(src)
            if current is None:
                raise KeyNotFound(show_path(src))
            if isinstance(current, _Node):
                assert current.base_id is not None  # a fresh work tree edits nothing
                mode, object_id = MODE_TREE, current.base_id
            else:
                mode, object_id = current
            work.remove(src)
            work.remove(dst)
            if mode == MODE_TREE:
                work.set_subtree(dst, object_id)
            else:
                work.set_blob(dst, object_id, mode)
            return True

        return self._update(edit, message or f"rename {show_path(src)} to {show_path(dst)}")

    def test_and_set(self, path: PathLike, test: Any, set: Any, message: str | None = None) -> bool:
        """Set ``path`` to ``set`` (None removes) only if it holds ``test``
        (None: absent). True when it did."""
        names = to_path(path)
        expected = None if test is None else self.codec.encode(test)
        new = None if set is None else self.codec.encode(set)
        matched = [False]

        def edit(work: WorkTree) -> bool:
            blob = work.get_blob(names)
            current = None if blob is None else self.repo.db.blob(blob)
            matched[0] = current == expected
            if not matched[0]:
                return False
            if new is None:
                work.remove(names)
            else:
                work.set_blob(names, self.repo.db.write_blob(new))
            return True

        self._update(edit, message or f"test and set {show_path(names)}")
        return matched[0]

    def set_tree(
        self, path: PathLike, tree: Tree | Mapping[str, Any] | None, message: str | None = None
    ) -> str | None:
        """Replace the directory at ``path`` by a tree snapshot or a mapping
        of relative paths to values (None or ``{}`` removes it)."""
        names = to_path(path)

        def edit(work: WorkTree) -> bool:
            transaction = Transaction(self, None, None)
            transaction.work = work
            transaction.set_tree(names, tree)
            return True

        return self._update(edit, message or f"set tree {show_path(names)}")

    @contextlib.contextmanager
    def with_tree(self, message: str, *, strategy: str = "merge") -> Iterator[Transaction]:
        """A transaction on a snapshot of the head; committed on exit.

        ``strategy`` says what happens when the branch moved meanwhile:
        ``"set"`` commits our tree on top anyway, ``"test_and_set"`` raises
        :class:`RefChanged`, ``"merge"`` merges (raising :class:`MergeFailed`
        with the conflicts, committing nothing, when it cannot).
        """
        if strategy not in ("set", "test_and_set", "merge"):
            raise ValueError(f"strategy must be set, test_and_set or merge, not {strategy!r}")
        branch = self._check_writable()
        head = self.head_id()
        base_tree = self.repo.db.commit(head).tree if head is not None else None
        transaction = Transaction(self, head, base_tree)
        yield transaction
        ours_tree = transaction.work.write()
        message = transaction.message or message
        repo = self.repo
        with repo.backend.writer_lock():
            current = repo.head_id(branch)
            if current == head:
                if ours_tree == base_tree and head is not None:
                    return
                commit = repo.make_commit(ours_tree, (head,) if head else (), message)
                repo.update_ref(branch, current, commit)
                return
            if strategy == "test_and_set":
                raise RefChanged(f"branch {branch} moved during the transaction")
            assert current is not None
            current_tree = repo.db.commit(current).tree
            if strategy == "set":
                tree = ours_tree
            else:
                merged = TreeMerger(repo.db, self.codec, self._choose).merge(
                    base_tree, ours_tree, current_tree
                )
                if merged.conflicts:
                    raise MergeFailed(list(merged.conflicts))
                tree = merged.tree
            commit = repo.make_commit(tree, (current,), message)
            repo.update_ref(branch, current, commit)

    # -------------------------------------------------------------- branches

    def clone(self, branch: str) -> Store:
        """A new branch at this store's head, and a store bound to it."""
        head = self.head_id()
        with self.repo.backend.writer_lock():
            self.repo.update_ref(branch, self.repo.head_id(branch), head) if head else None
        return Store(self.repo, branch, None, self.codec, default_choose(self), True)

    def merge(self, other: str | Store, message: str | None = None) -> MergeResult:
        """Merge another branch, commit or store into this branch.

        Fast-forwards when possible. With conflicts nothing is committed; the
        result lists them and :meth:`resolve` commits chosen values.
        """
        branch = self._check_writable()
        repo = self.repo
        if isinstance(other, Store) and other.repo is not repo:
            raise StoreError(
                "that store lives in another repository; fetch or import its commits first"
            )
        theirs = other.head_id() if isinstance(other, Store) else repo.resolve(other)
        name = (other.branch or other.head) if isinstance(other, Store) else other
        if theirs is None:
            return MergeResult(self.head, [])
        for _attempt in range(_RETRIES):
            with repo.backend.writer_lock():
                ours = repo.head_id(branch)
                if ours is None or is_ancestor(repo.db, ours, theirs):
                    try:
                        repo.update_ref(branch, ours, theirs)
                    except RefChanged:
                        continue
                    return MergeResult(theirs.hex(), [], fast_forward=True)
                if is_ancestor(repo.db, theirs, ours):
                    return MergeResult(ours.hex(), [])
                merger = TreeMerger(repo.db, self.codec, self._choose)
                merged = merge_commits(merger, ours, theirs)
                if merged.conflicts:
                    return MergeResult(
                        None, merged.conflicts, pending_tree=merged.tree, parents=(ours, theirs)
                    )
                commit = repo.make_commit(
                    merged.tree, (ours, theirs), message or f"merge {name} into {branch}"
                )
                try:
                    repo.update_ref(branch, ours, commit)
                except RefChanged:
                    continue
                return MergeResult(commit.hex(), [])
        raise RefChanged(f"branch {branch} kept moving; gave up after {_RETRIES} tries")

    def resolve(
        self, result: MergeResult, values: Mapping[Path, Any], message: str | None = None
    ) -> str:
        """Commit a conflicted merge with a value for each conflict path
        (``merge.ABSENT`` removes it). Raises :class:`RefChanged` if the
        branch moved since the merge."""
        from looming.store.merge import ABSENT

        branch = self._check_writable()
        missing = [c for c in result.conflicts if c.path not in values]
        if missing:
            raise MergeFailed(list(missing))
        assert result.pending_tree is not None
        repo = self.repo
        work = WorkTree(repo.db, result.pending_tree)
        for path, value in values.items():
            if value is ABSENT:
                work.remove(path)
            else:
                work.set_blob(path, repo.db.write_blob(self.codec.encode(value)))
        tree = work.write()
        with repo.backend.writer_lock():
            commit = repo.make_commit(
                tree, result.parents, message or f"merge into {branch} (resolved)"
            )
            repo.update_ref(branch, result.parents[0], commit)
        return commit.hex()

    def merge_into(self, into: str | Store, message: str | None = None) -> MergeResult:
        """Merge this store's head into the branch ``into``."""
        target = (
            into
            if isinstance(into, Store)
            else Store(self.repo, into, None, self.codec, self._choose, True)
        )
        return target.merge(self, message)

    # -------------------------------------------------------------- watching

    def watch(self, callback: Callable[[WatchEvent], object], prefix: PathLike = ()) -> Watch:
        """Call ``callback(event)`` for every move of this branch that changes
        a path under ``prefix``; see :mod:`looming.store.watch`."""
        from looming.store.watch import Watch

        return Watch.start(self, callback, to_path(prefix))

    def events(self, prefix: PathLike = ()) -> AsyncWatch:
        """An async iterator of watch events (see :meth:`watch`)."""
        from looming.store.watch import AsyncWatch

        return AsyncWatch(self, to_path(prefix))


def default_choose(store: Store) -> ChooseMerge:
    return store._choose
