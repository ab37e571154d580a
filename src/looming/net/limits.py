"""The values the direct stack's limit keys accept, checked in one place:
by ``looming configure``, by a built unikernel reading its command line
(through :data:`looming.runtime.KEY_CHECKS`) and by
:meth:`looming.net.stack.DirectStack.connect`.

Each ``*_problem`` function says what is wrong with a value, or returns
None when it is fine; it imports nothing heavy, so a unikernel checks its
keys before it starts any device."""

from __future__ import annotations

from looming.errors import UsageError

# The least stack-wide memory limit: a few connections' reserves. Less would
# leave TCP unable to hold even one window (0 means no limit).
MIN_MEMORY_LIMIT = 64 * 1024
# As looming.net.tcp.config.CONGESTION_CONTROLS (a test keeps them equal),
# without importing TCP to check a key.
CONGESTION_CONTROLS = ("cubic", "newreno")


def max_connections_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"{value!r} is not a number of connections: give 0 (no limit) or more"
    return None


def memory_limit_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"{value!r} is not a number of bytes: give 0 (no limit) or more"
    if 0 < value < MIN_MEMORY_LIMIT:
        return (
            f"{value} bytes is too little for TCP: give 0 (no limit) or {MIN_MEMORY_LIMIT} or more"
        )
    return None


def congestion_problem(value: object) -> str | None:
    if value not in CONGESTION_CONTROLS:
        return f"unknown congestion control {value!r}: use one of {', '.join(CONGESTION_CONTROLS)}"
    return None


def check_stack_limits(
    max_connections: int | None, memory_limit: int | None, congestion_control: str
) -> None:
    """Raise :class:`UsageError` (exit code 2) naming the first bad value;
    None for a limit means no limit."""
    checks = (
        ("--tcp-max-connections", max_connections, max_connections_problem),
        ("--tcp-memory-limit", memory_limit, memory_limit_problem),
        ("--tcp-congestion", congestion_control, congestion_problem),
    )
    for option, value, problem_of in checks:
        problem = None if value is None else problem_of(value)
        if problem is not None:
            raise UsageError(f"{option}: {problem}")
