"""The isolated backend: crashes stay in the helper, restarts follow the policy."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from looming.ffi import (
    HelperCrashed,
    HelperUnavailable,
    LinkedLibrary,
    Ref,
    StaleHandle,
    link,
    seccomp,
)
from looming.ffi.channel import Channel, SocketpairTransport, default_transport
from looming.ffi.isolated import IsolatedLibrary, Limits, RestartPolicy
from looming.ffi.libs.crypt import crypt
from looming.ffi.libs.libc import libc
from looming.ffi.libs.sqlite3 import SQLITE_OK, sqlite3
from looming.ffi.seccomp import SeccompPolicy
from looming.ffi.vchan_transport import VchanTransport
from looming.unix.time import UnixTime


class FakeTime:
    """A Time device whose clock moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000_000_000

    def now_ns(self) -> int:
        return self.now

    async def sleep_ns(self, duration_ns: int) -> None:
        raise AssertionError("the isolated backend must not sleep")

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("the isolated backend must not sleep")


@pytest.fixture
def isolated_libc() -> Iterator[IsolatedLibrary]:
    library = IsolatedLibrary(libc, time=UnixTime())
    yield library
    library.close()


def test_a_segfault_is_an_exception_and_the_helper_restarts(isolated_libc: IsolatedLibrary) -> None:
    assert isolated_libc.getpid() == 2  # alone in its PID namespace, under its init
    first_pid = isolated_libc.helper_pid
    assert first_pid is not None and first_pid != os.getpid()
    with pytest.raises(HelperCrashed) as caught:
        isolated_libc.strlen(None)  # strlen(NULL) dereferences NULL
    assert caught.value.signal == signal.SIGSEGV
    assert caught.value.function == "strlen"
    assert "SIGSEGV" in str(caught.value)
    assert isolated_libc.helper_pid is None
    # The caller is intact and the next call runs in a new helper.
    assert isolated_libc.strlen(b"still here") == 10
    second_pid = isolated_libc.helper_pid
    assert second_pid not in (first_pid, os.getpid())
    assert isolated_libc.restarts == 1 and isolated_libc.crashes == 1


def test_abort_is_sigabrt(isolated_libc: IsolatedLibrary) -> None:
    with pytest.raises(HelperCrashed) as caught:
        isolated_libc.abort()
    assert caught.value.signal == signal.SIGABRT
    assert isolated_libc.getpid() != os.getpid()


def test_restart_policy_never_keeps_the_library_down() -> None:
    library = IsolatedLibrary(libc, restart=RestartPolicy("never"), time=UnixTime())
    try:
        with pytest.raises(HelperCrashed):
            library.abort()
        with pytest.raises(HelperUnavailable, match="'never'") as caught:
            library.getpid()
        assert caught.value.retry_after_ns is None
    finally:
        library.close()


def test_restart_policy_backoff_waits_on_the_time_device() -> None:
    clock = FakeTime()
    policy = RestartPolicy("backoff", initial_delay=1.0, factor=2.0, max_restarts=2)
    library = IsolatedLibrary(libc, restart=policy, time=clock)
    try:
        with pytest.raises(HelperCrashed):
            library.abort()
        with pytest.raises(HelperUnavailable) as caught:
            library.getpid()
        assert caught.value.retry_after_ns == 1_000_000_000
        clock.now += 999_999_999
        with pytest.raises(HelperUnavailable):
            library.getpid()
        clock.now += 1
        assert library.getpid() != os.getpid()  # first restart after 1 s

        with pytest.raises(HelperCrashed):
            library.abort()
        clock.now += 1_999_999_999
        with pytest.raises(HelperUnavailable) as caught:
            library.getpid()
        assert caught.value.retry_after_ns == 1
        clock.now += 1
        assert library.strlen(b"ok") == 2  # second restart after 2 s

        with pytest.raises(HelperCrashed):
            library.abort()
        clock.now += 10**12
        with pytest.raises(HelperUnavailable, match="max_restarts=2"):
            library.getpid()
    finally:
        library.close()


def test_handles_from_a_dead_helper_are_stale() -> None:
    library = IsolatedLibrary(sqlite3, time=UnixTime())
    try:
        db = Ref()
        assert library.sqlite3_open(":memory:", db) == SQLITE_OK
        block = library.alloc_bytes(b"abc")
        assert block.read() == b"abc"
        helper = library.helper_pid
        assert helper is not None
        os.kill(helper, signal.SIGKILL)  # the helper dies between calls
        with pytest.raises(HelperCrashed) as caught:
            library.sqlite3_libversion()
        assert caught.value.signal == signal.SIGKILL
        with pytest.raises(StaleHandle):
            library.sqlite3_close(db.value)
        with pytest.raises(StaleHandle):
            block.read()
        fresh = Ref()
        assert library.sqlite3_open(":memory:", fresh) == SQLITE_OK
        assert library.sqlite3_close(fresh.value) == SQLITE_OK
    finally:
        library.close()


def test_a_callback_may_call_back_into_the_library(backend: str) -> None:
    library = link(libc, backend, time=UnixTime())
    try:
        pids: list[int] = []

        def compare(a: int, b: int) -> int:
            pids.append(library.getpid())
            return (a > b) - (a < b)

        values = [3, 1, 2]
        library.qsort(values, 3, 4, compare)
        assert values == [1, 2, 3]
        assert pids and set(pids) == {library.getpid()}
    finally:
        library.close()


def test_address_space_limit_makes_big_allocations_fail() -> None:
    limited = IsolatedLibrary(libc, limits=Limits(address_space=1 << 30), time=UnixTime())
    try:
        assert limited.malloc(2 << 30) is None
        small = limited.malloc(1 << 20)
        assert small is not None
        limited.free(small)
    finally:
        limited.close()


def test_cpu_limit_ends_a_runaway_call_with_sigxcpu() -> None:
    limited = IsolatedLibrary(crypt, limits=Limits(cpu_seconds=1), time=UnixTime())
    try:
        # bcrypt at cost 31 runs 2**31 rounds: far more than a second of CPU.
        with pytest.raises(HelperCrashed) as caught:
            limited.crypt("pw", "$2b$31$abcdefghijklmnopqrstuu")
        assert caught.value.signal in (signal.SIGXCPU, signal.SIGKILL)
        assert limited.crypt("pw", "$6$salt$").startswith("$6$salt$")
    finally:
        limited.close()


def test_seccomp_is_available_here() -> None:
    assert seccomp.available()


def test_seccomp_errno_mode_refuses_unlisted_syscalls() -> None:
    library = IsolatedLibrary(libc, seccomp=SeccompPolicy(action="errno"), time=UnixTime())
    try:
        assert library.strlen(b"fine") == 4
        with pytest.raises(PermissionError):
            library.fopen("/etc/hostname", "r")
        assert library.getpid() != os.getpid()
    finally:
        library.close()
    allowed = IsolatedLibrary(
        libc, seccomp=SeccompPolicy(allow=("openat",), action="errno"), time=UnixTime()
    )
    try:
        stream = allowed.fopen("/etc/hostname", "r")
        assert stream is not None
    finally:
        allowed.close()


def test_seccomp_kill_mode_ends_the_helper_with_sigsys() -> None:
    library = IsolatedLibrary(libc, seccomp=SeccompPolicy(action="kill"), time=UnixTime())
    try:
        with pytest.raises(HelperCrashed) as caught:
            library.fopen("/etc/hostname", "r")
        assert caught.value.signal == signal.SIGSYS
        assert library.strlen(b"after") == 5  # restarted, filtered again
    finally:
        library.close()


def test_seccomp_filter_program_shape() -> None:
    program = seccomp.build_filter(SeccompPolicy(allow=("openat",)), "x86_64")
    assert len(program) % 8 == 0
    assert len(program) // 8 < 4096
    arm = seccomp.build_filter(SeccompPolicy(), "aarch64")
    assert arm != program
    with pytest.raises(ValueError, match="unknown system call"):
        SeccompPolicy(allow=("definitely_not_a_syscall",))
    with pytest.raises(ValueError):
        SeccompPolicy(action="shrug")


class CountingTransport(SocketpairTransport):
    """A transport of our own, to show the channel is pluggable."""

    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def open(self) -> tuple[Channel, str, tuple[int, ...]]:
        channel, spec, fds = super().open()
        transport = self
        inner_send = channel.send

        def counted_send(message: bytes | bytearray) -> None:
            transport.sent += 1
            inner_send(message)

        channel.send = counted_send  # type: ignore[method-assign]  # instrumenting one instance
        return channel, spec, fds


def test_the_channel_transport_is_pluggable() -> None:
    transport = CountingTransport()
    library = IsolatedLibrary(libc, transport=transport, time=UnixTime())
    try:
        assert library.strlen(b"abc") == 3
        assert library.strlen(b"abcd") == 4
        assert transport.sent == 3  # the description, then two calls
    finally:
        library.close()


def test_closed_library_refuses_calls(isolated_libc: LinkedLibrary) -> None:
    isolated_libc.close()
    with pytest.raises(HelperUnavailable, match="closed"):
        isolated_libc.getpid()


def test_the_helper_can_serve_over_vchan(tmp_path: Path) -> None:
    registry = tmp_path / "vchan"
    registry.mkdir()
    library = IsolatedLibrary(
        libc, transport=VchanTransport(registry, time=UnixTime()), time=UnixTime()
    )
    try:
        assert library.getpid() not in (None, os.getpid())
        values = [9, 4, 6]
        library.qsort(values, 3, 4, lambda a, b: (a > b) - (a < b))
        assert values == [4, 6, 9]
        big = bytes(range(256)) * 1024  # larger than a ring: streamed in pieces
        assert library.strlen(big.replace(b"\0", b"x")) == len(big)
        with pytest.raises(HelperCrashed) as caught:
            library.abort()
        assert caught.value.signal == signal.SIGABRT
        assert library.strlen(b"again") == 5
    finally:
        library.close()
    assert list(registry.iterdir()) == []


def test_auto_transport_picks_vchan_when_installed() -> None:
    assert isinstance(default_transport("auto", time=UnixTime()), VchanTransport)
    assert isinstance(default_transport(None, time=UnixTime()), SocketpairTransport)
    with pytest.raises(ValueError, match="unknown transport"):
        default_transport("carrier pigeon", time=UnixTime())


def test_dropped_memory_is_given_back_to_the_helper() -> None:
    library = IsolatedLibrary(libc, time=UnixTime())
    try:
        block = library.alloc_bytes(b"x" * 100)
        address = block.address
        del block
        assert library._pending_frees == [address]
        assert library.strlen(b"abc") == 3  # the free rides ahead of this call
        assert library._pending_frees == []
        kept = library.alloc_bytes(b"kept")
        kept.free()
        kept.free()  # twice is harmless
    finally:
        library.close()
