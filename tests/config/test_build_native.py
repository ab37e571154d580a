"""Compiled packages in unix artifacts: packed for the build's interpreter,
loaded by any interpreter that can load them (also one with nothing
installed), refused with one line and exit 2 by any other, extracted once
into a private cache."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from looming.config import build_boot
from looming.config.build import _check_packages, module_closure
from looming.config.build_native import (
    distribution_metadata,
    main_with_boot,
    native_pack,
    required_modules,
)
from looming.config.build_smoke import top_level_imports
from tests.config.tooling import copy_example, looming

UNIKERNEL = """
import importlib.metadata
import sys

import markupsafe
import pydantic
import yaml

from looming.devices import Console


class Order(pydantic.BaseModel):
    item: str = pydantic.Field(min_length=1)
    count: int = pydantic.Field(gt=0)


class Checker:
    def __init__(self, console: Console) -> None:
        self.console = console

    async def start(self) -> None:
        order = Order.model_validate(yaml.load("item: loom\\ncount: '3'", Loader=yaml.CSafeLoader))
        try:
            Order(item="", count=0)
        except pydantic.ValidationError as error:
            errors = sorted(e["type"] for e in error.errors())
        compiled = {
            name: getattr(sys.modules[name], "__file__", "")
            for name in ("pydantic_core._pydantic_core", "markupsafe._speedups", "yaml._yaml")
        }
        await self.console.log("RESULT " + __import__("json").dumps({
            "order": order.model_dump(),
            "errors": errors,
            "escaped": str(markupsafe.escape("<b>")),
            "version": importlib.metadata.version("pydantic"),
            "compiled": compiled,
        }))
"""


def native_app(folder: Path) -> Path:
    app = folder / "native"
    app.mkdir(parents=True)
    (app / "unikernel.py").write_text(UNIKERNEL)
    (app / "config.py").write_text(
        "from looming.config import console, main, register\n"
        'register("native", [main("unikernel:Checker", [console()])])\n'
    )
    return app


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("native")
    app = native_app(folder)
    env = {**os.environ, build_boot.CACHE_ENV: str(folder / "build-cache")}
    for args in (["configure", "-t", "unix"], ["build"]):
        subprocess.run(
            [sys.executable, "-m", "looming.cli", *args],
            cwd=app,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    return app / "dist" / "native-unix.pyz"


def run(command: list[str], cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], build_boot.CACHE_ENV: str(cache), **env},
    )


def result_of(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    parsed: dict[str, object] = json.loads(line.removeprefix("RESULT "))
    return parsed


def check_result(result: dict[str, object], cache: Path) -> None:
    assert result["order"] == {"item": "loom", "count": 3}
    assert result["errors"] == ["greater_than", "string_too_short"]
    assert result["escaped"] == "&lt;b&gt;"
    # The distribution's metadata travels with it (libraries read their version).
    assert result["version"] == importlib.metadata.version("pydantic")
    compiled = result["compiled"]
    assert isinstance(compiled, dict) and len(compiled) == 3
    # Every compiled module was loaded from the artifact's extracted copy.
    assert all(str(path).startswith(str(cache)) for path in compiled.values()), compiled


def test_it_runs_on_an_interpreter_with_nothing_installed(artifact: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    check_result(result_of(run([sys.executable, "-I", "-S", str(artifact)], cache)), cache)
    extracted = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(extracted) == 1 and (extracted[0] / build_boot.COMPLETE).is_file()
    assert oct(cache.stat().st_mode & 0o777) == oct(0o700)
    # A second start uses the same copy.
    check_result(result_of(run([sys.executable, "-I", "-S", str(artifact)], cache)), cache)
    assert [p for p in cache.iterdir() if not p.name.startswith(".")] == extracted


def other_compatible_interpreter() -> str | None:
    """Debian's python3 when it is another interpreter that loads this one's extensions."""
    debian = Path("/usr/bin/python3")
    if not debian.is_file() or debian.resolve() == Path(sys.executable).resolve():
        return None
    probe = subprocess.run(
        [str(debian), "-c", "import importlib.machinery as m, sysconfig as s; "
         "print(m.EXTENSION_SUFFIXES[0], s.get_platform())"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    ours = f"{sysconfig.get_config_var('EXT_SUFFIX')} {sysconfig.get_platform()}"
    return str(debian) if probe.stdout.strip() == ours else None


@pytest.mark.skipif(other_compatible_interpreter() is None, reason="no second CPython of this ABI")
def test_it_runs_on_debians_python(artifact: Path, tmp_path: Path) -> None:
    python = other_compatible_interpreter()
    assert python is not None
    cache = tmp_path / "cache"
    check_result(result_of(run([python, str(artifact)], cache)), cache)


def with_manifest(artifact: Path, dest: Path, **changes: object) -> Path:
    """A copy of ``artifact`` whose manifest says ``changes``."""
    with zipfile.ZipFile(artifact) as z:
        entries = {i.filename: (i, z.read(i)) for i in z.infolist()}
    info, raw = entries[build_boot.MANIFEST]
    entries[build_boot.MANIFEST] = (info, json.dumps({**json.loads(raw), **changes}).encode())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for info, data in entries.values():
            z.writestr(info, data)
    dest.write_bytes(artifact.read_bytes().split(b"\n", 1)[0] + b"\n" + buffer.getvalue())
    return dest


@pytest.mark.parametrize(
    "changes",
    [
        {"suffixes": [".cpython-399-x86_64-linux-gnu.so"], "version": [3, 99]},
        {"platform": "linux-sparc64"},
        {"implementation": "pypy"},
    ],
)
def test_an_interpreter_that_cannot_load_them_is_refused_in_one_line(
    artifact: Path, tmp_path: Path, changes: dict[str, object]
) -> None:
    other = with_manifest(artifact, tmp_path / "other.pyz", **changes)
    cache = tmp_path / "cache"
    done = run([sys.executable, str(other)], cache)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(other) in lines[0] and "pydantic_core" in lines[0]
    assert "built for" in lines[0] and sys.executable in lines[0]
    if "version" in changes:
        assert "python3.99" in lines[0]
    # Refused before anything was extracted.
    assert not cache.exists() or not any(cache.iterdir())


def test_the_shebang_asks_for_the_build_s_python_version(artifact: Path, tmp_path: Path) -> None:
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert artifact.read_bytes().split(b"\n", 1)[0] == f"#!/usr/bin/env python{version}".encode()
    # Found through PATH, as `./native-unix.pyz` finds it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    base = Path(getattr(sys, "_base_executable", sys.executable))
    (bin_dir / f"python{version}").symlink_to(base)
    cache = tmp_path / "cache"
    done = run([str(artifact)], cache, PATH=f"{bin_dir}:/usr/bin:/bin")
    check_result(result_of(done), cache)


def small_archive(path: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(build_boot.FILES + "pkg/__init__.py", "VALUE = 1\n")
        z.writestr(build_boot.FILES + "pkg/sub/data.txt", "data\n")
    return zipfile.ZipFile(path)


def test_extraction_is_done_once_and_a_half_written_copy_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv(build_boot.CACHE_ENV, str(cache))
    with small_archive(tmp_path / "a.zip") as archive:
        folder = Path(build_boot.extract(archive, "d1"))
        assert folder == cache / "d1"
        package = folder / "pkg"
        assert (package / "sub" / "data.txt").read_text() == "data\n"
        (package / "__init__.py").write_text("VALUE = 2\n")
        assert build_boot.extract(archive, "d1") == str(folder)  # reused, not rewritten
        assert (package / "__init__.py").read_text() == "VALUE = 2\n"
        (folder / build_boot.COMPLETE).unlink()  # as a start killed midway leaves it
        assert build_boot.extract(archive, "d1") == str(folder)
        assert (package / "__init__.py").read_text() == "VALUE = 1\n"
    assert sorted(p.name for p in cache.iterdir()) == ["d1"]


def _extract_in_child(archive: str, cache: str, barrier: Any, results: Any) -> None:
    os.environ[build_boot.CACHE_ENV] = cache
    barrier.wait()
    with zipfile.ZipFile(archive) as z:
        folder = Path(build_boot.extract(z, "d1"))
    time.sleep(0.3)  # while the others finish theirs
    results.put(sum(1 for p in folder.rglob("*.txt")))


def test_starts_extracting_at_once_all_get_a_whole_copy(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        for i in range(300):
            z.writestr(f"{build_boot.FILES}pkg/f{i}.txt", b"x" * 4096)
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(6), context.Queue()
    args = (str(tmp_path / "a.zip"), str(tmp_path / "c"), barrier, results)
    children = [context.Process(target=_extract_in_child, args=args) for _ in range(6)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0] * 6
    assert sorted(results.get(timeout=5) for _ in children) == [300] * 6
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["d1"]


def test_copies_unused_for_a_month_are_removed_when_one_is_extracted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv(build_boot.CACHE_ENV, str(cache))
    month_ago = time.time() - build_boot.UNUSED_FOR - 3600
    with small_archive(tmp_path / "a.zip") as archive:
        for digest in ("stale", "recent", "reused"):
            build_boot.extract(archive, digest)
        for digest in ("stale", "reused"):
            marker = cache / digest / build_boot.COMPLETE
            os.utime(marker, (month_ago, month_ago))
        build_boot.extract(archive, "reused")  # a start using it dates it again
        assert time.time() - (cache / "reused" / build_boot.COMPLETE).stat().st_mtime < 60
        build_boot.extract(archive, "new")
    assert sorted(p.name for p in cache.iterdir()) == ["new", "recent", "reused"]


def test_a_cache_others_may_write_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv(build_boot.CACHE_ENV, str(shared))
    assert build_boot.cache_root() is None
    with small_archive(tmp_path / "a.zip") as archive:
        folder = Path(build_boot.extract(archive, "d1"))
    assert not folder.is_relative_to(shared)
    assert (folder / "pkg" / "__init__.py").read_text() == "VALUE = 1\n"
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700)
    shutil.rmtree(folder)


def test_an_entry_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(build_boot.FILES + "../../escaped.py", "")
    with zipfile.ZipFile(path) as z, pytest.raises(RuntimeError, match="bad entry"):
        build_boot._write_members(z, z.namelist(), str(tmp_path / "out"))
    assert not (tmp_path / "escaped.py").exists()


def test_the_boot_comes_after_the_docstring_and_future_imports() -> None:
    source = b'# header\n"""Doc\nstring."""\n\nfrom __future__ import annotations\n\nimport x\n'
    booted = main_with_boot(source).decode()
    lines = booted.splitlines()
    assert lines.index("from __future__ import annotations") < lines.index("import x")
    boot = next(i for i, line in enumerate(lines) if line.startswith("import _looming_boot"))
    assert lines.index("from __future__ import annotations") < boot < lines.index("import x")
    compile(booted, "main.py", "exec")


def test_two_clones_with_compiled_packages_build_the_same_bytes(tmp_path: Path) -> None:
    built = []
    for clone in ("one", "two/deeper"):
        app = native_app(tmp_path / clone)
        looming(app, "configure", "-t", "unix")
        looming(app, "build")
        built.append((app / "dist" / "native-unix.pyz").read_bytes())
    assert built[0] == built[1]


def test_a_wheel_s_vendored_libraries_and_metadata_are_packed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    site = tmp_path / "site"
    files = {
        "weftpkg/__init__.py": b"from weftpkg._core import weave\n",
        f"weftpkg/_core{suffix}": b"\x7fELF not really",
        "weftpkg/__pycache__/__init__.cpython-311.pyc": b"stale",
        "weftpkg/_core.pyx": b"# the Cython source",
        "weftpkg.libs/libweft-1a2b3c.so.1": b"\x7fELF vendored",
        "weftpkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: weftpkg\nVersion: 1.0\n",
        "weftpkg-1.0.dist-info/top_level.txt": b"weftpkg\n",
        "weftpkg-1.0.dist-info/direct_url.json": b'{"url": "file:///home/someone"}',
    }
    record = "".join(f"{name},,\n" for name in files) + "weftpkg-1.0.dist-info/RECORD,,\n"
    files["weftpkg-1.0.dist-info/RECORD"] = record.encode()
    for name, data in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    pack = native_pack({"weftpkg"})
    assert pack is not None
    packed = sorted(n for n in pack.entries if n.startswith(build_boot.FILES))
    assert packed == [
        build_boot.FILES + "weftpkg.libs/libweft-1a2b3c.so.1",
        build_boot.FILES + "weftpkg/__init__.py",
        build_boot.FILES + f"weftpkg/_core{suffix}",
    ]
    assert build_boot.listed(pack.manifest, "suffixes") == [suffix]
    assert pack.packages == ["weftpkg"]
    metadata = distribution_metadata({"weftpkg"})
    assert sorted(metadata) == [
        "weftpkg-1.0.dist-info/METADATA",
        "weftpkg-1.0.dist-info/top_level.txt",
    ]


def fake_distribution(site: Path, name: str, files: dict[str, bytes], requires: str = "") -> None:
    """An installed distribution ``name`` 1.0 in ``site`` holding ``files``."""
    info = f"{name}-1.0.dist-info"
    tops = sorted({f.split("/")[0].split(".")[0] for f in files})
    files = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n{requires}".encode(),
        f"{info}/top_level.txt": "".join(f"{t}\n" for t in tops).encode(),
    }
    files[f"{info}/RECORD"] = ("".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n").encode()
    for path, data in files.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_bytes(data)


def test_what_compiled_code_requires_is_packed_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    site = tmp_path / "site"
    requires = (
        "Requires-Dist: weft-backend>=1 ; platform_python_implementation != 'PyPy'\n"
        "Requires-Dist: weft-extra ; extra == 'more'\n"
        "Requires-Dist: not-installed-anywhere\n"
    )
    fake_distribution(site, "loomcore", {f"loomcore{suffix}": b"\x7fELF"}, requires)
    fake_distribution(site, "weft_backend", {f"_weft_backend{suffix}": b"\x7fELF"})
    fake_distribution(site, "weft_extra", {"weft_extra.py": b""})
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    assert required_modules({"loomcore"}) == {"_weft_backend"}
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("import loomcore\n")
    closure = module_closure(app / "main.py", app)
    assert closure.external == {"loomcore"}
    # register(packages=[...]) may name a compiled package: it is packed whole.
    _check_packages(["_weft_backend"], app)
    closure = module_closure(app / "main.py", app, ("_weft_backend.*",))
    assert closure.external == {"loomcore", "_weft_backend"}


def test_the_smoke_import_covers_what_main_imports_at_start(tmp_path: Path) -> None:
    main = tmp_path / "main.py"
    main.write_text(
        '"""Doc."""\nfrom __future__ import annotations\n\nimport json\n'
        "from looming import runtime\nfrom looming.tls import TlsServer\n\n"
        "async def start():\n    from unikernel import Job\n"
    )
    assert top_level_imports(main) == ["json", "looming", "looming.tls"]


def test_an_artifact_without_compiled_code_still_refuses_an_older_python(tmp_path: Path) -> None:
    app = copy_example("hello", tmp_path)
    looming(app, "configure", "-t", "unix")
    looming(app, "build")
    artifact = app / "dist" / "hello-unix.pyz"
    assert artifact.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    ran = run([sys.executable, str(artifact)], tmp_path / "cache")
    assert ran.returncode == 0, ran.stderr
    assert not (tmp_path / "cache").exists()  # nothing to extract
    newer = with_manifest(artifact, tmp_path / "newer.pyz", requires=[3, 99])
    done = run([sys.executable, str(newer)], tmp_path / "cache")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"{newer} needs Python 3.99 or newer; {sys.executable} is Python "
        f"{'.'.join(map(str, sys.version_info[:3]))}. Run it with python3.99 or newer "
        f"(python3.99 {newer})"
    )
