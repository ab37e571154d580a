"""FFI benchmark: nanoseconds per call, looming's backends beside hand-written bindings.

Three calls, each through every way of making it:

* ``abs(int)`` from the C library: a trivial function, so the figure is the
  per-call overhead of the binding itself;
* zlib's ``crc32`` over 56 bytes (the issue's measure);
* zlib's ``crc32`` over 64 KiB (buffer-heavy: what copying costs).

The ways: Python's ``zlib`` module (crc32 only), ctypes written by hand,
cffi API mode written by hand, a hand-written helper process answering
crc32 over an AF_UNIX socketpair (the floor for any out-of-process call from
Python), and looming's dynamic, compiled and isolated
backends (the isolated one confined as by default and unconfined, over a
socketpair, and over vchan when ``looming.vchan`` is present). The time a
killed helper takes to be replaced is measured too, confined and not. Ratios are against the hand-written ctypes
and cffi of the same run. In-process ways are timed in the calling thread's
CPU time, the isolated backend on the wall clock (its cost is the helper's
and the waiting); rounds interleave the ways and each figure is the best.

    python bench/ffi.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import sys
import time
import zlib as stdlib_zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from looming.ffi import Bindings, Buffer, Confinement, c_int, c_uint, c_ulong, foreign, link
from looming.ffi.isolated import Limits
from looming.ffi.probe import cache_dir
from looming.unix.time import UnixTime


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def write_json(path: str, payload: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
    progress(f"wrote {path}")


bench_bindings = Bindings(
    "bench",
    library="z",
    soname="libz.so.1",
    headers=["zlib.h", "stdlib.h"],
    functions=[
        foreign(
            "crc32",
            [("crc", c_ulong), ("buf", Buffer("const unsigned char *")), ("len", c_uint)],
            c_ulong,
        ),
    ],
)
libc_bindings = Bindings(
    "benchlibc",
    library="c",
    soname="libc.so.6",
    headers=["stdlib.h"],
    functions=[foreign("abs", [("value", c_int)], c_int)],
)


def hand_cffi() -> Any:
    """A cffi API-mode module written the usual way (built once, cached)."""
    import cffi

    directory = cache_dir() / "bench"
    directory.mkdir(parents=True, exist_ok=True)
    name = "_looming_bench_hand_cffi_v1"
    built = list(directory.glob(f"{name}*.so"))
    if not built:
        progress("building the hand-written cffi module")
        ffi = cffi.FFI()
        ffi.cdef(
            "unsigned long crc32(unsigned long, const unsigned char *, unsigned int);int abs(int);"
        )
        ffi.set_source(name, "#include <zlib.h>\n#include <stdlib.h>", libraries=["z"])
        ffi.compile(tmpdir=str(directory), verbose=False)
        built = list(directory.glob(f"{name}*.so"))
    spec = importlib.util.spec_from_file_location(name, built[0])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RAW_HELPER = r"""
import ctypes, socket, struct, sys
channel = socket.socket(fileno=int(sys.argv[1]))
crc32 = ctypes.CDLL("libz.so.1").crc32
crc32.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_uint]
crc32.restype = ctypes.c_ulong
while True:
    header = channel.recv(4, socket.MSG_WAITALL)
    if len(header) < 4:
        break
    (length,) = struct.unpack("<I", header)
    data = channel.recv(length, socket.MSG_WAITALL) if length else b""
    channel.sendall(struct.pack("<Q", crc32(0, data, len(data))))
"""


class RawHelper:
    """The hand-written baseline of the isolated backend: crc32 in a child over AF_UNIX."""

    def __init__(self) -> None:
        import socket
        import subprocess

        self.ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-c", RAW_HELPER, str(theirs.fileno())], pass_fds=(theirs.fileno(),)
        )
        theirs.close()

    def crc32(self, data: bytes) -> int:
        import socket
        import struct

        self.ours.sendall(struct.pack("<I", len(data)) + data)
        (value,) = struct.unpack("<Q", self.ours.recv(8, socket.MSG_WAITALL))
        return int(value)

    def close(self) -> None:
        self.ours.close()
        self.process.wait()


def per_call_ns(call: Callable[[], object], iterations: int, cpu: bool) -> float:
    """Mean time of one call, in nanoseconds.

    In-process ways are timed in this thread's CPU time: on a shared, loaded
    machine the time other processes take the CPU away is not theirs. The
    isolated backend's cost is mostly the helper's and the waiting, so it is
    timed on the wall clock.
    """
    clock = time.thread_time_ns if cpu else time.perf_counter_ns
    started = clock()
    for _ in range(iterations):
        call()
    return (clock() - started) / iterations


def restart_times(count: int) -> dict[str, tuple[float, float]]:
    """Seconds from a helper's death to the next call's answer (median, best), per confinement.

    The helper is killed between calls; the next call starts a new one
    (a new interpreter, the library linked, then each layer applied).
    """
    import os
    import signal
    import statistics

    found: dict[str, tuple[float, float]] = {}
    options: dict[str, dict[str, Any]] = {
        "confined (default)": {},
        "unconfined": {"confinement": Confinement.none(), "limits": Limits.none()},
    }
    libraries = {
        name: link(libc_bindings, "isolated", **extra, time=UnixTime())
        for name, extra in options.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in options}
    for _ in range(count):
        for name, library in libraries.items():  # interleaved
            pid = library.helper_pid
            os.kill(pid, signal.SIGKILL)
            try:
                library.abs(-1)
            except Exception:
                pass
            started = time.perf_counter()
            assert library.abs(-2) == 2
            samples[name].append(time.perf_counter() - started)
    for name, library in libraries.items():
        library.close()
        found[name] = (statistics.median(samples[name]), min(samples[name]))
    return found


def versions() -> str:
    import platform

    import cffi

    libz = ctypes.CDLL("libz.so.1")
    libz.zlibVersion.restype = ctypes.c_char_p
    return (
        f"Python {platform.python_version()}, cffi {cffi.__version__}, "
        f"zlib {libz.zlibVersion().decode()}, Linux {platform.release()}"
    )


Way = tuple[str, Callable[[], object] | None, Callable[[], object], Callable[[], object], bool]
"""(name, abs() call or None, crc32 of 56 B, crc32 of 64 KiB, whether it is slow)."""
Pair = tuple[Any, Any]
"""A backend's zlib and libc libraries."""


def hand_ways(small: bytes, big: bytes) -> tuple[list[Way], RawHelper]:
    """The ways written by hand (and the stdlib's zlib), checked once; and
    the hand-written helper, to be closed."""
    libz = ctypes.CDLL("libz.so.1")
    ctypes_crc32 = libz.crc32
    ctypes_crc32.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_uint]
    ctypes_crc32.restype = ctypes.c_ulong
    libc = ctypes.CDLL("libc.so.6")
    ctypes_abs = libc.abs
    ctypes_abs.argtypes = [ctypes.c_int]
    ctypes_abs.restype = ctypes.c_int
    cffi_lib = hand_cffi().lib
    raw_helper = RawHelper()
    raw_crc32 = raw_helper.crc32
    assert raw_crc32(small) == stdlib_zlib.crc32(small)
    # Every way calls a function object bound beforehand, so no way pays an
    # attribute lookup the others do not.
    cffi_crc32, cffi_abs = cffi_lib.crc32, cffi_lib.abs
    stdlib_crc32 = stdlib_zlib.crc32
    assert ctypes_crc32(0, small, 56) == cffi_lib.crc32(0, small, 56) == stdlib_crc32(small)
    ways: list[Way] = [
        ("stdlib zlib", None, lambda: stdlib_crc32(small), lambda: stdlib_crc32(big), False),
        (
            "ctypes (hand)",
            lambda: ctypes_abs(-5),
            lambda: ctypes_crc32(0, small, 56),
            lambda: ctypes_crc32(0, big, 65536),
            False,
        ),
        (
            "cffi API (hand)",
            lambda: cffi_abs(-5),
            lambda: cffi_crc32(0, small, 56),
            lambda: cffi_crc32(0, big, 65536),
            False,
        ),
        (
            "helper over AF_UNIX (hand)",
            None,
            lambda: raw_crc32(small),
            lambda: raw_crc32(big),
            True,
        ),
    ]
    return ways, raw_helper


def looming_links() -> tuple[dict[str, Pair], Pair | None]:
    """Each backend's libraries (the isolated one also unconfined), and the
    isolated backend over vchan when it can be had."""
    looming: dict[str, Pair] = {}
    for backend in ("dynamic", "compiled", "isolated"):
        looming[backend] = (
            link(bench_bindings, backend, time=UnixTime()),
            link(libc_bindings, backend, time=UnixTime()),
        )
    # The isolated backend without confinement: what the layers cost.
    bare = {"confinement": Confinement.none(), "limits": Limits.none(), "timeout": None}
    looming["isolated unconfined"] = (
        link(bench_bindings, "isolated", **bare, time=UnixTime()),
        link(libc_bindings, "isolated", **bare, time=UnixTime()),
    )
    vchan_pair: Pair | None = None
    if importlib.util.find_spec("looming.vchan") is not None:
        try:
            from looming.ffi.vchan_transport import VchanTransport

            vchan_pair = (
                link(
                    bench_bindings,
                    "isolated",
                    transport=VchanTransport(time=UnixTime()),
                    time=UnixTime(),
                ),
                link(
                    libc_bindings,
                    "isolated",
                    transport=VchanTransport(time=UnixTime()),
                    time=UnixTime(),
                ),
            )
        except Exception as exc:  # report and go on without it
            progress(f"isolated over vchan unavailable: {exc}")
    return looming, vchan_pair


def looming_ways(
    looming: dict[str, Pair], vchan_pair: Pair | None, small: bytes, big: bytes
) -> list[Way]:
    """looming's ways, each checked once against the stdlib's answers."""
    expected_small, expected_big = stdlib_zlib.crc32(small), stdlib_zlib.crc32(big)
    named = [
        *((f"looming {backend}", pair) for backend, pair in looming.items()),
        *([("looming isolated (vchan)", vchan_pair)] if vchan_pair else []),
    ]
    ways: list[Way] = []
    for name, (z, c) in named:
        assert z.crc32(0, small, 56) == expected_small, name
        assert z.crc32(0, big, 65536) == expected_big, name
        assert c.abs(-5) == 5, name
        ways.append(
            (
                name,
                lambda f=c.abs: f(-5),
                lambda f=z.crc32: f(0, small, 56),
                lambda f=z.crc32: f(0, big, 65536),
                name.startswith("looming isolated"),
            )
        )
    return ways


def measure(
    ways: list[Way], repeats: int, fast_iterations: int, slow_iterations: int
) -> dict[str, dict[str, float | None]]:
    """Nanoseconds per call of each way, the best of ``repeats`` rounds.

    Rounds interleave the ways, so a burst of load elsewhere on a shared
    machine hits all of them alike.
    """
    results: dict[str, dict[str, float | None]] = {
        name: {"abs_ns": None, "crc32_56B_ns": None, "crc32_64KiB_ns": None} for name, *_ in ways
    }

    def keep_best(figures: dict[str, float | None], key: str, value: float) -> None:
        current = figures[key]
        figures[key] = value if current is None else min(current, value)

    for round_number in range(repeats):
        progress(f"round {round_number + 1} of {repeats}")
        for name, trivial, crc_small, crc_big, slow in ways:
            iterations = slow_iterations if slow else fast_iterations
            figures = results[name]
            if trivial is not None:
                keep_best(figures, "abs_ns", per_call_ns(trivial, iterations, not slow))
            keep_best(figures, "crc32_56B_ns", per_call_ns(crc_small, iterations, not slow))
            keep_best(
                figures,
                "crc32_64KiB_ns",
                per_call_ns(crc_big, max(iterations // 20, 200), not slow),
            )
    return results


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or base is None else f"{value / base:.2f}x"


def ns(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.1f} us" if value >= 10_000 else f"{value:.0f} ns"


def print_results(results: dict[str, dict[str, float | None]]) -> None:
    """The figures, and each way's ratios to hand ctypes, hand cffi and the hand helper."""
    hand_ctypes = results["ctypes (hand)"]
    hand_cffi_figures = results["cffi API (hand)"]
    raw_figures = results["helper over AF_UNIX (hand)"]
    rows = []
    for name, figures in results.items():
        rows.append(
            [
                name,
                ns(figures["abs_ns"]),
                ns(figures["crc32_56B_ns"]),
                ns(figures["crc32_64KiB_ns"]),
                ratio(figures["abs_ns"], hand_ctypes["abs_ns"]),
                ratio(figures["crc32_56B_ns"], hand_ctypes["crc32_56B_ns"]),
                ratio(figures["abs_ns"], hand_cffi_figures["abs_ns"]),
                ratio(figures["crc32_56B_ns"], hand_cffi_figures["crc32_56B_ns"]),
                ratio(figures["crc32_64KiB_ns"], hand_cffi_figures["crc32_64KiB_ns"]),
                ratio(figures["crc32_56B_ns"], raw_figures["crc32_56B_ns"]),
            ]
        )
    print()
    print(versions())
    print(
        table(
            [
                "way",
                "abs()",
                "crc32 56 B",
                "crc32 64 KiB",
                "abs/ctypes",
                "56B/ctypes",
                "abs/cffi",
                "56B/cffi",
                "64K/cffi",
                "56B/helper",
            ],
            rows,
        )
    )


def goals_met(results: dict[str, dict[str, float | None]]) -> dict[str, bool]:
    def at_most(value: float | None, limit: float | None) -> bool:
        return value is not None and limit is not None and value <= limit

    def times(base: float | None, factor: float) -> float | None:
        return None if base is None else base * factor

    hand_ctypes = results["ctypes (hand)"]
    hand_cffi_figures = results["cffi API (hand)"]
    return {
        "dynamic within 1.2x of hand ctypes (crc32 56 B)": at_most(
            results["looming dynamic"]["crc32_56B_ns"], times(hand_ctypes["crc32_56B_ns"], 1.2)
        ),
        "compiled within 1.2x of hand cffi (crc32 56 B)": at_most(
            results["looming compiled"]["crc32_56B_ns"],
            times(hand_cffi_figures["crc32_56B_ns"], 1.2),
        ),
        "isolated at most 25 us (crc32 56 B)": at_most(
            results["looming isolated"]["crc32_56B_ns"], 25_000
        ),
        "confined isolated within 1.5x of unconfined (crc32 56 B)": at_most(
            results["looming isolated"]["crc32_56B_ns"],
            times(results["looming isolated unconfined"]["crc32_56B_ns"], 1.5),
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    options = parser.parse_args()
    small = bytes(range(56))
    big = bytes(range(256)) * 256  # 64 KiB
    assert len(big) == 65536

    progress(versions())
    progress("linking: hand ctypes, hand cffi, looming dynamic/compiled/isolated")
    ways, raw_helper = hand_ways(small, big)
    looming, vchan_pair = looming_links()
    ways += looming_ways(looming, vchan_pair, small, big)
    results = measure(
        ways,
        repeats=3 if options.quick else 15,
        fast_iterations=20_000 if options.quick else 40_000,
        slow_iterations=500 if options.quick else 1_500,
    )
    print_results(results)
    goals = goals_met(results)
    restarts = restart_times(3 if options.quick else 9)
    print()
    print(
        table(
            ["helper", "restart (median)", "restart (best)"],
            [
                [name, f"{median * 1e3:.1f} ms", f"{best * 1e3:.1f} ms"]
                for name, (median, best) in restarts.items()
            ],
        )
    )
    print()
    for goal, met in goals.items():
        print(f"{'met ' if met else 'MISSED'}  {goal}")

    for z, c in [*looming.values(), *([vchan_pair] if vchan_pair else [])]:
        z.close()
        c.close()
    raw_helper.close()
    if options.json:
        write_json(
            options.json,
            {"quick": options.quick, "results": results, "goals": goals, "restarts": restarts},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
