"""Store.last_modified against ``git log --format=%H -- PATH``.

Random histories on two branches (sets, removals, merges of one branch
into the other) are written through the store; for every key, a folder and
a key that never existed, the commits last_modified lists must be exactly
those ``git log`` lists, in the same order.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from looming.store import Repo
from looming.unix.clock import UnixClock

from .conftest import run_git

KEYS = ["a", "d/x", "d/y", "d/e/z"]
PATHS = [*KEYS, "d", "d/e", "never", "d/never"]


class StepClock:
    """One second later at every commit, so the order is git's too."""

    def __init__(self) -> None:
        self.seconds = 1_700_000_000

    def now_ns(self) -> int:
        self.seconds += 1
        return self.seconds * 1_000_000_000

    def now(self) -> float:
        return float(self.seconds)

    def utc_offset_s(self) -> int:
        return 0


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["set", "set", "remove", "merge"]),
        st.sampled_from(["main", "side"]),
        st.sampled_from(KEYS),
        st.sampled_from([b"1", b"2", b"3"]),
    ),
    min_size=1,
    max_size=14,
)


def _play(repo: Repo, operations: list[tuple[str, str, str, bytes]]) -> None:
    main = repo.store("main")
    main.set("a", b"0")
    side = main.clone("side")
    stores = {"main": main, "side": side}
    for kind, branch, key, value in operations:
        store = stores[branch]
        if kind == "set":
            store.set(key, value)
        elif kind == "remove":
            store.remove(key)
        else:
            other = "side" if branch == "main" else "main"
            store.merge(other)  # conflicts leave the branch as it was


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPERATIONS)
def test_last_modified_lists_what_git_log_lists(
    operations: list[tuple[str, str, str, bytes]],
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "r.git"
        repo = Repo.init(str(path), clock=StepClock(), durability="none")
        _play(repo, operations)
        for branch in ("main", "side"):
            store = repo.store(branch)
            for key in PATHS:
                ours = [info.id for info in store.last_modified(key, limit=1000)]
                theirs = run_git("log", "--format=%H", branch, "--", key, cwd=path).split()
                assert ours == theirs, (branch, key)
                newest = store.last_modified(key)
                assert [info.id for info in newest] == theirs[:1]
        repo.close()


def test_a_key_that_never_existed_has_no_commits(tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path / "r.git"), clock=UnixClock())
    store = repo.store("main")
    store.set("a", b"1")
    store.set("b", b"2")
    assert store.last_modified("never") == []
    assert [info.message for info in store.last_modified("a", limit=5)] == ["set a\n"]
    repo.close()
