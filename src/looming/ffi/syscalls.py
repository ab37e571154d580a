"""System call numbers, read from the kernel headers by the C preprocessor.

The seccomp filter matches system calls by number, and the numbers differ
between architectures. Rather than a table typed in by hand, the numbers
are taken from ``<asm/unistd.h>`` the first time they are needed: the C
preprocessor expands ``__NR_<name>`` for every name looming uses, and the
answer is cached next to the compiled bindings (keyed by the compiler and
the header's contents).

* x86_64 on an x86_64 host: ``<asm/unistd.h>`` (which includes
  ``asm/unistd_64.h``).
* aarch64: arm64's ``asm/unistd.h`` is the generic table,
  ``<asm-generic/unistd.h>``, with the ``__ARCH_WANT_*`` switches arm64
  sets; it is present on any host with Debian's ``linux-libc-dev``, so the
  aarch64 filter can be built (and tested) on x86_64 too.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
from pathlib import Path

from looming.ffi.errors import FfiError

# Every system call the filter may name (allowed, argument-checked or
# explicitly refused). -1 in a table: the architecture lacks the call.
NAMES = (
    *("read", "write", "readv", "writev", "pread64", "pwrite64", "close", "lseek"),
    *("sendto", "recvfrom", "sendmsg", "recvmsg", "poll", "ppoll", "pselect6", "select"),
    *("epoll_wait", "epoll_pwait", "mmap", "munmap", "mremap", "mprotect", "brk", "madvise"),
    *("futex", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack"),
    *("restart_syscall", "getpid", "gettid", "getppid", "clock_gettime", "clock_nanosleep"),
    *("nanosleep", "sched_yield", "getrandom", "exit", "exit_group", "fstat", "newfstatat"),
    *("statx", "rseq", "set_robust_list", "get_robust_list", "set_tid_address", "prlimit64"),
    *("getrusage", "gettimeofday", "time", "uname", "getcwd", "fcntl", "dup", "dup3"),
    *("getuid", "geteuid", "getgid", "getegid", "ioctl", "membarrier", "sched_getaffinity"),
    *("open", "openat", "openat2", "stat", "lstat", "access", "faccessat", "faccessat2"),
    *("readlink", "readlinkat", "getdents64", "unlink", "unlinkat", "mkdir", "mkdirat"),
    *("rename", "renameat", "renameat2", "ftruncate", "fsync", "fdatasync", "flock"),
    *("fchmod", "fchown"),
    *("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal"),
    *("clone", "clone3", "fork", "vfork", "execve", "execveat", "ptrace"),
    *("process_vm_readv", "process_vm_writev", "socket", "socketpair", "connect", "bind"),
    *("listen", "accept", "accept4", "setsid", "setpgid", "unshare", "setns", "mount"),
    *("prctl", "seccomp", "landlock_create_ruleset", "landlock_add_rule"),
    "landlock_restrict_self",
)

# The switches arm64's <asm/unistd.h> sets before including the generic table.
AARCH64_WANTS = (
    "__ARCH_WANT_RENAMEAT",
    "__ARCH_WANT_NEW_STAT",
    "__ARCH_WANT_SET_GET_RLIMIT",
    "__ARCH_WANT_TIME32_SYSCALLS",
    "__ARCH_WANT_SYS_CLONE3",
    "__ARCH_WANT_MEMFD_SECRET",
)

ARCHITECTURES = ("x86_64", "aarch64")
_MARK = "LOOMING_NR"
_EXPRESSION = re.compile(r"^[0-9()+\s]+$")


def host_arch() -> str:
    return platform.machine()


def preprocessor_input(arch: str) -> tuple[list[str], str]:
    """(extra compiler flags, source) that expand every ``__NR_<name>`` for ``arch``."""
    if arch not in ARCHITECTURES:
        raise FfiError(f"system call tables exist for {', '.join(ARCHITECTURES)}, not {arch}")
    if arch == host_arch():
        flags: list[str] = []
        header = "asm/unistd.h"
    elif arch == "aarch64":
        flags = [f"-D{want}" for want in AARCH64_WANTS]
        header = "asm-generic/unistd.h"
    else:
        raise FfiError(
            f"the {arch} system call table can only be read on an {arch} host "
            f"(this one is {host_arch()})"
        )
    lines = [f"#include <{header}>"]
    for name in NAMES:
        lines += [f"#ifdef __NR_{name}", f"{_MARK} {name} __NR_{name}", "#endif"]
    return flags, "\n".join(lines) + "\n"


def parse_expansion(output: str) -> dict[str, int]:
    """The ``name -> number`` pairs of the preprocessed marker lines."""
    table: dict[str, int] = {}
    for line in output.splitlines():
        if not line.startswith(_MARK + " "):
            continue
        _, name, expression = line.split(" ", 2)
        if not _EXPRESSION.match(expression):
            raise FfiError(f"__NR_{name} expands to {expression!r}, not a number")
        # Digits, '+' and parentheses only (checked above): a sum.
        terms = expression.replace("(", " ").replace(")", " ").split("+")
        table[name] = sum(int(term) for term in terms)
    return table


def generate(arch: str, compiler: list[str]) -> dict[str, int]:
    """Run the preprocessor; ``name -> number`` (-1 for calls ``arch`` lacks)."""
    flags, source = preprocessor_input(arch)
    try:
        done = subprocess.run(
            [*compiler, *flags, "-E", "-P", "-x", "c", "-"],
            input=source,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise FfiError(f"cannot run the C preprocessor {compiler[0]!r}: {exc}") from exc
    if done.returncode != 0:
        raise FfiError(
            f"the kernel headers for {arch} did not preprocess (on Debian: apt-get install "
            f"linux-libc-dev gcc):\n{done.stderr.strip()}"
        )
    found = parse_expansion(done.stdout)
    if "read" not in found or "exit_group" not in found:
        raise FfiError(f"the {arch} system call table from the headers lacks read/exit_group")
    return {name: found.get(name, -1) for name in NAMES}


_loaded: dict[str, dict[str, int]] = {}


def table(arch: str | None = None) -> dict[str, int]:
    """The system call numbers of ``arch`` (default: this host's), cached on disk.

    Kept in memory once read: the helper reads it before it confines itself,
    when files can no longer be opened.
    """
    arch = arch or host_arch()
    if arch not in _loaded:
        _loaded[arch] = _read_or_generate(arch)
    return _loaded[arch]


def _read_or_generate(arch: str) -> dict[str, int]:
    from looming.ffi.probe import cache_dir, find_compiler

    compiler = find_compiler()
    flags, source = preprocessor_input(arch)
    key_text = " ".join(compiler) + "\n" + " ".join(flags) + "\n" + source
    key = hashlib.sha256(key_text.encode()).hexdigest()[:20]
    path = cache_dir() / f"syscalls-{arch}-{key}.json"
    try:
        cached: dict[str, int] = json.loads(path.read_text())
        if set(cached) == set(NAMES):
            return cached
    except (OSError, ValueError):
        pass
    numbers = generate(arch, compiler)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(numbers, sort_keys=True))
    os.replace(partial, path)
    return numbers


def header_defines(path: Path) -> dict[str, str]:
    """``macro -> right-hand side`` of the ``#define __NR...`` lines of one header.

    An independent reading of the headers (no preprocessor), for the tests:
    the right-hand side is left as written, a number or another macro's name.
    """
    defines: dict[str, str] = {}
    pattern = re.compile(r"^#define\s+(__NR\w+)\s+(.+?)\s*$")
    for line in path.read_text().splitlines():
        match = pattern.match(line)
        if match:
            defines[match.group(1)] = match.group(2)
    return defines
