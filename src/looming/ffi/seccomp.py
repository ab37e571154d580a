"""A syscall allow-list for the isolated backend's helper (Linux seccomp-BPF).

The filter is a classic BPF program built here and installed with
``prctl(PR_SET_NO_NEW_PRIVS)`` and ``prctl(PR_SET_SECCOMP,
SECCOMP_MODE_FILTER)`` through ctypes. It checks the architecture (a syscall
from another ABI, such as x32 on x86_64, is refused), then allows the system
calls the helper's own loop needs (reading and writing its channel, memory
management, signals, clocks, exiting) plus the ones the policy names, and
answers everything else with ``action``: ``"kill"`` ends the helper with
SIGSYS (the caller sees HelperCrashed), ``"errno"`` makes the call fail with
EPERM.

Limits, precisely:

* Linux only, on x86_64 and aarch64 (the syscall tables below); elsewhere
  :func:`available` is False and asking for a filter raises FfiError.
* System calls are matched by number only; arguments are not inspected (an
  allowed ``write`` may write to any descriptor the helper holds, such as an
  inherited stderr).
* The filter is installed after the library is loaded and before the first
  call: whatever the library does at load time is not filtered.
* ``tgkill`` and ``getpid`` stay allowed so that ``abort()`` still raises
  SIGABRT; they can signal other processes of the same user.
* The helper keeps the file descriptors it inherited (its channel, stdout
  and stderr); nothing is closed for you.
"""

from __future__ import annotations

import ctypes
import errno as errno_codes
import platform
import struct
from dataclasses import dataclass, field

from looming.ffi.errors import FfiError

# name: (x86_64, aarch64); -1 where the architecture lacks the call.
SYSCALLS: dict[str, tuple[int, int]] = {
    "read": (0, 63),
    "write": (1, 64),
    "open": (2, -1),
    "close": (3, 57),
    "stat": (4, -1),
    "fstat": (5, 80),
    "lstat": (6, -1),
    "poll": (7, -1),
    "lseek": (8, 62),
    "mmap": (9, 222),
    "mprotect": (10, 226),
    "munmap": (11, 215),
    "brk": (12, 214),
    "rt_sigaction": (13, 134),
    "rt_sigprocmask": (14, 135),
    "rt_sigreturn": (15, 139),
    "ioctl": (16, 29),
    "pread64": (17, 67),
    "pwrite64": (18, 68),
    "readv": (19, 65),
    "writev": (20, 66),
    "access": (21, -1),
    "sched_yield": (24, 124),
    "mremap": (25, 216),
    "madvise": (28, 233),
    "nanosleep": (35, 101),
    "getpid": (39, 172),
    "socket": (41, 198),
    "connect": (42, 203),
    "sendto": (44, 206),
    "recvfrom": (45, 207),
    "sendmsg": (46, 211),
    "recvmsg": (47, 212),
    "exit": (60, 93),
    "kill": (62, 129),
    "uname": (63, 160),
    "fcntl": (72, 25),
    "fsync": (74, 82),
    "getcwd": (79, 17),
    "unlink": (87, -1),
    "readlink": (89, -1),
    "getuid": (102, 174),
    "getgid": (104, 176),
    "geteuid": (107, 175),
    "getegid": (108, 177),
    "getrusage": (98, 165),
    "sigaltstack": (131, 132),
    "gettid": (186, 178),
    "time": (201, -1),
    "futex": (202, 98),
    "getdents64": (217, 61),
    "restart_syscall": (219, 128),
    "clock_gettime": (228, 113),
    "clock_nanosleep": (230, 115),
    "exit_group": (231, 94),
    "tgkill": (234, 131),
    "openat": (257, 56),
    "newfstatat": (262, 79),
    "unlinkat": (263, 35),
    "faccessat": (269, 48),
    "ppoll": (271, 73),
    "prlimit64": (302, 261),
    "getrandom": (318, 278),
    "statx": (332, 291),
    "rseq": (334, 293),
    "faccessat2": (439, 439),
}

# What the helper's own loop needs once it serves calls.
BASE_ALLOW = (
    "read",
    "write",
    "readv",
    "writev",
    "close",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "poll",
    "ppoll",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "brk",
    "madvise",
    "futex",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "restart_syscall",
    "getpid",
    "gettid",
    "tgkill",
    "clock_gettime",
    "clock_nanosleep",
    "nanosleep",
    "sched_yield",
    "getrandom",
    "exit",
    "exit_group",
    "fstat",
    "newfstatat",
    "lseek",
    "rseq",
)

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_RET_K = 0x06

PR_SET_NO_NEW_PRIVS = 38
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


@dataclass(frozen=True)
class SeccompPolicy:
    """Which system calls the helper may make beyond its own loop's, and what happens otherwise."""

    allow: tuple[str, ...] = field(default_factory=tuple)
    action: str = "kill"
    errno: int = errno_codes.EPERM

    def __post_init__(self) -> None:
        if self.action not in ("kill", "errno"):
            raise ValueError(f"seccomp action {self.action!r}: use 'kill' or 'errno'")
        unknown = [name for name in self.allow if name not in SYSCALLS]
        if unknown:
            raise ValueError(f"unknown system call(s) {unknown}; known: {sorted(SYSCALLS)}")


def machine() -> str:
    return platform.machine()


def available() -> bool:
    """Whether this kernel and architecture can take a filter from us."""
    if machine() not in AUDIT_ARCH:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0) >= 0)
    except (OSError, AttributeError):
        return False


def syscall_numbers(names: tuple[str, ...] | list[str], arch: str) -> list[int]:
    column = 0 if arch == "x86_64" else 1
    numbers = sorted({SYSCALLS[name][column] for name in names if SYSCALLS[name][column] >= 0})
    return numbers


def _instruction(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def build_filter(policy: SeccompPolicy, arch: str | None = None) -> bytes:
    """The BPF program (struct sock_filter[]) for ``policy`` on ``arch``."""
    arch = arch or machine()
    if arch not in AUDIT_ARCH:
        raise FfiError(f"seccomp filters are built for x86_64 and aarch64, not {arch}")
    default = (
        SECCOMP_RET_KILL_PROCESS
        if policy.action == "kill"
        else SECCOMP_RET_ERRNO | (policy.errno & 0xFFFF)
    )
    program = [
        _instruction(BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        _instruction(BPF_JEQ_K, 1, 0, AUDIT_ARCH[arch]),
        _instruction(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        _instruction(BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if arch == "x86_64":
        program += [
            _instruction(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
            _instruction(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        ]
    for number in syscall_numbers([*BASE_ALLOW, *policy.allow], arch):
        program += [
            _instruction(BPF_JEQ_K, 0, 1, number),
            _instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        ]
    program.append(_instruction(BPF_RET_K, 0, 0, default))
    return b"".join(program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(policy: SeccompPolicy) -> None:
    """Install the filter in this process (irreversible; used by the helper)."""
    if not available():
        raise FfiError(f"seccomp filters are not available here ({machine()})")
    program = build_filter(policy)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise FfiError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: errno {ctypes.get_errno()}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise FfiError(f"prctl(PR_SET_SECCOMP) failed: errno {ctypes.get_errno()}")
