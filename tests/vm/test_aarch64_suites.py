"""The TLS, store, vchan and FFI suites on aarch64, under qemu user emulation.

Debian's arm64 Python (the sysroot the aarch64 image is built from) runs
pytest itself, one process per suite, with an aarch64 site-packages made
from the wheels the image builder fetches (tests/vm/aarch64_site.py):
cryptography, cffi and dulwich with their compiled parts built for
aarch64, and pytest, hypothesis and tlslite-ng. Each suite's selection
covers its library's core; the peers its tests run (git, openssl) are the
host's programs, executed natively by the emulated process. The plugin
tests/vm/aarch64_plugin.py lowers hypothesis's example counts (a profile,
not a skip) and reports the machine the tests saw and each outcome.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.aarch64_plugin import REPORT_ENV
from tests.vm.aarch64_site import Guest, session_guest
from tests.vm.conftest import ROOT

pytestmark = pytest.mark.slow

SUITES: dict[str, tuple[str, ...]] = {
    # The RFC 8448 traces byte for byte, the record layer, the engine pair
    # against its stateful model, handshakes of every version, suite, group
    # and key type between two engines, their features (0-RTT, SNI, client
    # auth, psk_ke), the state machines, the alerts bad input gets, and
    # both directions against Python's ssl (the aarch64 build of OpenSSL),
    # openssl s_server and tlslite-ng.
    "tls": (
        "tests/tls/test_rfc8448.py",
        "tests/tls/test_rfc8448_replay.py",
        "tests/tls/test_records.py",
        "tests/tls/test_bulk_records.py",
        "tests/tls/test_message_classes.py",
        "tests/tls/test_states.py",
        "tests/tls/test_negotiated.py",
        "tests/tls/test_engine_model.py",
        "tests/tls/test_engine.py",
        "tests/tls/test_features.py",
        "tests/tls/test_psk_ke.py",
        "tests/tls/test_replayable_crypto.py",
        "tests/tls/test_bad_input.py",
        "tests/tls/test_edges.py",
        "tests/tls/test_flow.py",
        "tests/tls/test_python_ssl.py",
    ),
    # Object ids and encodings against git's, tree deltas through dulwich's
    # compiled decoder, the merge laws, the Store API, the repository model
    # and the pending-merge model, repositories checked with git fsck /
    # verify-pack, names and histories against git's.
    "store": (
        "tests/store/test_objects.py",
        "tests/store/test_delta.py",
        "tests/store/test_merge_laws.py",
        "tests/store/test_tree_merge_laws.py",
        "tests/store/test_store.py",
        "tests/store/test_store_model.py",
        "tests/store/test_git_interop.py",
        "tests/store/test_growing.py",
        "tests/store/test_kv.py",
        "tests/store/test_batch.py",
        "tests/store/test_pending.py",
        "tests/store/test_names.py",
        "tests/store/test_last_modified.py",
    ),
    # The ring's arithmetic and the shared page's layout, then endpoints in
    # two processes (fork) over shared memory: rendezvous, streams both
    # ways with each notifier, packets, a killed peer, asyncio flows; and
    # the process target: `looming run` of examples/vchan_store, the store
    # and the HTTP front end in their own emulated processes, supervised.
    "vchan": (
        "tests/vchan/test_ring.py",
        "tests/vchan/test_layout.py",
        "tests/vchan/test_endpoint.py",
        "tests/vchan/test_waiting.py",
        "tests/vchan/test_aio.py",
        "tests/vchan/test_reconnect.py",
        "tests/vchan/test_process_target.py",
        "tests/vchan/test_supervision.py",
    ),
    # The three backends against the aarch64 libc, zlib, libcrypt and
    # SQLite: dynamic (ctypes), compiled (a cffi extension built by the
    # cross compiler against the guest's headers, its layouts probed by
    # aarch64 programs) and isolated (a helper process, restarts, limits).
    "ffi": (
        "tests/ffi/test_description.py",
        "tests/ffi/test_declarations.py",
        "tests/ffi/test_codec.py",
        "tests/ffi/test_framing.py",
        "tests/ffi/test_libc.py",
        "tests/ffi/test_zlib.py",
        "tests/ffi/test_crypt.py",
        "tests/ffi/test_sqlite3.py",
        "tests/ffi/test_testlib.py",
        "tests/ffi/test_identical.py",
        "tests/ffi/test_async.py",
        "tests/ffi/test_isolated.py",
    ),
}
DESELECTED: dict[str, tuple[str, ...]] = {
    "vchan": (
        # Moves 1 GiB through the ring (some 40 s emulated); the streams of
        # test_endpoint and the 32-bit wrap-around of test_ring cover the
        # same code with less data.
        "tests/vchan/test_endpoint.py::test_one_gigabyte_between_processes_with_a_hash_check",
    ),
    "ffi": (
        # qemu-user cannot give the helper a fresh PID namespace (a threaded
        # process may not enter a new user namespace): these assert the
        # helper is PID 2 under its own init. tests/ffi/test_aarch64.py
        # checks the crash containment on aarch64 without that layer.
        "tests/ffi/test_libc.py::test_getpid_is_the_callers_unless_isolated[isolated]",
        "tests/ffi/test_isolated.py::test_a_segfault_is_an_exception_and_the_helper_restarts",
        # qemu maps the guest's memory itself: RLIMIT_AS does not bound a
        # guest malloc.
        "tests/ffi/test_isolated.py::test_address_space_limit_makes_big_allocations_fail",
        # qemu answers PR_SET_SECCOMP with EINVAL (it keeps its own system
        # calls), and the filter's shape is checked against the x86_64
        # system call table, which only an x86_64 host reads.
        "tests/ffi/test_isolated.py::test_seccomp_is_available_here",
        "tests/ffi/test_isolated.py::test_seccomp_errno_mode_refuses_unlisted_syscalls",
        "tests/ffi/test_isolated.py::test_seccomp_kill_mode_ends_the_helper_with_sigsys",
        "tests/ffi/test_isolated.py::test_seccomp_filter_program_shape",
    ),
}


# Compiled modules of the site-packages each suite must have loaded.
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "tls": ("cryptography/hazmat/bindings/_rust.abi3.so",),
    "store": ("dulwich/_objects.", "dulwich/_pack."),
    "vchan": (),
    "ffi": ("_cffi_backend.",),
}
EM_AARCH64 = 183


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> Guest:
    return session_guest(tmp_path_factory)


def run_suite(emulated: Guest, suite: str, folder: Path) -> tuple[dict[str, object], str]:
    """pytest under emulation on one suite: (the plugin's report, pytest's output).

    ``folder`` is short: vchan's registry sockets live under the tests'
    temporary folders, and a socket's path may not exceed 108 bytes."""
    report = folder / "report.json"
    command = [
        str(emulated.python), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
        "-p", "tests.vm.aarch64_plugin", f"--basetemp={folder / 'base'}",
        "--tb=short", "-rfE", "--disable-warnings",
        *(f"--deselect={node}" for node in DESELECTED.get(suite, ())),
        *SUITES[suite],
    ]  # fmt: skip
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(folder),
        "CC": str(emulated.compiler),
        "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}:{emulated.site}",
        REPORT_ENV: str(report),
    }
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    output = done.stdout[-4000:] + done.stderr[-3000:]
    assert done.returncode == 0, output
    assert report.is_file(), output
    return json.loads(report.read_text()), output


@pytest.fixture
def short_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="lm-a64-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_suite_passes_on_aarch64(emulated: Guest, suite: str, short_folder: Path) -> None:
    report, output = run_suite(emulated, suite, short_folder)
    assert (report["machine"], report["byteorder"]) == ("aarch64", "little")
    assert report["exitstatus"] == 0, output
    outcomes = report["outcomes"]
    assert isinstance(outcomes, dict)
    not_passed = {node: outcome for node, outcome in outcomes.items() if outcome != "passed"}
    assert not not_passed, output  # no failure and no skip
    for module in SUITES[suite]:
        ran = [node for node in outcomes if node.split("::")[0] == module]
        assert ran, f"no test of {module} ran on aarch64"
    extensions = report["extensions"]
    assert isinstance(extensions, list)
    ours = [Path(p) for p in extensions if Path(p).is_relative_to(emulated.site)]
    for wanted in EXTENSIONS[suite]:
        assert any(str(p.relative_to(emulated.site)).startswith(wanted) for p in ours), (
            f"{wanted} was not loaded from the aarch64 site-packages: {extensions}"
        )
    for file in ours:  # each an aarch64 ELF shared object
        header = file.read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == EM_AARCH64
