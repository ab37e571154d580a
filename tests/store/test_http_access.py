"""Who gets in through ``store serve``: tokens, per-branch rules, TLS, and
what a refused or broken push leaves behind (nothing), with the real ``git``
and ``curl`` as the clients."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from looming.store.auth import AccessPolicy, load_policy, parse_rules
from looming.store.http import ServeSettings
from looming.store.repo import Repo
from looming.unix.clock import UnixClock

from .conftest import GitRunner
from .served import TOKEN, basic, call, serving

RULES = """
anonymous_read = true

[[rule]]
branch = "main"
token = ["read", "write"]

[[rule]]
branch = "scratch/*"
token = ["read", "write", "force-push", "delete"]
"""


@pytest.fixture
def disk_repo(tmp_path: Path) -> Iterator[Repo]:
    """A repository whose writer never folds its packs in the background:
    the tests compare objects/ before and after a request, and a fold of
    earlier commits landing in between is not the request's doing."""
    repo = Repo.init(str(tmp_path / "store.git"), fold_when_idle=None, clock=UnixClock())
    yield repo
    repo.close()


def snapshot(repo: Repo) -> dict[str, str]:
    """Every file under objects/ and refs/ (and packed-refs), by content hash."""
    assert repo.path is not None
    root = Path(repo.path)
    found: dict[str, str] = {}
    for top in ("objects", "refs", "packed-refs"):
        base = root / top
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in paths:
            found[str(path.relative_to(root))] = hashlib.sha1(path.read_bytes()).hexdigest()
    return found


def helper(token: str) -> list[str]:
    """git options that answer credential prompts with ``token``."""
    script = f"!f() {{ echo username=pusher; echo password={token}; }}; f"
    return ["-c", "credential.helper=", "-c", f"credential.helper={script}"]


def curl(*args: str) -> tuple[int, bytes]:
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", *args],
        capture_output=True,
        timeout=60,
        check=True,
    )
    body, _, code = done.stdout.rpartition(b"\n")
    return int(code), body


def git_fails(git: GitRunner, *args: str, cwd: Path) -> str:
    with pytest.raises(AssertionError) as failure:
        git(*args, cwd=cwd)
    return str(failure.value)


@pytest.fixture
def work(disk_repo: Repo, tmp_path: Path, git: GitRunner) -> Path:
    disk_repo.store().set("index.html", b"one\n")
    work = tmp_path / "work"
    assert disk_repo.path is not None
    git("clone", "-q", disk_repo.path, str(work), cwd=tmp_path)
    return work


def commit(git: GitRunner, work: Path, name: str, text: str) -> str:
    (work / name).write_text(text)
    git("add", name, cwd=work)
    git("commit", "-q", "-m", f"change {name}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).strip()


def test_without_credentials_configured_nobody_writes(
    disk_repo: Repo, work: Path, git: GitRunner
) -> None:
    before = snapshot(disk_repo)
    with serving(disk_repo, AccessPolicy(None, anonymous_read=True)) as (port, _):
        url = f"http://127.0.0.1:{port}"
        code, body = curl("-X", "PUT", "--data-binary", "x", f"{url}/api/main/set/a")
        assert code == 403 and b"--token-file" in body
        code, body = curl("-u", f"u:{TOKEN}", "-X", "PUT", "-d", "x", f"{url}/api/main/set/a")
        assert code == 403 and b"no credentials are configured" in body  # so none is right
        assert curl(f"{url}/api/main/get/index.html") == (200, b"one\n")
        commit(git, work, "index.html", "two\n")
        message = git_fails(git, *helper(TOKEN), "push", f"{url}/", "HEAD:main", cwd=work)
        assert "403" in message
    assert snapshot(disk_repo) == before
    with serving(disk_repo, AccessPolicy(None)) as (port, _):
        code, body = curl(f"http://127.0.0.1:{port}/api/main/get/index.html")
        assert code == 403 and b"--anonymous-read" in body


def test_tokens_are_checked_on_every_api_write(disk_repo: Repo) -> None:
    before = snapshot(disk_repo)
    with serving(disk_repo) as (port, handler):
        url = f"http://127.0.0.1:{port}/api/main/set/k"
        code, body = curl("-X", "PUT", "-d", "v", url)
        assert code == 401 and b"token" in body
        assert curl("-u", "u:wrong-token-123456789", "-X", "PUT", "-d", "v", url)[0] == 401
        assert curl("-u", "u:" + TOKEN[:-1], "-X", "PUT", "-d", "v", url)[0] == 401
        assert curl("-H", "Authorization: Basic !!!", "-X", "PUT", "-d", "v", url)[0] == 401
        assert curl("-H", "Authorization: Bearer x", "-X", "DELETE", url)[0] == 401
        assert snapshot(disk_repo) == before
        assert handler.policy.failures[0] == 4
        assert curl("-u", f"anyone:{TOKEN}", "-X", "PUT", "-d", "v", url)[0] == 200
    assert disk_repo.store().get("k") == b"v"


def test_git_push_with_rules(disk_repo: Repo, work: Path, git: GitRunner) -> None:
    rules, anonymous = parse_rules(RULES)
    policy = AccessPolicy(TOKEN.encode(), rules, anonymous)
    with serving(disk_repo, policy) as (port, _):
        url = f"http://127.0.0.1:{port}/"
        # Anonymous clone works (anonymous_read); an anonymous push is asked
        # for credentials, and git's credential helper answers.
        git("clone", "-q", url, "anon", cwd=work.parent)
        first = commit(git, work, "index.html", "two\n")
        git_fails(git, "-c", "credential.helper=", "push", url, "HEAD:main", cwd=work)
        git(*helper(TOKEN), "push", "-q", url, "HEAD:main", cwd=work)
        assert disk_repo.head("main") == first
        # A non-fast-forward on main is refused: no force-push rule there.
        git("reset", "-q", "--hard", "HEAD~1", cwd=work)
        commit(git, work, "other.html", "diverged\n")
        before = snapshot(disk_repo)
        refused = git_fails(git, *helper(TOKEN), "push", "-f", url, "HEAD:main", cwd=work)
        assert "force-push" in refused
        assert snapshot(disk_repo) == before
        # Deleting main is refused too; both are allowed under scratch/.
        refused = git_fails(git, *helper(TOKEN), "push", url, ":main", cwd=work)
        assert "delete" in refused and disk_repo.head("main") == first
        git(*helper(TOKEN), "push", "-q", url, f"{first}:refs/heads/scratch/x", cwd=work)
        git(*helper(TOKEN), "push", "-q", "-f", url, "HEAD:scratch/x", cwd=work)
        git(*helper(TOKEN), "push", "-q", url, ":scratch/x", cwd=work)
        assert disk_repo.branches() == ["main"]
        # Only branches, with names git accepts.
        before = snapshot(disk_repo)
        refused = git_fails(git, *helper(TOKEN), "push", url, "HEAD:refs/tags/v1", cwd=work)
        assert "only branches" in refused
        refused = git_fails(git, *helper(TOKEN), "push", url, "HEAD:refs/heads/HEAD", cwd=work)
        assert "bad branch name" in refused and "checked-out commit" in refused
        assert snapshot(disk_repo) == before
        # An atomic push is all or nothing: the refused tag holds main back.
        ahead = commit(git, work, "atomic.html", "atomic\n")
        refused = git_fails(
            git, *helper(TOKEN), "push", "--atomic", url, "HEAD:side2", "HEAD:refs/tags/t", cwd=work
        )
        assert "atomic" in refused and "side2" not in disk_repo.branches()
        assert disk_repo.head("main") == first and ahead != first
        # The URL form of credentials works as well as a helper.
        git("push", "-q", f"http://u:{TOKEN}@127.0.0.1:{port}/", "HEAD:side", cwd=work)
        assert disk_repo.branches() == ["main", "side"]


def test_pushed_tree_entries_follow_fsck_rules(disk_repo: Repo, work: Path, git: GitRunner) -> None:
    blob = git("hash-object", "-w", "--stdin", cwd=work, input=b"payload\n").strip()
    tree = git("mktree", cwd=work, input=f"100644 blob {blob}\t.GIT\n".encode()).strip()
    head = git("rev-parse", "HEAD", cwd=work).strip()
    bad = git("commit-tree", tree, "-p", head, "-m", "bad", cwd=work).strip()
    before = snapshot(disk_repo)
    with serving(disk_repo) as (port, handler):
        url = f"http://u:{TOKEN}@127.0.0.1:{port}/"
        refused = git_fails(git, "push", url, f"{bad}:refs/heads/main", cwd=work)
        assert "400" in refused or ".GIT" in refused
        assert handler.last_receive is not None
        assert ".GIT" in (handler.last_receive.report.unpack_error or "")
    assert snapshot(disk_repo) == before


def test_broken_and_oversized_pushes_change_nothing(
    disk_repo: Repo, work: Path, git: GitRunner
) -> None:
    (work / "big.bin").write_bytes(os.urandom(300_000))
    git("add", "big.bin", cwd=work)
    git("commit", "-q", "-m", "big", cwd=work)
    new = git("rev-parse", "HEAD", cwd=work).strip()
    old = disk_repo.head("main")
    pack_bytes = subprocess.run(
        ["git", "pack-objects", "--stdout", "--revs"],
        cwd=work,
        input=f"{new}\n^{old}\n".encode(),
        capture_output=True,
        check=True,
    ).stdout
    assert len(pack_bytes) > 300_000
    line = f"{old} {new} refs/heads/main\0report-status".encode()
    commands = f"{len(line) + 4:04x}".encode() + line + b"0000"
    kind = {"Content-Type": "application/x-git-receive-pack-request", **basic()}
    before = snapshot(disk_repo)
    settings = ServeSettings(max_body_bytes=200_000)
    with serving(disk_repo, settings=settings) as (port, handler):
        truncated = commands + pack_bytes[: len(pack_bytes) // 4]
        status, body = call(port, "POST", "/git-receive-pack", truncated, kind)
        assert status == 400 and b"nothing changed" in body
        status, _ = call(port, "POST", "/git-receive-pack", commands + pack_bytes, kind)
        assert status == 413
        assert call(port, "PUT", "/api/main/set/k", b"x" * 200_001, basic())[0] == 413
        assert handler.bad_git_requests == 2  # the truncated pack and the oversized one
        refused = git_fails(
            git, "push", f"http://u:{TOKEN}@127.0.0.1:{port}/", "HEAD:main", cwd=work
        )
        assert "413" in refused
    assert snapshot(disk_repo) == before
    assert not list(Path(disk_repo.path or "", "objects").glob("incoming-*"))
    with serving(disk_repo) as (port, _):
        status, body = call(port, "POST", "/git-receive-pack", commands + pack_bytes, kind)
        assert status == 200 and b"ok refs/heads/main" in body
    assert disk_repo.head("main") == new


def test_push_to_checked_out_branch_is_refused_as_git_does(tmp_path: Path, git: GitRunner) -> None:
    repo = Repo.init(str(tmp_path / "site"), bare=False, fold_when_idle=None, clock=UnixClock())
    try:
        repo.store().set("a", b"1")
        git("clone", "-q", str(tmp_path / "site"), "work", cwd=tmp_path)
        work = tmp_path / "work"
        commit(git, work, "a", "2\n")
        before = snapshot(repo)
        with serving(repo) as (port, _):
            url = f"http://u:{TOKEN}@127.0.0.1:{port}/"
            refused = git_fails(git, "push", url, "HEAD:main", cwd=work)
            assert "branch is currently checked out" in refused
            assert snapshot(repo) == before
            git("push", "-q", url, "HEAD:other", cwd=work)  # another branch is fine
            code, body = call(port, "PUT", "/api/main/set/a", b"3", basic())
            assert code == 409 and b"checked out" in body
            assert call(port, "PUT", "/api/other/set/a", b"3", basic())[0] == 200
        # git's own receive-pack refuses the same push the same way.
        refused = git_fails(git, "push", str(tmp_path / "site"), "HEAD:main", cwd=work)
        assert "branch is currently checked out" in refused
    finally:
        repo.close()


def test_serve_https_with_looming_tls(disk_repo: Repo, tmp_path: Path, git: GitRunner) -> None:
    from looming.store.http import _tls_config

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ),
            *("-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-days", "1", "-keyout", str(key), "-out", str(cert)),
        ],
        capture_output=True,
        check=True,
    )
    with serving(disk_repo, tls=_tls_config(str(cert), str(key), disk_repo.clock)) as (port, _):
        url = f"https://127.0.0.1:{port}"
        code, _ = curl(
            "--cacert",
            str(cert),
            "-u",
            f"u:{TOKEN}",
            "-X",
            "PUT",
            "-d",
            "tls",
            f"{url}/api/main/set/t",
        )
        assert code == 200
        assert curl("--cacert", str(cert), f"{url}/api/main/get/t") == (200, b"tls")
        env = {**os.environ, "GIT_SSL_CAINFO": str(cert), "HOME": str(tmp_path)}
        subprocess.run(
            ["git", "clone", "-q", f"{url}/", "c"], cwd=tmp_path, env=env, check=True, timeout=60
        )
        assert (tmp_path / "c" / "t").read_text() == "tls"


def test_access_files_and_tokens_are_checked(tmp_path: Path) -> None:
    from looming.store.auth import AccessConfigError

    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(AccessConfigError, match="at least 16"):
        load_policy(token_file=str(short))
    with pytest.raises(AccessConfigError, match="cannot read token file"):
        load_policy(token_file=str(tmp_path / "missing"))
    assert load_policy(environ={"LOOMING_STORE_TOKEN": TOKEN}).token == TOKEN.encode()
    for text, error in [
        ("[[rule]]\nbranch = 'a'\ntoken = ['fly']", "unknown permission 'fly'"),
        ("[[rule]]\ntoken = ['read']", "needs branch"),
        ("colour = 1", "unknown setting 'colour'"),
        ("[[rule", "not valid TOML"),
    ]:
        with pytest.raises(AccessConfigError, match=error):
            parse_rules(text)


def test_large_push_and_clone_within_the_default_limit(
    disk_repo: Repo, work: Path, git: GitRunner
) -> None:
    """A 17 MiB file: beyond the old fixed 16 MiB limit, and sent chunked by git."""
    data = os.urandom(17 * 1024 * 1024)
    (work / "big.bin").write_bytes(data)
    git("add", "big.bin", cwd=work)
    git("commit", "-q", "-m", "big", cwd=work)
    with serving(disk_repo) as (port, _):
        url = f"http://u:{TOKEN}@127.0.0.1:{port}/"
        git("push", "-q", url, "HEAD:main", cwd=work)
        assert disk_repo.store().get("big.bin") == data
        git("clone", "-q", url, "again", cwd=work.parent)
    assert (work.parent / "again" / "big.bin").read_bytes() == data


def test_bad_api_requests_are_4xx_and_change_nothing(disk_repo: Repo) -> None:
    store = disk_repo.store()
    store.set("a", b"1")
    store.clone("feature").set("a", b"2")
    store.set("a", b"3")
    before = snapshot(disk_repo)
    auth = basic()
    with serving(disk_repo, settings=ServeSettings(max_body_bytes=1000)) as (port, _):
        for method, path, body, status, reason in [
            ("PUT", "/api/main/set/.git/config", b"x", 400, b".git"),
            ("PUT", "/api/main/set/a/GIT~1/x", b"x", 400, b"git~1"),
            ("PUT", "/api/main/set/a/../b", b"x", 400, b".."),
            ("PUT", "/api/HEAD/set/a", b"x", 400, b"HEAD"),
            ("PUT", "/api/-x/set/a", b"x", 400, b"'-'"),
            ("PUT", "/api/a..b/set/a", b"x", 400, b".."),
            ("POST", "/api/main/merge?from=bad..name", b"", 400, b".."),
            ("POST", "/api/main/resolve", b"{", 400, b"not JSON"),
            ("GET", "/api/main/history?limit=-1", None, 400, b"whole number"),
            ("PUT", "/api/main/set/big", b"x" * 1001, 413, b""),
        ]:
            code, answer = call(port, method, path, body, auth)
            assert (code, reason in answer) == (status, True), (path, answer)
        assert call(port, "DELETE", "/api/main/set/a", None, basic("not-the-token"))[0] == 401
    assert snapshot(disk_repo) == before


def test_quarantines_left_by_a_killed_server_are_reclaimed(disk_repo: Repo) -> None:
    from looming.store.http import StoreHttp

    objects = Path(disk_repo.path or "", "objects")
    stale, fresh = objects / "incoming-stale", objects / "incoming-fresh"
    for folder in (stale, fresh):
        (folder / "pack").mkdir(parents=True)
        (folder / "pack" / "tmp_pack_x").write_bytes(b"PACK")
    old = disk_repo.clock.now() - 7200
    os.utime(stale, (old, old))
    handler = StoreHttp(disk_repo, AccessPolicy(TOKEN.encode()))
    handler.close()
    assert handler.reclaimed == 1 and not stale.exists() and fresh.exists()


def pkt(line: bytes) -> bytes:
    return f"{len(line) + 4:04x}".encode() + line


def test_gzip_bodies_are_inflated_with_a_bound(disk_repo: Repo) -> None:
    import gzip

    head = disk_repo.store().set("a", b"1")
    want = (
        pkt(f"want {head} side-band-64k thin-pack ofs-delta\n".encode()) + b"0000" + pkt(b"done\n")
    )
    kind = {"Content-Type": "application/x-git-upload-pack-request", **basic()}
    gzipped = {"Content-Encoding": "gzip", **kind}
    with serving(disk_repo, settings=ServeSettings(max_body_bytes=100_000)) as (port, handler):
        status, body = call(port, "POST", "/git-upload-pack", gzip.compress(want), gzipped)
        assert status == 200 and b"PACK" in body
        bomb = gzip.compress(want + b"0" * 10_000_000)
        assert len(bomb) < 100_000
        status, body = call(port, "POST", "/git-upload-pack", bomb, gzipped)
        assert status == 413 and b"inflates past the limit" in body
        status, body = call(port, "POST", "/git-upload-pack", b"\x1f\x8bnot gzip", gzipped)
        assert status == 400 and b"does not inflate" in body
        brotli = {"Content-Encoding": "br", **kind}
        assert call(port, "POST", "/git-upload-pack", want, brotli)[0] == 400
        assert handler.bad_git_requests == 1


def test_branches_with_slashes_in_the_api(disk_repo: Repo) -> None:
    rules, anonymous = parse_rules(RULES)
    with serving(disk_repo, AccessPolicy(TOKEN.encode(), rules, anonymous)) as (port, _):
        assert call(port, "PUT", "/api/scratch%2Fx/set/k", b"v", basic())[0] == 200
        assert call(port, "GET", "/api/scratch%2Fx/get/k") == (200, b"v")
        # anonymous_read opens scratch/* too (its rule says nothing of anonymous)
        assert call(port, "PUT", "/api/scratch%2Fx/set/k", b"w")[0] == 401
    assert disk_repo.store("scratch/x").get("k") == b"v"


def test_a_server_fault_in_a_git_request_is_not_blamed_on_the_peer(
    disk_repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    import looming.store.http as store_http

    def missing_module(*args: object) -> object:
        raise ModuleNotFoundError("No module named 'concurrent.futures.thread'")

    monkeypatch.setattr(store_http, "git_app", missing_module)
    with serving(disk_repo) as (port, handler):
        status, _ = call(port, "GET", "/info/refs?service=git-upload-pack", b"", basic())
        assert status == 500
        assert handler.bad_git_requests == 0
