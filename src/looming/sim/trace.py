"""The trace of a run: every event that matters, in order, with its virtual time.

Two runs with the same seed produce the same trace line for line, so its
digest proves a replay exact and the first differing line names where two
runs part ways. Text that would differ between processes for no reason
(object addresses in reprs) is scrubbed before it is recorded.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable

from looming.errors import NotReplayable

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def scrub(text: str) -> str:
    """``text`` without the object addresses that differ from process to process."""
    return _ADDRESS.sub("", text)


class Trace:
    """An append-only list of events, digested as it grows."""

    def __init__(self, now_ns: Callable[[], int], *, keep: bool = True) -> None:
        self._now_ns = now_ns
        self._digest = hashlib.sha256()
        self.keep = keep
        self.events: list[str] = []
        self.count = 0

    def record(self, kind: str, text: str) -> None:
        line = f"{self._now_ns():015d} {kind} {text}"
        self._digest.update(line.encode("utf-8", "surrogateescape") + b"\n")
        self.count += 1
        if self.keep:
            self.events.append(line)

    def digest(self) -> str:
        return self._digest.hexdigest()


class TraceLogHandler(logging.Handler):
    """Sends log records emitted during a run to the trace (and a listing),
    labelled with the node whose code logged them."""

    def __init__(self, trace: Trace, label: Callable[[], str], level: int) -> None:
        super().__init__(level)
        self._trace = trace
        self._label = label
        self.lines: list[str] = []
        # Errors logged because something in the run could not be replayed.
        self.not_replayable: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        text = scrub(f"{self._label()} {record.levelname.lower()} {record.name}: {message}")
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text += scrub(f" [{type(error).__name__}: {error}]")
            if isinstance(error, NotReplayable):
                self.not_replayable.append(f"{self._label()}: {error}")
        self._trace.record("log", text)
        self.lines.append(text)
