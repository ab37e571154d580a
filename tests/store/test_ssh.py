"""fetch, pull, push and clone over ssh, against a private OpenSSH server on
127.0.0.1 (its own host key, a client key the test authorizes), with the
real ``git`` on the far side, and ``git`` itself cloning the store over ssh."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from looming.store import sync
from looming.store.errors import RefChanged
from looming.store.repo import Repo
from looming.unix.clock import UnixClock

from .conftest import GitRunner

pytestmark = pytest.mark.root

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class SshServer:
    port: int
    ssh_command: str  # for GIT_SSH_COMMAND

    def url(self, path: Path) -> str:
        return f"ssh://root@127.0.0.1:{self.port}{path}"


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "looming-test", "-f", str(path)],
        check=True,
        timeout=30,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def ssh_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SshServer]:
    if os.geteuid() != 0:
        pytest.fail("the ssh tests run sshd, which needs root (CI runs as root)")
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    _keygen(keys / "host_key")
    _keygen(keys / "client_key")
    shutil.copy(keys / "client_key.pub", keys / "authorized_keys")
    # sshd refuses to start without its privilege separation folder.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    process: subprocess.Popen[bytes] | None = None
    port = 0
    for _attempt in range(5):  # a port another program took meanwhile: take another
        port = _free_port()
        config = keys / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host_key'}\n"
            f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile {keys / 'sshd.pid'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "PrintMotd no\nLogLevel ERROR\n"
        )
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(250):  # until it accepts connections (or exits)
            if process.poll() is not None:
                break
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)
        if process.poll() is None:
            break
    assert process is not None and process.poll() is None, "sshd did not start"
    host_key = (keys / "host_key.pub").read_text().split()
    (keys / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    command = shlex.join(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(keys / "client_key"),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={keys / 'known_hosts'}",
        ]
    )
    monkeypatch.setenv("GIT_SSH_COMMAND", command)
    try:
        yield SshServer(port, command)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_fetch_pull_push_and_clone_over_ssh(
    ssh_server: SshServer, tmp_path: Path, git: GitRunner
) -> None:
    bare = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    repo = Repo.init(str(tmp_path / "store.git"), clock=UnixClock())
    store = repo.store()
    store.set("docs/readme.txt", b"from the store\n")
    # push over ssh into a repository git-receive-pack updates
    sync.push(repo, ssh_server.url(bare), "main")
    git("fsck", "--strict", cwd=bare)
    assert git("show", "main:docs/readme.txt", cwd=bare) == "from the store\n"
    # another replica clones over ssh, commits and pushes
    replica = sync.clone(ssh_server.url(bare), str(tmp_path / "replica.git"), clock=UnixClock())
    assert replica.store().get("docs/readme.txt") == b"from the store\n"
    replica.store().set("replica.txt", b"r\n")
    sync.push(replica, ssh_server.url(bare), "main")
    # the first store is behind: its push is refused, fetch and pull bring it up
    store.set("mine.txt", b"m\n")
    with pytest.raises(RefChanged):
        sync.push(repo, ssh_server.url(bare), "main")
    fetched = sync.fetch(repo, ssh_server.url(bare))
    assert fetched.branches["main"] == replica.head("main")
    assert sync.pull(store, ssh_server.url(bare)).ok
    assert store.get("replica.txt") == b"r\n" and store.get("mine.txt") == b"m\n"
    sync.push(repo, ssh_server.url(bare), "main")
    assert git("show", "main:replica.txt", cwd=bare) == "r\n"
    assert git("show", "main:mine.txt", cwd=bare) == "m\n"
    git("fsck", "--strict", cwd=bare)
    # git itself clones the store over ssh and pushes to it
    clone = tmp_path / "clone"
    git("clone", "-q", ssh_server.url(tmp_path / "store.git"), str(clone), cwd=tmp_path)
    assert (clone / "mine.txt").read_text() == "m\n"
    (clone / "from-git.txt").write_text("pushed by git over ssh\n")
    git("add", ".", cwd=clone)
    git("commit", "-q", "-m", "from git over ssh", cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)
    assert store.get("from-git.txt") == b"pushed by git over ssh\n"
    git("fsck", "--strict", cwd=tmp_path / "store.git")
    repo.close()
    replica.close()


def test_unreachable_ssh_remote_is_a_clear_error(ssh_server: SshServer, tmp_path: Path) -> None:
    repo = Repo.init(str(tmp_path / "store.git"), clock=UnixClock())
    with pytest.raises(sync.SyncError, match=r"fetch from .* failed"):
        sync.fetch(repo, ssh_server.url(tmp_path / "does-not-exist.git"))
    repo.close()
