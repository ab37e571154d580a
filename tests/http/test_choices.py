"""Choosing the event loop (the unix target's --loop) and the request parser
(--http-parser), with and without uvloop and httptools installed."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from looming import event_loop
from looming.errors import UsageError
from looming.http import parser


def test_the_loops_each_choice_makes() -> None:
    assert event_loop.event_loop_factory("asyncio") is None
    for choice in ("auto", "uvloop"):
        factory = event_loop.event_loop_factory(choice)
        assert factory is not None
        loop = factory()
        try:
            assert isinstance(loop, uvloop.Loop)
        finally:
            loop.close()


def test_without_uvloop_auto_is_asyncio_and_uvloop_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_loop, "UVLOOP", "looming_no_such_loop")
    assert event_loop.event_loop_factory("auto") is None
    with pytest.raises(UsageError, match=r"pip install 'looming\[fast\]'"):
        event_loop.event_loop_factory("uvloop")
    with pytest.raises(UsageError, match="'trio' is not one of auto, asyncio, uvloop"):
        event_loop.event_loop_factory("trio")


def test_a_uvloop_loop_runs_a_coroutine() -> None:
    factory = event_loop.event_loop_factory("uvloop")
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(asyncio.sleep(0, "done")) == "done"
        assert isinstance(runner.get_loop(), uvloop.Loop)


def test_the_parser_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parser.chosen_parser("auto") == "httptools"
    assert parser.chosen_parser("h11") == "h11"
    monkeypatch.setattr(parser, "_found", [None])  # as if httptools were not installed
    assert parser.chosen_parser("auto") == "h11"
    with pytest.raises(ValueError, match=r"pip install 'looming\[fast\]'"):
        parser.chosen_parser("httptools")
    with pytest.raises(ValueError, match="'llhttp' is not one of auto, h11, httptools"):
        parser.chosen_parser("llhttp")
