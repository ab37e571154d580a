"""Confining the isolated backend's helper process: layers, applied in the helper.

The helper first links its library (loading it needs files), then confines
itself, outermost layer first:

1. **Its caller's life.** The helper is a process group of its own (the
   caller kills the whole group on a timeout). Its first process watches the
   caller through a pidfd and kills the group when the caller dies, however
   it dies; the processes below it carry ``PR_SET_PDEATHSIG(SIGKILL)``. (A
   pidfd rather than the parent-death signal at the top, because that
   signal follows the *thread* that started the process, and a caller may
   start a helper from a short-lived thread.)
2. **Its user.** Started by root, it becomes ``nobody`` (``user=``), so the
   files and processes of root are out of reach by permission alone.
3. **Fresh user and PID namespaces.** In its PID namespace the helper sees
   no process but itself and its namespace's init: ``kill(-1, ...)`` and
   ``kill(getppid(), ...)`` reach nothing outside, and when the init dies the
   kernel kills everything left in the namespace.
4. **Resource limits** (:class:`looming.ffi.isolated.Limits`): address
   space, CPU seconds, open files, processes, no core files.
5. **Landlock**, when the description declares paths: only those may be
   opened (read-only, or read-write for ``writable_paths``).
6. **A seccomp filter** (:mod:`looming.ffi.seccomp`), installed last, with
   no-new-privileges: no new processes, no signals to others, no ptrace, no
   sockets, and no opening of files unless paths are declared.

A layer this kernel refuses (no unprivileged user namespaces, no Landlock,
seccomp under an emulator) is reported to the caller as a
:class:`ConfinementWarning` when the helper starts, or as an error with
``Confinement(strict=True)``; it is never dropped silently.

Process tree of a confined helper (``pid`` as seen from outside)::

    watcher (pidfd on the caller) -> init of the PID namespace -> server (pid 2 inside)
"""

from __future__ import annotations

import ctypes
import os
import pwd
import resource
import select
import signal
import stat
from dataclasses import dataclass, field
from typing import Any

from looming.ffi.errors import FfiError
from looming.ffi.seccomp import FILE_CALLS, SeccompPolicy

CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

# Landlock (include/uapi/linux/landlock.h).
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_REFER = 1 << 13
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV


class ConfinementWarning(UserWarning):
    """A confinement layer could not be applied on this kernel; the helper runs without it."""


@dataclass(frozen=True)
class Confinement:
    """How the helper is confined. The default is every layer.

    ``seccomp``: the filter policy (None: no filter). ``namespaces``: fresh
    user and PID namespaces. ``user``: the user a helper started by root
    becomes (None: stay root). ``paths``/``writable_paths``: what may be
    opened besides the description's own (Landlock). ``watch_caller``: the
    helper dies with its caller. ``strict``: a layer the kernel refuses is
    an error instead of a warning.
    """

    seccomp: SeccompPolicy | None = field(default_factory=lambda: SeccompPolicy(action="errno"))
    namespaces: bool = True
    user: str | None = "nobody"
    paths: tuple[str, ...] = ()
    writable_paths: tuple[str, ...] = ()
    watch_caller: bool = True
    strict: bool = False

    @classmethod
    def none(cls) -> Confinement:
        """No layer at all: the helper runs as its caller did (for comparison only)."""
        return cls(seccomp=None, namespaces=False, user=None, watch_caller=False)

    @property
    def forks(self) -> bool:
        return self.namespaces or self.watch_caller


# -------------------------------------------------------------- system calls


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _syscall(name: str, *args: Any) -> int:
    from looming.ffi.syscalls import table

    number = table()[name]
    if number < 0:
        raise OSError(38, f"{name} does not exist on this architecture")
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    result = int(libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}")
    return result


def _prctl(option: int, value: int) -> None:
    if _libc().prctl(option, value, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl({option}): {os.strerror(code)}")


def _unshare(flags: int) -> None:
    if _libc().unshare(flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


# ------------------------------------------------------------- the layers


class Layers:
    """What the helper applied, and the warnings for what it could not."""

    def __init__(self, confinement: Confinement) -> None:
        self.confinement = confinement
        self.warnings: list[str] = []

    def refused(self, message: str) -> None:
        if self.confinement.strict:
            raise FfiError(f"{message} (Confinement(strict=True) makes this an error)")
        self.warnings.append(message)


def drop_user(name: str) -> None:
    """Become ``name`` (uid, gid, no supplementary groups); only when root."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise FfiError(
            f"there is no user {name!r} here to run the helper as: "
            "give Confinement(user=...) an existing user, or None to stay root"
        ) from None
    os.setgroups([])
    os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
    os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)


def die_like(status: int) -> None:
    """End this process as ``status`` (from waitpid) ended its child."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
    else:
        code = os.waitstatus_to_exitcode(status)
        if code < 128:
            os._exit(code)
        number = code - 128  # the namespace's init reports a signal as 128+n
    try:
        signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
    except (OSError, ValueError):
        pass  # SIGKILL and SIGSTOP keep their default anyway
    os.kill(os.getpid(), number)
    os._exit(128 + number)  # a signal whose default is not to end the process


def watch(caller: int, child: int) -> None:
    """The top process: mirror the child's end, or end the group with the caller."""
    os.closerange(3, caller)
    os.closerange(caller + 1, 65536)
    child_fd = os.pidfd_open(child)
    poller = select.poll()
    poller.register(caller, select.POLLIN)
    poller.register(child_fd, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == caller:
                os.killpg(0, signal.SIGKILL)  # the caller died: the group goes with it
            else:
                _, status = os.waitpid(child, 0)
                die_like(status)


def namespace_init(server: int) -> None:
    """PID 1 of the helper's namespace: reap, and end as the server ends."""
    os.closerange(3, 65536)
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == server:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))
            os._exit(min(os.waitstatus_to_exitcode(status), 127))


def enter_process_tree(layers: Layers, caller_pid: int) -> None:
    """Layers 1-3; returns in the process that goes on to serve calls."""
    confinement = layers.confinement
    if not confinement.forks:
        return
    caller = os.pidfd_open(caller_pid)
    if os.getppid() != caller_pid:
        os._exit(1)  # the caller died before we could watch it
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if confinement.user is not None and os.geteuid() == 0:
        drop_user(confinement.user)
    in_namespace = False
    if confinement.namespaces:
        try:
            _unshare(CLONE_NEWUSER | CLONE_NEWPID)
            in_namespace = True
        except OSError as exc:
            layers.refused(f"no fresh user and PID namespaces ({exc.strerror})")
    watcher = os.getpid()
    child = os.fork()
    if child:
        watch(caller, child)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != watcher and not in_namespace:
        os._exit(1)
    os.close(caller)
    if in_namespace:
        server = os.fork()
        if server:
            namespace_init(server)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def apply_limits(
    address_space: int | None,
    cpu_seconds: int | None,
    open_files: int | None = None,
    processes: int | None = None,
) -> None:
    if address_space is not None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    if cpu_seconds is not None:
        # The soft limit sends SIGXCPU (the caller sees it), the hard one SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    if open_files is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
    if processes is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """Landlock's ABI version here (0: unavailable)."""
    try:
        return _syscall("landlock_create_ruleset", None, ctypes.c_size_t(0), 1)
    except (OSError, KeyError):
        return 0


def handled_rights(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def path_rights(path: str, writable: bool, handled: int) -> int:
    read = FS_READ_FILE | FS_READ_DIR
    write = FS_WRITE_FILE | FS_TRUNCATE | FS_MAKE_REG | FS_REMOVE_FILE | FS_MAKE_DIR
    write |= FS_REMOVE_DIR
    rights = (read | write) if writable else read
    if not stat.S_ISDIR(os.stat(path).st_mode):
        rights &= FILE_RIGHTS
    return rights & handled


def restrict_paths(readable: tuple[str, ...], writable: tuple[str, ...]) -> None:
    """Only ``readable`` (and, for writing too, ``writable``) may be opened from now on."""
    abi = landlock_abi()
    if abi < 1:
        raise OSError(38, "Landlock is not available on this kernel")
    handled = handled_rights(abi)
    attr = _RulesetAttr(handled)
    ruleset = _syscall(
        "landlock_create_ruleset", ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), 0
    )
    try:
        for path, can_write in [*((p, False) for p in readable), *((p, True) for p in writable)]:
            if not os.path.exists(path):
                continue  # nothing to open there; a rule needs an existing file
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = _PathBeneathAttr(path_rights(path, can_write, handled), fd)
                _syscall(
                    "landlock_add_rule", ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0
                )
            finally:
                os.close(fd)
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _syscall("landlock_restrict_self", ruleset, 0)
    finally:
        os.close(ruleset)


def confine_server(layers: Layers, readable: tuple[str, ...], writable: tuple[str, ...]) -> None:
    """Layers 5-6, in the serving process, after the limits."""
    from looming.ffi import seccomp

    confinement = layers.confinement
    policy = confinement.seccomp
    declared = bool(readable or writable)
    if declared:
        try:
            restrict_paths(readable, writable)
        except OSError as exc:
            layers.refused(
                f"Landlock is unavailable ({exc.strerror}): the declared paths cannot be "
                "enforced, and the helper may open any file its user can"
            )
    if policy is None:
        return
    if declared:
        policy = SeccompPolicy(
            allow=(*policy.allow, *FILE_CALLS), action=policy.action, errno=policy.errno
        )
    if not seccomp.available():
        layers.refused("no seccomp filter (the kernel or this architecture refuses it)")
        return
    try:
        seccomp.install(policy, own_pid=os.getpid())
    except FfiError as exc:
        layers.refused(f"no seccomp filter ({exc})")
