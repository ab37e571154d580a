"""``looming store``: the store from the command line.

Every subcommand works on the repository given by ``--repo`` (default: the
current folder) and the branch given by ``--branch`` (default: the
repository's HEAD). User errors print one clear line on stderr and exit 2;
a merge that leaves conflicts lists them and exits 1.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence

from looming.errors import LoomingError
from looming.store.repo import Repo
from looming.store.store import Store
from looming.store.tree import Kind

PROG = "looming store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo", "-C", default=".", metavar="PATH", help="the repository (default: .)"
    )
    parser.add_argument(
        "--branch", "-b", default=None, help="the branch (default: the repository's HEAD)"
    )
    commands = parser.add_subparsers(dest="store_command", metavar="COMMAND")
    commands.required = True

    init = commands.add_parser("init", help="create a repository (a bare Git repository)")
    init.add_argument("path", nargs="?", default=None, help="where (default: --repo)")

    get = commands.add_parser("get", help="print the value at a key")
    get.add_argument("key")

    set_ = commands.add_parser("set", help="store a value at a key (one commit)")
    set_.add_argument("key")
    set_.add_argument("value", nargs="?", help="the value; omit to read standard input")
    set_.add_argument("--file", "-f", help="read the value from this file")
    set_.add_argument("--message", "-m", help="the commit message")

    rm = commands.add_parser("rm", help="remove a key or a whole directory (one commit)")
    rm.add_argument("key")
    rm.add_argument("--message", "-m", help="the commit message")

    ls = commands.add_parser("ls", help="list the names under a directory")
    ls.add_argument("prefix", nargs="?", default="")

    tree = commands.add_parser("tree", help="list every key under a directory, recursively")
    tree.add_argument("prefix", nargs="?", default="")

    log = commands.add_parser("log", help="show the commits of the branch, newest first")
    log.add_argument("--max-count", "-n", type=int, default=None)

    branch = commands.add_parser("branch", help="list branches, or create or delete one")
    branch.add_argument("name", nargs="?")
    branch.add_argument("--delete", "-d", action="store_true", help="delete the branch")
    branch.add_argument("--at", help="the commit or branch to start from (default: --branch)")

    merge = commands.add_parser("merge", help="merge another branch or commit into the branch")
    merge.add_argument("other")
    merge.add_argument("--message", "-m")

    clone = commands.add_parser("clone", help="copy a remote repository to a new one")
    clone.add_argument("remote")
    clone.add_argument("path")

    fetch = commands.add_parser("fetch", help="download a remote's branches")
    fetch.add_argument("remote")

    pull = commands.add_parser("pull", help="fetch and merge (or fast-forward) a remote branch")
    pull.add_argument("remote")
    pull.add_argument("remote_branch", nargs="?")

    push = commands.add_parser("push", help="send the branch to a remote")
    push.add_argument("remote")
    push.add_argument(
        "--force",
        action="store_true",
        help="replace the remote branch even if it has other commits",
    )

    watch = commands.add_parser("watch", help="print each change of the branch as it happens")
    watch.add_argument("prefix", nargs="?", default="")
    watch.add_argument("--count", type=int, default=None, help="stop after this many changes")

    serve = commands.add_parser("serve", help="serve the store over smart HTTP and a JSON API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8418)


def _open(args: argparse.Namespace) -> Repo:
    return Repo.open(args.repo)


def _store(args: argparse.Namespace) -> Store:
    return _open(args).store(args.branch)


def _write_value(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _run(args: argparse.Namespace) -> int:
    command = args.store_command
    if command == "init":
        repo = Repo.init(args.path or args.repo, branch=args.branch or "main")
        print(f"initialised {repo.path}")
        return 0
    if command == "clone":
        from looming.store import sync

        repo = sync.clone(args.remote, args.path)
        print(
            f"cloned {args.remote} into {args.path}: {', '.join(repo.branches()) or 'no branches'}"
        )
        return 0
    if command == "get":
        _write_value(_store(args).get(args.key))
        return 0
    if command == "set":
        if args.file is not None:
            try:
                with open(args.file, "rb") as file:
                    data = file.read()
            except OSError as error:
                raise LoomingError(f"cannot read {args.file}: {error.strerror}") from None
        elif args.value is not None:
            data = args.value.encode()
        else:
            data = sys.stdin.buffer.read()
        print(_store(args).set(args.key, data, args.message))
        return 0
    if command == "rm":
        commit = _store(args).remove(args.key, args.message)
        print(commit if commit is not None else f"nothing at {args.key}")
        return 0
    if command == "ls":
        store = _store(args)
        if args.prefix and store.kind(args.prefix) is None:
            raise LoomingError(f"nothing at {args.prefix!r}")
        for name, kind in store.list(args.prefix):
            print(name + ("/" if kind == Kind.NODE else ""))
        return 0
    if command == "tree":
        store = _store(args)
        tree = store.tree(args.prefix)
        if tree is None:
            raise LoomingError(f"no directory at {args.prefix!r}")
        from looming.store.tree import walk_blobs

        for path, _blob in walk_blobs(store.repo.db, tree.id):
            print("/".join(path))
        return 0
    if command == "log":
        for info in _store(args).history(args.max_count):
            first_line = info.message.splitlines()[0] if info.message else ""
            print(f"{info.id} {first_line}")
        return 0
    if command == "branch":
        repo = _open(args)
        if args.name is None:
            current = args.branch or repo.default_branch
            for name in repo.branches():
                print(("* " if name == current else "  ") + name)
            return 0
        if args.delete:
            if repo.head(args.name) is None:
                raise LoomingError(f"no branch {args.name!r}")
            repo.remove_branch(args.name)
            print(f"deleted {args.name}")
            return 0
        if repo.head(args.name) is not None:
            raise LoomingError(f"branch {args.name!r} exists already")
        start = args.at or args.branch or repo.default_branch
        head = repo.head(start) if repo.head(start) is not None else repo.resolve(start).hex()
        repo.set_head(args.name, head)
        print(f"{args.name} at {head}")
        return 0
    if command == "merge":
        result = _store(args).merge(args.other, args.message)
        if result.conflicts:
            for conflict in result.conflicts:
                print(f"conflict: {conflict}", file=sys.stderr)
            return 1
        print(("fast-forward to " if result.fast_forward else "merged: ") + str(result.commit))
        return 0
    if command in ("fetch", "pull", "push"):
        from looming.store import sync

        if command == "fetch":
            fetched = sync.fetch(_open(args), args.remote)
            for name, head in sorted(fetched.branches.items()):
                print(f"{head} {name}")
            return 0
        if command == "pull":
            result = sync.pull(_store(args), args.remote, args.remote_branch)
            if result.conflicts:
                for conflict in result.conflicts:
                    print(f"conflict: {conflict}", file=sys.stderr)
                return 1
            print(f"{'fast-forward to' if result.fast_forward else 'merged:'} {result.commit}")
            return 0
        repo = _open(args)
        print(sync.push(repo, args.remote, args.branch or repo.default_branch, force=args.force))
        return 0
    if command == "watch":
        return _watch(_store(args), args.prefix, args.count)
    if command == "serve":
        from looming.store.http import serve_forever

        serve_forever(_open(args), args.host, args.port)
        return 0
    raise LoomingError(f"unknown command {command!r}")


def _watch(store: Store, prefix: str, count: int | None) -> int:
    done = threading.Event()
    seen = [0]

    def show(event: object) -> None:
        from looming.store.watch import WatchEvent

        assert isinstance(event, WatchEvent)
        paths = " ".join("/".join(path) for path in event.paths)
        print(f"{event.old or '-'} {event.new or '-'} {paths}", flush=True)
        seen[0] += 1
        if count is not None and seen[0] >= count:
            done.set()

    with store.watch(show, prefix):
        print(f"watching {store.branch} {prefix or '/'}", flush=True)
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (LoomingError, KeyError) as error:
        message = (
            str(error)
            if not isinstance(error, KeyError) or isinstance(error, LoomingError)
            else repr(error)
        )
        print(f"{PROG}: {message}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
