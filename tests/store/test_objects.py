"""Git's object encoding: ids match what ``git`` computes; parsing round-trips."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from looming.errors import Malformed
from looming.store.objects import (
    MODE_FILE,
    MODE_TREE,
    Commit,
    Identity,
    encode_tree,
    hash_object,
    parse_loose,
    parse_tree,
)

from .conftest import run_git

names = st.binary(min_size=1, max_size=12).filter(lambda n: b"/" not in n and b"\0" not in n)
ids = st.binary(min_size=20, max_size=20)
modes = st.sampled_from([MODE_FILE, MODE_TREE, 0o100755, 0o120000])


def test_blob_id_matches_git(tmp_path: Path) -> None:
    data = b"hello, store\n"
    (tmp_path / "f").write_bytes(data)
    expected = run_git("hash-object", "f", cwd=tmp_path).strip()
    assert hash_object("blob", data).hex() == expected


@given(st.dictionaries(names, st.tuples(modes, ids), max_size=20))
def test_tree_encoding_round_trips(entries: dict[bytes, tuple[int, bytes]]) -> None:
    assert parse_tree(encode_tree(entries)) == entries


def test_tree_order_is_gits(tmp_path: Path) -> None:
    # A directory "a" sorts as "a/", after "a.txt"; a file "a" would sort first.
    blob = hash_object("blob", b"x")
    entries = {b"a": (MODE_TREE, hash_object("tree", b"")), b"a.txt": (MODE_FILE, blob)}
    body = encode_tree(entries)
    assert body.index(b"a.txt") < body.index(b"40000 a\0")
    tree_id = hash_object("tree", body).hex()
    run_git("init", "-q", cwd=tmp_path)
    listing = run_git(
        "mktree",
        "--missing",
        cwd=tmp_path,
        input=(
            f"040000 tree {entries[b'a'][1].hex()}\ta\n100644 blob {blob.hex()}\ta.txt\n".encode()
        ),
    )
    assert listing.strip() == tree_id


@given(
    st.text(min_size=0, max_size=40).filter(
        lambda t: "<" not in t and ">" not in t and "\n" not in t
    ),
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
    st.text(max_size=200),
    st.lists(ids, max_size=3),
)
def test_commit_round_trips(
    name: str, when: int, offset: int, message: str, parents: list[bytes]
) -> None:
    who = Identity(name.strip(), "a@b.c", when, offset)
    commit = Commit(b"\x01" * 20, tuple(parents), who, who, message)
    assert Commit.parse(commit.encode()) == commit


@pytest.mark.parametrize(
    "body",
    [b"100644 a", b"100644 a\0short", b"zz a\0" + b"\0" * 20, b"100644 \0" + b"\0" * 20],
)
def test_bad_trees_are_malformed(body: bytes) -> None:
    with pytest.raises(Malformed):
        parse_tree(body)


@pytest.mark.parametrize("data", [b"blob 5\0abc", b"nope 3\0abc", b"no header"])
def test_bad_loose_objects_are_malformed(data: bytes) -> None:
    with pytest.raises(Malformed):
        parse_loose(data)


@given(st.binary(max_size=200))
def test_parsers_raise_only_malformed(data: bytes) -> None:
    for parse in (parse_tree, parse_loose, Commit.parse):
        try:
            parse(data)
        except Malformed:
            pass


@given(st.one_of(st.binary(max_size=2000), st.integers(0, 140_000).map(lambda n: bytes(n))))
def test_stored_zlib_inflates_to_its_input(data: bytes) -> None:
    from looming.store.pack import stored_zlib

    inflater = zlib.decompressobj()
    assert inflater.decompress(stored_zlib(data)) == data
    assert inflater.eof and not inflater.unused_data
    if len(data) < 60_000:
        assert stored_zlib(data) == zlib.compress(data, 0)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["blob", "tree", "commit", "tag"]),
            st.one_of(st.binary(max_size=3000), st.integers(0, 20_000).map(lambda n: b"x" * n)),
        ),
        max_size=12,
    ),
    st.sampled_from([0, 1, 6]),
)
def test_a_pack_of_pending_objects_reads_back(objects: list[tuple[str, bytes]], level: int) -> None:
    """The pack of a writer's pending objects (held by id) is the pack of
    the same objects listed, and every object reads back from it."""
    from looming.store.pack import build_pack, build_pack_of, read_pack

    pending = {hash_object(kind, body): (kind, body) for kind, body in objects}
    listed = [(oid, kind, body) for oid, (kind, body) in pending.items()]
    packed = build_pack_of(pending, level)
    assert packed == build_pack(listed, level)
    assert list(read_pack(packed[0])) == list(pending.values())
