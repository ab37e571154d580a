"""Supervision in the process target: restart policies, start order, reconnection,
and a `looming run` whose death (SIGKILL included) takes everything with it."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from looming.cli import main as looming
from looming.errors import ConfigError
from looming.vchan.deploy import (
    DEPLOY_PREFIX,
    Member,
    parse_budget,
    parse_policies,
    restart_delay,
    should_restart,
    start_order,
)
from looming.vchan.segment import SEGMENT_PREFIX

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vchan_store"
TMP = Path("/tmp")
SHM = Path("/dev/shm")


def member(name: str, peers: tuple[str, ...] = (), policy: str = "never") -> Member:
    return Member(name, Path(f"{name}.pyz"), {}, peers=peers, policy=policy)


def test_policies_and_budget_are_parsed_with_clear_errors() -> None:
    assert parse_policies("store=always, front=on-failure", ["store", "front", "x"]) == {
        "store": "always",
        "front": "on-failure",
        "x": "never",
    }
    with pytest.raises(ConfigError, match="NAME=POLICY"):
        parse_policies("store=sometimes", ["store"])
    with pytest.raises(ConfigError, match="not a unikernel"):
        parse_policies("db=always", ["store"])
    assert parse_budget("5/10") == (5, 10.0)
    for bad in ("5", "x/10", "5/0", "-1/3"):
        with pytest.raises(ConfigError, match="COUNT/SECONDS"):
            parse_budget(bad)


def test_dependencies_start_first_and_cycles_are_refused() -> None:
    members = [member("front", ("cache", "store")), member("cache", ("store",)), member("store")]
    assert [m.name for m in start_order(members)] == ["store", "cache", "front"]
    with pytest.raises(ConfigError, match="cycle: a -> b -> a"):
        start_order([member("a", ("b",)), member("b", ("a",))])
    with pytest.raises(ConfigError, match="no unikernel here"):
        start_order([member("a", ("ghost",))])


def test_restarts_back_off_and_stop_when_the_budget_is_spent() -> None:
    store = member("store", policy="always")
    delays = []
    now = 100.0
    for _ in range(3):
        delay = restart_delay(store, now, (3, 10.0))
        assert delay is not None
        delays.append(delay)
        store.restarts.append(now)
        now += 1.0
    assert delays == [0.1, 0.2, 0.4]
    assert restart_delay(store, now, (3, 10.0)) is None  # four within ten seconds
    assert restart_delay(store, now + 10.0, (3, 10.0)) == 0.1  # the period has passed
    assert should_restart(member("a", policy="on-failure"), 137)
    assert not should_restart(member("a", policy="on-failure"), 0)
    assert should_restart(member("a", policy="always"), 0)
    assert not should_restart(member("a", policy="never"), 1)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    target = tmp_path / "vchan_store"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("_build", "dist", "__pycache__"))
    configure = ["configure", "-t", "process", "--unikernel", "front"]
    configure += ["--restart", "store=always", "--restart-budget", "20/10"]
    assert looming(["--app", str(target), *configure]) == 0
    assert looming(["--app", str(target), "build"]) == 0
    return target


class Run:
    """`looming run` with its output in files, read as it grows."""

    def __init__(self, app: Path, logs: Path) -> None:
        self.out, self.err = logs / "out.txt", logs / "err.txt"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "looming.vchan.deploy", "--app", str(app), "--port", "0"],
                stdout=out,
                stderr=err,
            )

    def wait_for(self, pattern: str, timeout: float = 30.0, count: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.out.read_text() + self.err.read_text())
            if len(found) >= count:
                return found
            assert self.process.poll() is None, self.err.read_text()[-3000:]
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} x{count}: {self.err.read_text()[-3000:]}")

    def pids(self, name: str) -> list[int]:
        return [int(p) for p in re.findall(rf"started {name} \(pid (\d+)\)", self.err.read_text())]


@pytest.fixture
def run(app: Path, tmp_path: Path) -> Iterator[Run]:
    running = Run(app, tmp_path)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGINT)
            try:
                running.process.wait(15)
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait()
        for pid in [*running.pids("store"), *running.pids("front")]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False  # reaped between the signal and the read
    return "State:\tZ" not in status


def segments_of(pids: list[int]) -> list[str]:
    return [
        name
        for name in os.listdir(SHM)
        if any(name.startswith(f"{SEGMENT_PREFIX}{pid}-") for pid in pids)
    ]


def test_sigkill_of_looming_run_takes_every_child_and_its_shared_memory(run: Run) -> None:
    run.wait_for(r"front: HTTP on port (\d+)")
    children = [*run.pids("store"), *run.pids("front")]
    assert len(children) == 2 and all(alive(pid) for pid in children)
    launcher = run.process.pid
    registries = [n for n in os.listdir(TMP) if n.startswith(f"{DEPLOY_PREFIX}{launcher}-")]
    assert len(registries) == 1
    assert segments_of(children)  # the store's port, published for its next client
    run.process.kill()
    run.process.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
        any(alive(pid) for pid in children)
        or (TMP / registries[0]).exists()
        or segments_of(children)
    ):
        time.sleep(0.05)
    assert [pid for pid in children if alive(pid)] == []
    assert not (TMP / registries[0]).exists()
    assert segments_of(children) == []


def test_the_front_end_answers_while_its_store_is_killed_every_second(run: Run) -> None:
    port = int(run.wait_for(r"front: HTTP on port (\d+)")[0])
    front = run.pids("front")
    outcomes: list[tuple[float, str, int | str]] = []
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            for method, body in (("PUT", f"v{n}".encode()), ("GET", None)):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    connection.request(method, "/kv/key", body=body)
                    response = connection.getresponse()
                    payload = response.read()
                    ok = method == "PUT" or response.status != 200 or payload == f"v{n}".encode()
                    outcomes.append((time.monotonic(), method, response.status if ok else "stale"))
                except OSError as exc:
                    outcomes.append((time.monotonic(), method, f"{type(exc).__name__}: {exc}"))
                finally:
                    connection.close()

    worker = threading.Thread(target=load)
    worker.start()
    try:
        for kill in range(4):
            time.sleep(1.0)
            store = run.pids("store")[-1]
            os.kill(store, signal.SIGKILL)
            run.wait_for(r"started store \(pid", count=kill + 2)
        last_kill = time.monotonic()
        # Until the restarted store answers (its fourth restart waits 0.8 s),
        # then a second more of load.
        deadline = last_kill + 10
        while time.monotonic() < deadline and not any(
            at > last_kill and status in (200, 204) for at, _, status in outcomes
        ):
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join(30)
    statuses = [status for _, _, status in outcomes]
    failures = [s for s in statuses if not isinstance(s, int) or s not in (200, 204, 404, 503)]
    assert failures == [], failures[:5]
    assert 503 in statuses  # while the store restarted
    assert statuses.count(204) > 4 and statuses.count(200) > 4
    recovered = [at for at, _, status in outcomes if at > last_kill and status in (200, 204)]
    assert recovered, "the front end never reached the restarted store"
    settled = [status for at, _, status in outcomes if at > recovered[0]]
    assert len(settled) > 4 and set(settled) <= {200, 204}, settled
    assert run.pids("front") == front and alive(front[0])  # the front end never restarted
    assert len(run.pids("store")) == 5
    assert run.err.read_text().count("restarting in") == 4
