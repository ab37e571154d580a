"""A repository: objects, branches and heads, in memory or on disk."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from looming.devices.clock import Clock
from looming.errors import Malformed
from looming.store.backend import Backend, MemoryBackend, check_ref_name
from looming.store.contents import BYTES, Codec
from looming.store.errors import BadRef, MissingObject, RefChanged
from looming.store.gitbackend import FOLD_WHEN_IDLE, GitBackend, init_git_dir
from looming.store.merge import MergeFunction, default
from looming.store.objectdb import ObjectDb
from looming.store.objects import Commit, Identity, ObjectId, raw_id
from looming.store.treemerge import ChooseMerge

if TYPE_CHECKING:
    from looming.store.store import Store

HEADS = "refs/heads/"


@dataclass(frozen=True)
class CommitInfo:
    """A commit as the API shows it: hex ids and plain values."""

    id: str
    tree: str
    parents: tuple[str, ...]
    author: str
    message: str
    time: int

    @staticmethod
    def of(object_id: ObjectId, commit: Commit) -> CommitInfo:
        return CommitInfo(
            id=object_id.hex(),
            tree=commit.tree.hex(),
            parents=tuple(parent.hex() for parent in commit.parents),
            author=f"{commit.author.name} <{commit.author.email}>",
            message=commit.message,
            time=commit.committer.time,
        )


RefListener = Callable[[str, ObjectId | None, ObjectId | None], None]


class Repo:
    """Branches over an object database. Make one with :meth:`init`,
    :meth:`open` or :meth:`memory`. Commits are stamped with the time of
    ``clock`` (a unikernel's clock device; on the host,
    ``looming.unix.host_devices().clock``)."""

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock,
        author: str = "looming",
        email: str = "store@looming.invalid",
        path: str | None = None,
    ) -> None:
        self.backend = backend
        self.db = ObjectDb(backend)
        self.clock = clock
        self.author = author
        self.email = email
        self.path = path
        self._listeners: list[RefListener] = []
        self._listeners_lock = threading.Lock()

    # -------------------------------------------------------------- making

    @classmethod
    def memory(cls, *, clock: Clock, **options: Any) -> Repo:
        return cls(MemoryBackend(), clock=clock, **options)

    @classmethod
    def init(
        cls, path: str, *, clock: Clock, bare: bool = True, branch: str = "main", **options: Any
    ) -> Repo:
        """Create (or reopen) a Git repository at ``path``."""
        check_ref_name(branch)
        os.makedirs(path, exist_ok=True)
        init_git_dir(path, bare=bare, branch=branch)
        return cls.open(path, clock=clock, **options)

    @classmethod
    def open(
        cls,
        path: str,
        *,
        clock: Clock,
        merge_packs_after: int = 32,
        fold_when_idle: float | None = FOLD_WHEN_IDLE,
        durability: str = "full",
        **options: Any,
    ) -> Repo:
        """Open the Git repository at ``path``. Each commit is written as a
        small pack; ``merge_packs_after`` of them are folded into one compact
        pack, and so are fewer once the writer has been idle for
        ``fold_when_idle`` seconds (None: only when closed).

        ``durability="full"`` (the default) fsyncs every pack, ref and
        folder a commit touches before the commit returns, so it survives a
        power cut; ``"none"`` skips the fsyncs (a commit then survives the
        writer being killed, not the machine losing power): for tests,
        benchmarks and data that can be made again."""
        backend = GitBackend(
            path,
            merge_after=merge_packs_after,
            fold_when_idle=fold_when_idle,
            durability=durability,
        )
        return cls(backend, clock=clock, path=path, **options)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Repo:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -------------------------------------------------------------- branches

    @property
    def default_branch(self) -> str:
        if isinstance(self.backend, GitBackend):
            target = self.backend.head_target()
            if target.startswith(HEADS):
                return target[len(HEADS) :]
        return "main"

    def set_default_branch(self, branch: str) -> None:
        """Point HEAD at ``branch`` (what ``git clone`` checks out)."""
        check_ref_name(branch)
        if isinstance(self.backend, GitBackend):
            self.backend.set_head_target(HEADS + branch)

    def branches(self) -> list[str]:
        return sorted(name[len(HEADS) :] for name in self.backend.list_refs(HEADS))

    def head(self, branch: str) -> str | None:
        """The commit id a branch points at, or None for an empty branch."""
        head = self.head_id(branch)
        return head.hex() if head is not None else None

    def head_id(self, branch: str) -> ObjectId | None:
        return self.backend.read_ref(HEADS + check_ref_name(branch))

    def set_head(
        self, branch: str, commit: str | None, *, expect: str | object | None = ...
    ) -> None:
        """Point ``branch`` at ``commit`` (None deletes it); with ``expect``,
        only if the branch still points there (compare-and-set)."""
        new = self.resolve(commit) if commit is not None else None
        with self.backend.writer_lock():
            current = self.head_id(branch)
            if expect is not ...:
                expected = self.resolve(expect) if isinstance(expect, str) else None
                if current != expected:
                    raise RefChanged(f"branch {branch} moved; expected {expect}")
            self.update_ref(branch, current, new)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group the commits made inside into one write to disk (a
        transaction of commits): one pack and one fsync'ed ref update per
        branch when the block ends. A branch's commits in the batch are all
        kept or none: none when the block raises, or when the branch moved
        on disk meanwhile (RefChanged). In memory, nothing to group."""
        if isinstance(self.backend, GitBackend):
            with self.backend.batch():
                yield
        else:
            yield

    def remove_branch(self, branch: str) -> None:
        self.set_head(branch, None)

    def update_ref(self, branch: str, old: ObjectId | None, new: ObjectId | None) -> None:
        """Compare-and-set a branch, then tell the in-process listeners."""
        if new is not None and not self.backend.contains(new):
            raise MissingObject(new.hex(), "commit")
        self.backend.set_ref(HEADS + check_ref_name(branch), old, new)
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(branch, old, new)

    def add_ref_listener(self, listener: RefListener) -> None:
        with self._listeners_lock:
            self._listeners.append(listener)

    def remove_ref_listener(self, listener: RefListener) -> None:
        with self._listeners_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def gc(self) -> None:
        """Merge every pack of the repository into one (``looming store
        gc``), and remove what killed writers left: spares of dead
        processes, half-written files, hour-old packs without an index. A
        no-op in memory. Writers also merge many small packs on their own
        (see :meth:`GitBackend.compact`)."""
        if isinstance(self.backend, GitBackend):
            self.backend.gc(self.clock.now())

    # -------------------------------------------------------------- objects

    def resolve(self, name: str) -> ObjectId:
        """A full commit id, or a branch name, to an object id."""
        if len(name) == 40:
            try:
                return raw_id(name)
            except Malformed:
                pass
        try:
            head = self.head_id(name)
        except BadRef:
            head = None
        if head is None:
            raise BadRef(f"{name!r} is neither a commit id nor a branch")
        return head

    def read_object(self, object_id: str) -> tuple[str, bytes]:
        """The type and body of any object by hex id (hash checked)."""
        return self.backend.read(raw_id(object_id))

    def commit_info(self, commit: str) -> CommitInfo:
        object_id = self.resolve(commit)
        return CommitInfo.of(object_id, self.db.commit(object_id))

    def make_commit(self, tree: ObjectId, parents: tuple[ObjectId, ...], message: str) -> ObjectId:
        now = self.clock.now_ns() // 1_000_000_000
        offset = self.clock.utc_offset_s() // 60
        who = Identity(self.author, self.email, now, offset)
        if not message.endswith("\n"):
            message += "\n"
        return self.db.write_commit(Commit(tree, parents, who, who, message))

    def history(self, commit: str | None, limit: int | None = None) -> Iterator[CommitInfo]:
        """Commits reachable from ``commit``, newest first (by commit time)."""
        if commit is None:
            return
        start = self.resolve(commit)
        seen = {start}
        frontier = [start]
        count = 0
        while frontier and (limit is None or count < limit):
            frontier.sort(key=lambda oid: self.db.commit(oid).committer.time)
            current = frontier.pop()
            commit_object = self.db.commit(current)
            yield CommitInfo.of(current, commit_object)
            count += 1
            for parent in commit_object.parents:
                if parent not in seen:
                    seen.add(parent)
                    frontier.append(parent)

    # -------------------------------------------------------------- stores

    def store(
        self,
        branch: str | None = None,
        *,
        codec: Codec[Any] = BYTES,
        merge: MergeFunction | ChooseMerge = default,
        by_path: bool = False,
    ) -> Store:
        """A store bound to ``branch`` (default: the repository's HEAD)."""
        from looming.store.store import Store

        return Store(self, branch or self.default_branch, None, codec, merge, by_path)

    def at(self, commit: str, *, codec: Codec[Any] = BYTES) -> Store:
        """A read-only store bound to one commit."""
        from looming.store.store import Store

        return Store(self, None, self.resolve(commit), codec, default, False)

    # -------------------------------------------------------------- import/export

    def reachable(self, heads: list[ObjectId], have: set[ObjectId] | None = None) -> list[ObjectId]:
        """Every object reachable from ``heads`` not already in ``have``."""
        seen: set[ObjectId] = set(have or ())
        order: list[ObjectId] = []
        stack = [head for head in heads if head not in seen]
        from looming.store.objects import MODE_GITLINK, MODE_TREE

        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            order.append(current)
            kind, _body = self.backend.read(current)
            if kind == "commit":
                commit = self.db.commit(current)
                stack.append(commit.tree)
                stack.extend(commit.parents)
            elif kind == "tree":
                for mode, oid in self.db.tree(current).values():
                    if mode == MODE_GITLINK:
                        continue
                    if oid not in seen:
                        if mode == MODE_TREE:
                            stack.append(oid)
                        else:
                            seen.add(oid)
                            order.append(oid)
        return order

    def export_pack(self, branches: list[str] | None = None) -> bytes:
        """A Git pack of every object reachable from ``branches`` (all by default)."""
        from looming.store.pack import write_pack

        names = branches if branches is not None else self.branches()
        heads = [oid for oid in (self.head_id(name) for name in names) if oid is not None]
        objects = [(oid, *self.backend.read(oid)) for oid in self.reachable(heads)]
        return write_pack(objects)

    def import_pack(self, data: bytes) -> list[str]:
        """Add every object of a Git pack (deltas resolved, hashes checked)."""
        from looming.store.pack import read_pack

        added: list[str] = []
        with self.backend.writer_lock():
            for kind, body in read_pack(data):
                added.append(self.backend.write(kind, body).hex())
            self.backend.flush()
        return added
