"""``looming store``: the store from the command line.

Every subcommand works on the repository given by ``--repo`` (default: the
current folder) and the branch given by ``--branch`` (default: the
repository's HEAD); both, and ``--author "Name <email>"`` for the commits
made, may be given before or after the subcommand. User errors print one
clear line on stderr and exit 2; a merge that leaves conflicts lists them,
keeps them as a pending merge (``merge --status``, ``resolve``,
``merge --continue`` / ``--abort``) and exits 1.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from looming.errors import LoomingError
from looming.store import pending
from looming.store.repo import Repo
from looming.store.store import MergeResult, Store
from looming.store.tree import Kind
from looming.unix import host_devices

PROG = "looming store"
AUTHOR = re.compile(r"^\s*([^<>\n]+?)\s*<([^<>\n]*)>\s*$")

Command = Callable[[argparse.Namespace], int]


class UsageError(LoomingError):
    """A command line the store cannot act on; the message says what to change."""


# ------------------------------------------------------------------ options


def _common(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--repo, --branch and --author; with ``defaults`` False they default to
    nothing, so given after the subcommand they override the ones before."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--repo", "-C", default=default("."), metavar="PATH", help="the repository (default: .)"
    )
    parser.add_argument(
        "--branch", "-b", default=default(None), help="the branch (default: the repository's HEAD)"
    )
    parser.add_argument(
        "--author",
        default=default(None),
        metavar='"NAME <EMAIL>"',
        help="author and committer of the commits made "
        "(default: GIT_AUTHOR_NAME/GIT_AUTHOR_EMAIL, else looming)",
    )


def _subcommand(commands: Any, name: str, run: Command, help: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=help)
    _common(parser, defaults=False)
    parser.set_defaults(store_run=run)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser, defaults=True)
    commands = parser.add_subparsers(dest="store_command", metavar="COMMAND")
    commands.required = True
    for add in (
        _add_init,
        _add_values,
        _add_history,
        _add_branch,
        _add_merge,
        _add_sync,
        _add_watch,
        _add_serve,
        _add_gc,
    ):
        add(commands)


def _add_init(commands: Any) -> None:
    init = _subcommand(commands, "init", cmd_init, "create a repository (a bare Git repository)")
    init.add_argument("path", nargs="?", default=None, help="where (default: --repo)")


def _add_values(commands: Any) -> None:
    get = _subcommand(commands, "get", cmd_get, "print the value at a key")
    get.add_argument("key")
    set_ = _subcommand(commands, "set", cmd_set, "store a value at a key (one commit)")
    set_.add_argument("key")
    set_.add_argument("value", nargs="?", help="the value; omit to read standard input")
    set_.add_argument("--file", "-f", help="read the value from this file")
    set_.add_argument("--message", "-m", help="the commit message")
    rm = _subcommand(commands, "rm", cmd_rm, "remove a key or a whole directory (one commit)")
    rm.add_argument("key")
    rm.add_argument("--message", "-m", help="the commit message")
    ls = _subcommand(commands, "ls", cmd_ls, "list the names under a directory")
    ls.add_argument("prefix", nargs="?", default="")
    tree = _subcommand(commands, "tree", cmd_tree, "list every key under a directory, recursively")
    tree.add_argument("prefix", nargs="?", default="")


def _add_history(commands: Any) -> None:
    log = _subcommand(commands, "log", cmd_log, "show the commits of the branch, newest first")
    log.add_argument("--max-count", "-n", type=int, default=None)


def _add_branch(commands: Any) -> None:
    branch = _subcommand(commands, "branch", cmd_branch, "list branches, or create or delete one")
    branch.add_argument("name", nargs="?")
    branch.add_argument("--delete", "-d", action="store_true", help="delete the branch")
    branch.add_argument("--at", help="the commit or branch to start from (default: --branch)")


def _add_merge(commands: Any) -> None:
    merge = _subcommand(
        commands,
        "merge",
        cmd_merge,
        "merge another branch or commit into the branch; conflicts are kept as a pending merge",
    )
    merge.add_argument("other", nargs="?", help="the branch or commit id to merge")
    merge.add_argument("--message", "-m")
    steps = merge.add_mutually_exclusive_group()
    steps.add_argument("--status", action="store_true", help="show the pending merge's conflicts")
    steps.add_argument("--continue", dest="continue_", action="store_true", help="commit it")
    steps.add_argument("--abort", action="store_true", help="forget the pending merge")
    resolve = _subcommand(
        commands, "resolve", cmd_resolve, "choose the value of a conflicting key of a pending merge"
    )
    resolve.add_argument("key")
    resolve.add_argument("value", nargs="?", help="the value to keep")
    sides = resolve.add_mutually_exclusive_group()
    sides.add_argument("--ours", action="store_true", help="keep the branch's value")
    sides.add_argument("--theirs", action="store_true", help="keep the merged-in value")
    resolve.add_argument("--file", "-f", help="read the value from this file")


def _add_sync(commands: Any) -> None:
    clone = _subcommand(commands, "clone", cmd_clone, "copy a remote repository to a new one")
    clone.add_argument("remote")
    clone.add_argument("path")
    fetch = _subcommand(commands, "fetch", cmd_fetch, "download a remote's branches")
    fetch.add_argument("remote")
    pull = _subcommand(
        commands, "pull", cmd_pull, "fetch and merge (or fast-forward) a remote branch"
    )
    pull.add_argument("remote")
    pull.add_argument("remote_branch", nargs="?")
    pull.add_argument(
        "--allow-unrelated-histories",
        action="store_true",
        help="merge a branch that shares no commit with ours (as git requires)",
    )
    push = _subcommand(commands, "push", cmd_push, "send the branch to a remote")
    push.add_argument("remote")
    push.add_argument(
        "--force",
        action="store_true",
        help="replace the remote branch even if it has other commits",
    )


def _add_watch(commands: Any) -> None:
    watch = _subcommand(
        commands, "watch", cmd_watch, "print each change of the branch as it happens"
    )
    watch.add_argument("prefix", nargs="?", default="")
    watch.add_argument("--count", type=int, default=None, help="stop after this many changes")


def _add_serve(commands: Any) -> None:
    from looming.addresses import host_argument, port_argument
    from looming.store.auth import TOKEN_ENV

    serve = _subcommand(
        commands,
        "serve",
        cmd_serve,
        "serve the store over smart HTTP and a JSON API (writes need a token)",
    )
    serve.add_argument(
        "--host",
        type=host_argument,
        default="127.0.0.1",
        help="address to listen on: 127.0.0.1, ::1, or :: for every address of both families",
    )
    serve.add_argument("--port", type=port_argument, default=8418)
    serve.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"the token clients send as HTTP Basic password (else ${TOKEN_ENV}); "
        "without one, writes are refused",
    )
    serve.add_argument(
        "--access", metavar="FILE", help="per-branch rules (TOML; see looming.store.auth)"
    )
    serve.add_argument(
        "--anonymous-read", action="store_true", help="let clients without the token read"
    )
    serve.add_argument("--cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    serve.add_argument("--key", metavar="PEM", help="the certificate's private key")
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        metavar="N",
        help="largest request body, a push's pack included (default 256 MiB)",
    )


def _add_gc(commands: Any) -> None:
    _subcommand(
        commands, "gc", cmd_gc, "compact the repository's packs and reclaim left-over files"
    )


# ------------------------------------------------------------------ helpers


def _identity(args: argparse.Namespace) -> tuple[str, str] | None:
    text = args.author
    if text is None:
        name = os.environ.get("GIT_AUTHOR_NAME")
        email = os.environ.get("GIT_AUTHOR_EMAIL")
        if name and email is not None:
            text = f"{name} <{email}>"
    if text is None:
        return None
    found = AUTHOR.match(text)
    if found is None:
        raise UsageError(f'--author must look like "Name <email>", not {text!r}')
    return found.group(1), found.group(2)


def _open(args: argparse.Namespace) -> Repo:
    identity = _identity(args)
    repo = Repo.open(args.repo, clock=host_devices().clock)
    if identity is not None:
        repo.author, repo.email = identity
    return repo


def _store(args: argparse.Namespace) -> Store:
    return _open(args).store(args.branch)


def _write_value(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _read_value(value: str | None, file: str | None) -> bytes:
    if file is not None:
        try:
            with open(file, "rb") as handle:
                return handle.read()
        except OSError as error:
            raise UsageError(f"cannot read {file}: {error.strerror}") from None
    if value is not None:
        return value.encode()
    return sys.stdin.buffer.read()


def _report_merge(result: MergeResult, store: Store) -> int:
    if result.conflicts:
        for conflict in result.conflicts:
            print(f"conflict: {conflict}", file=sys.stderr)
        print(
            f"the merge into {store.branch} is pending: see `{PROG} merge --status`, choose with "
            f"`{PROG} resolve KEY VALUE|--ours|--theirs`, then `{PROG} merge --continue` "
            "(or `--abort`)",
            file=sys.stderr,
        )
        return 1
    print(("fast-forward to " if result.fast_forward else "merged: ") + str(result.commit))
    return 0


# ------------------------------------------------------------------ commands


def cmd_init(args: argparse.Namespace) -> int:
    repo = Repo.init(
        args.path or args.repo, branch=args.branch or "main", clock=host_devices().clock
    )
    print(f"initialised {repo.path}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    _write_value(_store(args).get(args.key))
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    data = _read_value(args.value, args.file)
    print(_store(args).set(args.key, data, args.message))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    commit = _store(args).remove(args.key, args.message)
    print(commit if commit is not None else f"nothing at {args.key}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.prefix and store.kind(args.prefix) is None:
        raise UsageError(f"nothing at {args.prefix!r}")
    for name, kind in store.list(args.prefix):
        print(name + ("/" if kind == Kind.NODE else ""))
    return 0


def cmd_tree(args: argparse.Namespace) -> int:
    from looming.store.tree import walk_blobs

    store = _store(args)
    tree = store.tree(args.prefix)
    if tree is None:
        raise UsageError(f"no directory at {args.prefix!r}")
    for path, _blob in walk_blobs(store.repo.db, tree.id):
        print("/".join(path))
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    for info in _store(args).history(args.max_count):
        first_line = info.message.splitlines()[0] if info.message else ""
        print(f"{info.id} {first_line}")
    return 0


def cmd_branch(args: argparse.Namespace) -> int:
    from looming.store.names import check_branch

    repo = _open(args)
    if args.name is None:
        current = args.branch or repo.default_branch
        for name in repo.branches():
            print(("* " if name == current else "  ") + name)
        return 0
    check_branch(args.name)
    if args.delete:
        if repo.head(args.name) is None:
            raise UsageError(f"no branch {args.name!r}")
        repo.remove_branch(args.name)
        print(f"deleted {args.name}")
        return 0
    if repo.head(args.name) is not None:
        raise UsageError(f"branch {args.name!r} exists already")
    start = args.at or args.branch or repo.default_branch
    head = repo.head(start) if repo.head(start) is not None else repo.resolve(start).hex()
    repo.set_head(args.name, head)
    print(f"{args.name} at {head}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    store = _store(args)
    branch = store.branch
    assert branch is not None
    steps = [args.status, args.continue_, args.abort]
    if any(steps) and args.other is not None:
        raise UsageError("--status, --continue and --abort take no branch to merge")
    if args.status:
        return _merge_status(store.repo, branch)
    if args.continue_:
        print(f"merged: {pending.continue_merge(store)}")
        return 0
    if args.abort:
        pending.abort_merge(store.repo, branch)
        print(f"aborted the merge into {branch}")
        return 0
    if args.other is None:
        raise UsageError(
            "say what to merge: a branch or commit id (or --status/--continue/--abort)"
        )
    return _report_merge(pending.start_merge(store, args.other, args.message), store)


def _merge_status(repo: Repo, branch: str) -> int:
    record = pending.load(repo, branch)
    if record is None:
        print(f"no merge is pending on {branch}")
        return 0
    print(f"merging {record.theirs} into {branch} (at {record.ours})")
    for conflict in record.conflicts:
        key = conflict["key"]
        chosen = record.resolutions.get(key)
        state = "resolved: " + pending.show_side(chosen) if chosen is not None else "unresolved"
        print(f"{key}: {conflict['why']} ({state})")
        for side in ("base", "ours", "theirs"):
            print(f"  {side:6} {pending.show_side(conflict[side])}")
    left = len(record.unresolved)
    print(f"{left} unresolved" if left else f"all resolved: `{PROG} merge --continue`")
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    store = _store(args)
    assert store.branch is not None
    side = "ours" if args.ours else "theirs" if args.theirs else None
    if side is not None and (args.value is not None or args.file is not None):
        raise UsageError("give a value or --ours or --theirs, not both")
    value = None
    if side is None:
        if args.value is None and args.file is None:
            raise UsageError("give the value to keep, --file FILE, --ours or --theirs")
        value = _read_value(args.value, args.file)
    record = pending.resolve(store.repo, store.branch, args.key, value=value, side=side)
    left = len(record.unresolved)
    print(f"resolved {args.key}; " + (f"{left} left" if left else f"`{PROG} merge --continue`"))
    return 0


def cmd_clone(args: argparse.Namespace) -> int:
    from looming.store import sync

    repo = sync.clone(args.remote, args.path, clock=host_devices().clock)
    print(f"cloned {args.remote} into {args.path}: {', '.join(repo.branches()) or 'no branches'}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from looming.store import sync

    fetched = sync.fetch(_open(args), args.remote)
    for name, head in sorted(fetched.branches.items()):
        print(f"{head} {name}")
    for name, rule in sorted(fetched.skipped.items()):
        print(f"skipped {name!r}: {rule}", file=sys.stderr)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from looming.store import sync

    store = _store(args)
    result = sync.pull(
        store,
        args.remote,
        args.remote_branch,
        allow_unrelated_histories=args.allow_unrelated_histories,
        keep_conflicts=True,
    )
    return _report_merge(result, store)


def cmd_push(args: argparse.Namespace) -> int:
    from looming.store import sync

    repo = _open(args)
    print(sync.push(repo, args.remote, args.branch or repo.default_branch, force=args.force))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    return _watch(_store(args), args.prefix, args.count)


def cmd_serve(args: argparse.Namespace) -> int:
    from looming.store.auth import load_policy
    from looming.store.http import ServeSettings, serve_forever

    policy = load_policy(
        token_file=args.token_file, access_file=args.access, anonymous_read=args.anonymous_read
    )
    settings = ServeSettings()
    if args.max_body_bytes is not None:
        if args.max_body_bytes <= 0:
            raise UsageError("--max-body-bytes must be a positive number of bytes")
        settings = ServeSettings(max_body_bytes=args.max_body_bytes)
    serve_forever(
        _open(args),
        args.host,
        args.port,
        policy=policy,
        settings=settings,
        cert=args.cert,
        key=args.key,
    )
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    repo = _open(args)
    try:
        repo.gc()
    finally:
        repo.close()
    packs = os.path.join(repo.path or args.repo, "objects", "pack")
    count = (
        len([n for n in os.listdir(packs) if n.endswith(".pack")]) if os.path.isdir(packs) else 0
    )
    print(f"compacted {repo.path}: {count} pack{'s' if count != 1 else ''}")
    return 0


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


# ------------------------------------------------------------------ entry


def run(args: argparse.Namespace) -> int:
    command: Command = args.store_run
    try:
        return command(args)
    except (LoomingError, KeyError) as error:
        message = (
            str(error)
            if not isinstance(error, KeyError) or isinstance(error, LoomingError)
            else repr(error)
        )
        print(f"{PROG}: {message}", file=sys.stderr)
        return 2
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        print(f"{PROG}: {error.strerror or error}{where}", file=sys.stderr)
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
