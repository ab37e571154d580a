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

* Linux only, on x86_64 and aarch64; the numbers are read from the kernel
  headers (:mod:`looming.ffi.syscalls`), so a C preprocessor and
  ``linux-libc-dev`` must be present the first time a filter is built.
* Arguments are inspected for three calls only: ``kill`` and ``tgkill``
  pass when their first argument is the helper's own process id (so
  ``abort()`` still raises SIGABRT and nothing else can be signalled), and
  ``clone`` passes when its flags hold ``CLONE_THREAD`` (threads, not
  processes); ``clone3`` answers ENOSYS so glibc falls back to ``clone``.
  An allowed ``write`` may still write to any descriptor the helper holds.
* The calls that open files are refused unless the policy allows them;
  which paths an allowed ``openat`` may reach is Landlock's business
  (:mod:`looming.ffi.confine`), since a filter cannot read a path string.
* ``fork``, ``exec``, ``ptrace``, ``tkill`` and the other calls of
  :data:`NEVER_ALLOWED` cannot be allowed by any policy.
* The filter is installed after the library is loaded and before the first
  call: whatever the library does at load time is not filtered.
"""

from __future__ import annotations

import ctypes
import errno as errno_codes
import os
import platform
import struct
from dataclasses import dataclass, field

from looming.ffi.errors import FfiError
from looming.ffi.syscalls import NAMES

# What the helper's own loop needs once it serves calls (and what threads a
# library starts need). Numbers come from the kernel headers (looming.ffi.syscalls).
BASE_ALLOW = (
    *("read", "write", "readv", "writev", "close", "lseek", "fstat", "newfstatat", "statx"),
    *("sendto", "recvfrom", "sendmsg", "recvmsg", "poll", "ppoll", "pselect6", "select"),
    *("mmap", "munmap", "mremap", "mprotect", "brk", "madvise", "futex"),
    *("rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall"),
    *("getpid", "gettid", "clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday"),
    *("sched_yield", "getrandom", "exit", "exit_group", "rseq", "set_robust_list"),
    *("getrusage", "getuid", "geteuid", "getgid", "getegid", "time", "uname", "getcwd"),
    *("fcntl", "dup", "dup3", "fsync", "fdatasync", "ftruncate", "pread64", "pwrite64"),
)

# Allowed only with the helper's own process id as the first argument: a
# signal to itself (abort(), raise()) works, one to anyone else does not.
SELF_ONLY = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")

# Allowed only when the flags (first argument) include CLONE_THREAD: threads
# may be started, processes may not.
CLONE_THREAD = 0x00010000

# Answered with ENOSYS so glibc's pthread_create falls back to clone(), whose
# flags the filter can read (clone3 passes them in memory).
ENOSYS_CALLS = ("clone3",)

# The calls that open files: allowed only when the description declares
# paths, and then confined to those paths by Landlock (see looming.ffi.confine).
FILE_CALLS = (
    *("open", "openat", "stat", "lstat", "access", "faccessat", "faccessat2", "readlink"),
    *("readlinkat", "getdents64", "unlink", "unlinkat", "mkdir", "mkdirat", "rename"),
    *("renameat", "renameat2", "flock", "fchmod", "fchown"),
)

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_JSET_K = 0x45
BPF_RET_K = 0x06

# struct seccomp_data: nr, arch, instruction_pointer, args[6] (little-endian
# 64-bit; the low word of args[0] is at 16).
DATA_NR = 0
DATA_ARCH = 4
DATA_ARG0_LOW = 16

PR_SET_NO_NEW_PRIVS = 38
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


@dataclass(frozen=True)
class SeccompPolicy:
    """Which system calls the helper may make beyond its own loop's, and what happens otherwise.

    ``allow`` names further calls (``"openat"``, ``"socket"``); ``action``: ``"kill"`` ends the helper with SIGSYS (the caller sees
    HelperCrashed), ``"errno"`` makes the refused call fail with ``errno``.
    """

    allow: tuple[str, ...] = field(default_factory=tuple)
    action: str = "kill"
    errno: int = errno_codes.EPERM

    def __post_init__(self) -> None:
        if self.action not in ("kill", "errno"):
            raise ValueError(f"seccomp action {self.action!r}: use 'kill' or 'errno'")
        unknown = [name for name in self.allow if name not in NAMES]
        if unknown:
            raise ValueError(f"unknown system call(s) {unknown}; known: {sorted(NAMES)}")
        refused = [name for name in self.allow if name in NEVER_ALLOWED]
        if refused:
            raise ValueError(
                f"{refused} cannot be allowed: the helper must not start processes, "
                "signal or trace others, or open sockets"
            )


# What no policy may allow: they would let C reach out of the helper.
NEVER_ALLOWED = (
    *("fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev"),
    *("tkill", "pidfd_send_signal", "setsid"),
    *("setpgid", "unshare", "setns", "mount", "seccomp", "prctl"),
    *SELF_ONLY,
    "clone",
    *ENOSYS_CALLS,
)


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


def _instruction(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _numbers(names: tuple[str, ...] | list[str], table: dict[str, int]) -> list[int]:
    return sorted({table[name] for name in names if table.get(name, -1) >= 0})


def build_filter(
    policy: SeccompPolicy,
    arch: str | None = None,
    *,
    own_pid: int | None = None,
    numbers: dict[str, int] | None = None,
) -> bytes:
    """The BPF program (struct sock_filter[]) for ``policy`` on ``arch``.

    ``own_pid`` is the process id the helper sees for itself (2 in its PID
    namespace): signals may go there and nowhere else. ``numbers`` is the
    architecture's system call table (read from the headers when omitted).
    """
    arch = arch or machine()
    if arch not in AUDIT_ARCH:
        raise FfiError(f"seccomp filters are built for x86_64 and aarch64, not {arch}")
    table = numbers if numbers is not None else syscall_table(arch)
    own_pid = own_pid if own_pid is not None else os.getpid()
    refuse = _instruction(
        BPF_RET_K,
        0,
        0,
        SECCOMP_RET_KILL_PROCESS
        if policy.action == "kill"
        else SECCOMP_RET_ERRNO | (policy.errno & 0xFFFF),
    )
    allow = _instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)
    load_nr = _instruction(BPF_LD_W_ABS, 0, 0, DATA_NR)
    program = [
        _instruction(BPF_LD_W_ABS, 0, 0, DATA_ARCH),
        _instruction(BPF_JEQ_K, 1, 0, AUDIT_ARCH[arch]),
        _instruction(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        load_nr,
    ]
    if arch == "x86_64":
        program += [
            _instruction(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
            _instruction(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        ]
    for number in _numbers([*BASE_ALLOW, *policy.allow], table):
        program += [_instruction(BPF_JEQ_K, 0, 1, number), allow]
    load_arg0 = _instruction(BPF_LD_W_ABS, 0, 0, DATA_ARG0_LOW)
    for number in _numbers(list(SELF_ONLY), table):
        # nr == number: load args[0]; == own pid: allow, else refuse.
        program += [
            _instruction(BPF_JEQ_K, 0, 4, number),
            load_arg0,
            _instruction(BPF_JEQ_K, 0, 1, own_pid),
            allow,
            refuse,
        ]
    for number in _numbers(["clone"], table):
        program += [
            _instruction(BPF_JEQ_K, 0, 4, number),
            load_arg0,
            _instruction(BPF_JSET_K, 0, 1, CLONE_THREAD),
            allow,
            refuse,
        ]
    enosys = _instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno_codes.ENOSYS)
    for number in _numbers(list(ENOSYS_CALLS), table):
        program += [_instruction(BPF_JEQ_K, 0, 1, number), enosys]
    program.append(refuse)
    return b"".join(program)


def syscall_table(arch: str) -> dict[str, int]:
    from looming.ffi import syscalls

    return syscalls.table(arch)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(policy: SeccompPolicy, *, own_pid: int | None = None) -> None:
    """Install the filter in this process (irreversible; used by the helper)."""
    if not available():
        raise FfiError(f"seccomp filters are not available here ({machine()})")
    program = build_filter(policy, own_pid=own_pid)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise FfiError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: errno {ctypes.get_errno()}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise FfiError(f"prctl(PR_SET_SECCOMP) failed: errno {ctypes.get_errno()}")
