"""A kv_ro folder serves the same keys crunched into the artifact as read in
place: one rule (looming.unix.kv.served_target) for hidden names, links
leading to hidden entries, links leading outside and links to folders."""

from __future__ import annotations

import asyncio
import http.client
import json
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from looming.devices import EntryKind, KvRo
from looming.errors import KeyNotFound, NotAValue
from looming.http import StaticSite
from looming.unix.kv import MANIFEST_DIR, CrunchedKv, DirectoryKv, crunch_manifest, survey_folder
from tests.http.serving import serve_in_thread

SECRET = b"SECRET"


def crunched(root: Path, archive: Path) -> CrunchedKv:
    """``root`` as the build crunches it into an artifact."""
    manifest, pairs = crunch_manifest(root)
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{MANIFEST_DIR}/site.json", json.dumps(manifest))
        for rel, path in pairs:
            z.writestr(f"{MANIFEST_DIR}/site/{rel}", path.read_bytes())
    return CrunchedKv.load("site", str(archive))


async def value_of(kv: KvRo, key: str) -> bytes | None:
    """The value ``key`` names, or None when it names none."""
    try:
        value = await kv.get(key)
    except (KeyNotFound, NotAValue):
        assert await kv.exists(key) is not EntryKind.VALUE, key
        return None
    assert await kv.exists(key) is EntryKind.VALUE, key
    return value


def planted(tmp_path: Path) -> Path:
    """A site with secrets behind links: the audit's cases."""
    root = tmp_path / "htdocs"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_bytes(b"<h1>hi</h1>")
    (root / "sub" / "page.html").write_bytes(b"page")
    (root / ".env").write_bytes(SECRET + b"=1")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(SECRET + b" [core]")
    (root / "env.txt").symlink_to(".env")
    (root / "gitlink").symlink_to(".git")
    (root / "config.txt").symlink_to(".git/config")
    (root / "subl").symlink_to("sub")
    (root / "alias.html").symlink_to("index.html")
    (root / "page-alias.html").symlink_to("subl/page.html")
    return root


REFUSED = [
    ".env",
    "env.txt",
    "gitlink/config",
    "gitlink",
    "config.txt",
    ".git/config",
    "subl/page.html",
    "subl",
]


@pytest.mark.parametrize("mode", ["direct", "crunch"])
def test_links_to_hidden_entries_and_folders_are_not_served(tmp_path: Path, mode: str) -> None:
    root = planted(tmp_path)
    kv: KvRo = DirectoryKv(root) if mode == "direct" else crunched(root, tmp_path / "a.pyz")

    async def check() -> None:
        for key in REFUSED:
            assert await value_of(kv, key) is None, key
        assert await value_of(kv, "alias.html") == b"<h1>hi</h1>"
        assert await value_of(kv, "page-alias.html") == b"page"
        assert await value_of(kv, "sub/page.html") == b"page"
        names = [name for name, _ in await kv.list("")]
        assert names == ["alias.html", "index.html", "page-alias.html", "sub"]

    asyncio.run(check())


@pytest.mark.parametrize("mode", ["direct", "crunch"])
def test_a_site_serves_no_secret_through_a_link(tmp_path: Path, mode: str) -> None:
    root = planted(tmp_path)
    kv: KvRo = DirectoryKv(root) if mode == "direct" else crunched(root, tmp_path / "a.pyz")
    with serve_in_thread(lambda: StaticSite(kv)) as running:
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
        for target, status in [("/env.txt", 404), ("/gitlink/config", 404), ("/gitlink/", 404)]:
            conn.request("GET", target)
            response = conn.getresponse()
            body = response.read()
            assert (response.status, SECRET in body) == (status, False), target
        for target, status in [("/subl/page.html", 404), ("/page-alias.html", 200)]:
            conn.request("GET", target)
            response = conn.getresponse()
            response.read()
            assert response.status == status, target
        conn.close()


def test_the_build_names_links_to_hidden_entries_and_folders(tmp_path: Path) -> None:
    left_out = survey_folder(planted(tmp_path)).left_out()
    for name in (".env", ".git/", "env.txt", "gitlink", "config.txt", "subl: a link to a folder"):
        assert name in left_out, left_out


NAMES = ["a", "b", "c", ".env"]
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(tuple)
Tree = list[tuple[tuple[str, ...], str, int | str]]


@st.composite
def trees(draw: st.DrawFn) -> Tree:
    """Files and folders, then links to one of them (index >= 0), to one of
    the links (index < 0: chains and loops), or to a file or folder outside."""
    made: Tree = [
        (path, kind, 0)
        for path, kind in draw(
            st.lists(st.tuples(paths, st.sampled_from(["file", "dir"])), max_size=8)
        )
    ]
    targets = st.one_of(st.integers(-3, 12), st.sampled_from(["secret.txt", ""]))
    links = draw(st.lists(st.tuples(paths, targets), max_size=5))
    return made + [(path, "link", target) for path, target in links]


def link_target(tree: Tree, index: int) -> tuple[str, ...]:
    """The path of the entry a link's ``index`` names (see :func:`trees`);
    from 6 on, the folder that entry is in, if it is not the top."""
    links = [path for path, kind, _ in tree if kind == "link"]
    made = [path for path, kind, _ in tree if kind != "link"] or links
    if index < 0:
        return links[index % len(links)]
    path = made[index % len(made)]
    return path[: max(1, len(path) - 1)] if index >= 6 else path


def build_tree(top: Path, tree: Tree) -> Path:
    """Plant ``tree`` under ``top/site``; what cannot be made (a name taken,
    a parent that is a file) is skipped. Hidden and outside files hold SECRET."""
    root, outside = top / "site", top / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET + b" outside")
    for parts, kind, target in tree:
        path = root.joinpath(*parts)
        to = root.joinpath(*link_target(tree, target)) if isinstance(target, int) else None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "dir":
                path.mkdir()
            elif kind == "file":
                hidden = any(name.startswith(".") for name in parts)
                path.write_bytes((SECRET if hidden else b"") + "/".join(parts).encode())
            else:
                path.symlink_to(to or outside / str(target))
        except OSError:
            continue
    return root


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
def test_crunched_and_direct_serve_the_same_keys(tree: Tree) -> None:
    """Differential: every key up to three names deep gives the same value
    (or none) from the folder read in place as from the crunched one, and no
    value served holds a secret."""
    with tempfile.TemporaryDirectory() as top:
        root = build_tree(Path(top), tree)
        direct, crunch = DirectoryKv(root), crunched(root, Path(top) / "a.pyz")
        keys: list[tuple[str, ...]] = [(a,) for a in NAMES]
        keys += [(a, b) for a in NAMES for b in NAMES]
        keys += [(a, b, c) for a in NAMES for b in NAMES for c in NAMES]

        async def compare() -> None:
            for key in map("/".join, keys):
                value = await value_of(direct, key)
                assert value == await value_of(crunch, key), key
                assert value is None or SECRET not in value, key
            files = {n for n, k in await direct.list("") if k is EntryKind.VALUE}
            assert files == {n for n, k in await crunch.list("") if k is EntryKind.VALUE}

        asyncio.run(compare())
