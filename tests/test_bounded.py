"""looming.bounded against simple models: never above the bound, a hit
returns what was stored, and each policy forgets what it says it forgets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from looming.bounded import LruMemo, Memo

KEYS = st.integers(min_value=0, max_value=12)
VALUES = st.integers()


class MemoMachine(RuleBasedStateMachine):
    """Memo beside a dict that is emptied when a new key meets a full one."""

    @initialize(bound=st.integers(min_value=1, max_value=6))
    def start(self, bound: int) -> None:
        self.memo: Memo[int, int] = Memo(bound)
        self.model: dict[int, int] = {}
        self.bound = bound

    @rule(key=KEYS, value=VALUES)
    def put(self, key: int, value: int) -> None:
        if len(self.model) >= self.bound and key not in self.model:
            self.model.clear()
        self.model[key] = value
        assert self.memo.put(key, value) == value

    @rule(key=KEYS, value=VALUES)
    def get_or_make(self, key: int, value: int) -> None:
        made: list[int] = []

        def make(k: int) -> int:
            made.append(k)
            return value

        expected = self.model.get(key)
        got = self.memo.get_or_make(key, make)
        if expected is None:
            assert made == [key] and got == value
            self.put(key, value)  # the model stores it the same way
        else:
            assert made == [] and got == expected

    @rule(key=KEYS)
    def get(self, key: int) -> None:
        assert self.memo.get(key) == self.model.get(key)
        assert (key in self.memo) == (key in self.model)

    @rule()
    def clear(self) -> None:
        self.memo.clear()
        self.model.clear()

    @invariant()
    def bounded(self) -> None:
        assert len(self.memo) == len(self.model) <= self.bound


class LruMachine(RuleBasedStateMachine):
    """LruMemo beside a list of keys, least recently used first."""

    @initialize(bound=st.integers(min_value=1, max_value=6))
    def start(self, bound: int) -> None:
        self.memo: LruMemo[int, int] = LruMemo(bound)
        self.order: list[int] = []
        self.values: dict[int, int] = {}
        self.bound = bound

    def _touch(self, key: int) -> None:
        if key in self.order:
            self.order.remove(key)
        self.order.append(key)

    @rule(key=KEYS, value=VALUES)
    def put(self, key: int, value: int) -> None:
        assert self.memo.put(key, value) == value
        self._touch(key)
        self.values[key] = value
        while len(self.order) > self.bound:
            del self.values[self.order.pop(0)]

    @rule(key=KEYS)
    def get(self, key: int) -> None:
        assert self.memo.get(key) == self.values.get(key)
        if key in self.values:
            self._touch(key)

    @rule(key=KEYS, value=VALUES)
    def get_or_make(self, key: int, value: int) -> None:
        held = key in self.values
        got = self.memo.get_or_make(key, lambda _k: value)
        if held:
            assert got == self.values[key]
            self._touch(key)
        else:
            assert got == value
            self._touch(key)
            self.values[key] = value
            while len(self.order) > self.bound:
                del self.values[self.order.pop(0)]

    @invariant()
    def same_order(self) -> None:
        assert self.memo.keys() == self.order
        assert len(self.memo) <= self.bound


TestMemo = MemoMachine.TestCase
TestMemo.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestLru = LruMachine.TestCase
TestLru.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


@given(st.lists(st.tuples(KEYS, VALUES), max_size=60), st.integers(min_value=1, max_value=5))
def test_memo_get_is_the_dicts_own_and_survives_clearing(
    pairs: list[tuple[int, int]], bound: int
) -> None:
    memo: Memo[int, int] = Memo(bound)
    get = memo.get
    for key, value in pairs:
        memo.put(key, value)
        assert get(key) == value  # the bound method kept across clears still sees the entries
        assert len(memo) <= bound


def test_lru_forgets_the_least_recently_read() -> None:
    memo: LruMemo[str, int] = LruMemo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    assert memo.get("a") == 1  # "b" is now the least recent
    memo.put("c", 3)
    assert memo.get("b") is None
    assert memo.keys() == ["a", "c"]


@pytest.mark.parametrize("cls", [Memo, LruMemo])
def test_bound_below_one_is_refused(cls: type[Memo[int, int]] | type[LruMemo[int, int]]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        cls(0)
