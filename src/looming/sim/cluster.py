"""Seed sweeps on a Dask distributed cluster (``looming sim run --seeds A..B --cluster ADDRESS``).

What a worker needs to run a seed goes to it as one zip, the *bundle*: the
scenario file with the other files of its folder, and every application
folder the scenario names with its built sim artifact (``dist/*-sim.pyz``;
other build output, caches and VCS folders are left out). Nothing is read
from the submitting machine's file system on a worker. The bundle is
scattered to every worker once; a worker unpacks it into its own cache
(``looming-sim/<sha256 of the bundle>`` in the worker's local directory),
checking the hash first, so a second sweep of the same build unpacks
nothing, and loads the scenario and artifacts from there once per process.

One task per seed. A worker process runs one seed at a time (a run takes
over its thread's asyncio loop, time and randomness; start workers with
``--nthreads 1``, and ``--nworkers N`` for N processes). When a worker dies
mid-sweep, the scheduler gives its seeds to the others; a seed whose worker
died every time it ran it (``distributed.scheduler.allowed-failures``) is a
failing seed. A seed runs the same way on a worker as in a local sweep, so
its trace digest is the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import looming
from looming.errors import UsageError
from looming.sim.cli import SeedOutcome

if TYPE_CHECKING:
    from looming.sim.artifact import Artifact
    from looming.sim.spec import Scenario

# Wall seconds to reach the scheduler before giving up.
CONNECT_TIMEOUT_S = 5.0
# Wall seconds to wait for a first worker, or for one to come back when all left.
WORKER_WAIT_S = 20.0
# Every file's date in the bundle (1980-01-01, the first a zip can say).
_BUNDLE_DATE = (1980, 1, 1, 0, 0, 0)
_BUNDLE_TIME = 315532800
# What an application folder's copy in the bundle leaves out.
_SKIP_DIRS = frozenset({"_build", "dist", "__pycache__", "sim-out", "node_modules"})


class ClusterError(UsageError):
    """The cluster cannot run the sweep (exit code 2): unreachable, no workers, mismatched."""


def require_distributed() -> Any:
    """The ``distributed`` module, or a one-line error naming the extra to install."""
    try:
        import distributed
    except ImportError:
        raise ClusterError(
            "--cluster needs dask.distributed, which is not installed: "
            "pip install 'looming[cluster]'"
        ) from None
    return distributed


# -- the bundle ----------------------------------------------------------------------


@dataclass(frozen=True)
class BundleInfo:
    """What a worker needs besides the bundle's bytes (paths are inside the zip)."""

    digest: str
    scenario: str
    name: str | None
    artifacts: tuple[tuple[str, str], ...]
    looming_version: str
    # What the command line changes in the loaded scenario (its faults,
    # duration, nodes): an object whose ``apply(scenario)`` gives the scenario
    # to run, as :class:`looming.sim.shrink.Override`; None for no change.
    changes: Any = None


@dataclass(frozen=True)
class Bundle:
    info: BundleInfo
    data: bytes


def _app_files(app: Path) -> Iterator[Path]:
    for path in sorted(app.rglob("*")):
        parts = path.relative_to(app).parts
        if any(part in _SKIP_DIRS or part.startswith(".") for part in parts):
            continue
        if path.is_file():
            yield path


def _bundle_files(
    scenario_file: Path, scenario: Scenario, artifacts: dict[str, Artifact]
) -> list[Path]:
    files = {p for p in scenario_file.parent.iterdir() if p.is_file() and p.name[0] != "."}
    files.add(scenario_file)
    for spec in scenario.nodes:
        if spec.app is not None:
            files.update(_app_files(spec.app.resolve()))
    files.update(artifact.path for artifact in artifacts.values())
    return sorted(files)


def make_bundle(
    scenario_file: str | Path,
    name: str | None,
    scenario: Scenario,
    artifacts: dict[str, Artifact],
    changes: Any = None,
) -> Bundle:
    """The zip a worker runs the scenario from; its bytes depend only on the
    files' contents and relative places (fixed dates, sorted names)."""
    scenario_path = Path(scenario_file).resolve()
    files = _bundle_files(scenario_path, scenario, artifacts)
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as bundle:
        for path in files:
            entry = zipfile.ZipInfo(path.relative_to(root).as_posix(), _BUNDLE_DATE)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(entry, path.read_bytes())
    data = buffer.getvalue()
    info = BundleInfo(
        digest=hashlib.sha256(data).hexdigest(),
        scenario=scenario_path.relative_to(root).as_posix(),
        name=name,
        artifacts=tuple(
            (node, artifact.path.relative_to(root).as_posix())
            for node, artifact in sorted(artifacts.items())
        ),
        looming_version=looming.__version__,
        changes=changes,
    )
    return Bundle(info, data)


# -- on a worker -----------------------------------------------------------------------


def cache_root() -> Path:
    """Where this worker keeps unpacked bundles: its own local directory."""
    try:
        from distributed import get_worker

        return Path(get_worker().local_directory) / "looming-sim"
    except (ImportError, ValueError):
        return Path(tempfile.gettempdir()) / f"looming-sim-cache-{os.getuid()}"


def unpack(data: bytes, digest: str, root: Path) -> Path:
    """The bundle unpacked in ``root/<digest>`` (once: a later call finds it)."""
    target = root / digest
    if target.is_dir():
        return target
    if hashlib.sha256(data).hexdigest() != digest:
        raise ClusterError(f"the scenario bundle {digest[:16]} arrived damaged (its hash differs)")
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=root))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as bundle:
            bundle.extractall(scratch)
            # One time for every file (the zip's), so that a built artifact is
            # not older than its sources and nothing is built again here.
            for name in bundle.namelist():
                os.utime(scratch / name, (_BUNDLE_TIME, _BUNDLE_TIME))
        scratch.rename(target)
    except OSError:
        if not target.is_dir():  # not merely another process unpacking it first
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


# Per worker process: the scenarios loaded from unpacked bundles (a few).
_loaded: dict[tuple[str, str], tuple[Scenario, dict[str, Artifact]]] = {}
# A run takes over its thread's event loop and the process's interception:
# one at a time per process, whatever the worker's thread count.
_run_lock = threading.Lock()


def _load(info: BundleInfo, data: bytes) -> tuple[Scenario, dict[str, Artifact]]:
    from looming.sim.artifact import Artifact
    from looming.sim.spec import load_scenario

    key = (info.digest, repr(info.changes))
    found = _loaded.get(key)
    if found is None:
        folder = unpack(data, info.digest, cache_root())
        scenario = load_scenario(folder / info.scenario, info.name)
        if info.changes is not None:
            scenario = info.changes.apply(scenario)
        artifacts = {node: Artifact(folder / path) for node, path in info.artifacts}
        while len(_loaded) >= 4:
            del _loaded[next(iter(_loaded))]
        found = _loaded[key] = (scenario, artifacts)
    return found


@dataclass
class ClusterOutcome(SeedOutcome):
    worker: str = ""


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return ""


def run_bundle_seed(info: BundleInfo, data: bytes, seed: int) -> ClusterOutcome:
    """One seed of a cluster sweep, in a worker process (a fresh one will do)."""
    from looming.sim.world import run

    if info.looming_version != looming.__version__:
        raise ClusterError(
            f"worker {_worker_address()} has looming {looming.__version__}, the sweep was "
            f"started with looming {info.looming_version}: install the same on every worker"
        )
    with _run_lock:
        scenario, artifacts = _load(info, data)
        result = run(scenario, seed, artifacts=artifacts, keep_trace=False)
    failure = result.failures[0] if result.failures else None
    return ClusterOutcome(
        seed, result.ok, result.virtual_seconds, result.digest, failure, _worker_address()
    )


# -- the submitting side -------------------------------------------------------------------


def connect(address: str, seeds: str | None, jobs: str | None) -> ClusterSweep:
    """Check ``--cluster``'s companions, then reach the scheduler."""
    if seeds is None:
        raise UsageError("--cluster runs a sweep: give --seeds A..B")
    if jobs is not None:
        raise UsageError("give -j or --cluster, not both: the cluster's workers set how many run")
    return ClusterSweep(address)


def _probe(address: str) -> None:
    """A malformed, refused or unreachable TCP address fails here at once,
    with the reason, rather than after the client's connection retries."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme not in ("tcp", "tls"):
            return
        host, port = parse_host_port(location)
    except ValueError as error:
        raise ClusterError(
            f"--cluster {address!r} is not a scheduler address ({error}); "
            "write tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786"
        ) from None
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise ClusterError(
            f"--cluster {address}: cannot connect to {host}:{port} ({reason}); {_advice(address)}"
        ) from None
    try:
        asyncio.run(_handshake(address))
    except Exception as error:
        reason = str(error) or type(error).__name__
        raise ClusterError(
            f"--cluster {address}: something answers there, but not a Dask scheduler "
            f"({reason}); {_advice(address)}"
        ) from None


async def _handshake(address: str) -> None:
    """Connect as Dask does (which exchanges handshakes), then leave."""
    distributed = require_distributed()
    comm = await distributed.comm.connect(address, timeout=CONNECT_TIMEOUT_S)
    await comm.close()


def _advice(address: str) -> str:
    return (
        f"start a scheduler with 'dask scheduler' and workers with "
        f"'dask worker {address} --nthreads 1'"
    )


class ClusterSweep:
    """A connection to a Dask scheduler that sweeps seeds on its workers."""

    def __init__(self, address: str, note: Callable[[str], None] | None = None) -> None:
        distributed = require_distributed()
        self.address = address
        self.note = note or (lambda line: print(line, flush=True))
        self.workers_seen: set[str] = set()
        self._workers = 0
        self._checked = 0.0
        self._none_since: float | None = None
        _probe(address)
        try:
            self.client = distributed.Client(
                address, timeout=CONNECT_TIMEOUT_S, set_as_default=False
            )
        except Exception as error:
            reason = str(error) or type(error).__name__
            raise ClusterError(
                f"--cluster {address}: no Dask scheduler answered ({reason}); {_advice(address)}"
            ) from None

    def close(self) -> None:
        self.client.close()

    def describe(self) -> str:
        return f"{len(self.workers_seen)} Dask workers at {self.address}"

    def sweep(
        self,
        scenario_file: str | Path,
        name: str | None,
        scenario: Scenario,
        artifacts: dict[str, Artifact],
        seeds: Iterable[int],
        changes: Any = None,
    ) -> Iterator[SeedOutcome]:
        """The whole sweep: bundle, run, and close the connection at the end."""
        try:
            bundle = make_bundle(scenario_file, name, scenario, artifacts, changes)
            yield from self.outcomes(bundle, seeds)
        finally:
            self.close()

    def _wait_for_workers(self) -> None:
        threads = self.client.nthreads()
        if not threads:
            self.note(f"cluster: waiting up to {WORKER_WAIT_S:g} s for a worker to join")
            try:
                self.client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            except (TimeoutError, OSError):
                raise ClusterError(
                    f"the scheduler at {self.address} has no workers: "
                    f"start some with 'dask worker {self.address} --nthreads 1'"
                ) from None
            threads = self.client.nthreads()
        self._workers = len(threads)
        self.note(f"cluster: {self.address}, {len(threads)} workers")
        for worker, count in sorted(threads.items()):
            if count > 1:
                self.note(
                    f"cluster: worker {worker} has {count} threads but runs one seed at a "
                    "time; start workers with --nthreads 1 (and --nworkers N for N processes)"
                )

    def _watch_workers(self, left: int, *, now_or_never: bool = False) -> None:
        """Say when workers come and go; give up when none is left for too long."""
        now = time.monotonic()
        if now - self._checked < 0.25 and not now_or_never:
            return
        self._checked = now
        workers = len(self.client.nthreads())
        if workers != self._workers:
            self.note(f"cluster: {workers} workers (was {self._workers}); {left} seeds to go")
            self._workers = workers
        if workers or not left:
            self._none_since = None
            return
        self._none_since = self._none_since or now
        if now - self._none_since > WORKER_WAIT_S:
            raise ClusterError(
                f"every worker left the cluster at {self.address} and none came back in "
                f"{WORKER_WAIT_S:g} s; {left} seeds did not run"
            )

    def outcomes(self, bundle: Bundle, seeds: Iterable[int]) -> Iterator[SeedOutcome]:
        """Every seed's outcome, as the seeds complete (not in seed order)."""
        distributed = require_distributed()
        self._wait_for_workers()
        [data] = self.client.scatter([bundle.data], broadcast=True, hash=False)
        token = uuid.uuid4().hex[:8]
        futures = {
            self.client.submit(
                run_bundle_seed, bundle.info, data, seed, key=f"looming-sim-{token}-seed-{seed}"
            ): seed
            for seed in seeds
        }
        left = len(futures)
        try:
            completed = distributed.as_completed(list(futures), loop=self.client.loop)
            while not completed.is_empty():
                batch = completed.next_batch(block=False)
                if not batch:
                    self._watch_workers(left)
                    time.sleep(0.02)
                    continue
                for future in sorted(batch, key=futures.__getitem__):
                    left -= 1
                    yield self._outcome(future, futures[future])
            self._watch_workers(0, now_or_never=True)  # a loss near the end is news too
        finally:
            self.client.cancel([*futures, data])

    def _outcome(self, future: Any, seed: int) -> SeedOutcome:
        from distributed.scheduler import KilledWorker

        if future.status != "error":
            outcome: ClusterOutcome = future.result()
            self.workers_seen.add(outcome.worker)
            return outcome
        error = future.exception()
        if isinstance(error, KilledWorker):
            return SeedOutcome(
                seed,
                False,
                0.0,
                "(worker died)",
                "the worker running it died each time it was tried (it may crash the "
                "interpreter or exhaust memory): replay it locally",
            )
        raise ClusterError(f"seed {seed} could not run on the cluster: {error}")
