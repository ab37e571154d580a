"""A module the unikernel reaches that its image lacks is a build error, not a boot crash."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from looming.config.build import Closure, ModuleSource
from looming.errors import ConfigError
from looming.vm import image
from looming.vm.importcheck import ImageModules, check_imports, wheel_tops
from looming.vm.stdlib import GuestStdlib, stdlib_closure
from tests.vm.conftest import APPS, ROOT, looming


def _image(tmp_path: Path, modules: dict[str, str], stdlib: set[str]) -> ImageModules:
    archive = tmp_path / "unikernel.pyz"
    with zipfile.ZipFile(archive, "w") as z:
        for name, source in modules.items():
            z.writestr(name.replace(".", "/") + ".py", source)
    main_py = tmp_path / "main.py"
    main_py.write_text("import sys\n")
    return ImageModules(
        archive=archive,
        main_py=main_py,
        stdlib=stdlib,
        stdlib_names=set(sys.stdlib_module_names),
        compiled={},
        modules=sorted(modules),
    )


# What the child interpreter needs to import from a zip and run the check.
BASE = {"sys", "builtins", "zipimport", "zlib", "importlib", "importlib.machinery", "codecs"}


def test_a_module_imported_by_name_and_absent_is_named_with_its_importer(
    tmp_path: Path,
) -> None:
    image = _image(
        tmp_path,
        {"service": "import helper\n", "helper": "x = 1\n__import__('looming_absent_mod')\n"},
        BASE,
    )
    with pytest.raises(ConfigError) as raised:
        check_imports(image, tmp_path)
    message = str(raised.value)
    assert "the image lacks the module 'looming_absent_mod'" in message
    assert "imported by helper.py:2" in message
    assert "register(..., packages=['looming_absent_mod'])" in message


def test_a_stdlib_module_left_out_of_the_image_is_named(tmp_path: Path) -> None:
    image = _image(tmp_path, {"service": "import json\n"}, BASE)
    with pytest.raises(ConfigError, match=r"lacks the module 'json', imported by service.py:1"):
        check_imports(image, tmp_path)
    # With json and what it imports in the image, the same unikernel passes.
    program = "import sys, json; print(','.join(sys.modules))"
    imported = subprocess.run(
        [sys.executable, "-I", "-S", "-c", program], capture_output=True, text=True, check=True
    ).stdout.strip()
    image = _image(tmp_path, {"service": "import json\n"}, BASE | set(imported.split(",")))
    check_imports(image, tmp_path)


def test_wheel_tops_are_the_wheels_importable_names() -> None:
    files = [
        "cryptography/__init__.py",
        "cryptography-51.0.1.dist-info/METADATA",
        "_cffi_backend.cpython-311-x86_64-linux-gnu.so",
        "cffi.libs/libffi.so",
        "typing_extensions.py",
    ]
    assert wheel_tops(files) == {"cryptography", "_cffi_backend", "typing_extensions"}


def test_sysconfig_brings_the_build_variables_it_imports_by_name(tmp_path: Path) -> None:
    (tmp_path / "sysconfig.py").write_text("import os\n")
    (tmp_path / "os.py").write_text("")
    (tmp_path / "_sysconfigdata__x86_64-linux-gnu.py").write_text("build_time_vars = {}\n")
    guest = GuestStdlib(tmp_path, "x86_64-linux-gnu", "311")
    closure = stdlib_closure([("sysconfig", (), False)], guest, set())
    assert {"sysconfig", "os", "_sysconfigdata__x86_64-linux-gnu"} <= set(closure.modules)


@pytest.mark.slow
def test_a_build_reaching_a_module_the_image_lacks_stops_and_names_it(tmp_path: Path) -> None:
    app = tmp_path / "image_lacks"
    shutil.copytree(APPS / "image_lacks", app)
    assert looming(app, "configure", "-t", "vm", "--arch", "x86_64").returncode == 0
    # An earlier image's manifest: a build that fails leaves it alone.
    (app / "dist").mkdir()
    manifest = app / "dist" / "image_lacks-vm.json"
    manifest.write_text(json.dumps({"arch": "x86_64"}))
    done = looming(app, "build")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the image lacks the module 'xmlrpc', imported by unikernel.py:3" in done.stderr
    assert "Traceback" not in done.stderr
    # Nothing half-written: no image folder, no staging folder, the manifest unchanged.
    assert sorted(p.name for p in (app / "dist").iterdir()) == ["image_lacks-vm.json"]
    assert json.loads(manifest.read_text()) == {"arch": "x86_64"}


def test_registered_packages_reach_the_stdlib_walk(tmp_path: Path) -> None:
    # mypkg.extra is imported by no statement; register(packages=["mypkg"])
    # packs it, so what it imports must be in the image too.
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "extra.py").write_text("import xml.dom.minidom\n")
    main_py = tmp_path / "_build" / "vm" / "main.py"
    main_py.parent.mkdir(parents=True)
    main_py.write_text("import mypkg\n")
    state = tmp_path / "_build" / "looming.json"
    state.write_text(json.dumps({"packages": []}))
    assert "mypkg.extra" not in image._app_closure(main_py, tmp_path).modules
    state.write_text(json.dumps({"packages": ["mypkg"]}))
    closure = image._app_closure(main_py, tmp_path)
    assert "mypkg.extra" in closure.modules
    roots = image._stdlib_roots(closure, {}, set(sys.stdlib_module_names))
    assert ("xml.dom.minidom", (), False) in roots


def test_wheel_packages_are_found_where_the_image_has_them(tmp_path: Path) -> None:
    wheel_dir = tmp_path / "site, with a comma"
    wheel_dir.mkdir()
    (wheel_dir / "looming_wheel_mod.py").write_text("value = 1\n")
    image = _image(tmp_path, {"service": "import looming_wheel_mod\n"}, BASE)
    with pytest.raises(ConfigError, match="lacks the module 'looming_wheel_mod'"):
        check_imports(image, tmp_path)
    with_wheel = ImageModules(
        **{**image.__dict__, "compiled": {"looming_wheel_mod": str(wheel_dir)}}
    )
    check_imports(with_wheel, tmp_path)


def test_a_failure_other_than_a_missing_module_is_only_noted(tmp_path: Path) -> None:
    image = _image(tmp_path, {"service": "raise RuntimeError('needs a device')\n"}, BASE)
    notes: list[str] = []
    check_imports(image, tmp_path, notes.append)
    assert len(notes) == 1 and "RuntimeError: needs a device" in notes[0]


def _closure(tmp_path: Path, modules: dict[str, str], external: set[str]) -> Closure:
    closure = Closure(external=set(external))
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, text in modules.items():
        path = tmp_path / (name.replace(".", "_") + ".py")
        path.write_text(text)
        closure.modules[name] = ModuleSource(name, path, is_package=False)
    return closure


def test_uvloop_is_left_out_when_only_anyio_asks_for_it_on_request(tmp_path: Path) -> None:
    # anyio's asyncio backend imports uvloop inside a function, for the
    # use_uvloop option looming never gives: FastAPI's images carried its
    # 5 MB wheel for nothing.
    anyio = (
        "def run(use_uvloop=False):\n    if use_uvloop:\n        import uvloop\n"
        "        return uvloop.new_event_loop\n"
    )
    modules = {"anyio._backends._asyncio": anyio, "unikernel": "import anyio\n"}
    closure = _closure(tmp_path, modules, {"uvloop", "pydantic_core"})
    assert image.on_request_only(closure) == {"uvloop"}
    # The application importing it itself keeps it, as does any other library.
    for importer in ("unikernel", "somelib.loops"):
        mine = _closure(tmp_path / importer, {**modules, importer: "import uvloop\n"}, {"uvloop"})
        assert image.on_request_only(mine) == set()


def test_the_fastapi_closure_takes_no_uvloop(tmp_path: Path) -> None:
    app = tmp_path / "fastapi"
    shutil.copytree(ROOT / "examples" / "fastapi", app)
    assert looming(app, "configure", "-t", "vm", "--arch", "x86_64").returncode == 0
    closure = image._app_closure(app / "_build" / "vm" / "main.py", app)
    # Installed here or not (uvicorn[standard] brings it), it is no wheel of the image.
    assert "pydantic_core" in closure.external
    assert "uvloop" not in closure.external - image.on_request_only(closure)
