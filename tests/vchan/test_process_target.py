"""The process deployment: `looming run` of examples/vchan_store starts the
store and the HTTP front end in their own processes, joined by a vchan;
curl talks to the front end; stopping one stops both and leaves nothing."""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from looming.cli import main as looming
from looming.config.targets import get_target
from looming.errors import ConfigError
from looming.vchan.deploy import DEPLOY_PREFIX

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vchan_store"
TMP = Path("/tmp")


def deploy_dirs(launcher: int) -> set[str]:
    """The private registries of the deployment run by process ``launcher``."""
    return {n for n in os.listdir(TMP) if n.startswith(f"{DEPLOY_PREFIX}{launcher}-")}


@pytest.fixture
def app(tmp_path: Path) -> Path:
    target = tmp_path / "vchan_store"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("_build", "dist", "__pycache__"))
    assert (
        looming(["--app", str(target), "configure", "-t", "process", "--unikernel", "front"]) == 0
    )
    assert looming(["--app", str(target), "build"]) == 0
    return target


class Deployment:
    def __init__(self, app: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from looming.cli import main; sys.exit(main())",
                *("--app", str(app), "run", "--port", "0"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.output = b""
        self.errors = b""
        self.port = 0
        self.pids: dict[str, int] = {}

    def wait_until_serving(self) -> None:
        self.port = int(self.wait_for(rb"front: HTTP on port (\d+)").group(1))
        self.wait_for(rb"started front \(pid", errors=True)
        self.pids = {
            m.group(1).decode(): int(m.group(2))
            for m in re.finditer(rb"deploy: started (\w+) \(pid (\d+)\)", self.errors)
        }

    def wait_for(
        self, pattern: bytes, timeout: float = 30.0, *, errors: bool = False
    ) -> re.Match[bytes]:
        assert self.process.stdout is not None and self.process.stderr is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            selector.register(self.process.stderr, selectors.EVENT_READ)
            while (found := re.search(pattern, self.errors if errors else self.output)) is None:
                events = selector.select(timeout)
                assert events, f"no {pattern!r} in time: {self.output!r} {self.errors!r}"
                for key, _ in events:
                    chunk = os.read(key.fd, 65536)
                    if key.fileobj is self.process.stdout:
                        self.output += chunk
                    else:
                        self.errors += chunk
                if self.process.poll() is not None and not any(e for e in events):
                    break
        assert found is not None
        return found

    def curl(self, *args: str | Path) -> tuple[str, str]:
        done = subprocess.run(
            ["curl", "-s", "-w", "\n%{http_code}", *args, f"http://127.0.0.1:{self.port}/kv/k1"],
            capture_output=True,
            check=True,
            timeout=30,
        )
        body, _, status = done.stdout.decode().rpartition("\n")
        return status, body

    def finish(self) -> tuple[int, str]:
        _, errors = self.process.communicate(timeout=30)
        return self.process.returncode, (self.errors + errors).decode()


@pytest.fixture
def deployment(app: Path) -> Iterator[Deployment]:
    running = Deployment(app)
    try:
        running.wait_until_serving()
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()
        for pid in running.pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        left = deploy_dirs(running.process.pid)
        for name in left:
            shutil.rmtree(TMP / name, ignore_errors=True)
    assert left == set(), "the deployment left its registry behind"


def test_http_front_end_reaches_the_store_over_vchan(
    deployment: Deployment, tmp_path: Path
) -> None:
    assert set(deployment.pids) == {"store", "front"}
    assert deployment.curl() == ("404", "no such key\n")
    assert deployment.curl("-X", "PUT", "--data-binary", "hello over vchan") == ("204", "")
    assert deployment.curl() == ("200", "hello over vchan")
    big = "x" * 300_000  # larger than the 64 KiB rings: streamed through them
    (tmp_path / "big").write_text(big)
    assert deployment.curl("-X", "PUT", "--data-binary", f"@{tmp_path / 'big'}") == ("204", "")
    assert deployment.curl() == ("200", big)
    assert deployment.curl("-X", "DELETE") == ("204", "")
    assert deployment.curl() == ("404", "no such key\n")
    deployment.process.send_signal(signal.SIGINT)
    code, errors = deployment.finish()
    assert code == 130, errors
    assert "stopping every unikernel" in errors
    for pid in deployment.pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_one_unikernel_dying_stops_the_other(deployment: Deployment) -> None:
    assert deployment.curl("-X", "PUT", "--data-binary", "v") == ("204", "")
    os.kill(deployment.pids["store"], signal.SIGKILL)
    code, errors = deployment.finish()
    assert code == 128 + signal.SIGKILL, errors
    assert "store exited with status -9; stopping the others" in errors
    with pytest.raises(ProcessLookupError):
        os.kill(deployment.pids["front"], 0)


def test_unknown_keys_are_a_usage_error(app: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "looming.vchan.deploy", "--app", str(app), "--colour", "red"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no unikernel declares the key --colour" in done.stderr


def test_the_unix_target_points_at_the_process_target(tmp_path: Path) -> None:
    from looming.config import loader, plan

    app = tmp_path / "app"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("_build", "dist"))
    front = next(u for u in loader.load(app).unikernels if u.name == "front")
    with pytest.raises(ConfigError, match=r"no implementation for device 'vchan'.*process"):
        plan.resolve(front, app, get_target("unix"), get_target("unix").default_options())
