"""Trees written by editing a base: big trees are re-encoded by editing the
base's cached encoding in place, so two edits of one base, edits of edits,
and edits that turn files into folders must each still encode exactly as git
orders a tree (compared with encoding the expected entries from scratch)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from looming.store.backend import MemoryBackend
from looming.store.objectdb import BIG_TREE, ObjectDb
from looming.store.objects import MODE_EXECUTABLE, MODE_FILE, MODE_TREE, encode_tree, hash_object
from looming.store.tree import WorkTree

Model = dict[tuple[str, ...], tuple[int, bytes]]

_NAMES = st.sampled_from([f"n{index:02d}" for index in range(BIG_TREE * 3)] + ["n0", "n0-", "n"])
_PATHS = st.one_of(
    st.tuples(_NAMES), st.tuples(_NAMES, _NAMES), st.tuples(st.sampled_from(["a", "b"]), _NAMES)
)
_EDITS = st.lists(
    st.tuples(_PATHS, st.sampled_from([MODE_FILE, MODE_EXECUTABLE, None]), st.binary(max_size=3)),
    max_size=12,
)


def _apply(
    work: WorkTree, model: Model, edits: list[tuple[tuple[str, ...], int | None, bytes]]
) -> None:
    for path, mode, data in edits:
        if mode is None:
            work.remove(path)
            for key in [key for key in model if key[: len(path)] == path]:
                del model[key]
            continue
        blob = work.db.write_blob(data)
        work.set_blob(path, blob, mode)
        # A file replaces a folder of that name, and a folder a file.
        for key in [key for key in model if key[: len(path)] == path or path[: len(key)] == key]:
            del model[key]
        model[path] = (mode, blob)


def _expected_id(db: ObjectDb, model: Model, prefix: tuple[str, ...] = ()) -> bytes:
    entries: dict[bytes, tuple[int, bytes]] = {}
    folders = {
        key[len(prefix)]
        for key in model
        if key[: len(prefix)] == prefix and len(key) > len(prefix) + 1
    }
    for key, entry in model.items():
        if key[: len(prefix)] == prefix and len(key) == len(prefix) + 1:
            entries[key[-1].encode()] = entry
    for folder in folders:
        entries[folder.encode()] = (MODE_TREE, _expected_id(db, model, (*prefix, folder)))
    return hash_object("tree", encode_tree(entries))


@settings(derandomize=True, max_examples=150, deadline=None)
@given(base=_EDITS, first=_EDITS, second=_EDITS, again=_EDITS)
def test_edited_trees_encode_as_if_written_whole(
    base: list[tuple[tuple[str, ...], int | None, bytes]],
    first: list[tuple[tuple[str, ...], int | None, bytes]],
    second: list[tuple[tuple[str, ...], int | None, bytes]],
    again: list[tuple[tuple[str, ...], int | None, bytes]],
) -> None:
    db = ObjectDb(MemoryBackend())
    # A big base, so its folders and root are edited through their encodings.
    seed = [((f"n{index:02d}",), MODE_FILE, b"%d" % index) for index in range(BIG_TREE + 2)]
    seed += [(("a", f"n{index:02d}"), MODE_FILE, b"a%d" % index) for index in range(BIG_TREE + 2)]
    model: Model = {}
    work = WorkTree(db, None)
    _apply(work, model, seed + base)
    root = work.write()
    assert root == _expected_id(db, model)
    # Two edits of the same base, then an edit of the first's result.
    results = []
    for edits in (first, second):
        branch = dict(model)
        work = WorkTree(db, root)
        _apply(work, branch, edits)
        tree_id = work.write()
        assert tree_id == _expected_id(db, branch)
        results.append((tree_id, branch))
    tree_id, branch = results[0]
    work = WorkTree(db, tree_id)
    _apply(work, branch, again)
    assert work.write() == _expected_id(db, branch)
    # The same WorkTree edited again after a write keeps encoding right.
    _apply(work, branch, second)
    assert work.write() == _expected_id(db, branch)
