"""The isolated helper under hostile C: each confinement layer, then all of them.

The hostile library is compiled by the tests (tests/ffi/clib/hostile.c). The
functions that send signals run only in a throwaway PID namespace (see
tests/ffi/hostile.py), with a bystander process beside the caller.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from looming.ffi import CallTimedOut, HelperCrashed, c_int, foreign, seccomp, syscalls
from looming.ffi.confine import Confinement
from looming.ffi.errors import CallCancelled
from looming.ffi.isolated import IsolatedLibrary, Limits
from looming.ffi.seccomp import SeccompPolicy
from looming.unix.time import UnixTime
from tests.ffi.hostile import SIGNAL_LAYERS, build, hostile_bindings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("hostile")
    build(directory)
    return directory


@pytest.fixture(scope="module")
def confined(hostile_dir: Path) -> Iterator[IsolatedLibrary]:
    """The default: every layer."""
    library = IsolatedLibrary(hostile_bindings(hostile_dir), timeout=1.5, time=UnixTime())
    yield library
    library.close()


def test_every_layer_is_on_by_default(confined: IsolatedLibrary) -> None:
    assert confined.warnings == []
    assert confined.add(2, 3) == 5
    pid = confined.helper_pid
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["NSpid"].split()[-1] == "2"  # a fresh PID namespace
    assert fields["Seccomp"].strip() == "2"  # filter mode
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Uid"].split()[0] == str(65534)  # root's helper runs as nobody
    own = Path("/proc/self/ns/user").resolve()
    assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user"), own
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert "Max address space         1073741824" in limits


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("open_shadow", -errno.EPERM),
        ("make_socket", -errno.EPERM),
        ("fork_bomb", -errno.EPERM),
        ("big_malloc", -errno.ENOMEM),
    ],
)
def test_reaching_out_fails_under_full_confinement(
    confined: IsolatedLibrary, function: str, expected: int
) -> None:
    assert confined[function]() == expected
    assert confined.add(1, 1) == 2  # the same helper goes on


def test_a_null_dereference_is_sigsegv_and_the_helper_is_replaced(
    confined: IsolatedLibrary,
) -> None:
    before = confined.helper_pid
    with pytest.raises(HelperCrashed) as caught:
        confined.null_deref()
    assert caught.value.signal == signal.SIGSEGV
    assert confined.add(1, 2) == 3
    assert confined.helper_pid not in (None, before)


@pytest.mark.parametrize("function", ["spin", "sleep_long"])
def test_a_call_that_never_returns_times_out(confined: IsolatedLibrary, function: str) -> None:
    old = confined.helper_pid
    assert old is not None
    started = time.monotonic()
    with pytest.raises(CallTimedOut) as caught:
        confined[function]()
    took = time.monotonic() - started
    assert 1.4 <= took < 4.0
    assert caught.value.function == function and caught.value.timeout == 1.5
    assert isinstance(caught.value, TimeoutError)
    deadline = time.monotonic() + 2
    while Path(f"/proc/{old}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{old}").exists()
    assert confined.add(2, 2) == 4  # restarted


def test_a_per_function_timeout_overrides_the_default(hostile_dir: Path) -> None:
    bindings = hostile_bindings(hostile_dir)
    quick = foreign("sleep_long", [], c_int, timeout=0.3)
    bindings.functions[bindings.functions.index(bindings.by_name["sleep_long"])] = quick
    bindings.by_name["sleep_long"] = quick
    library = IsolatedLibrary(bindings, timeout=60, time=UnixTime())
    try:
        started = time.monotonic()
        with pytest.raises(CallTimedOut):
            library.sleep_long()
        assert time.monotonic() - started < 2.0
    finally:
        library.close()


def test_a_cancelled_acall_kills_the_helper_and_returns_promptly(
    confined: IsolatedLibrary,
) -> None:
    async def scenario() -> float:
        task = asyncio.ensure_future(confined.acall.sleep_long())
        await asyncio.sleep(0.3)
        before = confined.helper_pid
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert before is not None and confined.helper_pid is None
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.0
    assert confined.add(3, 4) == 7


def test_cancelled_is_what_the_worker_saw(confined: IsolatedLibrary) -> None:
    import threading

    outcome: list[BaseException] = []

    def worker() -> None:
        try:
            confined.sleep_long()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(0.3)
    assert thread.ident is not None and confined._abandon_call(thread.ident)
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], CallCancelled)


# -- each layer on its own --------------------------------------------------------


def one_layer(hostile_dir: Path, confinement: Confinement, limits: Limits) -> IsolatedLibrary:
    return IsolatedLibrary(
        hostile_bindings(hostile_dir),
        confinement=confinement,
        limits=limits,
        timeout=5,
        time=UnixTime(),
    )


def test_seccomp_alone_refuses_files_sockets_and_processes(hostile_dir: Path) -> None:
    library = one_layer(hostile_dir, Confinement(namespaces=False, user=None), Limits.none())
    try:
        assert library.open_shadow() == -errno.EPERM
        assert library.make_socket() == -errno.EPERM
        assert library.fork_bomb() == -errno.EPERM
    finally:
        library.close()


def test_seccomp_kill_action_ends_the_helper_with_sigsys(hostile_dir: Path) -> None:
    policy = Confinement(seccomp=SeccompPolicy(action="kill"), user=None)
    library = one_layer(hostile_dir, policy, Limits())
    try:
        with pytest.raises(HelperCrashed) as caught:
            library.make_socket()
        assert caught.value.signal == signal.SIGSYS
        assert library.add(1, 1) == 2
    finally:
        library.close()


def test_the_user_layer_alone_keeps_roots_files_closed(hostile_dir: Path) -> None:
    library = one_layer(hostile_dir, Confinement(seccomp=None, namespaces=False), Limits.none())
    try:
        assert library.open_shadow() == -errno.EACCES
    finally:
        library.close()


def test_landlock_alone_opens_only_the_declared_paths(hostile_dir: Path) -> None:
    allowed = hostile_dir / "allowed.txt"
    allowed.write_text("yes")
    confinement = Confinement(seccomp=None, namespaces=False, user=None, paths=(str(allowed),))
    library = one_layer(hostile_dir, confinement, Limits.none())
    try:
        assert library.open_path(str(allowed)) == 0
        assert library.open_shadow() == -errno.EACCES
        assert library.open_path("/etc/hostname") == -errno.EACCES
    finally:
        library.close()


def test_rlimits_alone_make_a_big_allocation_fail(hostile_dir: Path) -> None:
    library = one_layer(hostile_dir, Confinement.none(), Limits())
    try:
        assert library.big_malloc() == -errno.ENOMEM
    finally:
        library.close()


def test_namespaces_alone_bound_a_fork_bomb_and_end_it_with_the_helper(
    hostile_dir: Path,
) -> None:
    # As nobody: RLIMIT_NPROC does not bind root.
    library = one_layer(hostile_dir, Confinement(seccomp=None), Limits(processes=16))
    try:
        started = library.fork_bomb()
        assert 0 < started < 16  # RLIMIT_NPROC counts in the helper's user namespace
        group = library._helper.process.pid if library._helper else 0
    finally:
        library.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and group_members(group):
        time.sleep(0.05)
    assert group_members(group) == []


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_signals_reach_nothing_outside_under_each_layer(hostile_dir: Path) -> None:
    """kill(getppid()) and kill(-1) in a throwaway PID namespace, with a bystander."""
    script = (
        "sleep 60 & bystander=$!; "
        f"{sys.executable} -m tests.ffi.hostile {hostile_dir}; status=$?; "
        'kill -0 "$bystander" && echo bystander-alive; exit $status'
    )
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "bystander-alive"
    results = json.loads(lines[-2])
    assert set(results) == set(SIGNAL_LAYERS)
    for layer in ("seccomp", "all"):
        assert results[layer]["kill_parent"] == -errno.EPERM, results
        assert results[layer]["kill_everyone"] == -errno.EPERM, results
    # In its PID namespace the helper's parent is the namespace's init, which
    # ignores the signal; kill(-1) finds no one it may signal.
    assert results["namespaces"]["kill_parent"] == 0
    assert results["namespaces"]["kill_everyone"] == -errno.ESRCH
    # As nobody, the only processes it may signal are its own helper's (the
    # watcher above it: the helper goes down and is restarted).
    for name in ("kill_parent", "kill_everyone"):
        outcome = results["user"][name]
        assert outcome in (0, -errno.EPERM) or str(outcome).startswith("HelperCrashed"), results
    for outcome in results.values():
        assert outcome["kill_parent then"] == 3 and outcome["kill_everyone then"] == 3


def test_the_helper_dies_with_its_caller(hostile_dir: Path) -> None:
    program = (
        "import sys, time\n"
        "from looming.ffi.isolated import IsolatedLibrary\n"
        "from tests.ffi.hostile import hostile_bindings\n"
        "from pathlib import Path\n"
        "from looming.unix.time import UnixTime\n"
        f"lib = IsolatedLibrary(hostile_bindings(Path({str(hostile_dir)!r})), timeout=600,"
        " time=UnixTime())\n"
        "print(lib.helper_pid, lib._helper.process.pid, flush=True)\n"
        "lib.spin()\n"
    )
    caller = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"},
    )
    assert caller.stdout is not None
    server, group = (int(word) for word in caller.stdout.readline().split())
    time.sleep(0.3)  # spinning now
    caller.kill()
    caller.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and group_members(group):
        time.sleep(0.05)
    assert group_members(group) == []
    assert not Path(f"/proc/{server}").exists()


# -- the filter, for both architectures ------------------------------------------------


def run_filter(program: bytes, arch: int, nr: int, arg0: int = 0) -> int:
    """A classic-BPF interpreter for the instructions the filter uses."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0 & 0xFFFFFFFFFFFFFFFF, 0, 0, 0, 0, 0)
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == seccomp.BPF_LD_W_ABS:
            (acc,) = struct.unpack_from("<I", data, k)
            pc += 1
        elif code == seccomp.BPF_RET_K:
            return k
        elif code in (seccomp.BPF_JEQ_K, seccomp.BPF_JGE_K, seccomp.BPF_JSET_K):
            taken = {
                seccomp.BPF_JEQ_K: acc == k,
                seccomp.BPF_JGE_K: acc >= k,
                seccomp.BPF_JSET_K: bool(acc & k),
            }[code]
            pc += 1 + (jt if taken else jf)
        else:
            raise AssertionError(f"unexpected BPF instruction {code:#x}")


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_the_filter_decides_by_number_and_argument(arch: str) -> None:
    table = syscalls.table(arch)
    policy = SeccompPolicy(action="errno")
    program = seccomp.build_filter(policy, arch, own_pid=2, numbers=table)
    audit = seccomp.AUDIT_ARCH[arch]
    allow, eperm = seccomp.SECCOMP_RET_ALLOW, seccomp.SECCOMP_RET_ERRNO | errno.EPERM

    def verdict(name: str, arg0: int = 0) -> int:
        return run_filter(program, audit, table[name], arg0)

    assert verdict("read") == verdict("write") == verdict("futex") == allow
    assert verdict("kill", 2) == verdict("tgkill", 2) == allow
    for name in ("kill", "tgkill"):
        assert verdict(name, 1) == verdict(name, -1) == verdict(name, 0) == eperm
    assert verdict("clone", 0x3D0F00) == allow  # what pthread_create passes
    assert verdict("clone", 0x11) == eperm  # fork()'s SIGCHLD
    assert verdict("clone3") == seccomp.SECCOMP_RET_ERRNO | errno.ENOSYS
    for name in ("openat", "socket", "connect", "execve", "ptrace", "tkill", "unshare"):
        assert verdict(name) == eperm, name
    other = seccomp.AUDIT_ARCH["aarch64" if arch == "x86_64" else "x86_64"]
    assert run_filter(program, other, table["read"]) == seccomp.SECCOMP_RET_KILL_PROCESS
    if arch == "x86_64":
        x32_read = seccomp.X32_SYSCALL_BIT | table["read"]
        assert run_filter(program, audit, x32_read) == seccomp.SECCOMP_RET_KILL_PROCESS
    with_files = seccomp.build_filter(
        SeccompPolicy(allow=("openat",)), arch, own_pid=2, numbers=table
    )
    assert run_filter(with_files, audit, table["openat"]) == allow


def test_no_policy_may_allow_processes_or_foreign_signals() -> None:
    for name in ("fork", "execve", "ptrace", "kill", "clone", "tkill"):
        with pytest.raises(ValueError, match="cannot be allowed"):
            SeccompPolicy(allow=(name,))


def resolve(defines: dict[str, str], macro: str) -> int:
    value = defines[macro]
    while not value.isdigit():
        value = defines[value.strip("()")]
    return int(value)


def test_syscall_numbers_match_the_x86_64_header() -> None:
    header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    defines = syscalls.header_defines(header)
    table = syscalls.table("x86_64")
    for name, number in table.items():
        if number >= 0:
            assert resolve(defines, f"__NR_{name}") == number, name
        else:
            assert f"__NR_{name}" not in defines, name
    assert table["read"] == 0 and table["openat"] == 257 and table["clone3"] == 435


def test_syscall_numbers_match_the_generic_header_aarch64_uses() -> None:
    defines = syscalls.header_defines(Path("/usr/include/asm-generic/unistd.h"))
    table = syscalls.table("aarch64")
    for name, number in table.items():
        if number >= 0:
            assert resolve(defines, f"__NR_{name}") == number, name
    # The calls arm64 never had: the table says so.
    assert table["open"] == table["fork"] == table["stat"] == -1
    assert table["read"] == 63 and table["openat"] == 56 and table["kill"] == 129


WITHOUT_USER_NAMESPACES = """
import sys, warnings
from pathlib import Path
from looming.ffi import ConfinementWarning, FfiError, HelperError
from looming.ffi.confine import Confinement
from looming.ffi.isolated import IsolatedLibrary
from looming.unix.time import UnixTime
from tests.ffi.hostile import hostile_bindings
bindings = hostile_bindings(Path(sys.argv[1]))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    library = IsolatedLibrary(bindings, confinement=Confinement(user=None), time=UnixTime())
print("warned:", [str(w.message) for w in caught if w.category is ConfinementWarning])
print("kept:", library.make_socket(), library.add(1, 2))
library.close()
try:
    IsolatedLibrary(bindings, confinement=Confinement(user=None, strict=True), time=UnixTime())
except HelperError as exc:
    print("strict:", exc)
"""


def test_a_kernel_without_user_namespaces_is_a_warning_not_a_silent_downgrade(
    hostile_dir: Path,
) -> None:
    # In a user namespace of our own whose limit on further user namespaces is 0.
    script = (
        f'echo 0 > /proc/sys/user/max_user_namespaces && {sys.executable} -c "$0" {hostile_dir}'
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "sh", "-c", script, WITHOUT_USER_NAMESPACES],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert "no fresh user and PID namespaces (No space left on device)" in lines["warned"]
    assert lines["kept"] == f"{-errno.EPERM} 3"  # the other layers still hold
    assert "Confinement(strict=True) makes this an error" in lines["strict"]


def test_the_aarch64_table_matches_arm64s_own_headers() -> None:
    """The generic table with arm64's switches equals what arm64's <asm/unistd.h> gives."""
    compiler = shutil.which("aarch64-linux-gnu-gcc")
    if compiler is None:
        pytest.fail("aarch64-linux-gnu-gcc is missing: run scripts/system-deps.sh as root")
    _, source = syscalls.preprocessor_input("aarch64")
    source = source.replace("<asm-generic/unistd.h>", "<asm/unistd.h>")
    done = subprocess.run(
        [compiler, "-E", "-P", "-x", "c", "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
    )
    native = syscalls.parse_expansion(done.stdout)
    table = syscalls.table("aarch64")
    assert {name: table[name] for name in native} == native
    assert {name for name, number in table.items() if number >= 0} == set(native)


def test_paths_the_description_declares_are_the_only_ones_open(hostile_dir: Path) -> None:
    declared = hostile_dir / "declared.txt"
    declared.write_text("ok")
    bindings = hostile_bindings(hostile_dir)
    bindings.paths = (str(declared),)
    # Every layer; root's files stay root's (user=None) so the test's file can be read.
    library = IsolatedLibrary(
        bindings, confinement=Confinement(user=None), timeout=5, time=UnixTime()
    )
    try:
        assert library.warnings == []
        assert library.open_path(str(declared)) == 0
        assert library.open_shadow() == -errno.EACCES  # Landlock, not the filter
        assert library.open_path(str(hostile_dir / "hostile.h")) == -errno.EACCES
        assert library.make_socket() == -errno.EPERM  # the filter still holds
    finally:
        library.close()


def test_an_unknown_user_is_a_clear_error(hostile_dir: Path) -> None:
    from looming.ffi import HelperError

    with pytest.raises(HelperError, match="no user 'no-such-user' here to run the helper as"):
        IsolatedLibrary(
            hostile_bindings(hostile_dir),
            confinement=Confinement(user="no-such-user"),
            time=UnixTime(),
        )
