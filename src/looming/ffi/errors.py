"""Errors of the foreign-function layer.

Each says what went wrong and what to do. They all derive from
:class:`looming.errors.LoomingError` through :class:`FfiError`, except the
wrong-argument case, which is a plain :class:`TypeError` naming the argument
(that is what Python code expects from a bad call).
"""

from __future__ import annotations

from looming.errors import LoomingError


class FfiError(LoomingError):
    """Base class of the foreign-function errors."""


class DescriptionError(FfiError):
    """A binding description is itself inconsistent (caught while writing it)."""


class VariadicFunction(DescriptionError):
    """A variadic C function (``printf(const char *, ...)``) was described.

    Variadic calls need the argument types of each call site; describe one
    fixed-arity variant (``vprintf``, or a non-variadic relative) instead.
    """


class DescriptionMismatch(FfiError):
    """The description does not match the library or its header.

    Raised when a library is linked, before the first call: a missing symbol,
    a struct whose size or field offsets differ from the compiler's, a
    declaration the compiler rejects.
    """


class LibraryNotFound(DescriptionMismatch):
    """The shared library named by a description cannot be found or loaded."""


class CompilerMissing(FfiError):
    """The compiled backend needs a C compiler (and Python's headers) to build."""


class HelperError(FfiError):
    """The isolated backend's helper process failed in a way that is not a crash."""


class HelperCrashed(HelperError):
    """The helper process died during a call (a segfault, an abort, a limit).

    ``signal`` is the signal number that killed it (``None`` if it exited),
    ``exit_code`` its exit status when it exited, ``function`` the call in
    flight. The caller is unharmed; the helper is restarted under the
    library's restart policy.
    """

    def __init__(
        self,
        function: str,
        *,
        signal: int | None,
        exit_code: int | None,
        detail: str = "",
    ) -> None:
        self.function = function
        self.signal = signal
        self.exit_code = exit_code
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        import signal as _signal

        if self.signal is not None:
            try:
                how = f"killed by {_signal.Signals(self.signal).name}"
            except ValueError:
                how = f"killed by signal {self.signal}"
        elif self.exit_code is not None:
            how = f"exited with status {self.exit_code}"
        else:
            how = "closed its channel"
        extra = f" ({self.detail})" if self.detail else ""
        return f"helper process {how} during {self.function}(){extra}"


class CallTimedOut(HelperError, TimeoutError):
    """A call in the helper outlived its wall-clock timeout; the helper was killed.

    ``function`` is the call, ``timeout`` the limit in seconds. The helper is
    restarted at the next call under the library's restart policy; handles
    and memory of the killed helper are stale. Raise the limit with
    ``IsolatedLibrary(timeout=...)`` or ``foreign(..., timeout=...)``.
    """

    def __init__(self, function: str, timeout: float) -> None:
        self.function = function
        self.timeout = timeout
        super().__init__(
            f"{function}() did not return within {timeout:g} s; the helper was killed "
            "(raise timeout= on the library or the function if it needs longer)"
        )

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CallCancelled(HelperError):
    """The call's asyncio task was cancelled; the helper serving it was killed."""


class HelperUnavailable(HelperError):
    """The helper is down and the restart policy does not allow a restart now.

    ``retry_after_ns`` says when a restart becomes possible (``None``: never).
    """

    def __init__(self, message: str, *, retry_after_ns: int | None) -> None:
        self.retry_after_ns = retry_after_ns
        super().__init__(message)


class StaleHandle(FfiError):
    """A handle or memory block from a helper process that has since died."""


class CallbackFailed(FfiError):
    """Raised only to wrap a callback's exception when it cannot be re-raised as is."""
