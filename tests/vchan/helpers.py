"""Process and pairing helpers for the vchan tests."""

from __future__ import annotations

import os
import signal
import threading
import traceback
from collections.abc import Callable

from looming.unix.time import UnixTime
from looming.vchan import endpoint
from looming.vchan import listener as ports


def fork_child(body: Callable[[], None]) -> int:
    """Run ``body`` in a forked child that exits 0 on success, 1 on an exception."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def wait_child(pid: int) -> int:
    """The child's exit code, or minus the signal that killed it."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def kill_child(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def connected_pair(
    read_min: int = 4096, write_min: int = 4096, **options: object
) -> tuple[endpoint.Endpoint, endpoint.Endpoint]:
    """A server and a client endpoint in this process (accept runs in a thread)."""
    listener = ports.listen(
        "pair",
        "p0",
        read_min=read_min,
        write_min=write_min,
        **options,  # type: ignore[arg-type]  # the listen options a test passes
        time=UnixTime(),
    )
    accepted: list[endpoint.Endpoint] = []
    errors: list[BaseException] = []

    def accept() -> None:
        try:
            accepted.append(listener.accept(timeout=10))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        client = ports.connect("pair", "p0", timeout=10, time=UnixTime())
    finally:
        thread.join()
        if errors:
            listener.close()
    if errors:
        client.close()
        raise errors[0]
    return accepted[0], client
