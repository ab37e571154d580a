"""The host folder key-value store against a model of values and dictionaries.

Random sequences of set, remove, rename, get and list, including the edge
cases (renames onto themselves, into themselves, below a value, of the
root) run against :class:`DirectoryKvRw` and a model; after every step the
folder holds exactly the model's values and dictionaries, and every error
is the interface's (never a bare ``OSError``, never a lost value).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from looming.devices import EntryKind
from looming.errors import DeviceError, KeyNotFound, NotAValue
from looming.unix.kv import DirectoryKvRw

Key = tuple[str, ...]

keys = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(tuple)
values = st.binary(max_size=8)


def text(key: Key) -> str:
    return "/".join(key)


def below(key: Key, top: Key) -> bool:
    return key[: len(top)] == top


class Model:
    def __init__(self) -> None:
        self.values: dict[Key, bytes] = {}
        self.dicts: set[Key] = set()

    def has(self, key: Key) -> bool:
        return key in self.values or key in self.dicts

    def under_a_value(self, key: Key) -> bool:
        return any(key[:n] in self.values for n in range(1, len(key)))

    def make_parents(self, key: Key) -> None:
        self.dicts.update(key[:n] for n in range(1, len(key)))

    def drop(self, top: Key) -> None:
        self.values = {k: v for k, v in self.values.items() if not below(k, top)}
        self.dicts = {k for k in self.dicts if not below(k, top)}

    def move(self, source: Key, dest: Key) -> None:
        moved = {dest + k[len(source) :]: v for k, v in self.values.items() if below(k, source)}
        folders = {dest + k[len(source) :] for k in self.dicts if below(k, source)}
        self.drop(source)
        self.drop(dest)
        self.make_parents(dest)
        self.values.update(moved)
        self.dicts.update(folders)


class KvMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="looming-kv-model-"))
        self.loop = asyncio.new_event_loop()
        self.kv = DirectoryKvRw(self.folder / "kv")
        self.model = Model()

    def teardown(self) -> None:
        self.loop.close()
        shutil.rmtree(self.folder)

    def run(self, coroutine: object) -> object:
        return self.loop.run_until_complete(coroutine)  # type: ignore[arg-type]

    def fails(self, error: type[Exception], coroutine: object) -> None:
        try:
            self.run(coroutine)
        except error:
            return
        raise AssertionError(f"expected {error.__name__}")

    @rule(key=keys, value=values)
    def set(self, key: Key, value: bytes) -> None:
        model = self.model
        if key in model.dicts or model.under_a_value(key):
            self.fails(NotAValue, self.kv.set(text(key), value))
            return
        self.run(self.kv.set(text(key), value))
        model.make_parents(key)
        model.values[key] = value

    @rule(key=keys)
    def remove(self, key: Key) -> None:
        self.run(self.kv.remove(text(key)))
        self.model.drop(key)

    @rule(source=keys, dest=keys)
    def rename(self, source: Key, dest: Key) -> None:
        model = self.model
        call = self.kv.rename(text(source), text(dest))
        if not model.has(source):
            self.fails(KeyNotFound, call)
        elif below(dest, source) and dest != source:
            self.fails(DeviceError, call)
        elif dest != source and model.under_a_value(dest):
            self.fails(NotAValue, call)
        else:
            self.run(call)
            if dest != source:
                model.move(source, dest)

    @rule(source=keys)
    def rename_the_root(self, source: Key) -> None:
        self.fails(DeviceError, self.kv.rename("", text(source)))
        self.fails(DeviceError, self.kv.rename(text(source), ""))

    @rule(key=keys)
    def get(self, key: Key) -> None:
        model = self.model
        if key in model.values:
            assert self.run(self.kv.get(text(key))) == model.values[key]
        elif key in model.dicts:
            self.fails(NotAValue, self.kv.get(text(key)))
        else:
            self.fails(KeyNotFound, self.kv.get(text(key)))

    @invariant()
    def folder_holds_the_model(self) -> None:
        values: dict[Key, bytes] = {}
        dicts: set[Key] = set()
        pending: list[Key] = [()]
        while pending:
            top = pending.pop()
            listing = self.run(self.kv.list(text(top)))
            assert isinstance(listing, list)
            for name, kind in listing:
                key = (*top, name)
                if kind is EntryKind.DICTIONARY:
                    dicts.add(key)
                    pending.append(key)
                else:
                    values[key] = self.run(self.kv.get(text(key)))  # type: ignore[assignment]
        assert values == self.model.values
        assert dicts == self.model.dicts


TestDirectoryKvRw = KvMachine.TestCase
TestDirectoryKvRw.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
