"""The hostile library's calls in an aarch64 caller (run under qemu user emulation).

``python -m tests.ffi.hostile_aarch64 LIBDIR HELPER_PYTHON`` prints, as JSON,
the warnings of the default confinement and what each hostile call gave.
The tests run it inside a throwaway PID namespace beside a bystander.
"""

from __future__ import annotations

import ctypes
import json
import platform
import sys
import warnings
from pathlib import Path

from looming.ffi import HelperError
from looming.ffi.isolated import IsolatedLibrary
from looming.unix.time import UnixTime
from tests.ffi.hostile import hostile_bindings

CALLS = ("null_deref", "sleep_long", "open_shadow", "kill_parent", "kill_everyone", "big_malloc")


def main(directory: Path, helper_python: str) -> dict[str, object]:
    # The sysroot lacks libgcc_s, which glibc needs when a thread exits (the
    # call watch's, at close); loaded now, from the cross compiler's copy.
    ctypes.CDLL("/usr/aarch64-linux-gnu/lib/libgcc_s.so.1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        library = IsolatedLibrary(
            hostile_bindings(directory), python=helper_python, timeout=3, time=UnixTime()
        )
    outcomes: dict[str, object] = {"machine": platform.machine(), "warnings": library.warnings}
    try:
        for name in CALLS:
            try:
                outcomes[name] = library[name]()
            except HelperError as exc:
                outcomes[name] = type(exc).__name__ + (
                    f":{exc.signal}" if getattr(exc, "signal", None) else ""
                )
            try:
                outcomes[f"{name} then"] = library.add(2, 3)
            except HelperError:  # it took its own helper down: one restart
                outcomes[f"{name} then"] = library.add(2, 3)
    finally:
        library.close()
    return outcomes


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2])))
