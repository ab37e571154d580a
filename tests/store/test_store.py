"""The Store API over both backends."""

from __future__ import annotations

import pytest

from looming.errors import KeyNotFound
from looming.store import merge as mf
from looming.store.contents import JSON, STR, FunctionCodec
from looming.store.errors import InvalidPath, MergeFailed, ReadOnlyStore, RefChanged
from looming.store.repo import Repo
from looming.store.tree import Kind
from looming.unix.clock import UnixClock


def test_set_get_find_remove(any_repo: Repo) -> None:
    store = any_repo.store()
    assert store.head is None
    assert store.find("a/b") is None
    first = store.set("a/b", b"one")
    assert store.get(("a", "b")) == b"one"
    assert store.head == first
    store.set("a/c", b"two", message="second value")
    assert store.history()[0].message == "second value\n"
    assert store.list("a") == [("b", Kind.CONTENTS), ("c", Kind.CONTENTS)]
    assert store.list() == [("a", Kind.NODE)]
    store.remove("a/b")
    with pytest.raises(KeyNotFound):
        store.get("a/b")
    store.remove("a")
    assert store.list() == []
    assert len(store.history()) == 4


def test_every_update_is_a_commit_with_parent(any_repo: Repo) -> None:
    store = any_repo.store()
    ids = [store.set(f"k{i}", b"%d" % i) for i in range(5)]
    history = store.history()
    assert [info.id for info in history] == ids[::-1]
    assert history[0].parents == (ids[3],)
    assert store.history(limit=2) == history[:2]


def test_file_becomes_directory_and_back(any_repo: Repo) -> None:
    store = any_repo.store()
    store.set("x", b"file")
    store.set("x/y", b"nested")
    assert store.kind("x") == Kind.NODE
    assert store.get("x/y") == b"nested"
    store.set("x", b"file again")
    assert store.get("x") == b"file again"
    assert store.find("x/y") is None


@pytest.mark.parametrize("bad", ["", "a//b", ("a", ""), ("a/b",), ("a\0",), "../x", ("a", ".git")])
def test_invalid_paths_are_rejected(any_repo: Repo, bad: object) -> None:
    store = any_repo.store()
    with pytest.raises((InvalidPath, KeyNotFound)):
        store.set(bad, b"x")  # type: ignore[arg-type]


def test_typed_contents(any_repo: Repo) -> None:
    json_store = any_repo.store("json", codec=JSON)
    json_store.set("doc", {"b": [1, 2], "a": None})
    assert json_store.get("doc") == {"a": None, "b": [1, 2]}
    assert any_repo.store("json").get("doc") == b'{"a":null,"b":[1,2]}'
    text_store = any_repo.store("text", codec=STR)
    text_store.set("greeting", "héllo")
    assert text_store.get("greeting") == "héllo"
    ints = FunctionCodec[int](lambda n: n.to_bytes(8, "big"), lambda b: int.from_bytes(b, "big"))
    int_store = any_repo.store("ints", codec=ints)
    int_store.set("n", 2**40)
    assert int_store.get("n") == 2**40


def test_test_and_set(any_repo: Repo) -> None:
    store = any_repo.store()
    assert store.test_and_set("k", None, b"v1")
    assert not store.test_and_set("k", None, b"v2")
    assert store.get("k") == b"v1"
    assert store.test_and_set("k", b"v1", b"v2")
    assert store.test_and_set("k", b"v2", None)
    assert store.find("k") is None


def test_tree_and_set_tree(any_repo: Repo) -> None:
    store = any_repo.store()
    store.set_tree("site", {"index.html": b"<p>hi", "css/a.css": b"p{}"})
    tree = store.tree("site")
    assert tree is not None
    assert tree.to_dict() == {"index.html": b"<p>hi", "css/a.css": b"p{}"}
    store.set_tree("copy", tree)
    assert store.get("copy/css/a.css") == b"p{}"
    store.set_tree("site", None)
    assert store.tree("site") is None
    assert store.get("copy/index.html") == b"<p>hi"


def test_last_modified_and_diff(any_repo: Repo) -> None:
    store = any_repo.store()
    first = store.set("a", b"1")
    second = store.set("b", b"2")
    third = store.set("a", b"3")
    assert [info.id for info in store.last_modified("a", limit=5)] == [third, first]
    assert [info.id for info in store.last_modified("b")] == [second]
    changes = store.diff(first, third)
    assert [(c.path, c.old, c.new) for c in changes] == [(("a",), b"1", b"3"), (("b",), None, b"2")]


def test_detached_store_is_read_only(any_repo: Repo) -> None:
    store = any_repo.store()
    first = store.set("a", b"1")
    store.set("a", b"2")
    old = any_repo.at(first)
    assert old.get("a") == b"1"
    with pytest.raises(ReadOnlyStore):
        old.set("a", b"3")


def test_with_tree_commits_once(any_repo: Repo) -> None:
    store = any_repo.store()
    with store.with_tree("batch") as tx:
        for i in range(10):
            tx.set(f"d/{i}", b"%d" % i)
        assert tx.get("d/3") == b"3"
        tx.remove("d/9")
    assert len(store.history()) == 1
    assert [name for name, _ in store.list("d")] == [str(i) for i in range(9)]


def test_with_tree_snapshot_isolation_and_strategies(any_repo: Repo) -> None:
    store = any_repo.store()
    store.set("shared", b"base")
    other = any_repo.store()
    with store.with_tree("tx merge", strategy="merge") as tx:
        other.set("theirs", b"t")
        assert tx.find("theirs") is None  # the snapshot does not see it
        tx.set("ours", b"o")
    assert store.get("theirs") == b"t" and store.get("ours") == b"o"

    with pytest.raises(RefChanged), store.with_tree("tx cas", strategy="test_and_set") as tx:
        other.set("again", b"x")
        tx.set("lost", b"y")
    assert store.find("lost") is None

    with pytest.raises(MergeFailed) as failure, store.with_tree("tx conflict") as tx:
        other.set("shared", b"theirs")
        tx.set("shared", b"ours")
    assert store.get("shared") == b"theirs"
    assert failure.value.conflicts[0].path == ("shared",)


def test_clone_merge_and_fast_forward(any_repo: Repo) -> None:
    main = any_repo.store()
    main.set("a", b"1")
    feature = main.clone("feature")
    feature.set("b", b"2")
    result = main.merge("feature")
    assert result.fast_forward and main.head == feature.head
    feature.set("c", b"3")
    main.set("d", b"4")
    result = feature.merge_into(main)
    assert result.ok and not result.fast_forward
    assert main.get("c") == b"3" and main.get("d") == b"4"
    assert len(any_repo.commit_info(main.head or "").parents) == 2
    assert any_repo.branches() == ["feature", "main"]


def test_conflicts_are_listed_and_resolved(any_repo: Repo) -> None:
    main = any_repo.store()
    main.set("k", b"base")
    other = main.clone("other")
    main.set("k", b"ours")
    other.set("k", b"theirs")
    head_before = main.head
    result = main.merge("other")
    assert not result.ok and result.commit is None
    assert main.head == head_before
    (conflict,) = result.conflicts
    assert (conflict.path, conflict.base, conflict.ours, conflict.theirs) == (
        ("k",),
        b"base",
        b"ours",
        b"theirs",
    )
    commit = main.resolve(result, {("k",): b"both"})
    assert main.get("k") == b"both"
    assert len(any_repo.commit_info(commit).parents) == 2


def test_merge_functions_by_path(any_repo: Repo) -> None:
    choose = mf.by_path({("counters",): mf.counter, ("tags",): mf.set_union}, mf.default)
    main = any_repo.store(codec=JSON, merge=choose, by_path=True)
    main.set("counters/hits", 10)
    main.set("tags/t", ["a"])
    other = main.clone("other")
    main.set("counters/hits", 15)
    other.set("counters/hits", 12)
    main.set("tags/t", ["a", "b"])
    other.set("tags/t", ["c"])
    result = main.merge("other")
    assert result.ok
    assert main.get("counters/hits") == 17
    assert main.get("tags/t") == ["b", "c"]


def test_file_versus_directory_conflict_keeps_both(any_repo: Repo) -> None:
    main = any_repo.store()
    main.set("base", b"0")
    other = main.clone("other")
    main.set("x", b"file")
    other.set("x/y", b"inside")
    result = main.merge("other")
    (conflict,) = result.conflicts
    assert conflict.path == ("x",)
    assert conflict.ours == b"file"
    assert conflict.theirs.__class__.__name__ == "Directory"
    assert any_repo.store("other").get("x/y") == b"inside"


def test_criss_cross_merge(any_repo: Repo) -> None:
    # Two branches merge each other at the same time: two lowest common
    # ancestors, merged recursively into a virtual base.
    a = any_repo.store("a")
    a.set("k", b"0")
    a.set("shared", b"s")
    b = a.clone("b")
    a.set("ka", b"a1")
    b.set("kb", b"b1")
    a_head, b_head = a.head, b.head
    assert a.merge("b").ok
    any_repo.set_head("tmp", b_head)
    tmp = any_repo.store("tmp")
    assert tmp.merge(a_head or "").ok
    any_repo.set_head("b", tmp.head)
    any_repo.remove_branch("tmp")
    from looming.store.treemerge import lowest_common_ancestors

    bases = lowest_common_ancestors(any_repo.db, any_repo.resolve("a"), any_repo.resolve("b"))
    assert len(bases) == 2
    a.set("k", b"from a")
    b.set("shared", b"from b")
    result = a.merge("b")
    assert result.ok
    assert a.get("k") == b"from a" and a.get("shared") == b"from b"
    assert a.get("ka") == b"a1" and a.get("kb") == b"b1"


def test_async_form(any_repo: Repo) -> None:
    import asyncio

    async def main() -> None:
        store = any_repo.store(codec=JSON).aio
        await store.set("a", {"n": 1})
        assert await store.get("a") == {"n": 1}
        assert await store.find("b") is None
        async with store.with_tree("two at once") as tx:
            tx.set("b", 2)
            tx.set("c", 3)
        assert [name for name, _ in await store.list()] == ["a", "b", "c"]
        assert await store.test_and_set("b", 2, 20)
        other = await store.clone("other")
        await other.set("d", 4)
        assert (await store.merge("other")).fast_forward
        assert len(await store.history()) == 4
        with pytest.raises(RuntimeError):
            async with store.with_tree("aborted") as tx:
                tx.set("e", 5)
                raise RuntimeError("abort")
        assert await store.find("e") is None

    asyncio.run(main())


def test_merge_across_repositories_is_refused(any_repo: Repo) -> None:
    from looming.store.errors import StoreError

    other = Repo.memory(clock=UnixClock()).store()
    other.set("k", b"v")
    any_repo.store().set("a", b"1")
    with pytest.raises(StoreError, match="another repository"):
        any_repo.store().merge(other)
